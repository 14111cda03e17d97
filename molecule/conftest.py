"""Fixtures shared by every scenario's Testinfra verifier.

Hosts are opened through testinfra's podman backend (``podman exec``),
which is an order of magnitude faster per check than Molecule's default
Ansible backend. Secrets are the files the scenario's inventory generated
with the ``password`` lookup in Molecule's ephemeral directory.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import threading
import time

import pytest
import testinfra
import yaml


def _require_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run this through `molecule verify`")
    return value


@pytest.fixture(scope="session")
def inventory() -> dict:
    """Molecule's generated inventory, flattened to host -> variables."""
    path = pathlib.Path(_require_env("MOLECULE_INVENTORY_FILE"))
    data = yaml.safe_load(path.read_text())
    hosts: dict[str, dict] = {}

    def walk(group: dict, inherited: dict, groups: list[str], name: str) -> None:
        merged = {**inherited, **(group.get("vars") or {})}
        for host, host_vars in (group.get("hosts") or {}).items():
            entry = hosts.setdefault(host, {"groups": set()})
            entry.update({**merged, **(host_vars or {})})
            entry["groups"].update(groups + [name])
        for child_name, child in (group.get("children") or {}).items():
            walk(child or {}, merged, groups + [name], child_name)

    for group_name, group in data.items():
        walk(group or {}, {}, [], group_name)
    return hosts


@pytest.fixture(scope="session")
def group_hosts(inventory):
    """Sorted host names of an inventory group."""

    def members(group: str) -> list[str]:
        names = sorted(h for h, v in inventory.items() if group in v["groups"])
        if not names:
            pytest.fail(f"inventory group {group!r} is empty")
        return names

    return members


@pytest.fixture(scope="session")
def node():
    """A testinfra host for a container, by name."""
    cache: dict[str, testinfra.host.Host] = {}

    def get(name: str):
        if name not in cache:
            cache[name] = testinfra.get_host(f"podman://{name}")
        return cache[name]

    return get


@pytest.fixture(scope="session")
def secret():
    """A secret the scenario generated, read from the ephemeral directory."""
    base = pathlib.Path(_require_env("MOLECULE_EPHEMERAL_DIRECTORY")) / "secrets"

    def read(name: str) -> str:
        path = base / name
        if not path.exists():
            pytest.fail(f"secret {name!r} was never generated ({path})")
        # The password lookup may append " salt=..." for encrypted values.
        return path.read_text().split(" ", 1)[0].strip()

    return read


@pytest.fixture(scope="session")
def address():
    """A container's address on its podman network, reachable from here."""

    def lookup(name: str) -> str:
        out = subprocess.run(
            ["podman", "inspect", "--format", "{{json .NetworkSettings.Networks}}", name],
            check=True, capture_output=True, text=True,
        ).stdout
        networks = json.loads(out)
        for net in networks.values():
            if net.get("IPAddress"):
                return net["IPAddress"]
        pytest.fail(f"container {name} has no network address")

    return lookup


class PlaybookRun:
    """What one ansible-playbook run returned and printed."""

    def __init__(self, proc: subprocess.CompletedProcess):
        self.returncode = proc.returncode
        self.stdout, self.stderr = proc.stdout, proc.stderr

    @property
    def words(self) -> str:
        """Both output streams, colours stripped and white space folded: the
        result callback may colour, fold or send a failure to stderr."""
        text = re.sub(r"\x1b\[[0-9;]*m", "", self.stdout + "\n" + self.stderr)
        return " ".join(text.split())

    @property
    def tail(self) -> str:
        return self.words[-3000:]

    @property
    def changed(self) -> dict[str, int]:
        """changed= of each host in the play recap."""
        return {host: int(n) for host, n in re.findall(r"(\S+) : ok=\d+ changed=(\d+)", self.words)}


@pytest.fixture(scope="session")
def converge():
    """Run the scenario's converge playbook again, against Molecule's
    inventory, with extra ansible-playbook arguments (``-e ...``)."""
    scenario = pathlib.Path(_require_env("MOLECULE_SCENARIO_DIRECTORY"))
    inventory = pathlib.Path(_require_env("MOLECULE_INVENTORY_FILE")).parent

    def run(*extra_args: str, timeout: float = 1200) -> PlaybookRun:
        return PlaybookRun(subprocess.run(
            ["ansible-playbook", "-i", str(inventory), str(scenario / "converge.yml"), *extra_args],
            capture_output=True, text=True, timeout=timeout, check=False,
            env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"},
        ))

    return run


