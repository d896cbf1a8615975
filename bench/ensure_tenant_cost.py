"""What ensuring one tenant costs, beside the hand-written ``psql`` script it replaces.

Starts its own server (PostgreSQL 15 from Debian when present) with SCRAM authentication, then
alternately, N times each: drops the tenant, ensures it from empty with ``sharedpg ensure-tenant``
and re-runs it (a no-op), and does the same with the ad-hoc psql script below. Prints the median
CPU and wall time of each and the ratios against psql. Run from the checkout's root::

    .venv/bin/python -m bench.ensure_tenant_cost [--runs 5]

The psql script is what platforms typically write: create-if-missing through ``\\gexec``, then
revoke. It checks less than ensure-tenant (no drift repair, no lock, plaintext password in the
server log, no non-superuser membership), so it is the floor, not an equal.
"""

from __future__ import annotations

import secrets
import statistics
import sys
from pathlib import Path
from tempfile import TemporaryDirectory

from bench import common
from bench.common import measure, tool
from sharedpg_tools import localserver

TENANT = "bench_tenant"
PSQL_SCRIPT = """
SELECT format('CREATE ROLE %I LOGIN CONNECTION LIMIT 20 PASSWORD %L', :'t', :'pw')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'t') \\gexec
SELECT format('CREATE DATABASE %I OWNER %I TEMPLATE template0 ENCODING ''UTF8''', :'t', :'t')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'t') \\gexec
SELECT format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', :'t') \\gexec
"""


def main() -> int:
    parser = common.parser_for(__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    installation, sharedpg = common.subjects(args)
    admin_password, tenant_password = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    with localserver.LocalServer(installation, admin_password) as server, TemporaryDirectory() as tmp:
        pwfile = Path(tmp) / "tenant.pw"
        pwfile.write_text(tenant_password + "\n")
        script = Path(tmp) / "tenant.sql"
        script.write_text(PSQL_SCRIPT)
        env = common.client_env(admin_password)
        psql = tool("psql", server.bindir)
        ensure = [sharedpg, "ensure-tenant", TENANT, "--dsn", server.conninfo(), "--tenant-password-file",
                  str(pwfile), "--connection-limit", "20"]  # fmt: skip
        by_hand = [psql, server.conninfo(), "-XqAt", "-v", "ON_ERROR_STOP=1", "-v", f"t={TENANT}",
                   "-v", f"pw={tenant_password}", "-f", str(script)]  # fmt: skip
        drop = [
            psql,
            server.conninfo(),
            "-Xqc",
            f"DROP DATABASE IF EXISTS {TENANT}",
            "-c",
            f"DROP ROLE IF EXISTS {TENANT}",
        ]
        samples: dict[str, list[tuple[float, float, float]]] = {}
        for _ in range(args.runs):
            for name, command in (("sharedpg ensure-tenant", ensure), ("psql script", by_hand)):
                measure(drop, env)
                samples.setdefault(f"{name}, from empty", []).append(measure(command, env))
                samples.setdefault(f"{name}, re-run (no-op)", []).append(measure(command, env))
        print(f"PostgreSQL {server.major} ({installation.source}), median of {args.runs} runs each, alternated")
        print(f"{'run':<42} {'CPU ms':>8} {'wall ms':>8} {'CPU/psql':>9} {'wall/psql':>10}")
        for name, runs in samples.items():
            cpu, wall = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
            base = samples[name.replace("sharedpg ensure-tenant", "psql script")]
            base_cpu, base_wall = statistics.median(r[0] for r in base), statistics.median(r[1] for r in base)
            print(f"{name:<42} {cpu * 1000:>8.1f} {wall * 1000:>8.1f} {cpu / base_cpu:>9.2f} {wall / base_wall:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
