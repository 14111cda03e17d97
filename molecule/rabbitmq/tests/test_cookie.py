"""Erlang cookie changes on a running cluster.

A converge with a different rabbitmq_erlang_cookie is refused before any
node is touched: every node keeps its cookie and the cluster stays whole.
With rabbitmq_erlang_cookie_rotate=true the role stops every node, writes
the new cookie and starts them again: the cluster is three again on the new
cookie and a quorum queue's persistent messages are all there. The new cookie
is written to the scenario's secrets first, so later converges use it.
"""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import string

import amqp
import pytest

from conftest import connect

pytestmark = pytest.mark.disruptive
COOKIE_PATH = "/var/lib/rabbitmq/.erlang.cookie"
QUEUE = "beta.cookie.kept"
MESSAGES = 40



def new_cookie() -> str:
    return "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(48))


def cookies(node, hosts) -> set[str]:
    return {node(name).check_output(f"cat {COOKIE_PATH}").strip() for name in hosts}


def running_nodes(host) -> set[str]:
    return set(json.loads(host.check_output("rabbitmqctl -q cluster_status --formatter json"))["running_nodes"])


def vars_file(name: str, values: dict) -> str:
    """Extra variables in a private file: no secret on a command line."""
    path = pathlib.Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "secrets" / name
    path.write_text(json.dumps(values))
    path.chmod(0o600)
    return f"@{path}"


def beta(address: str, password: str) -> amqp.Connection:
    return connect(address, "beta", password, "beta", confirm_publish=True)


def test_changed_cookie_is_refused_then_rotated_on_request(node, hosts, secret, address, converge):
    old = secret("erlang_cookie")
    assert cookies(node, hosts) == {old}
    with beta(address(hosts[0]), secret("beta")) as conn:
        channel = conn.channel()
        channel.queue_declare(QUEUE, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"})
        channel.queue_purge(QUEUE)
        for i in range(MESSAGES):
            channel.basic_publish(amqp.Message(str(i), delivery_mode=2), exchange="", routing_key=QUEUE)
    cookie = new_cookie()
    expected = {f"rabbit@{name}" for name in hosts}

    refused = converge("-e", vars_file("cookie.json", {"rabbitmq_erlang_cookie": cookie}))
    assert refused.returncode != 0, refused.tail
    assert "REFUSED: rabbitmq_erlang_cookie differs from the Erlang cookie on" in refused.words, refused.tail
    assert "rabbitmq_erlang_cookie_rotate=true" in refused.words
    assert cookies(node, hosts) == {old}, "a refused run changed a cookie"
    assert all(running_nodes(node(name)) == expected for name in hosts)

    # The operator asks for the rotation; the scenario keeps the new cookie.
    (pathlib.Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "secrets" / "erlang_cookie").write_text(cookie)
    rotated = converge("-e", "rabbitmq_erlang_cookie_rotate=true")
    assert rotated.returncode == 0, rotated.tail
    assert cookies(node, hosts) == {cookie}
    for name in hosts:
        assert running_nodes(node(name)) == expected, name
    with beta(address(hosts[1]), secret("beta")) as conn:
        channel = conn.channel()
        _, depth, _ = channel.queue_declare(QUEUE, passive=True)
        channel.queue_delete(QUEUE)
    assert depth == MESSAGES
