"""Overflow: a queue past its max-length refuses publishes (basic.nack with publisher
confirms, overflow=reject-publish from the application's policy); nothing is
silently dropped: every acked message is in the queue, every other one was nacked."""

import amqp
import pytest
from cluster_helpers import APP_USER, VHOST, report, wait_for

QUEUE = "cluster-test.overflow"
MAX_LENGTH = 10
SENT = 25


@pytest.fixture
def overflow_queue(amqp_connect, app_password):
    conn = amqp_connect(APP_USER, app_password, VHOST)
    channel = conn.channel()
    # the vhost's policy brings overflow=reject-publish (and max-length 100000:
    # the lower of the two limits applies, this queue's own 10)
    channel.queue_declare(QUEUE, durable=True, auto_delete=False,
                          arguments={"x-queue-type": "quorum", "x-max-length": MAX_LENGTH})
    yield channel
    channel.queue_delete(QUEUE)
    conn.close()


def test_policy_gives_reject_publish(overflow_queue, management):
    def definition():
        status, q = management("GET", f"/queues/{VHOST}/{QUEUE}")
        return (q.get("effective_policy_definition") or None) if status == 200 else None

    effective = wait_for(definition, 60, what="the policy to apply to the test queue")
    assert effective.get("overflow") == "reject-publish", effective


def test_publishes_past_max_length_are_nacked_not_dropped(overflow_queue):
    acked, nacked = 0, 0
    for i in range(SENT):
        msg = amqp.Message(f"overflow {i}", delivery_mode=2)
        try:
            overflow_queue.basic_publish_confirm(msg, exchange="", routing_key=QUEUE, mandatory=True)
            acked += 1
        except amqp.exceptions.MessageNacked:
            nacked += 1
    _, depth, _ = overflow_queue.queue_declare(QUEUE, passive=True)
    report("overflow", {"max_length": MAX_LENGTH, "sent": SENT, "acked": acked, "nacked": nacked,
                        "in_queue": depth})
    assert nacked > 0, "the broker never refused a publish past max-length"
    assert acked + nacked == SENT
    assert depth == acked, "an acknowledged message is missing from the queue"
    assert depth >= MAX_LENGTH
