"""Website checks may not reach internal addresses, and may not take longer than their deadline.

Servers run on 127.0.0.1; the positive cases allow 127.0.0.1/32 only, so a
redirect to 127.0.0.2 is as refused as one to the cloud metadata address.
"""

import http.server
import ipaddress
import socket
import threading
import time

import pytest

from celery_stack_app import webcheck_net
from celery_stack_app.webcheck import MAX_REDIRECTS, run_check
from celery_stack_app.webcheck_net import AddressPolicy, address_class

LOOPBACK_ALLOWED = AddressPolicy.from_entries(["127.0.0.1/32"])
LIMITS = dict(connect_timeout=2.0, read_timeout=1.0, max_body=4096)


class Handler(http.server.BaseHTTPRequestHandler):
    """/ok answers 200; /to?URL redirects there; /loop redirects to itself."""

    hits: list[str] = []

    def do_GET(self):
        Handler.hits.append(self.path)
        if self.path.startswith("/to?"):
            self.send_response(302)
            self.send_header("Location", self.path[len("/to?"):])
        elif self.path.startswith("/loop"):
            self.send_response(301)
            self.send_header("Location", "/loop")
        else:
            self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


@pytest.fixture()
def hits():
    Handler.hits.clear()
    return Handler.hits


def check(url, **kw):
    return {"name": "t", "url": url, "interval": 60, "expected_status": 200, "contains": None, **kw}


def fake_dns(monkeypatch, answers):
    """Replace the resolver: host name -> address (anything else is an error)."""
    def resolve(host, port):
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        ip = ipaddress.ip_address(answers[host])
        family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
        return [(family, socket.SOCK_STREAM, 6, "", (str(ip), port))]
    monkeypatch.setattr(webcheck_net, "resolve", resolve)


# ---- the address classes ---------------------------------------------------

