"""Configuration parsing: defaults, overrides, and clear errors naming the variable."""

import pytest

from celery_stack_app import settings as s


def test_defaults_are_valid():
    cfg = s.load({})
    assert cfg.short_queue == "short" and cfg.long_queue == "long"
    assert cfg.queue_type == "quorum"
    assert cfg.long_prefetch_multiplier == 1
    assert cfg.long_time_limit < cfg.broker_consumer_timeout
    assert not cfg.has_mongodb


def test_overrides_and_failover_list():
    cfg = s.load({
        "CELERY_STACK_BROKER_URLS": "amqp://u:p@rmq1:5672//; amqp://u:p@rmq2:5672//;",
        "CELERY_STACK_SHORT_QUEUE": "fast",
        "CELERY_STACK_LONG_QUEUE": "slow",
        "CELERY_STACK_TASK_EVENTS": "off",
        "CELERY_STACK_MONGODB_URI": "mongodb://db1,db2/?replicaSet=rs0",
        "CELERY_STACK_WEBCHECK_HOST_INTERVAL": "2.5",
    })
    assert cfg.broker_urls == ("amqp://u:p@rmq1:5672//", "amqp://u:p@rmq2:5672//")
    assert (cfg.short_queue, cfg.long_queue, cfg.task_events) == ("fast", "slow", False)
    assert cfg.has_mongodb and cfg.webcheck_host_interval == 2.5


@pytest.mark.parametrize("name,value,message", [
    ("CELERY_STACK_SHORT_TIME_LIMIT", "abc", "expected an integer"),
    ("CELERY_STACK_LONG_TIME_LIMIT", "0", "must be >= 1"),
    ("CELERY_STACK_TASK_EVENTS", "maybe", "expected one of"),
    ("CELERY_STACK_BROKER_URLS", "redis://localhost", "not an amqp"),
    ("CELERY_STACK_BROKER_URLS", " ; ", "at least one"),
    ("CELERY_STACK_BROKER_URLS", "amqp://:bad@/", "has no host"),
    ("CELERY_STACK_MONGODB_URI", "postgres://x", "not a mongodb"),
    ("CELERY_STACK_MONGODB_DATABASE", "a.b", "not a valid MongoDB database name"),
    ("CELERY_STACK_QUEUE_TYPE", "stream", "expected one of"),
    ("CELERY_STACK_SHORT_QUEUE", "two words", "without spaces"),
    ("CELERY_STACK_LONG_QUEUE", "amq.long", "reserved"),
    ("CELERY_STACK_RETRY_BACKOFF_BASE", "nan", "finite"),
    ("CELERY_STACK_WEBCHECK_CONNECT_TIMEOUT", "0", "must be > 0"),
    ("CELERY_STACK_WEBCHECK_DEADLINE", "-1", "must be > 0"),
    ("CELERY_STACK_WEBCHECK_ALLOW", "10.1.2.3/8", "has host bits set"),
    ("CELERY_STACK_WEBCHECK_ALLOW", "10.0.0.0/8, 300.0.0.1", "'300.0.0.1' is not a valid network"),
    ("CELERY_STACK_WEBCHECK_ALLOW", "intranet_ok, bad!name", "'bad!name' is neither a network"),
])
def test_bad_values_name_the_variable(name, value, message):
    with pytest.raises(s.SettingsError) as exc:
        s.load({name: value})
    assert str(exc.value).startswith(name + ":")
    assert message in str(exc.value)


def test_webcheck_allow_list_and_deadline():
    cfg = s.load({})
    assert cfg.webcheck_allow == () and cfg.webcheck_deadline < cfg.short_soft_time_limit
    cfg = s.load({"CELERY_STACK_WEBCHECK_ALLOW": " 127.0.0.1, 10.0.0.0/8;Status.Internal.  fd00::/8 "})
    assert cfg.webcheck_allow == ("127.0.0.1/32", "10.0.0.0/8", "status.internal", "fd00::/8")
    assert s.load({"CELERY_STACK_WEBCHECK_ALLOW": ""}).webcheck_allow == ()


def test_password_is_not_echoed_in_errors():
    with pytest.raises(s.SettingsError) as exc:
        s.load({"CELERY_STACK_BROKER_URLS": "http://user:secret@host/"})
    assert "secret" not in str(exc.value)


@pytest.mark.parametrize("env,message", [
    ({"CELERY_STACK_SHORT_SOFT_TIME_LIMIT": "30", "CELERY_STACK_SHORT_TIME_LIMIT": "30"},
     "CELERY_STACK_SHORT_SOFT_TIME_LIMIT=30 must be lower than CELERY_STACK_SHORT_TIME_LIMIT=30"),
    ({"CELERY_STACK_LONG_TIME_LIMIT": "2000"}, "BROKER_CONSUMER_TIMEOUT"),
    ({"CELERY_STACK_SHORT_QUEUE": "q", "CELERY_STACK_LONG_QUEUE": "q"}, "must differ"),
    ({"CELERY_STACK_RETRY_BACKOFF_BASE": "500"}, "must not exceed"),
    ({"CELERY_STACK_SHORT_SOFT_TIME_LIMIT": "20"},
     "CELERY_STACK_WEBCHECK_DEADLINE=20.0 must be lower than CELERY_STACK_SHORT_SOFT_TIME_LIMIT=20"),
])
def test_relations_between_values(env, message):
    with pytest.raises(s.SettingsError, match=message):
        s.load(env)


def test_unknown_variables_are_reported():
    assert s.unknown_variables({"CELERY_STACK_SHORT_QEUE": "x", "CELERY_STACK_LONG_QUEUE": "y"}) == [
        "CELERY_STACK_SHORT_QEUE"]


def test_every_setting_is_documented_in_the_readme():
    import pathlib

    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    for name, default, doc in s.describe():
        assert f"`{name}`" in readme, f"{name} missing from app/README.md"
        assert doc


def test_the_app_sets_no_setting_celery_deprecates():
    """celery.app.defaults marks the settings Celery deprecated
    (deprecate_by / remove_by); the app sets none of them."""
    from celery.app.defaults import NAMESPACES, flatten

    from celery_stack_app.celery_app import build_config

    deprecated = {name for name, opt in flatten(NAMESPACES) if opt.deprecate_by or opt.remove_by}
    assert deprecated, "Celery's settings table changed shape: no deprecated setting found"
    used = set(build_config(s.load({"CELERY_STACK_MONGODB_URI": "mongodb://db1/"})))
    assert not deprecated & used, sorted(deprecated & used)
