"""Against a real RabbitMQ on loopback and real `celery worker` processes.

No MongoDB here: everything these tests check goes through the broker, and
the tasks of worker_tasks.py leave their traces in files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from workers import Worker, make_client

pytestmark = pytest.mark.integration

CLI = os.path.join(os.path.dirname(sys.executable), "celery-stack")


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2, worker=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    log = f"\n--- worker log (tail):\n{worker.log()[-5000:]}" if worker is not None else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{log}")


def lines(marker_dir: str, name: str) -> list[dict]:
    try:
        with open(os.path.join(marker_dir, name)) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def queue_depth(rabbitmq, name: str) -> int:
    conn = rabbitmq.amqp_connection()
    try:
        ch = conn.channel()
        return ch.queue_declare(name, passive=True).message_count
    finally:
        conn.close()



@pytest.fixture(scope="module")
def client(integration_env):
    app = make_client(integration_env)
    yield app
    app.close()


def run_cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------------------


def test_health_round_trip_through_the_broker_only(worker, integration_env, clean_env):
    r = run_cli({**clean_env, **integration_env}, "health", "--timeout", "60")
    assert r.returncode == 0, r.stdout + r.stderr
    answer = json.loads(r.stdout)
    assert answer["status"] == "ok" and answer["hostname"].startswith("itest@")
    assert answer["queue"] == "short"


def test_health_exit_code_1_without_broker(clean_env, integration_env):
    env = {**clean_env, **integration_env, "CELERY_STACK_BROKER_URLS": "amqp://u:p@127.0.0.1:1//",
           "CELERY_STACK_BROKER_CONNECT_TIMEOUT": "2"}
    r = run_cli(env, "health", "--timeout", "5")
    assert r.returncode == 1
    assert json.loads(r.stdout)["status"] == "failed"


def test_health_exit_code_1_without_worker(rabbitmq, clean_env, integration_env):
    env = {**clean_env, **integration_env, "CELERY_STACK_SHORT_QUEUE": "nobody_listens"}
    r = run_cli(env, "health", "--timeout", "3")
    assert r.returncode == 1 and "no worker answered" in r.stdout


def test_config_error_exit_code(clean_env):
    r = run_cli({**clean_env, "CELERY_STACK_LONG_TIME_LIMIT": "soon"}, "health")
    assert r.returncode == 2 and "CELERY_STACK_LONG_TIME_LIMIT" in r.stderr


def test_declared_queues_suit_rabbitmq_4(worker, rabbitmq):
    """Task queues are quorum with DLX and delivery limit; no transient non-exclusive queue exists."""
    r = rabbitmq.ctl("list_queues", "name", "type", "durable", "auto_delete", "exclusive", "arguments",
                     "--formatter", "json")
    assert r.returncode == 0, r.stderr
    queues = {q["name"]: q for q in json.loads(r.stdout)}
    for name in ("short", "long"):
        q = queues[name]
        assert q["type"] == "quorum" and q["durable"]
        # rabbitmqctl's JSON lists arguments as [name, type, value] triples
        args = q["arguments"] if isinstance(q["arguments"], dict) else {a[0]: a[-1] for a in q["arguments"]}
        assert args["x-delivery-limit"] == 2
        assert args["x-dead-letter-exchange"] == "celery_stack.dlx"
    assert queues["celery_stack.dead_letter"]["type"] == "quorum"
    pidbox = [q for n, q in queues.items() if n.endswith(".celery.pidbox")]
    assert pidbox and all(q["exclusive"] and not q["durable"] for q in pidbox)
    transient_shared = [n for n, q in queues.items() if not q["durable"] and not q["exclusive"]]
    assert transient_shared == [], f"RabbitMQ 4 deprecates transient non-exclusive queues: {transient_shared}"


def test_routing_to_short_and_long_queues(rabbitmq, integration_env):
    """No worker on these queue names: the messages stay where the routes put them."""
    env = {**integration_env, "CELERY_STACK_SHORT_QUEUE": "r_short", "CELERY_STACK_LONG_QUEUE": "r_long"}
    app = make_client(env)
    try:
        app.send_task("celery_stack_app.analyse", args=("0" * 64,))
        app.send_task("celery_stack_app.analyse_chunk", args=("b", ["0" * 64]))
        app.send_task("celery_stack_app.check_website", kwargs={"check": {"url": "http://x"}})
        app.send_task("celery_stack_app.noop")
        app.send_task("celery_stack_app.health")
    finally:
        app.close()
    assert queue_depth(rabbitmq, "r_long") == 2
    assert queue_depth(rabbitmq, "r_short") == 3


def test_tasks_reach_the_worker_on_their_queue(worker, client, marker_dir):
    client.send_task("tests.record", args=(marker_dir, "s"), queue="short")
    client.send_task("tests.record", args=(marker_dir, "l"), queue="long")
    short = wait_for(lambda: lines(marker_dir, "s.runs"), 30, "the short task")
    long_ = wait_for(lambda: lines(marker_dir, "l.runs"), 30, "the long task")
    assert short[0]["routing_key"] == "short" and long_[0]["routing_key"] == "long"


def test_transient_error_is_retried_with_delayed_delivery(worker, client, marker_dir):
    """Retry countdowns go through Celery's native delayed delivery (quorum queues, topic exchange)."""
    client.send_task("tests.flaky", args=(marker_dir, "f"), queue="long")
    done = wait_for(lambda: lines(marker_dir, "f.done"), 60, "the retried task")
    attempts = lines(marker_dir, "f.attempts")
    assert len(attempts) == 2 and done[0]["retries"] == 1
    assert attempts[1]["time"] - attempts[0]["time"] >= 0.9  # waited for its backoff
    assert "Retry in" in worker.log()


