"""The plan under load: the seed's "zero failures for 6 h" and its sizing, checked on a real PostgreSQL set up
exactly as ``k8s-snippets/database/statefulset.yaml`` sets up the shared server (its ``-c`` settings are read
from the manifest; everything else is PostgreSQL's default, durability included), after ``sharedpg
bootstrap`` made the six tenants of the default spec.

Every tenant runs at its full pool budget from the spec (one thread and connection per pooled connection,
work shaped like its app's: bench/soak_work.py), recycling connections as pools do. Meanwhile, as Kubernetes
would: ``wait-for-db --once`` for each tenant every second, ``check-pool`` every 10 s. Events, at fixed
shares of the run: a fast restart of the server; one tenant opening twice its budget (the noisy neighbour);
another tenant's password rotated through ``bootstrap`` while its clients run (they reconnect with the new
one, retrying a refused login for up to 5 s as pools do); a transaction holding an exclusive lock for 10 s.

Prints per tenant and per event what happened and a verdict per promise; draws the run (bench/soak_plot.py).
A compressed run, as the issue asks (the test suite runs 60 s; the benchmark 10 min)::

    .venv/bin/python -m bench.soak --duration 600 --png docs/soak.png [--json soak.json] [--major 18]
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import yaml

from bench import common, soak_work
from sharedpg_tools import localserver, spec
from tests.conftest import Cli

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "k8s-snippets" / "database" / "statefulset.yaml"
# what the local server must not inherit from localserver's fast test settings: PostgreSQL's defaults
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
NOISY, ROTATED, LOCKER = "policyreporter", "grafana", "sonarqube"
RESTART_GRACE_S, TRANSITION_S, AUTH_RETRY_S = 1.0, 1.5, 5.0
_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "kB": 2**10, "MB": 2**20, "GB": 2**30}


def _bytes(text: str) -> int:
    for unit, factor in _UNITS.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


class Manifest:
    """What the database manifest sets: the server's settings, its memory limit and its volume."""

    def __init__(self, path: Path = MANIFEST):
        statefulset = yaml.safe_load(path.read_text())
        [container] = statefulset["spec"]["template"]["spec"]["containers"]
        args = container["args"]
        self.settings = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "-c")
        self.memory_limit = _bytes(container["resources"]["limits"]["memory"])
        [claim] = statefulset["spec"]["volumeClaimTemplates"]
        self.volume = _bytes(claim["spec"]["resources"]["requests"]["storage"])
        self.image = container["image"]


