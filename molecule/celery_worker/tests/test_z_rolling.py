"""Day two of roles/rabbitmq and roles/celery_worker (disruptive, last): one
converge carries a setting change that rewrites every pool unit, a beat host
move and a rotated broker password of the sample application (a new value
in the secret store), while a producer connected before the change keeps
publishing confirmed health tasks. The broker takes the new password and
refuses the old one; the pools restart one host at a time (each host's
stop-to-start window ends before the next host's begins) with the new URL
while every queue keeps a consumer; every confirmed task is answered; the
old beat stops before the new one starts; a second converge changes
nothing. Figures in .cache/celery_worker/rolling.json."""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import string
import time

import pytest

from conftest import APPS, BROKER
from health_stream import HealthStream
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


def test_setting_change_beat_move_and_password_rotation_roll_one_host_at_a_time(
        node, inventory, group_hosts, secret, address, client, converge, sampler, unit_events, amqp_login):
    hosts = group_hosts("celery_worker")
    old_beat, new_beat = hosts[0], hosts[1]
    units = [f"{PREFIX}-{queue}.service" for queue in QUEUES]
    store = pathlib.Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "secrets" / APPS["sample"]["secret"]
    url = f"amqp://sample:{{}}@{address(BROKER)}:5672/sample".format
    old = secret(APPS["sample"]["secret"])
    new = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(24))
    args = ("--limit", "rabbitmq:celery_worker", "-e", f"celery_worker_stop_grace={GRACE + 5}",
            "-e", f"celery_worker_beat_host={new_beat}")

    stream = HealthStream(url(old), client("sample"))
    stream.start()
    time.sleep(3)
    since = time.time()
    store.write_text(new)
    watch = sampler(lambda: consumer_counts(node(BROKER)))
    started = time.monotonic()
    result = converge(*args)
    converge_seconds = round(time.monotonic() - started, 1)
    watch.stop()
    stream.stop()
    read = [counts for _, counts in watch.samples if counts is not None]
    empty = [(at, counts) for at, counts in watch.samples if counts is not None and 0 in counts.values()]
    assert result.returncode == 0, result.tail

    windows = restart_windows(unit_events, hosts, units, since)
    order = sorted(hosts, key=lambda h: windows[h][0])
    overlaps = [(a, b) for a, b in zip(order, order[1:]) if windows[b][0] < windows[a][1]]
    old_accepted, new_accepted = amqp_login(url(old)), amqp_login(url(new))
    lost = stream.confirmed - stream.answered

    old_events = unit_events(old_beat, [BEAT], since)
    new_events = unit_events(new_beat, [BEAT], since)
    assert [kind for _, _, kind in old_events] == ["stop"], old_events
    assert [kind for _, _, kind in new_events] == ["start"], new_events
    running = [h for h in hosts if node(h).run(f"systemctl is-active {BEAT}").stdout.strip() == "active"]
    assert not node(old_beat).file(f"/etc/systemd/system/{BEAT}").exists

    for name in hosts:
        for pool in pools_of(inventory, name):
            unit = node(name).file(f"/etc/systemd/system/{PREFIX}-{pool['name']}.service").content_string
            assert f"TimeoutStopSec={pool['time_limit'] + GRACE + 5}" in unit, (name, pool["name"])
        assert not node(name).file(f"/run/{PREFIX}.restart-pending").exists, name
    # The restarted pools can only consume with the new password.
    deadline = time.monotonic() + 60
    while 0 in (after := consumer_counts(node(BROKER))).values() and time.monotonic() < deadline:
        time.sleep(2)

    again = converge(*args)
    assert again.returncode == 0, again.tail

    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps({
        "converge_seconds": converge_seconds, "restart_order": order,
        "host_restart_seconds": {h: round(windows[h][1] - windows[h][0], 1) for h in order},
        "gaps_between_hosts_seconds": [round(windows[b][0] - windows[a][1], 1) for a, b in zip(order, order[1:])],
        "beat_stopped_on_old_host_before_start_on_new_seconds": round(new_events[0][0] - old_events[0][0], 1),
        "confirmed": len(stream.confirmed), "answered": len(stream.answered & stream.confirmed),
        "unanswered": len(lost), "publish_errors": len(stream.errors),
        "longest_confirm_wait_seconds": round(stream.longest_confirm, 3),
        "consumer_samples": len(read), "unreadable_samples": len(watch.samples) - len(read),
        "samples_with_a_queue_without_consumer": len(empty),
        "fewest_consumers": {q: min(c[q] for c in read) for q in QUEUES} if read else None,
        "consumers_after": after, "second_converge_changed": again.changed,
    }, indent=2) + "\n")
    assert not stream.errors, stream.errors[:5]
    assert len(stream.confirmed) > 50, f"only {len(stream.confirmed)} tasks confirmed during the converge"
    assert not lost, f"{len(lost)} of {len(stream.confirmed)} confirmed tasks never answered"
    assert not old_accepted, "the broker still accepts the old password"
    assert new_accepted, "the broker refuses the new password"
    assert 0 not in after.values(), f"pools not consuming with the new password: {after}"
    assert not overlaps, f"hosts restarted their pools at the same time: {overlaps}"
    assert old_events[0][0] < new_events[0][0], "the new beat started before the old one stopped"
    assert running == [new_beat], f"beat active on {running}"
    assert len(read) > 10, f"the consumer counts were read {len(read)} times only"
    assert not empty, f"queues without a consumer during the rolling restart: {empty[:10]}"
    assert again.changed and set(again.changed.values()) == {0}, again.changed
