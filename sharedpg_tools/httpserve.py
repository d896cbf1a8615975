"""A small HTTP server whose cost does not grow with the clients that connect and say nothing.

serve-metrics is reachable from every namespace its NetworkPolicy admits. A thread per connection (the
standard library's servers) lets idle clients take the process's memory and descriptors, and then every
scrape fails. Here one event loop (epoll, no ``select()`` and its 1,024-descriptor ceiling) holds the
connections:

- at most ``max_connections`` are open; when another arrives, the one that has waited longest without a
  complete request is closed to make room (a scraper sends its request at once, an idle client never does),
  and if every open one is being answered the newcomer is closed;
- a request must arrive whole within ``header_timeout`` seconds and ``max_request`` bytes;
- one request per connection (``Connection: close``); answers are computed off the loop, in a few threads.

``handle(method, path, headers)`` returns ``(status, headers, body)``; it runs in a worker thread, and
an exception there is a 500 (the handler logs its own failures).
"""

from __future__ import annotations

import asyncio
import collections
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

Response = tuple[str, list[tuple[str, str]], bytes]
Handler = Callable[[str, str, dict[str, str]], Response]
_REASONS = {"200": "OK", "400": "Bad Request", "404": "Not Found", "405": "Method Not Allowed",
            "500": "Internal Server Error"}  # fmt: skip


class Limits:
    def __init__(self, max_connections: int = 256, header_timeout: float = 5.0, max_request: int = 8192,
                 workers: int = 4):  # fmt: skip
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.max_request = max_request
        self.workers = workers


class _Server:
    def __init__(self, handle: Handler, limits: Limits):
        self.handle = handle
        self.limits = limits
        self.waiting: collections.OrderedDict[asyncio.StreamWriter, None] = collections.OrderedDict()
        self.answering: set[asyncio.StreamWriter] = set()
        self.pool = ThreadPoolExecutor(max_workers=limits.workers, thread_name_prefix="http")

    def _make_room(self, writer: asyncio.StreamWriter) -> bool:
        if len(self.waiting) + len(self.answering) < self.limits.max_connections:
            return True
        if self.waiting:
            oldest, _ = self.waiting.popitem(last=False)
            oldest.transport.abort()
            return True
        writer.transport.abort()
        return False

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._make_room(writer):
            return
        self.waiting[writer] = None
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.limits.header_timeout)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            self.waiting.pop(writer, None)
            writer.transport.abort()
            return
        if self.waiting.pop(writer, "evicted") == "evicted":  # closed to make room while it waited
            return
        self.answering.add(writer)
        try:
            status, headers, body = await self._answer(request)
            fields = [*headers, ("Content-Length", str(len(body))), ("Connection", "close")]
            head = f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields)
            writer.write(head.encode("latin-1") + b"\r\n" + (b"" if request.startswith(b"HEAD ") else body))
            await asyncio.wait_for(writer.drain(), self.limits.header_timeout)
        except (TimeoutError, ConnectionError):
            pass
        finally:
            self.answering.discard(writer)
            writer.close()

    async def _answer(self, request: bytes) -> Response:
        lines = request.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return text("400", "bad request\n")
        method, target, _ = parts
        if method not in ("GET", "HEAD"):
            return text("405", "only GET and HEAD\n")
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        path = target.split("?", 1)[0]
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.pool, self.handle, method, path, headers)
        except Exception:  # the handler logs its own failures; the client gets a 500
            return text("500", "internal error\n")


def text(status: str, body: str) -> Response:
    """A plain-text answer."""
    return status, [("Content-Type", "text/plain; charset=utf-8")], body.encode()


def serve(host: str, port: int, handle: Handler, limits: Limits, started: Callable[[int], None]) -> int:
    """Serve until SIGTERM or SIGINT; return that signal's number. ``started(port)`` once listening.

    :raises OSError: when the address cannot be bound.
    """
    return asyncio.run(_main(host, port, handle, limits, started))


async def _main(host: str, port: int, handle: Handler, limits: Limits, started: Callable[[int], None]) -> int:
    server = _Server(handle, limits)
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[int] = loop.create_future()

    def stopping(signum: int) -> None:
        if not stop.done():
            stop.set_result(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping, signum)
    listener = await asyncio.start_server(server.connection, host, port, backlog=1024,
                                          limit=limits.max_request)  # fmt: skip
    started(listener.sockets[0].getsockname()[1])
    try:
        return await stop
    finally:
        listener.close()
        server.pool.shutdown(wait=False, cancel_futures=True)
