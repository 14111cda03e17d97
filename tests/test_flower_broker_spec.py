"""Flower's broker user goes through the rabbitmq `application` entry point's spec.

roles/flower/tasks/broker.yml creates the monitoring user with
`include_role: rabbitmq, tasks_from: application`. ansible-core validates an
include against meta/argument_specs.yml only when tasks_from names the entry
point exactly ("application", not "application.yml"), as the first task of
the include. Each case runs the real broker.yml on localhost against a stub
of roles/rabbitmq (its real spec, defaults and vars; application.yml only a
debug task, so nothing talks to a broker) and records the task that failed:
bad input must stop at the validation task, before application.yml runs.
"""

from __future__ import annotations

import json
import pathlib
import re

import pytest

from kit_playbooks import ROOT, STUB_TASK, VALIDATION_TASK, recording_play, stub_roles

VALIDATION = VALIDATION_TASK.format("application")

FLOWER_VARS = {
    "flower_broker_url": "amqp://app:unit-test-password@broker:5672/app",
    "flower_monitoring_password": "unit-test-monitoring",
}

GOOD_APPLICATION = {"name": "flower-monitoring", "password": "unit-test-monitoring", "tags": ["monitoring"]}

# case: (play variables, extra vars, words of the expected refusal)
CASES = {
    # -e wins over broker.yml's own vars: the entry as another caller might write it.
    "application_without_password": (
        {}, {"rabbitmq_application": {"name": "flower-monitoring", "tags": ["monitoring"]}},
        "missing required arguments: password found in rabbitmq_application",
    ),
    "application_with_unknown_key": (
        {}, {"rabbitmq_application": {**GOOD_APPLICATION, "vhosts": ["app"]}},
        "rabbitmq_application.vhosts. Supported parameters include",
    ),
    # A typo in the inventory's policy defaults: without the spec it is ignored.
    "policy_default_typo": (
        {"rabbitmq_queue_policy_defaults": {"max_lenght": 1000}}, {},
        "max_lenght",
    ),
}


def _broker_run(run_playbook, tmp_path, name, play_vars, extra_vars):
    out = tmp_path / "outcome.json"
    play = recording_play(name, {**FLOWER_VARS, **play_vars},
                          {"ansible.builtin.include_role": {"name": "flower", "tasks_from": "broker"}}, out)
    roles = stub_roles(tmp_path / "roles", ["rabbitmq"])
    proc = run_playbook([play], name, extra_vars, roles_path=roles)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text()), proc.stdout


def _rabbitmq_tasks_run(stdout: str) -> list[str]:
    return re.findall(r"^TASK \[rabbitmq : (.*?)\]", stdout, re.M)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_by_the_spec(run_playbook, tmp_path, case):
    play_vars, extra_vars, expected = CASES[case]
    outcome, stdout = _broker_run(run_playbook, tmp_path, case, play_vars, extra_vars)
    assert outcome["failed_task"] is not None, f"{case} was accepted"
    assert outcome["failed_task"].startswith(VALIDATION), outcome
    assert expected in " ".join(outcome["msg"].split()), outcome["msg"]
    # Nothing of application.yml ran before the refusal.
    assert [t for t in _rabbitmq_tasks_run(stdout) if not t.startswith(VALIDATION)] == [], stdout


def test_good_input_passes_the_spec(run_playbook, tmp_path):
    outcome, stdout = _broker_run(run_playbook, tmp_path, "good", {}, {})
    assert outcome["failed_task"] is None, outcome
    assert _rabbitmq_tasks_run(stdout) == [
        VALIDATION + " - One application's vhost, user and queue policies",
        STUB_TASK.format(role="rabbitmq", file="application.yml"),
    ], stdout


def test_callers_name_entry_points_without_extension():
    """`tasks_from: X.yml` skips the spec of entry point X: every caller writes `X`."""
    entry_points = set()
    for spec in ROOT.glob("roles/*/meta/argument_specs.yml"):
        text = spec.read_text()
        entry_points |= set(re.findall(r"^  ([a-z_]+):\s*$", text, re.M)) - {"main"}
    files = [p for pattern in ("*.yml", "*.md", "roles/**/*.yml", "roles/**/*.md", "playbooks/*.yml",
                               "molecule/**/*.yml", "molecule/**/*.py", "docs/*.md")
             for p in ROOT.glob(pattern)]
    offenders = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in files
        for match in re.finditer(r"tasks_from[:=]\s*([a-z_]+)\.ya?ml\b", path.read_text())
        if match.group(1) in entry_points
    ]
    assert offenders == []
