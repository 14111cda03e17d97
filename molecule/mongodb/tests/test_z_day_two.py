"""Day two of roles/mongodb (disruptive, last), against the real servers.

- Rolling restart: a mongod.conf setting that needs a restart
  (``mongodb_slow_op_threshold_ms``) rolls through the replica set one member
  at a time, the secondaries first and the member that was primary last,
  after another member took over; a writer keeps inserting with w=majority
  and retryable writes through the replica set, and every acknowledged
  insert is still there afterwards; a GridFS file written before is readable
  on every member; no restart mark is left; the standalone host restarts
  once; a second converge changes nothing.
- Refusal: with a secondary unreachable (its mongod frozen with SIGSTOP, so
  that the role's "Start mongod" cannot start it again) a restart is refused
  with the role's message naming that member, and nothing is restarted.
- Password rotation: new application, monitoring and administrator
  passwords in the secret store. Without mongodb_admin_password_previous the
  role stops with its operator message and changes nothing; with it (an
  extra-vars file, 0600) MongoDB takes the new passwords and refuses the old
  ones on every server, and a second converge, without it, changes nothing.

Each test puts the scenario back where it found it (the setting converged
back). Runs only where MongoDB is installable (molecule/mongodb/reachable).
Figures of the rolling restart in .cache/mongodb/rolling.json.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import secrets
import string
import time

import gridfs
import pymongo
import pytest
import yaml
from pymongo.errors import OperationFailure, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from steady_writer import SteadyWriter
from test_mongodb import APP_DB, MEMBERS, SINGLE

pytestmark = pytest.mark.disruptive

ROLE = pathlib.Path(__file__).resolve().parents[3] / "roles" / "mongodb"
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
VARS = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
RESTART_MARK = VARS["_mongodb_restart_marker"]
UNIT = VARS["_mongodb_service"] + ".service"
PORT = 27017
SERVERS = [SINGLE, *MEMBERS]
# Lands in mongod.conf as operationProfiling.slowOpThresholdMs: read at start only.
SETTING = "mongodb_slow_op_threshold_ms"
AUTH_FAILED = 18
# Secret file (molecule.yml) -> (user, authentication database).
USERS = {
    "mongodb_app": (DEFAULTS["mongodb_app_user"], APP_DB),
    "mongodb_monitor": (DEFAULTS["mongodb_monitor_user"], "admin"),
    "mongodb_admin": (DEFAULTS["mongodb_admin_user"], "admin"),
}
WRITES = "day_two_writes"
REPORT = pathlib.Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", ".")) / ".cache" / "mongodb" / "rolling.json"

# tasks/admin_password.yml, "Refuse to go on without a password that logs
# in", for a run without mongodb_admin_password_previous.
ADMIN_REFUSAL = (
    'mongodb_admin_password does not log in as "{user}" on {host}: MongoDB still has another password for '
    "the administrator (the role creates the administrator once and never re-reads it). If you changed "
    "mongodb_admin_password on purpose, set mongodb_admin_password_previous to the password the "
    "administrator has in MongoDB now (from the vault, for this converge only), converge again - the role "
    "logs in with it and changes the password to mongodb_admin_password - then remove "
    "mongodb_admin_password_previous. If you did not mean to change it, put the old value back into "
    "mongodb_admin_password. Nothing was changed."
)
PREVIOUS_WRONG = "mongodb_admin_password_previous does not log in either"

def _direct(address, host: str, secret_name: str | None = None, secret=None, timeout_ms: int = 5000,
            password: str | None = None, **options):
    """A pymongo client straight to one server, as one of USERS (or none)."""
    if secret_name:
        user, source = USERS[secret_name]
        options.update(username=user, authSource=source,
                       password=password if password is not None else secret(secret_name))
    return pymongo.MongoClient(host=address(host), port=PORT, directConnection=True,
                               serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms,
                               socketTimeoutMS=timeout_ms, **options)


def _logs_in(address, host: str, secret_name: str, password: str) -> bool:
    """True when the server accepts the password, False when it says it is
    wrong (AuthenticationFailed); anything else raises."""
    with _direct(address, host, secret_name, password=password, timeout_ms=10000) as client:
        try:
            client[USERS[secret_name][1]].command("ping")
        except OperationFailure as exc:
            if exc.code == AUTH_FAILED:
                return False
            raise
    return True


def _logins(address, passwords: dict[str, str], wait: float = 0) -> dict[str, bool]:
    """``server/secret`` -> accepted, for every server and user; with
    ``wait``, a refused login is retried that long (replication)."""
    seen = {}
    for server in SERVERS:
        for name, password in passwords.items():
            deadline = time.monotonic() + wait
            while not (ok := _logs_in(address, server, name, password)) and time.monotonic() < deadline:
                time.sleep(2)
            seen[f"{server}/{name}"] = ok
    return seen


def _states(address, secret, seen_by: list[str] = MEMBERS) -> dict[str, tuple[str, float]] | None:
    """member -> (stateStr, health) from replSetGetStatus of the first of
    ``seen_by`` that answers (as the monitoring user)."""
    for name in seen_by:
        try:
            with _direct(address, name, "mongodb_monitor", secret) as client:
                status = client.admin.command("replSetGetStatus")
        except PyMongoError:
            continue
        return {m["name"].rsplit(":", 1)[0]: (m["stateStr"], m["health"]) for m in status["members"]}
    return None


def _wait_healthy(address, secret, timeout: float = 180) -> dict[str, tuple[str, float]]:
    """The set's states once it has one PRIMARY, two SECONDARY, all reachable."""
    deadline = time.monotonic() + timeout
    while True:
        states = _states(address, secret)
        if (states and set(states) == set(MEMBERS) and all(h == 1 for _, h in states.values())
                and sorted(s for s, _ in states.values()) == ["PRIMARY", "SECONDARY", "SECONDARY"]):
            return states
        if time.monotonic() > deadline:
            pytest.fail(f"the replica set is not healthy after {timeout} s: {states}")
        time.sleep(2)


