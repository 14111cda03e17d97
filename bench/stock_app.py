"""Celery with its stock settings (only the broker URL set): the baseline."""

import os

from celery import Celery

import bench_tasks

app = Celery("stock", broker=os.environ["BENCH_BROKER_URL"])
stamp = bench_tasks.register(app)
