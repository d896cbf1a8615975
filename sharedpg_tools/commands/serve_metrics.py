"""``sharedpg serve-metrics``: check-pool's live reading at ``/metrics``, for Prometheus to scrape.

A scrape reads the server (one short connection, connect and queries bounded by ``--read-timeout``)
unless a read ended less than ``--cache`` seconds ago; scrapes that come together wait for the one read
in progress, so a burst (two Prometheus replicas, a dashboard refresh) costs one read. A read that fails
is exported as ``sharedpg_up 0`` with no figures; the reason goes to the log, once per failure streak.
``/healthz`` answers 200 while the process serves: liveness must not follow the database, or an outage
would restart the exporter that reports it.
"""

from __future__ import annotations

import argparse
import socketserver
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from sharedpg_tools import logs, metrics, pool, spec
from sharedpg_tools.commands.check_pool import add_threshold_arguments, check_thresholds
from sharedpg_tools.errors import ConfigError, Interrupted
from sharedpg_tools.settings import Context, EnvDefaults, Target, seconds, target_from_args

NAME = "serve-metrics"
USES_STRUCTLOG = False  # a long-running process: the lean logger is enough
OUTPUTS = ("text",)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not [HOST]:PORT, e.g. :9187 or 127.0.0.1:9187")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 (a pod's exporter listens on its IP)


def add_arguments(parser: argparse.ArgumentParser, environ: Any) -> None:
    opts = EnvDefaults(parser, environ)
    opts.add("--listen", type=_listen, default=":9187", metavar="[HOST]:PORT", help="where to serve")
    opts.add("--spec", metavar="FILE", help="the tenants spec: adds each tenant's budget and expected limit")
    opts.add("--cache", type=seconds, default=5.0, metavar="SECONDS", help="reuse a read this young")
    opts.add("--read-timeout", type=seconds, default=3.0, metavar="SECONDS",
             help="limit of one read, connect and queries")  # fmt: skip
    add_threshold_arguments(opts)


class Reader(Collector):
    """The server's report, read at most once per ``cache`` seconds, one read at a time."""

    def __init__(self, read: Callable[[], pool.Report], cache: float, log: Any):
        self._read = read
        self._cache = cache
        self._log = log
        self._lock = threading.Lock()
        self._last: tuple[float, pool.Report] | None = None
        self.reads = {"ok": 0, "error": 0}
        self.duration: float | None = None

    def report(self) -> pool.Report:
        with self._lock:
            if self._last is not None and time.monotonic() - self._last[0] < self._cache:
                return self._last[1]
            started = time.monotonic()
            report = self._read()
            self.duration = time.monotonic() - started
            failed = report.capacity is None
            if failed and (self._last is None or self._last[1].capacity is not None):
                finding = report.findings[0]
                self._log.error("cannot read the server", error=finding.message, hint=finding.hint)
            elif not failed and self._last is not None and self._last[1].capacity is None:
                self._log.info("reading the server again")
            self.reads["error" if failed else "ok"] += 1
            self._last = (time.monotonic(), report)
            return report

    def collect(self) -> Iterator[Metric]:
        yield from metrics.families(self.report())
        yield from metrics.exporter_families(self.reads, self.duration)


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Not a line per scrape."""


def application(registry: CollectorRegistry) -> Callable[[dict[str, Any], Any], Iterable[bytes]]:
    """``/metrics`` (the client library's exposition, gzip and OpenMetrics included) and ``/healthz``."""
    exposition = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return exposition(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"ok\n"]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: try /metrics or /healthz\n"]

    return app


def run(args: argparse.Namespace, ctx: Context) -> int:
    check_thresholds(args)
    tenants = spec.load(args.spec, check_capacity=False) if args.spec else None
    target: Target = target_from_args(args, ctx)
    log = logs.get_logger(command=NAME)
    reader = Reader(lambda: pool.read_live(target.params(), args.read_timeout, tenants, args.warn, args.crit),
                    args.cache, log)  # fmt: skip
    registry = CollectorRegistry(auto_describe=False)
    registry.register(reader)
    host, port = args.listen
    try:
        server = make_server(host, port, application(registry), server_class=_Server, handler_class=_QuietHandler)
    except OSError as exc:
        raise ConfigError(f"--listen {host}:{port}: {exc.strerror}: choose a free port or address") from None
    log.info("serving metrics", listen=f"{host}:{server.server_port}", paths="/metrics /healthz")
    try:
        server.serve_forever(poll_interval=0.5)
    except Interrupted as exc:
        log.info("stopped", signal=exc.signum)
        return 128 + exc.signum
    finally:
        server.server_close()
    return 0
