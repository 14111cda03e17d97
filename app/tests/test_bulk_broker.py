"""The pipelined bulk publisher against the loopback RabbitMQ: message format, lost connections and
failover, broker-initiated close, nacks at max-length, unroutable messages."""

from __future__ import annotations

import json

import pytest
from kombu import Exchange, Queue

from bulkhelpers import Proxy, queued_messages, task_ids
from workers import make_client
from celery_stack_app.bulk import BulkPublisher, BulkPublishError

pytestmark = pytest.mark.integration


@pytest.fixture()
def client_for(integration_env):
    apps = []

    def make(short_queue: str):
        app = make_client({**integration_env, "CELERY_STACK_SHORT_QUEUE": short_queue,
                           "CELERY_STACK_LONG_QUEUE": short_queue + "_long"})
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


def test_bulk_messages_are_celery_task_messages(rabbitmq, client_for):
    """Same headers, properties, exchange and routing key as app.send_task, on the same quorum queue."""
    app = client_for("bk_fmt")
    with BulkPublisher(app, urls=[rabbitmq.url]) as pub:
        bulk_id = pub.publish("celery_stack_app.noop", (1, "a"), {"k": [1, 2]}, queue="bk_fmt")
        result = pub.flush()
    assert result.confirmed == [bulk_id] and result.ok
    # the stock producer declares the queue again with its arguments: any difference would be
    # PRECONDITION_FAILED here
    stock_id = app.send_task("celery_stack_app.noop", (1, "a"), {"k": [1, 2]}, queue="bk_fmt").id
    bulk_msg, stock_msg = queued_messages(rabbitmq, "bk_fmt")
    assert task_ids([bulk_msg, stock_msg]) == [bulk_id, stock_id]
    for m, tid in ((bulk_msg, bulk_id), (stock_msg, stock_id)):
        assert m.delivery_info["exchange"] == "celery_stack"
        assert m.delivery_info["routing_key"] == "bk_fmt"
        assert m.properties["delivery_mode"] == 2
        assert m.properties["content_type"] == "application/json"
        assert m.properties["content_encoding"] == "utf-8"
        assert m.properties["correlation_id"] == tid
    bh, sh = bulk_msg.properties["application_headers"], stock_msg.properties["application_headers"]
    assert set(bh) == set(sh)
    ignore = {"id", "root_id", "origin"}
    assert {k: v for k, v in bh.items() if k not in ignore} == {k: v for k, v in sh.items() if k not in ignore}
    assert json.loads(bulk_msg.body) == json.loads(stock_msg.body)
    r = rabbitmq.ctl("list_queues", "name", "type", "--formatter", "json")
    assert {q["name"]: q["type"] for q in json.loads(r.stdout)}["bk_fmt"] == "quorum"


def test_connection_killed_mid_submit_fails_over_and_republishes(rabbitmq, client_for):
    """The node behind the first URL dies after 1000 publishes: the unconfirmed go again to the next URL."""
    app = client_for("bk_kill")
    first, second = Proxy(rabbitmq.port), Proxy(rabbitmq.port)
    n, window, seen_outstanding = 3000, 256, []

    def on_publish(pub, item):
        seen_outstanding.append(pub.outstanding)
        if pub._result.published == 1000 and first.accepted and not seen_outstanding.count(-1):
            seen_outstanding.append(-1)
            first.kill()

    try:
        with BulkPublisher(app, urls=[first.url(rabbitmq), second.url(rabbitmq)], window=window,
                           reconnect_backoff=0.1, on_publish=on_publish) as pub:
            sent = [pub.publish("celery_stack_app.noop", (i,), queue="bk_kill") for i in range(n)]
            result = pub.flush()
    finally:
        first.kill()
        second.kill()
    assert result.ok and sorted(result.confirmed) == sorted(sent)
    assert result.reconnects >= 1 and second.accepted >= 1
    assert result.republished >= 1                      # the unconfirmed at the time of the kill
    assert max(seen_outstanding) <= window              # the window bounds what is in flight
    queued = task_ids(queued_messages(rabbitmq, "bk_kill"))
    # every confirmed task is in the queue; duplicates are allowed (at-least-once), strangers are not
    assert set(queued) == set(sent)
    assert len(queued) >= n


