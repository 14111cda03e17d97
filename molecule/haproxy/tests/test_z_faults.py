"""Faults, run last: broken changes are refused, a node goes away."""

from __future__ import annotations

import pytest

from haproxy_helpers import (
    amqp_connection,
    delete_queue,
    get_one,
    new_queue_name,
    publish,
    run_playbook,
    server_states,
    wait_until,
)

pytestmark = pytest.mark.disruptive

LIVE_FILES = "find /etc/haproxy /etc/default/haproxy -type f -print0 | sort -z | xargs -0 sha256sum"


def _snapshot(host):
    return {
        "files": host.check_output(LIVE_FILES),
        "master": host.check_output("systemctl show -p MainPID --value haproxy"),
    }


def _still_serves(lb_address, app_credentials):
    queue = new_queue_name("haproxy-fault")
    with amqp_connection(lb_address, 5672, app_credentials) as conn:
        publish(conn, queue, ["still serving"])
        assert get_one(conn, queue) == "still serving"
        delete_queue(conn, queue)


@pytest.mark.parametrize(
    ("playbook", "failed_task"),
    [
        ("playbooks/broken_config.yml", "Write haproxy.cfg"),
        ("playbooks/broken_route.yml", "Write the backend of route broken"),
    ],
)
def test_invalid_change_is_rejected_and_haproxy_keeps_serving(
    node, lb, lb_address, app_credentials, playbook, failed_task
):
    haproxy = node(lb)
    before = _snapshot(haproxy)
    result = run_playbook(playbook)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert failed_task in output
    assert "failed to validate" in output
    assert "unknown keyword 'no-such-keyword'" in output
    # Nothing live changed, HAProxy was neither restarted nor reloaded.
    assert _snapshot(haproxy) == before
    assert haproxy.service("haproxy").is_running
    _still_serves(lb_address, app_credentials)


def test_publishing_survives_a_stopped_broker(
    node, stats, lb, brokers, address, lb_address, app_credentials
):
    stopped, survivor = brokers[-1], brokers[0]
    queues = []
    node(stopped).check_output("systemctl stop rabbitmq-server")
    try:
        # Poll the stats page until the health checks took the node out.
        wait_until(
            lambda: server_states(stats(), "be_rabbitmq_amqp").get(stopped) == "DOWN",
            what=f"{stopped} marked DOWN",
        )
        assert server_states(stats(), "be_rabbitmq_amqp")[survivor] == "UP"
        # Several new connections: every one lands on the surviving node.
        for attempt in range(4):
            queue = new_queue_name("haproxy-failover")
            with amqp_connection(lb_address, 5672, app_credentials) as conn:
                publish(conn, queue, [f"failover {attempt}"])
            queues.append(queue)
        with amqp_connection(address(survivor), 5672, app_credentials) as conn:
            for attempt, queue in enumerate(queues):
                assert get_one(conn, queue) == f"failover {attempt}"
                delete_queue(conn, queue)
        journal = node(lb).check_output("journalctl -t haproxy --no-pager -o cat")
        assert f"be_rabbitmq_amqp/{stopped} is DOWN" in journal
    finally:
        node(stopped).run("systemctl start rabbitmq-server")
    wait_until(
        lambda: server_states(stats(), "be_rabbitmq_amqp").get(stopped) == "UP",
        timeout=180,
        what=f"{stopped} back UP",
    )
