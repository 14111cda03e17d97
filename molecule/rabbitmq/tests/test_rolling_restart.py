"""Rolling restarts keep quorum: with one node down, a setting change must not
restart another node (that would leave the quorum queues without a majority):
the run stops with the REFUSED message and restarts nothing. The restart
stays pending on the nodes whose files changed, so once the third node is
back a plain converge restarts every node, one at a time, and each running
node has the new setting.
"""

from __future__ import annotations

import time

import pytest

from conftest import connect

pytestmark = pytest.mark.disruptive
QUEUE = "beta.rolling.kept"
UNIT = "rabbitmq-server.service"



def heartbeat(host) -> str:
    return host.check_output("rabbitmqctl -q eval 'application:get_env(rabbit, heartbeat).'").strip()


def test_quorum_critical_node_is_not_restarted_and_the_restart_stays_pending(node, hosts, address, secret,
                                                                            converge, unit_events):
    with connect(address(hosts[0]), "beta", secret("beta"), "beta", confirm_publish=True) as conn:
        conn.channel().queue_declare(QUEUE, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"})
    down = node(hosts[2])
    down.check_output("systemctl stop rabbitmq-server")
    since = time.time()
    try:
        refused = converge("--limit", f"{hosts[0]},{hosts[1]}",
                           "-e", "rabbitmq_heartbeat=45", "-e", "rabbitmq_restart_timeout=15")
        assert refused.returncode != 0, refused.tail
        assert f"REFUSED: restarting {hosts[0]}" in refused.words, refused.tail
        assert "quorum queues without a majority" in refused.words
        for name in hosts[:2]:
            assert unit_events(name, [UNIT], since) == [], f"{name} was restarted"
            assert heartbeat(node(name)) == "{ok,60}"
            assert node(name).file("/run/celery-stack-rabbitmq.restart-pending").exists, name
    finally:
        down.check_output("systemctl start rabbitmq-server")

    since = time.time()
    applied = converge("-e", "rabbitmq_heartbeat=45")
    assert applied.returncode == 0, applied.tail
    windows = {}
    for name in hosts:
        events = unit_events(name, [UNIT], since)
        assert [kind for _, _, kind in events] == ["stop", "start"], (name, events)
        windows[name] = (events[0][0], events[-1][0])
        assert heartbeat(node(name)) == "{ok,45}", name
        assert not node(name).file("/run/celery-stack-rabbitmq.restart-pending").exists, name
    order = sorted(hosts, key=lambda name: windows[name][0])
    assert all(windows[b][0] >= windows[a][1] for a, b in zip(order, order[1:])), windows

