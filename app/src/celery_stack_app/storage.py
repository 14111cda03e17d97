"""MongoDB storage: GridFS blobs, analysis results, batches, website checks.

Nothing here connects at import time. :func:`get_storage` builds one
``MongoClient`` per process on first use (pymongo clients are not fork-safe,
so the worker drops it in every new pool process), and the indexes are
ensured once per process.

Writes are idempotent and atomic, so a redelivered task can safely run again
(Celery docs, https://docs.celeryq.dev/en/stable/userguide/tasks.html): blobs
are keyed by their sha256, analysis results by (sha256, analysis version) and
written in one ``replace_one(upsert=True)``, check records by the task id,
batch items by (batch, sha256).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from typing import Any, BinaryIO, Iterable

import gridfs
import pymongo
from pymongo import ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

from .settings import Settings

log = logging.getLogger(__name__)

BUCKET = "audio"
HASH_BLOCK = 1024 * 1024
TASKMETA = "celery_taskmeta"
GROUPMETA = "celery_groupmeta"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class StorageNotConfigured(RuntimeError):
    pass


def analysis_id(sha256: str, version: int) -> str:
    return f"{sha256}:v{version}"


@dataclass
class IngestResult:
    sha256: str
    size: int
    name: str
    created: bool  # a new blob was stored
    too_large: bool = False


class _HashingReader:
    """Reads a stream and hashes what passes through (for the upload pass)."""

    def __init__(self, source: BinaryIO):
        self.source = source
        self.hash = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.hash.update(data)
        self.size += len(data)
        return data


def hash_stream(source: BinaryIO, limit: int | None = None, spool: BinaryIO | None = None
                ) -> tuple[str, int]:
    """sha256 and size of a stream, reading it once in blocks.

    With ``spool``, bytes are also copied there until ``limit`` is passed.
    """
    digest = hashlib.sha256()
    size = 0
    while True:
        block = source.read(HASH_BLOCK)
        if not block:
            break
        digest.update(block)
        size += len(block)
        if spool is not None and (limit is None or size <= limit):
            spool.write(block)
    return digest.hexdigest(), size


class Storage:
    def __init__(self, db: pymongo.database.Database, settings: Settings):
        self.db = db
        self.settings = settings
        self.fs = gridfs.GridFSBucket(db, bucket_name=BUCKET)
        self.analyses = db["analyses"]
        self.batches = db["batches"]
        self.batch_items = db["batch_items"]
        self.checks = db["website_checks"]
        self.host_slots = db["host_slots"]
        self._indexes_done = False

    # ---- indexes ------------------------------------------------------

    def ensure_indexes(self) -> None:
        if self._indexes_done:
            return
        s = self.settings
        self.db[f"{BUCKET}.files"].create_index(
            "metadata.sha256", unique=True, name="sha256_unique",
            partialFilterExpression={"metadata.sha256": {"$exists": True}})
        self.analyses.create_index([("sha256", 1), ("analysis_version", 1)], unique=True,
                                   name="sha256_version_unique")
        self.analyses.create_index([("status", 1), ("analysed_at", -1)], name="status_time")
        self.batch_items.create_index([("batch_id", 1), ("state", 1)], name="batch_state")
        self.checks.create_index([("check", 1), ("checked_at", -1)], name="check_time")
        ensure_ttl_index(self.checks, "checked_at", s.check_retention)
        ensure_ttl_index(self.db[TASKMETA], "date_done", s.result_expires)
        ensure_ttl_index(self.db[GROUPMETA], "date_done", s.result_expires)
        self._indexes_done = True

    # ---- blobs --------------------------------------------------------

    def find_blob(self, sha256: str) -> dict | None:
        return self.db[f"{BUCKET}.files"].find_one({"metadata.sha256": sha256})

    def open_blob(self, sha256: str):
        doc = self.find_blob(sha256)
        if doc is None:
            return None
        return self.fs.open_download_stream(doc["_id"])

    def ingest_path(self, path: str | os.PathLike, name: str | None = None) -> IngestResult:
        """Store a file by content hash; a known hash stores nothing new."""
        name = name or os.path.basename(os.fspath(path))
        with open(path, "rb") as f:
            sha256, size = hash_stream(f)
            if size > self.settings.max_audio_bytes:
                return IngestResult(sha256, size, name, created=False, too_large=True)
            if self.find_blob(sha256) is not None:
                return IngestResult(sha256, size, name, created=False)
            f.seek(0)
            created = self._upload(f, sha256, size, name)
        return IngestResult(sha256, size, name, created=created)

    def ingest_stream(self, source: BinaryIO, name: str) -> IngestResult:
        """Store a non-seekable stream: spooled to a temporary file while hashed."""
        limit = self.settings.max_audio_bytes
        with tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024) as spool:
            sha256, size = hash_stream(source, limit=limit, spool=spool)
            if size > limit:
                return IngestResult(sha256, size, name, created=False, too_large=True)
            if self.find_blob(sha256) is not None:
                return IngestResult(sha256, size, name, created=False)
            spool.seek(0)
            created = self._upload(spool, sha256, size, name)
        return IngestResult(sha256, size, name, created=created)

    def _upload(self, f: BinaryIO, sha256: str, size: int, name: str) -> bool:
        reader = _HashingReader(f)
        gin = self.fs.open_upload_stream(
            name, metadata={"sha256": sha256, "size": size, "ingested_at": utcnow()})
        file_id = gin._id  # a fresh ObjectId: these chunks are ours alone
        try:
            gin.write(reader)
            gin.close()  # inserts the files document: the unique sha256 index decides
        except DuplicateKeyError:
            # Another client stored the same content meanwhile: drop our chunks.
            self.db[f"{BUCKET}.chunks"].delete_many({"files_id": file_id})
            return False
        except BaseException:
            gin.abort()
            raise
        if reader.hash.hexdigest() != sha256:
            self.fs.delete(file_id)
            raise RuntimeError(f"{name}: the file changed while it was being ingested")
        return True

    # ---- analyses -----------------------------------------------------

    def get_analysis(self, sha256: str, version: int) -> dict | None:
        return self.analyses.find_one({"_id": analysis_id(sha256, version)})

    def record_analysis(self, doc: dict[str, Any]) -> None:
        """ONE atomic upsert keyed by (sha256, analysis_version)."""
        doc = dict(doc)
        doc["_id"] = analysis_id(doc["sha256"], doc["analysis_version"])
        self.analyses.replace_one({"_id": doc["_id"]}, doc, upsert=True)

    def failures(self, limit: int = 50) -> list[dict]:
        return list(self.analyses.find({"status": "failed"}).sort("analysed_at", -1).limit(limit))

    # ---- batches ------------------------------------------------------

    def create_batch(self, batch_id: str, items: Iterable[tuple[str, str]], chunk_size: int,
                     failed: dict[str, str] | None = None) -> int:
        """Record a batch and its items (sha256, name); idempotent."""
        unique: dict[str, str] = {}
        for sha256, name in items:
            unique.setdefault(sha256, name)
        now = utcnow()
        self.batches.update_one(
            {"_id": batch_id},
            {"$setOnInsert": {"created_at": now, "total": len(unique), "chunk_size": chunk_size,
                              "finished_at": None, "summary": None}},
            upsert=True)
        docs = [{"_id": f"{batch_id}:{sha}", "batch_id": batch_id, "sha256": sha, "name": name,
                 "state": "pending"} for sha, name in unique.items()]
        if docs:
            try:
                self.batch_items.insert_many(docs, ordered=False)
            except BulkWriteError as exc:
                if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                    raise
        return len(unique)

    def mark_items(self, batch_id: str, states: dict[str, str]) -> None:
        for sha256, state in states.items():
            self.batch_items.update_one({"_id": f"{batch_id}:{sha256}", "state": "pending"},
                                        {"$set": {"state": state, "done_at": utcnow()}})

    def pending_items(self, batch_id: str) -> list[str]:
        return [d["sha256"] for d in self.batch_items.find({"batch_id": batch_id, "state": "pending"},
                                                           {"sha256": 1})]

    def finalize_batch_if_done(self, batch_id: str) -> dict | None:
        """The batch's final stage: when no item is pending, record the summary once.

        Safe under redelivery and races: the count is recomputed from the
        items, and only the update that finds ``finished_at`` unset wins.
        """
        if self.batch_items.count_documents({"batch_id": batch_id, "state": "pending"}, limit=1):
            return None
        ok = self.batch_items.count_documents({"batch_id": batch_id, "state": "ok"})
        failed = self.batch_items.count_documents({"batch_id": batch_id, "state": "failed"})
        shas = [d["sha256"] for d in self.batch_items.find({"batch_id": batch_id, "state": "ok"}, {"sha256": 1})]
        seconds = 0.0
        for doc in self.analyses.find({"sha256": {"$in": shas}, "status": "ok"}, {"metadata.duration_seconds": 1}):
            seconds += float(doc.get("metadata", {}).get("duration_seconds", 0.0))
        summary = {"ok": ok, "failed": failed, "audio_seconds": round(seconds, 3)}
        won = self.batches.find_one_and_update(
            {"_id": batch_id, "finished_at": None},
            {"$set": {"finished_at": utcnow(), "summary": summary}},
            return_document=ReturnDocument.AFTER)
        return won["summary"] if won else None

    def batch_status(self, batch_id: str) -> dict | None:
        batch = self.batches.find_one({"_id": batch_id})
        if batch is None:
            return None
        counts = {state: self.batch_items.count_documents({"batch_id": batch_id, "state": state})
                  for state in ("pending", "ok", "failed")}
        return {**batch, "counts": counts}

    # ---- website checks -----------------------------------------------

    def record_check(self, task_id: str, doc: dict[str, Any]) -> None:
        doc = dict(doc, _id=task_id)
        self.checks.replace_one({"_id": task_id}, doc, upsert=True)

    def reserve_host_slot(self, host: str, interval: float, now: dt.datetime | None = None) -> float:
        """Reserve the next free slot for ``host``; returns seconds to wait (0 = go now).

        Slots are ``interval`` seconds apart across every worker sharing this
        database, so all servers together never load a site more than it allows.
        Optimistic concurrency: read, compute, conditional write, repeat.
        """
        if interval <= 0:
            return 0.0
        for _ in range(20):
            now_ = now or utcnow()
            doc = self.host_slots.find_one({"_id": host})
            previous = doc["next"] if doc else None
            if previous is not None and previous.tzinfo is None:
                previous = previous.replace(tzinfo=dt.timezone.utc)
            start = max(now_, previous) if previous else now_
            new_next = start + dt.timedelta(seconds=interval)
            if doc is None:
                try:
                    self.host_slots.insert_one({"_id": host, "next": new_next})
                except DuplicateKeyError:
                    continue
            else:
                res = self.host_slots.update_one({"_id": host, "next": doc["next"]},
                                                 {"$set": {"next": new_next}})
                if res.modified_count != 1:
                    continue
            return max(0.0, (start - now_).total_seconds())
        return interval  # heavy contention: back off one interval


def ensure_ttl_index(collection, field: str, seconds: int) -> None:
    """A TTL index on ``field``; adjusts expireAfterSeconds if it changed."""
    name = f"{field}_ttl"
    try:
        collection.create_index(field, expireAfterSeconds=int(seconds), name=name)
    except OperationFailure as exc:
        if exc.code not in (85, 86):  # IndexOptionsConflict, IndexKeySpecsConflict
            raise
        collection.database.command("collMod", collection.name,
                                    index={"name": name, "expireAfterSeconds": int(seconds)})


# ---- per-process singleton --------------------------------------------------

_lock = threading.Lock()
_client: pymongo.MongoClient | None = None
_storage: Storage | None = None


def client(settings: Settings) -> pymongo.MongoClient:
    global _client
    if not settings.has_mongodb:
        raise StorageNotConfigured(
            "CELERY_STACK_MONGODB_URI is not set: this operation needs MongoDB "
            "(only the health and noop tasks work broker-only)")
    with _lock:
        if _client is None:
            _client = pymongo.MongoClient(
                settings.mongodb_uri,
                serverSelectionTimeoutMS=settings.mongodb_timeout_ms,
                connectTimeoutMS=settings.mongodb_timeout_ms,
                appname="celery-stack-app",
                tz_aware=True,
            )
        return _client


def get_storage(settings: Settings) -> Storage:
    global _storage
    if _storage is None:
        db = client(settings)[settings.mongodb_database]
        storage = Storage(db, settings)
        storage.ensure_indexes()
        _storage = storage
    return _storage


def reset() -> None:
    """Forget the client (called in each new pool process: no fork-shared sockets)."""
    global _client, _storage
    _client = None
    _storage = None


def set_storage(storage: Storage | None) -> None:
    """Install a storage (tests use mongomock through this)."""
    global _storage
    _storage = storage
