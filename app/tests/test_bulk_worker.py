"""Bulk-submitted tasks run on a stock `celery worker`, also when the connection dies mid-submit."""

from __future__ import annotations

import os
import time

import pytest

from workers import make_client
from celery_stack_app.bulk import BulkPublisher

pytestmark = pytest.mark.integration


def runs(marker_dir: str, key: str) -> int:
    try:
        with open(os.path.join(marker_dir, f"{key}.runs")) as f:
            return sum(1 for line in f if line.strip())
    except FileNotFoundError:
        return 0


def test_every_confirmed_task_executes_after_a_killed_connection(worker, integration_env, marker_dir):
    app = make_client(integration_env)
    n, kill_at, killed = 400, 150, []

    def on_publish(pub, item):
        if pub._result.published == kill_at and not killed:
            killed.append(pub.outstanding)
            pub.connection.sock.shutdown(2)   # the TCP connection dies under the publisher

    keys = {}
    try:
        with BulkPublisher(app, window=64, reconnect_backoff=0.1, on_publish=on_publish) as pub:
            for i in range(n):
                key = f"bulk{i}"
                keys[pub.publish("tests.record", (marker_dir, key), queue="short")] = key
            result = pub.flush()
    finally:
        app.close()
    assert killed and result.reconnects >= 1 and result.republished >= 1
    assert result.ok and set(result.confirmed) == set(keys)

    deadline = time.monotonic() + 120
    missing = list(keys.values())
    while missing and time.monotonic() < deadline:
        missing = [k for k in missing if runs(marker_dir, k) == 0]
        time.sleep(0.5)
    assert not missing, f"{len(missing)} confirmed task(s) never ran, e.g. {missing[:5]}\n{worker.log()[-3000:]}"
