"""Helpers for the role's unit tests: run ansible-playbook on localhost.

They need no container and no broker: only the role's own files and the
project's Ansible (.venv). Run from the repository root:
    .venv/bin/pytest roles/rabbitmq/tests
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
import yaml

ROLE = pathlib.Path(__file__).resolve().parents[1]
ROOT = ROLE.parents[1]


def _ansible_playbook() -> str:
    candidate = pathlib.Path(sys.executable).with_name("ansible-playbook")
    return str(candidate) if candidate.exists() else "ansible-playbook"


@pytest.fixture(scope="session")
def run_playbook(tmp_path_factory):
    """Run a playbook (a list of plays) on localhost; return the process."""

    def run(plays: list[dict], name: str) -> subprocess.CompletedProcess:
        workdir = tmp_path_factory.mktemp(name)
        playbook = workdir / "playbook.yml"
        playbook.write_text(yaml.safe_dump(plays, sort_keys=False))
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
            "ANSIBLE_CACHE_PLUGIN": "memory",
            "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCALHOST_WARNING": "0",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
        }
        return subprocess.run(
            [_ansible_playbook(), "-i", "localhost,", "-c", "local",
             "-e", f"ansible_python_interpreter={sys.executable}", str(playbook)],
            cwd=workdir, env=env, capture_output=True, text=True, timeout=900,
        )

    return run


def dump(value) -> str:
    return json.dumps(value)
