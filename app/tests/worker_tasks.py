"""Tasks only the integration tests load into the worker (``celery worker -I worker_tasks``).

They record what happened in files under a marker directory, because the
integration tests run without MongoDB.
"""

from __future__ import annotations

import json
import os
import signal
import time

from celery.exceptions import SoftTimeLimitExceeded

from celery_stack_app.celery_app import app
from celery_stack_app.tasks import StackTask


# generous limits: a slow, shared CI machine must not turn these into time-limit tests
ROOMY = dict(soft_time_limit=50, time_limit=60)


def _append(marker_dir: str, name: str, data: dict) -> None:
    with open(os.path.join(marker_dir, name), "a") as f:
        f.write(json.dumps(data) + "\n")


def _info(task) -> dict:
    d = task.request.delivery_info or {}
    return {"pid": os.getpid(), "routing_key": d.get("routing_key"), "redelivered": d.get("redelivered"),
            "retries": task.request.retries, "hostname": task.request.hostname, "time": time.time()}


@app.task(name="tests.record", bind=True, base=StackTask, **ROOMY)
def record(self, marker_dir: str, key: str) -> None:
    _append(marker_dir, f"{key}.runs", _info(self))


@app.task(name="tests.slow_once", bind=True, base=StackTask, **ROOMY)
def slow_once(self, marker_dir: str, key: str, seconds: float) -> None:
    """First run: announce our pid and sleep (the test kills us); later runs: finish."""
    started = os.path.join(marker_dir, f"{key}.started")
    first = not os.path.exists(started)
    _append(marker_dir, f"{key}.started", _info(self))
    if first:
        time.sleep(seconds)
    _append(marker_dir, f"{key}.done", _info(self))


@app.task(name="tests.crash", bind=True, base=StackTask, **ROOMY)
def crash(self, marker_dir: str, key: str) -> None:
    """A poison message: its worker process dies every time it runs it."""
    _append(marker_dir, f"{key}.attempts", _info(self))
    # die a moment into the task, as a crashing decoder would (dying within
    # microseconds of starting races the pool's bookkeeping of who runs what,
    # and the master then only notices at the hard time limit)
    time.sleep(1)
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(name="tests.overrun", bind=True, base=StackTask)
def overrun(self, marker_dir: str, key: str) -> None:
    """Ignores the soft time limit, so the hard limit has to kill it."""
    _append(marker_dir, f"{key}.attempts", _info(self))
    try:
        time.sleep(3600)
    except SoftTimeLimitExceeded:
        _append(marker_dir, f"{key}.soft", _info(self))
    time.sleep(3600)
    _append(marker_dir, f"{key}.survived", _info(self))


@app.task(name="tests.flaky", bind=True, base=StackTask, **ROOMY)
def flaky(self, marker_dir: str, key: str) -> None:
    """A transient error on the first run; retried with backoff through delayed delivery."""
    _append(marker_dir, f"{key}.attempts", _info(self))
    if self.request.retries == 0:
        raise ConnectionResetError("simulated broken connection to the database")
    _append(marker_dir, f"{key}.done", _info(self))


@app.task(name="tests.bad_input", bind=True, base=StackTask, **ROOMY)
def bad_input(self, marker_dir: str, key: str) -> None:
    """A non-transient error: fails once, is not retried, not redelivered."""
    _append(marker_dir, f"{key}.attempts", _info(self))
    raise ValueError("not retried")
