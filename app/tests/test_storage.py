"""Storage and pipeline logic on mongomock (a stand-in for unit tests only;
tests needing a real mongod are in test_mongodb.py and skip without MONGODB_URI)."""

import datetime as dt
import io
import os

import mongomock
import mongomock.gridfs
import pytest

from celery_stack_app import audio, storage, submit, tasks
from celery_stack_app.settings import Settings
from conftest import encode, tone

mongomock.gridfs.enable_gridfs_integration()


@pytest.fixture()
def cfg():
    return Settings(mongodb_uri="mongodb://unused", batch_chunk_size=2, max_audio_bytes=200_000)


@pytest.fixture()
def store(cfg):
    db = mongomock.MongoClient(tz_aware=True)["t"]
    s = storage.Storage(db, cfg)
    s.ensure_indexes()
    storage.set_storage(s)
    yield s
    storage.set_storage(None)


@pytest.fixture()
def files(tmp_path):
    paths = {}
    paths["a.wav"] = encode(tone(1.0, 440))
    paths["b.flac"] = encode(tone(0.5, 880), fmt="FLAC")
    paths["copy-of-a.wav"] = paths["a.wav"]
    paths["junk.mp3"] = b"definitely not mpeg" * 100
    paths["empty.ogg"] = b""
    for name, data in paths.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "notes.txt").write_text("ignored: not an audio suffix")
    return tmp_path


class RecordingPublisher:
    def __init__(self):
        self.sent = []

    def publish(self, task_name, args=(), kwargs=None, *, queue, task_id=None):
        self.sent.append((task_name, args, kwargs or {}, queue))
        return f"id{len(self.sent)}"

    def flush(self):
        pass


def test_ingest_is_keyed_by_content(store, files):
    first = store.ingest_path(files / "a.wav")
    again = store.ingest_path(files / "copy-of-a.wav")
    assert first.created and not again.created and first.sha256 == again.sha256
    assert store.db["audio.files"].count_documents({}) == 1
    with store.open_blob(first.sha256) as blob:
        assert blob.read() == (files / "a.wav").read_bytes()


def test_ingest_stream_and_size_limit(store):
    data = encode(tone(0.2))
    res = store.ingest_stream(io.BytesIO(data), "stdin.wav")
    assert res.created and res.size == len(data)
    big = store.ingest_stream(io.BytesIO(b"x" * 300_000), "big.wav")
    assert big.too_large and not big.created
    assert store.find_blob(big.sha256) is None


def test_analysis_is_one_idempotent_upsert(store, files):
    sha = store.ingest_path(files / "a.wav").sha256
    doc = tasks.analyse_one(store, sha, "a.wav")
    assert doc["status"] == "ok" and doc["metadata"]["duration_seconds"] == pytest.approx(1.0)
    tasks.analyse_one(store, sha, "a.wav")                  # skipped: already there
    tasks.analyse_one(store, sha, "a.wav", force=True)      # replaced, not duplicated
    assert store.analyses.count_documents({}) == 1
    saved = store.get_analysis(sha, audio.ANALYSIS_VERSION)
    assert saved["_id"] == f"{sha}:v{audio.ANALYSIS_VERSION}"
    assert saved["features"]["rms_dbfs"] == pytest.approx(-9.03, abs=0.1)


def test_bad_input_is_recorded_not_raised(store, files):
    sha = store.ingest_path(files / "junk.mp3").sha256
    doc = tasks.analyse_one(store, sha)
    assert doc["status"] == "failed" and "not a readable audio file" in doc["reason"]
    missing = tasks.analyse_one(store, "0" * 64)
    assert missing["status"] == "failed" and "ingest it first" in missing["reason"]


def test_transient_database_error_propagates(store, files, monkeypatch):
    import pymongo.errors

    sha = store.ingest_path(files / "a.wav").sha256
    monkeypatch.setattr(store, "open_blob", lambda s: (_ for _ in ()).throw(pymongo.errors.AutoReconnect("x")))
    with pytest.raises(pymongo.errors.AutoReconnect):
        tasks.analyse_one(store, sha)
    assert store.analyses.count_documents({}) == 0  # nothing recorded: the task will retry


