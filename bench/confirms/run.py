#!/usr/bin/env python3
"""Benchmark: publisher confirms, queue types, prefetch and pools, against the broker's ceiling.

One command (``bench/confirms/run``), every configuration in the same run on
each broker in turn (``--brokers``, default forky,trixie: RabbitMQ 4.3.6 on
Erlang 29 and 4.0.5 on Erlang 27, one at a time: all groups on the first,
stop it, then on the next), rounds interleaved, each measurement gated on background CPU
(see gate.py) and retried a bounded number of times when the machine was
busy with other work. Figures go to bench/results/confirms-<UTC>.json/.md.

Groups:
  publish  tasks/s to the broker: raw py-amqp without confirms (the ceiling),
           raw py-amqp with a confirm awaited per message (quorum), Celery
           stock (classic, no confirms), Celery with confirm_publish (quorum:
           the kit's settings), the kit's pipelined bulk publisher (quorum).
  pairs    the ceiling and the bulk publisher back to back (raw, bulk, bulk, raw): their
           ratio, steadier than either figure when the machine's load changes.
  drain    a worker draining a pre-filled queue, per pool setting, for no-op,
           I/O-bound (website check) and CPU-bound (audio) tasks.
  e2e      submit N tasks to a running worker: tasks/s and p50/p99 latency.
  latency  one short task at a time, round trip to a worker and back.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # bench/: stamps.py
try:
    import celery_stack_app  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(ROOT, "app", "src"))

import amqp  # noqa: E402
from celery import Celery  # noqa: E402
from kombu.utils.url import parse_url  # noqa: E402

import brokers  # noqa: E402
import gate  # noqa: E402
import report as rep  # noqa: E402
import stamps  # noqa: E402
from celery_stack_app import celery_app as ca  # noqa: E402
from celery_stack_app import settings as s_mod  # noqa: E402
from celery_stack_app.bulk import BulkPublisher  # noqa: E402

RESULTS = os.path.join(ROOT, "bench", "results")


# ---------------------------------------------------------------------------
# configuration


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    name: str
    app: str            # "kit" (late acks, quorum) or "stock" (Celery defaults)
    pool: str
    concurrency: int
    prefetch: int
    kind: str = "short"  # which kit queue the worker serves (prefetch setting used)
    events: bool = True  # kit workers: task events for Flower (their cost shows with False)

    def label(self) -> str:
        ack = "late ack, quorum" if self.app == "kit" else "early ack, classic"
        events = "" if self.events else ", task events off"
        return f"{self.app} {self.pool} -c {self.concurrency}, prefetch x{self.prefetch} ({ack}{events})"


def have_gevent() -> bool:
    try:
        import gevent  # noqa: F401
        return True
    except ImportError:
        return False


STOCK = WorkerSpec("stock-prefork-c2-p4", "stock", "prefork", 2, 4)
KIT_P1 = WorkerSpec("kit-prefork-c2-p1", "kit", "prefork", 2, 1)
KIT_P16 = WorkerSpec("kit-prefork-c2-p16", "kit", "prefork", 2, 16)
KIT_THREADS = WorkerSpec("kit-threads-c16-p16", "kit", "threads", 16, 16)
KIT_THREADS_NOEVENTS = WorkerSpec("kit-threads-c16-p16-noevents", "kit", "threads", 16, 16, events=False)
KIT_THREADS_IO = WorkerSpec("kit-threads-c32-p4", "kit", "threads", 32, 4)
KIT_GEVENT = WorkerSpec("kit-gevent-c64-p4", "kit", "gevent", 64, 4)
LONG_P1 = WorkerSpec("kit-long-prefork-c2-p1", "kit", "prefork", 2, 1, kind="long")
LONG_P4 = WorkerSpec("kit-long-prefork-c2-p4", "kit", "prefork", 2, 4, kind="long")
LONG_THREADS = WorkerSpec("kit-long-threads-c2-p1", "kit", "threads", 2, 1, kind="long")

#: the recommendation for the short pool, used by the e2e and latency groups
SHORT_RECOMMENDED = KIT_THREADS


def drain_specs(gevent: bool = False) -> list[tuple[str, WorkerSpec]]:
    specs = [("tick", s) for s in (STOCK, KIT_P1, KIT_P16, KIT_THREADS, KIT_THREADS_NOEVENTS)]
    specs += [("io", s) for s in (STOCK, KIT_P1, KIT_THREADS_IO)]
    if gevent and have_gevent():
        specs += [("tick", KIT_GEVENT), ("io", KIT_GEVENT)]
    specs += [("cpu", s) for s in (LONG_P1, LONG_P4, LONG_THREADS)]
    return specs


# ---------------------------------------------------------------------------
# helpers


def token() -> str:
    return secrets.token_hex(3)


def raw_connection(url: str, confirm: bool = False) -> amqp.Connection:
    p = parse_url(url)
    conn = amqp.Connection(host=f"{p['hostname']}:{p.get('port') or 5672}", userid=p["userid"],
                           password=p["password"], virtual_host=p.get("virtual_host") or "/",
                           confirm_publish=confirm, connect_timeout=10)
    conn.connect()
    return conn


def delete_queues(url: str, *names: str) -> None:
    try:
        conn = raw_connection(url)
    except Exception:  # noqa: BLE001
        return
    try:
        for name in names:
            ch = conn.channel()
            try:
                ch.queue_delete(name)
            except Exception:  # noqa: BLE001
                pass
    finally:
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            pass


def kit_env(url: str, queue: str, kind: str = "short", prefetch: int | None = None,
            events: bool = True) -> dict[str, str]:
    env = {"CELERY_STACK_BROKER_URLS": url}
    if not events:
        env["CELERY_STACK_TASK_EVENTS"] = "false"
    if kind == "short":
        env.update(CELERY_STACK_SHORT_QUEUE=queue, CELERY_STACK_LONG_QUEUE=queue + "_l")
        if prefetch:
            env["CELERY_STACK_SHORT_PREFETCH_MULTIPLIER"] = str(prefetch)
    else:
        env.update(CELERY_STACK_LONG_QUEUE=queue, CELERY_STACK_SHORT_QUEUE=queue + "_s")
        if prefetch:
            env["CELERY_STACK_LONG_PREFETCH_MULTIPLIER"] = str(prefetch)
    return env


def kit_app(url: str, queue: str, kind: str = "short") -> Celery:
    """A client app with the kit's configuration (confirm_publish, quorum queues, routes)."""
    settings = s_mod.load(kit_env(url, queue, kind))
    app = Celery("bench-kit-client", set_as_current=False)
    app.conf.update(ca.build_config(settings))
    return app


