"""The kit's own Celery app (settings from CELERY_STACK_*), plus the benchmark's tasks."""

from celery_stack_app.celery_app import app  # noqa: F401

import benchtasks

benchtasks.register(app)
