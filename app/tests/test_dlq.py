"""Dead letters stay dead letters, on a loopback RabbitMQ with the kit's policies.

The module starts its own node (its at-least-once dead-letter worker retries
a refused dead letter after 1 s instead of 3 min) and applies, to its own
vhost, the policies the rabbitmq role generates for that RabbitMQ version
(roles/rabbitmq/tasks/queue_policies.yml, checked per version by
roles/rabbitmq/tests/test_queue_policies.py), with a DLQ bound of 3:

* ``celery-stack dlq list`` (``dlq.inspect``) ten times leaves the message in
  the DLQ with its ``x-death`` headers;
* dead-lettering into a full DLQ drops nothing: with at-least-once
  dead-lettering the refused dead letters wait in their task queue and
  arrive once the DLQ has room; a publisher to the full DLQ is nacked.
"""

from __future__ import annotations

import json
import re
import time
from urllib.parse import quote

import amqp
import pytest
from kombu import Connection

from broker import RabbitMQ
from celery_stack_app import celery_app as ca
from celery_stack_app import dlq
from celery_stack_app import settings as s

pytestmark = pytest.mark.integration

VHOST = "dlq-test"
DLQ_BOUND = 3
# rabbit's dead_letter_worker_publisher_confirm_timeout (ms, default 180000):
# how long the at-least-once worker waits before it sends a refused dead letter again.
ADVANCED = "[{rabbit, [{dead_letter_worker_publisher_confirm_timeout, 1000}]}]"


def _version(rmq: RabbitMQ) -> tuple[int, ...]:
    found = re.search(r"rabbitmq_server-(\d+)\.(\d+)\.(\d+)", rmq.server)
    assert found, rmq.server
    return tuple(int(x) for x in found.groups())


def kit_policies(version: tuple[int, ...], dlq_name: str) -> list[tuple[str, str, str, int, dict]]:
    """(name, apply-to, pattern, priority, definition) as the rabbitmq role builds them for the
    celery-stack application of inventories/local (delivery_limit 5, DLX celery_stack.dlx)."""
    split = version >= (3, 12)
    tasks = {"max-length": 100000, "overflow": "reject-publish", "dead-letter-exchange": "celery_stack.dlx"}
    quorum = {**tasks, "delivery-limit": 5, "dead-letter-strategy": "at-least-once"}
    dead = {"max-length": DLQ_BOUND, "overflow": "reject-publish"}
    dead_quorum = {**dead, "delivery-limit": -1} if version >= (4, 0) else dead
    pattern = r"^(?!amq\.).*"
    dlq_pattern = "^" + re.escape(dlq_name) + "$"
    if split:
        return [("app-classic", "classic_queues", pattern, 0, tasks),
                ("app-quorum", "quorum_queues", pattern, 0, quorum),
                ("app-dead-letter-classic", "classic_queues", dlq_pattern, 10, dead),
                ("app-dead-letter-quorum", "quorum_queues", dlq_pattern, 10, dead_quorum)]
    return [("app-classic", "queues", pattern, 0, tasks),
            ("app-quorum", "queues", pattern, 1, quorum),
            ("app-dead-letter", "queues", dlq_pattern, 10, dead)]


@pytest.fixture(scope="module")
def broker():
    rmq = RabbitMQ(advanced_config=ADVANCED).start()
    try:
        for args in (("add_vhost", VHOST), ("set_permissions", "-p", VHOST, rmq.user, ".*", ".*", ".*")):
            done = rmq.ctl(*args)
            assert done.returncode == 0, done.stderr
        for name, apply_to, pattern, priority, definition in kit_policies(_version(rmq), "celery_stack.dead_letter"):
            done = rmq.ctl("set_policy", "-p", VHOST, "--apply-to", apply_to, "--priority", str(priority),
                           name, pattern, json.dumps(definition))
            assert done.returncode == 0, done.stdout + done.stderr
        pytest._dbg_broker = rmq
        yield rmq
    finally:
        rmq.stop()


@pytest.fixture()
def cfg(broker):
    url = f"amqp://{quote(broker.user)}:{quote(broker.password)}@127.0.0.1:{broker.port}/{VHOST}"
    settings = s.load({"CELERY_STACK_BROKER_URLS": url, "CELERY_STACK_BROKER_CONNECT_TIMEOUT": "5"})
    with Connection(url) as conn:
        ca.declare_topology(conn, settings)
    yield settings