@pytest.mark.parametrize("address,expected", [
    ("127.0.0.1", "loopback"), ("127.0.0.2", "loopback"), ("::1", "loopback"),
    ("10.1.2.3", "private (RFC 1918)"), ("172.16.0.1", "private (RFC 1918)"),
    ("192.168.1.1", "private (RFC 1918)"),
    ("169.254.169.254", "cloud metadata"), ("fd00:ec2::254", "cloud metadata"),
    ("169.254.170.2", "cloud metadata"), ("100.100.100.200", "cloud metadata"),
    ("169.254.1.1", "link-local"), ("fe80::1", "link-local"), ("fe80::1%2", "link-local"),
    ("fc00::1", "unique-local (RFC 4193)"), ("fd12:3456::1", "unique-local (RFC 4193)"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"), ("100.64.0.1", "carrier-grade NAT (RFC 6598)"),
    ("::ffff:127.0.0.1", "IPv4-mapped loopback"), ("::ffff:10.0.0.1", "IPv4-mapped private (RFC 1918)"),
    ("::ffff:169.254.169.254", "IPv4-mapped cloud metadata"),
    ("2002:a00:1::", "6to4 private (RFC 1918)"), ("64:ff9b::7f00:1", "NAT64 loopback"),
    ("192.0.2.1", "special-purpose (not globally routable)"),
    ("8.8.8.8", None), ("2606:4700:4700::1111", None), ("::ffff:8.8.8.8", None),
])
def test_address_classes(address, expected):
    assert address_class(ipaddress.ip_address(address)) == expected


def test_allow_list_networks_and_names():
    policy = AddressPolicy.from_entries(["10.0.0.0/8", "::ffff:0:0/96", "Intranet.Example."])
    policy.check_address("anything", ipaddress.ip_address("10.9.8.7"))
    policy.check_address("intranet.example", ipaddress.ip_address("192.168.1.1"))
    with pytest.raises(webcheck_net.Refused, match=r"192\.168\.1\.1 \(private \(RFC 1918\) address\)"):
        policy.check_address("other.example", ipaddress.ip_address("192.168.1.1"))
    # a name entry never opens the metadata service; a network entry containing it does
    with pytest.raises(webcheck_net.Refused, match="cloud metadata"):
        policy.check_address("intranet.example", ipaddress.ip_address("169.254.169.254"))
    AddressPolicy.from_entries(["169.254.169.254"]).check_address("x", ipaddress.ip_address("169.254.169.254"))
    # an IPv4 network entry covers the IPv4-mapped form of its addresses
    policy.check_address("x", ipaddress.ip_address("::ffff:10.1.1.1"))


# ---- refusals are recorded failures ----------------------------------------

def test_loopback_is_refused_by_default(server, hits):
    r = run_check(check(f"http://127.0.0.1:{server}/ok"), **LIMITS)
    assert not r["ok"] and r["status_code"] is None and r["refused"] == "loopback"
    assert r["error"] == "refused: 127.0.0.1 (loopback address), not in CELERY_STACK_WEBCHECK_ALLOW"
    assert hits == [], "the refused server must never see a request"
    r = run_check(check(f"http://127.0.0.1:{server}/ok"), policy=LOOPBACK_ALLOWED, **LIMITS)
    assert r["ok"] and r["refused"] is None and hits == ["/ok"]


def test_localhost_is_refused(server, hits):
    r = run_check(check(f"http://localhost:{server}/ok"), **LIMITS)
    assert not r["ok"] and r["refused"] == "loopback" and r["error"].startswith("refused: localhost -> ")
    assert hits == []


def test_a_name_resolving_to_a_private_address_is_refused(monkeypatch):
    fake_dns(monkeypatch, {"intranet.example": "10.20.30.40", "rebound.example": "::ffff:127.0.0.1"})
    r = run_check(check("http://intranet.example/"), **LIMITS)
    assert r["refused"] == "private (RFC 1918)" and "intranet.example -> 10.20.30.40" in r["error"]
    r = run_check(check("http://rebound.example/"), **LIMITS)
    assert r["refused"] == "IPv4-mapped loopback"


def test_an_allowed_name_reaches_its_address_but_not_the_metadata_service(monkeypatch, server, hits):
    fake_dns(monkeypatch, {"status.internal": "127.0.0.1", "sneaky.internal": "169.254.169.254"})
    policy = AddressPolicy.from_entries(["status.internal", "sneaky.internal"])
    r = run_check(check(f"http://status.internal:{server}/ok"), policy=policy, **LIMITS)
    assert r["ok"], r["error"]
    r = run_check(check("http://sneaky.internal/"), policy=policy, **LIMITS)
    assert r["refused"] == "cloud metadata" and not r["ok"]


def test_metadata_names_are_refused_before_dns(monkeypatch):
    def no_dns(host, port):
        raise AssertionError(f"{host} must not be resolved")
    monkeypatch.setattr(webcheck_net, "resolve", no_dns)
    r = run_check(check("http://metadata.google.internal/computeMetadata/v1/"), **LIMITS)
    assert r["refused"] == "cloud metadata"
    assert r["error"] == ("refused: metadata.google.internal (cloud metadata name), "
                          "not in CELERY_STACK_WEBCHECK_ALLOW")


# ---- redirects: every hop is checked -----------------------------------------

@pytest.mark.parametrize("target,reason", [
    ("http://127.0.0.2:{port}/ok", "loopback"),
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ("http://[::ffff:127.0.0.2]:{port}/ok", "IPv4-mapped loopback"),
    ("http://10.0.0.1/", "private (RFC 1918)"),
])
def test_a_redirect_to_an_internal_address_is_refused(server, hits, target, reason):
    target = target.format(port=server)
    r = run_check(check(f"http://127.0.0.1:{server}/to?{target}", follow_redirects=True),
                  policy=LOOPBACK_ALLOWED, **LIMITS)
    assert not r["ok"] and r["refused"] == reason, r["error"]
    assert r["redirects"] == [target] and r["error"].endswith(f"(redirect to {target})")
    assert hits == [f"/to?{target}"], "only the allowed server was asked"


def test_redirects_are_followed_when_asked_and_bounded(server, hits):
    url = f"http://127.0.0.1:{server}/to?/ok"
    r = run_check(check(url, follow_redirects=True), policy=LOOPBACK_ALLOWED, **LIMITS)
    assert r["ok"] and r["status_code"] == 200 and r["redirects"] == [f"http://127.0.0.1:{server}/ok"]
    r = run_check(check(url), policy=LOOPBACK_ALLOWED, **LIMITS)  # not followed by default
    assert r["status_code"] == 302 and r["redirects"] == [] and "unexpected status 302" in r["error"]
    r = run_check(check(f"http://127.0.0.1:{server}/loop", follow_redirects=True), policy=LOOPBACK_ALLOWED, **LIMITS)
    assert r["error"] == f"too many redirects (more than {MAX_REDIRECTS})" and len(r["redirects"]) == MAX_REDIRECTS
    r = run_check(check(f"http://127.0.0.1:{server}/to?ftp://example.org/", follow_redirects=True),
                  policy=LOOPBACK_ALLOWED, **LIMITS)
    assert r["error"].startswith("invalid redirect to 'ftp://example.org/': scheme must be http or https")


# ---- the total deadline ------------------------------------------------------

class Drip:
    """A server that answers one byte every ``pause`` seconds: in the headers, or in the body."""

    def __init__(self, where: str, pause: float = 0.1):
        self.where, self.pause = where, pause
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn):
        with conn:
            try:
                conn.recv(65536)
                if self.where == "headers":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Drip: ")
                else:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
                while not self.stop.is_set():
                    conn.sendall(b"x")
                    time.sleep(self.pause)
            except OSError:
                pass  # the client gave up: that is the point

    def close(self):
        self.stop.set()
        self.listener.close()


