"""A stream of confirmed health tasks on one AMQP connection, the evidence
that no confirmed task is lost while the workers roll (test_z_rolling)."""

from __future__ import annotations

import socket
import threading
import time
import uuid

from kombu import Connection, Consumer, Queue

from conftest import APPS


class HealthStream(threading.Thread):
    """Publishes one health task every `interval` seconds on one connection
    (publisher confirms on), each answering to an exclusive reply queue of
    that connection, and records which confirmed tasks were answered."""

    def __init__(self, url: str, client, interval: float = 0.25):
        super().__init__(daemon=True)
        self.url, self.client, self.interval = url, client, interval
        self.confirmed: set[str] = set()
        self.answered: set[str] = set()
        self.errors: list[str] = []
        self.longest_confirm = 0.0
        self.publishing = threading.Event()
        self.publishing.set()
        self.finished = threading.Event()

    def run(self) -> None:
        reply_name = f"celery_stack.test.rotation.{uuid.uuid4().hex}"
        reply = Queue(reply_name, exchange=None, routing_key=reply_name, durable=False,
                      exclusive=True, auto_delete=True)
        with Connection(self.url, transport_options={"confirm_publish": True}, heartbeat=0) as conn:
            producer = conn.Producer(serializer="json")
            with Consumer(conn.channel(), queues=[reply], accept=["json"], callbacks=[self._answer]):
                deadline = None
                while not self.finished.is_set():
                    if self.publishing.is_set():
                        self._publish(producer, reply_name)
                    elif deadline is None:
                        deadline = time.monotonic() + 120
                    if deadline is not None and (self.answered >= self.confirmed or time.monotonic() > deadline):
                        break
                    self._drain(conn, self.interval)

    def _publish(self, producer, reply_name: str) -> None:
        task_id = str(uuid.uuid4())
        message = self.client.amqp.as_task_v2(task_id, "celery_stack_app.health",
                                              kwargs={"reply_queue": reply_name})
        started = time.monotonic()
        try:
            producer.publish(message.body, exchange=APPS["sample"]["exchange"],
                             routing_key=APPS["sample"]["queue"], headers=message.headers,
                             declare=[], **message.properties)
        except Exception as exc:  # recorded; the test fails on any
            self.errors.append(f"{type(exc).__name__}: {exc}")
            return
        self.longest_confirm = max(self.longest_confirm, time.monotonic() - started)
        self.confirmed.add(task_id)

    def _answer(self, body, message) -> None:
        self.answered.add(body.get("task_id"))
        message.ack()

    @staticmethod
    def _drain(conn, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                conn.drain_events(timeout=left)
            except socket.timeout:
                return

    def stop(self) -> HealthStream:
        """Stop publishing and wait until every confirmed task is answered
        (at most two minutes)."""
        self.publishing.clear()
        self.join(timeout=150)
        self.finished.set()
        return self