def stock_app(url: str) -> Celery:
    import benchapp_stock

    return benchapp_stock.configure(Celery("bench-stock-client", broker=url, set_as_current=False))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


# ---------------------------------------------------------------------------
# workers


class BenchWorker:
    def __init__(self, spec: WorkerSpec, url: str, queue: str, markdir: str):
        self.spec, self.url, self.queue, self.markdir = spec, url, queue, markdir
        fd, self.logfile = tempfile.mkstemp(prefix=f"bench-{spec.name}-", suffix=".log")
        os.close(fd)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_STACK_")}
        env["BENCH_MARK_DIR"] = markdir
        env["BENCH_BROKER_URL"] = url
        paths = [HERE] + [p for p in sys.path if p.endswith(os.path.join("app", "src"))]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        args = [sys.executable, "-m", "celery"]
        if spec.app == "kit":
            env.update(kit_env(url, queue, spec.kind, spec.prefetch, spec.events))
            args += ["-A", "benchapp_kit"]
        else:
            args += ["-A", "benchapp_stock"]
        args += ["worker", "-n", f"bench-{spec.name}-{token()}@%h", "-P", spec.pool, "-c", str(spec.concurrency),
                 "-Q", queue, "--without-mingle", "--without-gossip", "--without-heartbeat",
                 "-l", "WARNING", "--logfile", self.logfile]
        # explicit, as the celery_worker role's units do: the stock app has no per-queue default
        args += ["--prefetch-multiplier", str(spec.prefetch)]
        self.args, self.env = args, env
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> "BenchWorker":
        self.proc = subprocess.Popen(self.args, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.logfile + ".err", "wb"), start_new_session=True)
        deadline = time.monotonic() + timeout
        conn = raw_connection(self.url)
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"worker {self.spec.name} exited {self.proc.returncode}:\n{self.log()[-3000:]}")
                try:
                    ch = conn.channel()
                    if ch.queue_declare(self.queue, passive=True).consumer_count >= 1:
                        return self
                    ch.close()
                except amqp.exceptions.NotFound:
                    pass  # not declared yet
                time.sleep(0.1)
        finally:
            conn.close()
        self.stop()
        raise RuntimeError(f"worker {self.spec.name} did not consume within {timeout} s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        out = ""
        for p in (self.logfile, self.logfile + ".err"):
            try:
                with open(p, errors="replace") as f:
                    out += f.read()
            except OSError:
                pass
        return out

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)   # our worker's own session only
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for p in (self.logfile, self.logfile + ".err"):
            try:
                os.unlink(p)
            except OSError:
                pass


