"""Rolling changes (disruptive, last): under a steady stream of tasks published
through HAProxy with publisher confirms, site.yml is converged with a RabbitMQ
setting changed and a new release of the application. The brokers restart
one at a time (quorum check, HAProxy drain, maintenance mode, restart, wait,
revive), then the worker hosts' pools one host at a time (each answering
ping before the next stops). From the journals, no broker and no worker host
stops before the previous one started again; every confirmed task is
executed; no queue's consumption stands still longer than one host's pool
restart (measured from the executions themselves: the stream feeds both
queues); HAProxy's servers are all UP afterwards; a second converge changes
nothing. Figures in .cache/cluster/rolling-restart.json.

The management API's consumer counts are reported beside, not asserted on:
a quorum queue's counts come from its leader's periodic metrics, so they lag
a leader move by up to the statistics interval."""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import time

import pytest
from cluster_helpers import VHOST, podman

pytestmark = pytest.mark.disruptive
QUEUES = ("short", "long")
POOL_UNITS = [f"celery-worker-{queue}.service" for queue in QUEUES]
BROKER_UNIT = "rabbitmq-server.service"
# Celery's consumer, once connected: "[<time>: INFO/MainProcess] Connected to amqp://user:**@host:5672/vhost".
CONNECTED = re.compile(r"\bConnected to \w+://")
# HAProxy's runtime API: the CSV of `show stat` (field 17 is the status).
SHOW_STAT = (
    "import socket; s = socket.socket(socket.AF_UNIX); s.connect('/run/haproxy/admin.sock');"
    " s.sendall(b'show stat\\n'); print(b''.join(iter(lambda: s.recv(65536), b'')).decode())"
)


def next_release(tmp_path_factory) -> str:
    """A copy of the application's source with one changed line: a new release."""
    source = pathlib.Path(__file__).parents[3] / "app"
    target = tmp_path_factory.mktemp("release") / "app"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist"))
    init = target / "src" / "celery_stack_app" / "__init__.py"
    init.write_text(init.read_text() + f"\n# release rolled out by {__name__}\n")
    return str(target)


def windows_of(unit_events, hosts, units, since) -> dict[str, tuple[float, float]]:
    """Per host, (first stop, last start) of ``units``; each unit stopped and started once."""
    windows = {}
    for host in hosts:
        events = unit_events(host, units, since)
        for unit in units:
            assert [kind for _, u, kind in events if u == unit] == ["stop", "start"], (host, unit, events)
        windows[host] = (events[0][0], events[-1][0])
    return windows


def reconnects(workers, units, since) -> dict[str, list[float]]:
    """Per host/unit, the seconds from each "Connection to broker lost" to the
    pool's next "Connected to" (Celery's consumer log lines; a pool restarted
    in between counts until its new process connected)."""
    found: dict[str, list[float]] = {}
    for host in workers:
        argv = ["exec", host, "journalctl", "-o", "json", "--no-pager", "--since", f"@{int(since)}"]
        for unit in units:
            argv += ["-u", unit]
        lost: dict[str, float] = {}
        for line in podman(*argv, timeout=120).stdout.splitlines():
            entry = json.loads(line)
            message, unit = str(entry.get("MESSAGE", "")), entry.get("_SYSTEMD_UNIT", "")
            at = int(entry["__REALTIME_TIMESTAMP"]) / 1e6
            if "Connection to broker lost" in message:
                lost.setdefault(unit, at)
            elif CONNECTED.search(message) and unit in lost:
                found.setdefault(f"{host}/{unit}", []).append(round(at - lost.pop(unit), 2))
        found.update({f"{host}/{unit}": [-1.0] for unit in lost})  # lost and never back: fails below
    return found


def overlaps(windows) -> list[tuple[str, str]]:
    order = sorted(windows, key=lambda h: windows[h][0])
    return [(a, b) for a, b in zip(order, order[1:]) if windows[b][0] < windows[a][1]]


