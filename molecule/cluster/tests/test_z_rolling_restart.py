"""Rolling broker restart (disruptive): a RabbitMQ setting changes and
site.yml is converged on the brokers under a steady stream of tasks
published through HAProxy with publisher confirms. The role restarts the
nodes one at a time (quorum check, HAProxy drain, maintenance mode, restart,
wait, revive): from the nodes' journals, no node stops before the previous
one has started again; every confirmed task is executed; the cluster and
HAProxy's servers are whole afterwards. Figures in
.cache/cluster/rolling-restart.json."""

import json
import time

import pytest
from cluster_helpers import podman

pytestmark = pytest.mark.disruptive
# systemd's catalog ids of "Stopping <unit>" and "Started <unit>" messages.
STOPPING = "de5b426a63be47a7b6ac3eaac82e2f6f"
STARTED = "39f53479d3a045ac8e11786248231fbf"
# HAProxy's runtime API: the CSV of `show stat` (field 17 is the status).
SHOW_STAT = (
    "import socket; s = socket.socket(socket.AF_UNIX); s.connect('/run/haproxy/admin.sock');"
    " s.sendall(b'show stat\\n'); print(b''.join(iter(lambda: s.recv(65536), b'')).decode())"
)


def unit_events(host: str, since: float) -> list[tuple[float, str]]:
    """(time, "stop"|"start") of rabbitmq-server's job messages since ``since``."""
    proc = podman("exec", host, "journalctl", "-u", "rabbitmq-server", "-o", "json", "--no-pager",
                  "--since", f"@{int(since)}")
    events = []
    for line in proc.stdout.splitlines():
        entry = json.loads(line)
        kind = {STOPPING: "stop", STARTED: "start"}.get(entry.get("MESSAGE_ID"))
        # journalctl --since has whole seconds: drop what came before ``since``.
        if kind and int(entry["__REALTIME_TIMESTAMP"]) / 1e6 >= since:
            events.append((int(entry["__REALTIME_TIMESTAMP"]) / 1e6, kind))
    return sorted(events)


def test_setting_change_restarts_brokers_one_at_a_time_without_loss(brokers, lb, converge, steady_stream):
    stream = steady_stream("rolling")
    since = time.time()
    before = stream.confirmed_at_least(200, 180, "the stream to get going")
    started = time.monotonic()
    result = converge("--limit", "rabbitmq", "-e", "rabbitmq_heartbeat=45")
    converge_seconds = round(time.monotonic() - started, 1)
    assert result.returncode == 0, result.tail
    during = stream.confirmed_at_least(before + 100, 300, "the stream to go on after the restarts")

    windows = {}
    for host in brokers:
        events = unit_events(host, since)
        assert [kind for _, kind in events] == ["stop", "start"], (host, events)
        windows[host] = (events[0][0], events[1][0])
    order = sorted(brokers, key=lambda h: windows[h][0])
    overlaps = [(a, b) for a, b in zip(order, order[1:]) if windows[b][0] < windows[a][1]]

    for host in brokers:
        conf = podman("exec", host, "cat", "/etc/rabbitmq/rabbitmq.conf").stdout
        assert "heartbeat = 45" in conf, host
        status = json.loads(podman("exec", host, "rabbitmqctl", "-q", "cluster_status", "--formatter", "json").stdout)
        assert set(status["running_nodes"]) == {f"rabbit@{b}" for b in brokers}, host
    stat = podman("exec", lb, "python3", "-c", SHOW_STAT)
    servers = {(row.split(",")[0], row.split(",")[1]): row.split(",")[17]
               for row in stat.stdout.splitlines() if row and not row.startswith("#")
               and row.split(",")[1] in brokers}

    stream.finish("rolling-restart", {
        "converge_seconds": converge_seconds, "restart_order": order,
        "node_down_seconds": {h: round(windows[h][1] - windows[h][0], 1) for h in order},
        "gaps_between_nodes_seconds": [round(windows[b][0] - windows[a][1], 1) for a, b in zip(order, order[1:])],
        "confirmed_before_converge": before, "confirmed_by_end_of_converge_at_least": during - before,
        "haproxy_servers_after": {f"{b}/{s}": st for (b, s), st in servers.items()},
    })
    assert not overlaps, f"nodes were down at the same time: {overlaps}"
    assert servers and set(servers.values()) == {"UP"}, servers
