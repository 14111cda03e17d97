"""What roles/mongodb does before mongod exists, checked on real containers.

MongoDB's packages cannot be had on these machines, so this scenario runs the
role in its staging mode (mongodb_install_packages: false). Each test checks
behaviour through apt, gpg and systemd themselves; none of them needs, or
stands in for, a mongod.
"""

from __future__ import annotations

import pathlib
import os

import pytest

BOOKWORM = "mongodb-offline-bookworm"
TRIXIE = "mongodb-offline-trixie"
SERIES = "8.0"
SOURCES = "/etc/apt/sources.list.d/mongodb-org.sources"
KEYRING = f"/etc/apt/keyrings/mongodb-server-{SERIES}.asc"
DEB_DIR = "/var/local/mongodb-debs"


def deb822(text: str) -> dict[str, str]:
    """One deb822 stanza as a dict (continuation lines joined)."""
    fields: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line[0].isspace() and key:
            fields[key] += "\n" + line.strip()
            continue
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def test_repository_source_is_mongodbs_layout(node):
    source = node(BOOKWORM).file(SOURCES)
    assert source.exists and source.mode == 0o644
    assert deb822(source.content_string) == {
        "X-Repolib-Name": "mongodb-org",
        "Types": "deb",
        "URIs": "https://repo.mongodb.org/apt/debian",
        "Suites": f"bookworm/mongodb-org/{SERIES}",
        "Components": "main",
        "Architectures": "amd64",
        "Signed-By": KEYRING,
    }


def test_repository_key_is_the_one_given(node):
    """The key given as content is installed unchanged and is a usable key."""
    given = pathlib.Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "repo-key", "key.asc").read_text()
    keyring = node(BOOKWORM).file(KEYRING)
    assert keyring.mode == 0o644 and keyring.user == "root"
    assert keyring.content_string.strip() == given.strip()
    shown = node(BOOKWORM).check_output(f"gpg --batch --show-keys --with-colons {KEYRING}")
    assert "celery-stack mongodb-offline test key" in shown


def test_apt_reads_the_source_and_tries_mongodbs_server(node):
    """apt parses the deb822 file and goes for repo.mongodb.org with the key.

    Here the name does not resolve; where it does, the download's signature
    check against this run's key fails. Either proves the file is read and
    used; a malformed file would fail earlier, with a parse error.
    """
    cmd = node(BOOKWORM).run(
        "apt-get update -o Dir::Etc::SourceList=%s -o Dir::Etc::SourceParts=/dev/null"
        " -o APT::Get::List-Cleanup=0 -o Acquire::Retries=0" % SOURCES
    )
    out = cmd.stdout + cmd.stderr
    assert "Malformed" not in out and "could not be read" not in out, out
    assert "repo.mongodb.org" in out, out
    assert (
        "Could not resolve" in out
        or "Temporary failure resolving" in out
        or "NO_PUBKEY" in out
        or "not signed" in out
        or "Unable to connect" in out
        or "Failed to fetch" in out
    ), out


def test_local_repository_holds_and_indexes_the_shipped_debs(node):
    host = node(TRIXIE)
    shipped = sorted(
        p.name for p in pathlib.Path(
            os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "debs", TRIXIE).glob("*.deb")
    )
    assert shipped, "prepare.yml shipped no .deb"
    present = sorted(host.check_output(f"ls {DEB_DIR}/*.deb | xargs -n1 basename").split())
    assert present == shipped
    index = host.file(f"{DEB_DIR}/Packages").content_string
    assert "Package: python3-pymongo" in index


def test_local_repository_is_an_apt_source(node):
    policy = node(TRIXIE).check_output("apt-cache policy python3-pymongo")
    assert f"file:{DEB_DIR} ./ Packages" in policy, policy


def test_server_package_is_missing_and_install_stops_there(node):
    """The package step is where this machine stops: no MongoDB server."""
    cmd = node(TRIXIE).run("apt-get install --simulate mongodb-org-server")
    assert cmd.rc != 0
    assert "Unable to locate package mongodb-org-server" in cmd.stderr, cmd.stderr