def test_unconfirmed_are_reported_when_every_node_is_gone(rabbitmq, client_for):
    """Nothing is reported submitted that the broker did not confirm."""
    app = client_for("bk_gone")
    only = Proxy(rabbitmq.port)

    def on_publish(pub, item):
        if pub._result.published == 700:
            only.kill()

    attempted = []
    with BulkPublisher(app, urls=[only.url(rabbitmq)], window=256, max_reconnects=2,
                       reconnect_backoff=0.05, connect_timeout=2, on_publish=on_publish) as pub:
        with pytest.raises(BulkPublishError) as info:
            for i in range(1500):
                attempted.append(f"gone-{i}")
                pub.publish("celery_stack_app.noop", (i,), queue="bk_gone", task_id=attempted[-1])
            pub.flush()
    result = info.value.result
    confirmed, failed = set(result.confirmed), set(result.failed)
    assert confirmed and failed and not confirmed & failed
    assert confirmed | failed == set(attempted)
    queued = set(task_ids(queued_messages(rabbitmq, "bk_gone")))
    assert confirmed <= queued                         # confirmed means stored by the broker
    assert all("lost" in r or "unreachable" in r for r in result.failed.values())


def test_broker_closing_connections_mid_submit(rabbitmq, client_for):
    """`rabbitmqctl close_all_connections` (connection.close from the broker) during a bulk submit."""
    app = client_for("bk_close")
    closed = []

    def on_publish(pub, item):
        if pub._result.published == 500 and not closed:
            closed.append(rabbitmq.ctl("close_all_connections", "bulk test"))

    with BulkPublisher(app, urls=[rabbitmq.url], window=128, reconnect_backoff=0.1,
                       on_publish=on_publish) as pub:
        sent = [pub.publish("celery_stack_app.noop", (i,), queue="bk_close") for i in range(1500)]
        result = pub.flush()
    assert closed and closed[0].returncode == 0, closed and closed[0].stderr
    assert result.ok and sorted(result.confirmed) == sorted(sent) and result.reconnects >= 1
    assert set(task_ids(queued_messages(rabbitmq, "bk_close"))) == set(sent)


def test_nacked_publish_is_retried_then_reported(rabbitmq, client_for):
    """A queue at max-length with overflow=reject-publish nacks: bounded retries, then reported.

    A classic queue, because it enforces x-max-length exactly; a quorum queue does too, but
    approximately (next test)."""
    app = client_for("bk_nack_other")
    full = Queue("bk_nack", Exchange("celery_stack", type="topic", durable=True), routing_key="bk_nack",
                 durable=True, queue_arguments={"x-max-length": 20, "x-overflow": "reject-publish"})
    with BulkPublisher(app, urls=[rabbitmq.url], max_nack_retries=2, nack_backoff=0.05) as pub:
        sent = [pub.publish("celery_stack_app.noop", (i,), queue=full) for i in range(50)]
        with pytest.raises(BulkPublishError) as info:
            pub.flush()
    result = info.value.result
    confirmed, failed = set(result.confirmed), set(result.failed)
    assert len(confirmed) == 20 and len(failed) == 30
    assert confirmed | failed == set(sent) and not confirmed & failed
    assert all("nack" in reason for reason in result.failed.values())
    assert result.nacked == 30 * 3                     # first try + 2 retries each, then given up
    assert "30 task message(s) not accepted" in str(info.value)
    queued = set(task_ids(queued_messages(rabbitmq, "bk_nack")))
    assert queued == confirmed                          # rejected ones are not there, accepted ones are


