"""``sharedpg wait-for-db``: wait until the server is ready for this app, or say exactly why not.

Replaces ``until pg_isready; do sleep 2; done`` in initContainers and is the command of exec
startup/readiness probes (``--once``).

Exit codes: 0 ready · 1 not ready (``--once``) · 2 usage or configuration error · 3 permanent error
(server version outside ``--server-version``, invalid ``--query``; auth, permission and TLS failures
with ``--fail-fast``) · 124 ``--timeout`` exceeded · 130/143 SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse

from sharedpg_tools import logs, probe, readiness
from sharedpg_tools.errors import ConfigError, SharedpgError
from sharedpg_tools.exitcodes import ExitCode
from sharedpg_tools.settings import Context, EnvDefaults, boolean, seconds, target_from_args
from sharedpg_tools.versionspec import VersionSpec
from sharedpg_tools.waiter import Policy, Waiter

# The probe path must not import typing (~3 ms of CPU per probe): names for annotations only.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

NAME = readiness.NAME
USES_STRUCTLOG = False  # the probe path: see sharedpg_tools/logs.py


def add_arguments(parser: argparse.ArgumentParser, environ: Any) -> None:
    opts = EnvDefaults(parser, environ)
    opts.add(
        "--require",
        choices=probe.LEVELS,
        shown="login; query with --query",
        help="reachable: the server answers and is not starting up; login: this user can log into "
        "this database; query: and --query returns a true first column",
    )
    opts.add("--query", metavar="SQL", help="the query of --require query (implies it) [SELECT 1 when unset]")
    opts.add(
        "--require-table",
        action="append",
        metavar="SCHEMA.TABLE",
        help="also wait until this table or view exists (repeatable; env: comma-separated)",
    )
    opts.add("--server-version", metavar="SPEC", help="required server version, e.g. '>=14,<19'; outside it: exit 3")
    opts.add("--writable", action="store_true", default=False, help="not ready while in recovery or read-only")
    opts.add("--stable", type=seconds, default=0.0, metavar="SECONDS", help="stay ready this long before success")
    opts.add("--once", action="store_true", default=False, help="one attempt, exit 0 or 1 (exec probes)")
    add_policy_arguments(opts)


def add_policy_arguments(opts: EnvDefaults) -> None:
    """How long and how to wait: shared by every command that waits for the server first."""
    opts.add("--timeout", type=seconds, default=300.0, metavar="SECONDS", help="overall deadline; 0 = no limit")
    opts.add("--attempt-timeout", type=seconds, default=5.0, metavar="SECONDS", help="limit of one attempt")
    opts.add("--interval", type=seconds, default=0.2, metavar="SECONDS", help="first delay between attempts")
    opts.add("--max-interval", type=seconds, default=2.0, metavar="SECONDS", help="largest delay (backoff cap)")
    opts.add(
        "--fail-fast",
        action="store_true",
        default=False,
        help="exit 3 at once on auth, permission and TLS failures instead of retrying them",
    )


def requirement_from_args(args: argparse.Namespace) -> probe.Requirement:
    """:raises ConfigError: for contradictory or malformed gates."""
    level = args.require or ("query" if args.query else "login")
    if args.query and level != "query":
        raise ConfigError(f"--query needs --require query, not --require {level}: drop one of them")
    tables = tuple(_table(t) for t in args.require_table or ())
    version = None
    if args.server_version:
        try:
            version = VersionSpec.parse(args.server_version)
        except ValueError as exc:
            raise ConfigError(f"--server-version / SHAREDPG_SERVER_VERSION: {exc}") from None
    if level == "reachable" and (tables or version or args.writable):
        raise ConfigError(
            "--require reachable does not log in, so it cannot check --require-table, --server-version "
            "or --writable: use --require login"
        )
    return probe.Requirement(level, args.query or "SELECT 1", tables, version, boolean(args.writable))


def _table(text: str) -> tuple[str, str]:
    schema, dot, name = text.partition(".")
    if not (schema and dot and name):
        raise ConfigError(
            f"--require-table {text!r} is not schema-qualified: use SCHEMA.TABLE, e.g. public.argo_archived_workflows"
        )
    return schema, name


def policy_from_args(args: argparse.Namespace) -> Policy:
    """:raises ConfigError: for contradictory timing flags."""
    if args.attempt_timeout <= 0:
        raise ConfigError("--attempt-timeout must be greater than 0: use e.g. 5")
    if args.interval > args.max_interval:
        raise ConfigError(f"--interval {args.interval:g} is larger than --max-interval {args.max_interval:g}: lower it")
    once, stable = getattr(args, "once", False), getattr(args, "stable", 0.0)
    if once and stable:
        raise ConfigError("--once makes exactly one attempt, so it cannot hold --stable: drop one of them")
    return Policy(
        timeout=args.timeout,
        attempt_timeout=args.attempt_timeout,
        interval=args.interval,
        max_interval=args.max_interval,
        stable=stable,
        fail_fast=boolean(args.fail_fast),
    )


def run(args: argparse.Namespace, ctx: Context) -> int:
    requirement = requirement_from_args(args)
    policy = policy_from_args(args)
    target = target_from_args(args, ctx)
    log = logs.get_logger(command=NAME)
    waiter = Waiter(lambda timeout: probe.attempt(target, requirement, timeout), policy, log)
    try:
        ready = waiter.once() if args.once else waiter.until_ready()
    except SharedpgError as exc:
        last = waiter.last
        failure = getattr(exc, "failure", None) or (last.failure if last else None)
        readiness.report(args.output, exc.exit_code, waiter.attempts, waiter.elapsed(), str(exc), failure=failure,
                         target=last.target if last else None)  # fmt: skip
        raise
    readiness.log_ready(log, ready, requirement.level, waiter.attempts, waiter.elapsed())
    readiness.report(args.output, ExitCode.OK, waiter.attempts, waiter.elapsed(), "ready", target=ready.target,
                     version=ready.version)  # fmt: skip
    return ExitCode.OK
