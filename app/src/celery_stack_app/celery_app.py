"""The Celery application: ``celery -A celery_stack_app.celery_app worker``.

Importing this module reads the settings and builds the configuration; it
never connects to RabbitMQ or MongoDB (both are reached lazily), so the
health task works with no MongoDB configured.
"""

from __future__ import annotations

import logging
from typing import Any

import click
from celery import Celery, bootsteps, signals
from celery.worker.consumer import Consumer
from kombu import Exchange, Queue

from . import settings as settings_mod
from . import storage
from .settings import Settings

log = logging.getLogger(__name__)

TASKS = "celery_stack_app"
#: task name -> queue class; everything else defaults to the short queue
LONG_TASKS = (f"{TASKS}.analyse", f"{TASKS}.analyse_chunk")
SHORT_TASKS = (f"{TASKS}.health", f"{TASKS}.noop", f"{TASKS}.check_website")
RESULT_BACKEND = "celery_stack_app.results:MongoTTLBackend"


def task_exchange(s: Settings) -> Exchange:
    return Exchange(s.task_exchange, type="topic", durable=True)


def queue_arguments(s: Settings, name: str) -> dict[str, Any]:
    args: dict[str, Any] = {
        # rejected (reject_on_worker_lost past the limit, time-limit ack off) or
        # over-delivered messages go to the DLX, keyed by their queue
        "x-dead-letter-exchange": s.dead_letter_exchange,
        "x-dead-letter-routing-key": name,
    }
    if s.queue_type == "quorum":
        args["x-queue-type"] = "quorum"
        # a message that keeps killing its worker stops after this many deliveries
        args["x-delivery-limit"] = s.delivery_limit
    return args


def task_queues(s: Settings) -> tuple[Queue, Queue]:
    ex = task_exchange(s)
    return tuple(
        Queue(name, ex, routing_key=name, durable=True, queue_arguments=queue_arguments(s, name))
        for name in (s.short_queue, s.long_queue)
    )


def dead_letter_exchange(s: Settings) -> Exchange:
    return Exchange(s.dead_letter_exchange, type="topic", durable=True)


def dead_letter_queue(s: Settings) -> Queue:
    args = {"x-queue-type": "quorum"} if s.queue_type == "quorum" else {}
    return Queue(s.dead_letter_queue, dead_letter_exchange(s), routing_key="#", durable=True,
                 queue_arguments=args)


def declare_dead_letter(connection, s: Settings) -> None:
    """Declare the DLX and DLQ (idempotent). Workers do it at start, the CLI before use."""
    channel = connection.default_channel
    dead_letter_queue(s).bind(channel).declare()


def routes(s: Settings) -> dict[str, dict[str, str]]:
    r = {name: {"queue": s.long_queue} for name in LONG_TASKS}
    r.update({name: {"queue": s.short_queue} for name in SHORT_TASKS})
    # Celery's own housekeeping tasks, if ever sent, stay on the short queue
    r["celery.*"] = {"queue": s.short_queue}
    return r


def build_config(s: Settings) -> dict[str, Any]:
    """Celery settings from our settings. Each line says why."""
    from . import webcheck

    queues = task_queues(s)
    checks = webcheck.load_checks(s.webcheck_config)
    conf: dict[str, Any] = dict(
        # -- broker --
        broker_url=";".join(s.broker_urls),            # ';' = failover list, tried in order
        broker_failover_strategy="round-robin",
        broker_heartbeat=s.broker_heartbeat,
        broker_connection_timeout=s.broker_connect_timeout,
        # Celery 5.3+: keep retrying the first connection instead of dying while RabbitMQ boots
        broker_connection_retry_on_startup=True,
        # publisher confirms: apply_async returns only once RabbitMQ has the message
        broker_transport_options={"confirm_publish": True},
        # -- serialization: JSON only, nothing executable crosses the broker --
        task_serializer="json", result_serializer="json", accept_content=["json"],
        timezone="UTC", enable_utc=True,
        # -- queues and routing: short and long work on separate queues (Celery docs, 'Prefetch Limits') --
        task_queues=queues,
        task_routes=routes(s),
        task_default_queue=s.short_queue,
        task_default_exchange=s.task_exchange,
        task_default_exchange_type="topic",
        task_default_routing_key=s.short_queue,
        task_default_queue_type=s.queue_type,          # Celery 5.5+: queues Celery creates are quorum
        task_create_missing_queue_type=s.queue_type,
        # quorum queues have no global QoS: Celery 5.5+ detects them and uses per-consumer prefetch
        worker_detect_quorum_queues=True,
        # -- reliability: idempotent tasks + acks_late (Celery docs, setting 'task_acks_late') --
        task_acks_late=True,                           # ack after the task ran: a crash redelivers it
        task_reject_on_worker_lost=True,               # a killed child requeues; x-delivery-limit ends loops
        # a failed or timed-out task is not redelivered (Celery 5.7 deprecates the
        # combined task_acks_on_failure_or_timeout for these two)
        task_acks_on_failure=True,
        task_acks_on_timeout=True,
        # with acks_late a lost connection redelivers the message anyway: stop the copy here
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_prefetch_multiplier=s.long_prefetch_multiplier,  # refined per worker in _on_worker_init
        # -- resource limits: end hung tasks, recycle leaking processes (Celery docs, Workers: 'Time Limits') --
        # defaults; long tasks set their own. Enforced on prefork only (gevent: the hard one):
        # on threads, the kit's short pool, short tasks bound themselves (tasks.SHORT_LIMITS)
        task_soft_time_limit=s.short_soft_time_limit,
        task_time_limit=s.short_time_limit,
        worker_max_tasks_per_child=s.max_tasks_per_child or None,
        worker_max_memory_per_child=s.max_memory_per_child or None,
        # -- results: ignore results nobody reads ('Ignore results you don't want'); error tombstones in MongoDB --
        task_ignore_result=True,
        task_store_errors_even_if_ignored=s.has_mongodb,
        result_backend=RESULT_BACKEND if s.has_mongodb else None,
        # enforced by a TTL index (results.py); None without a backend, so beat schedules no cleanup
        result_expires=s.result_expires if s.has_mongodb else None,
        result_extended=False,
        mongodb_backend_settings={"database": s.mongodb_database, "taskmeta_collection": "celery_taskmeta",
                                  "groupmeta_collection": "celery_groupmeta"},
        # -- events for Flower (Celery docs, 'Monitoring and Management Guide') --
        worker_send_task_events=s.task_events,
        # 'task-sent' is published on the task's own (confirmed) channel: one more broker
        # round trip per task for the client, so off unless asked for
        task_send_sent_event=s.task_events and s.task_sent_event,
        # worker events without publisher confirms (StackConsumer below)
        worker_consumer="celery_stack_app.celery_app:StackConsumer",
        # RabbitMQ 4 deprecates transient non-exclusive queues: the per-client event and
        # control (pidbox) queues are exclusive + auto-delete, never durable.
        event_queue_exclusive=True, event_queue_durable=False,
        event_queue_expires=60.0, event_queue_ttl=5.0,
        control_queue_exclusive=True, control_queue_durable=False,
        # default exchange names kept: Flower started with just the broker URL still sees workers
        control_exchange="celery", event_exchange="celeryev",
        # -- website checks from configuration --
        beat_schedule=webcheck.beat_schedule(checks, f"{TASKS}.check_website", s.short_queue),
    )
    return conf


