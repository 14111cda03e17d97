"""The benchmark's broker: RabbitMQ 4.0.5 from Debian 13 in a podman systemd container.

The container (``bench-confirms-rmq``) runs on its own network
(``celery-stack-bench-confirms``) from ``localhost/celery-stack-base:trixie``
(warm apt cache), gets ``rabbitmq-server`` from apt, a vhost and a user with
a generated password, and is reached from the host at its container IP.
Fallback: the host's own rabbitmq-server (Debian 12: 3.10.8) on loopback,
through app/tests/broker.py.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from urllib.parse import quote

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONTAINER = "bench-confirms-rmq"
NETWORK = "celery-stack-bench-confirms"
IMAGE = "localhost/celery-stack-base:trixie"
PWFILE = "/root/.bench-confirms-password"


def _podman(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, CONTAINERS_CONF=os.path.join(ROOT, "harness", "containers.conf"))
    r = subprocess.run(["podman", *args], env=env, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args[:3])}...: {r.stderr.strip() or r.stdout.strip()}")
    return r


class PodmanRabbitMQ:
    kind = "podman"

    def __init__(self, keep: bool = False):
        self.keep = keep
        self.url = ""
        self.version = ""
        self.ip = ""

    def _exec(self, script: str, timeout: float = 600) -> str:
        return _podman("exec", CONTAINER, "bash", "-c", script, timeout=timeout).stdout

    def start(self) -> "PodmanRabbitMQ":
        running = _podman("container", "inspect", CONTAINER, "--format", "{{.State.Running}}", check=False)
        if running.returncode != 0 or running.stdout.strip() != "true":
            if running.returncode == 0:
                _podman("rm", "-f", CONTAINER)
            if _podman("network", "exists", NETWORK, check=False).returncode != 0:
                _podman("network", "create", NETWORK)
            _podman("run", "-d", "--name", CONTAINER, "--hostname", CONTAINER, "--network", NETWORK,
                    "--privileged", "--systemd=always", IMAGE, "/sbin/init")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                r = _podman("exec", CONTAINER, "systemctl", "is-system-running", check=False)
                if r.stdout.strip() in ("running", "degraded"):
                    break
                time.sleep(1)
        if _podman("exec", CONTAINER, "test", "-x", "/usr/sbin/rabbitmqctl", check=False).returncode != 0:
            self._exec("DEBIAN_FRONTEND=noninteractive apt-get install -y -q rabbitmq-server "
                       ">/tmp/apt.log 2>&1 || { tail -20 /tmp/apt.log; exit 1; }")
        self._exec("systemctl start rabbitmq-server && rabbitmqctl await_startup >/dev/null")
        password = self._exec(f"cat {PWFILE} 2>/dev/null || true").strip()
        if not password:
            password = secrets.token_urlsafe(18)
            # the password goes through stdin, never on a command line
            subprocess.run(["podman", "exec", "-i", CONTAINER, "bash", "-c", f"umask 077; cat > {PWFILE}"],
                           input=password, text=True, check=True,
                           env=dict(os.environ, CONTAINERS_CONF=os.path.join(ROOT, "harness", "containers.conf")))
            self._exec(
                "rabbitmqctl list_vhosts -q | grep -qx bench || rabbitmqctl add_vhost bench >/dev/null; "
                "rabbitmqctl list_users -q | grep -q '^bench\\b' && rabbitmqctl delete_user bench >/dev/null; "
                f"rabbitmqctl add_user bench \"$(cat {PWFILE})\" >/dev/null && "
                "rabbitmqctl set_permissions -p bench bench '.*' '.*' '.*' >/dev/null")
        self.ip = _podman("inspect", CONTAINER, "--format",
                          "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}").stdout.strip()
        self.url = f"amqp://bench:{quote(password, safe='')}@{self.ip}:5672/bench"
        self.version = self._exec("rabbitmqctl version").strip()
        return self

    def pids(self) -> list[int]:
        pid = _podman("inspect", CONTAINER, "--format", "{{.State.Pid}}").stdout.strip()
        return [int(pid)] if pid.isdigit() else []

    def describe(self) -> str:
        os_release = self._exec(". /etc/os-release; echo $PRETTY_NAME").strip()
        return f"RabbitMQ {self.version} on {os_release} (podman container {CONTAINER}, {self.ip})"

    def stop(self) -> None:
        if self.keep:
            return
        _podman("rm", "-f", "-t", "10", CONTAINER, check=False)
        _podman("network", "rm", NETWORK, check=False)


class LoopbackRabbitMQ:
    kind = "loopback"

    def __init__(self):
        import sys
        sys.path.insert(0, os.path.join(ROOT, "app", "tests"))
        from broker import RabbitMQ
        self._rmq = RabbitMQ()
        self.url = ""
        self.version = ""

    def start(self) -> "LoopbackRabbitMQ":
        self._rmq.start()
        self.url = self._rmq.url
        self.version = self._rmq.ctl("version").stdout.strip()
        return self

    def pids(self) -> list[int]:
        return [self._rmq.proc.pid] if self._rmq.proc else []

    def describe(self) -> str:
        return f"RabbitMQ {self.version} on the host's loopback (fallback: podman broker failed)"

    def stop(self) -> None:
        self._rmq.stop()


def start_broker(prefer_podman: bool = True, keep: bool = False):
    """(broker, note): the podman RabbitMQ 4.0.5, else the loopback one with a note why."""
    if prefer_podman:
        try:
            return PodmanRabbitMQ(keep=keep).start(), ""
        except Exception as exc:  # noqa: BLE001 - any failure means: fall back
            note = f"podman broker failed ({exc}); fell back to the host's loopback rabbitmq-server"
    else:
        note = "loopback broker requested (--loopback)"
    return LoopbackRabbitMQ().start(), note