def _running_slowms(address, secret, host: str) -> int:
    """operationProfiling.slowOpThresholdMs of the running mongod (its parsed config)."""
    with _direct(address, host, "mongodb_monitor", secret, timeout_ms=10000) as client:
        return client.admin.command("getCmdLineOpts")["parsed"]["operationProfiling"]["slowOpThresholdMs"]


def _baseline(inventory) -> int:
    values = {inventory[h].get(SETTING, DEFAULTS[SETTING]) for h in SERVERS}
    assert len(values) == 1, f"{SETTING} differs between the hosts: {values}"
    return int(values.pop())


def _marked(node, hosts: list[str]) -> list[str]:
    return [h for h in hosts if node(h).file(RESTART_MARK).exists]


def _fold(text: str) -> str:
    """Quotes and escapes dropped, white space folded: the same words
    whether the callback printed the message as JSON or YAML, wrapped or not."""
    return " ".join(re.sub(r"[\"'\\]", "", text).split())


def _client_python(node) -> str:
    """The python with pymongo on the standalone host (the role's venv on Debian 12)."""
    for python in (VARS["_mongodb_client_venv"] + "/bin/python", "/usr/bin/python3"):
        if node(SINGLE).run(f"{python} -c 'import pymongo'").rc == 0:
            return python
    pytest.fail(f"no python with pymongo on {SINGLE}")


