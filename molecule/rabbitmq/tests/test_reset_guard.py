"""The reset guard: a broker that holds data is never reset to join the cluster.

The third node leaves the cluster and runs standalone with 50 persistent
messages in a queue of an application vhost (not "/": the guard used to look
at "/" only). Converging the scenario again must refuse to reset it, with a
message naming what it holds, and leave the messages where they are. Then
the operator names the host in rabbitmq_cluster_allow_reset and the node
joins: the cluster is three again.
"""

from __future__ import annotations

import json

import pytest

VHOST = "alpha"
QUEUE = "held.by.standalone"
MESSAGES = 50
API = "http://127.0.0.1:15672/api"

pytestmark = pytest.mark.disruptive


def run(host, command: str) -> str:
    result = host.run(command)
    assert result.rc == 0, f"{command}: {result.stdout}{result.stderr}"
    return result.stdout


def queue_depths(host, vhost: str) -> dict[str, int]:
    rows = json.loads(run(host, f"rabbitmqctl -q list_queues -p {vhost} --formatter json name messages"))
    return {row["name"]: int(row["messages"]) for row in rows}


def running_nodes(host) -> set[str]:
    return set(json.loads(run(host, "rabbitmqctl -q cluster_status --formatter json"))["running_nodes"])


def make_standalone_with_data(host) -> None:
    """Leave the cluster (reset), then hold persistent messages in an app vhost.

    Only the node's built-in guest account exists after the reset, and it may
    log in from loopback only: the queue is filled through the node's own
    management API on 127.0.0.1.
    """
    run(host, "rabbitmqctl stop_app")
    run(host, "rabbitmqctl reset")
    run(host, "rabbitmqctl start_app")
    run(host, "rabbitmq-diagnostics -q check_running")
    run(host, f"rabbitmqctl add_vhost {VHOST}")
    run(host, f"rabbitmqctl set_permissions -p {VHOST} guest '.*' '.*' '.*'")
    curl = "curl -sf -u guest:guest -H 'content-type: application/json'"
    run(host, f"{curl} -X PUT -d '{{\"durable\": true}}' {API}/queues/{VHOST}/{QUEUE}")
    body = json.dumps({"properties": {"delivery_mode": 2}, "routing_key": QUEUE,
                       "payload": "kept", "payload_encoding": "string"})
    run(host, f"for i in $(seq {MESSAGES}); do {curl} -X POST -d '{body}' "
              f"{API}/exchanges/{VHOST}/amq.default/publish >/dev/null || exit 1; done")


def test_node_holding_messages_in_an_app_vhost_is_not_reset(node, hosts, converge):
    first, standalone = node(hosts[0]), node(hosts[2])
    make_standalone_with_data(standalone)
    assert running_nodes(standalone) == {f"rabbit@{hosts[2]}"}
    assert queue_depths(standalone, VHOST) == {QUEUE: MESSAGES}

    refused = converge()
    assert refused.returncode != 0, refused.tail
    output = refused.words
    assert f"REFUSED: {hosts[2]}" in output, refused.tail
    assert f"1 queue(s) holding {MESSAGES} message(s)" in output
    assert f"{VHOST}; users other than guest: none" in output
    # Nothing was touched: still alone, still holding every message.
    assert running_nodes(standalone) == {f"rabbit@{hosts[2]}"}
    assert queue_depths(standalone, VHOST) == {QUEUE: MESSAGES}
    assert f"rabbit@{hosts[2]}" not in running_nodes(first)

    # The operator names the host: it is reset (its data deleted) and joins.
    allowed = converge("-e", json.dumps({"rabbitmq_cluster_allow_reset": [hosts[2]]}))
    assert allowed.returncode == 0, allowed.tail
    expected = {f"rabbit@{name}" for name in hosts}
    for name in hosts:
        assert running_nodes(node(name)) == expected, name
    assert QUEUE not in queue_depths(first, VHOST)
