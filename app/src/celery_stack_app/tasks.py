"""The tasks. Small, idempotent, logged with the task logger (task id in every line).

Short queue: ``health``, ``noop``, ``check_website``.
Long queue: ``analyse`` (one file), ``analyse_chunk`` (a slice of a batch).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import socket
from typing import Any

from celery import Task
from celery.exceptions import Ignore, Reject, Retry, SoftTimeLimitExceeded
from celery.utils.log import get_task_logger

from . import audio, storage, webcheck
from .celery_app import TASKS, app, settings
from .retry import BadInput, is_transient, policy_from_settings
from .webcheck_net import AddressPolicy

logger = get_task_logger(__name__)
POLICY = policy_from_settings(settings)

# A task's own limits override the worker's --time-limit, and Celery enforces
# them on a prefork pool only (gevent: the hard one); the threads, solo and
# eventlet pools ignore them (https://docs.celeryq.dev/en/stable/userguide/workers.html#time-limits).
# LONG_LIMITS hold: long tasks run on prefork. SHORT_LIMITS hold where the short
# queue runs on prefork (the app's tests, a prefork deploy) and are void on the
# kit's threads pool, where each short task bounds itself: check_website by its
# total deadline (CELERY_STACK_WEBCHECK_DEADLINE), health and noop do no waiting
# beyond a bounded reply publish.
SHORT_LIMITS = dict(soft_time_limit=settings.short_soft_time_limit, time_limit=settings.short_time_limit)
LONG_LIMITS = dict(soft_time_limit=settings.long_soft_time_limit, time_limit=settings.long_time_limit)


class StackTask(Task):
    """Retries transient errors only: exponential backoff, jitter, a cap (retry.RetryPolicy).

    Anything else propagates: bad input never reaches here (it is recorded
    as a failed result inside the task), and a programming error fails the
    task once, its traceback stored as a tombstone when MongoDB is set.
    """

    abstract = True
    acks_late = True
    reject_on_worker_lost = True

    def __call__(self, *args, **kwargs):
        try:
            return self.run(*args, **kwargs)
        except (Retry, Ignore, Reject):
            raise
        except Exception as exc:
            if self.request.called_directly or not is_transient(exc):
                raise
            retries = self.request.retries or 0
            if retries >= POLICY.max_retries:
                logger.error("%s: transient error persists after %d retries: %r", self.name, retries, exc)
                raise
            # whole seconds >= 1: Celery's native delayed delivery (quorum queues) works in seconds
            countdown = max(1, math.ceil(POLICY.delay(retries)))
            logger.warning("%s: transient error %r; retry %d/%d in %.1f s",
                           self.name, exc, retries + 1, POLICY.max_retries, countdown)
            raise self.retry(exc=exc, countdown=countdown, max_retries=POLICY.max_retries)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# ---------------------------------------------------------------------------
# broker-only


@app.task(name=f"{TASKS}.health", bind=True, base=StackTask, ignore_result=True, **SHORT_LIMITS)
def health(self, reply_queue: str | None = None) -> dict[str, Any]:
    """Answer with who and when; touches only the broker.

    With ``reply_queue`` the answer is also published there (default
    exchange, correlation id = task id): ``celery-stack health`` waits on an
    exclusive queue of its own, so no result backend is involved.
    """
    info = {
        "status": "ok",
        "hostname": self.request.hostname or socket.gethostname(),
        "pid": os.getpid(),
        "time": _now().isoformat(),
        "task_id": self.request.id,
        "queue": (self.request.delivery_info or {}).get("routing_key"),
    }
    if reply_queue:
        with self.app.producer_or_acquire() as producer:
            producer.publish(info, exchange="", routing_key=reply_queue, serializer="json",
                             correlation_id=self.request.id, delivery_mode=1, retry=True,
                             retry_policy={"max_retries": 3})
    logger.info("health: %s", info)
    return info


@app.task(name=f"{TASKS}.noop", base=StackTask, ignore_result=True, **SHORT_LIMITS)
def noop(*args, **kwargs) -> None:
    """Does nothing: a probe of the broker path and a benchmark of its cost."""
    return None


# ---------------------------------------------------------------------------
# audio


def analyse_one(store: storage.Storage, sha256: str, name: str | None = None, force: bool = False,
                task_id: str | None = None) -> dict[str, Any]:
    """Analyse one stored blob and record the result; idempotent.

    Returns the result document. Bad input -> a ``failed`` document with a
    reason; transient errors propagate (the task retries them).
    """
    version = audio.ANALYSIS_VERSION
    if not force:
        existing = store.get_analysis(sha256, version)
        if existing is not None:
            logger.info("analyse %s: already analysed (v%d, %s)", sha256[:12], version, existing["status"])
            return existing
    doc: dict[str, Any] = {"sha256": sha256, "analysis_version": version, "name": name,
                           "task_id": task_id}
    blob = store.open_blob(sha256)
    try:
        if blob is None:
            raise BadInput("no stored file with this sha256 (ingest it first)")
        meta, features = audio.analyse_stream(blob, size=blob.length,
                                              max_bytes=settings.max_audio_bytes)
        doc.update(status="ok", reason=None, size=blob.length,
                   metadata=audio.metadata_dict(meta), features=features)
        logger.info("analyse %s: ok, %s %.1f s", sha256[:12], meta.format, meta.duration_seconds)
    except BadInput as exc:
        doc.update(status="failed", reason=exc.reason, size=getattr(blob, "length", None),
                   metadata=None, features=None)
        logger.warning("analyse %s: failed: %s", sha256[:12], exc.reason)
    finally:
        if blob is not None:
            blob.close()
    doc["analysed_at"] = _now()
    store.record_analysis(doc)
    return doc


def _summary(doc: dict[str, Any]) -> dict[str, Any]:
    return {"sha256": doc["sha256"], "status": doc["status"], "reason": doc.get("reason")}


@app.task(name=f"{TASKS}.analyse", bind=True, base=StackTask, ignore_result=False, **LONG_LIMITS)
def analyse(self, sha256: str, name: str | None = None, force: bool = False) -> dict[str, Any]:
    """Analyse one file. Its small summary is the one result stored (read by ``submit --wait``)."""
    store = storage.get_storage(settings)
    try:
        return _summary(analyse_one(store, sha256, name, force, self.request.id))
    except SoftTimeLimitExceeded:
        doc = {"sha256": sha256, "analysis_version": audio.ANALYSIS_VERSION, "name": name,
               "status": "failed", "task_id": self.request.id, "analysed_at": _now(),
               "reason": f"analysis exceeded the soft time limit of {settings.long_soft_time_limit} s"}
        store.record_analysis(doc)
        return _summary(doc)


@app.task(name=f"{TASKS}.analyse_chunk", bind=True, base=StackTask, ignore_result=True, **LONG_LIMITS)
def analyse_chunk(self, batch_id: str, shas: list[str], force: bool = False) -> dict[str, int]:
    """Analyse a slice of a batch (fewer, larger messages), then try the batch's final stage.

    Each file's result is its own atomic upsert, so a redelivered chunk skips
    what is done. If the soft time limit strikes, the file at hand is
    recorded as failed and the rest of the slice goes out as a new task.
    """
    store = storage.get_storage(settings)
    states: dict[str, str] = {}
    try:
        for i, sha in enumerate(shas):
            try:
                doc = analyse_one(store, sha, force=force, task_id=self.request.id)
            except SoftTimeLimitExceeded:
                store.record_analysis({
                    "sha256": sha, "analysis_version": audio.ANALYSIS_VERSION, "status": "failed",
                    "task_id": self.request.id, "analysed_at": _now(),
                    "reason": f"analysis exceeded the soft time limit of {settings.long_soft_time_limit} s"})
                states[sha] = "failed"
                rest = shas[i + 1:]
                if rest:
                    analyse_chunk.apply_async((batch_id, rest, force))
                    logger.warning("batch %s: soft time limit; %d file(s) sent on as a new chunk",
                                   batch_id, len(rest))
                break
            states[sha] = "ok" if doc["status"] == "ok" else "failed"
    finally:
        if states:
            store.mark_items(batch_id, states)
    summary = store.finalize_batch_if_done(batch_id)
    if summary is not None:
        logger.info("batch %s finished: %s", batch_id, summary)
    return {"ok": sum(1 for s in states.values() if s == "ok"),
            "failed": sum(1 for s in states.values() if s == "failed")}


# ---------------------------------------------------------------------------
# website checks

_local_slots: dict[str, float] = {}


def _local_reserve(host: str, interval: float) -> float:
    """Per-process fallback rate limit when no MongoDB is configured."""
    import time

    now = time.monotonic()
    start = max(now, _local_slots.get(host, now))
    _local_slots[host] = start + interval
    return start - now


@app.task(name=f"{TASKS}.check_website", bind=True, base=StackTask, ignore_result=True, **SHORT_LIMITS)
def check_website(self, check: dict[str, Any], slot_reserved: bool = False) -> dict[str, Any] | None:
    """Check one website and record the outcome (status, latency, TLS expiry, error)."""
    host = webcheck.host_of(check.get("url", ""))
    store = storage.get_storage(settings) if settings.has_mongodb else None
    if host and not slot_reserved and settings.webcheck_host_interval > 0:
        wait = (store.reserve_host_slot(host, settings.webcheck_host_interval) if store
                else _local_reserve(host, settings.webcheck_host_interval))
        if wait > 0.05:
            # our slot is in the future: come back then instead of holding a worker process
            self.apply_async(kwargs={"check": check, "slot_reserved": True}, countdown=max(1, math.ceil(wait)),
                             expires=_now() + dt.timedelta(seconds=wait + float(check.get("interval", 300))))
            logger.info("check %s: host %s busy, delayed %.2f s", check.get("name"), host, wait)
            return None
    # a refused address or a deadline is a recorded failure like a bad URL: never retried
    record = webcheck.run_check(check, settings.webcheck_connect_timeout, settings.webcheck_read_timeout,
                                settings.webcheck_max_body_bytes, deadline=settings.webcheck_deadline,
                                policy=AddressPolicy.from_entries(settings.webcheck_allow))
    record["task_id"] = self.request.id
    if store is not None:
        store.record_check(self.request.id or record["check"], record)
    level = logger.info if record["ok"] else logger.warning
    level("check %s: status=%s latency=%s ms error=%s", record["check"], record["status_code"],
          record["latency_ms"], record["error"])
    return record
