"""Bulk submission with pipelined publisher confirms: fast *and* safe.

Celery's producer with ``confirm_publish`` waits for the broker's confirm
of each task before it sends the next one: one network round trip plus a
quorum-queue commit (a Raft write) per task, which is where most of the
2-3x cost of the kit's safety settings goes. :class:`BulkPublisher` keeps
every guarantee and removes the wait:

* the channel is put in confirm mode (``confirm.select``) and messages are
  sent with plain ``basic.publish``; the broker's ``basic.ack`` /
  ``basic.nack`` (possibly ``multiple``, i.e. "every tag up to N") arrive
  asynchronously and are matched to the delivery tags we track
  (:class:`ConfirmTracker`);
* at most ``window`` messages are unconfirmed at any time; when the window
  is full, publishing waits for acks (bounded memory, bounded re-send);
* a message is reported submitted only once the broker acked it. A lost
  connection (or a confirm that never comes) puts every unconfirmed message
  back at the front of the queue, and they are published again, over a new
  connection, to the next URL of the broker list (failover, e.g. through
  HAProxy). This is at-least-once: a message the broker had stored before
  the connection died is sent twice, which the tasks tolerate by being
  idempotent (same task id, same content, same result);
* a ``basic.nack`` (for example a queue at its max-length with
  ``overflow=reject-publish``) is retried a bounded number of times with
  exponential backoff, then reported;
* messages go out with ``mandatory=True``: a message no queue would take
  comes back as ``basic.return`` (before its ack) and is reported as a
  failure instead of being silently dropped.

The messages are ordinary Celery task messages (protocol 2), built by the
app's own machinery (its router, ``app.amqp.create_task_message``, its
serializer), persistent, sent to the exchange and routing key Celery would
use, so stock workers consume them. Target queues are declared exactly as
Celery's producer declares them (the same :class:`kombu.Queue` objects, with
their ``queue_arguments``), so there is no ``PRECONDITION_FAILED``; if an
operator declared a queue differently, the existing declaration is used
(checked passively) and a warning is logged.

Single tasks keep using ``task.delay()`` / ``app.send_task`` unchanged.

Not thread-safe: one publisher per thread. Tasks with ``countdown``/``eta``
are refused (they need Celery's native delayed-delivery routing): publish
them with ``apply_async``.

Usage::

    with BulkPublisher(app) as pub:
        for item in work:
            pub.publish("celery_stack_app.analyse_chunk", (batch, item), queue="long")
        result = pub.flush()          # raises BulkPublishError listing failed task ids
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import random
import select
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import amqp
from kombu import Connection, Queue
from celery.app.routes import MapRoute
from celery.utils.nodenames import anon_nodename
from kombu.serialization import dumps

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 512
PERSISTENT = 2


class ConfirmTimeout(Exception):
    """The broker acknowledged nothing for ``confirm_timeout`` seconds: the connection is presumed dead."""


class BulkPublishError(Exception):
    """Some task messages were not confirmed by the broker.

    ``result.failed`` maps each such task id to the reason; every other
    task id of the batch is in ``result.confirmed``.
    """

    def __init__(self, result: "BulkResult"):
        self.result = result
        ids = list(result.failed)
        shown = ", ".join(f"{tid} ({result.failed[tid]})" for tid in ids[:5])
        more = f" and {len(ids) - 5} more" if len(ids) > 5 else ""
        super().__init__(f"{len(ids)} task message(s) not accepted by the broker "
                         f"({len(result.confirmed)} confirmed): {shown}{more}")

    @property
    def failed(self) -> dict[str, str]:
        return self.result.failed


@dataclasses.dataclass
class BulkResult:
    """What the broker confirmed, and what it did not (task id -> reason)."""

    confirmed: list[str] = dataclasses.field(default_factory=list)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)
    published: int = 0       # basic.publish frames sent, republishes included
    republished: int = 0     # messages sent again after a lost connection
    nacked: int = 0          # basic.nack received (each retried or failed)
    returned: int = 0        # basic.return received (unroutable)
    reconnects: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclasses.dataclass(eq=False)
class Outgoing:
    """One task message, serialized once and re-sendable as is (same task id)."""

    task_id: str
    name: str
    exchange: str
    routing_key: str
    body: bytes
    properties: dict[str, Any]
    declare: Queue | None = None
    nacks: int = 0
    resends: int = 0
    not_before: float = 0.0

    def message(self) -> amqp.Message:
        return amqp.Message(self.body, **self.properties)


# ---------------------------------------------------------------------------
# bookkeeping of one confirm-mode channel (pure: unit-tested without a broker)


class ConfirmTracker:
    """Delivery tag -> message, for the messages the broker has not answered yet.

    On a channel in confirm mode the broker numbers published messages 1, 2,
    3... and answers each with ``basic.ack`` or ``basic.nack``; ``multiple``
    means "every tag up to and including this one" (and tag 0 with
    ``multiple`` means all). Answers are usually in order but need not be.
    A ``basic.return`` (unroutable, mandatory) arrives before the ack of the
    same message: it is remembered by task id so the ack can be classified.
    """

    def __init__(self) -> None:
        self._pending: collections.OrderedDict[int, Outgoing] = collections.OrderedDict()
        self._next_tag = 1
        self._returned: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def outstanding(self) -> int:
        return len(self._pending)

    @property
    def next_tag(self) -> int:
        return self._next_tag

    def sent(self, item: Outgoing) -> int:
        tag = self._next_tag
        self._next_tag += 1
        self._pending[tag] = item
        return tag

    def _take(self, tag: int, multiple: bool) -> list[Outgoing]:
        if not multiple:
            item = self._pending.pop(tag, None)
            if item is None:
                log.debug("confirm for unknown or already answered delivery tag %d", tag)
                return []
            return [item]
        taken = []
        # tags are inserted in increasing order: the oldest are at the front
        while self._pending:
            first = next(iter(self._pending))
            if tag != 0 and first > tag:
                break
            taken.append(self._pending.popitem(last=False)[1])
        return taken

    def ack(self, tag: int, multiple: bool) -> tuple[list[Outgoing], list[tuple[Outgoing, str]]]:
        """(confirmed, [(unroutable, reason)]) for an ack."""
        confirmed, unroutable = [], []
        for item in self._take(tag, multiple):
            reason = self._returned.pop(item.task_id, None)
            if reason is None:
                confirmed.append(item)
            else:
                unroutable.append((item, reason))
        return confirmed, unroutable

    def nack(self, tag: int, multiple: bool) -> list[Outgoing]:
        items = self._take(tag, multiple)
        for item in items:
            self._returned.pop(item.task_id, None)
        return items

    def returned(self, task_id: str, reason: str) -> None:
        self._returned[task_id] = reason

    def lost(self) -> list[Outgoing]:
        """The channel is gone: every unanswered message, oldest first; tags restart at 1."""
        items = list(self._pending.values())
        self._pending.clear()
        self._returned.clear()
        self._next_tag = 1
        return items


# ---------------------------------------------------------------------------


class _Route(NamedTuple):
    time_limit: float | None
    soft_time_limit: float | None
    expires: Any
    ignore_result: bool | None
    priority: int | None
    exchange: str
    routing_key: str
    delivery_mode: int
    declare: Queue | None


def _short_repr(value: Any, maxsize: int) -> str:
    text = repr(value)
    return text if len(text) <= maxsize else text[:max(maxsize - 3, 0)] + "..."


def _queue_name(queue: Queue | str | None) -> str | None:
    if queue is None:
        return None
    return queue if isinstance(queue, str) else queue.name


class BulkPublisher:
    """Publish many Celery task messages with pipelined publisher confirms.

    Implements the ``Publisher`` protocol of :mod:`celery_stack_app.submit`:
    ``publish()`` queues (and sends, as the window allows) one task message
    and returns its task id; ``flush()`` returns once the broker answered
    every message, and raises :class:`BulkPublishError` if some were not
    accepted.

    Arguments:
        app: the Celery app (routing, serializer, broker URLs).
        urls: broker URLs to use instead of the app's ``broker_url`` list.
        window: most unconfirmed messages at a time.
        max_nack_retries: times a nacked message is published again before
            it is reported as rejected.
        nack_backoff / nack_backoff_max: first delay and cap (s) of the
            exponential backoff between those retries.
        max_reconnects: consecutive failed connection attempts (or lost
            connections without any progress) before giving up; everything
            still unconfirmed is then reported as failed.
        max_resends: times one message is sent again after lost connections
            or channels before it is reported as failed (a message that
            itself kills the channel, e.g. to a missing exchange, cannot
            loop forever while the others make progress).
        reconnect_backoff / reconnect_backoff_max: delay and cap (s) between
            connection attempts, after every URL of the list failed once.
        confirm_timeout: seconds without any answer from the broker, while
            messages are outstanding, after which the connection is presumed
            dead and replaced.
        declare: declare the target queues as Celery's producer would.
        mandatory: publish with ``mandatory`` (unroutable -> reported).
        on_publish: test/bench hook, called as ``on_publish(publisher, item)``
            after each ``basic.publish``.
    """

    def __init__(self, app, *, urls: Iterable[str] | None = None, window: int = DEFAULT_WINDOW,
                 max_nack_retries: int = 3, nack_backoff: float = 0.5, nack_backoff_max: float = 10.0,
                 max_reconnects: int = 10, max_resends: int = 10, reconnect_backoff: float = 1.0,
                 reconnect_backoff_max: float = 10.0, confirm_timeout: float = 30.0,
                 connect_timeout: float | None = None, heartbeat: float | None = None,
                 declare: bool = True, mandatory: bool = True,
                 on_publish: Callable[["BulkPublisher", Outgoing], None] | None = None):
        if window < 1:
            raise ValueError("window must be >= 1")
        self.app = app
        conf = app.conf
        if urls is None:
            broker_url = conf.broker_write_url or conf.broker_url
            urls = broker_url.split(";") if isinstance(broker_url, str) else broker_url
        self.urls = [u.strip() for u in urls if u and u.strip()]
        if not self.urls:
            raise ValueError("no broker URL")
        self.window = window
        self.max_nack_retries = max_nack_retries
        self.nack_backoff = nack_backoff
        self.nack_backoff_max = nack_backoff_max
        self.max_reconnects = max_reconnects
        self.max_resends = max_resends
        self.reconnect_backoff = reconnect_backoff
        self.reconnect_backoff_max = reconnect_backoff_max
        self.confirm_timeout = confirm_timeout
        self.connect_timeout = connect_timeout if connect_timeout is not None else conf.broker_connection_timeout
        self.heartbeat = heartbeat if heartbeat is not None else conf.broker_heartbeat
        self.declare = declare
        self.mandatory = mandatory
        self.on_publish = on_publish
        self.serializer = conf.task_serializer
        self.compression = conf.task_compression
        self._origin = anon_nodename()
        self._routes: dict[tuple[str, str | None], _Route] = {}
        self._static_routes = all(isinstance(r, MapRoute) for r in app.amqp.router.routes)

        self._queue: collections.deque[Outgoing] = collections.deque()   # to (re)publish, in order
        self._delayed: list[Outgoing] = []                                 # nacked, waiting out a backoff
        self._delayed_due = float("inf")                                    # earliest not_before of those
        self._tracker = ConfirmTracker()
        self._result = BulkResult()
        self._conn: Connection | None = None
        self._channel = None
        self._declared: set[str] = set()
        self._url_index = 0
        self._failures = 0          # consecutive connection failures without progress
        self._solo = False          # a twice-lost message is in flight on its own
        self._last_answer = time.monotonic()

    # -- building messages ------------------------------------------------

    def _route(self, task_name: str, queue: Queue | str | None, options: dict[str, Any]) -> _Route:
        """Where and how a task goes: the task's options, the app's router, Celery's exchange rules.

        Cached per (task, queue) when no per-call options are given and every router is a
        static mapping (a route function could look at the arguments)."""
        key = None
        if not options and self._static_routes:
            key = (task_name, _queue_name(queue))
            cached = self._routes.get(key)
            if cached is not None:
                return cached
        app = self.app
        task = app.tasks.get(task_name)
        if task is not None:
            exec_options = {k: v for k, v in task._get_exec_options().items() if v is not None}
            options = dict(exec_options, **options)
        else:
            options = dict(options)
        time_limit = options.pop("time_limit", None)
        soft_time_limit = options.pop("soft_time_limit", None)
        expires = options.pop("expires", None)
        ignore_result = options.pop("ignore_result", None)
        if queue is not None:
            options["queue"] = queue
        options = app.amqp.router.route(options, task_name, (), {}, task)
        qobj = options.get("queue")
        exchange = options.get("exchange")
        routing_key = options.get("routing_key")
        exchange_name = exchange if isinstance(exchange, str) or exchange is None else exchange.name
        # the same resolution as celery.app.amqp.AMQP.send_task_message
        try:
            exchange_type = qobj.exchange.type
        except AttributeError:
            exchange_type = "direct"
        qname = _queue_name(qobj)
        if (not exchange_name or not routing_key) and exchange_type == "direct":
            exchange_name, routing_key = "", qname
        elif exchange_name is None:
            exchange_name = qobj.exchange.name or app.amqp.default_exchange.name
            routing_key = routing_key or qobj.routing_key or app.conf.task_default_routing_key
        delivery_mode = options.get("delivery_mode")
        if delivery_mode is None:
            delivery_mode = getattr(getattr(qobj, "exchange", None), "delivery_mode", None) or PERSISTENT
        route = _Route(time_limit, soft_time_limit, expires, ignore_result, options.get("priority"),
                       exchange_name or "", routing_key or "", delivery_mode,
                       qobj if isinstance(qobj, Queue) else None)
        if key is not None:
            self._routes[key] = route
        return route

    def message(self, task_name: str, args: tuple | list = (), kwargs: dict | None = None, *,
                queue: Queue | str | None = None, task_id: str | None = None,
                **options: Any) -> Outgoing:
        """Build (and serialize) the Celery task message ``app.send_task`` would publish."""
        app = self.app
        args = tuple(args or ())
        kwargs = dict(kwargs or {})
        if options.get("countdown") or options.get("eta"):
            raise ValueError("bulk publishing does not take countdown/eta; use apply_async")
        task_id = task_id or str(uuid.uuid4())
        r = self._route(task_name, queue, options)
        amqp_ = app.amqp
        headers, properties, body, _sent_event = amqp_.create_task_message(
            task_id, task_name, args, kwargs, None, None, None, None,
            r.expires, 0, None, None, None, app.thread_oid, r.time_limit, r.soft_time_limit,
            False, None, None, None, None, ignore_result=r.ignore_result,
            # plain repr, cut like saferepr cuts: saferepr was a third of the cost of a message
            argsrepr=_short_repr(args, amqp_.argsrepr_maxsize),
            kwargsrepr=_short_repr(kwargs, amqp_.kwargsrepr_maxsize),
            origin=self._origin)
        content_type, content_encoding, payload = dumps(body, serializer=self.serializer)
        if isinstance(payload, str):   # encoded once, not at every (re)publish
            payload = payload.encode(content_encoding or "utf-8")
        if self.compression:
            from kombu.compression import compress
            payload, headers["compression"] = compress(payload, self.compression)
        props: dict[str, Any] = dict(properties)
        props.update(content_type=content_type, content_encoding=content_encoding,
                     application_headers=headers, delivery_mode=r.delivery_mode)
        if r.priority is not None:
            props["priority"] = r.priority
        if isinstance(r.expires, (int, float)):
            # Celery also sets a per-message TTL for an expiring task
            props["expiration"] = str(int(max(r.expires, 0) * 1000))
        return Outgoing(task_id=task_id, name=task_name, exchange=r.exchange, routing_key=r.routing_key,
                        body=payload, properties=props, declare=r.declare)

    # -- Publisher protocol --------------------------------------------------

    def publish(self, task_name: str, args: tuple | list = (), kwargs: dict | None = None, *,
                queue: Queue | str | None = None, task_id: str | None = None, **options: Any) -> str:
        """Queue one task message and send what the window allows; returns the task id.

        The id is *not yet* confirmed: only :meth:`flush` says what the broker accepted.
        """
        item = self.message(task_name, args, kwargs, queue=queue, task_id=task_id, **options)
        self.add(item)
        return item.task_id

    def publish_signature(self, sig) -> str:
        """Publish a Celery signature (``task.s(...)``); its frozen id is the task id."""
        opts = dict(sig.options)
        task_id = opts.pop("task_id", None) or sig.freeze().id
        opts.pop("reply_to", None)
        queue = opts.pop("queue", None)
        return self.publish(sig.task, tuple(sig.args), dict(sig.kwargs), queue=queue, task_id=task_id,
                            **{k: v for k, v in opts.items() if k in ("priority", "expires", "exchange",
                                                                      "routing_key", "delivery_mode")})

    def add(self, item: Outgoing) -> None:
        self._queue.append(item)
        self._run(until_done=False)

    def flush(self) -> BulkResult:
        """Wait until the broker answered every message; raise :class:`BulkPublishError` on failures.

        Returns (and resets) the result of everything published since the last flush.
        """
        self._run(until_done=True)
        result, self._result = self._result, BulkResult()
        if result.failed:
            error = BulkPublishError(result)
            log.error("%s", error)
            raise error
        return result

    def close(self) -> None:
        self._disconnect()

    def __enter__(self) -> "BulkPublisher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def outstanding(self) -> int:
        return self._tracker.outstanding

    @property
    def connection(self):
        """The py-amqp connection in use (tests use it to break things)."""
        return self._conn.connection if self._conn is not None else None

    # -- the loop ---------------------------------------------------------------

    def _run(self, until_done: bool) -> None:
        while True:
            try:
                if until_done:
                    if not (self._queue or self._delayed or self._tracker.outstanding):
                        return
                elif not self._queue:
                    return
                self._ensure_channel()
                self._release_delayed()
                self._send_window()
                if not until_done:
                    if self._queue:      # window full: wait for room, then carry on
                        self._wait(self._can_send)
                    continue
                if self._tracker.outstanding:
                    self._wait(lambda: self._tracker.outstanding == 0 or self._can_send()
                               or self._due_delayed())
                elif self._delayed and not self._queue:
                    pause = self._delayed_due - time.monotonic()
                    if pause > 0:
                        self._sleep(pause)
            except self._recoverable_errors() as exc:
                self._connection_lost(exc)

    def _recoverable_errors(self) -> tuple[type[BaseException], ...]:
        from kombu.exceptions import OperationalError
        return (amqp.exceptions.AMQPError, OSError, socket.timeout, ConfirmTimeout, OperationalError)

    def _can_send(self) -> bool:
        """Room in the window; and a message that was already lost twice goes alone.

        Alone: sent only on an idle channel, and nothing follows it until it is confirmed, so a
        message that itself breaks the channel (e.g. to a missing exchange) fails on its own
        instead of taking the messages behind it down with it."""
        outstanding = self._tracker.outstanding
        if not self._queue or outstanding >= self.window:
            return False
        if outstanding and (self._solo or self._queue[0].resends >= 2):
            return False
        return True

    def _send_window(self) -> None:
        channel = self._channel
        n = 0
        while self._can_send():
            item = self._queue[0]
            if item.declare is not None and item.declare.name not in self._declared:
                self._declare(item.declare)
            channel.basic_publish(item.message(), exchange=item.exchange, routing_key=item.routing_key,
                                  mandatory=self.mandatory)
            self._queue.popleft()
            self._tracker.sent(item)
            self._solo = item.resends >= 2
            self._result.published += 1
            if item.resends:
                self._result.republished += 1
            if self.on_publish is not None:
                self.on_publish(self, item)
            n += 1
            if n % 64 == 0:
                self._poll()     # take the acks already here, so the window keeps moving

    def _poll(self) -> None:
        """Process the frames that already arrived, without blocking."""
        raw = self._conn.connection
        sock = raw.sock
        while True:
            ready, _, _ = select.select([sock], [], [], 0)
            pending = getattr(sock, "pending", None)   # TLS: bytes decrypted but not read yet
            if not ready and not (pending and pending()):
                return
            try:
                raw.drain_events(timeout=self.confirm_timeout)
            except socket.timeout:
                return

    def _wait(self, done: Callable[[], bool]) -> None:
        """Read the broker's answers until ``done()``; no answer for confirm_timeout -> ConfirmTimeout."""
        raw = self._conn.connection
        self._last_answer = time.monotonic()
        while not done():
            try:
                raw.drain_events(timeout=min(1.0, self.confirm_timeout))
            except socket.timeout:
                raw.heartbeat_tick()
                if time.monotonic() - self._last_answer > self.confirm_timeout:
                    raise ConfirmTimeout(
                        f"no confirm from the broker for {self.confirm_timeout:.0f} s "
                        f"({self._tracker.outstanding} outstanding)") from None

    # -- broker callbacks ------------------------------------------------------

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._last_answer = time.monotonic()
        confirmed, unroutable = self._tracker.ack(delivery_tag, multiple)
        if confirmed:
            self._failures = 0
        self._result.confirmed.extend(i.task_id for i in confirmed)
        for item, reason in unroutable:
            self._fail(item, reason)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._last_answer = time.monotonic()
        for item in self._tracker.nack(delivery_tag, multiple):
            self._result.nacked += 1
            item.nacks += 1
            if item.nacks > self.max_nack_retries:
                self._fail(item, f"rejected by the broker (basic.nack, {item.nacks} times; "
                                 "queue full with overflow=reject-publish?)")
                continue
            delay = min(self.nack_backoff * 2 ** (item.nacks - 1), self.nack_backoff_max)
            item.not_before = time.monotonic() + delay * random.uniform(0.8, 1.2)
            self._delayed.append(item)
            self._delayed_due = min(self._delayed_due, item.not_before)
            log.info("task %s nacked by the broker; retry %d/%d in %.2f s",
                     item.task_id, item.nacks, self.max_nack_retries, delay)

    def _on_return(self, exc, exchange: str, routing_key: str, message) -> None:
        self._result.returned += 1
        props = getattr(message, "properties", {}) or {}
        headers = props.get("application_headers") or {}
        task_id = headers.get("id") or props.get("correlation_id")
        reason = f"unroutable: exchange {exchange!r} routing key {routing_key!r} ({exc})"
        if task_id:
            self._tracker.returned(task_id, reason)
        log.warning("task %s returned by the broker: %s", task_id, reason)

    def _fail(self, item: Outgoing, reason: str) -> None:
        self._result.failed[item.task_id] = reason
        log.debug("task %s (%s) not submitted: %s", item.task_id, item.name, reason)

    # -- nack backoff ------------------------------------------------------------

    def _due_delayed(self) -> bool:
        return bool(self._delayed) and self._delayed_due <= time.monotonic()

    def _release_delayed(self) -> None:
        if not self._delayed or self._delayed_due > time.monotonic():
            return
        now = time.monotonic()
        due = [i for i in self._delayed if i.not_before <= now]
        self._delayed = [i for i in self._delayed if i.not_before > now]
        self._delayed_due = min((i.not_before for i in self._delayed), default=float("inf"))
        self._queue.extendleft(reversed(due))

    def _sleep(self, seconds: float) -> None:
        """Sleep, but keep reading the connection (heartbeats, late frames)."""
        end = time.monotonic() + seconds
        raw = self._conn.connection
        while (left := end - time.monotonic()) > 0:
            try:
                raw.drain_events(timeout=min(left, 1.0))
            except socket.timeout:
                raw.heartbeat_tick()

    # -- connection and failover ---------------------------------------------

    def _ensure_channel(self) -> None:
        if self._channel is not None:
            return
        attempts = 0
        while True:
            url = self.urls[self._url_index % len(self.urls)]
            try:
                self._open(url)
                return
            except self._recoverable_errors() as exc:
                self._disconnect()
                self._failures += 1
                attempts += 1
                log.warning("broker %s: cannot connect: %r", _redact(url), exc)
                self._url_index += 1
                if self._failures > self.max_reconnects:
                    raise self._give_up(f"broker unreachable after {self._failures} attempts: "
                                        f"{exc!r}") from exc
                if attempts % len(self.urls) == 0:   # every URL failed once: back off
                    round_ = attempts // len(self.urls)
                    time.sleep(min(self.reconnect_backoff * 2 ** (round_ - 1), self.reconnect_backoff_max))

    def _open(self, url: str) -> None:
        conf = self.app.conf
        transport_options = dict(conf.broker_transport_options or {})
        # this channel is in confirm mode, but basic_publish must NOT wait per message
        transport_options["confirm_publish"] = False
        conn = Connection(url, heartbeat=self.heartbeat, connect_timeout=self.connect_timeout,
                          ssl=conf.broker_use_ssl, login_method=conf.broker_login_method,
                          transport_options=transport_options)
        self._conn = conn
        conn.connect()
        raw = conn.connection
        channel = raw.channel()
        if channel.basic_publish.__func__ is not amqp.Channel._basic_publish:
            raise RuntimeError("py-amqp channel publishes with per-message confirms; refusing")
        channel.confirm_select()
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        channel.events["basic_return"].add(self._on_return)
        self._channel = channel
        self._declared = set()
        self._tracker = ConfirmTracker()
        if self._result.reconnects or self._result.published:
            log.info("publishing to %s (reconnect %d)", _redact(url), self._result.reconnects)

    def _declare(self, queue: Queue) -> None:
        """Declare exchange, queue and binding as Celery's producer does (kombu maybe_declare)."""
        raw = self._conn.connection
        ch = raw.channel()
        try:
            queue.bind(ch).declare()
        except amqp.exceptions.PreconditionFailed as exc:
            # declared by someone else with other arguments: use it as it is
            log.warning("queue %s exists with other arguments (%s); using the existing declaration",
                        queue.name, exc)
            ch = raw.channel()
            ch.queue_declare(queue.name, passive=True)
        finally:
            try:
                ch.close()
            except Exception:  # noqa: BLE001 - already closed by the broker
                pass
        self._declared.add(queue.name)

    def _connection_lost(self, exc: BaseException) -> None:
        items = []
        for item in self._tracker.lost():
            item.resends += 1
            if item.resends > self.max_resends:
                self._fail(item, f"unconfirmed after {item.resends} lost connections/channels: {exc!r}")
            else:
                items.append(item)
        # unconfirmed messages go first again, in their original order
        self._queue.extendleft(reversed(items))
        url = self.urls[self._url_index % len(self.urls)]
        log.warning("connection to %s lost (%r): %d unconfirmed message(s) will be published again",
                    _redact(url), exc, len(items))
        self._disconnect()
        self._result.reconnects += 1
        self._failures += 1
        self._url_index += 1     # fail over to the next URL of the list
        if self._failures > self.max_reconnects:
            raise self._give_up(f"connection lost {self._failures} times without progress: "
                                f"{exc!r}") from exc
        time.sleep(min(self.reconnect_backoff * 2 ** (self._failures - 1), self.reconnect_backoff_max)
                   if self._failures > 1 else 0)

    def _give_up(self, reason: str) -> BulkPublishError:
        """Report everything not yet confirmed as failed; the error to raise (the result is reset)."""
        for item in list(self._queue) + self._delayed + self._tracker.lost():
            self._fail(item, reason)
        self._queue.clear()
        self._delayed = []
        self._delayed_due = float("inf")
        self._failures = 0
        result, self._result = self._result, BulkResult()
        error = BulkPublishError(result)
        log.error("giving up: %s", error)
        return error

    def _disconnect(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None:
            try:
                conn.collect() if not _is_open(conn) else conn.close()
            except Exception:  # noqa: BLE001 - a dead socket may raise anything here
                try:
                    conn.collect()
                except Exception:  # noqa: BLE001
                    pass


def _is_open(conn: Connection) -> bool:
    try:
        raw = conn.connection
        return bool(raw is not None and raw.connected)
    except Exception:  # noqa: BLE001
        return False


def _redact(url: str) -> str:
    from .settings import redact
    return redact(url)


def publish_bulk(app, items: Iterable, **kwargs: Any) -> BulkResult:
    """Publish signatures or ``(task_name, args, kwargs, queue)`` tuples; raise on any failure."""
    with BulkPublisher(app, **kwargs) as pub:
        for item in items:
            if isinstance(item, tuple):
                name, args, kw, queue = (tuple(item) + (None, None, None))[:4]
                pub.publish(name, args or (), kw or {}, queue=queue)
            else:
                pub.publish_signature(item)
        return pub.flush()


def from_settings(app, settings=None, **overrides: Any) -> BulkPublisher:
    """The bulk publisher of the submit paths, tuned by ``CELERY_STACK_BULK_*`` settings when present."""
    kwargs: dict[str, Any] = {}
    for arg, attr in (("window", "bulk_window"), ("max_nack_retries", "bulk_max_nack_retries"),
                      ("confirm_timeout", "bulk_confirm_timeout")):
        value = getattr(settings, attr, None)
        if value is not None:
            kwargs[arg] = value
    kwargs.update(overrides)
    return BulkPublisher(app, **kwargs)
