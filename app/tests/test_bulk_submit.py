"""The batch and directory submit path (submit.submit_batch / resubmit_pending) through the bulk
publisher and the loopback RabbitMQ (MongoDB logic on mongomock, as in test_storage.py)."""

from __future__ import annotations

import json

import mongomock
import mongomock.gridfs
import pytest

from bulkhelpers import queued_messages, task_ids
from workers import make_client
from celery_stack_app import bulk, storage, submit
from celery_stack_app import settings as s_mod
from conftest import encode, tone

pytestmark = pytest.mark.integration
mongomock.gridfs.enable_gridfs_integration()


@pytest.fixture()
def env(integration_env):
    # classic queues here: a policy's x-max-length is exact on them (quorum applies it a little late)
    return {**integration_env, "CELERY_STACK_SHORT_QUEUE": "bks_short", "CELERY_STACK_LONG_QUEUE": "bks_long",
            "CELERY_STACK_QUEUE_TYPE": "classic", "CELERY_STACK_BATCH_CHUNK_SIZE": "2"}


@pytest.fixture()
def cfg(env):
    return s_mod.load(env)


@pytest.fixture()
def store(cfg):
    db = mongomock.MongoClient(tz_aware=True)["t"]
    s = storage.Storage(db, cfg)
    s.ensure_indexes()
    return s


@pytest.fixture()
def audio_dir(tmp_path):
    for i in range(9):
        (tmp_path / f"tone{i}.wav").write_bytes(encode(tone(0.1, 200 + 100 * i)))
    return tmp_path


def test_directory_submit_publishes_every_chunk_confirmed(rabbitmq, env, cfg, store, audio_dir):
    app = make_client(env)
    files = list(submit.iter_files([audio_dir]))
    with bulk.from_settings(app, cfg) as pub:
        sub = submit.submit_batch(store, pub, cfg, files, batch_id="b1")
    assert sub.unique == 9 and len(sub.tasks) == 5            # chunks of 2
    msgs = queued_messages(rabbitmq, "bks_long")
    assert sorted(task_ids(msgs)) == sorted(sub.tasks)
    shas = []
    for m in msgs:
        assert m.properties["application_headers"]["task"] == "celery_stack_app.analyse_chunk"
        batch_id, part, force = json.loads(m.body)[0]
        assert batch_id == "b1" and force is False
        shas += part
    assert sorted(shas) == sorted(store.pending_items("b1"))
    app.close()


def test_rejected_chunks_are_reported_and_can_be_resubmitted(rabbitmq, env, cfg, store, audio_dir):
    app = make_client(env)
    r = rabbitmq.ctl("set_policy", "bks-full", "^bks_long$",
                     '{"max-length": 2, "overflow": "reject-publish"}', "--apply-to", "queues")
    assert r.returncode == 0, r.stderr
    try:
        files = list(submit.iter_files([audio_dir]))
        with bulk.from_settings(app, cfg, max_nack_retries=1, nack_backoff=0.05) as pub:
            with pytest.raises(bulk.BulkPublishError) as info:
                submit.submit_batch(store, pub, cfg, files, batch_id="b2")
        result = info.value.result
        assert len(result.confirmed) == 2 and len(result.failed) == 3
        assert sorted(task_ids(queued_messages(rabbitmq, "bks_long"))) == sorted(result.confirmed)
    finally:
        rabbitmq.ctl("clear_policy", "bks-full")
    # the batch is recorded with its items pending: `celery-stack batch b2 --resubmit` sends them again
    with bulk.from_settings(app, cfg) as pub:
        assert submit.resubmit_pending(store, pub, cfg, "b2") == 9
    assert len(queued_messages(rabbitmq, "bks_long")) == 5
    app.close()


def test_single_task_delay_path_is_unchanged(rabbitmq, env):
    """Ordinary callers keep apply_async/send_task with per-message confirms."""
    app = make_client(env)
    assert app.conf.broker_transport_options["confirm_publish"] is True
    tid = app.send_task("celery_stack_app.noop", queue="bks_short").id
    assert task_ids(queued_messages(rabbitmq, "bks_short")) == [tid]
    app.close()
