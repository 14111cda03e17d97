"""Every setting of the application, read once from ``CELERY_STACK_*`` variables.

This is the only place that reads the environment. Each value has a
production default and a one-line reason, citing the public Celery, RabbitMQ
or MongoDB documentation where it helps.

An invalid value raises :class:`SettingsError` naming the variable, so a
worker unit fails at start with a message an operator can act on.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

PREFIX = "CELERY_STACK_"


class SettingsError(ValueError):
    """A ``CELERY_STACK_*`` variable holds a value the application refuses."""


# --------------------------------------------------------------------------
# Parsers: each takes the raw string and returns the value or raises
# ValueError with a human reason; _field() adds the variable's name.


def _int(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"expected an integer, got {raw!r}") from None
        if minimum is not None and value < minimum:
            raise ValueError(f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ValueError(f"must be <= {maximum}, got {value}")
        return value

    return parse


def _float(minimum: float | None = None, exclusive_min: bool = False) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"expected a finite number, got {raw!r}")
        if minimum is not None:
            if exclusive_min and value <= minimum:
                raise ValueError(f"must be > {minimum}, got {value}")
            if not exclusive_min and value < minimum:
                raise ValueError(f"must be >= {minimum}, got {value}")
        return value

    return parse


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"expected one of {sorted(_TRUE | _FALSE)}, got {raw!r}")


def _name(raw: str) -> str:
    """A queue or exchange name: AMQP short string, printable, no spaces."""
    value = raw.strip()
    if not value:
        raise ValueError("must not be empty")
    if len(value.encode()) > 255:
        raise ValueError("must be at most 255 bytes (AMQP short string)")
    if any(c.isspace() for c in value) or not value.isprintable():
        raise ValueError(f"must be printable without spaces, got {raw!r}")
    if value.startswith("amq."):
        raise ValueError("names starting with 'amq.' are reserved by RabbitMQ")
    return value


def _broker_urls(raw: str) -> tuple[str, ...]:
    urls = tuple(u.strip() for u in raw.split(";") if u.strip())
    if not urls:
        raise ValueError("expected at least one amqp:// or amqps:// URL")
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("amqp", "amqps", "pyamqp"):
            raise ValueError(f"{_redact(url)!r} is not an amqp://, amqps:// or pyamqp:// URL")
        if not parts.hostname:
            raise ValueError(f"{_redact(url)!r} has no host")
        try:
            parts.port  # noqa: B018  (raises on a bad port)
        except ValueError:
            raise ValueError(f"{_redact(url)!r} has an invalid port") from None
    return urls


def _mongodb_uri(raw: str) -> str:
    value = raw.strip()
    if not value:
        return ""
    if not value.startswith(("mongodb://", "mongodb+srv://")):
        raise ValueError(f"{_redact(value)!r} is not a mongodb:// or mongodb+srv:// URI")
    return value


def _database(raw: str) -> str:
    value = raw.strip()
    if not value or len(value) > 63 or any(c in value for c in '/\\. "$\0'):
        raise ValueError(f"{raw!r} is not a valid MongoDB database name")
    return value


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {list(choices)}, got {raw!r}")
        return value

    return parse


def _path(raw: str) -> str:
    return raw.strip()


_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


def _allow_list(raw: str) -> tuple[str, ...]:
    """Networks (CIDR or one address) and host names, separated by commas, semicolons or spaces."""
    entries: list[str] = []
    for entry in re.split(r"[,;\s]+", raw.strip()):
        if not entry:
            continue
        if "/" in entry or ":" in entry or entry.replace(".", "").isdigit():
            try:
                entries.append(str(ipaddress.ip_network(entry, strict=True)))
            except ValueError as exc:
                raise ValueError(f"{entry!r} is not a valid network: {exc}") from None
            continue
        name = entry.lower().rstrip(".")
        if len(name) > 253 or not all(_HOST_LABEL.match(label) for label in name.split(".")):
            raise ValueError(f"{entry!r} is neither a network (CIDR or address) nor a host name")
        entries.append(name)
    return tuple(dict.fromkeys(entries))


def _redact(url: str) -> str:
    """Hide the password of a URL in messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


# --------------------------------------------------------------------------


