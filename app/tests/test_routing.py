"""Queue topology and routing built from the settings (no broker needed)."""

import pytest

from celery_stack_app import celery_app as ca
from celery_stack_app import settings as s


@pytest.fixture()
def cfg():
    return s.load({"CELERY_STACK_SHORT_QUEUE": "fast", "CELERY_STACK_LONG_QUEUE": "slow",
                   "CELERY_STACK_DELIVERY_LIMIT": "3"})


def test_routes_follow_queue_names(cfg):
    from celery import Celery

    app = Celery("t", set_as_current=False)
    app.conf.update(ca.build_config(cfg))
    router = app.amqp.router
    def queue_of(name):
        return router.route({}, name)["queue"].name
    assert queue_of("celery_stack_app.analyse") == "slow"
    assert queue_of("celery_stack_app.analyse_chunk") == "slow"
    for name in ("celery_stack_app.health", "celery_stack_app.noop", "celery_stack_app.check_website",
                 "celery.backend_cleanup", "something.unknown"):
        assert queue_of(name) == "fast"


def test_quorum_queues_with_dead_lettering(cfg):
    short, long_ = ca.task_queues(cfg)
    for q in (short, long_):
        assert q.durable and not q.exclusive and not q.auto_delete
        assert q.exchange.type == "topic"           # native delayed delivery needs non-direct
        assert q.queue_arguments["x-queue-type"] == "quorum"
        assert q.queue_arguments["x-delivery-limit"] == 3
        assert q.queue_arguments["x-dead-letter-exchange"] == cfg.dead_letter_exchange
        assert q.queue_arguments["x-dead-letter-routing-key"] == q.name
    dlq = ca.dead_letter_queue(cfg)
    assert dlq.queue_arguments == {"x-queue-type": "quorum"} and dlq.routing_key == "#"


def test_classic_fallback_has_no_delivery_limit():
    cfg = s.load({"CELERY_STACK_QUEUE_TYPE": "classic"})
    for q in ca.task_queues(cfg):
        assert "x-queue-type" not in q.queue_arguments
        assert "x-delivery-limit" not in q.queue_arguments


def test_production_settings(cfg):
    conf = ca.build_config(cfg)
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["broker_transport_options"]["confirm_publish"] is True
    assert conf["broker_connection_retry_on_startup"] is True
    assert conf["worker_detect_quorum_queues"] is True
    assert conf["task_default_queue_type"] == "quorum"
    # RabbitMQ 4: no transient non-exclusive queues for control and events
    assert conf["control_queue_exclusive"] and not conf["control_queue_durable"]
    assert conf["event_queue_exclusive"] and not conf["event_queue_durable"]
    assert conf["task_ignore_result"] is True
    assert conf["result_backend"] is None          # no MongoDB configured: broker-only
    assert conf["worker_send_task_events"] and not conf["task_send_sent_event"]
    assert conf["worker_consumer"] == "celery_stack_app.celery_app:StackConsumer"  # unconfirmed events
    assert conf["worker_max_tasks_per_child"] and conf["worker_max_memory_per_child"]


def test_result_backend_only_with_mongodb():
    conf = ca.build_config(s.load({"CELERY_STACK_MONGODB_URI": "mongodb://db:27017"}))
    assert conf["result_backend"] == ca.RESULT_BACKEND
    assert conf["task_store_errors_even_if_ignored"] is True


def test_task_time_limits_per_queue_class():
    from celery_stack_app import tasks

    assert tasks.analyse.time_limit == ca.settings.long_time_limit
    assert tasks.analyse.soft_time_limit == ca.settings.long_soft_time_limit
    assert tasks.health.time_limit == ca.settings.short_time_limit
    assert tasks.analyse.ignore_result is False     # read by `submit --wait`-style callers
    assert tasks.analyse_chunk.ignore_result and tasks.noop.ignore_result and tasks.check_website.ignore_result


@pytest.mark.parametrize("queues,expected", [
    (None, 1), (["long"], 1), (["short", "long"], 1), (["short"], 16)])
def test_prefetch_one_wherever_long_tasks_run(queues, expected):
    cfg = s.load({})
    assert ca.prefetch_for(cfg, queues) == expected


def test_beat_schedule_from_config_file(tmp_path):
    path = tmp_path / "checks.yaml"
    path.write_text("checks:\n  - url: https://example.org/\n    interval: 60\n    contains: Example\n")
    conf = ca.build_config(s.load({"CELERY_STACK_WEBCHECK_CONFIG": str(path)}))
    (name, entry), = conf["beat_schedule"].items()
    assert entry["task"] == "celery_stack_app.check_website"
    assert entry["schedule"] == 60 and entry["options"]["queue"] == "short"
    assert entry["kwargs"]["check"]["contains"] == "Example"
