"""The base images boot real systemd machines that see each other."""

import pytest

MACHINES = ["harness-trixie", "harness-bookworm", "harness-forky"]
SUITES = {"harness-trixie": "trixie", "harness-bookworm": "bookworm", "harness-forky": "forky"}


@pytest.mark.parametrize("name", MACHINES)
def test_systemd_reaches_running_state(node, name):
    state = node(name).run("systemctl is-system-running --wait").stdout.strip()
    failed = node(name).run("systemctl --failed --no-legend --plain").stdout
    assert state == "running", f"{name}: {state}; failed units:\n{failed}"


@pytest.mark.parametrize("name", MACHINES)
def test_debian_suite(node, name):
    release = node(name).file("/etc/os-release").content_string
    assert f"VERSION_CODENAME={SUITES[name]}" in release


@pytest.mark.parametrize("name", MACHINES)
def test_peers_resolve_and_answer(node, name):
    peer = next(m for m in MACHINES if m != name)
    result = node(name).run(f"getent hosts {peer}")
    assert result.rc == 0, f"{name} cannot resolve {peer}"


@pytest.mark.parametrize("name", MACHINES)
def test_warm_apt_cache_holds_the_broker(node, name):
    debs = node(name).run("ls /var/cache/apt/archives").stdout.split()
    assert any(d.startswith("rabbitmq-server_") for d in debs)
    assert any(d.startswith("haproxy_") for d in debs)


@pytest.mark.parametrize("name", MACHINES)
def test_open_files_limit_is_the_projects(node, name):
    soft, hard = node(name).run("sh -c 'ulimit -Sn; ulimit -Hn'").stdout.split()
    assert (soft, hard) == ("20000", "20000")


def test_testing_image_reads_its_mirror(node):
    """Debian testing's Release files may be past Valid-Until on the mirror:
    the forky image's apt must still update (the roles' apt tasks do)."""
    result = node("harness-forky").run("apt-get -q update")
    assert result.rc == 0, result.stdout + result.stderr
