"""`celery-stack submit` and `batch --resubmit` publish through the bulk publisher (CliRunner,
MongoDB logic on mongomock, the loopback RabbitMQ)."""

from __future__ import annotations

import json
import types

import mongomock
import mongomock.gridfs
import pytest
from click.testing import CliRunner

from bulkhelpers import queued_messages, task_ids
from celery_stack_app import cli, storage
from celery_stack_app import settings as s_mod
from conftest import encode, tone
from workers import make_client

pytestmark = pytest.mark.integration
mongomock.gridfs.enable_gridfs_integration()


@pytest.fixture()
def cli_env(integration_env, monkeypatch, tmp_path):
    env = {**integration_env, "CELERY_STACK_SHORT_QUEUE": "bkc_short", "CELERY_STACK_LONG_QUEUE": "bkc_long",
           "CELERY_STACK_QUEUE_TYPE": "classic", "CELERY_STACK_BATCH_CHUNK_SIZE": "3",
           "CELERY_STACK_MONGODB_URI": "mongodb://unused"}
    settings = s_mod.load(env)
    app = make_client(env)
    # the CLI's view of the application, without touching the global app of celery_app
    monkeypatch.setattr(cli, "_load", lambda: types.SimpleNamespace(app=app, settings=settings))
    store = storage.Storage(mongomock.MongoClient(tz_aware=True)["t"], settings)
    store.ensure_indexes()
    monkeypatch.setattr(cli, "_storage", lambda _ca: store)
    for i in range(7):
        (tmp_path / f"t{i}.wav").write_bytes(encode(tone(0.1, 300 + 50 * i)))
    yield env, store, tmp_path
    app.close()


def test_submit_directory_and_rejected_chunks(rabbitmq, cli_env):
    env, store, audio = cli_env
    r = CliRunner().invoke(cli.main, ["submit", str(audio), "--batch-id", "c1"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["chunks"] == 3 and out["unique"] == 7
    assert len(task_ids(queued_messages(rabbitmq, "bkc_long"))) == 3

    rabbitmq.ctl("set_policy", "bkc-full", "^bkc_long$", '{"max-length": 1, "overflow": "reject-publish"}',
                 "--apply-to", "queues")
    try:
        r = CliRunner().invoke(cli.main, ["submit", str(audio), "--batch-id", "c2", "--force"])
    finally:
        rabbitmq.ctl("clear_policy", "bkc-full")
    assert r.exit_code == 1
    assert "not accepted" in r.output and "celery-stack batch c2 --resubmit" in r.output
    queued_messages(rabbitmq, "bkc_long")
    r = CliRunner().invoke(cli.main, ["batch", "c2", "--resubmit"])
    assert r.exit_code == 0, r.output
    assert len(queued_messages(rabbitmq, "bkc_long")) == 3
