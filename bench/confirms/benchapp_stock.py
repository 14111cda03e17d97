"""Stock Celery: every default (early ack, prefetch 4, classic queues, no publisher confirms).

BENCH_STOCK_* variables switch single kit settings on, to see what each one costs:
ACKS_LATE=1, TIME_LIMIT=<s> (hard limit; soft = limit - 5), QUORUM=1 (quorum queues).
"""

import os

from celery import Celery

import benchtasks



def configure(app: Celery) -> Celery:
    app.conf.update(broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)
    if os.environ.get("BENCH_STOCK_ACKS_LATE") == "1":
        app.conf.task_acks_late = True
    if os.environ.get("BENCH_STOCK_TIME_LIMIT"):
        app.conf.task_time_limit = int(os.environ["BENCH_STOCK_TIME_LIMIT"])
        app.conf.task_soft_time_limit = int(os.environ["BENCH_STOCK_TIME_LIMIT"]) - 5
    if os.environ.get("BENCH_STOCK_QUORUM") == "1":
        app.conf.task_create_missing_queue_type = "quorum"
        app.conf.worker_detect_quorum_queues = True
    return app


app = configure(Celery("benchstock", broker=os.environ.get("BENCH_BROKER_URL", "amqp://localhost//")))
benchtasks.register(app)
