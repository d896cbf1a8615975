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
import gzip
import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from sharedpg_tools import httpserve, logs, metrics, pool, spec
from sharedpg_tools.commands.check_pool import add_threshold_arguments, check_thresholds
from sharedpg_tools.errors import ConfigError
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


def application(registry: CollectorRegistry) -> httpserve.Handler:
    """``/metrics`` (the client library's exposition, OpenMetrics and gzip as the scraper asks) and
    ``/healthz``."""

    def handle(method: str, path: str, headers: dict[str, str]) -> httpserve.Response:
        if path == "/metrics":
            encoder, content_type = choose_encoder(headers.get("accept", ""))
            body = encoder(registry)
            if "gzip" in headers.get("accept-encoding", ""):
                return "200", [("Content-Type", content_type), ("Content-Encoding", "gzip")], gzip.compress(body)
            return "200", [("Content-Type", content_type)], body
        if path == "/healthz":
            return httpserve.text("200", "ok\n")
        return httpserve.text("404", "not found: try /metrics or /healthz\n")

    return handle


def _reading(target: Target, args: argparse.Namespace, tenants: spec.Spec | None) -> Callable[[], pool.Report]:
    """One read of the server; a password file that is empty or unreadable now (a Secret being rotated)
    is a read that failed, like a wrong password: ``sharedpg_up 0`` and one log line, never an error page."""

    def read() -> pool.Report:
        try:
            params = target.params()
        except ConfigError as exc:
            return pool.unread(str(exc), "the password file must hold the login's password: check its Secret")
        return pool.read_live(params, args.read_timeout, tenants, args.warn, args.crit)

    return read


def run(args: argparse.Namespace, ctx: Context) -> int:
    check_thresholds(args)
    tenants = spec.load(args.spec, check_capacity=False) if args.spec else None
    target: Target = target_from_args(args, ctx)
    log = logs.get_logger(command=NAME)
    reader = Reader(_reading(target, args, tenants), args.cache, log)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(reader)
    host, port = args.listen
    try:
        signum = httpserve.serve(host, port, application(registry), httpserve.Limits(),
                                 lambda bound: log.info("serving metrics", listen=f"{host}:{bound}",
                                                        paths="/metrics /healthz"))  # fmt: skip
    except OSError as exc:
        raise ConfigError(f"--listen {host}:{port}: {exc.strerror}: choose a free port or address") from None
    log.info("stopped", signal=signum)
    return 128 + signum
