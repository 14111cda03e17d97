"""The time limits the role says each pool type enforces are what Celery does.

vars/main.yml (`_celery_worker_pool_enforced_limits`) was read from Celery's
source; tasks/assert.yml refuses a limit given to a pool type that ignores it.
Here a stuck task (it sleeps past its limits, and sleeps again when
interrupted by the soft limit) runs on a real worker of the pinned Celery
(requirements.txt) for each pool type installed here: threads, solo and
prefork (gevent and eventlet are not installed, their entries rest on the
source, cited in vars/main.yml). The worker runs in this process with
Celery's public test helper, celery.contrib.testing.worker.start_worker, on
an in-memory broker: no broker, no network. If a Celery upgrade starts or
stops enforcing a limit on a pool type, this fails and the table must change.

    .venv/bin/pytest roles/celery_worker/tests
"""

from __future__ import annotations

import os
import pathlib
import time

import pytest
import yaml
from celery import Celery, signals
from celery.contrib.testing.worker import start_worker
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

ROLE = pathlib.Path(__file__).resolve().parents[1]
ENFORCED = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["_celery_worker_pool_enforced_limits"]

SOFT, HARD, STUCK = 1.5, 4.0, 6.0  # seconds; STUCK well past both, and room between
# them for a loaded machine (the soft limit's handler must run before the hard kill)

app = Celery("pool_limits", broker="memory://", backend="cache+memory://")
app.conf.update(worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)


def _mark(marker_dir: str, what: str) -> None:
    pathlib.Path(marker_dir, what).write_text(str(time.monotonic()))


@app.task(name="pool_limits.stuck", soft_time_limit=SOFT, time_limit=HARD)
def stuck(marker_dir: str) -> None:
    """Sleeps past both limits; interrupted by the soft one, sleeps again."""
    _mark(marker_dir, "started")
    try:
        time.sleep(STUCK)
    except SoftTimeLimitExceeded:
        _mark(marker_dir, "soft")
        time.sleep(STUCK)
    _mark(marker_dir, "finished")


def _run_stuck_task(pool: str, marker_dir: pathlib.Path) -> tuple[set[str], list[type]]:
    """Run `stuck` on a worker of `pool`; return the marks and the failures the worker reported."""
    failures: list[type] = []

    def on_failure(sender=None, exception=None, **_):
        failures.append(type(exception))

    signals.task_failure.connect(on_failure, weak=False)
    try:
        with start_worker(app, pool=pool, concurrency=1, perform_ping_check=False,
                          hostname=f"{pool}@pool-limits", loglevel="ERROR", shutdown_timeout=15):
            stuck.delay(str(marker_dir))
            # long enough for the uninterrupted task to finish, or the interrupted one to be killed
            deadline = time.monotonic() + 2 * STUCK + 10
            while time.monotonic() < deadline:
                marks = {p.name for p in marker_dir.iterdir()}
                if "finished" in marks or failures:
                    break
                time.sleep(0.1)
    finally:
        signals.task_failure.disconnect(on_failure)
    return {p.name for p in marker_dir.iterdir()}, failures


@pytest.mark.parametrize("pool", ["threads", "solo", "prefork"])
def test_the_role_states_what_the_pool_enforces(pool, tmp_path):
    marks, failures = _run_stuck_task(pool, tmp_path)
    assert "started" in marks, f"{pool}: the task never ran"
    enforced = ENFORCED[pool]
    # the soft limit interrupted the task exactly when the role says the pool enforces it
    assert ("soft" in marks) == ("soft_time_limit" in enforced), (pool, marks)
    if "time_limit" in enforced:
        # ended by the hard limit, before its second sleep was over
        assert failures and set(failures) == {TimeLimitExceeded}, (pool, failures)
        assert "finished" not in marks, (pool, marks)
    else:
        # ran to the end, past both limits, as if it had none
        assert "finished" in marks and failures == [], (pool, marks, failures)
        started = float((tmp_path / "started").read_text())
        finished = float((tmp_path / "finished").read_text())
        assert finished - started >= STUCK > HARD
