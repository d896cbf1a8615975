"""What serve-metrics costs: the CPU of one scrape (a full read of the server: connect, SCRAM login, the
queries, the exposition) beside ``psql -c 'select 1'``, and the memory of the idle exporter.

Starts a PostgreSQL on loopback with SCRAM and a regular install's ``sharedpg serve-metrics --cache 0`` (so
every scrape reads the server), then alternates: one scrape, whose CPU is the exporter process's own
(``/proc/PID/stat`` before and after), and one ``psql`` run (measured as the other benchmarks measure a
command). Prints the medians and their ratio, then the exporter's resident memory after the scrapes, idle.
Run it from the checkout's root with the project's venv::

    .venv/bin/python -m bench.exporter_cost [--runs 50] [--major 15]

Targets (issue 16): a scrape <= 1.5x psql's CPU; the idle exporter <= 40 MiB.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench import common
from sharedpg_tools import localserver

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = common.proc_stat(pid)
    return (int(fields[11]) + int(fields[12])) / _TICK


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit("no VmRSS")


def _scrape(url: str) -> None:
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 (our own http URL)
        if b"sharedpg_up 1.0" not in answer.read():
            raise SystemExit("the exporter could not read the server")


def main() -> int:
    with common.bench_server(__doc__ or "", 50) as (args, sharedpg, server, env):
        installation = server.installation
        port = localserver.free_port()
        exporter = subprocess.Popen([sharedpg, "serve-metrics", "--cache", "0", "--listen", f"127.0.0.1:{port}",
                                     "--dsn", server.conninfo()], env=env, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            deadline = time.monotonic() + 30
            while True:
                try:
                    _scrape(url)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit("serve-metrics did not start") from None
                    time.sleep(0.1)
            # the psql binary itself: Debian's psql on PATH is a Perl wrapper that costs more than the client
            psql = [str(installation.bindir / "psql"), server.conninfo(), "-XAtqc", "select 1"]
            common.measure(psql, env)
            scrapes, psqls = [], []
            for _ in range(args.runs):
                before = _cpu_seconds(exporter.pid)
                _scrape(url)
                scrapes.append(_cpu_seconds(exporter.pid) - before)
                psqls.append(common.measure(psql, env)[0])
            time.sleep(2)
            idle = _rss_mib(exporter.pid)
        finally:
            exporter.terminate()
            exporter.wait(10)
    scrape, base = statistics.mean(scrapes), statistics.median(psqls)  # the mean: /proc counts 10 ms ticks
    print(f"PostgreSQL {server.major} ({installation.source}) on loopback, SCRAM login; {args.runs} alternated runs; "
          f"Python {sys.version.split()[0]}")  # fmt: skip
    print(f"psql -c 'select 1' (the binary, median CPU)     {base * 1000:7.1f} ms")
    print(f"serve-metrics, one scrape (mean CPU, --cache 0) {scrape * 1000:7.1f} ms   {scrape / base:.2f}x psql")
    print(f"serve-metrics idle, resident memory              {idle:7.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
