"""Tasks of the Django example. Idempotent: the same input gives the same
result and leaves nothing behind."""

import hashlib
import time

from celery import shared_task
from celery.utils.log import get_task_logger
from django.conf import settings

logger = get_task_logger(__name__)


@shared_task(name="djexample.fingerprint")
def fingerprint(text: str) -> str:
    """Content hash of ``text``; the log line proves a worker consumed it."""
    digest = hashlib.sha256(text.encode()).hexdigest()
    logger.info("fingerprint of %d bytes is %s (django %s)", len(text), digest,
                settings.INSTALLED_APPS[0])
    return digest


@shared_task(name="djexample.sleep")
def sleep(seconds: float) -> float:
    """Sleeps: lets tests stop a worker while a task runs."""
    logger.info("sleeping %.1f s", seconds)
    time.sleep(seconds)
    logger.info("slept %.1f s", seconds)
    return seconds
