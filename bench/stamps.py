"""Completion stamps of benchmark tasks: each task appends "<sent_at> <done_at>" to a
file of its process in a shared directory; the benchmark reads them all back."""

from __future__ import annotations

import glob
import os
import time


def read(directory: str, pattern: str) -> list[tuple[float, float]]:
    """Every (sent_at, done_at) pair in the files of ``directory`` matching ``pattern``."""
    stamps = []
    for path in glob.glob(os.path.join(directory, pattern)):
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2:
                    stamps.append((float(parts[0]), float(parts[1])))
    return stamps


def wait(directory: str, pattern: str, n: int, timeout: float,
         interval: float = 0.05) -> list[tuple[float, float]]:
    """Read until ``n`` stamps are there or ``timeout`` passed; returns what was read last."""
    deadline = time.monotonic() + timeout
    stamps = read(directory, pattern)
    while len(stamps) < n and time.monotonic() < deadline:
        time.sleep(interval)
        stamps = read(directory, pattern)
    return stamps


def clear(directory: str, pattern: str) -> None:
    """Empty the stamp files (their writers keep them open in append mode)."""
    for path in glob.glob(os.path.join(directory, pattern)):
        os.truncate(path, 0)
