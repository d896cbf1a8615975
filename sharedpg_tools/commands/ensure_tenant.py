"""``sharedpg ensure-tenant NAME``: one app's role and database on the shared server, as the admin.

Least privilege, isolated from the other tenants, idempotent (a re-run runs no DDL), safe to run
many times at once, and correct with a non-superuser admin (RDS, Cloud SQL, Azure). Nothing is
ever dropped or emptied. See ``sharedpg_tools/tenant.py`` for the statement sequence.

Exit codes: 0 ensured · 1 could not connect, or another run held the lock too long · 2 invalid
input · 3 impossible with this admin or server (the message says what a superuser must run).
"""

from __future__ import annotations

import argparse
from typing import Any

import psycopg

from sharedpg_tools import db, interrupts, logs, output
from sharedpg_tools.errors import ConfigError, SharedpgError
from sharedpg_tools.exitcodes import ExitCode
from sharedpg_tools.settings import Context, EnvDefaults, add_lock_wait, read_password_file, seconds, target_from_args
from sharedpg_tools.tenant import Ensurer, Outcome, TenantSpec, provisioning_lock

NAME = "ensure-tenant"
USES_STRUCTLOG = True


def add_arguments(parser: argparse.ArgumentParser, environ: Any) -> None:
    parser.add_argument("name", metavar="NAME", help="the tenant (app) name, e.g. sonarqube")
    opts = EnvDefaults(parser, environ)
    opts.add("--role", help="the tenant's login role [NAME when unset]")
    opts.add("--database", help="the tenant's database [NAME when unset]")
    opts.add(
        "--tenant-password-file",
        metavar="PATH",
        help="the tenant's password, from a file (trailing newline stripped); hashed to SCRAM here",
    )
    opts.add("--tenant-password-env", metavar="VAR", help="the name of an environment variable holding it")
    opts.add("--connection-limit", type=int, default=-1, metavar="N", help="the role's CONNECTION LIMIT; -1 = none")
    opts.add(
        "--set",
        action="append",
        metavar="PARAM=VALUE",
        help="a role-level setting, e.g. statement_timeout=15min (repeatable; env: comma-separated)",
    )
    opts.add("--encoding", default="UTF8", help="encoding of a new database (SonarQube needs UTF8)")
    opts.add("--extension", action="append", metavar="NAME", help="create this extension in the database (repeatable)")
    opts.add("--adopt-database-from", metavar="OWNER",
             help="take over the existing database from this owner (never from another sharedpg tenant)")  # fmt: skip
    opts.add("--dry-run", action="store_true", default=False, help="print the SQL that would run; change nothing")
    opts.add("--maintenance-db", default="postgres", help="where the admin connects and takes the provisioning lock")
    opts.add("--lock-timeout", type=seconds, default=60.0, metavar="SECONDS", help="wait this long for other runs")
    add_lock_wait(opts)
    opts.add("--attempt-timeout", type=seconds, default=10.0, metavar="SECONDS",
             help="limit of each connection attempt (libpq connect_timeout; PGCONNECT_TIMEOUT wins)")  # fmt: skip


def spec_from_args(args: argparse.Namespace, ctx: Context) -> TenantSpec:
    """:raises ConfigError: naming the bad input, before any connection."""
    settings = {}
    for item in args.set or ():
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--set {item!r} is not PARAM=VALUE: use e.g. --set statement_timeout=15min")
        settings[key.strip()] = value.strip()
    password = None
    if args.tenant_password_file and args.tenant_password_env:
        raise ConfigError("--tenant-password-file and --tenant-password-env both given: use one")
    if args.tenant_password_file:
        password = read_password_file(args.tenant_password_file, "--tenant-password-file")
    elif args.tenant_password_env:
        password = ctx.environ.get(args.tenant_password_env)
        if not password:
            raise ConfigError(f"--tenant-password-env {args.tenant_password_env}: that variable is unset or empty")
        logs.register_secret(password)
    spec = TenantSpec(
        args.name,
        args.role,
        args.database,
        password,
        args.connection_limit,
        settings,
        args.encoding,
        tuple(args.extension or ()),
        args.adopt_database_from,
    )
    spec.validate()
    return spec


def run(args: argparse.Namespace, ctx: Context) -> int:
    spec = spec_from_args(args, ctx)
    target = target_from_args(args, ctx)
    log = logs.get_logger(command=NAME, tenant=spec.name)

    with (
        db.admin(target, args.maintenance_db) as conn,
        provisioning_lock(conn, target, args.lock_timeout, args.dry_run),
    ):
        ensurer = None
        try:
            try:
                with interrupts.deferred():  # a signal waits for the tenant: no statement is cut in two
                    ensurer = Ensurer(conn, spec, args.dry_run, target)
                    outcome = ensurer.ensure()
            except psycopg.Error as exc:
                raise db.explain(exc) from None
        except SharedpgError as exc:
            if ensurer is not None:
                _report_partial(args, ensurer.outcome, log, exc)
            raise
    for change in outcome.changes:
        if not args.dry_run:
            log.info(change)
    for warning in outcome.warnings:
        log.warning(warning)
    log.info("tenant ensured" if not args.dry_run else "dry run", action=outcome.action,
             changes=len(outcome.changes), server_version=outcome.server_version)  # fmt: skip
    _report(args, outcome)
    return ExitCode.OK


def _report_partial(args: argparse.Namespace, outcome: Outcome, log: Any, exc: SharedpgError) -> None:
    """A failure once the tenant was being ensured: the result says it, with every change already made (also
    on stderr)."""
    for change in outcome.changes:
        log.warning("made before the failure", change=change)
    lines = [f"made before the failure: {change}" for change in outcome.changes]
    lines.append(f"{outcome.spec.name}: failed after {len(outcome.changes)} change(s): {exc}"
                 + ("; a re-run finishes it" if outcome.changes else ""))  # fmt: skip
    fields = {**outcome.as_dict(), "action": "failed", "error": str(exc), "hint": exc.hint}
    output.result(args.output, NAME, "failed", exc.exit_code, fields, lines)


def _report(args: argparse.Namespace, outcome: Outcome) -> None:
    result = outcome.as_dict()
    if args.dry_run:
        result["statements"] = outcome.statements
        lines = [f"{statement};" for statement in outcome.statements]
        lines.append(f"-- dry run: {len(outcome.statements)} statement(s) would run for {outcome.spec.name}")
    else:
        lines = [*outcome.changes, *(f"WARNING: {w}" for w in outcome.warnings),
                 f"{outcome.spec.name}: {outcome.action} (PostgreSQL {outcome.server_version}, "
                 f"{outcome.admin_kind} admin)"]  # fmt: skip
    output.result(args.output, NAME, "dry_run" if args.dry_run else "ok", ExitCode.OK, result, lines)
