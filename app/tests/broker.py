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


class ContainerRabbitMQ:
    """RabbitMQ from a Debian suite's own package, in a podman systemd
    container of the harness's base images (``localhost/celery-stack-base:<suite>``:
    forky carries 4.3, trixie 4.0), published on a free 127.0.0.1 port. Same
    surface as :class:`RabbitMQ` (``url``, ``port``, ``ctl``,
    ``amqp_connection``, ``stop``); the user and its password are generated and
    the password reaches ``rabbitmqctl`` on its standard input only. After
    ``start()``: ``version`` (RabbitMQ), ``erlang`` (the erlang-base package)
    and ``os_name`` of the container, and ``pids()`` (its processes' root, for
    a benchmark's load accounting)."""

    IMAGE = "localhost/celery-stack-base:{suite}"

    def __init__(self, suite: str, boot_timeout: float = 180.0, prefix: str = "celery-stack-test-rmq"):
        """``prefix``: the container's name before ``-<suite>-<random>``."""
        self.suite = suite
        self.boot_timeout = boot_timeout
        token = secrets.token_hex(4)
        self.name = f"{prefix}-{suite}-{token}"
        self.port = free_port()
        self.user = f"test{token}"
        self.password = secrets.token_urlsafe(18)
        self.version = ""
        self.erlang = ""
        self.os_name = ""
        self.started = False

    @property
    def url(self) -> str:
        return f"amqp://{quote(self.user)}:{quote(self.password)}@127.0.0.1:{self.port}//"

    def _podman(self, *args: str, stdin: str | None = None, timeout: float = 300,
                check: bool = True) -> subprocess.CompletedProcess:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ, CONTAINERS_CONF=os.path.join(root, "harness", "containers.conf"))
        try:
            proc = subprocess.run(["podman", *args], input=stdin, env=env, capture_output=True, text=True,
                                  timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BrokerUnavailable(f"podman {args[0]} failed: {exc}") from exc
        if check and proc.returncode != 0:
            raise BrokerUnavailable(f"podman {' '.join(args[:2])} failed ({proc.returncode}): "
                                    f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
        return proc

    def _exec(self, *argv: str, stdin: str | None = None, timeout: float = 300) -> str:
        return self._podman("exec", "-i", self.name, *argv, stdin=stdin, timeout=timeout).stdout

    def start(self) -> "ContainerRabbitMQ":
        image = self.IMAGE.format(suite=self.suite)
        if self._podman("image", "exists", image, check=False).returncode != 0:
            raise BrokerUnavailable(f"{image} is missing: harness/prepare builds it")
        # forky's systemd needs cgroup v2: see harness/image/celery-stack-init
        options, init = ((["--cgroupns=private"], "/usr/local/sbin/celery-stack-init") if self.suite == "forky"
                         else ([], "/sbin/init"))
        self._podman("run", "--detach", "--name", self.name, "--privileged", "--systemd=always",
                     "--publish", f"127.0.0.1:{self.port}:5672", *options, image, init)
        self.started = True
        try:
            deadline = time.monotonic() + 60
            while self._podman("exec", self.name, "systemctl", "is-system-running",
                               check=False).stdout.strip() not in ("running", "degraded"):
                if time.monotonic() > deadline:
                    raise BrokerUnavailable(f"{self.name} did not boot systemd")
                time.sleep(1)
            # the image's warm apt cache holds the suite's rabbitmq-server
            self._exec("sh", "-c", "DEBIAN_FRONTEND=noninteractive apt-get install -y -q rabbitmq-server "
                       ">/tmp/apt.log 2>&1 || { tail -20 /tmp/apt.log; exit 1; }")
            self._exec("rabbitmqctl", "await_startup", timeout=self.boot_timeout)
            self._exec("rabbitmqctl", "add_user", self.user, stdin=self.password + "\n")
            self._exec("rabbitmqctl", "set_permissions", "-p", "/", self.user, ".*", ".*", ".*")
            self._exec("rabbitmqctl", "set_user_tags", self.user, "administrator")
            self.version = self._exec("rabbitmqctl", "version").strip()
            self.erlang = self._exec("dpkg-query", "-W", "-f", "${Version}", "erlang-base").strip()
            self.os_name = self._exec("sh", "-c", ". /etc/os-release; echo \"$PRETTY_NAME\"").strip()
            deadline = time.monotonic() + 60
            while True:
                try:
                    self.amqp_connection().close()
                    return self
                except Exception as exc:  # the published port may lag the node
                    if time.monotonic() > deadline:
                        raise BrokerUnavailable(f"RabbitMQ {self.version} in {self.name} refuses AMQP "
                                                f"on 127.0.0.1:{self.port}: {exc!r}") from exc
                    time.sleep(0.5)
        except BaseException:
            self.stop()
            raise

    def amqp_connection(self):
        import amqp

        conn = amqp.Connection(host=f"127.0.0.1:{self.port}", userid=self.user, password=self.password,
                               virtual_host="/", connect_timeout=5)
        conn.connect()
        return conn

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """rabbitmqctl in the container."""
        return self._podman("exec", self.name, "rabbitmqctl", *args, timeout=timeout, check=False)

    def pids(self) -> list[int]:
        """The container's init process on the host (its descendants are the node): [] when not running."""
        if not self.started:
            return []
        pid = self._podman("inspect", self.name, "--format", "{{.State.Pid}}", check=False).stdout.strip()
        return [int(pid)] if pid.isdigit() and pid != "0" else []

    def tail(self, lines: int = 40) -> str:
        return self._podman("exec", self.name, "journalctl", "-u", "rabbitmq-server", "-n", str(lines),
                            "--no-pager", check=False).stdout

    def stop(self) -> None:
        if self.started:
            self._podman("rm", "--force", "--time", "10", self.name, check=False)
            self.started = False

    def __enter__(self) -> "ContainerRabbitMQ":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def broker_from_environment():
    """The broker the tests run against: ``CELERY_STACK_TEST_BROKER`` names a
    base image suite (``forky``: RabbitMQ 4.3, ``trixie``: 4.0) or
    ``loopback`` (the host's own rabbitmq-server, the default)."""
    choice = os.environ.get("CELERY_STACK_TEST_BROKER", "loopback").strip() or "loopback"
    if choice == "loopback":
        return RabbitMQ()
    if choice not in ("forky", "trixie", "bookworm"):
        raise BrokerUnavailable(f"CELERY_STACK_TEST_BROKER={choice!r}: expected loopback, forky, trixie or bookworm")
    return ContainerRabbitMQ(choice)
