"""Worker faults (disruptive): a pool process SIGKILLed in the middle of a long task.

The long-running, broker-only task is the application's website check
(`check_website`, no MongoDB configured) sent to the `long` queue (prefork pool,
prefetch 1, late acks) against a slow HTTP endpoint on the Flower host; a
watcher on each worker host (tests/scripts/killer.py) SIGKILLs the pool child
that holds a connection to that endpoint for more than a second.

* once: the task is redelivered and completes exactly once;
* every time (a poison message): after the queue's delivery limit the
  message is dead-lettered to celery_stack.dead_letter instead of looping.
"""

import json
import time
import uuid

import pytest
from cluster_helpers import APP_USER, SCRIPTS, SLOW_PORT, VHOST, podman, report, wait_for

pytestmark = pytest.mark.disruptive
CHECK = "celery_stack_app.check_website"
DLQ = "celery_stack.dead_letter"


@pytest.fixture(scope="module")
def killers(workers, slow_server):
    _, _, server_ip = slow_server
    for host in workers:
        podman("exec", host, "mkdir", "-p", "/tmp/cluster-tests")
        podman("cp", str(SCRIPTS / "killer.py"),
               f"{host}:/tmp/cluster-tests/killer.py")
        podman("exec", host, "rm", "-f", "/tmp/cluster-tests/killer.log")
        podman("exec", "-d", host, "python3", "/tmp/cluster-tests/killer.py", server_ip, str(SLOW_PORT),
               "1.0", "600", "/tmp/cluster-tests/killer.log", "/tmp/cluster-tests/killer.pid")

    def kills() -> dict[str, int]:
        out = {}
        for host in workers:
            log = podman("exec", host, "sh", "-c", "cat /tmp/cluster-tests/killer.log 2>/dev/null || true").stdout
            out[host] = len(log.splitlines())
        return out

    yield kills
    for host in workers:
        pid = podman("exec", host, "cat", "/tmp/cluster-tests/killer.pid", check=False).stdout.strip()
        if pid.isdigit():
            podman("exec", host, "kill", pid, check=False)


def _send_check(run_app_script, host, task_id, url):
    kwargs = json.dumps({"check": {"name": task_id, "url": url, "interval": 300}})
    result = json.loads(run_app_script(host, "producer.py", "send", CHECK, "long", "1", task_id, kwargs))
    assert result["confirmed"] == [f"{task_id}0"], result
    return f"{task_id}0"


def test_killed_pool_process_task_is_redelivered_and_completes_once(
        workers, slow_server, killers, run_app_script, executions):
    base, requests_for, _ = slow_server
    since = time.time()
    kills_before = sum(killers().values())
    prefix = f"cl-fault-{uuid.uuid4().hex[:8]}-"
    path = f"/{prefix}"
    tid = _send_check(run_app_script, workers[0], prefix, f"{base}{path}?slow=first")

    def done():
        seen = executions(prefix, since)
        return seen if sum(c[tid] for c in seen.values()) >= 1 else None

    wait_for(done, 180, interval=2, what=f"task {tid} to complete after its worker process was killed")
    time.sleep(5)  # a duplicate, if any, would run right after the first completion
    seen = executions(prefix, since)
    runs = {host: c[tid] for host, c in seen.items()}
    hits = requests_for(path)
    kills = sum(killers().values()) - kills_before
    report("worker-fault", {"task": tid, "requests_seen_by_endpoint": len(hits), "pool_processes_killed": kills,
                            "successful_executions_per_host": runs})
    assert kills >= 1, "no pool process was killed: the fault never happened"
    assert len(hits) >= 2, "the task was not redelivered after its process was killed"
    assert sum(runs.values()) == 1, f"expected exactly one successful execution, got {runs}"


def _dead_lettered(amqp_connect, app_password, task_id):
    """The dead-lettered message of ``task_id`` (acked: removed), or None; others stay."""
    conn = amqp_connect(APP_USER, app_password, VHOST)
    try:
        channel = conn.channel()
        _, count, _ = channel.queue_declare(DLQ, passive=True)
        for _ in range(count):
            msg = channel.basic_get(DLQ, no_ack=False)
            if msg is None:
                break
            headers = msg.properties.get("application_headers") or {}
            if headers.get("id") == task_id:
                channel.basic_ack(msg.delivery_tag)
                return headers
        return None
    finally:
        conn.close()  # unacked messages of other tests go back to the queue


def test_poison_message_is_dead_lettered_after_the_delivery_limit(
        workers, slow_server, killers, run_app_script, executions, amqp_connect, app_password, management):
    base, requests_for, _ = slow_server
    since = time.time()
    kills_before = sum(killers().values())
    prefix = f"cl-poison-{uuid.uuid4().hex[:8]}-"
    path = f"/{prefix}"
    tid = _send_check(run_app_script, workers[0], prefix, f"{base}{path}?slow=always")
    headers = wait_for(lambda: _dead_lettered(amqp_connect, app_password, tid), 300, interval=3,
                       what=f"poison message {tid} in {DLQ}")
    deaths = headers.get("x-death") or []
    _, queue = management("GET", f"/queues/{VHOST}/long")
    limits = [v for v in ((queue.get("arguments") or {}).get("x-delivery-limit"),
                          (queue.get("effective_policy_definition") or {}).get("delivery-limit")) if v is not None]
    hits = requests_for(path)
    kills = sum(killers().values()) - kills_before
    figures = {"task": tid, "deliveries_seen_by_endpoint": len(hits), "pool_processes_killed": kills,
               "delivery_limit": min(limits) if limits else None,
               "x-first-death-reason": headers.get("x-first-death-reason"),
               "x-first-death-queue": headers.get("x-first-death-queue"),
               "successful_executions": sum(c[tid] for c in executions(prefix, since).values())}
    report("poison-message", figures)
    assert headers.get("x-first-death-reason") == "delivery_limit", headers
    assert headers.get("x-first-death-queue") == "long"
    assert figures["successful_executions"] == 0
    if limits:
        assert len(hits) >= min(limits), "dead-lettered before the delivery limit was reached"
    assert deaths, "no x-death history on the dead-lettered message"
