"""Publishes tasks with the deployed application (its venv on a worker host).

The broker URL comes from CELERY_STACK_BROKER_URLS (the tests point it at
HAProxy). Tasks go out with Celery's own producer and the app's settings:
publisher confirms, so a send that returns is a message RabbitMQ has.

  producer.py send TASK QUEUE COUNT PREFIX [KWARGS_JSON]
      COUNT tasks with ids PREFIX0..; prints {"confirmed": [...], "failed": {...}}
  producer.py stream TASK QUEUES PREFIX OUTFILE STOPFILE RATE MAX_SECONDS
      a steady stream (at most RATE per second, QUEUES comma-separated and
      taken in turn, ids PREFIX<queue>.<n>) until STOPFILE exists or
      MAX_SECONDS passed; OUTFILE gets the progress every half second and
      the final {"confirmed": [...], "failed": {...}, "done": true} and the
      longest wait for a confirmed publish, "longest_confirm_wait_seconds"
"""

import json
import os
import sys
import time

from celery_stack_app.celery_app import app


def send(task, queue, task_id, kwargs):
    app.send_task(task, kwargs=kwargs, queue=queue, task_id=task_id)


def cmd_send(task, queue, count, prefix, kwargs="{}"):
    confirmed, failed = [], {}
    for i in range(int(count)):
        tid = f"{prefix}{i}"
        try:
            send(task, queue, tid, json.loads(kwargs))
            confirmed.append(tid)
        except Exception as exc:  # noqa: BLE001 (reported, not hidden)
            failed[tid] = repr(exc)
    print(json.dumps({"confirmed": confirmed, "failed": failed}))


def cmd_stream(task, queues, prefix, outfile, stopfile, rate, max_seconds):
    rate, max_seconds = float(rate), float(max_seconds)
    queues = queues.split(",")
    confirmed, failed = [], {}
    longest_wait = 0.0
    start = last_write = time.monotonic()
    i = 0

    def write(done=False):
        tmp = outfile + ".tmp"
        data = {"confirmed_count": len(confirmed), "failed_count": len(failed), "done": done,
                "longest_confirm_wait_seconds": round(longest_wait, 3)}
        if done:
            data.update(confirmed=confirmed, failed=failed)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, outfile)

    while not os.path.exists(stopfile) and time.monotonic() - start < max_seconds:
        queue = queues[i % len(queues)]
        tid = f"{prefix}{queue}.{i}"
        i += 1
        t0 = time.monotonic()
        try:
            send(task, queue, tid, {})
            confirmed.append(tid)
            longest_wait = max(longest_wait, time.monotonic() - t0)
        except Exception as exc:  # noqa: BLE001 (a refused send is counted, not hidden)
            failed[tid] = repr(exc)
            time.sleep(0.2)
        now = time.monotonic()
        if now - last_write > 0.5:
            write()
            last_write = now
        pause = 1.0 / rate - (now - t0)
        if pause > 0:
            time.sleep(pause)
    write(done=True)


if __name__ == "__main__":
    {"send": cmd_send, "stream": cmd_stream}[sys.argv[1]](*sys.argv[2:])
