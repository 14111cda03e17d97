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



def test_dead_letter_queue_has_its_own_policy(management):
    """The DLQ is matched by its own policy (RabbitMQ 4.0.5 here): no delivery limit,
    no dead-letter exchange, its own bound; the task queues dead-letter at least once."""
    status, policies = management("GET", f"/policies/{VHOST}")
    assert status == 200, policies
    by_name = {p["name"]: p for p in policies}
    assert set(by_name) == {"celery-stack-classic", "celery-stack-quorum",
                            "celery-stack-dead-letter-classic", "celery-stack-dead-letter-quorum"}
    dlq_policy = by_name["celery-stack-dead-letter-quorum"]
    assert dlq_policy["pattern"] == r"^celery_stack\.dead_letter$"
    assert dlq_policy["apply-to"] == "quorum_queues" and dlq_policy["priority"] == 10
    assert dlq_policy["definition"] == {"max-length": 10000, "overflow": "reject-publish", "delivery-limit": -1}
    assert by_name["celery-stack-quorum"]["definition"] == {
        "max-length": 100000, "overflow": "reject-publish", "dead-letter-exchange": "celery_stack.dlx",
        "delivery-limit": 5, "dead-letter-strategy": "at-least-once"}
    status, queues = management("GET", f"/queues/{VHOST}?columns=name,policy,effective_policy_definition")
    assert status == 200, queues
    by_queue = {q["name"]: q for q in queues}
    assert by_queue["celery_stack.dead_letter"]["policy"] == "celery-stack-dead-letter-quorum"
    assert by_queue["celery_stack.dead_letter"]["effective_policy_definition"] == dlq_policy["definition"]
    for name in ("short", "long"):
        assert by_queue[name]["policy"] == "celery-stack-quorum"
        assert by_queue[name]["effective_policy_definition"]["dead-letter-strategy"] == "at-least-once"

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
