"""Broker node fault (disruptive, last): under a steady stream of tasks published
through HAProxy with publisher confirms, one of the three RabbitMQ nodes (the
leader of the `short` quorum queue) is stopped and later started again. Every
task whose publish was confirmed must be executed; the counts are reported in
.cache/cluster/broker-fault.json."""

import json
import time
from collections import Counter

import pytest
from cluster_helpers import VHOST, new_prefix, podman, report, wait_for

pytestmark = pytest.mark.disruptive
NOOP = "celery_stack_app.noop"
RATE = "40"            # tasks per second at most: a steady stream, not a benchmark
MAX_SECONDS = "600"    # the producer's own bound; the test stops it much earlier
OUT, STOP = "/tmp/cluster-tests/stream.json", "/tmp/cluster-tests/stream.stop"


def _running_nodes(node_host) -> set[str]:
    proc = podman("exec", node_host, "rabbitmqctl", "cluster_status", "--formatter", "json", check=False)
    if proc.returncode != 0:
        return set()
    return set(json.loads(proc.stdout).get("running_nodes", []))


def test_stopping_one_broker_node_loses_no_confirmed_task(
        workers, brokers, management, run_app_script, executions, journal_suppressed):
    status, queue = management("GET", f"/queues/{VHOST}/short")
    assert status == 200
    leader = queue.get("leader", "").split("@", 1)[-1]
    victim = leader if leader in brokers else brokers[-1]
    survivor = next(b for b in brokers if b != victim)
    producer_host = workers[0]
    prefix = new_prefix("stream")
    since = time.time()
    podman("exec", producer_host, "rm", "-f", OUT, STOP)
    run_app_script(producer_host, "producer.py", "stream", NOOP, "short", prefix, OUT, STOP, RATE, MAX_SECONDS,
                   detach=True)

    def progress():
        proc = podman("exec", producer_host, "cat", OUT, check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else None

    def confirmed_at_least(n):
        return lambda: (p := progress()) is not None and p["confirmed_count"] >= n and p

    before = wait_for(confirmed_at_least(200), 180, what="the stream to get going")["confirmed_count"]
    podman("exec", victim, "systemctl", "stop", "rabbitmq-server", timeout=300)
    wait_for(lambda: f"rabbit@{victim}" not in _running_nodes(survivor), 120, interval=2,
             what=f"{victim} to leave the running nodes")
    during = wait_for(confirmed_at_least(before + 300), 300, interval=2,
                      what="tasks to be confirmed while a node is down")["confirmed_count"]
    podman("exec", victim, "systemctl", "start", "rabbitmq-server", timeout=300)
    wait_for(lambda: _running_nodes(survivor) == {f"rabbit@{b}" for b in brokers}, 300, interval=3,
             what=f"{victim} to rejoin the cluster")
    wait_for(confirmed_at_least(during + 200), 300, interval=2, what="the stream to go on after the restart")
    podman("exec", producer_host, "touch", STOP)
    final = wait_for(lambda: (p := progress()) is not None and p["done"] and p, 120, what="the producer to stop")
    confirmed = set(final["confirmed"])

    def all_executed():
        seen = executions(prefix, since)
        done = set().union(*(set(c) for c in seen.values()))
        return seen if confirmed <= done else None

    try:
        seen = wait_for(all_executed, 300, interval=5, what="every confirmed task to be executed")
    finally:
        seen = executions(prefix, since)
        runs = Counter()
        for counts in seen.values():
            runs.update(counts)
        executed = set(runs)
        figures = {
            "stopped_node": victim, "was_short_queue_leader": victim == leader,
            "published_attempts": len(confirmed) + len(final["failed"]),
            "confirmed": len(confirmed), "refused_or_failed_publishes": len(final["failed"]),
            "confirmed_before_stop": before, "confirmed_while_down_at_least": during - before,
            "executed_unique": len(executed), "executed_total": sum(runs.values()),
            "duplicates": sum(n - 1 for n in runs.values() if n > 1),
            "confirmed_not_executed": len(confirmed - executed),
            "executed_per_host": {h: sum(c.values()) for h, c in seen.items()},
            "failed_examples": dict(list(final["failed"].items())[:3]),
        }
        report("broker-fault", figures)
    assert not journal_suppressed(since), "journald suppressed worker lines: the execution counts are unreliable"
    assert confirmed <= executed, f"{len(confirmed - executed)} confirmed task(s) never executed"
