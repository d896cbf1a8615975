"""The bootstrap Job's core: every tenant of the spec ensured, with its credentials, one report.

Roles and databases exist for every tenant, active or not, so flipping a fuse later never breaks
anything (the seed's rule); the report marks which are active. One tenant's failure does not stop
the others. Each tenant goes through ``tenant.Ensurer`` — the same code as ``ensure-tenant`` — and
is then proved by a login with the password just set. Then the spec's monitoring login (``monitor.py``);
its failure is reported and logged but does not fail the run: the apps are not held back by monitoring,
and serve-metrics then says it cannot read the server, which alerts.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, Protocol, TypeVar

import psycopg

from sharedpg_tools import db, interrupts, logs, monitor, passwords
from sharedpg_tools.errors import ConfigError, Interrupted, PermanentError, SharedpgError, Unusable
from sharedpg_tools.exitcodes import ExitCode
from sharedpg_tools.settings import Target, read_password_file
from sharedpg_tools.spec import MonitoringLogin, Spec, Tenant
from sharedpg_tools.tenant import Ensurer, Outcome, login_works, provisioning_lock
from sharedpg_tools.vault import Vault


class _Acted(Protocol):
    """What ensuring a login returns (a tenant's Outcome, the monitoring login's MonitorOutcome)."""

    @property
    def action(self) -> str: ...


OutcomeT = TypeVar("OutcomeT", bound=_Acted)


class Credentials:
    """Where each tenant's password comes from: Vault (the source of truth) when configured, else the
    spec's ``password_file`` / ``password_env``, else ``--password-dir`` (generated there once).

    A password is generated only for a login that does not exist yet, or one named in ``rotate``: a role
    that exists has a password its app logs in with, and a source that has none for it (a new Vault, a new
    --password-dir) must not replace it behind the app's back. ``existing`` is filled from the server."""

    def __init__(self, vault: Vault | None, environ: Mapping[str, str], password_dir: str | None,
                 advertised: dict[str, str], dry_run: bool, rotate: frozenset[str] = frozenset()):  # fmt: skip
        self.vault = vault
        self.environ = environ
        self.password_dir = password_dir
        self.advertised = advertised
        self.dry_run = dry_run
        self.rotate = rotate
        self.existing: set[str] = set()

    def _may_generate(self, login: Tenant | MonitoringLogin, source: str, carry: str) -> None:
        """:raises PermanentError: when the login exists and is not to be rotated: say how to carry its
        current password into ``source`` (``carry``), or how to rotate on purpose."""
        if login.role in self.existing and login.name not in self.rotate:
            raise PermanentError(
                f"{login.name}: role {login.role} already exists and {source} holds no password for it: sharedpg "
                "does not replace the password its app logs in with",
                f"carry its current password into the source: {carry}; or give it a new one on purpose: "
                f"--rotate {login.name} (what still uses the old one stops logging in)",
            )

    def password_for(self, tenant: Tenant | MonitoringLogin) -> tuple[str, str]:
        """The login's password and, for the report, where it came from (never the password itself).

        :raises SharedpgError: when no source has it (ConfigError), or Vault keeps failing.
        """
        if self.vault is not None:
            return self._from_vault(tenant)
        if tenant.password_file:
            return read_password_file(
                tenant.password_file, f"tenant {tenant.name!r}: password_file"
            ), f"file {tenant.password_file}"
        if tenant.password_env:
            value = self.environ.get(tenant.password_env)
            if not value:
                raise ConfigError(f"tenant {tenant.name!r}: password_env {tenant.password_env} is unset or empty")
            logs.register_secret(value)
            return value, f"env {tenant.password_env}"
        if self.password_dir:
            if not passwords.stored(self.password_dir, tenant.name):
                self._may_generate(tenant, f"--password-dir {self.password_dir}",
                                   f"write it to {self.password_dir}/{tenant.name} (mode 0600)")  # fmt: skip
            password, generated = passwords.in_directory(self.password_dir, tenant.name, create=not self.dry_run)
            if password is None:  # a dry run: it would be generated
                return passwords.generate(), f"would be generated into {self.password_dir}/{tenant.name}"
            return password, f"{'generated, stored in' if generated else 'file'} {self.password_dir}/{tenant.name}"
        raise ConfigError(
            f"tenant {tenant.name!r} has no password source: set password_file or password_env in the spec, "
            "or pass --password-dir"
        )

    def _from_vault(self, tenant: Tenant | MonitoringLogin) -> tuple[str, str]:
        assert self.vault is not None
        fields = {**tenant.vault_fields, **self.advertised}
        shown = " ".join(f"{k}={v}" for k, v in fields.items())
        carry = (f"bao kv put -mount={self.vault.settings.mount} -cas=0 {tenant.vault_path} "
                 f"password=<its current password> {shown} (create-only, as sharedpg writes)")  # fmt: skip

        def generate() -> str:
            self._may_generate(tenant, f"vault {tenant.vault_location}", carry)
            return passwords.generate()

        password, how = self.vault.ensure_password(tenant.vault_path, fields, generate, self.dry_run,
                                                    frozenset(self.advertised))  # fmt: skip
        return password, f"vault {tenant.vault_location} ({how})"


