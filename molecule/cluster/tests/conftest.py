"""Fixtures of the whole-cluster scenario (on top of molecule/conftest.py).

The cluster is driven from the controller through its real interfaces:
AMQP and HTTP through HAProxy, and the deployed application itself (its
virtualenv on a worker host, run with ``podman exec``) to publish tasks.
Executions are counted from the workers' journals: Celery logs
``Task <name>[<id>] succeeded`` once per execution.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections import Counter

import amqp
import pytest
from cluster_helpers import (APP_USER, APP_VENV, SCRIPTS, SLOW_PORT, VHOST, http, new_prefix, podman, report,
                             wait_for)

@pytest.fixture(scope="session")
def workers(group_hosts):
    return group_hosts("celery_worker")


@pytest.fixture(scope="session")
def brokers(group_hosts):
    return group_hosts("rabbitmq")


@pytest.fixture(scope="session")
def lb(group_hosts):
    return group_hosts("haproxy")[0]


@pytest.fixture(scope="session")
def flower_host(group_hosts):
    return group_hosts("flower")[0]


@pytest.fixture(scope="session")
def lb_address(lb, address):
    return address(lb)


@pytest.fixture(scope="session")
def app_password(secret):
    return secret("app_broker_password")


@pytest.fixture(scope="session")
def amqp_connect(lb_address):
    """Open an AMQP connection through HAProxy (the caller closes it)."""

    def connect(userid: str, password: str, vhost: str = VHOST) -> amqp.Connection:
        conn = amqp.Connection(host=f"{lb_address}:5672", userid=userid, password=password,
                               virtual_host=vhost, connect_timeout=10, heartbeat=0)
        conn.connect()
        return conn

    return connect


@pytest.fixture(scope="session")
def management(lb_address, secret):
    """The RabbitMQ management API through HAProxy, as the admin user: (status, JSON or text)."""
    auth = ("admin", secret("rabbitmq_admin_password"))

    def call(method: str, path: str, body: dict | None = None):
        status, text = http(method, f"http://{lb_address}/api{path}", auth=auth, body=body)
        try:
            return status, json.loads(text) if text else None
        except ValueError:
            return status, text

    return call


@pytest.fixture(scope="session")
def app_env(lb, app_password):
    """The application's settings for a producer run on a worker host: the broker
    through HAProxy, no MongoDB (broker-only tasks)."""
    return {
        "CELERY_STACK_BROKER_URLS": f"amqp://{APP_USER}:{app_password}@{lb}:5672/{VHOST}",
        "CELERY_STACK_MONGODB_URI": "",
    }


@pytest.fixture(scope="session")
def app_env_file(app_env, tmp_path_factory):
    """``app_env_file(extra)``: a private file of the application's settings
    (plus ``extra``) for ``podman exec --env-file``, so that the broker
    password never appears on a command line."""
    directory = tmp_path_factory.mktemp("app-env")
    directory.chmod(0o700)
    written: dict[tuple, str] = {}

    def path(extra: dict | None = None) -> str:
        values = {**app_env, **(extra or {})}
        key = tuple(sorted(values.items()))
        if key not in written:
            target = directory / f"env-{len(written)}"
            target.touch(mode=0o600)
            target.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
            written[key] = str(target)
        return written[key]

    return path


@pytest.fixture(scope="session")
def run_app_script(app_env_file):
    """Run one of tests/scripts/*.py with the deployed application's Python on a host."""
    copied: set[tuple[str, str]] = set()

    def ensure(host: str, script: str) -> str:
        target = f"/tmp/cluster-tests/{script}"
        if (host, script) not in copied:
            podman("exec", host, "mkdir", "-p", "/tmp/cluster-tests")
            podman("cp", str(SCRIPTS / script), f"{host}:{target}")
            copied.add((host, script))
        return target

    def run(host: str, script: str, *args: str, detach: bool = False, timeout: float = 300,
            python: str = f"{APP_VENV}/bin/python", env: dict | None = None):
        target = ensure(host, script)
        cmd = ["exec", *(["-d"] if detach else []), "--env-file", app_env_file(env), host, python, target, *args]
        proc = podman(*cmd, check=False, timeout=timeout)
        if proc.returncode != 0:
            pytest.fail(f"{script} {' '.join(args)} on {host} failed ({proc.returncode}):\n"
                        f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc.stdout

    return run


# journalctl -o short-unix: "<epoch seconds> <host> <identifier>: <message>".
_TASK_LINE = re.compile(r"^(?P<at>\d+\.\d+) .*Task (?P<name>[\w.]+)\[(?P<id>[^\]]+)\] succeeded", re.M)


def _successes(workers, prefix: str, since: float) -> dict[str, list[tuple[float, str]]]:
    """Per worker host, (time, task id) of each successful execution of a task
    whose id starts with ``prefix``, from the pools' journals."""
    out: dict[str, list[tuple[float, str]]] = {}
    for host in workers:
        cmd = (f"journalctl --since @{int(since) - 5} -o short-unix --no-pager "
               f"-u 'celery-worker-*' | grep -F {shlex.quote('[' + prefix)} || true")
        proc = podman("exec", host, "sh", "-c", cmd, timeout=120)
        out[host] = [(float(m["at"]), m["id"]) for m in _TASK_LINE.finditer(proc.stdout)
                     if m["id"].startswith(prefix)]
    return out


@pytest.fixture(scope="session")
def executions(workers):
    """Successful executions of tasks whose id starts with ``prefix``, read from the
    workers' journals: {host: Counter(task_id -> times)}."""

    def read(prefix: str, since: float) -> dict[str, Counter]:
        return {host: Counter(tid for _, tid in found) for host, found in _successes(workers, prefix, since).items()}

    return read


@pytest.fixture(scope="session")
def execution_times(workers):
    """Times of the successful executions of tasks whose id starts with
    ``prefix``, from every worker host, in order."""

    def read(prefix: str, since: float) -> list[float]:
        return sorted(at for found in _successes(workers, prefix, since).values() for at, _ in found)

    return read


@pytest.fixture(scope="session")
def journal_suppressed(workers):
    """True when journald dropped worker lines since ``since`` (counts would be wrong)."""

    def check(since: float) -> list[str]:
        found = []
        for host in workers:
            proc = podman("exec", host, "sh", "-c",
                          f"journalctl --since @{int(since) - 5} -o cat --no-pager -u systemd-journald "
                          "| grep -i suppressed || true")
            found += [f"{host}: {line}" for line in proc.stdout.splitlines() if line.strip()]
        return found

    return check


@pytest.fixture(scope="session")
def slow_server(flower_host, address):
    """A slow HTTP endpoint on the Flower host, for website-check tasks that take a
    while (tests/scripts/slow_http.py); yields (base URL, request log reader)."""
    podman("exec", flower_host, "mkdir", "-p", "/tmp/cluster-tests")
    podman("cp", str(SCRIPTS / "slow_http.py"), f"{flower_host}:/tmp/cluster-tests/slow_http.py")
    podman("exec", "-d", flower_host, "python3", "/tmp/cluster-tests/slow_http.py", str(SLOW_PORT),
           "/tmp/cluster-tests/slow_http.log", "/tmp/cluster-tests/slow_http.pid")
    base = f"http://{flower_host}:{SLOW_PORT}"

    def requests_for(path: str) -> list[str]:
        """Client addresses of the requests received for ``path``."""
        proc = podman("exec", flower_host, "sh", "-c", "cat /tmp/cluster-tests/slow_http.log 2>/dev/null || true")
        return [line.split()[0] for line in proc.stdout.splitlines()
                if len(line.split()) == 2 and line.split()[1] == path]

    wait_for(lambda: podman("exec", flower_host, "python3", "-c",
                            f"import urllib.request;urllib.request.urlopen('http://127.0.0.1:{SLOW_PORT}/up?fast=1')",
                            check=False).returncode == 0, 30, what="the slow HTTP server")
    yield base, requests_for, address(flower_host)
    pid = podman("exec", flower_host, "cat", "/tmp/cluster-tests/slow_http.pid", check=False).stdout.strip()
    if pid.isdigit():
        podman("exec", flower_host, "kill", pid, check=False)


class SteadyStream:
    """A steady stream of no-op tasks published through HAProxy with publisher
    confirms by tests/scripts/producer.py on a worker host, and the reckoning
    at the end: every confirmed task must have been executed."""

    NOOP = "celery_stack_app.noop"
    RATE = "40"            # tasks per second at most: a steady stream, not a benchmark
    MAX_SECONDS = "900"    # the producer's own bound; tests stop it much earlier
    OUT, STOP = "/tmp/cluster-tests/stream.json", "/tmp/cluster-tests/stream.stop"

    def __init__(self, host: str, run_app_script, executions, execution_times, journal_suppressed, kind: str,
                 queues: tuple[str, ...]):
        self.host, self._run, self._executions, self._suppressed = host, run_app_script, executions, journal_suppressed
        self._times = execution_times
        self.prefix, self.queues = new_prefix(kind), queues
        self.since = time.time()

    def start(self) -> SteadyStream:
        podman("exec", self.host, "rm", "-f", self.OUT, self.STOP)
        self._run(self.host, "producer.py", "stream", self.NOOP, ",".join(self.queues), self.prefix, self.OUT,
                  self.STOP, self.RATE, self.MAX_SECONDS, detach=True)
        return self

    def longest_pauses(self, begin: float, end: float) -> dict[str, float]:
        """Per queue, the longest time between ``begin`` and ``end`` in which no
        task of the stream was executed from it: the time its consumption
        stood still (the stream keeps every queue fed, so a pause longer than
        a few publishing intervals is a queue nobody consumed)."""
        pauses = {}
        for queue in self.queues:
            times = [at for at in self._times(f"{self.prefix}{queue}.", begin) if begin <= at <= end]
            edges = [begin, *times, end]
            pauses[queue] = round(max(b - a for a, b in zip(edges, edges[1:])), 2)
        return pauses

    def progress(self) -> dict | None:
        proc = podman("exec", self.host, "cat", self.OUT, check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else None

    def confirmed_at_least(self, count: int, timeout: float, what: str) -> int:
        """Wait until ``count`` tasks are confirmed; the confirmed count then."""
        return wait_for(lambda: (p := self.progress()) is not None and p["confirmed_count"] >= count and p,
                        timeout, interval=2, what=what)["confirmed_count"]

    def finish(self, name: str, extra: dict) -> dict:
        """Stop the producer, wait until every confirmed task ran, report the
        counts under ``name`` (with ``extra``) and return them."""
        podman("exec", self.host, "touch", self.STOP)
        final = wait_for(lambda: (p := self.progress()) is not None and p["done"] and p, 120,
                         what="the producer to stop")
        confirmed = set(final["confirmed"])

        def all_executed():
            seen = self._executions(self.prefix, self.since)
            done = set().union(*(set(c) for c in seen.values()))
            return seen if confirmed <= done else None

        try:
            wait_for(all_executed, 300, interval=5, what="every confirmed task to be executed")
        finally:
            seen = self._executions(self.prefix, self.since)
            runs: Counter = Counter()
            for counts in seen.values():
                runs.update(counts)
            executed = set(runs)
            figures = {
                **extra,
                "published_attempts": len(confirmed) + len(final["failed"]),
                "confirmed": len(confirmed), "refused_or_failed_publishes": len(final["failed"]),
                "longest_confirm_wait_seconds": final.get("longest_confirm_wait_seconds"),
                "executed_unique": len(executed), "executed_total": sum(runs.values()),
                "duplicates": sum(n - 1 for n in runs.values() if n > 1),
                "confirmed_not_executed": len(confirmed - executed),
                "executed_per_host": {h: sum(c.values()) for h, c in seen.items()},
                "failed_examples": dict(list(final["failed"].items())[:3]),
            }
            report(name, figures)
        assert not self._suppressed(self.since), "journald suppressed worker lines: the execution counts are unreliable"
        assert confirmed <= executed, f"{len(confirmed - executed)} confirmed task(s) never executed"
        return figures


@pytest.fixture()
def steady_stream(workers, run_app_script, executions, execution_times, journal_suppressed):
    """Start a steady stream of tasks from the first worker host:
    ``steady_stream(kind, queues=("short",))``, the queues fed in turn."""

    def start(kind: str, queues: tuple[str, ...] = ("short",)) -> SteadyStream:
        return SteadyStream(workers[0], run_app_script, executions, execution_times, journal_suppressed, kind,
                            queues).start()

    return start
