"""Security from outside the cluster: nobody anonymous, no guest, one vhost per app user."""

import amqp
import pytest
from cluster_helpers import APP_USER, VHOST, http


@pytest.mark.parametrize("password", ["guest", "not-the-password"])
def test_guest_is_refused_through_haproxy(amqp_connect, password):
    with pytest.raises((amqp.exceptions.AccessRefused, amqp.exceptions.ConnectionForced)):
        amqp_connect("guest", password, "/").close()


def test_app_user_reaches_its_own_vhost(amqp_connect, app_password):
    conn = amqp_connect(APP_USER, app_password, VHOST)
    try:
        assert conn.connected
    finally:
        conn.close()


def test_app_user_cannot_reach_another_vhost(amqp_connect, app_password, management):
    other = "cluster-test-other"
    status, _ = management("PUT", f"/vhosts/{other}", body={})
    assert status in (201, 204)
    try:
        with pytest.raises((amqp.exceptions.NotAllowed, amqp.exceptions.AccessRefused)):
            amqp_connect(APP_USER, app_password, other).close()
    finally:
        management("DELETE", f"/vhosts/{other}")


def test_app_user_has_no_management_access(lb_address, app_password):
    status, _ = http("GET", f"http://{lb_address}/api/overview", auth=(APP_USER, app_password))
    assert status == 401


@pytest.mark.parametrize("path", ["/flower/", "/flower/api/workers", "/flower/metrics", "/flower/workers"])
def test_flower_refuses_anonymous_and_wrong_credentials(lb_address, path):
    assert http("GET", f"http://{lb_address}{path}")[0] == 401
    assert http("GET", f"http://{lb_address}{path}", auth=("admin", "wrong-password-123"))[0] == 401


def test_flower_admits_its_user(lb_address, secret):
    status, body = http("GET", f"http://{lb_address}/flower/", auth=("admin", secret("flower_admin_password")))
    assert status == 200
    assert "Flower" in body


@pytest.mark.parametrize("path", ["/api/overview", "/api/queues", "/api/whoami"])
def test_management_api_refuses_anonymous(lb_address, path):
    assert http("GET", f"http://{lb_address}{path}")[0] == 401


def test_haproxy_stats_refuse_anonymous(lb_address, secret):
    assert http("GET", f"http://{lb_address}:8404/")[0] == 401
    assert http("GET", f"http://{lb_address}:8404/", auth=("stats", "wrong-password-123"))[0] == 401
    status, body = http("GET", f"http://{lb_address}:8404/", auth=("stats", secret("haproxy_stats_password")))
    assert status == 200 and "Statistics" in body
