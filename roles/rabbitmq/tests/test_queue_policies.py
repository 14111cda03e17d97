"""The queue policies the role applies per application and RabbitMQ version.

Every case runs the role's `queue_policies` entry point on localhost (no
broker): the dead-letter queue gets its own policies above the
application's (no delivery limit, no dead-letter exchange, its own bound,
overflow reject-publish), and the quorum task queues get at-least-once
dead-lettering where the broker supports it. The refused entries run
tasks/assert_application.yml. The app's tests apply the same definitions to
a real broker (app/tests/test_dlq.py).
"""

from __future__ import annotations

import json

import pytest

APP = {
    "name": "app",
    "vhost": "app",
    "password": "x" * 16,
    "queue_policy": {
        "max_length": 100000,
        "dead_letter_exchange": "app.dlx",
        "delivery_limit": 5,
        "dead_letter_queue": {"name": "app.dead_letter", "max_length": 10000},
    },
}
TASKS_COMMON = {"max-length": 100000, "overflow": "reject-publish", "dead-letter-exchange": "app.dlx"}
AT_LEAST_ONCE = {"dead-letter-strategy": "at-least-once"}
DLQ_PATTERN = r"^app\.dead_letter$"
DLQ_COMMON = {"max-length": 10000, "overflow": "reject-publish"}


def with_policy(**changes):
    return {**APP, "queue_policy": {**APP["queue_policy"], **changes}}


CASES = {
    "3.10.8": ("3.10.8", APP),
    "3.13.7": ("3.13.7", APP),
    "4.0.5": ("4.0.5", APP),
    "4.3.6": ("4.3.6", APP),
    "4.3.6_at_most_once": ("4.3.6", with_policy(dead_letter_strategy="at-most-once")),
    "4.3.6_dlq_pattern_bytes_priority": ("4.3.6", with_policy(
        priority=3, dead_letter_queue={"pattern": "^dlq\\.", "max_length": 50,
                                       "max_length_bytes": 1048576, "priority": 7})),
    "4.3.6_no_dlq": ("4.3.6", {**APP, "queue_policy": {"max_length": 5}}),
}

REFUSED = {
    "drop_head_with_at_least_once": (with_policy(overflow="drop-head"), "at-least-once needs overflow reject-publish"),
    "dlq_name_and_pattern": (with_policy(dead_letter_queue={"name": "a", "pattern": "b", "max_length": 1}),
                             "dead_letter_queue needs exactly one of name or pattern"),
    "dlq_without_bound": (with_policy(dead_letter_queue={"name": "a"}), "a positive max_length"),
    "dlq_priority_too_low": (with_policy(dead_letter_queue={"name": "a", "max_length": 1, "priority": 1}),
                             "a priority above the"),
}


@pytest.fixture(scope="module")
def outcomes(run_playbook, tmp_path_factory):
    out = tmp_path_factory.mktemp("policies")
    plays = []
    for name, (version, app) in CASES.items():
        plays.append({
            "name": f"case {name}", "hosts": "localhost", "gather_facts": False,
            "vars": {"rabbitmq_version": version, "rabbitmq_application": app},
            "tasks": [
                {"ansible.builtin.include_role": {"name": "rabbitmq", "tasks_from": "queue_policies"}},
                {"ansible.builtin.copy": {"content": "{{ _rabbitmq_app_policies | to_json }}",
                                          "dest": str(out / name), "mode": "0644"}},
            ],
        })
    for name, (app, _) in REFUSED.items():
        plays.append({
            "name": f"refused {name}", "hosts": "localhost", "gather_facts": False,
            "vars": {"rabbitmq_application": app},
            "tasks": [{
                "block": [
                    {"ansible.builtin.include_role": {"name": "rabbitmq", "tasks_from": "assert_application"}},
                    {"ansible.builtin.copy": {"content": "accepted", "dest": str(out / name), "mode": "0644"}},
                ],
                "rescue": [{"ansible.builtin.copy": {"content": "{{ ansible_failed_result.msg }}",
                                                     "dest": str(out / name), "mode": "0644"}}],
            }],
        })
    proc = run_playbook(plays, "queue_policies")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = {name: {p["name"]: p for p in json.loads((out / name).read_text())} for name in CASES}
    result.update({name: (out / name).read_text() for name in REFUSED})
    return result


def test_3_10_one_dead_letter_policy_for_both_types(outcomes):
    found = outcomes["3.10.8"]
    assert set(found) == {"app-classic", "app-quorum", "app-dead-letter"}
    assert found["app-quorum"]["definition"] == {**TASKS_COMMON, "delivery-limit": 5, **AT_LEAST_ONCE}
    assert found["app-classic"]["definition"] == TASKS_COMMON
    dlq = found["app-dead-letter"]
    # no quorum delivery limit by default before 4.0: one policy, apply-to queues
    assert dlq == {"name": "app-dead-letter", "apply_to": "queues", "pattern": DLQ_PATTERN,
                   "priority": 10, "definition": DLQ_COMMON}
    assert dlq["priority"] > max(int(found[n]["priority"]) for n in ("app-classic", "app-quorum"))


def test_3_13_split_by_type_without_delivery_limit(outcomes):
    found = outcomes["3.13.7"]
    assert found["app-dead-letter-classic"]["apply_to"] == "classic_queues"
    assert found["app-dead-letter-quorum"]["apply_to"] == "quorum_queues"
    assert found["app-dead-letter-classic"]["definition"] == DLQ_COMMON
    assert found["app-dead-letter-quorum"]["definition"] == DLQ_COMMON
    assert found["app-quorum"]["definition"] == {**TASKS_COMMON, "delivery-limit": 5, **AT_LEAST_ONCE}


@pytest.mark.parametrize("version", ["4.0.5", "4.3.6"])
def test_4_x_dead_letter_queue_has_no_delivery_limit(outcomes, version):
    found = outcomes[version]
    assert set(found) == {"app-classic", "app-quorum", "app-dead-letter-classic", "app-dead-letter-quorum"}
    assert found["app-quorum"]["definition"] == {**TASKS_COMMON, "delivery-limit": 5, **AT_LEAST_ONCE}
    assert found["app-classic"]["definition"] == TASKS_COMMON
    quorum, classic = found["app-dead-letter-quorum"], found["app-dead-letter-classic"]
    assert quorum["definition"] == {**DLQ_COMMON, "delivery-limit": -1}
    assert classic["definition"] == DLQ_COMMON
    for policy in (quorum, classic):
        assert policy["pattern"] == DLQ_PATTERN and int(policy["priority"]) == 10
        assert "dead-letter-exchange" not in policy["definition"]


def test_at_most_once_sets_no_strategy(outcomes):
    found = outcomes["4.3.6_at_most_once"]
    assert found["app-quorum"]["definition"] == {**TASKS_COMMON, "delivery-limit": 5}


def test_dead_letter_queue_by_pattern_with_bytes_and_priority(outcomes):
    found = outcomes["4.3.6_dlq_pattern_bytes_priority"]
    assert int(found["app-quorum"]["priority"]) == 3
    quorum = found["app-dead-letter-quorum"]
    assert quorum["pattern"] == "^dlq\\." and int(quorum["priority"]) == 7
    assert quorum["definition"] == {"max-length": 50, "max-length-bytes": 1048576,
                                    "overflow": "reject-publish", "delivery-limit": -1}


def test_no_dead_letter_queue_no_extra_policy(outcomes):
    assert set(outcomes["4.3.6_no_dlq"]) == {"app-classic", "app-quorum"}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused(outcomes, name):
    assert REFUSED[name][1] in outcomes[name]
