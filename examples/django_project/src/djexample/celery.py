"""The Celery application of the Django example.

Settings come from Django's settings (``CELERY_*`` names), which read the
environment (``DJEXAMPLE_*``): the deployment writes them into the worker's
environment file.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djexample.settings")

app = Celery("djexample")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
