"""Backstage's plugin databases into schemas: ``sharedpg copy-tenant --plugins`` beside doing it by hand,
one bare ``pg_dump | pg_restore`` per plugin database, in one run.

Starts its own server (PostgreSQL 15 from Debian when present) holding four "old" plugin databases,
``backstage_plugin_{catalog,auth,scaffolder,search}`` (catalog the biggest, as in a real install: entities
with their JSON, a search index, scaffolder task logs), then alternately moves them into a fresh tenant
with copy-tenant (preflight, the renames into schemas, verification of every table and sequence) and by
hand (each database restored as it is, with nothing renamed or checked: the floor), and prints the median
wall time and the ratio. Run from the checkout's root::

    .venv/bin/python -m bench.plugins_cost [--runs 3]
"""

from __future__ import annotations

import secrets
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg

from bench import common
from bench.common import tool

PLUGINS = {
    "catalog": "CREATE TABLE final_entities (entity_id text PRIMARY KEY, final_entity text, hash text);"
               "INSERT INTO final_entities SELECT 'e' || g, repeat('{\"kind\":\"Component\"}', 40), md5(g::text) "
               "FROM generate_series(1, 60000) g;"
               "CREATE INDEX final_entities_hash ON final_entities (hash);",
    "auth": "CREATE TABLE signing_keys (kid text PRIMARY KEY, key text); INSERT INTO signing_keys "
            "SELECT 'k' || g, md5(g::text) FROM generate_series(1, 100) g;",
    "scaffolder": "CREATE TABLE task_events (id bigserial PRIMARY KEY, task_id text, body text);"
                  "INSERT INTO task_events (task_id, body) SELECT 't' || (g % 500), repeat(md5(g::text), 6) "
                  "FROM generate_series(1, 40000) g;",
    "search": "CREATE TABLE documents (id bigserial PRIMARY KEY, document jsonb); INSERT INTO documents (document) "
              "SELECT jsonb_build_object('title', 'doc ' || g, 'text', repeat('word ', 50)) "
              "FROM generate_series(1, 20000) g;",
}  # fmt: skip


def main() -> int:
    with common.bench_server(__doc__, 3) as (args, sharedpg, server, env):
        password = server.password
        with psycopg.connect(server.conninfo(), password=password, autocommit=True) as conn:
            for plugin in PLUGINS:
                conn.execute(f"CREATE DATABASE backstage_plugin_{plugin}")
        size = 0
        for plugin, ddl in PLUGINS.items():
            with psycopg.connect(server.conninfo(dbname=f"backstage_plugin_{plugin}"), password=password,
                                 autocommit=True) as conn:  # fmt: skip
                conn.execute(ddl.encode())
                size += int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])  # type: ignore[index]
        pg_dump, pg_restore = tool("pg_dump", server.bindir), tool("pg_restore", server.bindir)
        tenant_pw = Path(tempfile.mkdtemp()) / "tenant.pw"
        tenant_pw.write_text(secrets.token_urlsafe(18))
        source = f"host={server.host} port={server.port} user={server.superuser}"

        def copy(name: str, tenant: str) -> None:
            if name.startswith("sharedpg"):
                subprocess.run([sharedpg, "copy-tenant", tenant, "--plugins", ",".join(PLUGINS), "--dsn",
                                server.conninfo(), "--tenant-password-file", str(tenant_pw)],
                               env={**env, "SHAREDPG_FROM_DSN": f"{source} password={password}"}, check=True,
                               capture_output=True)  # fmt: skip
                return
            for plugin in PLUGINS:  # the floor: each plugin database restored as it is, into a database of its own
                target = f"{tenant}_{plugin}"
                with psycopg.connect(server.conninfo(), password=password, autocommit=True) as conn:
                    conn.execute(f"CREATE DATABASE {target} OWNER {tenant}")
                common.bare_copy(pg_dump, pg_restore, f"{source} dbname=backstage_plugin_{plugin}",
                                 server.conninfo(tenant, target), env, tenant_pw.read_text())  # fmt: skip

        walls = common.timed_copies(["sharedpg copy-tenant --plugins", "pg_dump | pg_restore per plugin"], args.runs,
                                    sharedpg, server, env, tenant_pw, copy)  # fmt: skip
        print(f"PostgreSQL {server.major} ({server.installation.source}); four plugin databases, "
              f"{size / 1e6:.0f} MB on disk; median of {args.runs} runs")  # fmt: skip
        print(f"{'copy':<36} {'wall s':>8} {'wall/by hand':>13}")
        base = statistics.median(walls["pg_dump | pg_restore per plugin"])
        for name, times in walls.items():
            print(f"{name:<36} {statistics.median(times):>8.2f} {statistics.median(times) / base:>13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
