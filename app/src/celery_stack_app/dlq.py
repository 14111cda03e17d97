"""Inspect and requeue the dead-letter queue.

Messages get there when a quorum queue's ``x-delivery-limit`` is exceeded
(e.g. a file that crashes its worker every time) or when a task message is
rejected without requeue. RabbitMQ adds ``x-death`` (queue, reason, count)
and ``x-first-death-queue`` headers; requeue publishes the message again
to that queue through the default exchange (a fresh message, so its
delivery count starts over), with publisher confirms, then acks the
dead-lettered copy: at-least-once, never lost.
"""

from __future__ import annotations

import json
from typing import Any

from amqp import Message as AmqpMessage
from kombu import Connection

from .celery_app import declare_dead_letter
from .settings import Settings


def _headers(message) -> dict[str, Any]:
    return dict(message.headers or {})


def origin_queue(headers: dict[str, Any]) -> str | None:
    if headers.get("x-first-death-queue"):
        q = headers["x-first-death-queue"]
        return q.decode() if isinstance(q, bytes) else q
    deaths = headers.get("x-death") or []
    if deaths:
        q = deaths[0].get("queue")
        return q.decode() if isinstance(q, bytes) else q
    return None


def describe(message) -> dict[str, Any]:
    headers = _headers(message)
    deaths = headers.get("x-death") or []
    death = deaths[0] if deaths else {}
    body = message.body
    try:
        decoded = json.loads(body) if isinstance(body, (bytes, str)) else body
    except ValueError:
        decoded = None
    args = None
    if isinstance(decoded, list) and decoded:
        args = decoded[0]
    return {
        "task": headers.get("task"),
        "id": headers.get("id"),
        "args": args,
        "queue": origin_queue(headers),
        "reason": (death.get("reason").decode() if isinstance(death.get("reason"), bytes)
                   else death.get("reason")) or headers.get("x-first-death-reason"),
        "count": death.get("count"),
        "delivery_count": headers.get("x-delivery-count"),
    }


def _connection(settings: Settings) -> Connection:
    return Connection(";".join(settings.broker_urls), connect_timeout=settings.broker_connect_timeout,
                      failover_strategy="round-robin")


def inspect(settings: Settings, limit: int = 50) -> tuple[int, list[dict[str, Any]]]:
    """List the dead-letter queue without consuming it.

    Returns (messages in the DLQ, descriptions of up to ``limit`` of them).
    AMQP 0-9-1 has no peek: each message is fetched with ``basic.get`` and
    manual acknowledgement, and none is acknowledged. Once read, every one is
    rejected with ``requeue=True`` in the order it was fetched (closing the
    channel would return any left over the same way), so the messages stay in
    the DLQ, with their ``x-death`` headers, in their order; on the next read
    they carry the redelivered flag.

    On a quorum DLQ every listing counts as a delivery attempt (RabbitMQ
    raises ``x-delivery-count``), so listing is harmless only when the DLQ has
    no delivery limit and no dead-letter exchange of its own: the rabbitmq
    role's dead-letter policy (``queue_policy.dead_letter_queue``) sets
    neither, and ``delivery-limit: -1`` on RabbitMQ 4.0 and later, whose
    quorum queues default to a limit of 20
    (https://www.rabbitmq.com/docs/quorum-queues#poison-message-handling).
    """
    with _connection(settings) as conn:
        declare_dead_letter(conn, settings)
        channel = conn.channel()
        fetched: list[int] = []
        try:
            _, count, _ = channel.queue_declare(settings.dead_letter_queue, passive=True)
            seen = []
            for _ in range(min(limit, count)):
                msg = channel.basic_get(settings.dead_letter_queue, no_ack=False)
                if msg is None:
                    break
                fetched.append(msg.delivery_tag)
                seen.append(describe(channel.message_to_python(msg)))
        finally:
            try:
                for tag in fetched:
                    channel.basic_reject(tag, requeue=True)
            finally:
                channel.close()
    return count, seen


def requeue(settings: Settings, limit: int | None = None, task_id: str | None = None) -> list[dict[str, Any]]:
    """Move dead-lettered messages back to their original queue (all, or ``limit``, or one id)."""
    moved: list[dict[str, Any]] = []
    with _connection(settings) as conn:
        declare_dead_letter(conn, settings)
        get_channel = conn.channel()
        pub_channel = conn.channel()
        pub_channel.confirm_select()
        skipped = []
        try:
            _, count, _ = get_channel.queue_declare(settings.dead_letter_queue, passive=True)
            for _ in range(count):
                if limit is not None and len(moved) >= limit:
                    break
                raw = get_channel.basic_get(settings.dead_letter_queue, no_ack=False)
                if raw is None:
                    break
                message = get_channel.message_to_python(raw)
                info = describe(message)
                if task_id is not None and info["id"] != task_id:
                    skipped.append(raw)
                    continue
                queue = info["queue"]
                if not queue:
                    skipped.append(raw)
                    continue
                headers = {k: v for k, v in _headers(message).items()
                           if not k.startswith("x-death") and not k.startswith("x-first-death")
                           and not k.startswith("x-last-death") and k != "x-delivery-count"}
                props = raw.properties
                out = AmqpMessage(
                    raw.body, content_type=props.get("content_type"),
                    content_encoding=props.get("content_encoding"),
                    correlation_id=props.get("correlation_id"), reply_to=props.get("reply_to"),
                    priority=props.get("priority"), delivery_mode=2, application_headers=headers)
                pub_channel.basic_publish_confirm(out, exchange="", routing_key=queue, mandatory=True)
                get_channel.basic_ack(raw.delivery_tag)
                moved.append(info)
        finally:
            for raw in skipped:
                get_channel.basic_reject(raw.delivery_tag, requeue=True)
            get_channel.close()
            pub_channel.close()
    return moved
