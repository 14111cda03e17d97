"""Website checks: a worker tests websites periodically (scheduled by Celery beat).

- :func:`load_checks` reads the JSON or YAML list named by
  ``CELERY_STACK_WEBCHECK_CONFIG`` and validates it (clear errors naming the
  entry); :func:`beat_schedule` turns it into Celery beat entries.
- :func:`run_check` makes one HTTP(S) request (and follows up to
  :data:`MAX_REDIRECTS` redirects when the check says ``follow_redirects``)
  with strict connect and read timeouts, a total deadline, a bounded body
  read, and returns a record: status, latency, TLS certificate expiry,
  content match, and an error sentence if any. It never raises for a site's
  failure (bad URL, DNS, refused, TLS, timeout, an address the policy
  refuses): those are results to record, not reasons to retry.
- Every connection, the first and each redirect hop, goes through
  :mod:`.webcheck_net`: the address actually connected to must be public or
  allowed by ``CELERY_STACK_WEBCHECK_ALLOW``.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import socket
import ssl
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import SplitResult, urljoin, urlsplit

from .settings import SettingsError
from .webcheck_net import (AddressPolicy, Deadline, DeadlineExceeded, GuardedHTTPConnection, GuardedHTTPSConnection,
                           Refused)

DEFAULT_INTERVAL = 300.0
MIN_INTERVAL = 10.0


class CheckConfigError(SettingsError):
    """The website check list is invalid (the message names the file and the entry)."""


@dataclass(frozen=True)
class Check:
    name: str
    url: str
    interval: float = DEFAULT_INTERVAL
    expected_status: int = 200
    contains: str | None = None
    follow_redirects: bool = False

    def as_kwargs(self) -> dict[str, Any]:
        kwargs = asdict(self)
        if not self.follow_redirects:
            # left out when false, so a worker of the previous release (which does not know
            # the key) still runs the messages of a beat already upgraded
            del kwargs["follow_redirects"]
        return kwargs


def _parse_entry(i: int, entry: Any, source: str) -> Check:
    where = f"{source}: check #{i + 1}"
    if isinstance(entry, str):
        entry = {"url": entry}
    if not isinstance(entry, dict):
        raise CheckConfigError(f"{where}: expected a mapping with at least 'url', got {type(entry).__name__}")
    unknown = set(entry) - {"name", "url", "interval", "expected_status", "contains", "follow_redirects"}
    if unknown:
        raise CheckConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
    url = entry.get("url")
    if not isinstance(url, str) or not url.strip():
        raise CheckConfigError(f"{where}: 'url' must be a non-empty string")
    name = entry.get("name") or url
    where = f"{source}: check {name!r}"
    try:
        interval = float(entry.get("interval", DEFAULT_INTERVAL))
    except (TypeError, ValueError):
        raise CheckConfigError(f"{where}: 'interval' must be a number of seconds") from None
    if not interval >= MIN_INTERVAL:
        raise CheckConfigError(f"{where}: 'interval' must be at least {MIN_INTERVAL} s, got {interval}")
    status = entry.get("expected_status", 200)
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise CheckConfigError(f"{where}: 'expected_status' must be an HTTP status code (100-599)")
    contains = entry.get("contains")
    if contains is not None and not isinstance(contains, str):
        raise CheckConfigError(f"{where}: 'contains' must be a string")
    follow = entry.get("follow_redirects", False)
    if not isinstance(follow, bool):
        raise CheckConfigError(f"{where}: 'follow_redirects' must be true or false")
    return Check(name=str(name), url=url.strip(), interval=interval, expected_status=status, contains=contains,
                 follow_redirects=follow)


def parse_checks(text: str, source: str = "<checks>") -> list[Check]:
    """Parse a JSON or YAML document: a list of checks, or {"checks": [...]}."""
    try:
        data = json.loads(text)
    except ValueError:
        import yaml  # YAML only when the document is not JSON

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CheckConfigError(f"{source}: neither valid JSON nor YAML: {exc}") from None
    if isinstance(data, dict) and "checks" in data:
        data = data["checks"]
    if data is None:
        return []
    if not isinstance(data, list):
        raise CheckConfigError(f"{source}: expected a list of checks (or a mapping with 'checks')")
    checks = [_parse_entry(i, e, source) for i, e in enumerate(data)]
    names = [c.name for c in checks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise CheckConfigError(f"{source}: duplicate check name(s) {dupes}; give each a unique 'name'")
    return checks


def load_checks(path: str) -> list[Check]:
    if not path:
        return []
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise CheckConfigError(f"CELERY_STACK_WEBCHECK_CONFIG={path}: cannot read: {exc.strerror}") from None
    return parse_checks(text, source=f"CELERY_STACK_WEBCHECK_CONFIG={path}")


def beat_schedule(checks: list[Check], task_name: str, queue: str) -> dict[str, dict]:
    return {
        f"website-check:{c.name}": {
            "task": task_name,
            "schedule": c.interval,
            "kwargs": {"check": c.as_kwargs()},
            # a check older than its interval is stale: let it expire
            "options": {"queue": queue, "expires": c.interval},
        }
        for c in checks
    }


# ---------------------------------------------------------------------------


def host_of(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5


def _target(url: str) -> tuple[SplitResult, str]:
    """The parts of an http(s) URL and its request path; ValueError says what is wrong."""
    parts = urlsplit(url)
    parts.port  # noqa: B018  (raises ValueError on a bad port)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"scheme must be http or https, got {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise ValueError("no host")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts, path


def run_check(check: Check | dict, connect_timeout: float, read_timeout: float, max_body: int,
              ssl_context: ssl.SSLContext | None = None, now: dt.datetime | None = None, *,
              deadline: float | None = None, policy: AddressPolicy | None = None) -> dict[str, Any]:
    """One request (and its redirects, if the check follows them); returns the record to
    store, never raises for a site's failure.

    ``deadline``: total seconds for the whole check (default connect + read timeout).
    ``policy``: the addresses it may reach (default: public addresses only).
    """
    if isinstance(check, dict):
        check = Check(**check)
    policy = policy if policy is not None else AddressPolicy()
    clock = Deadline(deadline if deadline is not None else connect_timeout + read_timeout)
    record: dict[str, Any] = {
        "check": check.name, "url": check.url, "checked_at": now or dt.datetime.now(dt.timezone.utc),
        "expected_status": check.expected_status, "status_code": None, "ok": False,
        "latency_ms": None, "tls_expires_at": None, "tls_days_left": None,
        "content_match": None, "error": None, "refused": None, "redirects": [],
    }
    try:
        parts, path = _target(check.url)
    except ValueError as exc:
        record["error"] = f"invalid URL: {exc}"
        return record
    phase = "connect"
    conn: GuardedHTTPConnection | None = None
    response: http.client.HTTPResponse | None = None
    try:
        while True:
            conn_class = GuardedHTTPSConnection if parts.scheme == "https" else GuardedHTTPConnection
            context = (ssl_context or ssl.create_default_context()) if parts.scheme == "https" else None
            conn = conn_class(parts.hostname or "", parts.port, policy=policy, deadline=clock,
                              connect_timeout=connect_timeout, read_timeout=read_timeout, ssl_context=context)
            phase = "connect"
            conn.connect()  # DNS, address check, TCP (+ TLS handshake) under the connect timeout
            if conn.peer_cert and conn.peer_cert.get("notAfter"):
                expires = dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(conn.peer_cert["notAfter"]),
                                                    dt.timezone.utc)
                record["tls_expires_at"] = expires
                record["tls_days_left"] = round((expires - record["checked_at"]).total_seconds() / 86400, 2)
            phase = "request"
            conn.putrequest("GET", path, skip_accept_encoding=True)
            conn.putheader("User-Agent", "celery-stack-webcheck/1")
            conn.putheader("Accept-Encoding", "identity")
            conn.putheader("Connection", "close")
            conn.endheaders()
            phase = "headers"
            response = conn.getresponse()
            record["status_code"] = response.status
            location = response.getheader("Location")
            if not (check.follow_redirects and response.status in REDIRECT_STATUSES and location):
                break
            # a redirect: the next hop goes through the same address check and deadline
            if len(record["redirects"]) >= MAX_REDIRECTS:
                record["error"] = f"too many redirects (more than {MAX_REDIRECTS})"
                return record
            url = urljoin(record["redirects"][-1] if record["redirects"] else check.url, location.strip())
            record["redirects"].append(url)
            response.close()
            conn.close()
            conn = response = None
            try:
                parts, path = _target(url)
            except ValueError as exc:
                record["error"] = f"invalid redirect to {url!r}: {exc}"
                return record
        phase = "body"
        body = b""
        if check.contains is not None:
            while len(body) < max_body:
                chunk = response.read(min(65536, max_body - len(body)))
                if not chunk:
                    break
                body += chunk
        record["latency_ms"] = round(clock.elapsed() * 1000, 1)
        ok = response.status == check.expected_status
        if not ok:
            record["error"] = f"unexpected status {response.status} (expected {check.expected_status})"
        if check.contains is not None:
            charset = response.headers.get_content_charset() or "utf-8"
            text = body.decode(charset, errors="replace")
            record["content_match"] = check.contains in text
            if not record["content_match"]:
                ok = False
                record["error"] = record["error"] or (
                    f"content {check.contains!r} not found in the first {len(body)} bytes")
        record["ok"] = ok
    except Refused as exc:
        record["refused"] = exc.reason
        record["error"] = f"{exc} (redirect to {record['redirects'][-1]})" if record["redirects"] else str(exc)
    except ssl.SSLCertVerificationError as exc:
        record["error"] = f"TLS certificate verification failed: {exc.verify_message or exc}"
    except ssl.SSLError as exc:
        record["error"] = f"TLS error: {exc.reason or exc}"
    except socket.gaierror as exc:
        record["error"] = f"DNS lookup failed for {parts.hostname}: {exc.strerror or exc}"
    except (socket.timeout, TimeoutError) as exc:
        if isinstance(exc, DeadlineExceeded) or clock.expired():
            record["error"] = f"timeout (deadline, {clock.seconds} s) during the {_PHASES[phase]}"
            return record
        kind = "connect" if phase == "connect" else "read"
        limit = connect_timeout if kind == "connect" else read_timeout
        record["error"] = f"timeout ({kind}, {limit} s): {exc}" if str(exc) else f"timeout ({kind}, {limit} s)"
    except ConnectionRefusedError:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        record["error"] = f"connection refused by {parts.hostname}:{port}"
    except (OSError, http.client.HTTPException) as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if response is not None:
            response.close()  # the response holds the socket (Connection: close)
        if conn is not None:
            conn.close()
        if record["latency_ms"] is None:
            record["latency_ms"] = round(clock.elapsed() * 1000, 1)
    return record


_PHASES = {"connect": "connect", "request": "request", "headers": "response headers", "body": "response body"}