def test_non_transient_error_is_not_redelivered(worker, client, marker_dir, rabbitmq):
    client.send_task("tests.bad_input", args=(marker_dir, "b"), queue="short")
    wait_for(lambda: lines(marker_dir, "b.attempts"), 30, "the failing task")
    time.sleep(3)
    assert len(lines(marker_dir, "b.attempts")) == 1
    assert queue_depth(rabbitmq, "short") == 0  # acked (failure recorded), not requeued


def test_killed_pool_process_task_is_redelivered(worker, client, marker_dir):
    """acks_late + reject_on_worker_lost: the task whose process died runs again."""
    client.send_task("tests.slow_once", args=(marker_dir, "k", 120), queue="long")
    started = wait_for(lambda: lines(marker_dir, "k.started"), 30, "the slow task to start")
    os.kill(started[0]["pid"], signal.SIGKILL)
    done = wait_for(lambda: lines(marker_dir, "k.done"), 60, "the redelivered task", worker=worker)
    assert len(lines(marker_dir, "k.started")) == 2
    assert done[0]["pid"] != started[0]["pid"]
    assert done[0]["redelivered"] is True


def test_killed_worker_task_is_redelivered_to_another(integration_env, clean_env, client, marker_dir):
    """A worker that dies (SIGKILL, as in a crash) with an unacked task: another worker gets it."""
    env = {**clean_env, **integration_env, "CELERY_STACK_SHORT_QUEUE": "k_short",
           "CELERY_STACK_LONG_QUEUE": "k_long"}
    first = Worker(env, queues="k_long", concurrency=1, include="worker_tasks", name="crashy").start()
    second = None
    try:
        client.send_task("tests.slow_once", args=(marker_dir, "w", 120),
                         exchange="celery_stack", routing_key="k_long")
        started = wait_for(lambda: lines(marker_dir, "w.started"), 30, "the slow task to start")
        assert started[0]["hostname"].startswith("crashy@")
        first.kill()
        second = Worker(env, queues="k_long", concurrency=1, include="worker_tasks", name="rescuer").start()
        done = wait_for(lambda: lines(marker_dir, "w.done"), 60, "the redelivered task")
        assert done[0]["hostname"].startswith("rescuer@") and done[0]["redelivered"] is True
    finally:
        first.stop()
        first.cleanup()
        if second:
            second.stop()
            second.cleanup()


def test_hard_time_limit_kills_and_does_not_redeliver(worker, client, marker_dir, rabbitmq):
    client.send_task("tests.overrun", args=(marker_dir, "t"), queue="short")
    wait_for(lambda: lines(marker_dir, "t.soft"), 30, "the soft time limit")
    wait_for(lambda: "Hard time limit (4" in worker.log(), 30, "the hard time limit")
    time.sleep(2)
    assert len(lines(marker_dir, "t.attempts")) == 1
    assert lines(marker_dir, "t.survived") == []
    assert queue_depth(rabbitmq, "short") == 0


