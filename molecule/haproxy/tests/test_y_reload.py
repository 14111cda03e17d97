"""Changes reload HAProxy (hitless): established AMQP connections keep working."""

from __future__ import annotations

import json

import pytest

from haproxy_helpers import (
    amqp_connection,
    delete_queue,
    get_one,
    http_get,
    new_queue_name,
    publish,
    run_playbook,
    server_states,
    wait_until,
)

pytestmark = pytest.mark.disruptive


def _master(host) -> str:
    return host.check_output("systemctl show -p MainPID --value haproxy")


def test_reload_keeps_established_amqp_connections(node, lb, lb_address, app_credentials):
    haproxy = node(lb)
    queue = new_queue_name("haproxy-reload")
    with amqp_connection(lb_address, 5672, app_credentials) as established:
        publish(established, queue, ["before reload"])
        master = _master(haproxy)
        haproxy.check_output("systemctl reload haproxy")
        assert haproxy.service("haproxy").is_running
        # Same master (no restart), and the connection opened before the
        # reload still carries traffic.
        assert _master(haproxy) == master
        publish(established, queue, ["after reload"])
        with amqp_connection(lb_address, 5672, app_credentials) as fresh:
            assert get_one(fresh, queue) == "before reload"
            assert get_one(fresh, queue) == "after reload"
            delete_queue(fresh, queue)


def test_route_added_and_removed_by_reload(node, lb, lb_address, app_credentials, admin_credentials, stats, brokers):
    """tasks_from http_route adds then removes a route; each change is a reload."""
    haproxy = node(lb)
    queue = new_queue_name("haproxy-route-reload")
    with amqp_connection(lb_address, 5672, app_credentials) as established:
        master = _master(haproxy)

        added = run_playbook("playbooks/extra_route.yml", "-e", "route_state=present")
        assert added.returncode == 0, added.stdout + added.stderr
        assert "RUNNING HANDLER [haproxy : Reload haproxy]" in added.stdout
        wait_until(
            lambda: server_states(stats(), "be_route_extra") == {b: "UP" for b in brokers},
            what="the new route's servers UP",
        )
        status, _, body = http_get(f"http://{lb_address}/extra/api/overview", admin_credentials)
        assert status == 200
        assert json.loads(body)["cluster_name"] == "celery-stack-haproxy"

        removed = run_playbook("playbooks/extra_route.yml", "-e", "route_state=absent")
        assert removed.returncode == 0, removed.stdout + removed.stderr
        assert not haproxy.file("/etc/haproxy/conf.d/50-route-extra.cfg").exists
        assert "route extra" not in haproxy.file("/etc/haproxy/maps/http_routes.map").content_string
        wait_until(lambda: ("be_route_extra", "BACKEND") not in stats(), what="the route gone")

        # Both changes were reloads: same master, the connection still works.
        assert _master(haproxy) == master
        publish(established, queue, ["after two reloads"])
        assert get_one(established, queue) == "after two reloads"
        delete_queue(established, queue)
