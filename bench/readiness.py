"""How soon ``wait-for-db`` sees a restarted server, and what a long wait costs: side by side with the shell
loop it replaces, ``until pg_isready -d …; do sleep 1; done``, in one run.

Latency: a PostgreSQL (15 from Debian by default) with SCRAM on loopback is killed (immediate shutdown, so
its restart runs crash recovery: the port opens before logins are accepted), both waiters are started,
and after a random 0.3 to 1.2 s the server is started again. This process logs in every 5 ms to find the
moment the server first accepts a login; each waiter's latency is the time from that moment to its exit.
Percentiles over ``--restarts`` rounds.

Cost: with the server down for ``--wait`` seconds, each waiter runs until its deadline (``wait-for-db
--timeout``; the shell loop counts its rounds) under the rusage launcher of bench/common.py, which counts
the CPU of a process and all its children (the loop's pg_isready and sleep included). pg_isready is the
server installation's own binary (Debian's /usr/bin one is a Perl wrapper that would cost far more).

    .venv/bin/python -m bench.readiness [--restarts 20] [--wait 60] [--major 15]

Targets (issue 14): p95 latency <= 0.25 s; CPU over the wait <= the shell loop's.
"""

from __future__ import annotations

import random
import secrets
import shutil
import statistics
import subprocess
import sys
import threading
import time

import psycopg

from bench import common
from sharedpg_tools import localserver


def first_login(server: localserver.LocalServer, password: str, deadline: float) -> float:
    """The moment (monotonic) the server first accepts a login, polled every 5 ms."""
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(server.conninfo(), password=password, connect_timeout=2):
                return time.monotonic()
        except psycopg.OperationalError:
            time.sleep(0.005)
    raise SystemExit("the server did not accept a login in time")


def exit_time(command: list[str], env: dict[str, str], times: dict[str, float], name: str) -> threading.Thread:
    """Start ``command`` now; record when it exits (it must exit 0)."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait() -> None:
        if proc.wait() != 0:
            raise SystemExit(f"{name} exited {proc.returncode}")
        times[name] = time.monotonic()

    thread = threading.Thread(target=wait)
    thread.start()
    return thread


def percentile(values: list[float], share: float) -> float:
    return sorted(values)[min(len(values) - 1, round(share * (len(values) - 1)))]


def main() -> int:
    parser = common.parser_for(__doc__ or "")
    parser.add_argument("--restarts", type=int, default=20)
    parser.add_argument("--wait", type=int, default=60, help="seconds of the cost measurement")
    args = parser.parse_args()
    installation, sharedpg = common.subjects(args)
    password = secrets.token_urlsafe(18)
    env = common.client_env(password)
    isready = str(installation.bindir / "pg_isready")
    with localserver.LocalServer(installation, password) as server:
        target = server.conninfo()
        waiters = {
            "until pg_isready; do sleep 1; done": [
                shutil.which("sh") or "/bin/sh",
                "-c",
                f"until {isready} -q -d '{target}'; do sleep 1; done",
            ],
            "sharedpg wait-for-db": [sharedpg, "wait-for-db", "--timeout", "60", "--dsn", target],
        }
        latencies: dict[str, list[float]] = {name: [] for name in waiters}
        for _ in range(args.restarts):
            server.kill()
            times: dict[str, float] = {}
            threads = [exit_time(command, env, times, name) for name, command in waiters.items()]
            time.sleep(random.uniform(0.3, 1.2))
            server.restart(wait=False)
            accepted = first_login(server, password, time.monotonic() + 60)
            for thread in threads:
                thread.join()
            for name in waiters:
                latencies[name].append(times[name] - accepted)
        print(f"PostgreSQL {server.major} ({installation.source}), SCRAM on loopback, {args.restarts} restarts "
              "(immediate shutdown, then start):")  # fmt: skip
        print("seconds from the first accepted login to the waiter's exit")
        width = max(map(len, waiters)) + 2
        print(f"{'waiter':<{width}} {'p50 s':>7} {'p95 s':>7} {'max s':>7}")
        for name, values in latencies.items():
            print(f"{name:<{width}} {statistics.median(values):>7.3f} {percentile(values, 0.95):>7.3f} "
                  f"{max(values):>7.3f}")  # fmt: skip

        server.kill()
        loop = (
            f"i=0; until {isready} -q -d '{target}'; do i=$((i+1)); [ $i -ge {args.wait} ] && exit 124; sleep 1; done"
        )
        costs = {  # the loop counts its rounds and exits 124 like a deadline (shell builtins only)
            "until pg_isready; do sleep 1; done": [shutil.which("sh") or "/bin/sh", "-c", loop],
            "sharedpg wait-for-db": [sharedpg, "wait-for-db", "--timeout", str(args.wait), "--dsn", target],
        }
        print(f"\nthe server down for {args.wait} s: CPU of each waiter until its deadline (run one after the other)")
        results = {name: common.measure(command, env, expect=124) for name, command in costs.items()}
        base = results["until pg_isready; do sleep 1; done"][0]
        print(f"{'waiter':<{width}} {'CPU ms':>8} {'CPU/loop':>9} {'RSS MiB':>8}")
        for name, (cpu, _wall, rss) in results.items():
            print(f"{name:<{width}} {cpu * 1000:>8.1f} {cpu / base:>9.2f} {rss:>8.1f}")
        server.restart()
    return 0


if __name__ == "__main__":
    sys.exit(main())
