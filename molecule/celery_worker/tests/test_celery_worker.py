"""roles/celery_worker: pools, limits, beat, releases and the broker path.

Read-only checks; the disruptive ones (kill, stop) live in
test_disruptive.py and run after these.
"""

from __future__ import annotations

import os
import pathlib
import re

import pytest
import yaml

from conftest import APPS, systemd_seconds, to_bytes

ROLE = pathlib.Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", ".")) / "roles" / "celery_worker"
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
GRACE = DEFAULTS["celery_worker_stop_grace"]
PREFIX = DEFAULTS["celery_worker_unit_prefix"]
# The scenario's group variables, as written (Molecule keeps them out of the
# hosts file the shared `inventory` fixture reads).
GROUP_VARS = yaml.safe_load((pathlib.Path(__file__).parents[1] / "molecule.yml").read_text())[
    "provisioner"]["inventory"]["group_vars"]
KEEP = DEFAULTS["celery_worker_releases_keep"]


def pools_of(inventory, host: str) -> list[dict]:
    group = next(g for g in ("celery_worker", "django_worker") if g in inventory[host]["groups"])
    return [DEFAULTS["celery_worker_pool_defaults"] | pool
            for pool in GROUP_VARS[group]["celery_worker_pools"]]


def worker_hosts(group_hosts) -> list[str]:
    return group_hosts("celery_worker") + group_hosts("django_worker")


def show(host, unit: str) -> dict[str, str]:
    out = host.run(f"systemctl show {unit} --no-pager").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_every_pool_unit_runs_with_its_limits(node, inventory, group_hosts):
    for name in worker_hosts(group_hosts):
        host = node(name)
        for pool in pools_of(inventory, name):
            unit = f"{PREFIX}-{pool['name']}.service"
            props = show(host, unit)
            assert props["ActiveState"] == "active", f"{name} {unit}: {props['ActiveState']}"
            assert props["UnitFileState"] == "enabled", f"{name} {unit}"
            assert props["Type"] == "exec"
            assert props["Restart"] == "always"
            assert props["KillMode"] == "mixed"
            assert int(props["MemoryMax"]) == to_bytes(pool["memory_max"]), f"{name} {unit}"
            if pool.get("memory_high"):
                assert int(props["MemoryHigh"]) == to_bytes(pool["memory_high"])
            stop = systemd_seconds(props["TimeoutStopUSec"])
            assert stop == pool["time_limit"] + GRACE, f"{name} {unit}: TimeoutStopSec {stop}"
            assert stop > pool["time_limit"]
            argv = props["ExecStart"]
            for expected in (
                f"--hostname {pool['name']}@{name}",
                f"--queues {','.join(pool['queues'])}",
                f"--concurrency {pool['concurrency']}",
                f"--prefetch-multiplier {pool['prefetch_multiplier']}",
                f"--time-limit {pool['time_limit']}",
                f"--soft-time-limit {pool['soft_time_limit']}",
                f"--max-tasks-per-child {pool['max_tasks_per_child']}",
                f"--max-memory-per-child {pool['max_memory_per_child']}",
                "--task-events",
            ):
                assert expected in argv, f"{name} {unit}: {expected!r} not in {argv}"
            assert " multi " not in argv and "--logfile" not in argv and "--detach" not in argv


def test_worker_start_up_logs_carry_no_warning(node, inventory, group_hosts):
    """Celery warns at start-up about deprecated settings (CDeprecationWarning,
    CPendingDeprecationWarning) and a superuser worker (SecurityWarning): no
    pool's log has one (sample app on Debian 13 and 12, the Django example)."""
    for name in worker_hosts(group_hosts):
        for pool in pools_of(inventory, name):
            unit = f"{PREFIX}-{pool['name']}.service"
            log = node(name).run(f"journalctl -u {unit} --no-pager -o cat").stdout
            assert "ready." in log, f"{name} {unit} never reported ready"
            warnings = [line for line in log.splitlines()
                        if re.search(r"DeprecationWarning|SecurityWarning", line)]
            assert not warnings, f"{name} {unit}: {warnings[:5]}"


def test_worker_processes_run_as_the_service_user(node, group_hosts):
    for name in worker_hosts(group_hosts):
        users = node(name).run(f"ps -o user= -C celery").stdout.split()
        assert users and set(users) == {"celery"}, f"{name}: {users}"


