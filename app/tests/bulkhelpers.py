"""Helpers of the bulk-publisher tests: a killable TCP proxy (a broker node or HAProxy that dies),
and reading back what a queue holds."""

from __future__ import annotations

import socket
import threading


class Proxy:
    """Forward 127.0.0.1:<port> to the broker; ``kill()`` drops every connection and stops listening."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._alive = True
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, rabbitmq) -> str:
        return rabbitmq.url.replace(f":{rabbitmq.port}/", f":{self.port}/")

    def _accept(self) -> None:
        while self._alive:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if not self._alive:
                    client.close()
                    upstream.close()
                    return
                self.accepted += 1
                self._socks += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def kill(self) -> None:
        with self._lock:
            self._alive = False
            socks, self._socks = self._socks, []
        try:
            self.listener.shutdown(socket.SHUT_RDWR)   # wakes the accept() thread on Linux
        except OSError:
            pass
        self.listener.close()
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()



def queued_messages(rabbitmq, queue: str) -> list:
    """Take every message of ``queue`` (basic.get, no ack needed); returns py-amqp messages."""
    conn = rabbitmq.amqp_connection()
    out = []
    try:
        ch = conn.channel()
        while True:
            msg = ch.basic_get(queue, no_ack=True)
            if msg is None:
                return out
            out.append(msg)
    finally:
        conn.close()


def task_ids(messages) -> list[str]:
    return [m.properties["application_headers"]["id"] for m in messages]
