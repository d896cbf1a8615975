"""A TCP proxy in front of a test server that can cut, black-hole and restore connectivity.

``down()`` closes the listening socket and every open connection, so clients see "connection
refused" exactly as when a server pod is not running; ``blackhole()`` accepts connections and never
answers, as a NetworkPolicy that drops packets; ``up()`` forwards again on the same port.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from collections.abc import Iterator

import pytest

from sharedpg_tools.localserver import free_port
from tests.fix_servers import Server


class Proxy:
    def __init__(self, target_host: str, target_port: int, port: int | None = None):
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self.mode = "down"
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def conninfo(self, server: Server, user: str | None = None, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={user or server.superuser} dbname={dbname}"

    def up(self) -> None:
        self._listen("forward")

    def blackhole(self) -> None:
        self._listen("blackhole")

    def down(self) -> None:
        with self._lock:
            self.mode = "down"
            self._stop.set()
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            for conn in self._conns:
                conn.close()
            self._conns.clear()
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None

    def _listen(self, mode: str) -> None:
        self.down()
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        with self._lock:
            self.mode = mode
            self._listener = listener
            self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(listener, self._stop), daemon=True)
        self._thread.start()

    def _serve(self, listener: socket.socket, stop: threading.Event) -> None:
        sel = selectors.DefaultSelector()
        sel.register(listener, selectors.EVENT_READ, None)
        pairs: dict[socket.socket, socket.socket] = {}
        while not stop.is_set():
            try:
                events = sel.select(0.05)
            except (OSError, ValueError):
                break
            for key, _ in events:
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is listener:
                    self._accept(listener, sel, pairs)
                    continue
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                peer = pairs.get(sock)
                if not data or peer is None:
                    self._drop(sock, pairs, sel)
                    continue
                try:
                    peer.sendall(data)
                except OSError:
                    self._drop(sock, pairs, sel)
        sel.close()

    def _accept(
        self, listener: socket.socket, sel: selectors.BaseSelector, pairs: dict[socket.socket, socket.socket]
    ) -> None:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        with self._lock:
            self._conns.append(client)
        if self.mode == "blackhole":
            return  # hold it open, say nothing
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        with self._lock:
            self._conns.append(upstream)
        pairs[client], pairs[upstream] = upstream, client
        sel.register(client, selectors.EVENT_READ, None)
        sel.register(upstream, selectors.EVENT_READ, None)

    @staticmethod
    def _drop(sock: socket.socket, pairs: dict[socket.socket, socket.socket], sel: selectors.BaseSelector) -> None:
        for s in (sock, pairs.pop(sock, None)):
            if s is None:
                continue
            pairs.pop(s, None)
            with contextlib.suppress(KeyError, ValueError):
                sel.unregister(s)
            s.close()


@pytest.fixture
def proxy(pg: Server) -> Iterator[Proxy]:
    """A proxy in front of ``pg``, initially down (nothing listens on its port)."""
    p = Proxy(pg.host, pg.port)
    yield p
    p.down()