def test_every_pool_answers_ping_through_the_broker(client, inventory, group_hosts):
    for app, spec in APPS.items():
        expected = {f"{pool['name']}@{name}"
                    for name in group_hosts(spec["group"]) for pool in pools_of(inventory, name)}
        replies = client(app).control.ping(timeout=5.0)
        answered = {node for reply in replies for node in reply}
        assert expected <= answered, f"{app}: missing {expected - answered}"


def test_health_task_submitted_from_the_controller_completes(health_roundtrip, group_hosts):
    answer = health_roundtrip()
    assert answer["status"] == "ok"
    assert answer["task_id"] == answer["sent_id"]
    assert answer["queue"] == "short"
    assert answer["hostname"].split("@", 1)[-1] in group_hosts("celery_worker")


def test_task_log_lines_carry_the_task_id(node, health_roundtrip, journal):
    answer = health_roundtrip()
    host = node(answer["hostname"].split("@", 1)[-1])
    line = journal(host, [f"{PREFIX}-short"], rf"celery_stack_app\.health\[{answer['task_id']}\]")
    assert answer["task_id"] in line


def test_django_worker_consumes_a_task_from_the_broker(node, group_hosts, submit, journal):
    task_id = submit("django", "djexample.fingerprint", args=["celery-stack"])
    host = node(group_hosts("django_worker")[0])
    line = journal(host, [f"{PREFIX}-django"], rf"djexample\.fingerprint\[{task_id}\] succeeded")
    # sha256("celery-stack"), computed by the Django task on the worker
    import hashlib
    assert hashlib.sha256(b"celery-stack").hexdigest() in line


def test_beat_runs_on_exactly_one_host_per_application(node, group_hosts):
    beat = DEFAULTS["celery_worker_beat_unit"] + ".service"
    for group in ("celery_worker", "django_worker"):
        hosts = group_hosts(group)
        running = [h for h in hosts if node(h).run(f"systemctl is-active {beat}").stdout.strip() == "active"]
        assert running == [hosts[0]], f"{group}: beat active on {running}"
        assert node(hosts[0]).service(beat).is_enabled
        for other in hosts[1:]:
            assert not node(other).file(f"/etc/systemd/system/{beat}").exists
        schedule = node(hosts[0]).run("ls /var/lib/celery-stack/beat").stdout
        assert "celerybeat-schedule" in schedule


def test_first_deploy_starts_each_unit_once(node, inventory, group_hosts):
    """Converge and idempotence started every pool and beat exactly once: no restart of fresh units."""
    beat = DEFAULTS["celery_worker_beat_unit"] + ".service"
    for name in worker_hosts(group_hosts):
        host = node(name)
        units = [f"{PREFIX}-{pool['name']}.service" for pool in pools_of(inventory, name)]
        if host.file(f"/etc/systemd/system/{beat}").exists:
            units.append(beat)
        for unit in units:
            lines = host.run(f"journalctl -u {unit} --no-pager -o cat").stdout.splitlines()
            starts = [line for line in lines if line.startswith("Started ")]
            stops = [line for line in lines if line.startswith(("Stopping ", "Stopped "))]
            assert len(starts) == 1 and not stops, f"{name} {unit}: {starts + stops}"


def test_environment_file_is_private(node, group_hosts):
    for name in worker_hosts(group_hosts):
        env = node(name).file("/etc/celery-stack/celery-worker.env")
        assert env.user == "root" and env.group == "celery" and env.mode == 0o640


def test_current_release_is_installed_and_old_ones_pruned(node, group_hosts):
    for name in worker_hosts(group_hosts):
        host = node(name)
        # newest first; older ones stay for a rollback, pruned beyond KEEP
        releases = host.run("ls -t /opt/celery-stack/releases").stdout.split()
        assert 1 <= len(releases) <= KEEP, f"{name}: {releases}"
        assert host.file("/opt/celery-stack/current").linked_to == f"/opt/celery-stack/releases/{releases[0]}"
        assert host.file(f"/opt/celery-stack/releases/{releases[0]}/.installed").exists


def test_virtualenv_matches_each_targets_python(node, group_hosts):
    """Compiled dependencies (numpy) were fetched for each target's Python:
    3.13 on Debian 13, 3.11 on Debian 12."""
    for name in group_hosts("celery_worker"):
        host = node(name)
        system = host.run("python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'").stdout.strip()
        venv = host.run("/opt/celery-stack/current/venv/bin/python -c "
                        "'import sys, numpy; print(\"%d.%d\" % sys.version_info[:2])'")
        assert venv.rc == 0, f"{name}: {venv.stderr}"
        assert venv.stdout.strip() == system
