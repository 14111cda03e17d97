"""Fixtures of the celery_worker scenario: broker clients on the
controller and helpers that read a worker's journal."""

from __future__ import annotations

import re
import socket
import time
import uuid

import pytest
from celery import Celery
from kombu import Connection, Consumer, Queue

BROKER = "celery-worker-rmq"
# vhost / user / secret of each application (molecule.yml)
APPS = {
    "sample": {"group": "celery_worker", "secret": "sample_app", "queue": "short",
               "exchange": "celery_stack"},
    "django": {"group": "django_worker", "secret": "django_app", "queue": "django",
               "exchange": ""},
}


@pytest.fixture(scope="session")
def broker_url(secret, address):
    def url(app: str) -> str:
        return f"amqp://{app}:{secret(APPS[app]['secret'])}@{address(BROKER)}:5672/{app}"

    return url


@pytest.fixture(scope="session")
def client(broker_url):
    """A bare Celery client per application: it knows no task of the app,
    only the broker (as any deployment's smoke test would)."""
    apps: dict[str, Celery] = {}

    def get(app: str) -> Celery:
        if app not in apps:
            apps[app] = Celery(f"test-{app}", broker=broker_url(app), set_as_current=False)
            apps[app].conf.broker_connection_retry_on_startup = True
        return apps[app]

    return get


@pytest.fixture(scope="session")
def submit(client):
    """Publishes a task message by name straight to the application's
    exchange and queue, without declaring anything (the workers declared
    the queues with the application's own arguments). Returns the task id."""

    def send(app: str, name: str, args=(), kwargs=None) -> str:
        celery_app = client(app)
        task_id = str(uuid.uuid4())
        message = celery_app.amqp.as_task_v2(task_id, name, args=tuple(args), kwargs=kwargs or {})
        with celery_app.connection_for_write() as conn:
            producer = conn.Producer(serializer="json")
            producer.publish(message.body, exchange=APPS[app]["exchange"],
                             routing_key=APPS[app]["queue"], headers=message.headers,
                             retry=True, declare=[], **message.properties)
        return task_id

    return send


@pytest.fixture(scope="session")
def health_roundtrip(broker_url, submit):
    """Sends the sample app's health task with an exclusive reply queue of
    the test's own and returns the worker's answer (no result backend)."""

    def run(timeout: float = 60.0) -> dict:
        reply_name = f"celery_stack.test.{uuid.uuid4().hex}"
        reply = Queue(reply_name, exchange=None, routing_key=reply_name, durable=False,
                      exclusive=True, auto_delete=True)
        answers: list[dict] = []
        with Connection(broker_url("sample")) as conn:
            with Consumer(conn.channel(), queues=[reply], accept=["json"],
                          callbacks=[lambda body, msg: (answers.append(body), msg.ack())]):
                task_id = submit("sample", "celery_stack_app.health", kwargs={"reply_queue": reply_name})
                deadline = time.monotonic() + timeout
                while not answers and time.monotonic() < deadline:
                    try:
                        conn.drain_events(timeout=1)
                    except socket.timeout:
                        continue
        assert answers, f"no worker answered health task {task_id} within {timeout} s"
        return answers[0] | {"sent_id": task_id}

    return run


@pytest.fixture(scope="session")
def journal():
    """Waits until a line matching `pattern` shows up in units' journal."""

    def wait(host, units: list[str], pattern: str, timeout: float = 60.0) -> str:
        args = " ".join(f"-u {u}" for u in units)
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = host.run(f"journalctl {args} --no-pager -o cat").stdout
            hits = [line for line in text.splitlines() if regex.search(line)]
            if hits:
                return hits[-1]
            time.sleep(1)
        tail = "\n".join(text.splitlines()[-20:])
        pytest.fail(f"no line matching {pattern!r} in {units} within {timeout} s; tail:\n{tail}")

    return wait


def systemd_seconds(value: str) -> float:
    """'10min 30s' / '1min' / '90s' / '500ms' / 'infinity' -> seconds."""
    units = {"h": 3600, "min": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    total = 0.0
    for number, unit in re.findall(r"([\d.]+)\s*(h|min|ms|us|s)", value):
        total += float(number) * units[unit]
    return total


def to_bytes(value: str) -> int:
    factors = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}
    value = str(value).strip()
    if value[-1].upper() in factors:
        return int(float(value[:-1]) * factors[value[-1].upper()])
    return int(value)