def test_setting_and_release_roll_brokers_then_pools_without_loss(
        brokers, workers, lb, management, converge, steady_stream, sampler, unit_events, tmp_path_factory):
    release = next_release(tmp_path_factory)
    args = ("-e", "rabbitmq_heartbeat=45", "-e", f"local_app_dir={release}")

    def consumers():
        counts = {}
        for queue in QUEUES:
            status, body = management("GET", f"/queues/{VHOST}/{queue}")
            if status != 200:
                return None  # the API itself was on a restarting node: unknown, not zero
            counts[queue] = body.get("consumers", 0)
        return counts

    stream = steady_stream("rolling", QUEUES)
    since = time.time()
    before = stream.confirmed_at_least(200, 180, "the stream to get going")
    watch = sampler(consumers)
    started, began = time.monotonic(), time.time()
    result = converge(*args)
    converge_seconds, ended = round(time.monotonic() - started, 1), time.time()
    watch.stop()
    assert result.returncode == 0, result.tail
    during = stream.confirmed_at_least(before + 100, 300, "the stream to go on after the restarts")

    broker_windows = windows_of(unit_events, brokers, [BROKER_UNIT], since)
    pool_windows = windows_of(unit_events, workers, POOL_UNITS, since)
    for host in brokers:
        conf = podman("exec", host, "cat", "/etc/rabbitmq/rabbitmq.conf").stdout
        assert "heartbeat = 45" in conf, host
        status = json.loads(podman("exec", host, "rabbitmqctl", "-q", "cluster_status", "--formatter", "json").stdout)
        assert set(status["running_nodes"]) == {f"rabbit@{b}" for b in brokers}, host
    stat = podman("exec", lb, "python3", "-c", SHOW_STAT)
    servers = {(row.split(",")[0], row.split(",")[1]): row.split(",")[17]
               for row in stat.stdout.splitlines() if row and not row.startswith("#")
               and row.split(",")[1] in brokers}
    longest_pool_restart = max(end - begin for begin, end in pool_windows.values())
    reported_gaps = {queue: watch.longest_run(lambda counts, q=queue: counts[q] == 0) for queue in QUEUES}
    read = [counts for _, counts in watch.samples if counts is not None]
    pauses = stream.longest_pauses(began, ended)
    back = reconnects(workers, POOL_UNITS, since)

    again = converge(*args)
    changed = again.changed
    figures = stream.finish("rolling-restart", {
        "converge_seconds": converge_seconds,
        "broker_down_seconds": {h: round(e - b, 1) for h, (b, e) in broker_windows.items()},
        "pool_restart_seconds": {h: round(e - b, 1) for h, (b, e) in pool_windows.items()},
        "broker_order": sorted(broker_windows, key=lambda h: broker_windows[h][0]),
        "worker_order": sorted(pool_windows, key=lambda h: pool_windows[h][0]),
        "longest_consumption_pause_seconds": pauses,
        "pool_reconnect_seconds": back,
        "management_reported_without_consumer_seconds": reported_gaps,
        "consumer_samples": len(read), "unreadable_consumer_samples": len(watch.samples) - len(read),
        "confirmed_before_converge": before, "confirmed_by_end_of_converge_at_least": during - before,
        "haproxy_servers_after": {f"{b}/{s}": st for (b, s), st in servers.items()},
        "second_converge_changed": changed,
    })
    assert not overlaps(broker_windows), f"brokers were down at the same time: {broker_windows}"
    assert not overlaps(pool_windows), f"worker hosts restarted their pools at the same time: {pool_windows}"
    assert servers and set(servers.values()) == {"UP"}, servers
    assert len(read) > 10, f"the consumer counts were read {len(read)} times only"
    # Every pool that lost its broker connection (its node drained) got one back.
    assert all(seconds >= 0 for each in back.values() for seconds in each), back
    # No queue's consumption stood still longer than one host's pool restart,
    # broker restarts included. The slack is the stream's own share of a
    # pause: its publishing interval and its longest wait for a confirm.
    slack = 2 * len(QUEUES) / float(stream.RATE) + figures["longest_confirm_wait_seconds"]
    assert all(pause <= longest_pool_restart + slack for pause in pauses.values()), (
        pauses, longest_pool_restart, slack)
    assert again.returncode == 0, again.tail
    assert changed and set(changed.values()) == {0}, changed
