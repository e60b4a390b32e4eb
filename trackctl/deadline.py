"""A hard deadline for HTTP requests (trackctl/http_client.py): carrier GETs and webhook POSTs.

The socket timeout bounds each connect and each read, not the whole request: a server that
sends one byte just inside every timeout could hold a worker for hours. A watchdog thread shuts
the socket of every request whose total time is up, whatever phase it is in, and the blocked
read returns at once.

http.client lets go of `conn.sock` as soon as a response with `Connection: close` (or an
HTTP/1.0 answer) begins, leaving the socket to the response object; the client's connections
keep their own reference (`watched_sock`) so that the watchdog can still reach the socket while
the body is read. `fire_all` shuts every watched socket at once: a run that is stopped abandons
its requests in flight.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time


class Watchdog:
    """Shuts the socket of a watched connection when its deadline passes; one thread for all."""

    def __init__(self, name: str = "http-watchdog") -> None:
        self._name = name
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._live: dict[int, object] = {}
        self._fired: set[int] = set()
        self._seq = itertools.count()
        self._closed = False
        self._thread: threading.Thread | None = None

    def watch(self, conn: object, deadline: float) -> int:
        """Watch `conn` until `deadline` (time.monotonic()); return the ticket for `release`."""
        with self._cond:
            seq = next(self._seq)
            self._live[seq] = conn
            earliest = not self._heap or deadline < self._heap[0][0]
            heapq.heappush(self._heap, (deadline, seq))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            if earliest:  # otherwise the thread already wakes up early enough
                self._cond.notify()
        return seq

    def fired(self, seq: int) -> bool:
        """True once the deadline of a watched connection has shut its socket."""
        with self._cond:
            return seq in self._fired

    def release(self, seq: int) -> bool:
        """Stop watching; return True if the deadline had fired."""
        with self._cond:
            self._live.pop(seq, None)
            fired = seq in self._fired
            self._fired.discard(seq)
            return fired

    def fire_all(self) -> None:
        """Shut the socket of every watched connection now, as if each deadline had passed."""
        with self._cond:
            live = list(self._live.items())
            self._live.clear()
            self._fired.update(seq for seq, _ in live)
        for _, conn in live:
            _shut(conn)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                while self._heap and self._heap[0][1] not in self._live:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, seq = self._heap[0]
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                heapq.heappop(self._heap)
                conn = self._live.pop(seq)
                self._fired.add(seq)
                _shut(conn)


def _shut(conn: object) -> None:
    for sock in {id(s): s for s in (getattr(conn, "sock", None), getattr(conn, "watched_sock", None))
                 if s is not None}.values():
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