def test_poison_message_ends_in_dead_letter_queue_and_can_be_requeued(
        worker, client, marker_dir, rabbitmq, integration_env, clean_env):
    env = {**clean_env, **integration_env}
    before = queue_depth(rabbitmq, "celery_stack.dead_letter")
    result = client.send_task("tests.crash", args=(marker_dir, "p"), queue="long")
    wait_for(lambda: queue_depth(rabbitmq, "celery_stack.dead_letter") == before + 1, 90,
             "the poison message in the dead-letter queue", worker=worker)
    attempts = len(lines(marker_dir, "p.attempts"))
    assert 2 <= attempts <= 4  # delivery limit 2: a bounded number of tries, not a loop
    time.sleep(2)
    assert len(lines(marker_dir, "p.attempts")) == attempts

    listing = run_cli(env, "dlq", "list")
    assert listing.returncode == 0, listing.stderr
    shown = json.loads(listing.stdout)
    mine = [m for m in shown["shown"] if m["id"] == result.id]
    assert mine and mine[0]["task"] == "tests.crash" and mine[0]["queue"] == "long"
    assert queue_depth(rabbitmq, "celery_stack.dead_letter") == before + 1  # listing consumed nothing

    requeued = run_cli(env, "dlq", "requeue", "--id", result.id)
    assert requeued.returncode == 0, requeued.stderr
    assert json.loads(requeued.stdout)["requeued"] == 1
    # it runs again (and, still poisonous, comes back to the DLQ after the same few tries)
    wait_for(lambda: len(lines(marker_dir, "p.attempts")) > attempts, 60, "the requeued message to run")
    wait_for(lambda: queue_depth(rabbitmq, "celery_stack.dead_letter") == before + 1, 90,
             "the poison message back in the dead-letter queue")


def test_worker_sends_task_events_for_flower(worker, client, marker_dir):
    """Events reach a monitor (as Flower would consume them) on an exclusive event queue."""
    import socket

    seen: list[dict] = []
    with client.connection_for_read() as conn:
        recv = client.events.Receiver(conn, handlers={"*": seen.append})
        with recv.consumer_context():
            result = client.send_task("tests.record", args=(marker_dir, "e"), queue="short")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if any(e.get("type") == "task-succeeded" and e.get("uuid") == result.id for e in seen):
                    break
                try:
                    conn.drain_events(timeout=1)
                except socket.timeout:
                    pass
    types = {e["type"] for e in seen if e.get("uuid") == result.id}
    assert {"task-received", "task-started", "task-succeeded"} <= types, types


def test_beat_schedules_website_checks_from_the_config_file(worker, integration_env, clean_env, tmp_path):
    """celery beat builds its schedule from CELERY_STACK_WEBCHECK_CONFIG; the worker runs the check."""
    import http.server
    import threading

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"beat says hello"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    checks = tmp_path / "checks.yaml"
    checks.write_text(f"- name: local-hello\n  url: http://127.0.0.1:{server.server_address[1]}/\n"
                      f"  interval: 10\n  contains: hello\n")
    env = {**clean_env, **integration_env, "CELERY_STACK_WEBCHECK_CONFIG": str(checks)}
    celery = os.path.join(os.path.dirname(sys.executable), "celery")
    beat = subprocess.Popen([celery, "-A", "celery_stack_app.celery_app", "beat", "-s", str(tmp_path / "sched"),
                             "--pidfile=", "-l", "info"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        line = wait_for(lambda: [l for l in worker.log().splitlines()
                                 if "check local-hello: status=200" in l], 60, "a scheduled check", worker=worker)
        assert "error=None" in line[0]
    finally:
        beat.terminate()
        beat.wait(timeout=30)
        server.shutdown()


def prefetch_count(client, node: str) -> int:
    stats = client.control.inspect(destination=[node], timeout=5).stats() or {}
    return stats[node]["prefetch_count"]


def test_prefetch_follows_the_queues_unless_given(worker, integration_env, clean_env, client):
    """-Q long (or all queues) -> 1 per process; short-only -> the short multiplier; the flag wins."""
    import socket

    host = socket.gethostname()
    assert prefetch_count(client, f"itest@{host}") == 2 * 1           # short,long: 2 processes x 1
    env = {**clean_env, **integration_env, "CELERY_STACK_SHORT_PREFETCH_MULTIPLIER": "5"}
    for name, extra, expected in (("pf-short", [], 2 * 5), ("pf-flag", ["--prefetch-multiplier", "3"], 2 * 3)):
        w = Worker(env, queues="short", concurrency=2, name=name, extra_args=extra).start()
        try:
            assert prefetch_count(client, f"{name}@{host}") == expected, name
        finally:
            w.stop()
            w.cleanup()