class LoginReport(Generic[OutcomeT]):
    """What a login's line in the report holds: its outcome, where its password came from, its error."""

    def __init__(self) -> None:
        self.outcome: OutcomeT | None = None
        self.source = ""
        self.error: str | None = None
        self.hint: str | None = None

    @property
    def action(self) -> str:
        return "failed" if self.error else self.outcome.action if self.outcome else "pending"

    def fail(self, exc: SharedpgError) -> None:
        self.error, self.hint = str(exc), exc.hint


class TenantReport(LoginReport[Outcome]):
    """One tenant's line in the report."""

    def __init__(self, tenant: Tenant, active: bool):
        super().__init__()
        self.tenant = tenant
        self.active = active
        self.exit_code = int(ExitCode.OK)

    def fail(self, exc: SharedpgError) -> None:
        super().fail(exc)
        self.exit_code = int(exc.exit_code)

    def as_dict(self, dry_run: bool) -> dict[str, Any]:
        t = self.tenant
        result: dict[str, Any] = {
            "tenant": t.name,
            "stack": t.stack,
            "active": self.active,
            "action": self.action,
            "role": t.role,
            "database": t.database,
            "connection_limit": t.connection_limit,
            "pool_budget": t.budget,
            "secret": t.vault_location,
            "password_source": self.source,
            "changes": self.outcome.changes if self.outcome else [],
            "warnings": self.outcome.warnings if self.outcome else [],
        }
        if self.error:
            result.update(error=self.error, hint=self.hint, exit_code=self.exit_code)
        if dry_run and self.outcome:
            result["statements"] = self.outcome.statements
        return result


class MonitorReport(LoginReport[monitor.MonitorOutcome]):
    """The monitoring login's line in the report (its failure does not change the exit code)."""

    def __init__(self, login: MonitoringLogin):
        super().__init__()
        self.login = login

    def as_dict(self, dry_run: bool) -> dict[str, Any]:
        result: dict[str, Any] = {"role": self.login.role, "action": self.action, "secret": self.login.vault_location,
                                  "password_source": self.source,
                                  "changes": self.outcome.changes if self.outcome else []}  # fmt: skip
        if self.error:
            result.update(error=self.error, hint=self.hint)
        if dry_run and self.outcome:
            result["statements"] = self.outcome.statements
        return result


def run(spec: Spec, fuses: Mapping[str, bool], target: Target, credentials: Credentials, dry_run: bool,
        maintenance_db: str, lock_timeout: float) -> tuple[list[TenantReport], MonitorReport | None]:  # fmt: skip
    """Ensure every tenant, then the monitoring login; never raises for one's failure (it is in its report).

    :raises SharedpgError: when the admin cannot connect or the lock cannot be had.
    """
    log = logs.get_logger(command="bootstrap")
    reports = [TenantReport(t, fuses.get(t.stack, False)) for t in spec.tenants]
    watcher = MonitorReport(spec.monitoring) if spec.monitoring else None
    secrets: dict[str, str] = {}
    every: list[TenantReport | MonitorReport] = [*reports, *([watcher] if watcher else [])]
    with db.admin(target, maintenance_db) as conn:
        logins = [(r, r.tenant if isinstance(r, TenantReport) else r.login) for r in every]
        credentials.existing = _roles_with_passwords(conn, [login.role for _, login in logins])
        for report, login in logins:  # Vault round trips before taking the server's lock
            try:
                secrets[login.name], report.source = credentials.password_for(login)
            except Unusable:
                raise
            except SharedpgError as exc:
                report.fail(exc)
        interrupted = _provision(conn, reports, watcher, secrets, target, dry_run, lock_timeout)
    if not dry_run and interrupted is None:
        _verify_logins([r for r in reports if r.error is None], secrets, target)
    for report in reports:
        _log(report, dry_run, log)
    if watcher is not None:
        _log_monitor(watcher, dry_run, log)
    return reports, watcher


