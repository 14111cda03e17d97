"""The benchmark's brokers: app/tests/broker.py's, with what the report and the load gate need.

A container broker is that module's ``ContainerRabbitMQ``: RabbitMQ from a
Debian suite's own package in a podman systemd container of the harness's
base images (``localhost/celery-stack-base:<suite>``; forky: RabbitMQ 4.3.6
on Erlang 29, trixie: 4.0.5 on Erlang 27, bookworm: 3.10.8), published on a
free 127.0.0.1 port, with a generated user whose password reaches
``rabbitmqctl`` on its standard input only. ``loopback`` is the host's own
rabbitmq-server (Debian 12: 3.10.8) as that module's ``RabbitMQ``, and the
fallback when a container broker cannot start.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "app", "tests"))

from broker import ContainerRabbitMQ, RabbitMQ  # noqa: E402

SUITES = ("forky", "trixie", "bookworm")
CHOICES = SUITES + ("loopback",)
PREFIX = "bench-confirms-rmq"


def short_version(package_version: str) -> str:
    """``1:29.1.1+dfsg-1`` -> ``29.1.1``."""
    return re.split(r"[+~-]", re.sub(r"^\d+:", "", package_version.strip()))[0]


class Broker:
    """One broker of a run: ``key`` (the column), ``url``, ``version``,
    ``erlang``, ``pids()`` (the roots of its processes, for gate.py),
    ``describe()``, ``header()`` and ``stop()``."""

    def __init__(self, key: str, node, kind: str, version: str, erlang: str, where: str, note: str = ""):
        self.key, self.node, self.kind, self.note = key, node, kind, note
        self.url = node.url
        self.version = version
        self.erlang = short_version(erlang) if erlang else "?"
        self.where = where

    def pids(self) -> list[int]:
        if isinstance(self.node, ContainerRabbitMQ):
            return self.node.pids()
        return [self.node.proc.pid] if self.node.proc else []

    def header(self) -> str:
        return f"RabbitMQ {self.version} ({self.key}, Erlang {self.erlang})"

    def describe(self) -> str:
        return f"RabbitMQ {self.version} on Erlang {self.erlang}, {self.where}"

    def as_dict(self) -> dict:
        return {"key": self.key, "kind": self.kind, "version": self.version, "erlang": self.erlang,
                "described": self.describe(), "header": self.header(), "note": self.note}

    def stop(self) -> None:
        self.node.stop()


def start_container(suite: str) -> Broker:
    node = ContainerRabbitMQ(suite, prefix=PREFIX).start()
    return Broker(suite, node, "podman", node.version, node.erlang,
                  f"{node.os_name} (podman container {node.name}, 127.0.0.1:{node.port})")


def start_loopback(instead_of: str = "", note: str = "") -> Broker:
    node = RabbitMQ().start()
    version = node.ctl("version").stdout.strip()
    erlang = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "erlang-base"],
                            capture_output=True, text=True).stdout
    key = f"loopback (for {instead_of})" if instead_of else "loopback"
    return Broker(key, node, "loopback", version, erlang, "the host's loopback rabbitmq-server", note)


def start_broker(choice: str, fallback: bool = True) -> tuple[Broker | None, str]:
    """(broker, note): the container broker of suite ``choice`` or ``loopback``. When a
    container broker fails, the loopback one takes its place if ``fallback``; else
    (None, why)."""
    if choice == "loopback":
        return start_loopback(), ""
    try:
        return start_container(choice), ""
    except Exception as exc:  # noqa: BLE001 - any failure means: fall back
        why = f"{choice} broker failed ({str(exc)[:500]})"
    if not fallback:
        return None, f"{why}; not measured (the loopback broker is already in this run)"
    note = f"{why}; fell back to the host's loopback rabbitmq-server"
    return start_loopback(instead_of=choice, note=note), note
