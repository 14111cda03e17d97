"""Health round trip through the broker only (the deploy roles' smoke test).

Declares an exclusive, auto-delete reply queue of its own (allowed on
RabbitMQ 4, which deprecates transient non-exclusive queues), sends the
``health`` task to the short queue with that queue's name, and waits for
the worker's answer. No result backend, no MongoDB.
"""

from __future__ import annotations

import socket
import time
import uuid
from typing import Any

from kombu import Connection, Consumer, Queue

from .settings import Settings


class HealthTimeout(Exception):
    pass


def health_roundtrip(app, settings: Settings, timeout: float = 15.0) -> dict[str, Any]:
    reply_name = f"celery_stack.health.{uuid.uuid4().hex}"
    reply = Queue(reply_name, exchange=None, routing_key=reply_name, durable=False,
                  exclusive=True, auto_delete=True)
    answers: list[dict[str, Any]] = []
    started = time.monotonic()
    with Connection(";".join(settings.broker_urls), connect_timeout=settings.broker_connect_timeout,
                    failover_strategy="round-robin", heartbeat=0) as conn:
        conn.ensure_connection(max_retries=1)
        with Consumer(conn.channel(), queues=[reply], accept=["json"],
                      callbacks=[lambda body, message: (answers.append(body), message.ack())]):
            from .tasks import health

            result = health.apply_async(kwargs={"reply_queue": reply_name}, connection=conn,
                                        queue=settings.short_queue, expires=timeout, ignore_result=True)
            while not answers:
                left = timeout - (time.monotonic() - started)
                if left <= 0:
                    raise HealthTimeout(f"no worker answered the health task {result.id} "
                                        f"on queue {settings.short_queue!r} within {timeout} s")
                try:
                    conn.drain_events(timeout=min(left, 1.0))
                except socket.timeout:
                    continue
    answer = answers[0]
    answer["roundtrip_ms"] = round((time.monotonic() - started) * 1000, 1)
    return answer
