"""Which errors are retried, and how long to wait before the next try.

Only *transient* errors are retried: the broker, the database or the network
failing for a while. Bad input is never retried: it is recorded as a failed
result (:class:`BadInput`), because redelivering it would fail the same way
forever. Tasks are idempotent, and a failure is kept as a tombstone instead
of being retried blindly.
"""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass

import kombu.exceptions
import pymongo.errors


class BadInput(Exception):
    """The input itself is unusable (empty, truncated, not audio, too large...).

    ``reason`` is the sentence recorded in the failed result.
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class TransientError(Exception):
    """Raised by our own code for a condition worth retrying."""


#: Errors that mean "try again later". DuplicateKeyError is deliberately
#: absent (it is a logic outcome handled where it happens), and so are
#: OperationFailure and friends (a bad query does not heal by waiting).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientError,
    pymongo.errors.AutoReconnect,          # includes NotPrimaryError, NetworkTimeout
    pymongo.errors.ConnectionFailure,      # includes ServerSelectionTimeoutError
    pymongo.errors.ExecutionTimeout,
    pymongo.errors.WriteConcernError,
    kombu.exceptions.OperationalError,     # broker connection lost while publishing
    ConnectionError,                       # refused/reset/aborted (OSError subclasses)
    socket.timeout,
)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, pymongo.errors.PyMongoError) and exc.has_error_label("RetryableWriteError"):
        return True
    return isinstance(exc, TRANSIENT_ERRORS)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with "equal jitter" and a retry cap.

    delay(n) is uniformly drawn from [d/2, d] where d = min(cap, base * 2**n):
    never zero (a broken database is not hit again at once), never above the
    cap, and spread so that many tasks failing together do not come back in
    lock step.
    """

    max_retries: int
    base: float
    cap: float

    def nominal(self, retries: int) -> float:
        return min(self.cap, self.base * (2 ** max(0, retries)))

    def delay(self, retries: int, rng: random.Random | None = None) -> float:
        d = self.nominal(retries)
        r = (rng or random).uniform(0.0, d / 2)
        return d / 2 + r

    def should_retry(self, exc: BaseException, retries: int) -> bool:
        return is_transient(exc) and retries < self.max_retries


def policy_from_settings(settings) -> RetryPolicy:
    return RetryPolicy(max_retries=settings.retry_max, base=settings.retry_backoff_base,
                       cap=settings.retry_backoff_max)
