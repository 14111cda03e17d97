"""Node replacement: a broker machine is destroyed and comes back empty under
the same name (a re-imaged host), while a producer keeps publishing with
publisher confirms to a surviving node. A converge must put it back into the
cluster instead of letting it start a cluster of its own, with the users,
policies and quorum queues intact, no confirmed message lost, and the quorum
queue replicated on three nodes again. Done for the first host of the group
(the one that formed the cluster) and for another one, in turn; the figures
go to .cache/rabbitmq/replace-<host>.json.
"""

from __future__ import annotations

import json
import os
import pathlib
import threading
import time

import amqp
import pytest

from conftest import connect, rabbitmqctl_json

pytestmark = pytest.mark.disruptive
VHOST = "beta"
PRELOADED = 100


def connect_beta(address: str, password: str) -> amqp.Connection:
    return connect(address, "beta", password, VHOST, confirm_publish=True)


class Producer(threading.Thread):
    """Publishes persistent messages with confirms until stopped; counts what
    the broker confirmed and what it refused or lost in flight."""

    def __init__(self, address: str, password: str, queue: str):
        super().__init__(daemon=True)
        self.address, self.password, self.queue = address, password, queue
        self.confirmed = 0
        self.failed = 0
        self.stop = threading.Event()

    def run(self) -> None:
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = connect_beta(self.address, self.password)
                    channel = conn.channel()
                channel.basic_publish(amqp.Message("stream", delivery_mode=2), exchange="", routing_key=self.queue)
                self.confirmed += 1
                time.sleep(0.02)
            except Exception:  # noqa: BLE001 - any failure is an unconfirmed publish, counted
                self.failed += 1
                conn = None
                time.sleep(1)
        if conn is not None:
            conn.collect()


def report(name: str, data: dict) -> None:
    root = pathlib.Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", pathlib.Path(__file__).parents[3]))
    path = root / ".cache" / "rabbitmq"
    path.mkdir(parents=True, exist_ok=True)
    (path / f"{name}.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(f"\n[{name}] {json.dumps(data, sort_keys=True)}")


@pytest.mark.parametrize("victim_index", [0, 1], ids=["first-host", "other-host"])
def test_replaced_node_rejoins_without_loss(node, hosts, address, secret, converge, recreate_container,
                                            victim_index):
    victim = hosts[victim_index]
    survivor = hosts[2]
    queue = f"beta.replaced.{victim}"
    expected_nodes = {f"rabbit@{name}" for name in hosts}
    with connect_beta(address(survivor), secret("beta")) as conn:
        channel = conn.channel()
        channel.queue_declare(queue, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"})
        channel.queue_purge(queue)
        for i in range(PRELOADED):
            channel.basic_publish(amqp.Message(f"kept {i}", delivery_mode=2), exchange="", routing_key=queue)
    users_before = {u["user"] for u in rabbitmqctl_json(node(survivor), "list_users")}
    policies_before = {(p["vhost"], p["name"], p["definition"])
                       for vhost in ("alpha", "beta")
                       for p in rabbitmqctl_json(node(survivor), "list_policies", "-p", vhost)}

    producer = Producer(address(survivor), secret("beta"), queue)
    producer.start()
    started = time.monotonic()
    recreate_container(victim)
    assert node(victim).run("test -e /var/lib/rabbitmq").rc != 0, "the recreated machine is not empty"
    result = converge()
    converge_seconds = round(time.monotonic() - started, 1)
    producer.stop.set()
    producer.join(timeout=30)
    assert result.returncode == 0, result.tail

    for name in hosts:
        status = rabbitmqctl_json(node(name), "cluster_status")
        assert set(status["running_nodes"]) == expected_nodes, name
        assert set(status["disk_nodes"]) == expected_nodes, name
    with connect_beta(address(survivor), secret("beta")) as conn:
        _, depth, _ = conn.channel().queue_declare(queue, passive=True)
    members = {row["name"]: row["members"]
               for row in rabbitmqctl_json(node(survivor), "list_queues", "-p", VHOST, "name", "members")}
    report(f"replace-{victim}", {
        "replaced": victim, "first_host": victim_index == 0, "converge_seconds": converge_seconds,
        "preloaded": PRELOADED, "confirmed_during": producer.confirmed,
        "unconfirmed_publish_attempts": producer.failed, "depth_after": depth,
        "queue_members_after": sorted(members[queue]),
    })
    assert depth == PRELOADED + producer.confirmed, "confirmed messages were lost"
    assert set(members[queue]) == expected_nodes, "the quorum queue is not replicated on every node again"
    assert {u["user"] for u in rabbitmqctl_json(node(victim), "list_users")} == users_before
    assert {(p["vhost"], p["name"], p["definition"])
            for vhost in ("alpha", "beta")
            for p in rabbitmqctl_json(node(victim), "list_policies", "-p", vhost)} == policies_before
    with connect_beta(address(survivor), secret("beta")) as conn:
        conn.channel().queue_delete(queue)