@pytest.fixture(scope="session")
def recreate_container():
    """Destroy a scenario machine and start an empty one under the same name,
    from the platform entry of the scenario's molecule.yml (a re-imaged host)."""
    scenario = pathlib.Path(_require_env("MOLECULE_SCENARIO_DIRECTORY"))
    platforms = {p["name"]: p for p in yaml.safe_load((scenario / "molecule.yml").read_text())["platforms"]}

    def recreate(name: str) -> None:
        platform = platforms[name]
        subprocess.run(["podman", "rm", "--force", "--time", "20", name], check=True, capture_output=True)
        argv = ["podman", "run", "--detach", "--name", name, "--hostname", platform.get("hostname", name)]
        if platform.get("network"):
            argv += ["--network", platform["network"]]
        if platform.get("privileged"):
            argv.append("--privileged")
        if platform.get("systemd"):
            argv.append(f"--systemd={platform['systemd']}")
        argv += platform.get("extra_opts", [])
        argv += [platform["image"], *platform.get("command", "/sbin/init").split()]
        subprocess.run(argv, check=True, capture_output=True, text=True)
        for _ in range(60):
            state = subprocess.run(["podman", "exec", name, "systemctl", "is-system-running"],
                                   capture_output=True, text=True, check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(1)
        pytest.fail(f"{name} did not boot (systemd: {state!r})")

    return recreate


def pytest_collection_modifyitems(items):
    """Disruptive tests (they stop, reset or replace machines) run after every
    read-only check, in their collection order."""
    items.sort(key=lambda item: item.get_closest_marker("disruptive") is not None)


class Sampler(threading.Thread):
    """Calls ``read()`` every ``interval`` seconds until stopped and keeps
    (time, value) samples; a read that raises is kept as (time, None)."""

    def __init__(self, read, interval: float):
        super().__init__(daemon=True)
        self.read, self.interval = read, interval
        self.samples: list[tuple[float, object]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                value = self.read()
            except Exception:  # noqa: BLE001 (an unreadable sample is kept as None, not hidden)
                value = None
            self.samples.append((time.time(), value))
            self.done.wait(self.interval)

    def stop(self) -> Sampler:
        self.done.set()
        self.join(60)
        return self

    def longest_run(self, matches) -> float:
        """Seconds of the longest run of consecutive read samples for which
        ``matches(value)`` holds (unreadable samples neither end nor extend one)."""
        longest, begun = 0.0, None
        for at, value in self.samples:
            if value is None:
                continue
            if matches(value):
                begun = at if begun is None else begun
                longest = max(longest, at - begun)
            else:
                begun = None
        return round(longest, 1)


@pytest.fixture()
def sampler():
    """``sampler(read, interval)``: a started Sampler, stopped at teardown."""
    started: list[Sampler] = []

    def start(read, interval: float = 0.5) -> Sampler:
        started.append(Sampler(read, interval))
        started[-1].start()
        return started[-1]

    yield start
    for each in started:
        each.stop()


# systemd's catalog ids of the "Stopping <unit>" and "Started <unit>" messages.
_JOB_MESSAGES = {"de5b426a63be47a7b6ac3eaac82e2f6f": "stop", "39f53479d3a045ac8e11786248231fbf": "start"}


@pytest.fixture(scope="session")
def unit_events():
    """``unit_events(container, units, since)``: (time, unit, "stop"|"start")
    of systemd's job messages for ``units`` at or after ``since``, in order."""

    def read(container: str, units: list[str], since: float) -> list[tuple[float, str, str]]:
        argv = ["podman", "exec", container, "journalctl", "-o", "json", "--no-pager", "--since", f"@{int(since)}"]
        for unit in units:
            argv += ["-u", unit]
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        events = []
        for line in out.splitlines():
            entry = json.loads(line)
            kind = _JOB_MESSAGES.get(entry.get("MESSAGE_ID"))
            at = int(entry["__REALTIME_TIMESTAMP"]) / 1e6
            if kind and at >= since:  # --since has whole seconds
                events.append((at, entry.get("UNIT", ""), kind))
        return sorted(events)

    return read


@pytest.fixture(scope="session")
def amqp_login():
    """``amqp_login(url)``: True when the broker accepts the URL's
    credentials, False when it refuses them (ACCESS_REFUSED); any other
    failure (unreachable broker, unknown vhost) raises."""
    from amqp.exceptions import AccessRefused
    from kombu import Connection

    def login(url: str) -> bool:
        try:
            with Connection(url, connect_timeout=10) as conn:
                conn.ensure_connection(max_retries=1)
        except AccessRefused:
            return False
        except Exception as exc:
            if "ACCESS_REFUSED" in str(exc):
                return False
            raise
        return True

    return login
