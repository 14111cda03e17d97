"""roles/flower behind roles/haproxy: authentication, the workers seen
through Flower's API, the broker API user, /metrics closed to anonymous
clients, and the unit's limits."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request

import pytest

from conftest import BROKER, LB, PREFIX


def get(url: str, auth: tuple[str, str] | None = None, timeout: float = 10.0):
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace"), err.headers


def test_anonymous_requests_get_401(base):
    for path in ("/", "/api/workers", "/tasks", "/api/tasks"):
        status, _, headers = get(base + path)
        assert status == 401, f"{path}: {status}"
    # header names are case-insensitive (Tornado sends "Www-Authenticate")
    assert "Basic" in (get(base + "/")[2].get("WWW-Authenticate") or "")


def test_wrong_password_gets_401(base):
    assert get(base + "/api/workers", auth=("ops", "not-the-password"))[0] == 401


def test_credentials_open_flower(base, ops):
    status, body, _ = get(base + "/", auth=ops)
    assert status == 200
    assert "Flower" in body


def test_the_worker_is_online_in_flower(base, ops, group_hosts):
    expected = {f"django@{host}" for host in group_hosts("celery_worker")}
    deadline = time.monotonic() + 90
    online = {}
    while time.monotonic() < deadline:
        status, body, _ = get(base + "/api/workers?status=true", auth=ops)
        assert status == 200, body
        online = json.loads(body)
        if expected <= {name for name, up in online.items() if up}:
            break
        time.sleep(3)
    assert expected <= {name for name, up in online.items() if up}, online


def test_broker_api_lists_queues_with_the_monitoring_user(base, ops):
    """--broker_api works: Flower reads queue lengths from the management
    API with its read-only user (an empty list means the call failed)."""
    deadline = time.monotonic() + 60
    queues = []
    while time.monotonic() < deadline:
        status, body, _ = get(base + "/api/queues/length", auth=ops)
        assert status == 200, body
        queues = json.loads(body).get("active_queues", [])
        if any(q.get("name") == "django" for q in queues):
            break
        time.sleep(3)
    assert any(q.get("name") == "django" and "messages" in q for q in queues), queues


def test_monitoring_user_is_read_only(node):
    out = node(BROKER).run("rabbitmqctl list_users --formatter json -q").stdout
    users = {u["user"]: u["tags"] for u in json.loads(out)}
    assert users.get("flower-monitoring") == ["monitoring"], users
    perms = json.loads(node(BROKER).run(
        "rabbitmqctl list_user_permissions flower-monitoring --formatter json -q").stdout)
    for perm in perms:
        assert (perm["configure"], perm["write"], perm["read"]) == ("^$", "^$", "^$"), perm


def test_metrics_refused_without_credentials(base, ops):
    status, _, headers = get(base + "/metrics")
    assert status == 401
    assert get(base + "/metrics", auth=("ops", "wrong-password"))[0] == 401
    status, body, _ = get(base + "/metrics", auth=ops)
    assert status == 200 and "flower_" in body


def test_flower_port_is_not_reachable_from_outside(address):
    """Flower itself serves /metrics anonymously: it listens on loopback
    only, so the outside reaches it through HAProxy alone."""
    with pytest.raises((urllib.error.URLError, OSError)):
        urllib.request.urlopen(f"http://{address(LB)}:5555{PREFIX}/metrics", timeout=5)


def test_flower_unit_limits_and_state(node):
    host = node(LB)
    props = dict(line.split("=", 1) for line in host.run(
        "systemctl show flower.service --no-pager").stdout.splitlines() if "=" in line)
    assert props["ActiveState"] == "active" and props["UnitFileState"] == "enabled"
    assert int(props["MemoryMax"]) == 512 * 1024 ** 2
    assert props["User"] == "flower"
    argv = props["ExecStart"]
    for expected in ("flower", "--url_prefix=flower", "--persistent=True",
                     "--db=/var/lib/flower/flower.db", "--address=127.0.0.1"):
        assert expected in argv, argv
    # secrets never on the command line
    assert "amqp://" not in argv and "basic_auth" not in argv
    env = host.file("/etc/flower/flower.env")
    assert (env.user, env.group, env.mode) == ("root", "flower", 0o640)
    assert host.run("ls /var/lib/flower").stdout.split()[0].startswith("flower.db")