class Record:
    """Everything observed, with times in seconds since the start of the load."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.lock = threading.Lock()
        self.transactions: list[tuple[float, str, bool, float, str]] = []  # t, tenant, ok, latency, error
        self.probes: list[tuple[float, float, str, bool]] = []  # started, ended, tenant, ready
        self.checks: list[tuple[float, int, list[str]]] = []  # t, exit code, findings
        self.samples: list[tuple[float, float, dict[str, int], float]] = []  # t, PSS, connections by role, data
        self.events: dict[str, tuple[float, float]] = {}
        self.noisy_refusals: list[str] = []
        self.auth_retries = 0

    def now(self) -> float:
        return time.monotonic() - self.start

    def add(self, what: list[Any], item: Any) -> None:
        with self.lock:
            what.append(item)


class Soak:
    def __init__(self, installation: localserver.Installation, workdir: Path, duration: float):
        self.manifest = Manifest()
        self.duration = duration
        self.workdir = workdir
        self.password = secrets.token_urlsafe(18)
        self.server = localserver.LocalServer(installation, self.password, settings={**DURABLE,
                                              **self.manifest.settings})  # fmt: skip
        self.spec_file = workdir / "tenants.yaml"
        self.spec_file.write_text(spec.default_text())
        self.tenants = spec.load(str(self.spec_file)).tenants
        self.passwords = workdir / "passwords"
        self.record = Record()
        self.stop = threading.Event()
        self.sharedpg = [sys.executable, "-m", "sharedpg_tools"]
        self.applied: dict[str, str] = {}

    # -- set-up -----------------------------------------------------------------------------------------
    def bootstrap(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.sharedpg, "bootstrap", "--spec", str(self.spec_file), "--no-vault",
                               "--password-dir", str(self.passwords), "--dsn", self.server.conninfo(), "--output",
                               "json"], env=Cli().env({"PGPASSWORD": self.password}), capture_output=True, text=True,
                              timeout=300)  # fmt: skip

    def password_of(self, role: str) -> str:
        return (self.passwords / role).read_text().strip()

    def connect(self, tenant: spec.Tenant, retry_auth: bool = True) -> psycopg.Connection[Any]:
        """As an app's pool connects: with the password its Secret holds now, retrying a refused login."""
        deadline = time.monotonic() + AUTH_RETRY_S
        while True:
            try:
                return psycopg.connect(self.server.conninfo(tenant.role, tenant.database),
                                       password=self.password_of(tenant.name), connect_timeout=5)  # fmt: skip
            except psycopg.OperationalError as exc:
                if not retry_auth or "password authentication failed" not in str(exc) or time.monotonic() > deadline:
                    raise
                with self.record.lock:
                    self.record.auth_retries += 1
                time.sleep(0.2)

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.server.conninfo(), password=self.password, autocommit=True, connect_timeout=5)

    def prepare(self) -> None:
        self.server.start()
        with self.admin() as conn:  # what the server runs with, read back: the manifest's values
            self.applied = {k: str(conn.execute("SELECT current_setting(%s)", [k]).fetchone()[0])  # type: ignore[index]
                            for k in self.manifest.settings}  # fmt: skip
        made = self.bootstrap()
        if made.returncode != 0:
            raise SystemExit(f"bootstrap failed: {made.stderr[-2000:]}")
        for tenant in self.tenants:
            with self.connect(tenant) as conn:
                conn.execute(soak_work.SCHEMAS[tenant.name])

    # -- the load ---------------------------------------------------------------------------------------
    def worker(self, tenant: spec.Tenant, seed: int) -> None:
        rnd, work, think = random.Random(seed), soak_work.WORK[tenant.name], soak_work.THINK[tenant.name]
        conn: psycopg.Connection[Any] | None = None
        recycle = 0.0
        while not self.stop.is_set():
            started = self.record.now()
            try:
                if conn is None:
                    conn, recycle = self.connect(tenant), started + rnd.uniform(10, 20)  # a pool's max lifetime
                work(conn, rnd)
                self.record.add(self.record.transactions, (started, tenant.name, True, self.record.now() - started, ""))
            except psycopg.Error as exc:
                error = f"{exc.sqlstate or 'connection'}: {str(exc).strip().splitlines()[0][:160]}"
                self.record.add(self.record.transactions, (started, tenant.name, False, 0.0, error))
                conn = self._close(conn)
                self.stop.wait(0.2)
                continue
            if self.record.now() > recycle:
                conn = self._close(conn)
            self.stop.wait(rnd.uniform(0.5, 1.5) * think)
        self._close(conn)

    @staticmethod
    def _close(conn: psycopg.Connection[Any] | None) -> None:
        if conn is not None:
            conn.close()

    def probes(self) -> None:
        """wait-for-db --once per tenant every second, as a startup/readiness exec probe."""
        while not self.stop.wait(1.0):
            started, running = self.record.now(), []
            for tenant in self.tenants:
                env = Cli().env({"PGPASSWORD_FILE": str(self.passwords / tenant.name)})
                argv = [*self.sharedpg, "wait-for-db", "--once", "--attempt-timeout", "3", "--dsn",
                        self.server.conninfo(tenant.role, tenant.database)]  # fmt: skip
                running.append((tenant.name, subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                                              stderr=subprocess.DEVNULL)))  # fmt: skip
            for name, proc in running:
                ready = proc.wait(30) == 0
                self.record.add(self.record.probes, (started, self.record.now(), name, ready))

    def checks(self) -> None:
        """check-pool every 10 s, as a CronJob or a monitoring check."""
        while not self.stop.wait(10.0):
            done = subprocess.run([*self.sharedpg, "check-pool", "--spec", str(self.spec_file), "--output", "json",
                                   "--dsn", self.server.conninfo()], env=Cli().env({"PGPASSWORD": self.password}),
                                  capture_output=True, text=True, timeout=60)  # fmt: skip
            try:
                findings = [f["message"] for f in json.loads(done.stdout)["findings"]]
            except (json.JSONDecodeError, KeyError):
                findings = [done.stderr.strip()[-200:]]
            self.record.add(self.record.checks, (self.record.now(), done.returncode, findings))

    def sampler(self) -> None:
        """Every 2 s: the server's memory (the sum of its processes' proportional set size) and who is connected."""
        conn: psycopg.Connection[Any] | None = None
        while not self.stop.wait(2.0):
            try:
                conn = conn or self.admin()
                rows = conn.execute("SELECT usename, count(*) FROM pg_stat_activity WHERE backend_type = "
                                    "'client backend' AND usename IS NOT NULL GROUP BY 1").fetchall()  # fmt: skip
                size = conn.execute("SELECT sum(pg_database_size(datname)) FROM pg_database").fetchone()
            except psycopg.Error:
                conn = self._close(conn)
                continue
            data = float(size[0]) if size else 0.0
            self.record.add(self.record.samples, (self.record.now(), server_pss(self.server), dict(rows), data))
        self._close(conn)

    # -- the events -------------------------------------------------------------------------------------
    def restart(self) -> None:
        began = self.record.now()
        self.server.stop(remove=False)
        self.server.restart()
        self.record.events["restart"] = (began, self.record.now())

    def noisy(self, seconds: float) -> None:
        """The noisy tenant opens as many connections again as its whole budget, and holds what it gets."""
        tenant = next(t for t in self.tenants if t.name == NOISY)
        began, held = self.record.now(), []
        for _ in range(tenant.budget):
            try:
                held.append(self.connect(tenant, retry_auth=False))
            except psycopg.OperationalError as exc:
                self.record.add(self.record.noisy_refusals, str(exc).strip().splitlines()[-1])
        self.stop.wait(seconds)
        for conn in held:
            conn.close()
        self.record.events["noisy"] = (began, self.record.now())

    def rotate(self) -> None:
        """A new password for one tenant: its Secret changes (the file), then the bootstrap Job sets it."""
        began = self.record.now()
        path = self.passwords / ROTATED
        fresh = path.with_suffix(".new")
        fresh.write_text(secrets.token_urlsafe(24))
        fresh.chmod(0o600)
        fresh.replace(path)
        done = self.bootstrap()
        if done.returncode != 0:
            raise SystemExit(f"the rotation's bootstrap failed: {done.stderr[-2000:]}")
        self.record.events["rotation"] = (began, self.record.now())

    def long_lock(self, seconds: float) -> None:
        tenant = next(t for t in self.tenants if t.name == LOCKER)
        began = self.record.now()
        with self.connect(tenant) as conn, conn.transaction():
            conn.execute(f"LOCK TABLE {soak_work.LOCKED_TABLE[LOCKER]} IN ACCESS EXCLUSIVE MODE")
            self.stop.wait(seconds)
        self.record.events["lock"] = (began, self.record.now())

    def schedule(self) -> list[tuple[float, Callable[[], None]]]:
        d = self.duration
        span = max(12.0, min(30.0, d * 0.05))  # at least one check-pool (every 10 s) sees the noisy tenant
        return [(0.25 * d, self.restart), (0.38 * d, lambda: self.noisy(span)), (0.62 * d, self.rotate),
                (0.74 * d, lambda: self.long_lock(min(10.0, span)))]  # fmt: skip

    # -- the run ----------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self.prepare()
        try:
            with self.admin() as conn:
                [lsn0] = conn.execute("SELECT pg_current_wal_lsn()").fetchone()  # type: ignore[misc]
            self.record = Record()
            threads = [threading.Thread(target=self.worker, args=(t, i * 1000 + n), daemon=True)
                       for i, t in enumerate(self.tenants) for n in range(t.budget)]  # fmt: skip
            threads += [threading.Thread(target=f, daemon=True) for f in (self.probes, self.checks, self.sampler)]
            for thread in threads:
                thread.start()
            for at, event in self.schedule():
                self.stop.wait(max(0.0, at - self.record.now()))
                event()
            self.stop.wait(max(0.0, self.duration - self.record.now()))
            self.stop.set()
            for thread in threads:
                thread.join(60)
            elapsed = self.record.now()
            with self.admin() as conn:
                [wal] = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", [lsn0]).fetchone()  # type: ignore[misc]
            return report(self, elapsed, float(wal))
        finally:
            self.stop.set()
            self.server.stop()


