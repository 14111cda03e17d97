"""Website checks (seed 000: "a worker testing websites periodically").

- :func:`load_checks` reads the JSON or YAML list named by
  ``CELERY_STACK_WEBCHECK_CONFIG`` and validates it (clear errors naming the
  entry); :func:`beat_schedule` turns it into Celery beat entries.
- :func:`run_check` makes one HTTP(S) request with strict connect and read
  timeouts, a bounded body read, and returns a record: status, latency, TLS
  certificate expiry, content match, and an error sentence if any. It never
  raises for a site's failure (bad URL, DNS, refused, TLS, timeout): those
  are results to record, not reasons to retry.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import socket
import ssl
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from .settings import SettingsError

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

    def as_kwargs(self) -> dict[str, Any]:
        return asdict(self)


def _parse_entry(i: int, entry: Any, source: str) -> Check:
    where = f"{source}: check #{i + 1}"
    if isinstance(entry, str):
        entry = {"url": entry}
    if not isinstance(entry, dict):
        raise CheckConfigError(f"{where}: expected a mapping with at least 'url', got {type(entry).__name__}")
    unknown = set(entry) - {"name", "url", "interval", "expected_status", "contains"}
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
    return Check(name=str(name), url=url.strip(), interval=interval, expected_status=status, contains=contains)


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


def run_check(check: Check | dict, connect_timeout: float, read_timeout: float, max_body: int,
              ssl_context: ssl.SSLContext | None = None, now: dt.datetime | None = None) -> dict[str, Any]:
    """One request; returns the record to store (never raises for site failures)."""
    if isinstance(check, dict):
        check = Check(**check)
    record: dict[str, Any] = {
        "check": check.name, "url": check.url, "checked_at": now or dt.datetime.now(dt.timezone.utc),
        "expected_status": check.expected_status, "status_code": None, "ok": False,
        "latency_ms": None, "tls_expires_at": None, "tls_days_left": None,
        "content_match": None, "error": None,
    }
    try:
        parts = urlsplit(check.url)
        port = parts.port
    except ValueError as exc:
        record["error"] = f"invalid URL: {exc}"
        return record
    if parts.scheme not in ("http", "https"):
        record["error"] = f"invalid URL: scheme must be http or https, got {parts.scheme or 'none'!r}"
        return record
    if not parts.hostname:
        record["error"] = "invalid URL: no host"
        return record
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    start = time.monotonic()
    conn: http.client.HTTPConnection | None = None
    try:
        if parts.scheme == "https":
            context = ssl_context or ssl.create_default_context()
            conn = http.client.HTTPSConnection(parts.hostname, port, timeout=connect_timeout, context=context)
        else:
            conn = http.client.HTTPConnection(parts.hostname, port, timeout=connect_timeout)
        conn.connect()  # DNS + TCP (+ TLS handshake) under the connect timeout
        conn.sock.settimeout(read_timeout)
        if parts.scheme == "https":
            cert = conn.sock.getpeercert()
            if cert and cert.get("notAfter"):
                expires = dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(cert["notAfter"]), dt.timezone.utc)
                record["tls_expires_at"] = expires
                record["tls_days_left"] = round((expires - record["checked_at"]).total_seconds() / 86400, 2)
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.putheader("User-Agent", "celery-stack-webcheck/1")
        conn.putheader("Accept-Encoding", "identity")
        conn.putheader("Connection", "close")
        conn.endheaders()
        response = conn.getresponse()
        record["status_code"] = response.status
        deadline = start + connect_timeout + read_timeout
        body = b""
        if check.contains is not None:
            while len(body) < max_body:
                if time.monotonic() > deadline:
                    raise socket.timeout("body not received within the read timeout")
                chunk = response.read(min(65536, max_body - len(body)))
                if not chunk:
                    break
                body += chunk
        record["latency_ms"] = round((time.monotonic() - start) * 1000, 1)
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
    except ssl.SSLCertVerificationError as exc:
        record["error"] = f"TLS certificate verification failed: {exc.verify_message or exc}"
    except ssl.SSLError as exc:
        record["error"] = f"TLS error: {exc.reason or exc}"
    except socket.gaierror as exc:
        record["error"] = f"DNS lookup failed for {parts.hostname}: {exc.strerror or exc}"
    except (socket.timeout, TimeoutError) as exc:
        phase = "connect" if record["status_code"] is None and conn is not None and conn.sock is None else "read"
        limit = connect_timeout if phase == "connect" else read_timeout
        record["error"] = f"timeout ({phase}, {limit} s): {exc}" if str(exc) else f"timeout ({phase}, {limit} s)"
    except ConnectionRefusedError:
        record["error"] = f"connection refused by {parts.hostname}:{port or (443 if parts.scheme == 'https' else 80)}"
    except (OSError, http.client.HTTPException) as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if conn is not None:
            conn.close()
        if record["latency_ms"] is None and record["status_code"] is None:
            record["latency_ms"] = round((time.monotonic() - start) * 1000, 1)
    return record