MARKS = "done-*.txt"  # the stamp files of benchtasks.py


def wait_marks(markdir: str, n: int, timeout: float) -> list[tuple[float, float]]:
    marks = stamps.wait(markdir, MARKS, n, timeout)
    if len(marks) < n:
        raise RuntimeError(f"only {len(marks)}/{n} tasks done within {timeout} s")
    return marks


# ---------------------------------------------------------------------------
# publish group: each returns {"rate": tasks/s, "seconds": s}


def sample_message(url: str, queue: str):
    app = kit_app(url, queue)
    pub = BulkPublisher(app, urls=[url], declare=False)
    return pub.message("bench.tick", (0.0,), queue=queue)


def pub_raw(url: str, n: int, confirm: bool) -> dict:
    q = f"bench_raw_{'quorum' if confirm else 'classic'}_{token()}"
    item = sample_message(url, q)
    conn = raw_connection(url, confirm=confirm)
    try:
        ch = conn.channel()
        ch.queue_declare(q, durable=True, auto_delete=False,
                         arguments={"x-queue-type": "quorum"} if confirm else {"x-queue-type": "classic"})
        ch.basic_publish(item.message(), exchange="", routing_key=q)   # warm-up
        t0 = time.perf_counter()
        for _ in range(n):
            ch.basic_publish(amqp.Message(item.body, **item.properties), exchange="", routing_key=q)
        ch.queue_declare(q, passive=True)   # a round trip: the broker has read every publish
        seconds = time.perf_counter() - t0
    finally:
        conn.close()
        delete_queues(url, q)
    return {"rate": n / seconds, "seconds": seconds}


def pub_celery(url: str, n: int, kit: bool) -> dict:
    q = f"bench_celery_{'kit' if kit else 'stock'}_{token()}"
    app = kit_app(url, q) if kit else stock_app(url)
    try:
        app.send_task("bench.tick", (time.time(),), queue=q)   # warm-up: connect, declare
        t0 = time.perf_counter()
        for _ in range(n):
            app.send_task("bench.tick", (time.time(),), queue=q)
        seconds = time.perf_counter() - t0
    finally:
        app.close()
        delete_queues(url, q)
    return {"rate": n / seconds, "seconds": seconds}


def pub_bulk(url: str, n: int, window: int = 512) -> dict:
    q = f"bench_bulk_{token()}"
    app = kit_app(url, q)
    try:
        with BulkPublisher(app, urls=[url], window=window) as pub:
            pub.publish("bench.tick", (time.time(),), queue=q)   # warm-up: connect, declare
            pub.flush()
            t0 = time.perf_counter()
            for _ in range(n):
                pub.publish("bench.tick", (time.time(),), queue=q)
            result = pub.flush()
            seconds = time.perf_counter() - t0
        assert len(result.confirmed) == n
    finally:
        app.close()
        delete_queues(url, q)
    return {"rate": n / seconds, "seconds": seconds, "republished": result.republished}


