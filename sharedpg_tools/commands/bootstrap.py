"""``sharedpg bootstrap``: the init Job that ensures every app's role and database from a tenants spec.

Waits for the server (as ``wait-for-db``), reads or creates each tenant's password in Vault (or a
file when ``--no-vault``), takes the provisioning lock, ensures every tenant with ``ensure-tenant``'s
core, and proves each one by logging in. ``--plan`` needs no server: it applies the fuses.

Exit codes: 0 every tenant ready (``--plan``: the shared database must be deployed) · 1 a tenant
failed, or the server/Vault was not ready (``--plan``: no database needed) · 2 invalid input or spec
· 3 impossible with this admin · 124 the server did not become ready before ``--timeout``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from sharedpg_tools import bootstrap, db, fuses, logs, output, probe, spec
from sharedpg_tools.commands.wait_for_db import add_policy_arguments, policy_from_args
from sharedpg_tools.errors import ConfigError
from sharedpg_tools.exitcodes import ExitCode
from sharedpg_tools.settings import Context, EnvDefaults, Target, add_lock_wait, seconds, target_from_args
from sharedpg_tools.waiter import Waiter

NAME = "bootstrap"
USES_STRUCTLOG = True


def add_arguments(parser: argparse.ArgumentParser, environ: Any) -> None:
    opts = EnvDefaults(parser, environ)
    opts.add("--spec", metavar="FILE", help="the tenants spec (YAML, a ConfigMap) [the built-in six-app spec]")
    parser.add_argument("--print-default-spec", action="store_true", help="print the built-in spec and exit")
    parser.add_argument(
        "--plan", action="store_true", help="no connection: apply the fuses; exit 0 = deploy the database, 1 = not"
    )
    parser.add_argument(
        "--fuse",
        action="append",
        metavar="STACK=BOOL",
        help="a stack's fuse (backstage, cicd, policies, observability); env: FUSE_<STACK>, e.g. FUSE_CICD=true; "
        "true/false, 1/0, on/off or yes/no; unset = off",
    )
    opts.add("--no-vault", action="store_true", default=False, help="passwords from files, not Vault")
    opts.add(
        "--password-dir",
        metavar="DIR",
        help="with --no-vault: each tenant's password in DIR/<tenant>, generated there (mode 0600) when missing",
    )
    opts.add("--advertised-host", metavar="HOST", help="the host apps connect to, written to Vault [the one we used]")
    opts.add("--advertised-port", metavar="PORT", help="the port written to Vault [the one we used]")
    opts.add("--dry-run", action="store_true", default=False, help="print the plan and SQL; write nothing")
    opts.add("--maintenance-db", default="postgres", help="where the admin connects and takes the provisioning lock")
    opts.add("--lock-timeout", type=float, default=60.0, metavar="SECONDS", help="wait this long for other runs")
    add_lock_wait(opts)
    opts.add("--rotate", action="append", metavar="NAME",
             help="give this existing login a new generated password although its source has none (repeatable; "
             "what still uses the old one stops logging in)")  # fmt: skip
    opts.add("--auth-grace", type=seconds, default=30.0, metavar="SECONDS",
             help="how long a rejected admin login is retried (a Secret being rotated) before exit 4")  # fmt: skip
    add_policy_arguments(opts)


def run(args: argparse.Namespace, ctx: Context) -> int:
    if args.print_default_spec:
        output.emit(spec.default_text())
        return ExitCode.OK
    tenants = spec.load(args.spec)
    known = {t.name for t in tenants.tenants} | ({tenants.monitoring.name} if tenants.monitoring else set())
    unknown = sorted(set(args.rotate or ()) - known)
    if unknown:
        raise ConfigError(f"--rotate {', '.join(unknown)}: not in the spec (its logins: {', '.join(sorted(known))})")
    fuse_values = fuses.read(args.fuse or [], ctx.environ)
    if args.plan:
        return _plan(args.output, tenants, fuse_values)
    policy = policy_from_args(args)
    target = target_from_args(args, ctx)
    if args.no_vault and not args.password_dir:
        logins: list[spec.Tenant | spec.MonitoringLogin] = [*tenants.tenants, *filter(None, [tenants.monitoring])]
        sourceless = [t.name for t in logins if not t.password_file and not t.password_env]
        if sourceless:
            raise ConfigError(f"--no-vault: no password source for {', '.join(sourceless)}: give --password-dir DIR, "
                              "or password_file / password_env for each in the spec")  # fmt: skip
    vault_settings = None
    if not args.no_vault:
        from sharedpg_tools.vault import VaultSettings

        vault_settings = VaultSettings.from_environ(ctx.environ, tenants.tenants[0].vault_mount, policy.timeout,
                                                    ", or pass --no-vault to use password files")  # fmt: skip
    log = logs.get_logger(command=NAME)
    ready = Waiter(_admin_attempt(target, args.auth_grace), policy, log).until_ready()
    log.info("database ready", target=probe.where(ready.target), server_version=ready.version)
    vault = None
    if vault_settings is not None:
        from sharedpg_tools.vault import Vault

        vault = Vault(vault_settings)
    advertised = {
        "host": args.advertised_host or ready.target.get("host", ""),
        "port": str(args.advertised_port or ready.target.get("port", "")),
    }
    credentials = bootstrap.Credentials(vault, ctx.environ, args.password_dir, advertised, args.dry_run,
                                        frozenset(args.rotate or ()))  # fmt: skip
    reports, watcher = bootstrap.run(tenants, fuse_values, target, credentials, args.dry_run, args.maintenance_db,
                                     args.lock_timeout)  # fmt: skip
    code = max((r.exit_code for r in reports), default=0)  # the monitoring login's failure does not hold apps
    _report(args.output, reports, watcher, fuse_values, args.dry_run, code)
    return code


def _admin_attempt(target: Target, grace: float) -> Callable[[float], probe.Ready]:
    """One attempt of the admin's login. A server that is not up yet is waited for until --timeout; a login
    it rejects (password, role, pg_hba.conf) only for ``grace`` seconds (a Secret being rotated), then it is
    exit 4 naming where the admin's password came from: the Job that would fix it is this one. A database the
    admin's login names and the server lacks is a setting to fix (exit 2), not something to wait for."""
    started = time.monotonic()

    def attempt(timeout: float) -> probe.Ready:
        try:
            return probe.attempt(target, probe.Requirement(), timeout)
        except probe.AttemptFailed as exc:
            if exc.failure.error_class in db.ADMIN_AUTH and time.monotonic() - started >= grace:
                raise db.admin_rejected(exc.failure, target) from None
            if exc.failure.error_class == "database_missing":  # the admin's own: none appears by waiting
                raise ConfigError(f"the admin logs in to a database that does not exist ({exc.failure.message}): "
                                  "name the maintenance database with PGDATABASE=postgres or dbname=postgres in "
                                  "--dsn (libpq defaults it to the user's name)") from None  # fmt: skip
            raise

    return attempt


