"""Website checks against servers on loopback (HTTP, HTTPS with a generated cert, a silent one).

Loopback is refused by default (tests/test_webcheck_net.py): these checks allow 127.0.0.1."""

import datetime as dt
import http.server
import socket
import ssl
import subprocess
import threading

import pytest

from celery_stack_app import webcheck
from celery_stack_app.webcheck import CheckConfigError, parse_checks, run_check
from celery_stack_app.webcheck_net import AddressPolicy

LOOPBACK_ALLOWED = AddressPolicy.from_entries(["127.0.0.1"])
LIMITS = dict(connect_timeout=2.0, read_timeout=1.0, max_body=4096, policy=LOOPBACK_ALLOWED)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        status = 500 if self.path.startswith("/broken") else 200
        body = b"<html>hello celery-stack</html>"
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def serve(server):
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    return server


@pytest.fixture(scope="module")
def http_url():
    server = serve(http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler))
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    serve(server)
    yield f"https://127.0.0.1:{server.server_address[1]}", str(cert)
    server.shutdown()


@pytest.fixture()
def silent_port():
    """Accepts connections, never answers: the read timeout must fire."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(5)
    yield s.getsockname()[1]
    s.close()


def check(url, **kw):
    return {"name": "t", "url": url, "interval": 60, "expected_status": 200, "contains": None, **kw}


def test_ok_with_content_match(http_url):
    r = run_check(check(http_url + "/", contains="hello"), **LIMITS)
    assert r["ok"] and r["status_code"] == 200 and r["content_match"] is True
    assert r["error"] is None and r["latency_ms"] >= 0 and r["tls_expires_at"] is None


def test_unexpected_status_and_missing_content(http_url):
    r = run_check(check(http_url + "/broken"), **LIMITS)
    assert not r["ok"] and r["status_code"] == 500 and "unexpected status 500" in r["error"]
    r = run_check(check(http_url + "/", contains="absent text"), **LIMITS)
    assert not r["ok"] and r["content_match"] is False and "not found" in r["error"]
    r = run_check(check(http_url + "/broken", expected_status=500), **LIMITS)
    assert r["ok"]


def test_tls_expiry_is_recorded(tls):
    url, cafile = tls
    ctx = ssl.create_default_context(cafile=cafile)
    r = run_check(check(url + "/"), ssl_context=ctx, **LIMITS)
    assert r["ok"], r["error"]
    assert isinstance(r["tls_expires_at"], dt.datetime)
    assert 29 <= r["tls_days_left"] <= 30.1


def test_untrusted_certificate_is_an_error(tls):
    url, _ = tls
    r = run_check(check(url + "/"), **LIMITS)
    assert not r["ok"] and "TLS certificate verification failed" in r["error"]


def test_read_timeout(silent_port):
    r = run_check(check(f"http://127.0.0.1:{silent_port}/"), **LIMITS)
    assert not r["ok"] and r["error"].startswith("timeout (read")
    assert r["latency_ms"] < 10_000


def test_connection_refused():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run_check(check(f"http://127.0.0.1:{port}/"), **LIMITS)
    assert not r["ok"] and "connection refused" in r["error"]


@pytest.mark.parametrize("url,message", [
    ("ftp://example.org/", "scheme must be http or https"),
    ("example.org", "scheme must be http or https"),
    ("http:///path", "no host"),
    ("http://example.org:99999/", "invalid URL"),
])
def test_bad_urls_are_recorded_errors(url, message):
    r = run_check(check(url), **LIMITS)
    assert not r["ok"] and message in r["error"] and r["status_code"] is None


def test_config_json_and_yaml():
    j = parse_checks('[{"url": "https://a.example/", "interval": 30}, "https://b.example/"]')
    assert [c.url for c in j] == ["https://a.example/", "https://b.example/"]
    assert j[1].interval == webcheck.DEFAULT_INTERVAL and j[1].name == "https://b.example/"
    y = parse_checks("checks:\n- {name: a, url: 'http://a.example', expected_status: 204, contains: ok}\n")
    assert y[0].expected_status == 204 and y[0].contains == "ok"
    assert not y[0].follow_redirects and "follow_redirects" not in y[0].as_kwargs()
    f = parse_checks("- {url: 'http://a.example', follow_redirects: true}")
    assert f[0].follow_redirects and f[0].as_kwargs()["follow_redirects"] is True


@pytest.mark.parametrize("text,message", [
    ('[{"interval": 30}]', "'url' must be a non-empty string"),
    ('[{"url": "http://a", "interval": 1}]', "at least"),
    ('[{"url": "http://a", "expected_status": 999}]', "HTTP status"),
    ('[{"url": "http://a", "colour": "red"}]', "unknown key"),
    ('[{"url": "http://a"}, {"url": "http://a"}]', "duplicate check name"),
    ('[{"url": "http://a", "follow_redirects": "yes"}]', "'follow_redirects' must be true or false"),
    ("{not: [valid", "neither valid JSON nor YAML"),
    ('{"url": "http://a"}', "expected a list"),
])
def test_config_errors_are_clear(text, message):
    with pytest.raises(CheckConfigError, match=message):
        parse_checks(text, source="checks.json")


def test_missing_config_file_names_the_variable(tmp_path):
    with pytest.raises(CheckConfigError, match="CELERY_STACK_WEBCHECK_CONFIG=.*cannot read"):
        webcheck.load_checks(str(tmp_path / "nope.yaml"))


def test_check_task_rate_limits_per_host(monkeypatch, http_url):
    """Without MongoDB the per-process limiter spaces checks of one host."""
    from celery_stack_app import tasks
    from celery_stack_app.settings import Settings

    monkeypatch.setattr(tasks, "settings", Settings(webcheck_host_interval=5.0, webcheck_allow=("127.0.0.1/32",)))
    tasks._local_slots.clear()
    delayed = []
    monkeypatch.setattr(tasks.check_website, "apply_async",
                        lambda *a, **kw: delayed.append(kw["countdown"]))
    first = tasks.check_website.run(check(http_url + "/"))
    assert first["ok"]
    second = tasks.check_website.run(check(http_url + "/other"))
    assert second is None and delayed and 4 <= delayed[0] <= 5
    # a reserved slot runs at once
    assert tasks.check_website.run(check(http_url + "/"), slot_reserved=True)["ok"]
