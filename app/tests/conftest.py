"""Fixtures: a loopback RabbitMQ for the session, a real worker, generated audio."""

from __future__ import annotations

import io
import os
import sys
import tempfile

import numpy as np
import pytest
import soundfile

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

from broker import BrokerUnavailable, broker_from_environment  # noqa: E402
from workers import Worker  # noqa: E402

# Settings of the integration worker: tight limits so the tests are quick.
INTEGRATION_SETTINGS = {
    "CELERY_STACK_SHORT_QUEUE": "short",
    "CELERY_STACK_LONG_QUEUE": "long",
    "CELERY_STACK_DELIVERY_LIMIT": "2",
    "CELERY_STACK_SHORT_SOFT_TIME_LIMIT": "2",
    "CELERY_STACK_SHORT_TIME_LIMIT": "4",
    "CELERY_STACK_LONG_SOFT_TIME_LIMIT": "20",
    "CELERY_STACK_LONG_TIME_LIMIT": "30",
    "CELERY_STACK_RETRY_BACKOFF_BASE": "1",
    "CELERY_STACK_RETRY_BACKOFF_MAX": "2",
    "CELERY_STACK_BROKER_CONNECT_TIMEOUT": "5",
    # below the short soft time limit (2 s); the website check tests reach servers on loopback
    "CELERY_STACK_WEBCHECK_DEADLINE": "1.5",
    "CELERY_STACK_WEBCHECK_ALLOW": "127.0.0.1",
}


@pytest.fixture(scope="session")
def rabbitmq():
    try:
        rmq = broker_from_environment().start()
    except BrokerUnavailable as exc:
        pytest.fail(f"cannot start the test RabbitMQ: {exc}")
    yield rmq
    rmq.stop()


@pytest.fixture(scope="session")
def integration_env(rabbitmq):
    env = dict(INTEGRATION_SETTINGS)
    env["CELERY_STACK_BROKER_URLS"] = rabbitmq.url
    # broker-only: the worker must start and answer without any MongoDB
    env.pop("CELERY_STACK_MONGODB_URI", None)
    return env


@pytest.fixture(scope="session")
def clean_env():
    """os.environ without CELERY_STACK_* (subprocesses get exactly what a test sets)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CELERY_STACK_")}


@pytest.fixture(scope="module")
def worker(integration_env, clean_env):
    w = Worker({**clean_env, **integration_env}, queues="short,long", concurrency=2,
               include="worker_tasks", name="itest")
    w.start()
    yield w
    w.stop()
    w.cleanup()


@pytest.fixture()
def marker_dir():
    with tempfile.TemporaryDirectory(prefix="celery-stack-markers-") as d:
        os.chmod(d, 0o777)
        yield d


# ---------------------------------------------------------------------------
# audio made on the fly


def tone(seconds: float = 1.0, freq: float = 1000.0, amp: float = 0.5, sr: int = 44100,
         channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = amp * np.sin(2 * np.pi * freq * t)
    return np.repeat(x[:, None], channels, axis=1) if channels > 1 else x


def encode(data: np.ndarray, sr: int = 44100, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, data, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


FORMATS = [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III")]
