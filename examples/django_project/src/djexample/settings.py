"""Settings of the Django example: everything deployment-specific comes from
environment variables prefixed ``DJEXAMPLE_``; secrets have no default."""

import os

from django.core.exceptions import ImproperlyConfigured


def _required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ImproperlyConfigured(f"environment variable {name} is not set")
    return value


SECRET_KEY = _required("DJEXAMPLE_SECRET_KEY")
DEBUG = False  # DEBUG keeps every query in memory: never in a worker
ALLOWED_HOSTS: list[str] = []
INSTALLED_APPS = ["djexample.jobs"]
DATABASES: dict = {}  # the example's task needs no database
USE_TZ = True
TIME_ZONE = "UTC"

# Celery (namespace CELERY_ in djexample/celery.py)
CELERY_BROKER_URL = _required("DJEXAMPLE_BROKER_URL")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_RESULT_BACKEND = os.environ.get("DJEXAMPLE_RESULT_BACKEND") or None
CELERY_TASK_IGNORE_RESULT = CELERY_RESULT_BACKEND is None
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("DJEXAMPLE_QUEUE", "django")
CELERY_TASK_ACKS_LATE = True
# With late acks, Celery 5.1+ warns on every connection loss until this is set
# (its default in Celery 6): tasks running when the connection drops are
# cancelled, and redelivered by the broker, instead of finishing unacknowledged.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 240
