"""Load gate of the benchmark: how much CPU did *other* work take during a run?

/proc/stat gives the machine's busy time (user+nice+system, in USER_HZ
ticks summed over all CPUs); /proc/<pid>/stat gives ours (utime+stime plus
the reaped children's cutime+cstime) for the benchmark's process tree and
the broker's (the container's init and its descendants, or the loopback
node). Background = machine busy - ours, in cores, over the run's wall time.
Interrupt time (irq/softirq, where our own loopback/bridge traffic is
accounted) and steal are recorded apart and not counted as background.
"""

from __future__ import annotations

import dataclasses
import os
import time

HZ = os.sysconf("SC_CLK_TCK")


def machine_ticks() -> dict[str, int]:
    with open("/proc/stat") as f:
        parts = f.readline().split()
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    return {n: int(v) for n, v in zip(names, parts[1:9])}


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, utime+stime+cutime+cstime)."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                data = f.read()
        except OSError:
            continue
        rest = data[data.rindex(")") + 2:].split()
        # fields after "comm": state ppid ... utime(14) stime(15) cutime(16) cstime(17), 1-based from pid
        ppid = int(rest[1])
        ticks = int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
        table[int(name)] = (ppid, ticks)
    return table


def tree_ticks(roots: list[int]) -> int:
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    seen, stack, total = set(), [r for r in roots if r in table], 0
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += table[pid][1]
        stack.extend(children.get(pid, ()))
    return total


@dataclasses.dataclass
class Load:
    seconds: float
    background_cores: float     # other work than ours and the broker's
    ours_cores: float           # the benchmark, its workers and the broker
    steal_cores: float
    irq_cores: float
    loadavg_1m: float

    def as_dict(self) -> dict:
        return {k: round(v, 3) for k, v in dataclasses.asdict(self).items()}


class Meter:
    """``with Meter(roots) as m: ...``; then ``m.load``."""

    def __init__(self, roots: list[int]):
        self.roots = roots
        self.load: Load | None = None

    def __enter__(self) -> "Meter":
        self._t = time.monotonic()
        self._m = machine_ticks()
        self._o = tree_ticks(self.roots)
        return self

    def __exit__(self, *exc) -> None:
        dt = max(time.monotonic() - self._t, 1e-6)
        m, o = machine_ticks(), tree_ticks(self.roots)
        d = {k: m[k] - self._m[k] for k in m}
        busy = d["user"] + d["nice"] + d["system"]
        ours = max(o - self._o, 0)
        self.load = Load(
            seconds=dt,
            background_cores=max(busy - ours, 0) / HZ / dt,
            ours_cores=ours / HZ / dt,
            steal_cores=d["steal"] / HZ / dt,
            irq_cores=(d["irq"] + d["softirq"]) / HZ / dt,
            loadavg_1m=os.getloadavg()[0],
        )


def idle_sample(roots: list[int], seconds: float = 1.0) -> Load:
    with Meter(roots) as m:
        time.sleep(seconds)
    return m.load