@pytest.mark.parametrize("name", [BOOKWORM, TRIXIE])
def test_no_mongodb_package_and_no_mongod(node, name):
    host = node(name)
    assert not host.package("mongodb-org-server").is_installed
    assert not host.exists("mongod")
    assert not host.file("/etc/mongod.conf").exists


@pytest.mark.parametrize(
    ("name", "python", "version"),
    [
        # Debian 12's python3-pymongo is 3.11: a venv from the shipped wheels.
        (BOOKWORM, "/opt/mongodb-client/venv/bin/python", "4.20.0"),
        # Debian 13's python3-pymongo (4.10) supports MongoDB 8.0.
        (TRIXIE, "/usr/bin/python3", "4.10"),
    ],
)
def test_python_client_for_the_modules(node, name, python, version):
    out = node(name).check_output(f"{python} -c 'import pymongo, gridfs; print(pymongo.version)'")
    assert out.startswith(version), out


@pytest.mark.parametrize("name", [BOOKWORM, TRIXIE])
def test_hugepages_unit_follows_the_80_notes(node, name):
    host = node(name)
    unit = host.file("/etc/systemd/system/mongodb-hugepages.service").content_string
    assert "echo always > /sys/kernel/mm/transparent_hugepage/enabled" in unit
    assert "defer+madvise" in unit and "max_ptes_none" in unit
    assert "Before=mongod.service" in unit
    verify = host.run("systemd-analyze verify /etc/systemd/system/mongodb-hugepages.service")
    assert verify.rc == 0, verify.stderr
    # Kernel-wide: not applied in a container (mongodb_kernel_tuning: false).
    assert not host.service("mongodb-hugepages.service").is_enabled


@pytest.mark.parametrize("name", [BOOKWORM, TRIXIE])
def test_mongod_limits_drop_in(node, name):
    text = node(name).file("/etc/systemd/system/mongod.service.d/10-celery-stack.conf").content_string
    assert "LimitNOFILE=16384" in text and "LimitNPROC=4096" in text
    assert "Environment=GLIBC_TUNABLES=glibc.pthread.rseq=0" in text


@pytest.mark.parametrize("name", [BOOKWORM, TRIXIE])
def test_sysctl_file(node, name):
    lines = node(name).file("/etc/sysctl.d/60-mongodb.conf").content_string.splitlines()
    assert "vm.swappiness=1" in lines
    assert "vm.overcommit_memory=1" in lines


def _install_step(host: str, tmp_path) -> str:
    """Run the role's install step against a container; return its output.

    It reads and asserts only (package facts, apt lists, apt-cache): the
    point is the message it stops with where MongoDB's server is missing.
    """
    import subprocess
    import textwrap

    playbook = tmp_path / "install.yml"
    playbook.write_text(textwrap.dedent(f"""\
        - hosts: {host}
          gather_facts: true
          tasks:
            - ansible.builtin.include_role:
                name: mongodb
                tasks_from: install
              vars:
                _mongodb_source: {{changed: false}}
        """))
    proc = subprocess.run(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(playbook)],
        capture_output=True, text=True, timeout=900,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default"},
    )
    assert proc.returncode != 0, proc.stdout
    return " ".join((proc.stdout + proc.stderr).split())


def test_install_from_the_directory_stops_with_a_plain_message(tmp_path):
    out = _install_step(TRIXIE, tmp_path)
    assert (
        "mongodb-org-server 8.0.x is not available from /var/local/mongodb-debs (offered: none)" in out
    ), out


def test_install_from_the_repository_stops_with_a_plain_message(tmp_path):
    out = _install_step(BOOKWORM, tmp_path)
    assert (
        "apt could not read MongoDB's repository https://repo.mongodb.org/apt/debian "
        "bookworm/mongodb-org/8.0" in out
    ), out
