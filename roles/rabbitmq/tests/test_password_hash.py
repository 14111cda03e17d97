"""The password hashes the role writes for `rabbitmqctl import_definitions`.

The reference value is the worked example of RabbitMQ's documentation
(https://www.rabbitmq.com/docs/passwords#computing-password-hash): password
"test12", salt 0x908DC60A. The hash read back from a broker (guest's, as
`rabbitmqctl export_definitions` prints it on a fresh node) must match.
"""

from __future__ import annotations

import base64
import importlib.util
import pathlib

import pytest
from ansible.errors import AnsibleFilterError

_PATH = pathlib.Path(__file__).resolve().parents[1] / "filter_plugins" / "rabbitmq_password.py"
_SPEC = importlib.util.spec_from_file_location("rabbitmq_password", _PATH)
rp = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(rp)

DOCS_HASH = "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"
# guest/guest as RabbitMQ 4.3.6 stored it (export_definitions on a fresh node).
GUEST = {"name": "guest", "hashing_algorithm": "rabbit_password_hashing_sha256",
         "password_hash": "VMslJHqfLM5gq7sBluY2j9fA8Wxh9kS5OmH15FsMku2mWT3I"}


def test_documented_example():
    assert rp.rabbitmq_password_hash("test12", salt=bytes.fromhex("908DC60A")) == DOCS_HASH


def test_hash_read_from_a_broker_matches_its_password_only():
    assert rp.rabbitmq_password_matches(GUEST, "guest")
    assert not rp.rabbitmq_password_matches(GUEST, "guest ")
    assert not rp.rabbitmq_password_matches(GUEST, "Guest")


@pytest.mark.parametrize("algorithm, digest_bytes", [
    ("rabbit_password_hashing_sha256", 32),
    ("rabbit_password_hashing_sha512", 64),
    ("rabbit_password_hashing_md5", 16),
])
def test_round_trip_with_a_random_salt(algorithm, digest_bytes):
    password = "pässwörd with spaces"
    first = rp.rabbitmq_password_hash(password, algorithm)
    second = rp.rabbitmq_password_hash(password, algorithm)
    assert first != second, "the salt must be random"
    assert len(base64.b64decode(first)) == rp.SALT_BYTES + digest_bytes
    user = {"password_hash": first, "hashing_algorithm": algorithm}
    assert rp.rabbitmq_password_matches(user, password)
    assert not rp.rabbitmq_password_matches(user, password + "x")


@pytest.mark.parametrize("user", [
    {}, None, {"password_hash": ""}, {"password_hash": "not base64!"},
    {"password_hash": base64.b64encode(b"1234").decode()},
])
def test_user_without_a_usable_hash_never_matches(user):
    assert not rp.rabbitmq_password_matches(user, "anything")


def test_refusals():
    with pytest.raises(AnsibleFilterError, match="non-empty password"):
        rp.rabbitmq_password_hash("")
    with pytest.raises(AnsibleFilterError, match="4 bytes"):
        rp.rabbitmq_password_hash("x", salt=b"12")
    with pytest.raises(AnsibleFilterError, match="unknown RabbitMQ password hashing algorithm"):
        rp.rabbitmq_password_hash("x", "rabbit_password_hashing_sha1")
