"""Helpers of the kit's own unit tests (tests/): run ansible-playbook on localhost.

They need no container and no broker: only the roles' files and the
project's Ansible (.venv). Roles whose tasks must not run on the controller
are given as stubs (`stub_roles`): the real role's meta/, defaults/ and
vars/, and every task file replaced by one debug task, so ansible-core still
validates the real argument specs against the real defaults, and nothing
else happens. Run from the repository root:
    .venv/bin/pytest tests

A module of its own (not conftest.py): pytest collects tests/ together with
roles/*/tests, whose conftest.py files would shadow a `from conftest import`.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]

# The task ansible-core puts first in a role entry point that has an argument spec.
VALIDATION_TASK = "Validating arguments against arg spec '{}'"


def _ansible_playbook() -> str:
    candidate = pathlib.Path(sys.executable).with_name("ansible-playbook")
    return str(candidate) if candidate.exists() else "ansible-playbook"


def playbook_runner(tmp_path_factory):
    """Run plays on localhost (connection local); return the finished process.

    `extra_vars` are given with -e, so they win over every variable a role
    sets, including an include_role's own vars; `roles_path` replaces the
    kit's roles/ (see `stub_roles`).
    """

    def run(plays: list[dict], name: str, extra_vars: dict | None = None,
            roles_path: pathlib.Path | None = None) -> subprocess.CompletedProcess:
        workdir = tmp_path_factory.mktemp(name)
        playbook = workdir / "playbook.yml"
        playbook.write_text(yaml.safe_dump(plays, sort_keys=False))
        command = [_ansible_playbook(), "-i", "localhost,", "-c", "local",
                   "-e", f"ansible_python_interpreter={sys.executable}"]
        if extra_vars:
            extra = workdir / "extra_vars.json"
            extra.write_text(json.dumps(extra_vars))
            command += ["-e", f"@{extra}"]
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_ROLES_PATH": str(roles_path or ROOT / "roles"),
            "ANSIBLE_CACHE_PLUGIN": "memory",
            "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCALHOST_WARNING": "0",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
        }
        return subprocess.run(
            command + [str(playbook)],
            cwd=workdir, env=env, capture_output=True, text=True, timeout=300,
        )

    return run


STUB_TASK = "Stub of {role}/tasks/{file}: the real tasks do not run here"


def stub_roles(directory: pathlib.Path, stubbed: list[str],
               real_tasks: dict[str, list[str]] | None = None) -> pathlib.Path:
    """A roles path in `directory`: the kit's roles, those in `stubbed` as stubs.

    A stub keeps the real meta/, defaults/ and vars/ (links) and has each of
    the real role's task files, each holding only a debug task named
    STUB_TASK: the argument spec of any entry point is validated as in the
    real role, then nothing touches the machine. `real_tasks` names, per
    stubbed role, task files kept real (links), e.g. checks that run on the
    controller only: {"celery_worker": ["assert.yml"]}.
    """
    real_tasks = real_tasks or {}
    directory.mkdir(parents=True, exist_ok=True)
    for role in sorted((ROOT / "roles").iterdir()):
        if not (role / "tasks").is_dir():
            continue
        target = directory / role.name
        if role.name not in stubbed:
            target.symlink_to(role)
            continue
        (target / "tasks").mkdir(parents=True)
        for part in ("meta", "defaults", "vars"):
            if (role / part).is_dir():
                (target / part).symlink_to(role / part)
        missing = set(real_tasks.get(role.name, [])) - {f.name for f in (role / "tasks").glob("*.yml")}
        assert not missing, f"{role.name} has no task file {sorted(missing)}"
        for task_file in (role / "tasks").glob("*.yml"):
            if task_file.name in real_tasks.get(role.name, []):
                (target / "tasks" / task_file.name).symlink_to(task_file)
                continue
            (target / "tasks" / task_file.name).write_text(yaml.safe_dump([{
                "name": STUB_TASK.format(role=role.name, file=task_file.name),
                "ansible.builtin.debug": {"msg": "stub"},
            }]))
    return directory


def recording_play(name: str, variables: dict, task: dict, out: pathlib.Path) -> dict:
    """A play that runs `task` and writes what happened to the file `out`.

    The file holds JSON: {"failed_task": name or null, "msg": the failure message,
    "item_msgs": the messages of the failed items when the task was a loop}.
    """
    return {
        "name": name,
        "hosts": "localhost",
        "gather_facts": False,
        "vars": variables,
        "tasks": [{
            "block": [
                task,
                {"ansible.builtin.copy": {
                    "content": '{{ {"failed_task": None, "msg": "", "item_msgs": []} | to_json }}',
                    "dest": str(out), "mode": "0644"}},
            ],
            "rescue": [
                {"ansible.builtin.copy": {
                    "content": '{{ {"failed_task": ansible_failed_task.name,'
                               ' "msg": ansible_failed_result.msg | default(""),'
                               ' "item_msgs": ansible_failed_result.results | default([])'
                               ' | selectattr("failed", "defined") | selectattr("failed")'
                               ' | map(attribute="msg") | list} | to_json }}',
                    "dest": str(out), "mode": "0644"}},
            ],
        }],
    }
