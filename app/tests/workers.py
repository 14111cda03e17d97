"""Start a real ``celery worker`` subprocess against a test broker (tests and benchmarks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

from celery import Celery

from celery_stack_app import celery_app as ca
from celery_stack_app import settings as s_mod

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def celery_bin() -> str:
    return os.path.join(os.path.dirname(sys.executable), "celery")


class Worker:
    """``celery -A <app> worker`` in its own session; stopped by its pid/session only."""

    def __init__(self, env: dict[str, str], app: str = "celery_stack_app.celery_app",
                 queues: str | None = None, concurrency: int = 2, name: str = "w1",
                 include: str | None = None, extra_args: list[str] | None = None,
                 pythonpath: list[str] | None = None, loglevel: str = "INFO"):
        self.name = name
        fd, self.logfile = tempfile.mkstemp(prefix=f"celery-{name}-", suffix=".log")
        os.close(fd)
        args = [celery_bin(), "-A", app, "worker", "-n", f"{name}@%h", "-c", str(concurrency),
                "-P", "prefork", "--without-mingle", "--without-gossip", "-l", loglevel,
                "--logfile", self.logfile]
        if queues:
            args += ["-Q", queues]
        if include:
            args += ["-I", include]
        args += extra_args or []
        self.args = args
        self.env = dict(os.environ)
        self.env.update(env)
        paths = (pythonpath or []) + [TESTS_DIR]
        if self.env.get("PYTHONPATH"):
            paths.append(self.env["PYTHONPATH"])
        self.env["PYTHONPATH"] = os.pathsep.join(paths)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0, ready=None) -> "Worker":
        """Start and wait until ready: the " ready." log line (INFO), or ``ready()`` returning true."""
        self.proc = subprocess.Popen(self.args, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=open(self.logfile + ".err", "wb"),
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited with {self.proc.returncode}:\n{self.log()}")
            if (ready() if ready is not None else " ready." in self.log()):
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"worker {self.name} not ready within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        text = ""
        for path in (self.logfile, self.logfile + ".err"):
            try:
                with open(path, errors="replace") as f:
                    text += f.read()
            except OSError:
                pass
        return text

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # warm shutdown
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:  # pool children left behind (e.g. after the main process was killed): our session only
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL the main process and its pool (a crashed machine, as far as RabbitMQ can tell)."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)

    def cleanup(self) -> None:
        for path in (self.logfile, self.logfile + ".err"):
            try:
                os.unlink(path)
            except OSError:
                pass


def make_client(env: dict[str, str]) -> Celery:
    """A publishing app with the workers' topology (tasks sent by name)."""
    settings = s_mod.load(env)
    app = Celery("test-client", set_as_current=False)
    app.conf.update(ca.build_config(settings))
    return app
