"""Celery result backend: MongoDB with a TTL index instead of a cleanup task.

Celery's stock MongoDB backend creates a plain index on ``date_done`` and
relies on the ``celery.backend_cleanup`` beat task to delete old results.
This subclass shares the per-process client of :mod:`storage` (one pool of
connections per process, created lazily after fork) and makes ``date_done``
a TTL index with ``result_expires``, so MongoDB expires results itself and
beat needs no cleanup task (``supports_autoexpire``).
"""

from __future__ import annotations

from celery.backends.mongodb import MongoBackend
from kombu.utils.objects import cached_property

from . import storage


class MongoTTLBackend(MongoBackend):
    supports_autoexpire = True

    def __init__(self, app=None, **kwargs):
        kwargs.pop("url", None)
        super().__init__(app=app, **kwargs)
        from .celery_app import settings

        self._settings = settings  # the connection (URI, timeouts); database and expiry from app.conf

    def _get_connection(self):
        return storage.client(self._settings)

    def _ttl_collection(self, name):
        collection = self.database[name]
        storage.ensure_ttl_index(collection, "date_done", int(self.expires or self._settings.result_expires))
        return collection

    @cached_property
    def collection(self):
        return self._ttl_collection(self.taskmeta_collection)

    @cached_property
    def group_collection(self):
        return self._ttl_collection(self.groupmeta_collection)

    def __reduce__(self, args=(), kwargs=None):
        return super().__reduce__(args, dict(kwargs or {}))
