"""Copy throughput: ``sharedpg copy-tenant`` beside a plain ``pg_dump | pg_restore`` run by hand.

Starts its own server (PostgreSQL 15 from Debian when present), fills an "old app" database with about
40 MB (rows with text, an index, a bytea table), then alternately copies it into a fresh tenant with
copy-tenant (which also runs the preflight and the per-table verification) and with the bare pipeline,
and prints the median wall time and MB/s (of the dump's size) of each. Run from the checkout's root::

    .venv/bin/python -m bench.copy_cost [--runs 3] [--scale 10]

``--scale N`` makes the old database N times as big (10: about 500 MB on disk), where copy-tenant's fixed
costs (the preflight, the imports, counting every table) stop mattering.
"""

from __future__ import annotations

import json
import secrets
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg

from bench import common
from bench.common import tool

FILL = """
CREATE TABLE events (id bigserial PRIMARY KEY, kind text, payload text, at timestamptz DEFAULT now());
CREATE INDEX events_kind ON events (kind);
INSERT INTO events (kind, payload) SELECT 'kind' || (g % 50), repeat(md5(g::text), 8)
  FROM generate_series(1, 100000 * {scale}) g;
CREATE TABLE files (id int PRIMARY KEY, data bytea);
INSERT INTO files SELECT f, decode(string_agg(md5((f * 100000 + g)::text), ''), 'hex')
  FROM generate_series(1, 20 * {scale}) f, generate_series(1, 31250) g GROUP BY f;
"""


def main() -> int:
    with common.bench_server(__doc__, 3, scale=1) as (args, sharedpg, server, env):
        password, installation = server.password, server.installation
        with psycopg.connect(server.conninfo(), password=password, autocommit=True) as conn:
            conn.execute("CREATE DATABASE old_app")
        with psycopg.connect(server.conninfo(dbname="old_app"), password=password, autocommit=True) as conn:
            conn.execute(FILL.format(scale=args.scale).encode())
            size = conn.execute("SELECT pg_database_size('old_app')").fetchone()[0]  # type: ignore[index]
        source = server.conninfo(dbname="old_app")
        pg_dump, pg_restore = tool("pg_dump", server.bindir), tool("pg_restore", server.bindir)
        tenant_pw = Path(tempfile.mkdtemp()) / "tenant.pw"
        tenant_pw.write_text(secrets.token_urlsafe(18))
        dumped: list[int] = []

        def copy(name: str, tenant: str) -> None:
            if name.startswith("sharedpg"):  # the restore logs in as the tenant, in both
                out = subprocess.run([sharedpg, "copy-tenant", tenant, "--dsn", server.conninfo(), "--output", "json",
                                      "--tenant-password-file", str(tenant_pw)],
                                     env={**env, "SHAREDPG_FROM_DSN": f"{source} password={password}"}, check=True,
                                     capture_output=True, text=True).stdout  # fmt: skip
                dumped.append(int(json.loads(out)["bytes"]))
            else:
                common.bare_copy(
                    pg_dump, pg_restore, source, server.conninfo(tenant, tenant), env, tenant_pw.read_text()
                )

        walls = common.timed_copies(["sharedpg copy-tenant", "pg_dump | pg_restore by hand"], args.runs, sharedpg,
                                    server, env, tenant_pw, copy)  # fmt: skip
        dump_bytes = dumped[-1]
        print(f"PostgreSQL {server.major} ({installation.source}); old database {size / 1e6:.0f} MB on disk, "
              f"dump {dump_bytes / 1e6:.1f} MB; median of {args.runs} runs")  # fmt: skip
        print(f"{'copy':<32} {'wall s':>8} {'MB/s':>8} {'wall/by hand':>13}")
        base = statistics.median(walls["pg_dump | pg_restore by hand"])
        for name, times in walls.items():
            wall = statistics.median(times)
            print(f"{name:<32} {wall:>8.2f} {dump_bytes / 1e6 / wall:>8.1f} {wall / base:>13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
