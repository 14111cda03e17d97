"""A slow HTTP endpoint for the cluster tests (runs with the system python3).

usage: slow_http.py PORT LOGFILE PIDFILE
Every request is logged as "<client address> <path>" when it arrives. The
query string says how long to answer:
  ?fast=1        at once
  ?slow=first    the first request of a path waits HOLD seconds, later ones answer at once
  ?slow=always   every request waits HOLD seconds
HOLD stays below the application's website-check read timeout (10 s) and total
deadline (CELERY_STACK_WEBCHECK_DEADLINE, 20 s). The workers may reach this host because
the scenario allows it (group_vars/all/webcheck.yml, CELERY_STACK_WEBCHECK_ALLOW).
"""

import os
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

HOLD = 9.0
PORT, LOG, PIDFILE = int(sys.argv[1]), sys.argv[2], sys.argv[3]
hits: Counter = Counter()
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        with lock:
            hits[parts.path] += 1
            n = hits[parts.path]
            with open(LOG, "a", encoding="utf-8") as log:
                log.write(f"{self.client_address[0]} {parts.path}\n")
        slow = query.get("slow", [""])[0]
        if slow == "always" or (slow == "first" and n == 1):
            time.sleep(HOLD)
        body = f"ok {parts.path} {n}\n".encode()
        try:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client (a killed worker process) is gone

    def log_message(self, *args):
        pass


with open(PIDFILE, "w", encoding="utf-8") as f:
    f.write(str(os.getpid()))
ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
