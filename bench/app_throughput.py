#!/usr/bin/env python3
"""Benchmark of the sample app: task throughput/latency and audio analysis speed.

One command, one run (about 2-3 minutes on the 2-core VM):

    .venv-app/bin/python bench/app_throughput.py [--tasks 3000] [--out bench/results/app_throughput.md]

Through a real RabbitMQ started on loopback (app/tests/broker.py, the same
node the integration tests use) it measures, in the same run:

  (a) the app's tuned settings: quorum queue with DLX and delivery limit,
      publisher confirms, acks_late, events on, `-Q short` worker;
  (b) Celery's stock settings: classic queue `celery`, no confirms, early
      acks, events off;
  (c) raw AMQP with py-amqp (Celery's own client library): same durability
      as (a) (quorum queue, persistent messages, publisher confirms, manual
      acks) without Celery: the ceiling.

Each configuration gets a burst of N no-op tasks (throughput: N / time from
the first publish to the last task start; the publisher's own rate is shown
too) and a paced run at a low rate (latency p50/p99 from publish to task
start, without queueing behind the burst). Workers run `-c 2` prefork.

Audio: audio-seconds decoded and analysed per CPU-second (in-process,
python-soundfile + numpy, time.process_time), against decode-only speed.

Figures go to bench/results/app_throughput.md (and .json). Not a test: it
asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "app", "tests"))
sys.path.insert(0, HERE)

from broker import RabbitMQ  # noqa: E402
import stamps  # noqa: E402
from workers import Worker  # noqa: E402

STAMPS = "stamps.*"  # the stamp files of bench_tasks.py


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


#: tuned settings with one thing changed (each on its own queues), to explain costs
VARIANTS = [
    ("tuned, events off", {"CELERY_STACK_TASK_EVENTS": "false", "CELERY_STACK_SHORT_QUEUE": "v1_short",
                           "CELERY_STACK_LONG_QUEUE": "v1_long"}),
    ("tuned, classic queues", {"CELERY_STACK_QUEUE_TYPE": "classic", "CELERY_STACK_SHORT_QUEUE": "v2_short",
                               "CELERY_STACK_LONG_QUEUE": "v2_long"}),
]


def best_of(rounds: list[dict]) -> list[dict]:
    """Per configuration, the best round: max throughput/publish rate, min latencies (noise only slows)."""
    out: dict[str, dict] = {}
    for r in rounds:
        b = out.setdefault(r["config"], dict(r))
        b["throughput"] = max(b["throughput"], r["throughput"])
        b["publish_rate"] = max(b["publish_rate"], r["publish_rate"])
        b["p50_ms"] = min(b["p50_ms"], r["p50_ms"])
        b["p99_ms"] = min(b["p99_ms"], r["p99_ms"])
        b["burst_completed"] = min(b["burst_completed"], r["burst_completed"])
    return list(out.values())


def summarize(name: str, rows_burst, n_burst, t_pub_start, t_pub_end, rows_paced) -> dict:
    burst_end = max(t for _, t in rows_burst) if rows_burst else float("nan")
    lat = [(t - p) * 1000 for p, t in rows_paced]
    return {
        "config": name,
        "burst_tasks": n_burst,
        "burst_completed": len(rows_burst),
        "publish_rate": n_burst / (t_pub_end - t_pub_start),
        "throughput": len(rows_burst) / (burst_end - t_pub_start) if rows_burst else 0.0,
        "paced_tasks": len(rows_paced),
        "p50_ms": pct(lat, 50),
        "p99_ms": pct(lat, 99),
    }


# ---------------------------------------------------------------------------
# (a) and (b): Celery


class CeleryConfig:
    """A worker (started once) and a client app for one configuration."""

    def __init__(self, name: str, rmq: RabbitMQ, extra_env: dict[str, str] | None = None):
        self.name = name
        self.rmq = rmq
        self.out_dir = tempfile.mkdtemp(prefix="bench-celery-")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_STACK_")}
        env.update(BENCH_OUT=self.out_dir, BENCH_BROKER_URL=rmq.url)
        if name.startswith("tuned"):
            env.update(BENCH_APP="tuned", CELERY_STACK_BROKER_URLS=rmq.url, **(extra_env or {}))
            self.queue = env.get("CELERY_STACK_SHORT_QUEUE", "short")
            wname = "".join(ch if ch.isalnum() else "-" for ch in name)
            self.worker = Worker(env, app="celery_stack_app.celery_app", queues=self.queue, concurrency=2,
                                 include="bench_tasks", name=wname, pythonpath=[HERE], loglevel="WARNING")
            from celery import Celery

            from celery_stack_app import celery_app as ca
            from celery_stack_app import settings as s_mod

            cfg = s_mod.load({k: v for k, v in env.items() if k.startswith("CELERY_STACK_")})
            self.app = Celery("tuned-client", set_as_current=False)
            self.app.conf.update(ca.build_config(cfg))
            self.options = {"queue": self.queue, "ignore_result": True}
        else:
            self.queue = "celery"
            self.worker = Worker(env, app="stock_app", concurrency=2, name="stock", pythonpath=[HERE],
                                 loglevel="WARNING")
            from celery import Celery

            self.app = Celery("stock-client", broker=rmq.url, set_as_current=False)
            self.options = {}

    def _consuming(self) -> bool:
        conn = self.rmq.amqp_connection()
        try:
            return conn.channel().queue_declare(self.queue, passive=True).consumer_count > 0
        except Exception:
            return False
        finally:
            conn.close()

    def start(self) -> None:
        self.worker.start(ready=self._consuming)
        self.send(time.time())  # warm up the connection, pool and worker
        stamps.wait(self.out_dir, STAMPS, 1, 30, interval=0.2)

    def send(self, t: float) -> None:
        self.app.send_task("bench.stamp", args=(t,), **self.options)

    def _reset(self) -> None:
        stamps.clear(self.out_dir, STAMPS)

    def measure(self, n_burst: int, n_paced: int, rate: float) -> dict:
        self._reset()
        t0 = time.time()
        for _ in range(n_burst):
            self.send(time.time())
        t1 = time.time()
        burst = stamps.wait(self.out_dir, STAMPS, n_burst, 120, interval=0.2)
        time.sleep(0.3)
        self._reset()
        next_t = time.monotonic()
        for _ in range(n_paced):
            self.send(time.time())
            next_t += 1.0 / rate
            time.sleep(max(0.0, next_t - time.monotonic()))
        paced = stamps.wait(self.out_dir, STAMPS, n_paced, 60, interval=0.2)
        return summarize(self.name, burst, n_burst, t0, t1, paced)

    def stop(self) -> None:
        self.app.close()
        self.worker.stop()
        self.worker.cleanup()


# ---------------------------------------------------------------------------
# (c): raw py-amqp


def _raw_consumer(rmq: RabbitMQ, queue: str, n: int, results: list, ready: threading.Event, prefetch: int):
    conn = rmq.amqp_connection()
    ch = conn.channel()
    ch.basic_qos(0, prefetch, False)

    def on_message(msg):
        results.append((float(msg.body), time.time()))
        ch.basic_ack(msg.delivery_tag)

    ch.basic_consume(queue, callback=on_message)
    ready.set()
    deadline = time.monotonic() + 120
    while len(results) < n and time.monotonic() < deadline:
        try:
            conn.drain_events(timeout=1)
        except Exception:
            if len(results) >= n:
                break
    conn.close()


def run_raw(rmq: RabbitMQ, n_burst: int, n_paced: int, rate: float, body_size: int,
            quorum_confirms: bool) -> dict:
    """py-amqp publisher here, consumer thread on its own connection (manual acks, prefetch 8).

    quorum_confirms=True: quorum queue + publisher confirms (the tuned app's guarantees);
    False: classic durable queue, no confirms (stock Celery's).
    """
    import amqp

    queue = "raw_quorum" if quorum_confirms else "raw_classic"
    name = "raw py-amqp, quorum + confirms" if quorum_confirms else "raw py-amqp, classic, no confirms"
    conn = rmq.amqp_connection()
    ch = conn.channel()
    args = {"x-queue-type": "quorum"} if quorum_confirms else {}
    ch.queue_declare(queue, durable=True, auto_delete=False, arguments=args)
    if quorum_confirms:
        ch.confirm_select()
    pad = "x" * max(0, body_size - 20)

    def publish(t):
        msg = amqp.Message(f"{t:.6f}", delivery_mode=2, content_type="text/plain",
                           application_headers={"pad": pad})
        if quorum_confirms:
            ch.basic_publish_confirm(msg, exchange="", routing_key=queue)
        else:
            ch.basic_publish(msg, exchange="", routing_key=queue)

    def phase(n, paced):
        results: list = []
        ready = threading.Event()
        th = threading.Thread(target=_raw_consumer, args=(rmq, queue, n, results, ready, 8), daemon=True)
        th.start()
        ready.wait(10)
        t0 = time.time()
        next_t = time.monotonic()
        for _ in range(n):
            publish(time.time())
            if paced:
                next_t += 1.0 / rate
                time.sleep(max(0.0, next_t - time.monotonic()))
        t1 = time.time()
        th.join(120)
        return results, t0, t1

    burst, t0, t1 = phase(n_burst, False)
    paced, _, _ = phase(n_paced, True)
    conn.close()
    return summarize(name, burst, n_burst, t0, t1, paced)


def celery_message_size(rmq_url: str) -> int:
    """Bytes of body + headers of a Celery protocol-2 task message with one float arg."""
    from celery import Celery

    app = Celery("size", broker=rmq_url, set_as_current=False)
    msg = app.amqp.create_task_message("00000000-0000-0000-0000-000000000000", "bench.stamp",
                                       (time.time(),), {})
    body = json.dumps(msg.body)
    headers = json.dumps(msg.headers, default=str)
    return len(body) + len(headers)


# ---------------------------------------------------------------------------
# audio


def run_audio(seconds: float = 30.0, repeats: int = 3) -> list[dict]:
    import numpy as np
    import soundfile

    from celery_stack_app import audio

    sr = 44100
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(0)
    signal = 0.4 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)
    signal = np.stack([signal, np.roll(signal, 100)], axis=1)
    rows = []
    for fmt, subtype in (("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III")):
        buf = io.BytesIO()
        soundfile.write(buf, signal, sr, format=fmt, subtype=subtype)
        data = buf.getvalue()
        timings = {}
        for mode in ("decode", "analyse"):
            best = float("inf")
            for _ in range(repeats):
                c0 = time.process_time()
                audio.analyse_stream(io.BytesIO(data), size=len(data), decode_only=(mode == "decode"))
                best = min(best, time.process_time() - c0)
            timings[mode] = best
        rows.append({
            "format": f"{fmt}/{subtype}", "bytes": len(data), "audio_seconds": seconds,
            "decode_audio_s_per_cpu_s": seconds / timings["decode"],
            "analyse_audio_s_per_cpu_s": seconds / timings["analyse"],
            "analyse_vs_decode": timings["decode"] / timings["analyse"],
        })
    return rows


# ---------------------------------------------------------------------------


def render(results: dict) -> str:
    lines = [
        "# celery-stack-app benchmark",
        "",
        f"Run: {results['when']} on {results['machine']} (shared with other jobs: figures are indicative;",
        "compare the rows of one run, not runs with each other).",
        f"RabbitMQ {results['rabbitmq']} on loopback, Celery {results['celery']}, py-amqp {results['amqp']}, "
        f"Python {results['python']}. Worker: prefork `-c 2`.",
        f"Burst: {results['n_burst']} tasks published back to back; paced: {results['n_paced']} tasks at "
        f"{results['rate']}/s (latency = publish to task start). Raw messages carry "
        f"{results['body_size']} bytes like a Celery message.",
        "",
        "## No-op task",
        "",
        f"Best of {results['n_rounds']} interleaved rounds per configuration. \"vs raw\" compares with the raw",
        "py-amqp run that gives the closest guarantees: tuned vs quorum + confirms, stock (and classic variants)",
        "vs classic without confirms. Tuned publishes with a synchronous publisher confirm per task.",
        "",
        "| configuration | publish rate (msg/s) | throughput (tasks/s) | vs raw | latency p50 (ms) | p99 (ms) |",
        "|---|---|---|---|---|---|",
    ]
    by = {r["config"]: r for r in results["tasks"]}
    def raw_for(config: str) -> str:
        if config.startswith("raw"):
            return config
        if config.startswith("tuned") and "classic" not in config:
            return "raw py-amqp, quorum + confirms"
        return "raw py-amqp, classic, no confirms"

    for r in results["tasks"]:
        base = by.get(raw_for(r["config"]))
        ratio = r["throughput"] / base["throughput"] if base and base["throughput"] else float("nan")
        done = "" if r["burst_completed"] == r["burst_tasks"] else f" ({r['burst_completed']} done)"
        lines.append(f"| {r['config']} | {r['publish_rate']:.0f} | {r['throughput']:.0f}{done} | {ratio:.2f} | "
                     f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} |")
    if "tuned" in by and "stock" in by and by["stock"]["throughput"]:
        lines += ["", f"tuned / stock: throughput {by['tuned']['throughput'] / by['stock']['throughput']:.2f}, "
                  f"publish rate {by['tuned']['publish_rate'] / by['stock']['publish_rate']:.2f}, "
                  f"p50 latency {by['tuned']['p50_ms'] / by['stock']['p50_ms']:.2f}."]
    lines += [
        "",
        "## Audio analysis (in-process, one core)",
        "",
        "| format | file bytes | decode only (audio-s per CPU-s) | decode + features (audio-s per CPU-s) | analysis / decode speed |",
        "|---|---|---|---|---|",
    ]
    for a in results["audio"]:
        lines.append(f"| {a['format']} | {a['bytes']} | {a['decode_audio_s_per_cpu_s']:.0f} | "
                     f"{a['analyse_audio_s_per_cpu_s']:.0f} | {a['analyse_vs_decode']:.2f} |")
    lines += ["", f"Total wall time: {results['wall_seconds']:.0f} s", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=2000, help="tasks per burst")
    ap.add_argument("--paced", type=int, default=300, help="tasks in the paced latency run")
    ap.add_argument("--rate", type=float, default=100.0, help="paced publish rate (tasks/s)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds (configurations interleaved; best kept)")
    ap.add_argument("--variants", type=int, default=1,
                    help="also measure this many tuned variants (see VARIANTS) to explain the difference")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "app_throughput.md"))
    args = ap.parse_args()
    started = time.monotonic()
    import amqp
    import celery

    results: dict = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()} {os.cpu_count()} CPU",
        "python": platform.python_version(), "celery": celery.__version__, "amqp": amqp.__version__,
        "n_burst": args.tasks, "n_paced": args.paced, "n_rounds": args.rounds, "rate": args.rate, "tasks": [],
    }
    with RabbitMQ() as rmq:
        conn = rmq.amqp_connection()
        results["rabbitmq"] = conn.server_properties.get("version", "?")
        conn.close()
        results["body_size"] = celery_message_size(rmq.url)
        configs = [CeleryConfig("tuned", rmq), CeleryConfig("stock", rmq)]
        for label, extra in VARIANTS[: args.variants]:
            configs.append(CeleryConfig(label, rmq, extra))
        try:
            for c in configs:
                c.start()
            rounds = []
            for r in range(args.rounds):
                for c in configs:
                    print(f"[bench] round {r + 1}: celery {c.name} ...", file=sys.stderr, flush=True)
                    rounds.append(c.measure(args.tasks, args.paced, args.rate))
                for qc in (True, False):
                    print(f"[bench] round {r + 1}: raw py-amqp ...", file=sys.stderr, flush=True)
                    rounds.append(run_raw(rmq, args.tasks, args.paced, args.rate, results["body_size"], qc))
        finally:
            for c in configs:
                c.stop()
    results["rounds"] = rounds
    results["tasks"] = best_of(rounds)
    print("[bench] audio ...", file=sys.stderr, flush=True)
    results["audio"] = run_audio()
    results["wall_seconds"] = time.monotonic() - started
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    text = render(results)
    with open(args.out, "w") as f:
        f.write(text)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump(results, f, indent=2)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