def server_pss(server: localserver.LocalServer) -> float:
    """The sum of the proportional set size of the postmaster and its children (shared memory counted once)."""
    try:
        postmaster = int((server.datadir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    pids = [postmaster]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(common.proc_stat(int(entry.name))[1]) == postmaster:
                    pids.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return float(total)


def _overlaps(started: float, ended: float, window: tuple[float, float] | None, margin: float = 0.0) -> bool:
    return window is not None and started <= window[1] + margin and ended >= window[0] - margin


def expected_ready(name: str, started: float, ended: float, events: dict[str, tuple[float, float]],
                   down: tuple[float, float] | None) -> bool | None:  # fmt: skip
    """What a probe run from ``started`` to ``ended`` should say: False while the server is down; True when no
    event touches this tenant; None (either is right) near an event's edges, for the noisy tenant while it
    holds its limit (a slot frees whenever one of its pooled connections is recycled), and for the rotated
    tenant while its Secret and its role disagree."""
    if down is not None and down[0] + TRANSITION_S <= started and ended <= down[1] - TRANSITION_S:
        return False
    touching = [down] + ([events.get("noisy")] if name == NOISY else []) + (
        [events.get("rotation")] if name == ROTATED else [])  # fmt: skip
    if any(_overlaps(started, ended, w, TRANSITION_S) for w in touching):
        return None
    return True


def failure_kind(tenant: str, at: float, error: str, events: dict[str, tuple[float, float]],
                 down: tuple[float, float] | None) -> str:  # fmt: skip
    if _overlaps(at, at, down):
        return "restart"
    if tenant == NOISY and _overlaps(at, at, events.get("noisy"), TRANSITION_S) and "too many connections" in error:
        return "noisy"  # the noisy tenant's own pool, refused at its own limit
    return "outside"


def steady_growth(samples: list[tuple[float, float, dict[str, int], float]]) -> tuple[float, float]:
    """The data's size at the end and its growth per hour over the run's second half (the first fills the
    tables the TTLs then keep bounded): a least-squares slope, so one sample's noise does not decide it."""
    half = [(s[0], s[3]) for s in samples if s[0] >= samples[-1][0] / 2 and s[3] > 0]
    if len(half) < 2:
        return (samples[-1][3] if samples else 0.0), 0.0
    mean_t, mean_v = sum(t for t, _ in half) / len(half), sum(v for _, v in half) / len(half)
    slope = sum((t - mean_t) * (v - mean_v) for t, v in half) / sum((t - mean_t) ** 2 for t, _ in half)
    return half[-1][1], max(0.0, slope * 3600)


def report(soak: Soak, elapsed: float, wal: float) -> dict[str, Any]:
    """Per tenant and per event what happened, and a verdict per promise."""
    rec, events, m = soak.record, soak.record.events, soak.manifest
    restart = events.get("restart")
    down = (restart[0] - 0.5, restart[1] + RESTART_GRACE_S) if restart else None
    tenants: dict[str, dict[str, Any]] = {}
    for t in soak.tenants:
        mine = [x for x in rec.transactions if x[1] == t.name]
        failed = [(failure_kind(t.name, x[0], x[4], events, down), x[4]) for x in mine if not x[2]]
        kinds = [kind for kind, _ in failed]
        outside = sorted({error for kind, error in failed if kind == "outside"})
        latencies = sorted(x[3] for x in mine if x[2])
        tenants[t.name] = {
            "budget": t.budget, "limit": t.connection_limit, "done": len(latencies),
            "failed_in_restart": kinds.count("restart"), "failed_own_limit": kinds.count("noisy"),
            "failed_outside_restart": kinds.count("outside"), "failures": outside[:5],
            "p99_latency_s": round(latencies[int(len(latencies) * 0.99)], 3) if latencies else None,
            "max_latency_s": round(latencies[-1], 3) if latencies else None,
        }  # fmt: skip
    wrong = []
    for started, ended, name, ready in rec.probes:
        expected = expected_ready(name, started, ended, events, down)
        if expected is not None and ready != expected:
            wrong.append({"tenant": name, "at_s": round(started, 1), "ready": ready})
    noisy = events.get("noisy")
    flagged = [c for c in rec.checks if _overlaps(c[0], c[0], noisy, 10) and any(NOISY in f for f in c[2])]
    # Whichever of its connections came second is refused: the extra ones, or (when they got in first, as
    # right after the restart while the pool reconnects) the pool's own. Either is the limit holding.
    own_pool = tenants[NOISY]["failed_own_limit"]
    own_errors = [x[4] for x in rec.transactions if x[1] == NOISY and not x[2] and "too many" in x[4]]
    at_limit = len(rec.noisy_refusals) + own_pool
    others_refused = sum(1 for x in rec.transactions if not x[2] and "too many" in x[4] and x[1] != NOISY)
    peak_pss = max((s[1] for s in rec.samples), default=0.0)
    connections = max((sum(s[2].values()) for s in rec.samples), default=0)
    hours = elapsed / 3600
    size1, growth_per_hour = steady_growth(rec.samples)
    wal_per_hour = wal / hours
    max_wal = _bytes(m.settings.get("max_wal_size", "1GB"))
    checkpoint_s = _seconds(m.settings.get("checkpoint_timeout", "5min"))
    wal_per_checkpoint = wal_per_hour * checkpoint_s / 3600
    disk = {h: size1 + growth_per_hour * (h - hours) + max_wal for h in (6, 24)}
    failures_outside = sum(t["failed_outside_restart"] for t in tenants.values())
    total = sum(t["done"] + t["failed_in_restart"] + t["failed_own_limit"] + t["failed_outside_restart"]
                for t in tenants.values())  # fmt: skip
    verdicts = [
        ("zero failures outside the restart window", failures_outside == 0,
         f"{failures_outside} of {total} transactions"),
        ("probe verdicts right", not wrong, f"{len(wrong)} wrong of {len(rec.probes)}"),
        ("noisy neighbour contained", bool(at_limit) and not others_refused and bool(flagged),
         f"{NOISY} refused {at_limit} connections at its limit ({len(rec.noisy_refusals)} of its "
         f"{dict((t.name, t.budget) for t in soak.tenants)[NOISY]} extra, {own_pool} of its pool's: "
         f"{_first(rec.noisy_refusals or own_errors)}); other tenants refused {others_refused}; "
         f"check-pool flagged {NOISY}: {'yes' if flagged else 'no'}"),
        ("server memory at full pools under the limit", 0 < peak_pss <= m.memory_limit,
         f"peak PSS {peak_pss / 2**20:.0f} MiB of {m.memory_limit / 2**20:.0f} MiB, {connections} connections"),
        ("disk for 6 h and 24 h", disk[24] <= m.volume,
         f"data {size1 / 2**20:.0f} MiB growing {growth_per_hour / 2**20:.0f} MiB/h (second half): projected "
         f"{disk[6] / 2**30:.2f} GiB at 6 h, {disk[24] / 2**30:.2f} GiB at 24 h with max_wal_size, of "
         f"{m.volume / 2**30:.0f} GiB"),
        ("WAL between checkpoints under max_wal_size", wal_per_checkpoint <= max_wal,
         f"{wal_per_hour / 2**20:.0f} MiB/h: {wal_per_checkpoint / 2**20:.0f} MiB per checkpoint_timeout "
         f"({checkpoint_s / 60:.0f} min) of max_wal_size {max_wal / 2**20:.0f} MiB"),
    ]  # fmt: skip
    return {
        "server": {
            "major": soak.server.major,
            "manifest_image": m.image,
            "settings": m.settings,
            "applied": soak.applied,
        },
        "duration_s": round(elapsed, 1),
        "events": {k: [round(a, 1), round(b, 1)] for k, (a, b) in events.items()},
        "tenants": tenants,
        "probes": {"run": len(rec.probes), "wrong": wrong[:20]},
        "check_pool": [{"at_s": round(t, 1), "exit": code, "findings": f} for t, code, f in rec.checks],
        "auth_retries": rec.auth_retries,
        "wal_bytes_per_hour": wal_per_hour,
        "data_growth_bytes_per_hour": growth_per_hour,
        "peak_pss_bytes": peak_pss,
        "verdicts": [{"promise": p, "holds": ok, "detail": d} for p, ok, d in verdicts],
    }


def _first(items: list[str]) -> str:
    return items[0] if items else "none"


def _seconds(text: str) -> float:
    for unit, factor in (("min", 60), ("ms", 0.001), ("s", 1), ("h", 3600)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def print_report(result: dict[str, Any]) -> None:
    print(f"PostgreSQL {result['server']['major']} with the manifest's settings ({result['server']['manifest_image']} "
          f"in the cluster), {result['duration_s']:.0f} s; events (s): {result['events']}")  # fmt: skip
    print(f"{'tenant':<16}{'budget':>7}{'limit':>6}{'done':>8}{'restart':>8}{'own':>5}{'outside':>8}{'p99 s':>7}"
          f"{'max s':>7}")  # fmt: skip
    for name, t in result["tenants"].items():
        print(f"{name:<16}{t['budget']:>7}{t['limit']:>6}{t['done']:>8}{t['failed_in_restart']:>8}"
              f"{t['failed_own_limit']:>5}{t['failed_outside_restart']:>8}{t['p99_latency_s'] or '-':>7}"
              f"{t['max_latency_s'] or '-':>7}")  # fmt: skip
        for failure in t["failures"]:
            print(f"    {failure}")
    print(f"logins retried during the rotation: {result['auth_retries']}")
    for verdict in result["verdicts"]:
        print(f"{'HOLDS' if verdict['holds'] else 'DOES NOT HOLD'}: {verdict['promise']}: {verdict['detail']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600, help="seconds of load [600]")
    parser.add_argument("--major", type=int, default=18, help="server major (the manifest deploys 17) [18]")
    parser.add_argument("--png", type=Path, help="draw the run here")
    parser.add_argument("--json", type=Path, help="write the full report here")
    args = parser.parse_args()
    installation = localserver.find(args.major)
    if installation is None:
        raise SystemExit(f"no PostgreSQL {args.major} server binaries")
    import tempfile

    with tempfile.TemporaryDirectory() as work:
        soak = Soak(installation, Path(work), args.duration)
        result = soak.run()
        if args.png:
            from bench import soak_plot

            soak_plot.draw(soak.record, soak.tenants, args.png, soak.manifest.memory_limit)
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if all(v["holds"] for v in result["verdicts"]) else 1


if __name__ == "__main__":
    sys.exit(main())