def test_nacked_publish_to_full_quorum_queue_is_reported(rabbitmq, client_for):
    """Quorum queues apply reject-publish a little late (publishers learn the queue is full
    asynchronously; on a busy broker a whole burst can still be taken in): bursts go out
    until the broker nacks, and whatever it nacked is reported, nothing is lost."""
    app = client_for("bk_qnack_other")
    full = Queue("bk_qnack", Exchange("celery_stack", type="topic", durable=True), routing_key="bk_qnack",
                 durable=True, queue_arguments={"x-queue-type": "quorum", "x-max-length": 20,
                                                "x-overflow": "reject-publish"})
    taken = set()                                       # bursts the broker took in whole
    with BulkPublisher(app, urls=[rabbitmq.url], max_nack_retries=2, nack_backoff=0.05) as pub:
        fill = [pub.publish("celery_stack_app.noop", (i,), queue=full) for i in range(20)]
        assert sorted(pub.flush().confirmed) == sorted(fill)
        for _burst in range(10):
            sent = [pub.publish("celery_stack_app.noop", (i,), queue=full) for i in range(300)]
            try:
                taken |= set(pub.flush().confirmed)
            except BulkPublishError as error:
                result = error.result
                break
        else:
            pytest.fail(f"10 bursts of 300 to a full quorum queue, none nacked ({len(taken)} taken)")
    confirmed, failed = set(result.confirmed), set(result.failed)
    assert failed and confirmed | failed == set(sent) and not confirmed & failed
    assert all("nack" in reason for reason in result.failed.values())
    assert result.nacked <= 3 * len(sent)               # bounded: never retried forever
    assert set(task_ids(queued_messages(rabbitmq, "bk_qnack"))) == set(fill) | taken | confirmed


def test_nacked_publish_succeeds_once_there_is_room(rabbitmq, client_for):
    app = client_for("bk_room_other")
    q = Queue("bk_room", Exchange("celery_stack", type="topic", durable=True), routing_key="bk_room",
              durable=True, queue_arguments={"x-max-length": 5,
                                             "x-overflow": "reject-publish"})
    drained = []

    with BulkPublisher(app, urls=[rabbitmq.url], max_nack_retries=6, nack_backoff=0.2) as pub:
        sent = [pub.publish("celery_stack_app.noop", (i,), queue=q) for i in range(8)]
        # a consumer makes room while the publisher backs off
        original = pub._on_nack

        def on_nack(tag, multiple):
            original(tag, multiple)
            if not drained:
                drained.extend(task_ids(queued_messages(rabbitmq, "bk_room")))

        pub._channel.events["basic_nack"].discard(original)
        pub._channel.events["basic_nack"].add(on_nack)
        result = pub.flush()
    assert result.ok and sorted(result.confirmed) == sorted(sent) and result.nacked >= 1
    assert set(drained) | set(task_ids(queued_messages(rabbitmq, "bk_room"))) == set(sent)


def test_unroutable_messages_are_reported(rabbitmq, client_for):
    app = client_for("bk_route")
    with BulkPublisher(app, urls=[rabbitmq.url]) as pub:
        good = [pub.publish("celery_stack_app.noop", (i,), queue="bk_route") for i in range(5)]
        bad = [pub.publish("celery_stack_app.noop", (i,), exchange="celery_stack", routing_key="nowhere")
               for i in range(2)]
        with pytest.raises(BulkPublishError) as info:
            pub.flush()
    result = info.value.result
    assert sorted(result.confirmed) == sorted(good) and set(result.failed) == set(bad)
    assert all("unroutable" in r for r in result.failed.values()) and result.returned == 2


def test_a_message_that_breaks_the_channel_fails_alone(rabbitmq, client_for):
    """A publish to a missing exchange closes the channel (404): the messages around it still go."""
    app = client_for("bk_poison")
    with BulkPublisher(app, urls=[rabbitmq.url], window=16, max_resends=3, reconnect_backoff=0.05) as pub:
        good = [pub.publish("celery_stack_app.noop", (i,), queue="bk_poison") for i in range(20)]
        bad = pub.publish("celery_stack_app.noop", ("x",), exchange="bk_no_such_exchange", routing_key="x")
        good += [pub.publish("celery_stack_app.noop", (i,), queue="bk_poison") for i in range(20, 40)]
        with pytest.raises(BulkPublishError) as info:
            pub.flush()
    result = info.value.result
    assert list(result.failed) == [bad] and "lost connections" in result.failed[bad]
    assert sorted(result.confirmed) == sorted(good)
    assert set(task_ids(queued_messages(rabbitmq, "bk_poison"))) == set(good)
