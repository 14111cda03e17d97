"""The converged cluster, read-only: brokers clustered, app topology, workers, beat, Flower."""

import json

import pytest
from cluster_helpers import VHOST, http, wait_for


def test_rabbitmq_nodes_form_one_cluster(node, brokers):
    status = json.loads(node(brokers[0]).check_output(
        "rabbitmqctl cluster_status --formatter json"))
    expected = {f"rabbit@{name}" for name in brokers}
    assert set(status["running_nodes"]) == expected
    assert not status.get("partitions")
    assert not status.get("alarms")


def test_application_queues_are_replicated_quorum_queues(management, brokers):
    status, queues = management("GET", f"/queues/{VHOST}?columns=name,type,members,arguments")
    assert status == 200, queues
    by_name = {q["name"]: q for q in queues}
    for name in ("short", "long", "celery_stack.dead_letter"):
        assert name in by_name, f"queue {name} missing: {sorted(by_name)}"
        assert by_name[name]["type"] == "quorum"
        assert {m.split("@", 1)[1] for m in by_name[name].get("members", [])} == set(brokers)


@pytest.mark.parametrize("pool", ["short", "long"])
def test_every_worker_host_runs_both_pools(node, workers, pool):
    for host in workers:
        assert node(host).service(f"celery-worker-{pool}").is_running, f"{pool} pool not running on {host}"


def test_exactly_one_beat(node, workers):
    running = [h for h in workers if node(h).run("systemctl is-active celery-beat").stdout.strip() == "active"]
    assert running == [workers[0]]


def test_flower_sees_every_pool(lb_address, secret, workers):
    auth = ("admin", secret("flower_admin_password"))
    expected = {f"{pool}@{host}" for host in workers for pool in ("short", "long")}

    def seen():
        status, body = http("GET", f"http://{lb_address}/flower/api/workers?refresh=1", auth=auth, timeout=60)
        names = set(json.loads(body)) if status == 200 else set()
        return names if expected <= names else None

    wait_for(seen, 120, interval=3, what=f"Flower to list {sorted(expected)}")


def test_no_transient_nonexclusive_queues(node, brokers):
    out = node(brokers[0]).check_output(
        f"rabbitmqctl list_queues -p {VHOST} name durable exclusive --formatter json")
    bad = [q["name"] for q in json.loads(out) if not q["durable"] and not q["exclusive"]]
    assert not bad, f"transient non-exclusive queues (deprecated in RabbitMQ 4): {bad}"