def test_a_restarting_setting_rolls_primary_last_and_loses_no_acknowledged_write(
        address, secret, node, inventory, converge, unit_events, sampler):
    baseline = _baseline(inventory)
    value = baseline + 50
    override = ("-e", json.dumps({SETTING: value}))
    states = _wait_healthy(address, secret)
    primary_before = next(m for m, (state, _) in states.items() if state == "PRIMARY")
    secondaries = [m for m in MEMBERS if m != primary_before]
    running_before = {h: _running_slowms(address, secret, h) for h in SERVERS}
    assert running_before == dict.fromkeys(SERVERS, baseline), running_before

    payload = os.urandom(300 * 1024)
    with _direct(address, primary_before, "mongodb_app", secret, 30000) as client:
        db = client[APP_DB].with_options(write_concern=WriteConcern(w=3, wtimeout=30000))
        file_id = gridfs.GridFSBucket(db).upload_from_stream("day-two-rolling", payload)
        db[WRITES].drop()

    probes = {m: _direct(address, m, timeout_ms=1500) for m in MEMBERS}

    def who_is_primary() -> dict[str, bool | None]:
        seen: dict[str, bool | None] = {}
        for member, probe in probes.items():
            try:
                seen[member] = bool(probe.admin.command("hello").get("isWritablePrimary"))
            except PyMongoError:
                seen[member] = None
        return seen

    user, database = USERS["mongodb_app"]
    writer = SteadyWriter(SINGLE, _client_python(node), {
        "hosts": [f"{m}:{PORT}" for m in MEMBERS], "set": inventory[MEMBERS[0]]["mongodb_replset_name"],
        "user": user, "password": secret("mongodb_app"), "database": database, "collection": WRITES,
        "interval": 0.1, "seconds": 3600})
    try:
        writer.start()
        assert writer.wait_for_first(), f"the writer acknowledged nothing in 60 s: {writer.other[-5:]}"
        watch = sampler(who_is_primary, 0.25)
        since = time.time()
        result = converge(*override)
        watch.stop()
        writer.stop()
        assert result.returncode == 0, result.tail

        events = {h: unit_events(h, [UNIT], since) for h in SERVERS}
        for host in SERVERS:
            assert [kind for _, _, kind in events[host]] == ["stop", "start"], (host, events[host])
        windows = {m: (events[m][0][0], events[m][-1][0]) for m in MEMBERS}
        order = sorted(MEMBERS, key=lambda m: windows[m][0])
        overlaps = [(a, b) for a, b in zip(order, order[1:]) if windows[b][0] < windows[a][1]]
        old_primary_stop = windows[primary_before][0]
        taken_over = [at for at, seen in watch.samples
                      if seen and at < old_primary_stop and any(seen.get(m) for m in secondaries)]
        primary_at_start = [seen.get(primary_before) for at, seen in watch.samples
                            if seen and at < windows[order[0]][0]]

        after = _wait_healthy(address, secret)
        running_after = {h: _running_slowms(address, secret, h) for h in SERVERS}
        marks = _marked(node, SERVERS)
        primary_after = next(m for m, (state, _) in after.items() if state == "PRIMARY")
        unreadable = []
        for member in MEMBERS:
            with _direct(address, member, "mongodb_app", secret, 30000, readPreference="secondaryPreferred") as c:
                if gridfs.GridFSBucket(c[APP_DB]).open_download_stream(file_id).read() != payload:
                    unreadable.append(member)
        acked = [n for _, n in writer.acked]
        with _direct(address, primary_after, "mongodb_app", secret, 30000) as client:
            db = client[APP_DB]
            found = {d["_id"] for d in db.get_collection(WRITES, read_concern=ReadConcern("majority"))
                     .find({"_id": {"$in": acked}}, {"_id": 1})}
            gridfs.GridFSBucket(db).delete(file_id)
            db[WRITES].drop()
        lost = sorted(set(acked) - found)
        down_from, down_to = windows[primary_before]
        during_old_primary = [n for at, n in writer.acked if down_from <= at <= down_to]

        since_again = time.time()
        again = converge(*override)
        restarted_again = {h: unit_events(h, [UNIT], since_again) for h in SERVERS}

        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps({
            "primary_before": primary_before, "restart_order": order, "primary_after": primary_after,
            "member_restart_seconds": {m: round(windows[m][1] - windows[m][0], 1) for m in order},
            "acknowledged": len(acked), "lost": len(lost), "failed_inserts": len(writer.failed),
            "acknowledged_while_old_primary_restarted": len(during_old_primary),
            "first_failed_inserts": writer.failed[:5], "primary_samples": len(watch.samples),
            "second_converge_changed": again.changed,
        }, indent=2) + "\n")
        assert order[-1] == primary_before, f"restart order {order}, primary before: {primary_before}"
        assert sorted(order[:-1]) == sorted(secondaries), order
        assert not overlaps, f"members restarted at the same time: {overlaps}"
        assert primary_at_start and all(primary_at_start), f"{primary_before} was not primary at the start"
        assert taken_over, f"no other member was primary before {primary_before} stopped (no step-down)"
        assert running_after == dict.fromkeys(SERVERS, value), running_after
        assert not marks, f"restart marks left on {marks}"
        assert not unreadable, f"the GridFS file written before is unreadable on {unreadable}"
        assert not writer.other, writer.other[-5:]
        assert len(acked) > 50, f"only {len(acked)} inserts acknowledged during the rolling restart"
        assert writer.acked[-1][0] > windows[primary_before][1], "no insert acknowledged after the primary's restart"
        assert not lost, f"{len(lost)} of {len(acked)} acknowledged inserts are missing: {lost[:10]}"
        assert again.returncode == 0, again.tail
        assert set(again.changed) >= set(SERVERS) and set(again.changed.values()) == {0}, again.changed
        assert not any(restarted_again.values()), restarted_again
    finally:
        writer.stop()
        for probe in probes.values():
            probe.close()
        restored = converge()
    assert restored.returncode == 0, restored.tail
    _wait_healthy(address, secret)
    assert {h: _running_slowms(address, secret, h) for h in SERVERS} == dict.fromkeys(SERVERS, baseline)
    assert not _marked(node, SERVERS)


