"""Grafana's SQLite into PostgreSQL: ``sharedpg copy-tenant --from-sqlite`` beside pgloader, on the same file
into the same schema, in one run — what each gets right, and how fast.

Makes a ``grafana.db`` of about ``--mb`` MB (tests/fix_grafana.py: Grafana's tables as its migrations make
them, with dashboards and their versions, annotations, users, data sources, times in the formats Grafana's
SQLite drivers write), then two tenants on a throwaway server, each initialised as Grafana's first start
leaves one. Into the first, pgloader (Debian's package) with ``WITH data only`` — the schema is Grafana's,
not pgloader's; into the second, copy-tenant. Each tenant is then compared with the file, row by row and
column by column, by primary key: rows missing, rows that should not be there (the tenant's own seed kept
beside the file's), and values that differ from the file's value converted to the column's type. Prints
the wall time and MB/s (of the file) of each, and what each got wrong. Run from the checkout's root::

    .venv/bin/python -m bench.grafana_import_cost [--mb 100]
"""

from __future__ import annotations

import json
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg

from bench import common
from sharedpg_tools import grafana_import, localserver
from tests import fix_grafana


def main() -> int:
    parser = common.parser_for(__doc__ or "")
    parser.add_argument("--mb", type=int, default=100, help="the grafana.db's size in MB [100]")
    args = parser.parse_args()
    if shutil.which("pgloader") is None:
        raise SystemExit("pgloader is not installed: apt-get install pgloader")
    installation, sharedpg = common.subjects(args)
    scratch = Path(tempfile.mkdtemp(prefix="grafana-bench-"))
    path = scratch / "grafana.db"
    dashboards = max(4, args.mb * 1_000_000 * 8 // 10 // (4 * 40 * 1024))  # about 60 %: dashboards, 3 versions
    fix_grafana.make_sqlite(path, dashboards=dashboards, annotations=args.mb * 2600)  # 40 %: annotations
    size = path.stat().st_size
    password = secrets.token_urlsafe(18)
    with localserver.LocalServer(installation, password) as server:
        env = common.client_env(password)
        results = {}
        for name in ("pgloader", "sharedpg copy-tenant"):
            tenant = "gl_pgloader" if name == "pgloader" else "gl_sharedpg"
            pw = scratch / f"{tenant}.pw"
            pw.write_text(secrets.token_urlsafe(18))
            subprocess.run([sharedpg, "ensure-tenant", tenant, "--dsn", server.conninfo(), "--tenant-password-file",
                            str(pw)], env=env, check=True, capture_output=True)  # fmt: skip
            with psycopg.connect(server.conninfo(tenant, tenant), password=pw.read_text(), autocommit=True) as conn:
                fix_grafana.initialise_tenant(conn)
            started = time.monotonic()
            if name == "pgloader":
                outcome = _pgloader(path, server.host, server.port, tenant, pw.read_text(), scratch)
            else:
                done = subprocess.run([sharedpg, "copy-tenant", tenant, "--from-sqlite", str(path), "--dsn",
                                       server.conninfo(), "--tenant-password-file", str(pw), "--output", "json"],
                                      env=env, capture_output=True, text=True)  # fmt: skip
                outcome = f"exit {done.returncode}: {json.loads(done.stdout).get('status') if done.stdout else ''}"
            wall = time.monotonic() - started
            with psycopg.connect(server.conninfo(tenant, tenant), password=pw.read_text()) as conn:
                results[name] = (wall, outcome, _wrong(path, conn))
    print(f"PostgreSQL {server.major} ({installation.source}); grafana.db {size / 1e6:.0f} MB, "
          f"{_rows(path):,} rows; {shutil.which('pgloader')} ({_pgloader_version()})")  # fmt: skip
    print(f"{'import':<22} {'wall s':>8} {'MB/s':>8} {'rows wrong':>11}  outcome")
    for name, (wall, outcome, wrong) in results.items():
        print(f"{name:<22} {wall:>8.2f} {size / 1e6 / wall:>8.1f} {sum(wrong.values()):>11,}  {outcome}")
    for name, (_, _, wrong) in results.items():
        print(f"\n{name}: " + ("every row right" if not wrong else "what it got wrong (rows per table and kind):"))
        for (table, kind), n in sorted(wrong.items()):
            print(f"  {table}: {kind}: {n:,}")
    base = results["pgloader"][0]
    print(f"\nthroughput, copy-tenant / pgloader: {base / results['sharedpg copy-tenant'][0]:.2f}x")
    shutil.rmtree(scratch)
    return 0


def _pgloader(path: Path, host: str, port: int, user: str, password: str, scratch: Path) -> str:
    target = f"postgresql://{user}:{urllib.parse.quote(password, safe='')}@{host}:{port}/{user}"
    command = scratch / "load.pgl"
    command.write_text(f"LOAD DATABASE FROM sqlite://{path} INTO {target}\n WITH data only, reset sequences\n"
                       " SET search_path to 'public';\n")  # fmt: skip
    done = subprocess.run(["pgloader", "--no-ssl-cert-verification", "--root-dir", str(scratch / "pgloader"),
                           str(command)], capture_output=True, text=True)  # fmt: skip
    errors = [line for line in done.stdout.splitlines() + done.stderr.splitlines() if " ERROR " in line]
    kinds = Counter(line.split(" ERROR ", 1)[1].split(":")[0][:90] for line in errors)
    samples = "".join(f"\n    {n} x {kind}" for kind, n in kinds.most_common(6))
    return f"exit {done.returncode}, {len(errors)} ERROR lines in its log:{samples}"


def _rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return sum(int(db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in fix_grafana.TABLES)


def _pgloader_version() -> str:
    return subprocess.run(["pgloader", "--version"], capture_output=True, text=True).stdout.splitlines()[0]


def _wrong(path: Path, conn: psycopg.Connection[Any]) -> Counter[tuple[str, str]]:
    """Per table: rows of the file missing, rows not from the file, and rows with a value other than the
    file's converted to its column's type (by column name, by primary key)."""
    target = grafana_import._target_columns(conn, "public")
    wrong: Counter[tuple[str, str]] = Counter()
    with sqlite3.connect(path) as db:
        for table in fix_grafana.TABLES:
            if table == "migration_log":
                continue
            columns = target[table]
            names = ", ".join(f'"{c.name}"' for c in columns)
            convert = [grafana_import.converter(c) for c in columns]
            want = {row[0]: [f(v) for f, v in zip(convert, row, strict=True)]
                    for row in db.execute(f'SELECT {names} FROM "{table}"')}  # fmt: skip
            have = {row[0]: list(row) for row in conn.execute(f'SELECT {names} FROM "{table}"')}
            wrong[(table, "missing")] += len(want.keys() - have.keys())
            wrong[(table, "not in the file (seed kept)")] += len(have.keys() - want.keys())
            for key in want.keys() & have.keys():
                for column, a, b in zip(columns, want[key], have[key], strict=True):
                    if _normal(a) != _normal(b):
                        wrong[(table, f"{column.name} ({column.type}) differs")] += 1
    return Counter({k: n for k, n in wrong.items() if n})


def _normal(value: Any) -> Any:
    return bytes(value) if isinstance(value, memoryview) else value


if __name__ == "__main__":
    sys.exit(main())
