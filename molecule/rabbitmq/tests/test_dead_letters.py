"""Dead letters stay dead letters, under the role's policies on RabbitMQ 4.3.

alpha's queue policy dead-letters to alpha.dlx; its dead-letter queue
alpha.dead_letter has a policy of its own (max-length 3, reject-publish, no
DLX, delivery-limit -1) and its quorum queues dead-letter at least once.

* Listing the DLQ (basic.get, then reject with requeue) more often than the
  quorum default delivery limit of 20 leaves the message there.
* Dead-lettering more messages than the DLQ holds drops none: the refused
  ones wait in the source queue and arrive once the DLQ has room. The
  at-least-once worker retries after rabbit's publisher confirm timeout
  (3 min by default); the fixture sets it to a few seconds on every node
  while these tests run, so the test waits for the retry, not the default.
  The worker reads it when it starts, with the source queue
  (rabbit_fifo_dlx_worker); RabbitMQ 4.x names it
  dead_letter_worker_publisher_confirm_timeout_ms, 3.x without the suffix.
"""

from __future__ import annotations

import time

import amqp
import pytest

AMQP_PORT = 5672
VHOST = "alpha"
DLX = "alpha.dlx"
DLQ = "alpha.dead_letter"
SOURCE = "alpha.dead_letter_source"
DLQ_BOUND = 3
LISTINGS = 25
CONFIRM_TIMEOUT_KEYS = ("dead_letter_worker_publisher_confirm_timeout_ms",
                        "dead_letter_worker_publisher_confirm_timeout")
CONFIRM_TIMEOUT_MS = 3000


@pytest.fixture(scope="module")
def hosts(group_hosts):
    return group_hosts("rabbitmq")


def set_rabbit_env(machine, key: str, value: int | None) -> None:
    call = f"application:set_env(rabbit, {key}, {value})" if value is not None \
        else f"application:unset_env(rabbit, {key})"
    machine.check_output(f"rabbitmqctl -q eval '{call}.'")


@pytest.fixture
def short_confirm_timeout(node, hosts):
    for name in hosts:
        for key in CONFIRM_TIMEOUT_KEYS:
            set_rabbit_env(node(name), key, CONFIRM_TIMEOUT_MS)
    yield
    for name in hosts:
        for key in CONFIRM_TIMEOUT_KEYS:
            set_rabbit_env(node(name), key, None)


@pytest.fixture
def channel(address, hosts, secret, short_confirm_timeout):
    conn = amqp.Connection(host=f"{address(hosts[0])}:{AMQP_PORT}", userid="alpha", password=secret("alpha"),
                           virtual_host=VHOST, connect_timeout=10, confirm_publish=True)
    conn.connect()
    ch = conn.channel()
    ch.exchange_declare(DLX, "topic", durable=True, auto_delete=False)
    ch.queue_declare(DLQ, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"})
    ch.queue_bind(DLQ, DLX, "#")
    # its DLX comes from the policy alpha-quorum, as does dead-letter-strategy at-least-once
    ch.queue_declare(SOURCE, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"})
    ch.queue_purge(DLQ)
    ch.queue_purge(SOURCE)
    yield ch
    ch.queue_delete(SOURCE)
    ch.queue_delete(DLQ)
    ch.exchange_delete(DLX)
    conn.close()


def depth(ch, queue: str) -> int:
    return ch.queue_declare(queue, passive=True).message_count


def wait_depth(ch, queue: str, predicate, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        n = depth(ch, queue)
        if predicate(n) or time.monotonic() > deadline:
            return n
        time.sleep(0.5)


def dead_letter(ch, bodies: list[str]) -> None:
    """Publish and reject (no requeue) one at a time: alpha's queues hold 5 messages at most."""
    for body in bodies:
        ch.basic_publish(amqp.Message(body, delivery_mode=2), exchange="", routing_key=SOURCE)
        msg = ch.basic_get(SOURCE, no_ack=False)
        assert msg is not None and msg.body == body
        ch.basic_reject(msg.delivery_tag, requeue=False)


def test_listing_the_dlq_keeps_its_messages(channel):
    dead_letter(channel, ["poison"])
    assert wait_depth(channel, DLQ, lambda n: n == 1, 30) == 1
    for _ in range(LISTINGS):
        listing = channel.connection.channel()
        msg = listing.basic_get(DLQ, no_ack=False)
        assert msg is not None and msg.body == "poison"
        listing.basic_reject(msg.delivery_tag, requeue=True)
        listing.close()
        wait_depth(channel, DLQ, lambda n: n == 1, 10)
    msg = channel.basic_get(DLQ, no_ack=False)
    assert msg is not None and msg.body == "poison"
    assert [(d["queue"], d["reason"]) for d in msg.headers["x-death"]] == [(SOURCE, "rejected")]
    channel.basic_ack(msg.delivery_tag)


def test_a_full_dlq_drops_no_dead_letter(channel):
    # Two more than the bound: held dead letters may count towards the source queue's own
    # max-length (5 in alpha), which must keep room for the next publish.
    sent = [f"poison-{i}" for i in range(DLQ_BOUND + 2)]
    dead_letter(channel, sent)
    wait_depth(channel, DLQ, lambda n: n >= DLQ_BOUND, 30)
    time.sleep(3)
    in_dlq = depth(channel, DLQ)
    # quorum queues enforce max-length slightly late: at least the bound, never all of them
    assert DLQ_BOUND <= in_dlq < len(sent), in_dlq
    assert depth(channel, SOURCE) == 0  # held dead letters are not ready messages
    with pytest.raises(amqp.exceptions.MessageNacked):
        channel.basic_publish(amqp.Message("direct", delivery_mode=2), exchange="", routing_key=DLQ)
    received: set[str] = set()
    deadline = time.monotonic() + 120
    while received != set(sent) and time.monotonic() < deadline:
        msg = channel.basic_get(DLQ, no_ack=False)
        if msg is None:
            time.sleep(1)
            continue
        received.add(msg.body)
        channel.basic_ack(msg.delivery_tag)
    assert received == set(sent), sorted(set(sent) - received)
