"""Day two (disruptive, last): every password of the front door rotated in
the secret store and converged at once: Flower's login, its monitoring
user on the broker, HAProxy's statistics login, the broker's operator
account and the application's broker password (used by the worker and by
Flower). Afterwards each old password is refused and each new one works
where it is used (Flower and its /metrics through HAProxy, Flower's broker
API, the stats page, the management API, AMQP), Flower still sees the
worker (both reconnected with the new application password), and a second
converge changes nothing. While the rotation converges, every process's
command line on both machines and on the controller is sampled: no old or
new password may appear in one (the operator account is rotated through
`rabbitmqctl import_definitions` and a hash in a 0600 file, which the
sampler must have seen run, so it is known to catch short-lived commands)."""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import string
import subprocess
import threading
import time

import pytest

from conftest import BROKER, LB
from test_flower import get

pytestmark = pytest.mark.disruptive
ROTATED = ("flower_ops", "flower_monitoring", "haproxy_stats", "rabbitmq_admin", "django_app")


def eventually(check, timeout: float = 60.0):
    """Retries `check` until it returns a truthy value; returns the last."""
    deadline = time.monotonic() + timeout
    while not (value := check()) and time.monotonic() < deadline:
        time.sleep(2)
    return value


# Every process's argv, one per line (NUL separators made spaces).
_ARGV_SCRIPT = r'for p in /proc/[0-9]*; do tr "\0" " " < "$p/cmdline" 2>/dev/null; echo; done'


class CommandLineWatch(threading.Thread):
    """Samples the command lines of every process on `machines` (podman
    containers) and on the controller until stopped; keeps the distinct ones."""

    def __init__(self, machines: tuple[str, ...]):
        super().__init__(daemon=True)
        self.machines = machines
        self.seen: dict[str, set[str]] = {name: set() for name in (*machines, "controller")}
        self.rounds = 0
        self._halt = threading.Event()

    def _sample(self, name: str, argv: list[str]) -> None:
        out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30).stdout
        self.seen[name].update(line.strip() for line in out.splitlines() if line.strip())

    def run(self) -> None:
        while not self._halt.is_set():
            for name in self.machines:
                self._sample(name, ["podman", "exec", name, "sh", "-c", _ARGV_SCRIPT])
            self._sample("controller", ["sh", "-c", _ARGV_SCRIPT])
            self.rounds += 1

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=60)

    def lines_with(self, words) -> list[str]:
        return sorted(f"{name}: {line}" for name, lines in self.seen.items()
                      for line in lines if any(word in line for word in words))


def test_front_door_passwords_rotate_in_one_converge(base, secret, address, group_hosts, converge, amqp_login):
    store = pathlib.Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "secrets"
    old = {name: secret(name) for name in ROTATED}
    new = {name: "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(24))
           for name in ROTATED}
    for name, value in new.items():
        (store / name).write_text(value)
    stats = f"http://{address(LB)}:8404/;csv"
    whoami = f"http://{address(BROKER)}:15672/api/whoami"

    watch = CommandLineWatch((BROKER, LB))
    watch.start()
    try:
        result = converge()
    finally:
        watch.stop()
    assert result.returncode == 0, result.tail
    print(f"command lines: {watch.rounds} sampling rounds, "
          + ", ".join(f"{name} {len(lines)} distinct" for name, lines in watch.seen.items()))
    passwords = [*old.values(), *new.values()]
    leaked = watch.lines_with(passwords)
    for value in passwords:
        leaked = [line.replace(value, "<password>") for line in leaked]
    assert not leaked, f"command lines carried a password: {leaked}"
    assert watch.lines_with(["import_definitions"]), (
        "the sampler never saw the operator account's import_definitions run: "
        "it cannot vouch that short-lived commands were seen")

    assert get(base + "/api/workers", auth=("ops", old["flower_ops"]))[0] == 401
    assert get(base + "/metrics", auth=("ops", old["flower_ops"]))[0] == 401
    assert get(base + "/metrics", auth=("ops", new["flower_ops"]))[0] == 200
    assert get(stats, auth=("stats", old["haproxy_stats"]))[0] == 401
    assert get(stats, auth=("stats", new["haproxy_stats"]))[0] == 200
    assert get(whoami, auth=("admin", old["rabbitmq_admin"]))[0] == 401
    assert get(whoami, auth=("admin", new["rabbitmq_admin"]))[0] == 200
    assert get(whoami, auth=("flower-monitoring", old["flower_monitoring"]))[0] == 401
    assert get(whoami, auth=("flower-monitoring", new["flower_monitoring"]))[0] == 200
    amqp = f"amqp://django:{{}}@{address(BROKER)}:5672/django".format
    assert not amqp_login(amqp(old["django_app"])), "the broker still accepts the old application password"
    assert amqp_login(amqp(new["django_app"])), "the broker refuses the new application password"

    ops = ("ops", new["flower_ops"])
    expected = {f"django@{host}" for host in group_hosts("celery_worker")}

    def online() -> bool:
        status, body, _ = get(base + "/api/workers?status=true", auth=ops)
        return status == 200 and expected <= {n for n, up in json.loads(body).items() if up}

    def queues() -> bool:
        # Flower reads queue lengths with the rotated monitoring password.
        status, body, _ = get(base + "/api/queues/length", auth=ops)
        return status == 200 and any(q.get("name") == "django" for q in json.loads(body).get("active_queues", []))

    assert eventually(online), "Flower lost the worker after the rotation"
    assert eventually(queues), "Flower's broker API fails with the rotated monitoring password"

    again = converge()
    assert again.returncode == 0, again.tail
    assert again.changed and set(again.changed.values()) == {0}, again.changed