class StackConsumer(Consumer):
    """The worker's consumer, whose event connection does not wait for publisher confirms.

    In Celery's worker only the Events step calls ``connection_for_write``.
    Events are transient telemetry for Flower; with ``confirm_publish`` every
    one of the 2-3 events per task would wait for a broker round trip in the
    worker's main process (the benchmark measured about half the throughput).
    Task messages keep their confirms: they use the app's producer pool.
    """

    def connection_for_write(self, url=None, heartbeat=None):
        return self.ensure_connected(self.app.connection_for_write(
            url=url, heartbeat=heartbeat, transport_options={"confirm_publish": False}))


def declare_topology(connection, s: Settings) -> None:
    """Declare the task exchange, BOTH task queues and the DLX/DLQ (idempotent).

    Every worker declares every queue, not only those it consumes: messages
    published before the first long worker starts are kept, and Celery's
    native delayed delivery (which binds all the app's queues) finds them.
    """
    channel = connection.default_channel
    for queue in task_queues(s):
        queue.bind(channel).declare()
    dead_letter_queue(s).bind(channel).declare()


class TopologyStep(bootsteps.StartStopStep):
    """Worker bootstep, run before the consumer starts: declare the topology."""

    requires = ("celery.worker.components:Pool",)

    def start(self, worker) -> None:
        app_ = worker.app
        try:
            with app_.connection_for_write() as conn:
                conn.ensure_connection(max_retries=app_.conf.broker_connection_max_retries or 100,
                                       interval_start=1, interval_step=1, interval_max=5)
                declare_topology(conn, settings)
        except Exception as exc:  # the consumer still retries and declares what it consumes
            log.warning("could not declare the queue topology: %r", exc)


def prefetch_for(s: Settings, queues: list[str] | None) -> int:
    """Prefetch multiplier of a worker consuming ``queues`` (None = all)."""
    if not queues or s.long_queue in queues:
        return s.long_prefetch_multiplier
    return s.short_prefetch_multiplier


settings = settings_mod.load()
app = Celery("celery_stack_app", include=["celery_stack_app.tasks"])
app.conf.update(build_config(settings))
app.steps["worker"].add(TopologyStep)


@signals.celeryd_init.connect
def _on_celeryd_init(**_):
    for name in settings_mod.unknown_variables():
        log.warning("%s names no setting of celery-stack-app (typo?); ignored", name)


@signals.worker_init.connect
def _on_worker_init(sender=None, **_):
    """Prefetch from the queues consumed, unless ``--prefetch-multiplier`` was given.

    ``worker_init`` comes after the worker read its options and before its
    consumer exists: the only point where this takes effect (the CLI has
    already copied ``worker_prefetch_multiplier`` when ``celeryd_init`` runs).
    """
    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.get_parameter_source("prefetch_multiplier") is not click.core.ParameterSource.DEFAULT:
        return  # given on the command line, or a worker started from Python with its own options
    sender.prefetch_multiplier = prefetch_for(settings, list(sender.app.amqp.queues.consume_from))


@signals.worker_process_init.connect
def _on_worker_process_init(**_):
    storage.reset()  # pymongo clients are not fork-safe: each pool process makes its own
