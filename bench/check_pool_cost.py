"""What one check-pool probe costs, beside the psql query a shell probe would run instead.

Starts its own server (PostgreSQL 15 from Debian when present), then runs alternately N times:
``sharedpg check-pool --role postgres`` (one tenant, as a sidecar's probe or a CronJob), the whole live
check, and ``psql`` counting that role's sessions. Prints median CPU, wall and peak RSS and the ratios
against psql. Run from the checkout's root::

    .venv/bin/python -m bench.check_pool_cost [--runs 10]
"""

from __future__ import annotations

import sys

from bench import common
from sharedpg_tools import localserver


def commands(server: localserver.LocalServer, sharedpg: str) -> dict[str, list[str]]:
    target = server.conninfo()
    query = "SELECT count(*) FROM pg_stat_activity WHERE usename = 'postgres'"
    return {
        "psql (count one role's sessions)": [common.tool("psql", server.bindir), target, "-XAtqc", query],
        "sharedpg check-pool --role postgres": [sharedpg, "check-pool", "--dsn", target, "--role", "postgres"],
        "sharedpg check-pool (all roles)": [sharedpg, "check-pool", "--dsn", target],
    }


if __name__ == "__main__":
    sys.exit(common.compare_main(__doc__, commands))
