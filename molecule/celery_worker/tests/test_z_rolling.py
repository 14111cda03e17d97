"""Day two of roles/celery_worker (disruptive, last): a setting change that
rewrites every pool unit and a beat host move, converged on the sample
application's workers. The pools restart one host at a time (each host's
stop-to-start window ends before the next host's begins) while every queue
keeps a consumer, the old beat stops before the new one starts, and a second
converge changes nothing. Figures in .cache/celery_worker/rolling.json."""

from __future__ import annotations

import json
import os
import pathlib
import time

import pytest

from conftest import BROKER
from test_celery_worker import DEFAULTS, GRACE, PREFIX, pools_of

pytestmark = pytest.mark.disruptive
BEAT = DEFAULTS["celery_worker_beat_unit"] + ".service"
QUEUES = ("short", "long")
REPORT = pathlib.Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", ".")) / ".cache" / "celery_worker" / "rolling.json"


def consumer_counts(broker) -> dict[str, int]:
    """Consumers of the sample application's queues, read on the broker."""
    out = broker.check_output("rabbitmqctl -q list_queues -p sample name consumers --formatter json")
    counts = {q["name"]: q["consumers"] for q in json.loads(out)}
    return {queue: counts.get(queue, 0) for queue in QUEUES}


def restart_windows(unit_events, hosts: list[str], units: list[str], since: float) -> dict[str, tuple]:
    """Each host's (first stop, last start) of its pool units since `since`;
    fails unless every unit stopped and started exactly once."""
    windows = {}
    for name in hosts:
        events = unit_events(name, units, since)
        for unit in units:
            kinds = [kind for _, u, kind in events if u == unit]
            assert kinds == ["stop", "start"], (name, unit, events)
        windows[name] = (events[0][0], events[-1][0])
    return windows


def test_setting_change_and_beat_move_roll_one_host_at_a_time(node, inventory, group_hosts, converge, sampler,
                                                            unit_events):
    hosts = group_hosts("celery_worker")
    old_beat, new_beat = hosts[0], hosts[1]
    units = [f"{PREFIX}-{queue}.service" for queue in QUEUES]
    args = ("--limit", "celery_worker", "-e", f"celery_worker_stop_grace={GRACE + 5}",
            "-e", f"celery_worker_beat_host={new_beat}")
    since = time.time()
    watch = sampler(lambda: consumer_counts(node(BROKER)))
    started = time.monotonic()
    result = converge(*args)
    converge_seconds = round(time.monotonic() - started, 1)
    watch.stop()
    read = [counts for _, counts in watch.samples if counts is not None]
    empty = [(at, counts) for at, counts in watch.samples if counts is not None and 0 in counts.values()]
    assert result.returncode == 0, result.tail

    windows = restart_windows(unit_events, hosts, units, since)
    order = sorted(hosts, key=lambda h: windows[h][0])
    overlaps = [(a, b) for a, b in zip(order, order[1:]) if windows[b][0] < windows[a][1]]

    old = unit_events(old_beat, [BEAT], since)
    new = unit_events(new_beat, [BEAT], since)
    assert [kind for _, _, kind in old] == ["stop"], old
    assert [kind for _, _, kind in new] == ["start"], new
    running = [h for h in hosts if node(h).run(f"systemctl is-active {BEAT}").stdout.strip() == "active"]
    assert not node(old_beat).file(f"/etc/systemd/system/{BEAT}").exists

    for name in hosts:
        for pool in pools_of(inventory, name):
            unit = node(name).file(f"/etc/systemd/system/{PREFIX}-{pool['name']}.service").content_string
            assert f"TimeoutStopSec={pool['time_limit'] + GRACE + 5}" in unit, (name, pool["name"])
        assert not node(name).file(f"/run/{PREFIX}.restart-pending").exists, name

    again = converge(*args)
    assert again.returncode == 0, again.tail
    changed = again.changed

    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps({
        "converge_seconds": converge_seconds, "restart_order": order,
        "host_restart_seconds": {h: round(windows[h][1] - windows[h][0], 1) for h in order},
        "gaps_between_hosts_seconds": [round(windows[b][0] - windows[a][1], 1) for a, b in zip(order, order[1:])],
        "beat_stopped_on_old_host_before_start_on_new_seconds": round(new[0][0] - old[0][0], 1),
        "consumer_samples": len(read), "unreadable_samples": len(watch.samples) - len(read),
        "samples_with_a_queue_without_consumer": len(empty),
        "fewest_consumers": {q: min(c[q] for c in read) for q in QUEUES} if read else None,
        "second_converge_changed": changed,
    }, indent=2) + "\n")
    assert not overlaps, f"hosts restarted their pools at the same time: {overlaps}"
    assert old[0][0] < new[0][0], "the new beat started before the old one stopped"
    assert running == [new_beat], f"beat active on {running}"
    assert len(read) > 10, f"the consumer counts were read {len(read)} times only"
    assert not empty, f"queues without a consumer during the rolling restart: {empty[:10]}"
    assert changed and set(changed.values()) == {0}, changed
