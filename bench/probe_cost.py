"""What one exec probe costs: ``sharedpg wait-for-db --once`` beside ``psql -c 'select 1'`` and ``pg_isready``.

Starts its own server (PostgreSQL 15 from Debian when present, else the first one found) with SCRAM
password authentication on loopback, then runs the commands alternately N times each and prints the
median CPU time (user + system, from the kernel's rusage of each child), wall time and peak RSS,
and the ratios against psql. Run it from the checkout's root with the project's venv::

    .venv/bin/python -m bench.probe_cost [--runs 10] [--major 15]

The target (issue 2): ``wait-for-db --once`` at login level within 1.3x psql's CPU and 20 MiB peak
RSS, and ``--require reachable --once`` no worse. It measures a regular install of this checkout,
made in bench/.probe-venv the first time (pip, from PyPI).
"""

from __future__ import annotations

import sys

from bench import common
from sharedpg_tools import localserver


def commands(server: localserver.LocalServer, sharedpg: str) -> dict[str, list[str]]:
    target = server.conninfo()
    return {
        "psql -c 'select 1'": [common.tool("psql", server.bindir), target, "-XAtqc", "select 1"],
        "pg_isready": [common.tool("pg_isready", server.bindir), "-d", target],
        "sharedpg wait-for-db --once": [sharedpg, "wait-for-db", "--once", "--dsn", target],
        "sharedpg wait-for-db --once --require reachable": [
            sharedpg,
            "wait-for-db",
            "--once",
            "--require",
            "reachable",
            "--dsn",
            target,
        ],
    }


if __name__ == "__main__":
    sys.exit(common.compare_main(__doc__, commands))
