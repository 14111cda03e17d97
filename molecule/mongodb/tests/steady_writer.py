"""A steady writer for the mongodb scenario's day-two tests: inserts into a
collection through the replica set (w=majority, retryable writes) from a
scenario container, where the members' names resolve, and records which
inserts MongoDB acknowledged, so that a test can check afterwards that none
of them is missing."""

from __future__ import annotations

import json
import subprocess
import threading
import time

# Runs in a scenario container, where the members' names resolve: inserts
# until a line (or EOF) arrives on stdin, one JSON line per insert.
WRITER = r"""
import json, sys, threading, time
from pymongo import MongoClient

config = json.loads(sys.stdin.readline())
stop = threading.Event()


def wait_for_stop():
    sys.stdin.readline()
    stop.set()


threading.Thread(target=wait_for_stop, daemon=True).start()
client = MongoClient(config["hosts"], replicaSet=config["set"], username=config["user"],
                     password=config["password"], authSource=config["database"],
                     retryWrites=True, w="majority", wTimeoutMS=30000)
collection = client[config["database"]][config["collection"]]
deadline = time.monotonic() + config["seconds"]
number = 0
while not stop.is_set() and time.monotonic() < deadline:
    number += 1
    try:
        collection.insert_one({"_id": number, "at": time.time()})
    except Exception as exc:
        print(json.dumps({"failed": number, "why": f"{type(exc).__name__}: {exc}"}), flush=True)
    else:
        print(json.dumps({"acked": number}), flush=True)
    stop.wait(config["interval"])
client.close()
"""


class SteadyWriter(threading.Thread):
    """WRITER in a container, started through ``podman exec`` (the password
    goes on its stdin, never into an argument list); keeps the acknowledged
    insert numbers with the time each acknowledgement arrived here."""

    def __init__(self, container: str, python: str, config: dict):
        super().__init__(daemon=True)
        self.acked: list[tuple[float, int]] = []
        self.failed: list[str] = []
        self.other: list[str] = []
        self.proc = subprocess.Popen(["podman", "exec", "-i", container, python, "-c", WRITER],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.proc.stdin.write(json.dumps(config) + "\n")
        self.proc.stdin.flush()

    def run(self) -> None:
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            if isinstance(event, dict) and "acked" in event:
                self.acked.append((time.time(), event["acked"]))
            elif isinstance(event, dict) and "failed" in event:
                self.failed.append(f"insert {event['failed']}: {event['why']}")
            else:
                self.other.append(line.rstrip())

    def wait_for_first(self, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while not self.acked and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        return bool(self.acked)

    def stop(self) -> SteadyWriter:
        try:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.close()
        except (BrokenPipeError, ValueError):
            pass
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.other.append("the writer did not stop within 120 s")
        if self.ident is not None:
            self.join(30)
        return self
