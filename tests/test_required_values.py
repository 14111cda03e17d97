"""Every required value has no default, and the argument spec refuses it missing.

`required: true` in meta/argument_specs.yml means nothing when the role also
sets the variable in defaults/main.yml (an empty string is a value), so a
required value or secret has no default anywhere. The cases come from the
specs themselves: for every entry point of every role, one play gives all its
required values (accepted) and one play per required value leaves it out
(refused by "Validating arguments against arg spec ..." with "missing
required arguments"). All plays run in one ansible-playbook on localhost,
with every role as a stub (kit_playbooks.stub_roles: real specs, defaults and
vars; no real task runs).
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from kit_playbooks import ROOT, VALIDATION_TASK, recording_play, stub_roles

# A valid value for every required option of every entry point.
VALUES = {
    "rabbitmq_erlang_cookie": "unit-test-cookie-0123456789abcdef",
    "rabbitmq_admin_password": "unit-test-admin-password",
    "rabbitmq_application": {"name": "unit", "password": "unit-test-app-password"},
    "rabbitmq_rules_version": "4.3.*",
    "rabbitmq_rules_erlang_version": "1:28.*",
    "rabbitmq_version": "4.3.6",
    "haproxy_stats_user": "stats",
    "haproxy_stats_password": "unit-test-stats-password",
    "haproxy_route_name": "probe",
    "haproxy_route_path": "/probe",
    "mongodb_admin_password": "unit-test-admin-password",
    "mongodb_app_password": "unit-test-app-password",
    "celery_worker_app": "proj.celery:app",
    "celery_worker_app_source": {"type": "path", "path": "/src/proj"},
    "celery_worker_release_source": {"type": "path", "path": "/src/proj"},
    "celery_worker_release_dir": "/opt/proj",
    "flower_broker_url": "amqp://app:unit-test-password@broker:5672/app",
    "flower_basic_auth": [{"user": "ops", "password": "unit-test-flower-password"}],
}

def _specs() -> dict[str, dict]:
    return {
        path.parents[1].name: yaml.safe_load(path.read_text())["argument_specs"]
        for path in sorted(ROOT.glob("roles/*/meta/argument_specs.yml"))
    }


def _defaults(role: str) -> dict:
    return yaml.safe_load((ROOT / "roles" / role / "defaults/main.yml").read_text()) or {}


def _required(spec: dict) -> list[str]:
    return [name for name, option in (spec.get("options") or {}).items() if option.get("required")]


ENTRY_POINTS = [(role, entry) for role, specs in _specs().items() for entry in specs]
CASES = {
    f"{role}:{entry}:{missing or 'complete'}": (role, entry, missing)
    for role, entry in ENTRY_POINTS
    for missing in [None, *_required(_specs()[role][entry])]
}


@pytest.mark.parametrize(("role", "entry"), ENTRY_POINTS)
def test_required_values_and_secrets_have_no_default(role, entry):
    spec = _specs()[role][entry]
    defaults = _defaults(role)
    for name, option in (spec.get("options") or {}).items():
        if option.get("required"):
            assert "default" not in option, f"{name}: required with a default in the spec"
            assert name not in defaults, f"{name}: required, yet defaults/main.yml sets it"
        if option.get("no_log"):
            assert name not in defaults, f"{name}: a secret with a default"


@pytest.fixture(scope="module")
def outcomes(run_playbook, tmp_path_factory):
    missing_values = {name for _, spec in _specs().items() for entry in spec.values()
                      for name in _required(entry)} - set(VALUES)
    assert not missing_values, f"give a valid value in VALUES for {sorted(missing_values)}"
    out = tmp_path_factory.mktemp("required")
    plays = [{
        # rabbitmq's and mongodb's defaults read facts; the memory cache keeps them for every play.
        "name": "Gather the controller's facts once",
        "hosts": "localhost",
        "gather_facts": True,
        "gather_subset": ["min"],
        "tasks": [],
    }]
    for case, (role, entry, missing) in CASES.items():
        given = {name: VALUES[name] for name in _required(_specs()[role][entry]) if name != missing}
        include = {"name": role} if entry == "main" else {"name": role, "tasks_from": entry}
        plays.append(recording_play(case, given, {"ansible.builtin.include_role": include},
                                    out / case.replace(":", "-")))
    roles = stub_roles(tmp_path_factory.mktemp("roles") / "roles", [role for role, _ in ENTRY_POINTS])
    proc = run_playbook(plays, "required", roles_path=roles)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Only stubs ran after the validation tasks.
    ran = re.findall(r"^TASK \[[a-z_]+ : (.*?)\]", proc.stdout, re.M)
    assert all(t.startswith(("Validating arguments", "Stub of")) for t in ran), ran
    return {case: json.loads((out / case.replace(":", "-")).read_text()) for case in CASES}


@pytest.mark.parametrize("case", list(CASES))
def test_spec_refuses_a_missing_required_value(outcomes, case):
    role, entry, missing = CASES[case]
    outcome = outcomes[case]
    if missing is None:
        assert outcome["failed_task"] is None, outcome
        return
    assert outcome["failed_task"] is not None, f"{case}: accepted without {missing}"
    assert outcome["failed_task"].startswith(VALIDATION_TASK.format(entry)), outcome
    assert f"missing required arguments: {missing}" in " ".join(outcome["msg"].split()), outcome["msg"]