@pytest.mark.parametrize("where,phase", [("headers", "response headers"), ("body", "response body")])
def test_a_dripping_server_ends_at_the_deadline(where, phase):
    drip = Drip(where)
    try:
        began = time.monotonic()
        # each byte comes well within the read timeout: only the deadline can end this
        r = run_check(check(f"http://127.0.0.1:{drip.port}/", contains="never"), connect_timeout=2.0,
                      read_timeout=5.0, max_body=10_000_000, deadline=1.0, policy=LOOPBACK_ALLOWED)
        elapsed = time.monotonic() - began
    finally:
        drip.close()
    assert not r["ok"] and r["error"] == f"timeout (deadline, 1.0 s) during the {phase}"
    assert elapsed < 1.0 + 4.0, "the worker thread was held past the deadline"


# ---- through the task: recorded, never retried, never raised -------------------

class Recorder:
    def __init__(self):
        self.records = {}

    def reserve_host_slot(self, host, interval):
        return 0.0

    def record_check(self, task_id, doc):
        self.records[task_id] = doc


def test_the_task_records_a_refusal_and_a_deadline_as_failures(monkeypatch, server):
    from celery_stack_app import storage, tasks
    from celery_stack_app.settings import Settings

    recorder = Recorder()
    monkeypatch.setattr(tasks, "settings", Settings(mongodb_uri="mongodb://unused", webcheck_deadline=1.0))
    monkeypatch.setattr(storage, "get_storage", lambda settings: recorder)
    monkeypatch.setattr(tasks.check_website, "retry", lambda *a, **kw: pytest.fail("a refusal is not retried"))
    r = tasks.check_website.run(check(f"http://127.0.0.1:{server}/ok", name="refused"))
    assert r["refused"] == "loopback" and recorder.records["refused"]["error"].startswith("refused: 127.0.0.1")

    drip = Drip("headers")
    monkeypatch.setattr(tasks, "settings", Settings(mongodb_uri="mongodb://unused", webcheck_deadline=1.0,
                                                    webcheck_allow=("127.0.0.1/32",)))
    try:
        r = tasks.check_website.run(check(f"http://127.0.0.1:{drip.port}/", name="drip"))
    finally:
        drip.close()
    assert recorder.records["drip"]["error"] == "timeout (deadline, 1.0 s) during the response headers"
