"""A loopback TCP proxy that delays, jitters or stalls traffic: the network between robot and GPU box, on demand.

Each chunk read from one side is delivered to the other after `delay_s` + uniform(-jitter_s, +jitter_s) (never
before an earlier chunk: TCP keeps order, so does this), and `stall()` holds all traffic until `resume()`, as a
congested or briefly broken link does. gRPC's HTTP/2 frames pass through untouched.
"""

from __future__ import annotations

import queue
import random
import socket
import threading
import time
from dataclasses import dataclass


@dataclass
class LinkProfile:
    delay_s: float = 0.0
    jitter_s: float = 0.0
    seed: int = 0


class DelayProxy:
    def __init__(self, target_port: int, profile: LinkProfile, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.profile = profile
        self._rng = random.Random(profile.seed)
        self._rng_lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._running = True
        self._open = threading.Event()
        self._open.set()
        self._sockets: list[socket.socket] = []
        self._accept_thread = threading.Thread(target=self._accept, name="delay-proxy", daemon=True)
        self._accept_thread.start()

    # -- control ------------------------------------------------------------------------------------------------
    def stall(self) -> None:
        """Hold every byte in both directions until `resume()`."""
        self._open.clear()

    def resume(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._running = False
        self._open.set()
        self._listener.close()
        for s in list(self._sockets):
            try:
                s.close()
            except OSError:
                pass

    def __enter__(self) -> DelayProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------------------------------
    def _delay(self) -> float:
        p = self.profile
        with self._rng_lock:
            jitter = self._rng.uniform(-p.jitter_s, p.jitter_s) if p.jitter_s > 0 else 0.0
        return max(0.0, p.delay_s + jitter)

    def _accept(self) -> None:
        while self._running:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._sockets.append(s)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        """Read as bytes arrive (stamping each chunk's delivery time) and hand them to a writer that sends each
        when due, so delays do not add up under continuous traffic."""
        pending: queue.Queue[tuple[float, bytes] | None] = queue.Queue()
        writer = threading.Thread(target=self._deliver, args=(pending, dst), daemon=True)
        writer.start()
        last_due = 0.0
        while self._running:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            # In order: a chunk is never delivered before the one read before it.
            last_due = max(time.monotonic() + self._delay(), last_due)
            pending.put((last_due, data))
        pending.put(None)

    def _deliver(self, pending: queue.Queue[tuple[float, bytes] | None], dst: socket.socket) -> None:
        while True:
            item = pending.get()
            if item is None:
                break
            due, data = item
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._open.wait()
            try:
                dst.sendall(data)
            except OSError:
                break
        try:
            dst.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
