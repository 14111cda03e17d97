"""roles/celery_worker gives a pool only the time limits its pool type enforces.

Celery enforces both limits on prefork, the hard one on gevent, none on
threads, solo and eventlet (roles/celery_worker/vars/main.yml cites the
source; roles/celery_worker/tests/test_celery_pool_limits.py checks it against
the pinned Celery). So a limit given to a pool type that ignores it is
refused by tasks/assert.yml, with a message naming the pool, what Celery
does and what to do instead; such pools are bounded by `stop_timeout`, and
the unit's TimeoutStopSec comes from the bound that applies.

Each case is one play on localhost, all in one ansible-playbook: the role's
argument spec is validated (the role is a stub, kit_playbooks.stub_roles),
then the real tasks/assert.yml runs and, when it accepts, the real
templates/worker.service.j2 is rendered for every pool. The kit's own pool
definitions (the local inventory, the Molecule scenarios) must be accepted.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from kit_playbooks import ROOT, VALIDATION_TASK, recording_play, stub_roles

ROLE = ROOT / "roles" / "celery_worker"
GRACE = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())["celery_worker_stop_grace"]
REQUIRED = {
    "celery_worker_app": "proj.celery:app",
    "celery_worker_app_source": {"type": "path", "path": "/src/proj"},
}
LIMITS_CHECK = "Check that each pool's type enforces the time limits it is given"
STOP_TIMEOUT_CHECK = "Check that stop_timeout is given only to pools without a hard limit"
POOLS_CHECK = "Check the pools"
LIMIT_VALUES_CHECK = "Check each pool's limits"


def _pool(**keys) -> dict:
    return {"name": "short", "queues": ["short"], **keys}


def _scenario_pools(path: str, group: str) -> list[dict]:
    group_vars = yaml.safe_load((ROOT / path).read_text())["provisioner"]["inventory"]["group_vars"]
    return group_vars[group]["celery_worker_pools"]


LOCAL_POOLS = yaml.safe_load((ROOT / "inventories/local/group_vars/all/main.yml").read_text())[
    "celery_worker_pools"]

# case: (variables, expected units {pool: (time limit, soft limit, TimeoutStopSec)} or
#        (failed task, words every one of which the refusal must contain))
ACCEPTED = {
    "role_defaults": ({}, {"default": (300, 240, 300 + GRACE)}),
    "prefork_own_limits": (
        {"celery_worker_pools": [_pool(pool="prefork", time_limit=900, soft_time_limit=840)]},
        {"short": (900, 840, 900 + GRACE)}),
    "threads_stop_timeout": (
        {"celery_worker_pools": [_pool(pool="threads", concurrency=16, stop_timeout=45)]},
        {"short": (None, None, 45 + GRACE)}),
    "threads_without_any_limit": (
        {"celery_worker_pools": [_pool(pool="threads")]},
        {"short": (None, None, 300 + GRACE)}),
    "solo_stop_timeout": (
        {"celery_worker_pools": [_pool(pool="solo", concurrency=1, stop_timeout=20)]},
        {"short": (None, None, 20 + GRACE)}),
    "gevent_hard_limit_only": (
        {"celery_worker_pools": [_pool(pool="gevent", concurrency=100, time_limit=120)]},
        {"short": (120, None, 120 + GRACE)}),
    # threads for every pool by default, one prefork pool with its limits
    "threads_by_default_prefork_by_name": (
        {"celery_worker_pool_defaults": {"pool": "threads"},
         "celery_worker_pools": [_pool(stop_timeout=60), {"name": "long", "queues": ["long"], "pool": "prefork",
                                                          "time_limit": 600, "soft_time_limit": 540}]},
        {"short": (None, None, 60 + GRACE), "long": (600, 540, 600 + GRACE)}),
    "local_inventory": ({"celery_worker_pools": LOCAL_POOLS}, None),
    "molecule_celery_worker_sample": (
        {"celery_worker_pools": _scenario_pools("molecule/celery_worker/molecule.yml", "celery_worker")}, None),
    "molecule_celery_worker_django": (
        {"celery_worker_pools": _scenario_pools("molecule/celery_worker/molecule.yml", "django_worker")}, None),
    "molecule_flower": (
        {"celery_worker_pools": _scenario_pools("molecule/flower/molecule.yml", "all")}, None),
}

THREADS_REFUSAL = ["REFUSED: pool short (pool: threads)", "Celery's threads pool", "never applies a time limit",
                   "celery_worker_pool_defaults", "set stop_timeout", "pool: prefork"]
REFUSED = {
    "threads_time_limits": (
        {"celery_worker_pools": [_pool(pool="threads", time_limit=60, soft_time_limit=50)]},
        (LIMITS_CHECK, THREADS_REFUSAL + ["is given time_limit and soft_time_limit"])),
    "threads_soft_limit_only": (
        {"celery_worker_pools": [_pool(pool="threads", soft_time_limit=50, stop_timeout=30)]},
        (LIMITS_CHECK, THREADS_REFUSAL + ["is given soft_time_limit,"])),
    "threads_limit_from_the_pool_defaults": (
        {"celery_worker_pool_defaults": {"time_limit": 600},
         "celery_worker_pools": [_pool(pool="threads", stop_timeout=30)]},
        (LIMITS_CHECK, THREADS_REFUSAL + ["is given time_limit,"])),
    "solo_time_limit": (
        {"celery_worker_pools": [_pool(pool="solo", time_limit=60)]},
        (LIMITS_CHECK, ["REFUSED: pool short (pool: solo) is given time_limit,", "Celery's solo pool",
                        "set stop_timeout"])),
    "eventlet_time_limit": (
        {"celery_worker_pools": [_pool(pool="eventlet", time_limit=60)]},
        (LIMITS_CHECK, ["REFUSED: pool short (pool: eventlet)", "Celery's eventlet pool never applies"])),
    "gevent_soft_limit": (
        {"celery_worker_pools": [_pool(pool="gevent", time_limit=60, soft_time_limit=50)]},
        (LIMITS_CHECK, ["REFUSED: pool short (pool: gevent) is given soft_time_limit,",
                        "does not implement soft time limits", "Keep time_limit", "pool prefork for a soft limit"])),
    "prefork_stop_timeout": (
        {"celery_worker_pools": [_pool(pool="prefork", stop_timeout=60)]},
        (STOP_TIMEOUT_CHECK, ["REFUSED: pool short (pool: prefork) is given stop_timeout",
                        "hard time_limit (300 s)", "Remove stop_timeout"])),
    # a limit in celery_worker_pool_defaults is every pool's: stop_timeout reaches the prefork pool too
    "stop_timeout_from_the_pool_defaults": (
        {"celery_worker_pool_defaults": {"pool": "threads", "stop_timeout": 60},
         "celery_worker_pools": [_pool(), {"name": "long", "queues": ["long"], "pool": "prefork"}]},
        (STOP_TIMEOUT_CHECK, ["REFUSED: pool long (pool: prefork) is given stop_timeout"])),
    "threads_stop_timeout_zero": (
        {"celery_worker_pools": [_pool(pool="threads", stop_timeout=0)]},
        (LIMIT_VALUES_CHECK, ["stop_timeout (0 s) must be a positive number of seconds below"])),
    "threads_stop_timeout_over_consumer_timeout": (
        {"celery_worker_pools": [_pool(pool="threads", stop_timeout=2000)]},
        (LIMIT_VALUES_CHECK, ["stop_timeout (2000 s) must be a positive number of seconds below the broker's "
                              "consumer timeout (1800 s"])),
    "prefork_soft_not_below_hard": (
        {"celery_worker_pools": [_pool(time_limit=60, soft_time_limit=60)]},
        (LIMIT_VALUES_CHECK, ["soft_time_limit (60 s) must be below time_limit (60 s)"])),
    "unknown_pool_type_in_the_pool_defaults": (
        {"celery_worker_pool_defaults": {"pool": "greenlet"}},
        (POOLS_CHECK, ["a pool type among prefork, gevent, threads, solo, eventlet", "(got greenlet)"])),
    "stop_timeout_not_a_number": (
        {"celery_worker_pools": [_pool(pool="threads", stop_timeout="soon")]},
        (VALIDATION_TASK.format("main"), ["stop_timeout", "int"])),
}
CASES = {**ACCEPTED, **REFUSED}


@pytest.fixture(scope="module")
def outcomes(run_playbook, tmp_path_factory):
    out = tmp_path_factory.mktemp("time-limits")
    plays = []
    for case, (variables, _) in CASES.items():
        (out / case).mkdir()
        task = {"block": [
            # The stub's main.yml: the argument spec is validated, nothing else runs.
            {"name": "Validate the arguments", "ansible.builtin.include_role": {"name": "celery_worker"}},
            {"name": "Run the real checks", "ansible.builtin.include_role": {
                "name": "celery_worker", "tasks_from": "assert", "public": True}},
            {"name": "Render each pool's unit", "ansible.builtin.template": {
                "src": str(ROLE / "templates" / "worker.service.j2"),
                "dest": str(out / case / "{{ item.name }}.service"), "mode": "0644"},
             "loop": "{{ _celery_worker_pools }}", "loop_control": {"label": "{{ item.name }}"}},
        ]}
        plays.append(recording_play(case, {**REQUIRED, **variables}, task, out / case / "outcome.json"))
    roles = stub_roles(tmp_path_factory.mktemp("roles") / "roles", ["celery_worker"],
                       real_tasks={"celery_worker": ["assert.yml"]})
    proc = run_playbook(plays, "time-limits", roles_path=roles)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {case: (json.loads((out / case / "outcome.json").read_text()),
                   {unit.stem: unit.read_text() for unit in (out / case).glob("*.service")})
            for case in CASES}


def _unit(text: str) -> tuple[int | None, int | None, int]:
    """(--time-limit, --soft-time-limit, TimeoutStopSec) of a rendered unit."""
    exec_start = re.search(r"^ExecStart=(.*?[^\\])$", text, re.M | re.S).group(1)
    argv = " ".join(exec_start.replace("\\\n", " ").split())
    hard = re.search(r"--time-limit (\d+)", argv)
    soft = re.search(r"--soft-time-limit (\d+)", argv)
    stop = re.findall(r"^TimeoutStopSec=(\d+)$", text, re.M)
    assert len(stop) == 1, text
    return (int(hard.group(1)) if hard else None, int(soft.group(1)) if soft else None, int(stop[0]))


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_accepted_pools_render_the_limits_their_type_enforces(outcomes, case):
    outcome, units = outcomes[case]
    assert outcome["failed_task"] is None, outcome
    variables, expected = ACCEPTED[case]
    pools = variables.get("celery_worker_pools", [{"name": "default"}])
    assert sorted(units) == sorted(p["name"] for p in pools)
    rendered = {name: _unit(text) for name, text in units.items()}
    for name, text in units.items():
        assert "--time-limit None" not in text and "--soft-time-limit None" not in text, text
        hard, soft, stop = rendered[name]
        # the bound TimeoutStopSec is derived from is above the hard limit when there is one
        assert hard is None or stop == hard + GRACE, (name, rendered[name])
    if expected is not None:
        assert rendered == expected


@pytest.mark.parametrize("case", list(REFUSED))
def test_void_or_inconsistent_limits_are_refused(outcomes, case):
    outcome, units = outcomes[case]
    failed_task, words = REFUSED[case][1]
    assert outcome["failed_task"] is not None, f"{case} was accepted"
    assert outcome["failed_task"].startswith(failed_task), outcome
    message = " ".join(" ".join([outcome["msg"], *outcome["item_msgs"]]).split())
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert units == {}, "a refused pool got a unit"
