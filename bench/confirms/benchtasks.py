"""Tasks of the benchmark, registered on the kit's app (benchapp_kit) or a stock Celery app
(benchapp_stock). Each run writes "<sent_at> <done_at>" to a per-process file under
$BENCH_MARK_DIR (one O_APPEND write per task: atomic, safe from threads and greenlets)."""

from __future__ import annotations

import os
import time

_fds: dict[int, int] = {}


def _mark(sent_at: float) -> None:
    pid = os.getpid()
    fd = _fds.get(pid)
    if fd is None:
        path = os.path.join(os.environ["BENCH_MARK_DIR"], f"done-{pid}.txt")
        fd = _fds[pid] = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(fd, f"{sent_at:.6f} {time.time():.6f}\n".encode())


def register(app) -> None:
    @app.task(name="bench.tick", ignore_result=True)
    def tick(sent_at: float = 0.0) -> None:
        """A no-op short task (like celery_stack_app.noop), timestamped."""
        _mark(sent_at)

    @app.task(name="bench.io", ignore_result=True)
    def io(sent_at: float = 0.0, seconds: float = 0.02) -> None:
        """An I/O-bound short task: waits like a website check waits for its server."""
        time.sleep(seconds)
        _mark(sent_at)

    @app.task(name="bench.cpu", ignore_result=True)
    def cpu(sent_at: float = 0.0, seconds: float = 0.05) -> None:
        """A CPU-bound long task (like the audio analysis), scaled down."""
        # this thread's CPU time: with a thread pool, process time would count the other threads too
        end = time.thread_time() + seconds
        x = 0
        while time.thread_time() < end:
            x += sum(range(500))
        _mark(sent_at)

    @app.task(name="bench.ping", bind=True, ignore_result=True)
    def ping(self, reply_queue: str) -> None:
        """Answer on reply_queue (default exchange): the client times the round trip."""
        with self.app.producer_or_acquire() as producer:
            producer.publish({"ok": True}, exchange="", routing_key=reply_queue, serializer="json",
                             correlation_id=self.request.id, delivery_mode=1, retry=False)
