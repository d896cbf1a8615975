"""The app's downtime in a cutover, with the real Backstage backend: from its stop on its old server to Ready
on its tenant, and the share of it that is the copy, beside the floor for that copy (a bare
``pg_dump | pg_restore`` of each plugin database, nothing renamed or checked), in one run.

Backstage is started in its default database-per-plugin mode on a throwaway PostgreSQL (its user may create
databases, as the chart's bundled one allowed) and ingests a small catalog; the catalog database is then
padded with a table of ``--size`` MB of hex digests, which compress about as little as real data does
(Backstage ignores the table; the copy carries it), so the copy is of that size. Then, as the cutover's
steps do: Backstage stopped (SIGTERM, as scaling to 0); the copy Job's own command line (``copy-tenant
--copy-id --source-idle-wait --plugins``, k8s-snippets/cutover/); Backstage started on the tenant with the
overlay's ``backend.database`` (k8s-snippets/apps/backstage/values.yaml), timed until it is Ready and
serves the same entities. What a cluster adds (the commit of the next step, Argo CD noticing it, the pod's
scheduling and image pull) is not here. Needs node and tests/backstage installed (scripts/test.sh). Run
from the checkout's root::

    .venv/bin/python -m bench.cutover_downtime [--size 500]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import yaml
from psycopg import sql

from bench import common
from bench.common import tool
from tests.fix_backstage import Backstage, not_installed

ROOT = Path(__file__).resolve().parent.parent
ROW = 300  # bytes per padding row on disk, about (eight distinct md5s: a dump does not shrink them much)


def overlay_database() -> dict[str, object]:
    values = yaml.safe_load((ROOT / "k8s-snippets" / "apps" / "backstage" / "values.yaml").read_text())
    return dict(values["backstage"]["appConfig"]["backend"]["database"])


def main() -> int:
    if reason := not_installed():
        print(reason, file=sys.stderr)
        return 2
    size_option = lambda parser: parser.add_argument(  # noqa: E731
        "--size", type=int, default=500, help="MB the catalog database is padded with [%(default)s]"
    )
    with common.bench_server(__doc__, 1, options=size_option) as (args, sharedpg, server, env):
        work = Path(tempfile.mkdtemp())
        old_pw, tenant_pw = work / "old.pw", work / "tenant.pw"
        old_pw.write_text("old-" + server.password)
        tenant_pw.write_text("tenant-" + server.password)
        with psycopg.connect(server.conninfo(), password=server.password, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE bn_backstage LOGIN CREATEDB PASSWORD {}").format(
                sql.Literal(old_pw.read_text())))  # fmt: skip
        old_db = {"client": "pg", "connection": {"host": server.host, "port": server.port, "user": "bn_backstage",
                                                 "password": old_pw.read_text()}}  # fmt: skip
        first = Backstage(work, [{"backend": {"database": old_db}}], {})
        try:
            first.ready()
            before = first.wait(lambda: len(e := first.entities()) == 9 and e)
        finally:
            first.stop()
        with psycopg.connect(server.conninfo("bn_backstage", "backstage_plugin_catalog"),
                             password=old_pw.read_text(), autocommit=True) as conn:  # fmt: skip
            conn.execute("CREATE TABLE sharedpg_bench_padding AS SELECT g AS id, md5(g::text) || md5((-g)::text) "
                         "|| md5((g * 7)::text) || md5((g * 11)::text) || md5((g * 13)::text) || md5((g * 17)::text) "
                         "|| md5((g * 19)::text) || md5((g * 23)::text) AS body FROM generate_series(1, %s) g",
                         [args.size * 1_000_000 // ROW])  # fmt: skip
        with psycopg.connect(server.conninfo(), password=server.password) as conn:
            plugins = [
                str(d).removeprefix("backstage_plugin_")
                for (d,) in conn.execute(
                    "SELECT datname FROM pg_database WHERE datname LIKE 'backstage\\_plugin\\_%' ORDER BY 1"
                ).fetchall()
            ]
            size = sum(
                int(r[0])
                for r in conn.execute(
                    "SELECT pg_database_size(datname) FROM pg_database WHERE datname LIKE 'backstage\\_plugin\\_%'"
                )
            )
        subprocess.run([sharedpg, "ensure-tenant", "backstage", "--dsn", server.conninfo(), "--tenant-password-file",
                        str(tenant_pw)], env=env, check=True, capture_output=True)  # fmt: skip
        # The floor, first and untimed against the app: each plugin database restored as it is.
        pg_dump, pg_restore = tool("pg_dump", server.bindir), tool("pg_restore", server.bindir)
        with psycopg.connect(server.conninfo(), password=server.password, autocommit=True) as conn:
            conn.execute("CREATE ROLE floor LOGIN PASSWORD 'floor-password'")
            for plugin in plugins:
                conn.execute(f"CREATE DATABASE floor_{plugin} OWNER floor")
        started = time.monotonic()
        for plugin in plugins:
            common.bare_copy(pg_dump, pg_restore, f"{server.conninfo()} dbname=backstage_plugin_{plugin}",
                             server.conninfo("floor", f"floor_{plugin}"), env, "floor-password")  # fmt: skip
        floor = time.monotonic() - started

        # The cutover: stopped, copied as the Job copies, started on the tenant.
        again = Backstage(work, [{"backend": {"database": old_db}}], {})
        again.ready()
        stopped = time.monotonic()
        again.stop()
        copy = subprocess.run(
            [sharedpg, "copy-tenant", "backstage", "--copy-id", "1", "--source-idle-wait", "300", "--plugins",
             ",".join(plugins), "--dsn", server.conninfo(), "--tenant-password-file", str(tenant_pw),
             "--from-password-file", str(old_pw)],
            env={**env, "SHAREDPG_FROM_DSN": f"host={server.host} port={server.port} user=bn_backstage"},
            capture_output=True, text=True,
        )  # fmt: skip
        copied = time.monotonic()
        if copy.returncode != 0:
            print(copy.stderr, file=sys.stderr)
            return 1
        second = Backstage(work, [{"backend": {"database": overlay_database()}}], {
            "POSTGRES_HOST": server.host, "POSTGRES_PORT": str(server.port), "POSTGRES_USER": "backstage",
            "POSTGRES_PASSWORD": tenant_pw.read_text()})  # fmt: skip
        try:
            second.ready()
            after = second.wait(lambda: second.entities())
        finally:
            second.stop()
        ready = time.monotonic()
        if after != before:
            print("Backstage on the tenant does not serve the copied catalog", file=sys.stderr)
            return 1
        down, copy_s, start_s = ready - stopped, copied - stopped, ready - copied
        print(f"PostgreSQL {server.major} ({server.installation.source}); Backstage's {len(plugins)} plugin "
              f"databases, {size / 1e6:.0f} MB on disk; one run")  # fmt: skip
        print(f"{'':<44} {'s':>7}")
        print(f"{'downtime: stop to Ready on the tenant':<44} {down:>7.2f}")
        print(f"{'  of it, the stop and the copy':<44} {copy_s:>7.2f}")
        print(f"{'  of it, Backstage starting on the tenant':<44} {start_s:>7.2f}")
        print(f"{'the copy floor (pg_dump | pg_restore each)':<44} {floor:>7.2f}")
        print(f"downtime beyond the copy: {down - copy_s:.2f} s (target 30 s); the stop and copy / the floor: "
              f"{copy_s / floor:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
