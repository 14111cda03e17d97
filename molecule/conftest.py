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
import subprocess

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
