"""Clients for the mongodb scenario: pymongo on the controller, talking to
the containers' addresses (the scenario's podman network is reachable from
here). Each client connects directly to one member, because the replica
set's member names (container names) resolve only inside that network.
"""

from __future__ import annotations

import pytest

pymongo = pytest.importorskip("pymongo", reason="pymongo is in requirements.txt")

SINGLE = "mongodb-single"
MEMBERS = ["mongodb-rs1", "mongodb-rs2", "mongodb-rs3"]
APP_DB = "celery"
PORT = 27017


@pytest.fixture(scope="session")
def connect(address, secret):
    """connect(host, user=None): a pymongo client straight to one server."""
    clients = []
    users = {
        "admin": ("admin", "mongodb_admin", "admin"),
        "app": ("celery", "mongodb_app", APP_DB),
        "monitor": ("monitor", "mongodb_monitor", "admin"),
    }

    def make(host: str, user: str | None = None, **options):
        kwargs = dict(host=address(host), port=PORT, directConnection=True,
                      serverSelectionTimeoutMS=10000, **options)
        if user:
            name, secret_name, source = users[user]
            kwargs.update(username=name, password=secret(secret_name), authSource=source)
        client = pymongo.MongoClient(**kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture(scope="session")
def primary(connect):
    """Name of the replica set's primary (asked as the monitoring user)."""
    for name in MEMBERS:
        if connect(name, "monitor").admin.command("hello").get("isWritablePrimary"):
            return name
    pytest.fail("the replica set has no primary")