def pub_pair(url: str, n: int) -> dict:
    """The ceiling and the bulk publisher back to back (then in the other order), so that both see
    the same background load: on a busy machine their ratio is steadier than either figure."""
    raw1 = pub_raw(url, n, confirm=False)["rate"]
    bulk1 = pub_bulk(url, n)["rate"]
    bulk2 = pub_bulk(url, n)["rate"]
    raw2 = pub_raw(url, n, confirm=False)["rate"]
    raw, bulk = (raw1 + raw2) / 2, (bulk1 + bulk2) / 2
    return {"ratio": bulk / raw, "rate": bulk, "ceiling": raw}


# ---------------------------------------------------------------------------
# drain group


TASK_ARGS = {"tick": {}, "io": {"seconds": 0.02}, "cpu": {"seconds": 0.05}}


def prefill(url: str, spec: WorkerSpec, q: str, task: str, n: int) -> None:
    app = kit_app(url, q, spec.kind) if spec.app == "kit" else stock_app(url)
    try:
        with BulkPublisher(app, urls=[url]) as pub:
            for _ in range(n):
                pub.publish(f"bench.{task}", (), {"sent_at": time.time(), **TASK_ARGS[task]}, queue=q)
            pub.flush()
    finally:
        app.close()


def drain(url: str, spec: WorkerSpec, task: str, n: int) -> dict:
    q = f"bench_drain_{token()}"
    markdir = tempfile.mkdtemp(prefix="bench-marks-")
    os.chmod(markdir, 0o777)
    worker = None
    try:
        prefill(url, spec, q, task, n)
        worker = BenchWorker(spec, url, q, markdir).start()
        marks = wait_marks(markdir, n, timeout=max(120, n * TASK_ARGS[task].get("seconds", 0.002) * 4))
        done = sorted(d for _, d in marks)
        seconds = done[-1] - done[0]
        return {"rate": (len(done) - 1) / seconds if seconds > 0 else float("nan"), "seconds": seconds}
    finally:
        if worker:
            worker.stop()
        shutil.rmtree(markdir, ignore_errors=True)
        delete_queues(url, q, q + "_l", q + "_s")


# ---------------------------------------------------------------------------
# e2e group: (publisher, worker) pairs


def e2e(url: str, publisher: str, spec: WorkerSpec, n: int) -> dict:
    q = f"bench_e2e_{token()}"
    markdir = tempfile.mkdtemp(prefix="bench-marks-")
    os.chmod(markdir, 0o777)
    app = kit_app(url, q) if spec.app == "kit" else stock_app(url)
    worker = None
    try:
        # declare the queue the way the publisher will, before the worker looks for it
        if publisher == "bulk":
            with BulkPublisher(app, urls=[url]) as pub:
                pub.publish("bench.tick", (), {"sent_at": time.time()}, queue=q)
                pub.flush()
        else:
            app.send_task("bench.tick", (), {"sent_at": time.time()}, queue=q)
        worker = BenchWorker(spec, url, q, markdir).start()
        wait_marks(markdir, 1, 60)
        stamps.clear(markdir, MARKS)
        t0 = time.time()
        if publisher == "bulk":
            with BulkPublisher(app, urls=[url]) as pub:
                for _ in range(n):
                    pub.publish("bench.tick", (), {"sent_at": time.time()}, queue=q)
                pub.flush()
        else:
            for _ in range(n):
                app.send_task("bench.tick", (), {"sent_at": time.time()}, queue=q)
        submitted = time.time() - t0
        marks = wait_marks(markdir, n, timeout=300)
        last = max(d for _, d in marks)
        lat = [(d - s) * 1000 for s, d in marks]
        return {"rate": n / (last - t0), "seconds": last - t0, "submit_seconds": submitted,
                "p50_ms": percentile(lat, 0.5), "p99_ms": percentile(lat, 0.99)}
    finally:
        if worker:
            worker.stop()
        app.close()
        shutil.rmtree(markdir, ignore_errors=True)
        delete_queues(url, q, q + "_l")


# ---------------------------------------------------------------------------
# latency group: one short task at a time


