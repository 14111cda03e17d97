# Managed by celery-stack (roles/rabbitmq).
"""RabbitMQ password hashes, so that a password never has to go on a command line.

RabbitMQ stores a password as ``base64(salt + H(salt + password))`` with a
4-byte random salt and H the user's hashing algorithm
(https://www.rabbitmq.com/docs/passwords#computing-password-hash). The role
compares the stored hash that ``rabbitmqctl export_definitions -`` prints with
the password of the inventory, and when it differs writes a new hash into a
definitions file (mode 0600) that ``rabbitmqctl import_definitions`` reads:
the password itself reaches neither the process table nor a log.

Filters:

- ``rabbitmq_password_hash(password, algorithm='rabbit_password_hashing_sha256', salt=None)``:
  a new hash (random salt unless ``salt``, 4 bytes, is given).
- ``rabbitmq_password_matches(user, password)``: whether ``user`` (an entry of
  the definitions' ``users`` list: ``password_hash`` and ``hashing_algorithm``)
  has that password. A user without a hash (passwordless) never matches.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from typing import Any

from ansible.errors import AnsibleFilterError

ALGORITHMS = {
    "rabbit_password_hashing_sha256": hashlib.sha256,
    "rabbit_password_hashing_sha512": hashlib.sha512,
    "rabbit_password_hashing_md5": hashlib.md5,
}
SALT_BYTES = 4


def _digest(algorithm: str) -> Any:
    try:
        return ALGORITHMS[algorithm]
    except KeyError:
        raise AnsibleFilterError(
            f"unknown RabbitMQ password hashing algorithm {algorithm!r}; "
            f"known: {', '.join(sorted(ALGORITHMS))}") from None


def _hash(password: str, salt: bytes, algorithm: str) -> str:
    digest = _digest(algorithm)(salt + password.encode("utf-8")).digest()
    return base64.b64encode(salt + digest).decode("ascii")


def rabbitmq_password_hash(password: str, algorithm: str = "rabbit_password_hashing_sha256",
                           salt: bytes | None = None) -> str:
    if not isinstance(password, str) or not password:
        raise AnsibleFilterError("rabbitmq_password_hash needs a non-empty password")
    if salt is None:
        salt = secrets.token_bytes(SALT_BYTES)
    if len(salt) != SALT_BYTES:
        raise AnsibleFilterError(f"a RabbitMQ password salt is {SALT_BYTES} bytes, not {len(salt)}")
    return _hash(password, salt, algorithm)


def rabbitmq_password_matches(user: dict[str, Any], password: str) -> bool:
    stored = (user or {}).get("password_hash") or ""
    algorithm = (user or {}).get("hashing_algorithm") or "rabbit_password_hashing_sha256"
    try:
        raw = base64.b64decode(stored, validate=True)
    except (binascii.Error, ValueError):
        return False
    if len(raw) <= SALT_BYTES:
        return False
    return hmac.compare_digest(_hash(password, raw[:SALT_BYTES], algorithm), stored)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "rabbitmq_password_hash": rabbitmq_password_hash,
            "rabbitmq_password_matches": rabbitmq_password_matches,
        }