def _plan(output_format: str, tenants: spec.Spec, fuse_values: dict[str, bool]) -> int:
    needed = fuses.database_needed(fuse_values, tenants.stacks())
    active = [t for t in tenants.tenants if fuse_values.get(t.stack)]
    capacity = tenants.capacity
    result = {
        "fuses": fuse_values,
        "database_needed": needed,
        "active_tenants": [t.name for t in active],
        "inactive_tenants": [t.name for t in tenants.tenants if t not in active],
        "active_budget": sum(t.budget for t in active),
        "total_budget": tenants.total_budget,
        "admin_headroom": tenants.admin_headroom,
        "usable_slots": capacity.usable if capacity else None,
    }
    lines = [
        "fuses: " + " ".join(f"{stack}={'on' if on else 'off'}" for stack, on in fuse_values.items()),
        f"shared database: {'deploy' if needed else 'not needed (no fuse of a stack it serves is on)'}",
        "active tenants: " + (", ".join(f"{t.name} ({t.budget})" for t in active) or "none"),
        "inactive tenants (their roles and databases are still ensured): "
        + (", ".join(t.name for t in tenants.tenants if t not in active) or "none"),
        f"connection budget: {result['active_budget']} active, {tenants.total_budget} if every stack is on, "
        f"+{tenants.admin_headroom} admin headroom" + (f", of {capacity.usable} usable slots" if capacity else ""),
    ]
    code = ExitCode.OK if needed else ExitCode.NOT_READY
    output.result(output_format, NAME, "deploy" if needed else "not_needed", code, result, lines)
    return code


def _report(output_format: str, reports: list[bootstrap.TenantReport], watcher: bootstrap.MonitorReport | None,
            fuse_values: dict[str, bool], dry_run: bool, code: int) -> None:  # fmt: skip
    ok = all(r.error is None for r in reports)
    result: dict[str, Any] = {"ok": ok, "dry_run": dry_run, "fuses": fuse_values,
                              "tenants": [r.as_dict(dry_run) for r in reports]}  # fmt: skip
    if watcher is not None:
        result["monitoring"] = watcher.as_dict(dry_run)
    lines = []
    for r in reports:
        t = r.tenant
        state = "active" if r.active else "inactive"
        line = f"{t.name:<16} {state:<8} {r.action:<9} limit {t.connection_limit:<4} {r.source}"
        lines.append(line + (f"  ERROR: {r.error}" if r.error else ""))
        if dry_run and r.outcome:
            lines += [f"    {statement};" for statement in r.outcome.statements]
    if watcher is not None:
        w = watcher
        line = f"{w.login.role:<16} {'monitor':<8} {w.action:<9} limit {w.login.connection_limit:<4} {w.source}"
        lines.append(line + (f"  ERROR: {w.error}" if w.error else ""))
        if dry_run and watcher.outcome:
            lines += [f"    {statement};" for statement in watcher.outcome.statements]
    failed = [r.tenant.name for r in reports if r.error]
    summary = f"bootstrap: {len(reports) - len(failed)} of {len(reports)} tenants ready"
    summary += (f"; failed: {', '.join(failed)}" if failed else "") + (" (dry run)" if dry_run else "")
    lines.append(summary)
    status = ("dry_run" if dry_run else "ok") if ok else "failed"
    output.result(output_format, NAME, status, code, result, lines)