def test_a_restart_is_refused_while_a_secondary_is_unreachable(address, secret, node, inventory, converge,
                                                               unit_events):
    reader = MEMBERS[0]  # the first host of the play reads the set's state for the role (run_once)
    states = _wait_healthy(address, secret)
    victim = next((m for m in MEMBERS[1:] if states[m][0] == "SECONDARY"), None)
    assert victim, f"no secondary besides {reader}: {states}"
    baseline = _baseline(inventory)
    since = time.time()
    node(victim).check_output(f"systemctl kill --signal=SIGSTOP {UNIT}")
    try:
        deadline = time.monotonic() + 90
        while (seen := _states(address, secret, [reader])) and seen[victim][1] != 0 and time.monotonic() < deadline:
            time.sleep(2)
        unreachable = bool(seen) and seen[victim][1] == 0
        result = converge("--limit", "mongodb_rs", "-e", json.dumps({SETTING: baseline + 75})) if unreachable else None
        events = {m: unit_events(m, [UNIT], since) for m in MEMBERS}
        marks = _marked(node, MEMBERS)
    finally:
        node(victim).check_output(f"systemctl kill --signal=SIGCONT {UNIT}")
        _wait_healthy(address, secret)
        restored = converge("--limit", "mongodb_rs")

    assert unreachable, f"{reader} still saw {victim} as reachable after 90 s: {seen}"
    words = _fold(result.words)
    assert result.returncode != 0, "the converge went on although a secondary was unreachable"
    assert _fold(f"REFUSED: mongod waits for a restart on {', '.join(MEMBERS)}, but the replica set "
                 f"{inventory[reader]['mongodb_replset_name']} is not healthy") in words, result.tail
    assert f"{victim}:{PORT} is" in words, result.tail
    assert not [m for m in MEMBERS if m != victim and f"{m}:{PORT} is" in words], result.tail
    assert "Nothing was restarted" in words, result.tail
    assert not any(events.values()), f"mongod restarted although the run was refused: {events}"
    assert marks == MEMBERS, f"the restart marks should stay for the next converge: {marks}"
    assert restored.returncode == 0, restored.tail
    assert not _marked(node, MEMBERS)
    assert {m: _running_slowms(address, secret, m) for m in MEMBERS} == dict.fromkeys(MEMBERS, baseline)


def test_password_rotation_needs_the_previous_admin_password_and_then_settles(address, secret, node, converge,
                                                                             unit_events):
    store = pathlib.Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "secrets"
    extra = store.parent / "rotation-vars.json"
    _wait_healthy(address, secret)
    old = {name: secret(name) for name in USERS}
    alphabet = string.ascii_letters + string.digits
    new = {name: "".join(secrets.choice(alphabet) for _ in range(24)) for name in USERS}
    assert all(new[n] != old[n] for n in USERS)
    accepted_before = _logins(address, old)
    since = time.time()
    for name, password in new.items():
        (store / name).write_text(password)

    # One run per play: a play whose every host fails ends the playbook.
    refused = {host: converge("--limit", group) for host, group in ((SINGLE, "mongodb_single"),
                                                                     (MEMBERS[0], "mongodb_rs"))}
    old_after_refusal, new_after_refusal = _logins(address, old), _logins(address, new)

    extra.unlink(missing_ok=True)
    with os.fdopen(os.open(extra, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
        json.dump({"mongodb_admin_password_previous": old["mongodb_admin"]}, handle)
    mode = extra.stat().st_mode & 0o777
    try:
        rotated = converge("-e", f"@{extra}")
    finally:
        extra.unlink()
    new_accepted = _logins(address, new, wait=60)
    old_accepted = _logins(address, old)
    # The role needs mongodb_admin_password_previous no more (README: remove it).
    again = converge()
    events = {h: unit_events(h, [UNIT], since) for h in SERVERS}

    assert all(accepted_before.values()), f"old passwords refused before the rotation: {accepted_before}"
    for host, run in refused.items():
        words = _fold(run.words)
        assert run.returncode != 0, f"the run on {host} went on without mongodb_admin_password_previous"
        assert _fold(ADMIN_REFUSAL.format(user=USERS["mongodb_admin"][0], host=host)) in words, run.tail
        assert PREVIOUS_WRONG not in words, run.tail
        assert host in run.changed and set(run.changed.values()) == {0}, run.changed
    assert set(refused[MEMBERS[0]].changed) >= set(MEMBERS), refused[MEMBERS[0]].changed
    assert all(old_after_refusal.values()), f"the refused runs changed passwords: {old_after_refusal}"
    assert not any(new_after_refusal.values()), f"new passwords accepted before the rotation: {new_after_refusal}"
    assert mode == 0o600, oct(mode)
    assert rotated.returncode == 0, rotated.tail
    assert rotated.changed.get(SINGLE, 0) >= 3 and rotated.changed.get(MEMBERS[0], 0) >= 3, rotated.changed
    assert all(rotated.changed.get(m) == 0 for m in MEMBERS[1:]), rotated.changed  # changed once, replicated
    assert all(new_accepted.values()), f"new passwords refused: {[k for k, v in new_accepted.items() if not v]}"
    assert not any(old_accepted.values()), f"old passwords accepted: {[k for k, v in old_accepted.items() if v]}"
    assert again.returncode == 0, again.tail
    assert set(again.changed) >= set(SERVERS) and set(again.changed.values()) == {0}, again.changed
    for run in (*refused.values(), rotated, again):
        assert not [n for n in USERS if old[n] in run.words or new[n] in run.words], "a password in the output"
    assert not any(events.values()), f"the rotation restarted mongod: {events}"
