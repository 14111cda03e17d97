"""Minimal Django project whose Celery app is ``djexample.celery:app``."""

from .celery import app as celery_app

__all__ = ("celery_app",)
