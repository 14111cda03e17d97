"""Fixtures of the haproxy scenario (helpers live in haproxy_helpers.py)."""

from __future__ import annotations

import csv
import io
import os
import pathlib

import pytest

from haproxy_helpers import APP_USER, STATS_USER, http_get


@pytest.fixture(scope="session")
def lb(group_hosts) -> str:
    """Name of the HAProxy container."""
    return group_hosts("haproxy")[0]


@pytest.fixture(scope="session")
def brokers(group_hosts) -> list[str]:
    """Names of the RabbitMQ containers."""
    return group_hosts("rabbitmq")


@pytest.fixture(scope="session")
def lb_address(lb, address) -> str:
    return address(lb)


@pytest.fixture(scope="session")
def app_credentials(secret) -> tuple[str, str]:
    return APP_USER, secret("celery")


@pytest.fixture(scope="session")
def admin_credentials(secret) -> tuple[str, str]:
    return "admin", secret("rabbitmq_admin")


@pytest.fixture(scope="session")
def stats_credentials(secret) -> tuple[str, str]:
    return STATS_USER, secret("haproxy_stats")


@pytest.fixture(scope="session")
def tls_ca() -> pathlib.Path:
    path = pathlib.Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "tls" / "ca.crt"
    if not path.exists():
        pytest.fail(f"prepare.yml did not make the CA ({path})")
    return path


@pytest.fixture(scope="session")
def stats(lb_address, stats_credentials):
    """The stats page as CSV rows: {(proxy, server): row}."""

    def read() -> dict[tuple[str, str], dict[str, str]]:
        status, _, body = http_get(f"http://{lb_address}:8404/;csv", stats_credentials)
        assert status == 200, f"stats page answered {status}"
        reader = csv.DictReader(io.StringIO(body.lstrip("# ")))
        return {(row["pxname"], row["svname"]): row for row in reader}

    return read
