"""Version gating of the rabbitmq role on RabbitMQ 3.10 (Debian 12).

The trixie scenario (RabbitMQ 4.0) asserts that lazy mode is absent and that
policies use apply-to classic_queues/quorum_queues; here the same inputs must
give two policies for `queues` (the classic one with `queue-mode: lazy`), a
classic queue really running lazy, and the 0.4 memory watermark default.
Also checks that the role's asserts fail early with readable messages.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import amqp
import pytest

HOST = "rabbitmq-bookworm-n1"
NOFILE = 16384


def rabbitmqctl_json(host, *args: str):
    cmd = host.run("rabbitmqctl -q " + " ".join(args) + " --formatter json")
    assert cmd.rc == 0, cmd.stderr
    return json.loads(cmd.stdout)


def connect(address: str, user: str, password: str, vhost: str = "/", **kwargs) -> amqp.Connection:
    conn = amqp.Connection(host=f"{address}:5672", userid=user, password=password,
                           virtual_host=vhost, connect_timeout=10, **kwargs)
    conn.connect()
    return conn


@pytest.fixture(scope="module")
def host(node):
    return node(HOST)


def test_installed_version_is_3_10(host):
    assert host.check_output("rabbitmqctl -q version").startswith("3.10.")


def test_node_runs_without_alarms(host):
    assert host.service("rabbitmq-server").is_enabled
    assert host.service("rabbitmq-server").is_running
    status = rabbitmqctl_json(host, "cluster_status")
    assert status["running_nodes"] == [f"rabbit@{HOST}"]
    assert status["cluster_name"] == "celery-stack-bookworm"
    assert status["alarms"] == []


def definition_of(policy: dict) -> dict:
    definition = policy["definition"]
    return json.loads(definition) if isinstance(definition, str) else definition


def test_policies_before_3_12(host):
    policies = {p["name"]: p for p in rabbitmqctl_json(host, "list_policies", "-p", "gamma")}
    assert set(policies) == {"gamma-classic", "gamma-quorum"}
    # apply-to classic_queues/quorum_queues do not exist before 3.12: both
    # apply to `queues`, and each holds a key the other queue type refuses.
    for policy in policies.values():
        assert policy["apply-to"] == "queues"
        assert policy["priority"] == 1
    common = {"max-length": 3, "overflow": "reject-publish"}
    assert definition_of(policies["gamma-classic"]) == {**common, "queue-mode": "lazy"}
    # at-least-once dead-lettering exists from 3.10 on (quorum queues, overflow reject-publish)
    assert definition_of(policies["gamma-quorum"]) == {**common, "delivery-limit": 20,
                                                       "dead-letter-strategy": "at-least-once"}


@pytest.mark.parametrize("queue_type,policy", [("classic", "gamma-classic"), ("quorum", "gamma-quorum")])
def test_each_queue_type_gets_its_policy_and_refuses_when_full(host, address, secret, queue_type, policy):
    queue = f"gamma.full.{queue_type}"
    with connect(address(HOST), "gamma", secret("gamma"), vhost="gamma", confirm_publish=True) as conn:
        ch = conn.channel()
        ch.queue_declare(queue, durable=True, auto_delete=False, arguments={"x-queue-type": queue_type})
        ch.queue_purge(queue)
        accepted = 0
        for i in range(8):
            try:
                ch.basic_publish(amqp.Message(str(i), delivery_mode=2), exchange="", routing_key=queue)
                accepted += 1
            except amqp.exceptions.MessageNacked:
                pass
        # Classic queues stop exactly at max-length; quorum queues start
        # rejecting once it is exceeded.
        assert 3 <= accepted <= (3 if queue_type == "classic" else 4)
    queues = {q["name"]: q for q in rabbitmqctl_json(host, "list_queues", "-p", "gamma", "name", "policy")}
    assert queues[queue]["policy"] == policy


def test_classic_queue_runs_in_lazy_mode(host):
    mode = host.check_output(
        "rabbitmqctl -q eval '{ok, Q} = rabbit_amqqueue:lookup(rabbit_misc:r(<<\"gamma\">>, queue, "
        "<<\"gamma.full.classic\">>)), [{_, S}] = rabbit_amqqueue:info(Q, [backing_queue_status]), "
        "proplists:get_value(mode, S).'")
    assert mode.strip() == "lazy"


def test_version_defaults_and_limits(host):
    watermark = host.check_output("rabbitmqctl -q eval 'application:get_env(rabbit, vm_memory_high_watermark).'")
    assert "0.4" in watermark
    conf = host.file("/etc/rabbitmq/rabbitmq.conf").content_string
    assert "disk_free_limit.absolute = 2GB" in conf
    assert host.check_output("systemctl show -p LimitNOFILE --value rabbitmq-server").strip() == str(NOFILE)
    pid = host.check_output("systemctl show -p MainPID --value rabbitmq-server").strip()
    limits = host.check_output(f"cat /proc/{pid}/limits")
    assert any(l.startswith("Max open files") and l.split()[3] == str(NOFILE) for l in limits.splitlines())


def test_guest_refused(address):
    with pytest.raises(amqp.exceptions.AccessRefused):
        connect(address(HOST), "guest", "guest")


def converge(extra_vars: dict) -> tuple[int, str]:
    """Run the scenario's converge playbook again against Molecule's
    inventory with extra variables; return its exit code and its output
    (whitespace collapsed, so that wrapped messages read as one line)."""
    scenario = pathlib.Path(__file__).resolve().parents[1]
    project = scenario.parents[1]
    playbook_bin = pathlib.Path(sys.executable).parent / "ansible-playbook"
    env = {**os.environ, "ANSIBLE_ROLES_PATH": f"{project}/roles", "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_CALLBACK_RESULT_FORMAT": "yaml"}
    run = subprocess.run(
        [str(playbook_bin) if playbook_bin.exists() else "ansible-playbook",
         "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(scenario / "converge.yml"),
         "-e", json.dumps(extra_vars)],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    return run.returncode, " ".join((run.stdout + run.stderr).split())


@pytest.mark.parametrize("extra_vars,message", [
    ({"rabbitmq_erlang_cookie": "too-short"}, "rabbitmq_erlang_cookie is required"),
    ({"rabbitmq_applications": [{"name": "bad", "vhost": "bad", "password": "p" * 16,
                                 "queue_policy": {"overflow": "drop-tail"}}]},
     # The argument spec's choices refuse it before the role's own assert.
     "value of overflow must be one of: drop-head, reject-publish, reject-publish-dlx, got: drop-tail"),
    ({"rabbitmq_applications": [{"name": "nopass", "vhost": "nopass", "password": "short"}]},
     "rabbitmq application 'nopass' is invalid"),
])
def test_assert_fails_early_with_a_readable_message(extra_vars, message):
    """The role refuses bad input before touching the node, and says why."""
    returncode, output = converge(extra_vars)
    assert returncode != 0, output[-2000:]
    assert message in output, output[-2000:]
    assert "Install |" not in output


@pytest.mark.disruptive
def test_team_source_refuses_to_skip_from_3_10_to_4_3_before_adding_repositories(host):
    """Switching this 3.10.8 node to Team RabbitMQ's 4.3 pins would skip six
    release series: the role stops before any repository or pin is written,
    names the supported path and leaves the running broker alone.

    Marked disruptive because it runs the role against the node again; when
    the refusal works it changes nothing.
    """
    returncode, output = converge({"rabbitmq_install_source": "team"})
    assert returncode != 0, output[-3000:]
    assert "rabbitmq-server 3.10.8 is installed" in output, output[-3000:]
    assert "rabbitmq_team_version=4.3.*" in output, output[-3000:]
    assert ("skips release series; the supported path is "
            "3.10 -> 3.11 -> 3.12 -> 3.13 -> 4.0 -> 4.1 -> 4.2 -> 4.3") in output, output[-3000:]
    assert "all stable feature flags enabled before each step" in output
    assert "blue-green deployment" in output
    assert "https://www.rabbitmq.com/docs/upgrade" in output
    # Stopped before install.yml: no task of it ran, nothing was written.
    assert "Install |" not in output
    sources = host.run("ls -1 /etc/apt/sources.list.d")
    assert sources.rc == 0, sources.stderr
    assert not [name for name in sources.stdout.split() if "rabbitmq" in name], sources.stdout
    assert not host.file("/etc/apt/preferences.d/rabbitmq").exists
    assert host.check_output("dpkg-query --show --showformat='${Version}' rabbitmq-server").startswith("3.10.8")
    assert host.service("rabbitmq-server").is_running
    assert host.check_output("rabbitmqctl -q version").startswith("3.10.8")
