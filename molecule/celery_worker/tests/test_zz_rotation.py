"""Day two of roles/rabbitmq and roles/celery_worker (disruptive, last): the
sample application's broker password is rotated in the secret store and
converged while a producer, connected before the change, keeps publishing
confirmed health tasks. The broker takes the new password and refuses the
old one, the pools restart one host at a time with the new URL, every
confirmed task is answered, and a second converge changes nothing. Figures
in .cache/celery_worker/rotation.json."""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import socket
import string
import threading
import time
import uuid

import pytest
from kombu import Connection, Consumer, Queue

from conftest import APPS, BROKER
from test_celery_worker import GRACE, PREFIX
from test_z_rolling import QUEUES, consumer_counts, restart_windows

pytestmark = pytest.mark.disruptive
REPORT = pathlib.Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", ".")) / ".cache" / "celery_worker" / "rotation.json"


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


def test_broker_password_rotation_keeps_every_confirmed_task(node, group_hosts, secret, address, client,
                                                             converge, sampler, unit_events, amqp_login):
    hosts = group_hosts("celery_worker")
    units = [f"{PREFIX}-{queue}.service" for queue in QUEUES]
    store = pathlib.Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "secrets" / APPS["sample"]["secret"]
    url = f"amqp://sample:{{}}@{address(BROKER)}:5672/sample".format
    old = secret(APPS["sample"]["secret"])
    new = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(24))
    # The same arguments as the rolling test, so that only the password changes.
    args = ("--limit", "rabbitmq:celery_worker", "-e", f"celery_worker_stop_grace={GRACE + 5}",
            "-e", f"celery_worker_beat_host={hosts[1]}")

    stream = HealthStream(url(old), client("sample"))
    stream.start()
    time.sleep(3)
    since = time.time()
    store.write_text(new)
    watch = sampler(lambda: consumer_counts(node(BROKER)))
    started = time.monotonic()
    result = converge(*args)
    converge_seconds = round(time.monotonic() - started, 1)
    watch.stop()
    stream.stop()
    assert result.returncode == 0, result.tail

    windows = restart_windows(unit_events, hosts, units, since)
    order = sorted(hosts, key=lambda h: windows[h][0])
    overlaps = [(a, b) for a, b in zip(order, order[1:]) if windows[b][0] < windows[a][1]]
    read = [counts for _, counts in watch.samples if counts is not None]
    empty = [(at, counts) for at, counts in watch.samples if counts is not None and 0 in counts.values()]
    old_accepted, new_accepted = amqp_login(url(old)), amqp_login(url(new))
    # The restarted pools can only consume with the new password.
    deadline = time.monotonic() + 60
    while 0 in (after := consumer_counts(node(BROKER))).values() and time.monotonic() < deadline:
        time.sleep(2)
    lost = stream.confirmed - stream.answered

    again = converge(*args)
    assert again.returncode == 0, again.tail
    changed = again.changed

    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps({
        "converge_seconds": converge_seconds, "restart_order": order,
        "host_restart_seconds": {h: round(windows[h][1] - windows[h][0], 1) for h in order},
        "confirmed": len(stream.confirmed), "answered": len(stream.answered & stream.confirmed),
        "unanswered": len(lost), "publish_errors": len(stream.errors),
        "longest_confirm_wait_seconds": round(stream.longest_confirm, 3),
        "consumer_samples": len(read), "samples_with_a_queue_without_consumer": len(empty),
        "consumers_after": after, "second_converge_changed": changed,
    }, indent=2) + "\n")
    assert not stream.errors, stream.errors[:5]
    assert len(stream.confirmed) > 50, f"only {len(stream.confirmed)} tasks confirmed during the rotation"
    assert not lost, f"{len(lost)} of {len(stream.confirmed)} confirmed tasks never answered"
    assert not old_accepted, "the broker still accepts the old password"
    assert new_accepted, "the broker refuses the new password"
    assert 0 not in after.values(), f"pools not consuming with the new password: {after}"
    assert not overlaps, f"hosts restarted their pools at the same time: {overlaps}"
    assert len(read) > 10, f"the consumer counts were read {len(read)} times only"
    assert not empty, f"queues without a consumer during the rotation: {empty[:10]}"
    assert changed and set(changed.values()) == {0}, changed