def test_batch_end_to_end_with_final_summary(store, files, cfg, monkeypatch):
    monkeypatch.setattr(tasks, "settings", cfg)
    pub = RecordingPublisher()
    listed = list(submit.iter_files([files]))
    assert [os.path.basename(p) for p in listed] == ["a.wav", "b.flac", "copy-of-a.wav", "empty.ogg", "junk.mp3"]
    sub = submit.submit_batch(store, pub, cfg, listed, batch_id="b1")
    assert sub.files == 5 and sub.unique == 4  # the copy is the same content
    assert [len(args[1]) for _, args, _, _ in pub.sent] == [2, 2]  # chunk size 2
    assert all(q == cfg.long_queue and name == "celery_stack_app.analyse_chunk"
               for name, _, _, q in pub.sent)
    assert store.batch_status("b1")["counts"]["pending"] == 4
    # run the chunks as the worker would; the last one records the summary
    for _, args, _, _ in pub.sent:
        tasks.analyse_chunk.run(*args)
    status = store.batch_status("b1")
    assert status["counts"] == {"pending": 0, "ok": 2, "failed": 2}
    assert status["finished_at"] is not None
    assert status["summary"] == {"ok": 2, "failed": 2, "audio_seconds": pytest.approx(1.5, abs=0.01)}
    finished_at = status["finished_at"]
    # a redelivered chunk changes nothing, and the summary is written once
    tasks.analyse_chunk.run(*pub.sent[0][1])
    assert store.batch_status("b1")["finished_at"] == finished_at
    assert store.analyses.count_documents({}) == 4
    # re-submitting the same files: no new blob, no new result
    sub2 = submit.submit_batch(store, RecordingPublisher(), cfg, listed, batch_id="b2")
    assert sub2.new_blobs == 0


def test_too_large_file_gets_a_failed_result_at_submit(store, cfg, tmp_path):
    big = tmp_path / "big.wav"
    big.write_bytes(b"\0" * 300_000)
    sub = submit.submit_batch(store, RecordingPublisher(), cfg, [str(big)], batch_id="b3")
    assert sub.refused and "too large" in sub.refused[0]["reason"]
    doc = store.analyses.find_one({})
    assert doc["status"] == "failed" and "exceeds the limit" in doc["reason"]


def test_empty_batch_finishes_at_once(store, cfg):
    submit.submit_batch(store, RecordingPublisher(), cfg, [], batch_id="empty")
    assert store.batch_status("empty")["summary"] == {"ok": 0, "failed": 0, "audio_seconds": 0.0}


def test_host_slots_space_requests(store):
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    waits = [store.reserve_host_slot("example.org", 2.0, now=now) for _ in range(4)]
    assert waits == [0.0, 2.0, 4.0, 6.0]
    assert store.reserve_host_slot("other.org", 2.0, now=now) == 0.0
    later = now + dt.timedelta(seconds=100)
    assert store.reserve_host_slot("example.org", 2.0, now=later) == 0.0


def test_check_records_are_keyed_by_task(store):
    store.record_check("task-1", {"check": "c", "ok": True})
    store.record_check("task-1", {"check": "c", "ok": False})
    assert store.checks.count_documents({}) == 1


def test_storage_not_configured_is_a_clear_error():
    storage.reset()
    with pytest.raises(storage.StorageNotConfigured, match="CELERY_STACK_MONGODB_URI"):
        storage.get_storage(Settings())


def test_submit_from_standard_input(store, cfg, monkeypatch):
    import sys
    import types

    data = encode(tone(0.3))
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(buffer=io.BytesIO(data)))
    pub = RecordingPublisher()
    sub = submit.submit_batch(store, pub, cfg, list(submit.iter_files(["-"])), batch_id="stdin")
    assert sub.unique == 1 and sub.new_blobs == 1
    assert store.find_blob(pub.sent[0][1][1][0])["length"] == len(data)


def test_result_backend_stores_results_with_a_ttl_index(monkeypatch):
    """The MongoDB result backend (mongomock here) shares storage's client and expires by TTL."""
    from celery import Celery

    from celery_stack_app import celery_app as ca
    from celery_stack_app import results as results_mod

    client = mongomock.MongoClient(tz_aware=True)
    monkeypatch.setattr(storage, "client", lambda settings: client)
    app = Celery("t", set_as_current=False)
    app.conf.update(ca.build_config(Settings(mongodb_uri="mongodb://unused", result_expires=3600)))
    backend = app.backend
    assert isinstance(backend, results_mod.MongoTTLBackend) and backend.supports_autoexpire
    backend.store_result("task-1", {"sha256": "x", "status": "ok"}, "SUCCESS")
    assert backend.get_task_meta("task-1")["result"] == {"sha256": "x", "status": "ok"}
    db = client[ca.settings.mongodb_database]
    assert db["celery_taskmeta"].index_information()["date_done_ttl"]["expireAfterSeconds"] == 3600
