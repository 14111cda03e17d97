"""What the rabbitmq scenario's tests share: its three hosts, rabbitmqctl's
JSON and AMQP connections to one node."""

from __future__ import annotations

import json

import amqp
import pytest

GROUP = "rabbitmq"
AMQP_PORT = 5672


@pytest.fixture(scope="session")
def hosts(group_hosts):
    names = group_hosts(GROUP)
    assert len(names) == 3
    return names


def rabbitmqctl_json(host, *args: str):
    cmd = host.run("rabbitmqctl -q " + " ".join(args) + " --formatter json")
    assert cmd.rc == 0, cmd.stderr
    return json.loads(cmd.stdout)


def connect(address: str, user: str, password: str, vhost: str = "/", **kwargs) -> amqp.Connection:
    conn = amqp.Connection(
        host=f"{address}:{AMQP_PORT}", userid=user, password=password,
        virtual_host=vhost, connect_timeout=10, **kwargs,
    )
    conn.connect()
    return conn
