"""What one check-pool probe costs, beside the psql query a shell probe would run instead.

Starts its own server (PostgreSQL 15 from Debian when present), then runs alternately N times:
``sharedpg check-pool --role postgres`` (one tenant, as a sidecar's probe or a CronJob), the whole live
check, and ``psql`` counting that role's sessions. Prints median CPU, wall and peak RSS and the ratios
against psql. Run from the checkout's root::

    .venv/bin/python -m bench.check_pool_cost [--runs 10]
"""

from __future__ import annotations

import secrets
import sys

from bench import common
from bench.common import compare, tool
from sharedpg_tools import localserver


def main() -> int:
    parser = common.parser(__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    installation, sharedpg = common.subjects(args)
    password = secrets.token_urlsafe(18)
    with localserver.LocalServer(installation, password) as server:
        env = common.client_env(password)
        target = server.conninfo()
        query = "SELECT count(*) FROM pg_stat_activity WHERE usename = 'postgres'"
        commands = {
            "psql (count one role's sessions)": [tool("psql", server.bindir), target, "-XAtqc", query],
            "sharedpg check-pool --role postgres": [sharedpg, "check-pool", "--dsn", target, "--role", "postgres"],
            "sharedpg check-pool (all roles)": [sharedpg, "check-pool", "--dsn", target],
        }
        print(f"PostgreSQL {server.major} ({installation.source}), median of {args.runs} alternated runs; base = psql")
        compare(commands, env, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
