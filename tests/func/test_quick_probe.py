"""The lean ``wait-for-db --once`` path (sharedpg_tools/quick.py) against the full CLI, side by side on real
servers: the same exit code, result line and log line in every case an exec probe meets, and the full CLI
for any command line it does not handle."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sharedpg_tools import quick
from tests.conftest import Cli, Result
from tests.fix_servers import Server

_VOLATILE = re.compile(r'("timestamp": "[^"]+"|"elapsed_s": [0-9.]+|, [0-9.]+ s$|[0-9.]+ s\]|elapsed_s=[0-9.]+|'
                       r'^\S+Z )')  # fmt: skip


def _same(result: Result) -> tuple[int, str, str]:
    """What must be equal between the two paths: the code, stdout and stderr without times."""
    return result.code, _VOLATILE.sub("…", result.stdout), "\n".join(_VOLATILE.sub("…", x) for x in result.log_lines)


def both(cli: Cli, args: list[str], env: dict[str, str]) -> tuple[Result, Result]:
    """The command through the entry point (which takes the lean path) and through the full CLI only."""
    lean = cli(*args, env=env)
    done = subprocess.run([sys.executable, "-c", "import sys; from sharedpg_tools.cli import main; "
                           "sys.exit(main(sys.argv[1:]))", *args], capture_output=True, text=True,
                          env=cli.env(env), timeout=60)  # fmt: skip
    return lean, cli.check(Result(done.returncode, done.stdout, done.stderr))


def cases(pg: Server, tmp_path: Path) -> dict[str, tuple[list[str], dict[str, str]]]:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    good = tmp_path / "good"
    good.write_text(pg.password + "\n")
    dsn = pg.conninfo()
    return {
        "ready": (["wait-for-db", "--once", "--dsn", dsn], {"PGPASSWORD": pg.password}),
        "ready, JSON logs, password file": (["wait-for-db", "--once", "--log-format", "json", "--password-file",
                                             str(good)], {"PGHOST": pg.host, "PGPORT": str(pg.port)}),
        "reachable only": (["wait-for-db", "--once", "--require", "reachable", "--dsn", dsn], {}),
        "wrong password": (["wait-for-db", "--once", "--dsn", dsn, "--password-file", str(wrong)], {}),
        "wrong password, fail fast": (["wait-for-db", "--once", "--fail-fast", "--dsn", dsn, "--password-file",
                                       str(wrong)], {}),
        "no such database": (["wait-for-db", "--once", "--dsn", f"{dsn.replace('dbname=postgres', 'dbname=nope')}"],
                             {"PGPASSWORD": pg.password}),
        "nothing listens": (["wait-for-db", "--once", "--dsn", "host=127.0.0.1 port=1", "--attempt-timeout", "2"], {}),
        "a bad libpq variable": (["wait-for-db", "--once", "--dsn", dsn], {"PGSSLMODE": "sometimes"}),
        "console logs": (["wait-for-db", "--once", "--dsn", dsn, "--log-format", "console"],
                         {"PGPASSWORD": pg.password}),
        "variables": (["wait-for-db", "--once"], {"SHAREDPG_DSN": dsn, "SHAREDPG_ATTEMPT_TIMEOUT": "3",
                                                  "PGPASSWORD": pg.password}),
    }  # fmt: skip


@pytest.mark.parametrize("case", ["ready", "ready, JSON logs, password file", "reachable only", "wrong password",
                                  "wrong password, fail fast", "no such database", "nothing listens",
                                  "a bad libpq variable", "console logs", "variables"])  # fmt: skip
def test_the_lean_path_says_exactly_what_the_full_cli_says(cli: Cli, pg: Server, tmp_path: Path, case: str) -> None:
    args, env = cases(pg, tmp_path)[case]
    assert quick.plan(args, env) is not None, "the lean path handles it"
    lean, full = both(cli, args, env)
    assert _same(lean) == _same(full), (lean, full)


@pytest.mark.parametrize("args", [["wait-for-db", "--once", "--timeout", "soon"], ["wait-for-db", "--once", "--bogus"],
                                  ["wait-for-db", "--once", "--output", "json"], ["wait-for-db", "--timeout", "1"],
                                  ["wait-for-db", "--once", "--require", "query", "--query", "select 1"],
                                  ["wait-for-db", "--once", "--dsn", "host=db password=x"],
                                  ["wait-for-db", "--once", "--password-file", "/nonexistent"],
                                  ["check-pool", "--offline"]])  # fmt: skip
def test_what_the_lean_path_does_not_handle_goes_to_the_full_cli(args: list[str]) -> None:
    assert quick.plan(args, {}) is None


def test_sigterm_mid_attempt_ends_as_the_cli_does(cli: Cli) -> None:
    """A server that accepts and never answers: SIGTERM during the attempt is exit 143, said once."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        running = cli.start("wait-for-db", "--once", "--dsn", f"host=127.0.0.1 port={port}", "--attempt-timeout", "30")
        time.sleep(1.0)
        running.proc.send_signal(signal.SIGTERM)
        result = running.finish(30)
    assert result.code == 143, result
    [event] = [json.loads(line) for line in result.log_lines]
    assert event["event"] == "interrupted" and event["exit_code"] == 143, event
    assert result.stdout.startswith("interrupted: interrupted by SIGTERM"), result.stdout
