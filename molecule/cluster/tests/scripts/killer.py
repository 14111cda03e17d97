"""Kills the Celery pool process that talks to the slow test server (system python3).

usage: killer.py SERVER_IP PORT MIN_AGE SECONDS LOGFILE PIDFILE
Every 0.1 s, looks for established TCP connections to SERVER_IP:PORT (ss -tnp);
a connection held for MIN_AGE seconds belongs to a task in the middle of its
work: its process, if it is a Celery *pool child* (its parent is a celery
worker), gets SIGKILL. Runs SECONDS seconds. Logs "<pid> <local address>".
"""

import os
import re
import signal
import subprocess
import sys
import time

SERVER, PORT, MIN_AGE, SECONDS, LOG, PIDFILE = (sys.argv[1], sys.argv[2], float(sys.argv[3]),
                                                 float(sys.argv[4]), sys.argv[5], sys.argv[6])
PID = re.compile(r"pid=(\d+)")


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("PPid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


with open(PIDFILE, "w", encoding="utf-8") as f:
    f.write(str(os.getpid()))
seen: dict[tuple[int, str], float] = {}
killed: set[tuple[int, str]] = set()
end = time.monotonic() + SECONDS
while time.monotonic() < end:
    out = subprocess.run(["ss", "-Htnp", "state", "established", "dst", f"{SERVER}:{PORT}"],
                         capture_output=True, text=True).stdout
    now = time.monotonic()
    for line in out.splitlines():
        fields = line.split()
        local = fields[2] if len(fields) > 2 else "?"
        for pid in {int(p) for p in PID.findall(line)}:
            key = (pid, local)
            first = seen.setdefault(key, now)
            if key in killed or now - first < MIN_AGE:
                continue
            ppid = parent(pid)
            if "celery" in cmdline(pid) and ppid > 1 and "celery" in cmdline(ppid):
                os.kill(pid, signal.SIGKILL)
                killed.add(key)
                with open(LOG, "a", encoding="utf-8") as log:
                    log.write(f"{pid} {local}\n")
    time.sleep(0.1)
