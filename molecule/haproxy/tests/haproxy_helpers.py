"""AMQP and HTTP clients of the haproxy scenario, run on the controller.

Everything goes through the real interfaces: AMQP (python ``amqp``) to
HAProxy's frontends and to the broker nodes directly, HTTP (urllib) to the
stats page, the management UI and the routes.
"""

from __future__ import annotations

import base64
import contextlib
import os
import pathlib
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import amqp
import pytest

VHOST = "celery"
APP_USER = "celery"
STATS_USER = "stats"
SCENARIO_DIR = pathlib.Path(__file__).resolve().parent.parent


def wait_until(check, *, timeout: float = 120, interval: float = 1.0, what: str = "condition"):
    """Poll ``check`` until it returns a truthy value; fail with the last value."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = check()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - reported below if it persists
            last = exc
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


@contextlib.contextmanager
def amqp_connection(host: str, port: int, credentials: tuple[str, str], *, ssl=None):
    conn = amqp.Connection(
        host=f"{host}:{port}",
        userid=credentials[0],
        password=credentials[1],
        virtual_host=VHOST,
        connect_timeout=10,
        read_timeout=30,
        write_timeout=30,
        heartbeat=0,
        ssl=ssl or False,
    )
    conn.connect()
    try:
        yield conn
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def new_queue_name(prefix: str = "haproxy-test") -> str:
    return f"{prefix}.{uuid.uuid4().hex[:12]}"


def publish(conn, queue: str, bodies: list[str]) -> None:
    """Declare a durable queue and publish with publisher confirms."""
    channel = conn.channel()
    channel.confirm_select()
    channel.queue_declare(queue, durable=True, auto_delete=False)
    for body in bodies:
        # With confirms on, basic_publish waits for the broker's ack.
        channel.basic_publish(amqp.Message(body, delivery_mode=2), exchange="", routing_key=queue)
    channel.close()


def get_one(conn, queue: str) -> str | None:
    channel = conn.channel()
    message = channel.basic_get(queue, no_ack=True)
    channel.close()
    return None if message is None else message.body.decode() if isinstance(message.body, bytes) else message.body


def delete_queue(conn, queue: str) -> None:
    channel = conn.channel()
    channel.queue_delete(queue)
    channel.close()


def http_get(url: str, credentials: tuple[str, str] | None = None, timeout: float = 10):
    """(status, headers, body) of a GET; HTTP errors are returned, not raised."""
    request = urllib.request.Request(url)
    if credentials is not None:
        token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - test traffic
            return response.status, response.headers, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode(errors="replace")


def server_states(rows: dict, backend: str) -> dict[str, str]:
    """Server name -> status (UP, DOWN, ...) of one backend."""
    return {
        server: row["status"]
        for (proxy, server), row in rows.items()
        if proxy == backend and server not in ("FRONTEND", "BACKEND")
    }


def run_playbook(playbook: str, *extra_args: str) -> subprocess.CompletedProcess:
    """Run a playbook of this scenario against Molecule's inventory."""
    inventory = pathlib.Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent
    return subprocess.run(
        ["ansible-playbook", "-i", str(inventory), str(SCENARIO_DIR / playbook), *extra_args],
        capture_output=True, text=True, timeout=900, check=False,
    )
