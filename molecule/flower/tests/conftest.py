"""Fixtures of the flower scenario's tests."""

from __future__ import annotations

import pytest

LB = "flower-lb"
BROKER = "flower-rmq"
PREFIX = "/flower"


@pytest.fixture(scope="session")
def base(address):
    """Flower through HAProxy."""
    return f"http://{address(LB)}{PREFIX}"


@pytest.fixture()
def ops(secret):
    """Flower's operator login, read when a test asks (a rotation changes it)."""
    return ("ops", secret("flower_ops"))
