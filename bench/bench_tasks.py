"""The benchmark's probe task, registered on the app under test.

``bench.stamp`` is a no-op that appends one line, "<published> <started>",
to a per-process file (a few microseconds), so throughput and latency come
from the same run without a result backend or events, and the stock and
tuned configurations are measured the same way.
"""

from __future__ import annotations

import os
import time

_files: dict[int, object] = {}


def stamp_impl(t_pub: float) -> None:
    now = time.time()
    f = _files.get(os.getpid())
    if f is None:
        f = open(os.path.join(os.environ["BENCH_OUT"], f"stamps.{os.getpid()}"), "a", buffering=1)
        _files[os.getpid()] = f
    f.write(f"{t_pub} {now}\n")


def register(app, **options):
    return app.task(name="bench.stamp", **options)(stamp_impl)


if os.environ.get("BENCH_APP") == "tuned":
    from celery_stack_app.celery_app import app as _app
    from celery_stack_app.tasks import SHORT_LIMITS, StackTask

    stamp = register(_app, base=StackTask, ignore_result=True, **SHORT_LIMITS)
