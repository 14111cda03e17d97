"""HTTP side: stats page behind credentials, management UI, routes, files."""

from __future__ import annotations

import http.client
import json
import ssl

import pytest

from haproxy_helpers import http_get, server_states, wait_until


def test_stats_page_refuses_anonymous_access(lb_address):
    status, headers, _ = http_get(f"http://{lb_address}:8404/")
    assert status == 401
    assert headers.get("WWW-Authenticate", "").startswith("Basic")


def test_stats_page_refuses_a_wrong_password(lb_address, stats_credentials):
    status, _, _ = http_get(f"http://{lb_address}:8404/", (stats_credentials[0], "wrong-password"))
    assert status == 401


def test_stats_page_answers_with_the_credentials(lb_address, stats_credentials):
    status, _, body = http_get(f"http://{lb_address}:8404/", stats_credentials)
    assert status == 200
    assert "be_rabbitmq_amqp" in body


def test_stats_password_is_stored_hashed(node, lb, stats_credentials):
    users = node(lb).file("/etc/haproxy/conf.d/00-stats-users.cfg")
    assert users.mode == 0o640
    assert stats_credentials[1] not in users.content_string
    assert " password $6$" in users.content_string


def test_management_ui_is_served_through_the_http_frontend(lb_address, stats, brokers):
    wait_until(
        lambda: server_states(stats(), "be_rabbitmq_management") == {b: "UP" for b in brokers},
        what="management backends UP",
    )
    status, _, body = http_get(f"http://{lb_address}/")
    assert status == 200
    assert "RabbitMQ Management" in body


def test_management_api_is_served_through_the_http_frontend(lb_address, admin_credentials):
    status, _, _ = http_get(f"http://{lb_address}/api/overview")
    assert status == 401  # RabbitMQ's own authentication, passed through
    status, _, body = http_get(f"http://{lb_address}/api/overview", admin_credentials)
    assert status == 200
    assert json.loads(body)["cluster_name"] == "celery-stack-haproxy"


def test_route_added_by_another_role_is_served(lb_address, admin_credentials, stats, brokers):
    """tasks_from: http_route published the nodes' API at /probe, prefix stripped."""
    wait_until(
        lambda: server_states(stats(), "be_route_probe") == {b: "UP" for b in brokers},
        what="route backends UP",
    )
    status, _, body = http_get(f"http://{lb_address}/probe/api/overview", admin_credentials)
    assert status == 200
    assert json.loads(body)["cluster_name"] == "celery-stack-haproxy"
    # Requests were counted on the route's backend, not the management one.
    assert int(stats()[("be_route_probe", "BACKEND")]["stot"]) > 0


def test_management_ui_is_served_over_https(lb_address, tls_ca):
    context = ssl.create_default_context(cafile=str(tls_ca))
    context.check_hostname = False  # reached by address; the chain is still verified
    conn = http.client.HTTPSConnection(lb_address, 443, context=context, timeout=10)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.status == 200
        assert "RabbitMQ Management" in response.read().decode()
    finally:
        conn.close()


@pytest.mark.parametrize("path", ["/probex/api/overview", "/api/probe"])
def test_paths_outside_the_prefix_are_not_routed(lb_address, stats, path):
    before = int(stats()[("be_route_probe", "BACKEND")]["stot"])
    http_get(f"http://{lb_address}{path}")
    assert int(stats()[("be_route_probe", "BACKEND")]["stot"]) == before


def test_live_configuration_set_is_valid(node, lb):
    result = node(lb).run("/usr/local/sbin/haproxy-config-check")
    assert result.rc == 0, result.stderr


def test_haproxy_runs_with_conf_d_loaded(node, lb):
    """The running master was started with haproxy.cfg and conf.d."""
    pid = node(lb).check_output("systemctl show -p MainPID --value haproxy")
    cmdline = node(lb).check_output(f"tr '\\0' ' ' < /proc/{pid}/cmdline")
    assert "-f /etc/haproxy/haproxy.cfg -f /etc/haproxy/conf.d" in cmdline