def latency(url: str, spec: WorkerSpec, n: int = 200, warmup: int = 20) -> dict:
    q = f"bench_lat_{token()}"
    markdir = tempfile.mkdtemp(prefix="bench-marks-")
    app = kit_app(url, q) if spec.app == "kit" else stock_app(url)
    worker = None
    conn = raw_connection(url)
    try:
        ch = conn.channel()
        reply_q = ch.queue_declare("", exclusive=True, auto_delete=True).queue
        answers: dict[str, float] = {}
        ch.basic_consume(reply_q, no_ack=True,
                         callback=lambda m: answers.__setitem__(m.properties.get("correlation_id"),
                                                               time.perf_counter()))
        app.send_task("bench.ping", (reply_q,), queue=q)   # declares the queue
        worker = BenchWorker(spec, url, q, markdir).start()
        samples = []
        for i in range(warmup + n):
            t0 = time.perf_counter()
            tid = app.send_task("bench.ping", (reply_q,), queue=q).id
            deadline = time.monotonic() + 30
            while tid not in answers:
                if time.monotonic() > deadline:
                    raise RuntimeError("no answer to a ping within 30 s")
                try:
                    conn.drain_events(timeout=1)
                except TimeoutError:
                    pass
            if i >= warmup:
                samples.append((answers[tid] - t0) * 1000)
        p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
        return {"p50_ms": p50, "p99_ms": p99, "p99_over_p50": p99 / p50, "rate": 1000 / p50}
    finally:
        if worker:
            worker.stop()
        app.close()
        conn.close()
        shutil.rmtree(markdir, ignore_errors=True)
        delete_queues(url, q, q + "_l")


# ---------------------------------------------------------------------------
# gating and rounds


@dataclasses.dataclass
class Measurement:
    key: str
    group: str
    label: str
    fn: object
    runs: list = dataclasses.field(default_factory=list)


def gated(m: Measurement, roots: list[int], max_background: float, max_attempts: int) -> dict:
    attempts = []
    for attempt in range(1, max_attempts + 1):
        try:
            with gate.Meter(roots) as meter:
                value = m.fn()
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            attempts.append({"error": f"{type(exc).__name__}: {exc}"[:2000]})
            print(f"    {m.key}: attempt {attempt} failed: {exc}", flush=True)
            continue
        load = meter.load.as_dict()
        ok = load["background_cores"] <= max_background
        attempts.append({"value": value, "load": load, "accepted": ok})
        shown = {k: round(v, 1) for k, v in value.items() if isinstance(v, float)}
        print(f"    {m.key}: {shown} background {load['background_cores']:.2f} cores "
              f"-> {'ok' if ok else 'LOADED, discarded'}", flush=True)
        if ok:
            break
    good = [a for a in attempts if a.get("accepted")]
    measured = [a for a in attempts if "value" in a]
    if good:
        chosen = dict(good[-1], loaded=False)
    elif measured:
        chosen = dict(min(measured, key=lambda a: a["load"]["background_cores"]), loaded=True)
    else:
        chosen = {"error": attempts[-1]["error"], "loaded": None}
    chosen["attempts"] = len(attempts)
    chosen["discarded"] = [a for a in attempts if a is not chosen and not a.get("accepted")]
    return chosen