def _roles_with_passwords(conn: psycopg.Connection[Any], roles: list[str]) -> set[str]:
    """Which of ``roles`` exist with a password an app may log in with. A superuser reads pg_authid; any
    other admin cannot (RDS, Cloud SQL neither), so for it a role that exists is taken to have one."""
    query = "SELECT rolname FROM pg_catalog.pg_roles WHERE rolname = ANY(%s)"
    if db.is_superuser(conn):
        query = "SELECT rolname FROM pg_catalog.pg_authid WHERE rolname = ANY(%s) AND rolpassword IS NOT NULL"
    return {str(name) for (name,) in conn.execute(query, [roles]).fetchall()}


def _provision(conn: psycopg.Connection[Any], reports: list[TenantReport], watcher: MonitorReport | None,
               secrets: dict[str, str], target: Target, dry_run: bool,
               lock_timeout: float) -> Interrupted | None:  # fmt: skip
    """Every tenant without an error so far, then the monitoring login, under the provisioning lock; the
    signal that stopped it, if one did."""
    interrupted: Interrupted | None = None
    with provisioning_lock(conn, target, lock_timeout, dry_run):
        for report in reports:
            if report.error is not None:
                continue
            if interrupted is not None:  # after a signal no tenant is started: each says it was not done
                report.fail(Interrupted(interrupted.signum, "not done: the run was interrupted before this tenant"))
                continue
            try:
                _ensure_one(conn, report, secrets[report.tenant.name], dry_run, target)
            except Interrupted as exc:
                interrupted = exc
        if watcher is not None and watcher.error is None and interrupted is None:
            _ensure_monitor(conn, watcher, secrets[watcher.login.name], dry_run, target)
    return interrupted


def _ensure_monitor(conn: psycopg.Connection[Any], report: MonitorReport, password: str, dry_run: bool,
                    target: Target) -> None:  # fmt: skip
    report.outcome = monitor.MonitorOutcome(report.login.role)
    try:
        with interrupts.deferred():
            monitor.ensure(conn, report.login, password, dry_run, target, report.outcome)
    except psycopg.Error as exc:
        report.fail(db.explain(exc))
    except SharedpgError as exc:
        report.fail(exc)
    if report.error or dry_run or report.outcome.login_proven:  # proven: its password just logged in
        return
    if not login_works(target, report.login.role, password, conn.info.dbname):
        report.fail(SharedpgError(f"{report.login.role} cannot log in with the password just set",
                                  "check pg_hba.conf for this role and the maintenance database"))  # fmt: skip


def _log_monitor(report: MonitorReport, dry_run: bool, log: Any) -> None:
    role = report.login.role
    if report.error:
        log.error("monitoring login failed", role=role, error=report.error, hint=report.hint)
    elif not dry_run:
        for change in report.outcome.changes if report.outcome else []:
            log.info(change, role=role)


def _ensure_one(conn: psycopg.Connection[Any], report: TenantReport, password: str, dry_run: bool,
                target: Target) -> None:  # fmt: skip
    ensurer = None
    try:
        with interrupts.deferred():  # a signal ends the run after this tenant, never in its middle
            ensurer = Ensurer(conn, report.tenant.tenant_spec(password), dry_run, target)
            report.outcome = ensurer.ensure()
    except psycopg.Error as exc:
        report.fail(db.explain(exc))
    except Interrupted as exc:
        report.fail(exc)
        raise
    except SharedpgError as exc:
        report.fail(exc)
    if report.error and ensurer is not None:
        report.outcome = ensurer.outcome  # the changes made before the failure are reported with it


def _verify_logins(reports: list[TenantReport], secrets: dict[str, str], target: Target) -> None:
    """Prove every tenant by logging in with its password, all at once (each login is a round trip)."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = pool.map(
            lambda r: login_works(target, r.tenant.role, secrets[r.tenant.name], r.tenant.database), reports
        )
        for report, works in zip(reports, results, strict=True):
            if not works:
                report.fail(SharedpgError(
                    f"{report.tenant.role} cannot log into {report.tenant.database} with the password just set",
                    "check pg_hba.conf for this role and database, and the role's CONNECTION LIMIT",
                ))  # fmt: skip


def _log(report: TenantReport, dry_run: bool, log: Any) -> None:
    tenant = report.tenant.name
    if report.error:
        log.error("tenant failed", tenant=tenant, error=report.error, hint=report.hint)
    elif not dry_run:
        for change in report.outcome.changes if report.outcome else []:
            log.info(change, tenant=tenant)
        log.info("tenant ready", tenant=tenant, action=report.action, active=report.active)