@pytest.fixture()
def channel(broker, cfg):
    conn = amqp.Connection(host=f"127.0.0.1:{broker.port}", userid=broker.user, password=broker.password,
                           virtual_host=VHOST, connect_timeout=5, confirm_publish=True)
    conn.connect()
    ch = conn.channel()
    for queue in (cfg.short_queue, cfg.dead_letter_queue):
        ch.queue_purge(queue)
    yield ch
    for queue in (cfg.short_queue, cfg.dead_letter_queue):
        ch.queue_purge(queue)
    conn.close()


def depth(ch, queue: str) -> int:
    return ch.queue_declare(queue, passive=True).message_count


def wait_depth(ch, queue: str, predicate, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        n = depth(ch, queue)
        if predicate(n) or time.monotonic() > deadline:
            return n
        time.sleep(0.2)


def dead_letter(ch, cfg, bodies: list[str]) -> None:
    """Publish task messages to the short queue and reject each without requeue."""
    for body in bodies:
        ch.basic_publish(amqp.Message(body, delivery_mode=2, application_headers={"id": body}),
                         exchange="", routing_key=cfg.short_queue)
    for _ in bodies:
        msg = ch.basic_get(cfg.short_queue, no_ack=False)
        assert msg is not None
        ch.basic_reject(msg.delivery_tag, requeue=False)


def test_listing_the_dlq_ten_times_leaves_the_message_there(channel, cfg):
    dead_letter(channel, cfg, ["poison-1"])
    assert wait_depth(channel, cfg.dead_letter_queue, lambda n: n == 1) == 1
    for _ in range(10):
        count, items = dlq.inspect(cfg)
        assert count == 1
        assert [(i["id"], i["queue"], i["reason"]) for i in items] == [("poison-1", cfg.short_queue, "rejected")]
    # The rejects of the last listing reach the queue asynchronously (a quorum
    # queue applies them through its log): the count comes back, the message was never gone.
    assert wait_depth(channel, cfg.dead_letter_queue, lambda n: n == 1, timeout=10) == 1
    msg = channel.basic_get(cfg.dead_letter_queue, no_ack=False)
    assert msg is not None and msg.body == "poison-1"
    deaths = msg.headers["x-death"]
    assert [(d["queue"], d["reason"], d["count"]) for d in deaths] == [(cfg.short_queue, "rejected", 1)]
    assert msg.headers.get("x-first-death-queue") == cfg.short_queue
    channel.basic_reject(msg.delivery_tag, requeue=True)


def test_a_full_dlq_drops_no_dead_letter(channel, cfg):
    sent = [f"poison-{i}" for i in range(DLQ_BOUND + 5)]
    dead_letter(channel, cfg, sent)
    # The DLQ fills to its bound. Quorum queues enforce it slightly late (messages
    # in flight when it is reached still get in), so the depth is at least the
    # bound and then stays put while the refused dead letters are retried.
    wait_depth(channel, cfg.dead_letter_queue, lambda n: n >= DLQ_BOUND)
    time.sleep(2)
    in_dlq = depth(channel, cfg.dead_letter_queue)
    time.sleep(3)  # three retries (1 s each) of the refused ones
    assert depth(channel, cfg.dead_letter_queue) == in_dlq
    assert DLQ_BOUND <= in_dlq < len(sent), in_dlq
    # The task queue shows nothing ready: the refused dead letters wait in it, unseen.
    assert depth(channel, cfg.short_queue) == 0
    # A producer of the full DLQ is told (overflow reject-publish, publisher confirms).
    with pytest.raises(amqp.exceptions.MessageNacked):
        channel.basic_publish(amqp.Message("direct", delivery_mode=2), exchange="",
                              routing_key=cfg.dead_letter_queue)
    # Drain the DLQ: the waiting dead letters arrive; every one sent is there.
    received: list[str] = []
    deadline = time.monotonic() + 60
    while set(received) != set(sent) and time.monotonic() < deadline:
        msg = channel.basic_get(cfg.dead_letter_queue, no_ack=False)
        if msg is None:
            time.sleep(0.2)
            continue
        received.append(msg.body)
        channel.basic_ack(msg.delivery_tag)
    print(f"dlq bound {DLQ_BOUND}: {len(sent)} dead-lettered, {in_dlq} in the full DLQ, "
          f"{len(sent) - in_dlq} held back, {len(set(received))} received after draining")
    assert set(received) == set(sent), sorted(set(sent) - set(received))
