"""Broker-only tasks through HAProxy are all executed, by both worker hosts."""

import json
from collections import Counter

from cluster_helpers import new_prefix, podman, report, wait_for

HEALTH, NOOP = "celery_stack_app.health", "celery_stack_app.noop"


def test_health_round_trip_through_haproxy(workers, app_env_file):
    out = podman("exec", "--env-file", app_env_file(), workers[-1], "/opt/celery-stack/current/venv/bin/celery-stack",
                 "health", "--timeout", "30").stdout
    answer = json.loads(out)
    assert answer["status"] == "ok"
    assert answer["hostname"].split("@", 1)[1] in workers


def test_health_and_noop_all_executed_across_both_workers(workers, run_app_script, executions):
    import time

    since = time.time()
    sent = []
    for task, count in ((NOOP, 200), (HEALTH, 40)):
        prefix = new_prefix(task.rsplit(".", 1)[1])
        result = json.loads(run_app_script(workers[0], "producer.py", "send", task, "short", str(count), prefix))
        assert not result["failed"], result["failed"]
        assert len(result["confirmed"]) == count
        sent.append((prefix, set(result["confirmed"])))

    def all_done():
        per_host = {}
        missing = 0
        for prefix, ids in sent:
            seen = executions(prefix, since)
            for host, counts in seen.items():
                per_host.setdefault(host, Counter()).update({prefix: sum(counts.values())})
            done = set().union(*(set(c) for c in seen.values()))
            missing += len(ids - done)
        return per_host if missing == 0 else None

    per_host = wait_for(all_done, 180, interval=3, what="every health and noop task to be executed")
    figures = {host: dict(c) for host, c in per_host.items()}
    report("broker-only-tasks", {"sent": {p: len(i) for p, i in sent}, "executed_per_host": figures})
    for host in workers:
        assert sum(per_host[host].values()) > 0, f"{host} executed none of the tasks: {figures}"