def build(args, url: str) -> list[Measurement]:
    n = args.n
    ms: list[Measurement] = []
    groups = set(args.only.split(","))
    if "publish" in groups:
        ms += [
            Measurement("pub.raw_noconfirm_classic", "publish", "raw py-amqp, classic queue, no confirms (ceiling)",
                        lambda: pub_raw(url, n, confirm=False)),
            Measurement("pub.raw_confirm_each_quorum", "publish",
                        "raw py-amqp, quorum queue, a confirm awaited per message",
                        lambda: pub_raw(url, n, confirm=True)),
            Measurement("pub.celery_stock", "publish", "Celery stock send_task (classic, no confirms)",
                        lambda: pub_celery(url, n, kit=False)),
            Measurement("pub.celery_confirm_quorum", "publish",
                        "Celery send_task with confirm_publish, quorum (kit settings)",
                        lambda: pub_celery(url, n, kit=True)),
            Measurement("pub.kit_bulk_quorum", "publish",
                        "kit bulk publisher: pipelined confirms, quorum, window 512",
                        lambda: pub_bulk(url, n)),
        ]
    if "pairs" in groups:
        ms.append(Measurement("pair.bulk_over_ceiling", "pairs",
                              "pairs: kit bulk (quorum, confirmed) / raw no-confirm ceiling, back to back",
                              lambda: pub_pair(url, n)))
    if "drain" in groups:
        for task, spec in drain_specs(args.gevent):
            count = {"tick": n, "io": max(n // 5, 200), "cpu": max(n // 50, 40)}[task]
            ms.append(Measurement(f"drain.{task}.{spec.name}", "drain",
                                  f"drain {count} {task} tasks: {spec.label()}",
                                  lambda spec=spec, task=task, count=count: drain(url, spec, task, count)))
    if "e2e" in groups:
        for pub_kind, spec in (("send_task", STOCK), ("send_task", KIT_P1), ("bulk", SHORT_RECOMMENDED)):
            ms.append(Measurement(f"e2e.{pub_kind}.{spec.name}", "e2e",
                                  f"{n} tasks, {pub_kind} -> {spec.label()}",
                                  lambda p=pub_kind, s=spec: e2e(url, p, s, n)))
    if "latency" in groups:
        for spec in (STOCK, KIT_P1, SHORT_RECOMMENDED):
            ms.append(Measurement(f"latency.{spec.name}", "latency",
                                  f"one short task at a time: {spec.label()}",
                                  lambda s=spec: latency(url, s)))
    return ms


def targets(summary: dict) -> list[dict]:
    def get(key, field="rate"):
        return summary.get(key, {}).get(field)

    out = []
    ceiling, bulk = get("pub.raw_noconfirm_classic"), get("pub.kit_bulk_quorum")
    if ceiling and bulk:
        out.append({"target": "bulk submit (quorum, every message confirmed) >= 1/2 of the no-confirm ceiling",
                    "measured": f"{bulk:.0f} vs {ceiling:.0f} tasks/s ({bulk / ceiling:.0%})",
                    "met": bulk >= ceiling / 2})
    pair = summary.get("pair.bulk_over_ceiling", {})
    if "ratio" in pair:
        out.append({"target": "bulk submit >= 1/2 of the ceiling, measured back to back (pairs)",
                    "measured": f"median ratio {pair['ratio']:.0%} ({pair['rate']:.0f} vs {pair['ceiling']:.0f} tasks/s)",
                    "met": pair["ratio"] >= 0.5})
    stock = get("drain.tick.stock-prefork-c2-p4")
    # the kit as deployed (task events on, for Flower); the events-off row is reported beside it
    kit_short = {k: v["rate"] for k, v in summary.items()
                 if k.startswith("drain.tick.kit-") and "rate" in v and not k.endswith("-noevents")}
    if stock and kit_short:
        best = max(kit_short, key=kit_short.get)
        noevents = get(f"drain.tick.{KIT_THREADS_NOEVENTS.name}")
        aside = f"; {KIT_THREADS_NOEVENTS.name}: {noevents:.0f}" if noevents else ""
        out.append({"target": "short-pool drain with late acks >= stock early-ack drain",
                    "measured": f"{best.split('.')[-1]}: {kit_short[best]:.0f} vs stock {stock:.0f} tasks/s{aside}",
                    "met": kit_short[best] >= stock})
    lat = summary.get(f"latency.{SHORT_RECOMMENDED.name}", {})
    if "p50_ms" in lat:
        out.append({"target": "single short task p99 <= 3x p50 (recommended short pool)",
                    "measured": f"p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms "
                                f"({lat['p99_ms'] / lat['p50_ms']:.1f}x)",
                    "met": lat["p99_ms"] <= 3 * lat["p50_ms"]})
    return out


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-n", type=int, default=5000, help="tasks per publish/drain/e2e run")
    ap.add_argument("--max-background", type=float, default=0.3,
                    help="a run with more background CPU than this (cores) is discarded and retried")
    ap.add_argument("--max-attempts", type=int, default=3, help="attempts per run before keeping a loaded one")
    ap.add_argument("--only", default="publish,pairs,drain,e2e,latency")
    ap.add_argument("--gevent", action="store_true",
                    help="also measure the gevent pool (needs gevent, which the app's locks do not carry)")
    ap.add_argument("--brokers", default="forky,trixie",
                    help="brokers measured one after the other, every group on each, one report column each: "
                         "forky (RabbitMQ 4.3.6, Erlang 29), trixie (4.0.5, Erlang 27), bookworm (3.10.8), "
                         "loopback (the host's rabbitmq-server); default: forky,trixie")
    ap.add_argument("--loopback", action="store_true", help="the same as --brokers loopback")
    ap.add_argument("--out", default=RESULTS)
    args = ap.parse_args(argv)
    args.brokers = ["loopback"] if args.loopback else [c.strip() for c in args.brokers.split(",") if c.strip()]
    bad = [c for c in args.brokers if c not in brokers.CHOICES]
    if bad or not args.brokers or len(set(args.brokers)) != len(args.brokers):
        ap.error(f"--brokers: a comma-separated list of distinct names among {', '.join(brokers.CHOICES)}")
    return args


def measure(args, broker: brokers.Broker, entry: dict, write) -> None:
    """Every group on one broker, rounds interleaved; ``entry`` (this broker's part of the
    report) is updated and the report written after every round: a cut-off run leaves figures."""
    t0 = time.monotonic()
    roots = [os.getpid()] + broker.pids()
    idle = gate.idle_sample(roots, 2.0)
    entry["idle_sample"] = idle.as_dict()
    print(f"{broker.key}: idle sample: background {idle.background_cores:.2f} cores, "
          f"load {idle.loadavg_1m:.1f}", flush=True)
    ms = build(args, broker.url)
    for r in range(args.rounds):
        print(f"{broker.key}: round {r + 1}/{args.rounds}", flush=True)
        order = ms[r % len(ms):] + ms[:r % len(ms)] if ms else []
        for m in order:
            m.runs.append(gated(m, roots, args.max_background, args.max_attempts))
        summary = {m.key: rep.summarize(m) for m in ms}
        entry.update(rounds=r + 1, seconds=time.monotonic() - t0, summary=summary, targets=targets(summary),
                     runs={m.key: m.runs for m in ms})
        write()


def main(argv=None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, f"confirms-{started.strftime('%Y%m%dT%H%M%SZ')}")
    entries: list[dict] = []   # one per broker measured, in order
    notes: list[str] = []
    report: dict = {}

    def write() -> None:
        report.update({
            "started": started.strftime("%Y-%m-%d %H:%M:%SZ"),
            "seconds": time.monotonic() - t0,
            "brokers_planned": args.brokers, "brokers": entries, "notes": notes,
            "machine": f"{os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}",
            "rounds_planned": args.rounds, "n": args.n, "groups": args.only,
            "max_background_cores": args.max_background, "max_attempts": args.max_attempts,
        })
        with open(base + ".json", "w") as f:
            json.dump(report, f, indent=2, default=str)
        with open(base + ".md", "w") as f:
            f.write(rep.markdown(report))

    # one broker at a time (two would share the 2 cores): start, every group, stop; then the next
    for choice in args.brokers:
        print(f"starting the {choice} broker...", flush=True)
        fallback = "loopback" not in args.brokers and not any(e["broker"]["kind"] == "loopback" for e in entries)
        try:
            broker, note = brokers.start_broker(choice, fallback=fallback)
        except Exception as exc:  # noqa: BLE001 - the loopback broker failed too: the next broker
            broker, note = None, f"{choice}: no broker ({str(exc)[:500]}); not measured"
        if note:
            notes.append(note)
            print(f"note: {note}", flush=True)
        if broker is None:
            continue
        entry = {"broker": broker.as_dict(), "rounds": 0, "seconds": 0.0, "summary": {}, "targets": [], "runs": {}}
        entries.append(entry)
        print(f"broker {broker.key}: {broker.describe()}", flush=True)
        try:
            measure(args, broker, entry, write)
        finally:
            broker.stop()
    write()
    print(rep.markdown(report))
    print(f"written: {base}.json and {base}.md")
    return 0 if entries else 1


if __name__ == "__main__":
    sys.exit(main())
