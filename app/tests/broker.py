"""A throw-away RabbitMQ node on loopback, for tests and benchmarks.

Reusable without pytest (the benchmarks import it)::

    with RabbitMQ() as rmq:
        url = rmq.url        # amqp://USER:PASS@127.0.0.1:PORT//
        ...

Everything lives in a temporary directory: its own HOME (Erlang cookie),
RABBITMQ_MNESIA_BASE, RABBITMQ_LOG_BASE, RABBITMQ_CONFIG_FILE,
RABBITMQ_ENABLED_PLUGINS_FILE (no plugins), a unique RABBITMQ_NODENAME, free
ports for AMQP, Erlang distribution and its own epmd, all bound to
127.0.0.1; a generated user and password (no guest). Run as root, the node
drops to the ``rabbitmq`` system user when it exists. ``stop()`` stops the
node (SIGTERM: graceful), then its epmd, and removes the directory.

Needs Debian's ``rabbitmq-server`` package (installed by harness/prepare;
the package must not start its own service: a policy-rc.d prevents it).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from urllib.parse import quote

SERVER_GLOBS = (
    "/usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin/rabbitmq-server",
)


class BrokerUnavailable(RuntimeError):
    pass


def find_server() -> str | None:
    override = os.environ.get("RABBITMQ_SERVER_BIN")
    if override:
        return override
    for pattern in SERVER_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[-1]
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RabbitMQ:
    def __init__(self, boot_timeout: float = 90.0, keep_dir: bool = False, advanced_config: str | None = None):
        """``advanced_config``: Erlang terms for advanced.config (e.g. a test's short timeouts)."""
        self.server = find_server()
        if not self.server:
            raise BrokerUnavailable("rabbitmq-server is not installed (apt-get install rabbitmq-server; "
                                    "harness/prepare does it)")
        self.boot_timeout = boot_timeout
        self.keep_dir = keep_dir
        self.advanced_config = advanced_config
        self.dir = tempfile.mkdtemp(prefix="celery-stack-rmq-")
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        token = secrets.token_hex(4)
        self.nodename = f"cstest{token}@localhost"
        self.user = f"test{token}"
        self.password = secrets.token_urlsafe(18)
        self.proc: subprocess.Popen | None = None
        self._run_as = None
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("rabbitmq")
                self._run_as = (pw.pw_uid, pw.pw_gid)
            except KeyError:
                pass

    # ------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"amqp://{quote(self.user)}:{quote(self.password)}@127.0.0.1:{self.port}//"

    @property
    def env(self) -> dict[str, str]:
        home = os.path.join(self.dir, "home")
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": home,
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": os.path.join(self.dir, "mnesia"),
            "RABBITMQ_LOG_BASE": os.path.join(self.dir, "log"),
            "RABBITMQ_CONFIG_FILE": os.path.join(self.dir, "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": os.path.join(self.dir, "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": os.path.join(self.dir, "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(self.dir, "enabled_plugins"),
            "RABBITMQ_PID_FILE": os.path.join(self.dir, "rabbitmq.pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        return env

    def _write_files(self) -> None:
        for sub in ("home", "mnesia", "log"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        with open(os.path.join(self.dir, "rabbitmq.conf"), "w") as f:
            f.write(
                "# generated for one test session\n"
                f"listeners.tcp.1 = 127.0.0.1:{self.port}\n"
                f"default_user = {self.user}\n"
                f"default_pass = {self.password}\n"
                "loopback_users = none\n"
                "log.console = false\n"
                "log.file.level = info\n"
                # the machine is shared: never block publishers on a disk/memory alarm in tests
                "disk_free_limit.absolute = 50MB\n"
                "vm_memory_high_watermark.relative = 0.8\n"
            )
        with open(os.path.join(self.dir, "enabled_plugins"), "w") as f:
            f.write("[].\n")
        if self.advanced_config:
            with open(os.path.join(self.dir, "advanced.config"), "w") as f:
                f.write(self.advanced_config.rstrip().rstrip(".") + ".\n")
        # the Erlang cookie, private to this node and its CLI tools
        cookie = os.path.join(self.dir, "home", ".erlang.cookie")
        with open(cookie, "w") as f:
            f.write(secrets.token_hex(20).upper())
        os.chmod(cookie, 0o400)
        if self._run_as:
            uid, gid = self._run_as
            os.chown(self.dir, uid, gid)
            for root, dirs, files in os.walk(self.dir):
                for name in dirs + files:
                    os.chown(os.path.join(root, name), uid, gid)

    def _preexec(self):
        if self._run_as:
            uid, gid = self._run_as

            def drop():
                os.setgid(gid)
                os.setgroups([])
                os.setuid(uid)

            return drop
        return None

    # ------------------------------------------------------------------

    def start(self) -> "RabbitMQ":
        self._write_files()
        log = open(os.path.join(self.dir, "server.out"), "wb")
        self.proc = subprocess.Popen(
            [self.server], env=self.env, cwd=self.dir, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=self._preexec())
        log.close()
        deadline = time.monotonic() + self.boot_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerUnavailable(f"rabbitmq-server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                self.amqp_connection().close()
                return self
            except Exception as exc:  # not up yet
                last_error = exc
                time.sleep(0.5)
        self.stop()
        raise BrokerUnavailable(f"RabbitMQ did not accept AMQP within {self.boot_timeout} s "
                                f"({last_error!r}):\n{self.tail()}")

    def amqp_connection(self):
        import amqp

        conn = amqp.Connection(host=f"127.0.0.1:{self.port}", userid=self.user, password=self.password,
                               virtual_host="/", connect_timeout=5)
        conn.connect()
        return conn

    def tail(self, lines: int = 40) -> str:
        out = []
        for path in [os.path.join(self.dir, "server.out")] + glob.glob(os.path.join(self.dir, "log", "*.log")):
            try:
                with open(path, errors="replace") as f:
                    out.append(f"--- {path}\n" + "".join(f.readlines()[-lines:]))
            except OSError:
                pass
        return "\n".join(out)

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """rabbitmqctl against this node (slow to start: ~2 s each)."""
        ctl = os.path.join(os.path.dirname(self.server), "rabbitmqctl")
        return subprocess.run([ctl, "-n", self.nodename, *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, preexec_fn=self._preexec())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # the script stops the node gracefully
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # our own session only
                self.proc.wait(timeout=10)
        # the node's epmd (on our private port) outlives it: stop it too
        subprocess.run(["epmd", "-port", str(self.epmd_port), "-kill"], env=self.env,
                       capture_output=True, timeout=10)
        if not self.keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "RabbitMQ":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