def _field(default: Any, parse: Callable[[str], Any], doc: str) -> Any:
    """A setting: default value, parser of the env string, one-line reason."""
    return dataclasses.field(default=default, metadata={"parse": parse, "doc": doc})


@dataclasses.dataclass(frozen=True)
class Settings:
    # ---- broker -------------------------------------------------------
    broker_urls: tuple[str, ...] = _field(
        ("amqp://localhost:5672//",), _broker_urls,
        "`;`-separated AMQP URLs tried in order for failover (HAProxy or nodes); "
        "credentials belong in the URL, set by the deploy role (no default user).")
    broker_heartbeat: int = _field(
        60, _int(0, 3600),
        "AMQP heartbeat seconds: a dead TCP peer is noticed in ~2 heartbeats instead of the OS timeout.")
    broker_connect_timeout: float = _field(
        10.0, _float(0, exclusive_min=True),
        "Seconds to wait for a broker connection before trying the next URL.")
    broker_consumer_timeout: int = _field(
        1800, _int(60),
        "RabbitMQ's consumer_timeout (s, default 30 min); every hard time limit must stay below it, "
        "or RabbitMQ closes the channel of an acks-late task that is still running.")
    task_exchange: str = _field(
        "celery_stack", _name,
        "Topic exchange the task queues are bound to (topic, so Celery's native delayed "
        "delivery works for retries and countdowns with quorum queues).")
    queue_type: str = _field(
        "quorum", _choice("quorum", "classic"),
        "Quorum queues: replicated, durable and with a delivery-limit that ends poison "
        "messages in the dead-letter queue (classic only for brokers without quorum queues).")
    short_queue: str = _field(
        "short", _name, "Queue of short tasks: website checks, bookkeeping, health; never behind a long task.")
    long_queue: str = _field(
        "long", _name,
        "Queue of long tasks: audio analysis, separate so long work never delays short tasks (Celery docs, "
        "https://docs.celeryq.dev/en/stable/userguide/optimizing.html#prefetch-limits).")
    dead_letter_exchange: str = _field(
        "celery_stack.dlx", _name,
        "Exchange receiving messages rejected without requeue or over the delivery limit "
        "(RabbitMQ docs, https://www.rabbitmq.com/docs/dlx).")
    dead_letter_queue: str = _field(
        "celery_stack.dead_letter", _name,
        "Queue collecting dead-lettered task messages for inspection and requeue (`celery-stack dlq`).")
    delivery_limit: int = _field(
        5, _int(1, 1000),
        "Quorum x-delivery-limit: a message redelivered this often (e.g. it kills its worker) "
        "is dead-lettered instead of looping forever.")
    # ---- results and storage -------------------------------------------
    mongodb_uri: str = _field(
        "", _mongodb_uri,
        "MongoDB for results, GridFS blobs and check records; empty = broker-only "
        "(health/noop still work; connection is lazy).")
    mongodb_database: str = _field(
        "celery_stack", _database, "Database holding GridFS, analyses, batches, website checks and task results.")
    mongodb_timeout_ms: int = _field(
        5000, _int(100, 120000),
        "Server selection / connect timeout (ms): a MongoDB outage surfaces as a retried transient error "
        "quickly instead of blocking a worker slot for pymongo's default 30 s.")
    result_expires: int = _field(
        7 * 86400, _int(60),
        "Seconds a stored task result (or error tombstone) is kept; a TTL index enforces it "
        "(MongoDB docs, https://www.mongodb.com/docs/manual/core/index-ttl/).")
    check_retention: int = _field(
        30 * 86400, _int(3600),
        "Seconds website check records are kept (TTL index), so the collection does not grow forever.")
    # ---- worker resource limits ----------------------------------------
    short_soft_time_limit: int = _field(
        25, _int(1),
        "Soft time limit (s) of short tasks on a prefork pool: SoftTimeLimitExceeded lets them record a clean "
        "error. Void on a threads pool (the kit's short pool), where a website check ends by its own deadline.")
    short_time_limit: int = _field(
        30, _int(1),
        "Hard time limit (s) of short tasks on a prefork pool: a hanging task is killed and its memory freed "
        "(Celery docs, https://docs.celeryq.dev/en/stable/userguide/workers.html#time-limits); Celery enforces "
        "no time limit on threads, solo or eventlet pools.")
    long_soft_time_limit: int = _field(
        540, _int(1), "Soft time limit (s) of long tasks (audio analysis, prefork pool).")
    long_time_limit: int = _field(
        600, _int(1),
        "Hard time limit (s) of long tasks (prefork pool); kept below the broker's consumer timeout. It overrides "
        "the worker's --time-limit, so give the deploy's pool the same value (its stop timeout follows it).")
    short_prefetch_multiplier: int = _field(
        16, _int(1, 1000),
        "Prefetch of a worker consuming only short tasks: many tiny tasks gain from many in flight "
        "(bench/confirms: late acks on quorum queues need a deep prefetch).")
    long_prefetch_multiplier: int = _field(
        1, _int(1, 1000),
        "Prefetch of a worker consuming long tasks: 1, so a long task never waits behind another "
        "on a busy process (Celery docs, "
        "https://docs.celeryq.dev/en/stable/userguide/optimizing.html#prefetch-limits).")
    max_tasks_per_child: int = _field(
        500, _int(0),
        "Recycle a pool process after this many tasks, bounding leaks (Celery docs, "
        "https://docs.celeryq.dev/en/stable/userguide/workers.html#max-tasks-per-child-setting); 0 = never.")
    max_memory_per_child: int = _field(
        1024 * 1024, _int(0),
        "KiB of resident memory after which a pool process is replaced once its task ends "
        "(Celery docs, https://docs.celeryq.dev/en/stable/userguide/workers.html#max-memory-per-child-setting); "
        "generous so decoding a big file does not churn processes; 0 = off.")
    task_events: bool = _field(
        True, _bool, "Workers send task events so Flower shows task progress (Celery docs, "
        "https://docs.celeryq.dev/en/stable/userguide/monitoring.html); "
        "sent without publisher confirms (telemetry).")
    task_sent_event: bool = _field(
        False, _bool,
        "Clients also send 'task-sent' events (Flower then shows queued tasks); off because each costs "
        "a confirmed publish per task on the submitting side.")
    # ---- retries --------------------------------------------------------
    retry_max: int = _field(
        5, _int(0, 100), "Retries of a transient error (broker, database, network) before the task fails.")
    retry_backoff_base: float = _field(
        2.0, _float(0, exclusive_min=True), "First retry delay (s); doubles on each retry (exponential backoff).")
    retry_backoff_max: float = _field(
        300.0, _float(0, exclusive_min=True), "Cap of the retry delay (s).")
    # ---- audio ----------------------------------------------------------
    max_audio_bytes: int = _field(
        512 * 1024 * 1024, _int(1),
        "Files larger than this are refused with a recorded failure: keeps each task's work small; bounds RAM/CPU.")
    batch_chunk_size: int = _field(
        10, _int(1, 10000),
        "Files per analysis task in a batch: fewer, larger messages and bulk writes, "
        "while one task stays a few seconds.")
    bulk_window: int = _field(
        512, _int(1, 65535),
        "Task messages in flight, unconfirmed, during a batch submit: publisher confirms are collected "
        "in windows instead of awaited one by one (bench/confirms), every message still confirmed.")
    bulk_max_nack_retries: int = _field(
        3, _int(0, 100),
        "Times a task message the broker refused (basic.nack, e.g. a full queue) is published again, with "
        "backoff, before the submit reports it as not accepted.")
    bulk_confirm_timeout: float = _field(
        30.0, _float(0, exclusive_min=True),
        "Seconds without any confirm from the broker, during a batch submit, after which the connection is "
        "presumed dead: the unconfirmed messages are published again over a new one (next broker URL).")
    # ---- website checks -------------------------------------------------
    webcheck_config: str = _field(
        "", _path, "Path of the JSON or YAML list of website checks that builds the beat schedule; empty = none.")
    webcheck_connect_timeout: float = _field(
        5.0, _float(0, exclusive_min=True), "Connect timeout (s) of a website check.")
    webcheck_read_timeout: float = _field(
        10.0, _float(0, exclusive_min=True),
        "Read timeout (s) of a website check: the longest wait for any one read; the deadline bounds the sum.")
    webcheck_deadline: float = _field(
        20.0, _float(0, exclusive_min=True),
        "Total seconds a website check may take (DNS, connect, TLS, headers, body, redirects), even against a "
        "server that drips bytes; below the short soft time limit, so the check records its own timeout. On a "
        "threads pool, which enforces no time limit, it is the check's bound.")
    webcheck_allow: tuple[str, ...] = _field(
        (), _allow_list,
        "Comma-separated networks (CIDR or addresses) and host names website checks may reach although "
        "loopback, private, link-local, CGNAT or metadata addresses are refused (SSRF); a name trusts its DNS "
        "answers except metadata addresses; empty = public addresses only.")
    webcheck_host_interval: float = _field(
        1.0, _float(0),
        "Minimum seconds between two checks of one host, across all workers, so a big list cannot "
        "hammer one site; 0 = off.")
    webcheck_max_body_bytes: int = _field(
        1024 * 1024, _int(0), "Bytes of a response body read for the content match; the rest is not downloaded.")

    # ------------------------------------------------------------------

    def __post_init__(self) -> None:
        pairs = (
            ("SHORT_SOFT_TIME_LIMIT", self.short_soft_time_limit, "SHORT_TIME_LIMIT", self.short_time_limit),
            ("LONG_SOFT_TIME_LIMIT", self.long_soft_time_limit, "LONG_TIME_LIMIT", self.long_time_limit),
        )
        for soft_name, soft, hard_name, hard in pairs:
            if soft >= hard:
                raise SettingsError(
                    f"{PREFIX}{soft_name}={soft} must be lower than {PREFIX}{hard_name}={hard}")
        for hard_name, hard in (("SHORT_TIME_LIMIT", self.short_time_limit),
                                ("LONG_TIME_LIMIT", self.long_time_limit)):
            if hard >= self.broker_consumer_timeout:
                raise SettingsError(
                    f"{PREFIX}{hard_name}={hard} must be lower than "
                    f"{PREFIX}BROKER_CONSUMER_TIMEOUT={self.broker_consumer_timeout}: RabbitMQ would close "
                    "the channel of a still-running acks-late task")
        if self.webcheck_deadline >= self.short_soft_time_limit:
            raise SettingsError(
                f"{PREFIX}WEBCHECK_DEADLINE={self.webcheck_deadline} must be lower than "
                f"{PREFIX}SHORT_SOFT_TIME_LIMIT={self.short_soft_time_limit}: a website check must end, and "
                "record its timeout, before the soft time limit interrupts it")
        if self.short_queue == self.long_queue:
            raise SettingsError(f"{PREFIX}SHORT_QUEUE and {PREFIX}LONG_QUEUE must differ "
                                f"(both are {self.short_queue!r})")
        if self.dead_letter_queue in (self.short_queue, self.long_queue):
            raise SettingsError(f"{PREFIX}DEAD_LETTER_QUEUE must differ from the task queues")
        if self.retry_backoff_base > self.retry_backoff_max:
            raise SettingsError(f"{PREFIX}RETRY_BACKOFF_BASE={self.retry_backoff_base} must not exceed "
                                f"{PREFIX}RETRY_BACKOFF_MAX={self.retry_backoff_max}")

    @property
    def has_mongodb(self) -> bool:
        return bool(self.mongodb_uri)


def env_name(field_name: str) -> str:
    return PREFIX + field_name.upper()


def fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(Settings))


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``environ`` (default ``os.environ``)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields():
        name = env_name(f.name)
        raw = environ.get(name)
        if raw is None:
            continue
        try:
            values[f.name] = f.metadata["parse"](raw)
        except ValueError as exc:
            raise SettingsError(f"{name}: {exc}") from None
    return Settings(**values)


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """``CELERY_STACK_*`` variables that name no setting (typos); logged as warnings, not fatal,
    because deploy tooling may set variables of its own with the same prefix."""
    environ = os.environ if environ is None else environ
    known = {env_name(f.name) for f in fields()}
    return sorted(k for k in environ if k.startswith(PREFIX) and k not in known)


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, reason) for every setting: the README table and `celery-stack settings`."""
    rows = []
    for f in fields():
        default = f.default
        if isinstance(default, tuple):
            default = ";".join(default)
        elif isinstance(default, bool):
            default = "true" if default else "false"
        rows.append((env_name(f.name), str(default), f.metadata["doc"]))
    return rows


def redact(url: str) -> str:
    return _redact(url)
