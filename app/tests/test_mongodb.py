"""Tests that need a real MongoDB: they run only when MONGODB_URI is set.

No MongoDB server can be installed on the project's machines (see
shared/ENVIRONMENT.md), and no fake stands in for it here: without
MONGODB_URI these tests are reported as skipped, with the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid

import pytest

from celery_stack_app import storage
from celery_stack_app.settings import Settings
from conftest import encode, tone

MONGODB_URI = os.environ.get("MONGODB_URI", "")
pytestmark = [
    pytest.mark.mongodb,
    pytest.mark.skipif(not MONGODB_URI, reason="MONGODB_URI is not set: these tests need a real MongoDB "
                                               "server (none can be installed on this machine)"),
]


@pytest.fixture()
def db_name():
    name = f"cstest_{uuid.uuid4().hex[:10]}"
    yield name
    import pymongo

    pymongo.MongoClient(MONGODB_URI, serverSelectionTimeoutMS=5000).drop_database(name)


@pytest.fixture()
def store(db_name):
    storage.reset()
    cfg = Settings(mongodb_uri=MONGODB_URI, mongodb_database=db_name)
    s = storage.get_storage(cfg)
    yield s
    storage.reset()


def test_ttl_indexes_and_changed_retention(store, db_name):
    info = store.checks.index_information()
    assert info["checked_at_ttl"]["expireAfterSeconds"] == store.settings.check_retention
    assert store.db["celery_taskmeta"].index_information()["date_done_ttl"]["expireAfterSeconds"] == \
        store.settings.result_expires
    storage.ensure_ttl_index(store.checks, "checked_at", 1234)  # collMod path
    assert store.checks.index_information()["checked_at_ttl"]["expireAfterSeconds"] == 1234


def test_concurrent_ingest_of_the_same_content_stores_one_blob(store, tmp_path):
    path = tmp_path / "a.wav"
    path.write_bytes(encode(tone(3.0)))
    results = []
    threads = [threading.Thread(target=lambda: results.append(store.ingest_path(path))) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len({r.sha256 for r in results}) == 1
    assert store.db["audio.files"].count_documents({}) == 1
    file_id = store.db["audio.files"].find_one()["_id"]
    assert store.db["audio.chunks"].count_documents({"files_id": {"$ne": file_id}}) == 0


@pytest.mark.integration
def test_submit_analyse_and_follow_a_batch(db_name, integration_env, clean_env, tmp_path):
    """The whole pipeline: CLI submit -> GridFS -> worker -> results -> batch summary."""
    from workers import Worker

    env = {**clean_env, **integration_env, "CELERY_STACK_MONGODB_URI": MONGODB_URI,
           "CELERY_STACK_MONGODB_DATABASE": db_name, "CELERY_STACK_BATCH_CHUNK_SIZE": "2"}
    (tmp_path / "a.wav").write_bytes(encode(tone(1.0)))
    (tmp_path / "b.flac").write_bytes(encode(tone(2.0), fmt="FLAC"))
    (tmp_path / "c.mp3").write_bytes(encode(tone(0.5), fmt="MP3", subtype="MPEG_LAYER_III"))
    (tmp_path / "bad.ogg").write_bytes(b"not audio" * 10)
    cli = os.path.join(os.path.dirname(sys.executable), "celery-stack")
    w = Worker(env, queues="short,long", concurrency=2, name="mongo").start()
    try:
        r = subprocess.run([cli, "submit", str(tmp_path), "--batch-id", "itb"], env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["unique"] == 4
        r = subprocess.run([cli, "batch", "itb", "--follow", "--timeout", "120"], env=env,
                           capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr + w.log()[-3000:]
        status = json.loads(r.stdout)
        assert status["summary"]["ok"] == 3 and status["summary"]["failed"] == 1
        assert status["summary"]["audio_seconds"] == pytest.approx(3.5, abs=0.05)
        r = subprocess.run([cli, "results", "--failed"], env=env, capture_output=True, text=True, timeout=60)
        assert "not a readable audio file" in r.stdout
    finally:
        w.stop()
        w.cleanup()
