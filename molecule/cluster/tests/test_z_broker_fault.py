"""Broker node fault (disruptive, last): under a steady stream of tasks published
through HAProxy with publisher confirms, one of the three RabbitMQ nodes (the
leader of the `short` quorum queue) is stopped and later started again. Every
task whose publish was confirmed must be executed; the counts are reported in
.cache/cluster/broker-fault.json."""

import json

import pytest
from cluster_helpers import VHOST, podman, wait_for

pytestmark = pytest.mark.disruptive


def _running_nodes(node_host) -> set[str]:
    proc = podman("exec", node_host, "rabbitmqctl", "cluster_status", "--formatter", "json", check=False)
    if proc.returncode != 0:
        return set()
    return set(json.loads(proc.stdout).get("running_nodes", []))


def test_stopping_one_broker_node_loses_no_confirmed_task(brokers, management, steady_stream):
    status, queue = management("GET", f"/queues/{VHOST}/short")
    assert status == 200
    leader = queue.get("leader", "").split("@", 1)[-1]
    victim = leader if leader in brokers else brokers[-1]
    survivor = next(b for b in brokers if b != victim)
    stream = steady_stream("stream")

    before = stream.confirmed_at_least(200, 180, "the stream to get going")
    podman("exec", victim, "systemctl", "stop", "rabbitmq-server", timeout=300)
    wait_for(lambda: f"rabbit@{victim}" not in _running_nodes(survivor), 120, interval=2,
             what=f"{victim} to leave the running nodes")
    during = stream.confirmed_at_least(before + 300, 300, "tasks to be confirmed while a node is down")
    podman("exec", victim, "systemctl", "start", "rabbitmq-server", timeout=300)
    wait_for(lambda: _running_nodes(survivor) == {f"rabbit@{b}" for b in brokers}, 300, interval=3,
             what=f"{victim} to rejoin the cluster")
    stream.confirmed_at_least(during + 200, 300, "the stream to go on after the restart")
    stream.finish("broker-fault", {
        "stopped_node": victim, "was_short_queue_leader": victim == leader,
        "confirmed_before_stop": before, "confirmed_while_down_at_least": during - before,
    })
