"""Submission: ingest files into GridFS and publish analysis tasks.

Publishing goes through a :class:`Publisher`: the CLI uses the pipelined
publisher-confirm bulk publisher (:mod:`celery_stack_app.bulk`);
:class:`CeleryPublisher` sends one message at a time. A publisher needs
``publish`` (queue one task message, return its id) and ``flush`` (return
once the broker confirmed everything published so far, or raise listing
what it did not accept: then nothing is reported as submitted).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import audio
from .settings import Settings
from .storage import IngestResult, Storage, utcnow

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64", ".caf"}


class Publisher(Protocol):
    def publish(self, task_name: str, args: tuple = (), kwargs: dict | None = None, *,
                queue: str, task_id: str | None = None) -> str: ...

    def flush(self) -> None: ...


class CeleryPublisher:
    """One message at a time through Celery's producer (publisher confirms on)."""

    def __init__(self, app):
        self.app = app

    def publish(self, task_name: str, args: tuple = (), kwargs: dict | None = None, *,
                queue: str, task_id: str | None = None) -> str:
        result = self.app.send_task(task_name, args=args, kwargs=kwargs or {}, queue=queue,
                                    task_id=task_id or str(uuid.uuid4()), ignore_result=True)
        return result.id

    def flush(self) -> None:  # every publish was already confirmed
        return None


def iter_files(paths: Iterable[str | os.PathLike], all_files: bool = False) -> Iterator[str]:
    """Files named, files under named directories (sorted, audio suffixes only unless
    all_files), and ``-`` for standard input."""
    for p in paths:
        p = os.fspath(p)
        if p == "-":  # standard input, ingested as a stream
            yield p
        elif os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs.sort()
                for name in sorted(files):
                    if all_files or os.path.splitext(name)[1].lower() in AUDIO_SUFFIXES:
                        yield os.path.join(root, name)
        else:
            yield p


def chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


@dataclass
class BatchSubmission:
    batch_id: str
    files: int = 0
    unique: int = 0
    new_blobs: int = 0
    refused: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)


def record_refused(store: Storage, ingest: IngestResult, max_bytes: int) -> dict[str, Any]:
    """An input refused at ingest (too large) still gets its failed result."""
    doc = {"sha256": ingest.sha256, "analysis_version": audio.ANALYSIS_VERSION, "name": ingest.name,
           "status": "failed", "size": ingest.size, "metadata": None, "features": None,
           "reason": f"file too large: {ingest.size} bytes exceeds the limit of {max_bytes} bytes",
           "analysed_at": utcnow(), "task_id": None}
    store.record_analysis(doc)
    return doc


def submit_batch(store: Storage, publisher: Publisher, settings: Settings,
                 files: Iterable[str], batch_id: str | None = None, force: bool = False,
                 progress: Callable[[str, IngestResult | None, Exception | None], None] | None = None
                 ) -> BatchSubmission:
    """Ingest every file, record the batch, publish one task per chunk of files."""
    sub = BatchSubmission(batch_id=batch_id or uuid.uuid4().hex)
    items: list[tuple[str, str]] = []
    seen: set[str] = set()
    for path in files:
        sub.files += 1
        try:
            if path == "-":
                import sys

                ing = store.ingest_stream(sys.stdin.buffer, name="stdin")
            else:
                ing = store.ingest_path(path)
        except OSError as exc:
            sub.refused.append({"path": path, "reason": f"cannot read: {exc.strerror or exc}"})
            if progress:
                progress(path, None, exc)
            continue
        if ing.too_large:
            record_refused(store, ing, settings.max_audio_bytes)
            sub.refused.append({"path": path, "sha256": ing.sha256,
                                "reason": f"too large ({ing.size} bytes)"})
        sub.new_blobs += int(ing.created)
        if ing.sha256 not in seen:
            seen.add(ing.sha256)
            items.append((ing.sha256, ing.name))
        if progress:
            progress(path, ing, None)
    sub.unique = store.create_batch(sub.batch_id, items, settings.batch_chunk_size)
    for part in chunks([sha for sha, _ in items], settings.batch_chunk_size):
        sub.tasks.append(publisher.publish("celery_stack_app.analyse_chunk", (sub.batch_id, part, force),
                                           queue=settings.long_queue))
    publisher.flush()
    if not items:
        store.finalize_batch_if_done(sub.batch_id)
    return sub


def resubmit_pending(store: Storage, publisher: Publisher, settings: Settings, batch_id: str) -> int:
    """Publish again the pending items of a batch (after a lost message); idempotent."""
    pending = store.pending_items(batch_id)
    for part in chunks(pending, settings.batch_chunk_size):
        publisher.publish("celery_stack_app.analyse_chunk", (batch_id, part), queue=settings.long_queue)
    publisher.flush()
    return len(pending)
