"""Retry policy: only transient errors, exponential backoff with jitter, capped."""

import random

import kombu.exceptions
import pymongo.errors
import pytest

from celery_stack_app.retry import BadInput, RetryPolicy, is_transient


@pytest.mark.parametrize("exc", [
    pymongo.errors.AutoReconnect("primary stepped down"),
    pymongo.errors.ServerSelectionTimeoutError("no servers"),
    pymongo.errors.NetworkTimeout("slow"),
    kombu.exceptions.OperationalError("broker gone"),
    ConnectionRefusedError(),
    ConnectionResetError(),
    TimeoutError(),
])
def test_transient(exc):
    assert is_transient(exc)


@pytest.mark.parametrize("exc", [
    BadInput("empty file"), ValueError("bug"), KeyError("x"),
    pymongo.errors.DuplicateKeyError("dup"), pymongo.errors.OperationFailure("bad query"),
])
def test_not_transient(exc):
    assert not is_transient(exc)


def test_backoff_doubles_is_jittered_and_capped():
    p = RetryPolicy(max_retries=5, base=2, cap=30)
    rng = random.Random(7)
    assert [p.nominal(n) for n in range(6)] == [2, 4, 8, 16, 30, 30]
    for n in range(8):
        delays = [p.delay(n, rng) for _ in range(200)]
        assert min(delays) >= p.nominal(n) / 2 > 0
        assert max(delays) <= p.nominal(n) <= 30
        assert len(set(delays)) > 100  # spread: failing tasks do not return in lock step


def test_retry_cap():
    p = RetryPolicy(max_retries=3, base=1, cap=10)
    assert p.should_retry(ConnectionResetError(), 2)
    assert not p.should_retry(ConnectionResetError(), 3)
    assert not p.should_retry(BadInput("x"), 0)


def test_stack_task_retries_transient_only(monkeypatch):
    """StackTask.__call__ turns a transient error into a Retry with a whole-second countdown."""
    from celery.exceptions import Retry

    from celery_stack_app import tasks

    calls = {}

    def fake_retry(self, exc=None, countdown=None, max_retries=None, **kw):
        calls.update(exc=exc, countdown=countdown, max_retries=max_retries)
        return Retry(exc=exc)

    monkeypatch.setattr(tasks.StackTask, "retry", fake_retry)
    task = tasks.noop
    task.push_request(retries=1, called_directly=False)
    try:
        monkeypatch.setattr(task, "run", lambda: (_ for _ in ()).throw(ConnectionResetError("db")))
        with pytest.raises(Retry):
            task()
        assert isinstance(calls["exc"], ConnectionResetError)
        assert calls["countdown"] >= 1 and float(calls["countdown"]).is_integer()
        assert calls["max_retries"] == tasks.POLICY.max_retries
        calls.clear()
        monkeypatch.setattr(task, "run", lambda: (_ for _ in ()).throw(ValueError("bug")))
        with pytest.raises(ValueError):
            task()
        assert calls == {}
    finally:
        task.pop_request()
