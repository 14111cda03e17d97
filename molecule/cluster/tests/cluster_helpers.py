"""Helpers of the whole-cluster scenario's tests (fixtures are in conftest.py)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from base64 import b64encode

import pytest

SCRIPTS = pathlib.Path(__file__).parent / "scripts"
APP_VENV = "/opt/celery-stack/current/venv"
VHOST = "celery-stack"
APP_USER = "celery-stack"
SLOW_PORT = 8999


def cache_dir() -> pathlib.Path:
    root = pathlib.Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", pathlib.Path(__file__).parents[3]))
    path = root / ".cache" / "cluster"
    path.mkdir(parents=True, exist_ok=True)
    return path


def report(name: str, data: dict) -> None:
    """Print a figure and keep it under .cache/cluster/<name>.json."""
    (cache_dir() / f"{name}.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(f"\n[{name}] {json.dumps(data, sort_keys=True)}")


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], check=check, capture_output=True, text=True, timeout=timeout)


def wait_for(predicate, timeout: float, interval: float = 1.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def http(method: str, url: str, auth: tuple[str, str] | None = None, body: dict | None = None,
         timeout: float = 15) -> tuple[int, str]:
    """One HTTP request: (status, body text); HTTP errors are answers too."""
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = "Basic " + b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def new_prefix(kind: str) -> str:
    return f"cl-{kind}-{uuid.uuid4().hex[:8]}-"
