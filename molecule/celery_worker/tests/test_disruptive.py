"""Disruptive checks of roles/celery_worker: they kill and stop workers,
so they run after the read-only ones (file name order) and leave every
unit running again."""

from __future__ import annotations

import time

import pytest

from test_celery_worker import PREFIX, show

pytestmark = pytest.mark.disruptive


def wait_active(host, unit: str, old_pid: str | None = None, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    props = {}
    while time.monotonic() < deadline:
        props = show(host, unit)
        if props.get("ActiveState") == "active" and props.get("MainPID") not in ("0", old_pid):
            return props
        time.sleep(1)
    pytest.fail(f"{unit} did not come back: {props.get('ActiveState')} pid {props.get('MainPID')}")


def wait_ping(client, app: str, node_name: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client(app).control.ping(destination=[node_name], timeout=2.0):
            return
    pytest.fail(f"{node_name} does not answer ping after restart")


def test_sigkill_of_a_worker_brings_the_unit_back(node, group_hosts, client):
    name = group_hosts("celery_worker")[1]
    host = node(name)
    unit = f"{PREFIX}-short.service"
    before = show(host, unit)
    assert host.run(f"kill -KILL {before['MainPID']}").rc == 0
    after = wait_active(host, unit, old_pid=before["MainPID"])
    assert after["MainPID"] != before["MainPID"]
    assert int(after["NRestarts"]) > int(before["NRestarts"])
    wait_ping(client, "sample", f"short@{name}")


def test_stop_lets_the_running_task_finish(node, group_hosts, submit, journal, client):
    """systemctl stop = SIGTERM to the main process = warm shutdown: the
    running task completes before the unit stops (within TimeoutStopSec)."""
    name = group_hosts("django_worker")[0]
    host = node(name)
    unit = f"{PREFIX}-django.service"
    task_id = submit("django", "djexample.sleep", args=[8])
    journal(host, [unit], rf"djexample\.sleep\[{task_id}\].*sleeping")
    stop = host.run(f"systemctl stop {unit}")
    assert stop.rc == 0, stop.stderr
    finished = host.run(f"journalctl -u {unit} --no-pager -o cat").stdout
    assert f"djexample.sleep[{task_id}] succeeded" in finished, finished[-3000:]
    assert "WorkerLostError" not in finished
    assert show(host, unit)["Result"] == "success"
    assert host.run(f"systemctl start {unit}").rc == 0
    wait_active(host, unit)
    wait_ping(client, "django", f"django@{name}")
