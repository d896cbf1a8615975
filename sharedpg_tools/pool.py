"""The connection budget as code: declared pools against the server's real capacity, and live usage.

Usable client slots are ``max_connections - superuser_reserved_connections - reserved_connections``
(the last exists from PostgreSQL 16). Autovacuum, parallel workers and WAL senders do not take these
slots (verified on 15, 16 and 18: docs/facts-postgresql.md §6), so no "margin for autovacuum" is
needed — the seed plan's reason for its margin is a misconception; admin headroom is the real one.

The live check reads ``pg_stat_activity`` through the lean libpq binding (it may run as a probe).
Without superuser or ``pg_read_all_stats`` (part of ``pg_monitor``), other roles' sessions show with
their state and backend type hidden; that is detected and reported as UNKNOWN, never as a low count.
"""

from __future__ import annotations

import os
import time
from enum import IntEnum

from sharedpg_tools import libpq, pinning
from sharedpg_tools.classify import connect_failure
from sharedpg_tools.spec import Capacity, Spec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

STATES = (
    "active",
    "idle",
    "idle in transaction",
    "idle in transaction (aborted)",
    "fastpath function call",
    "disabled",
)


class Status(IntEnum):
    """Nagios states, which are also check-pool's exit codes (monitoring reads them)."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


class Finding:
    def __init__(self, status: Status, message: str, hint: str | None = None):
        self.status = status
        self.message = message
        self.hint = hint

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status.name, "message": self.message, "hint": self.hint}


class RoleUsage:
    """One role: its connections by state, its CONNECTION LIMIT, and what the spec declares."""

    def __init__(self, role: str):
        self.role = role
        self.states: dict[str, int] = {}
        self.limit: int | None = None  # None: the role does not exist
        self.budget: int | None = None
        self.expected_limit: int | None = None

    @property
    def total(self) -> int:
        return sum(self.states.values())

    def as_dict(self) -> dict[str, Any]:
        return {"role": self.role, "connections": self.total, "states": self.states, "connection_limit": self.limit,
                "budget": self.budget, "expected_limit": self.expected_limit}  # fmt: skip


class Report:
    """What check-pool found. ``capacity`` is None when the server could not be read: nothing is invented."""

    def __init__(self, mode: str, capacity: Capacity | None):
        self.mode = mode
        self.capacity = capacity
        self.roles: dict[str, RoleUsage] = {}
        self.databases: dict[str, tuple[int, int]] = {}  # name -> (connections, datconnlimit)
        self.findings: list[Finding] = []
        self.total = 0  # connections counted (live) or budgeted (offline)
        self.headroom: int | None = None  # the spec's admin_headroom, when a spec is known
        self.hidden = 0  # other roles' sessions this login cannot see (counts would be low)
        self.authenticating = 0  # live: client connections that have not logged in yet (no role, a slot)
        self.only_role: str | None = None  # live with --role: every figure is that role's alone
        self.server_version = ""

    @property
    def status(self) -> Status:
        return max((f.status for f in self.findings), default=Status.OK)

    def role(self, name: str) -> RoleUsage:
        return self.roles.setdefault(name, RoleUsage(name))

    def flag(self, status: Status, message: str, hint: str | None = None) -> None:
        self.findings.append(Finding(status, message, hint))

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"status": self.status.name, "exit_code": int(self.status), "mode": self.mode}
        if self.capacity is not None:
            c = self.capacity
            capacity = {"max_connections": c.max_connections, "superuser_reserved_connections": c.superuser_reserved,
                        "reserved_connections": c.reserved, "usable": c.usable}  # fmt: skip
            databases = [{"database": d, "connections": n, "connection_limit": lim}
                         for d, (n, lim) in self.databases.items()]  # fmt: skip
            result |= {"server_version": self.server_version or None, "capacity": capacity,
                       "connections" if self.mode == "live" else "budget": self.total,
                       "roles": [r.as_dict() for r in self.roles.values()], "databases": databases}  # fmt: skip
            if self.mode == "live":
                result["authenticating"] = self.authenticating
            if self.headroom is not None:
                result["admin_headroom"] = self.headroom
        result["findings"] = [f.as_dict() for f in self.findings]
        return result


def offline(spec: Spec, capacity: Capacity) -> Report:
    """Does the declared budget fit? WARNING-free: it fits (OK) or not (CRITICAL, mapped to exit 1)."""
    report = Report("offline", capacity)
    report.headroom = spec.admin_headroom
    for tenant in spec.tenants:
        usage = report.role(tenant.role)
        usage.budget, usage.expected_limit = tenant.budget, tenant.connection_limit
    report.total = spec.total_budget
    overflow = spec.overflow(capacity)
    if overflow > 0:
        largest = sorted(spec.tenants, key=lambda t: t.budget, reverse=True)
        report.flag(
            Status.CRITICAL,
            f"does not fit by {overflow}: budgets {spec.total_budget} + admin headroom {spec.admin_headroom} > "
            f"{capacity.usable} usable slots; largest budgets: "
            + ", ".join(f"{t.name} {t.budget} ({t.pool_max}x{t.replicas}x{t.pool_multiplier})" for t in largest),
            "lower pool.max or replicas of the largest tenants, or raise max_connections",
        )
    beyond = spec.limit_overflow(capacity)
    if beyond > 0:
        report.flag(
            Status.CRITICAL,
            f"does not fit by {beyond}: CONNECTION LIMITs {spec.total_limit} + admin headroom {spec.admin_headroom} > "
            f"{capacity.usable} usable slots: with the tenants at their limits the admin could not connect",
            "lower connection_limit_margin (or a tenant's connection_limit), or raise max_connections",
        )
    return report


_SETTINGS_SQL = (
    "SELECT current_setting('server_version_num'), current_setting('server_version'), "
    "current_setting('max_connections'), current_setting('superuser_reserved_connections'), "
    "coalesce(current_setting('reserved_connections', true), '0'), r.rolsuper, "
    "pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE') FROM pg_catalog.pg_roles r WHERE r.rolname = current_user"
)
_ACTIVITY_SQL = (
    "SELECT usename, datname, state, count(*) FROM pg_catalog.pg_stat_activity "
    "WHERE backend_type = 'client backend' GROUP BY 1, 2, 3"
)
# Rows of other roles' sessions that an unprivileged viewer sees without backend_type or state.
_HIDDEN_SQL = (
    "SELECT usename, count(*) FROM pg_catalog.pg_stat_activity "
    "WHERE backend_type IS NULL AND usesysid IS NOT NULL AND datid IS NOT NULL GROUP BY 1"
)


def read_live(params: dict[str, str], timeout: float, spec: Spec | None, warn: float, crit: float,
              only_role: str | None = None) -> Report:  # fmt: skip
    """Connect, read, judge: the live report. A server that cannot be read within ``timeout`` (connect and
    queries together) gives a report without figures and an UNKNOWN finding saying why; never raises."""
    try:
        conn = libpq.Connection(pinning.pin(params), time.monotonic() + timeout, lambda: False)
    except (libpq.ConnectFailed, libpq.Cancelled) as exc:
        error = exc.error if isinstance(exc, libpq.ConnectFailed) else libpq.ServerError("no answer in time")
        failure = connect_failure(error.message, error.sqlstate, error.needs_password)
        hint = failure.hint
        if failure.error_class == "database_missing" and "dbname" not in params and "PGDATABASE" not in os.environ:
            hint = ("no database was named, so libpq used the login's own name, and the monitoring login has no "
                    "database: add dbname=postgres to --dsn (or set PGDATABASE)")  # fmt: skip
        return unread(f"cannot connect: {failure.message}", hint)
    try:
        return live(conn, spec, warn, crit, only_role)
    except (libpq.QueryFailed, libpq.Cancelled) as exc:
        why = exc.error.message if isinstance(exc, libpq.QueryFailed) else f"no answer within {timeout:g} s"
        return unread(f"cannot read pg_stat_activity: {why}",
                      "GRANT pg_monitor to this login; a slow answer: is the server overloaded?")  # fmt: skip
    finally:
        conn.close()


def unread(message: str, hint: str | None) -> Report:
    """The report of a server that could not be read: UNKNOWN, saying why, and no figures."""
    report = Report("live", None)
    report.flag(Status.UNKNOWN, message, hint)
    return report


def live(conn: libpq.Connection, spec: Spec | None, warn: float, crit: float, only_role: str | None = None) -> Report:
    """Current usage against the server's capacity, each role's limit and the spec's budgets."""
    _, version, max_conn, su_reserved, reserved, is_super, reads_stats = conn.query(_SETTINGS_SQL)[0]
    capacity = Capacity(int(max_conn or 0), int(su_reserved or 0), int(reserved or 0))
    report = Report("live", capacity)
    report.server_version = libpq.display_version(str(version))
    report.headroom = spec.admin_headroom if spec is not None else None
    privileged = is_super == "t" or reads_stats == "t"
    for usename, datname, state, count in conn.query(_ACTIVITY_SQL):
        if usename is None and only_role is None:  # still authenticating: no role yet, but a slot taken
            report.authenticating += int(count or 0)
        if usename is None or (only_role and usename != only_role):
            continue
        usage = report.role(usename)
        usage.states[state or "unknown"] = usage.states.get(state or "unknown", 0) + int(count or 0)
        n, limit = report.databases.get(datname or "", (0, -1))
        report.databases[datname or ""] = (n + int(count or 0), limit)
    limits = {
        name: int(limit or -1) for name, limit in conn.query("SELECT rolname, rolconnlimit FROM pg_catalog.pg_roles")
    }
    for datname, datlimit in conn.query("SELECT datname, datconnlimit FROM pg_catalog.pg_database WHERE datallowconn"):
        if datname in report.databases:
            report.databases[datname] = (report.databases[datname][0], int(datlimit or -1))
    if spec is not None:
        for tenant in spec.tenants:
            if only_role is None or tenant.role == only_role:
                usage = report.role(tenant.role)
                usage.budget, usage.expected_limit = tenant.budget, tenant.connection_limit
    if only_role is not None:
        report.role(only_role)
        report.only_role = only_role
    for usage in report.roles.values():
        usage.limit = limits.get(usage.role)
        _judge_role(report, usage, warn, crit, only_role)
    report.total = sum(r.total for r in report.roles.values()) + report.authenticating
    if only_role is None:
        _judge_total(report, warn, crit)
    if not privileged:
        _judge_visibility(report, conn, only_role)
    return report


def _judge_role(report: Report, usage: RoleUsage, warn: float, crit: float, only_role: str | None) -> None:
    name = usage.role
    if usage.limit is None:
        if name == only_role:  # asked about a role that is not there: cannot tell, not OK
            report.flag(Status.UNKNOWN, f"role {name} does not exist", "check --role, or has the bootstrap Job run?")
        elif usage.budget is not None:
            report.flag(Status.WARNING, f"role {name} does not exist", "has the bootstrap Job run?")
        return
    if usage.expected_limit is not None and usage.limit != usage.expected_limit:
        shown = "none" if usage.limit == -1 else str(usage.limit)
        report.flag(
            Status.WARNING,
            f"role {name}: CONNECTION LIMIT {shown} differs from the spec's {usage.expected_limit} "
            f"(budget {usage.budget})",
            "re-run the bootstrap Job (or ensure-tenant) to set it",
        )
    elif usage.limit == -1 and usage.budget is not None:
        report.flag(Status.WARNING, f"role {name} has no CONNECTION LIMIT", "re-run the bootstrap Job")
    if usage.limit > 0:
        share = usage.total / usage.limit
        level = Status.CRITICAL if share >= crit else Status.WARNING if share >= warn else None
        # Within its budget a tenant is where the plan puts it: the spec's margin over the budget is small
        # by design, so at a full pool the share of the limit alone is high (the soak: 83-91 %).
        planned = usage.budget is not None and usage.total <= usage.budget and usage.total < usage.limit
        if level is not None and not planned:
            over = f", above its budget of {usage.budget}" if usage.budget is not None else ""
            report.flag(level, f"role {name}: {usage.total} of its {usage.limit} connections ({share:.0%}){over}",
                        "the app's pool is near its limit: new connections will fail with 53300")  # fmt: skip


def _judge_total(report: Report, warn: float, crit: float) -> None:
    """WARNING at ``warn`` of the usable slots unless the spec plans for that many (its budgets); CRITICAL at
    ``crit`` always: the admin headroom is then gone."""
    assert report.capacity is not None  # judged only after the server was read
    usable = report.capacity.usable
    share = report.total / usable if usable > 0 else 1.0
    planned = sum(r.budget for r in report.roles.values() if r.budget is not None)
    level = Status.CRITICAL if share >= crit else Status.WARNING if share >= warn else None
    if level is Status.WARNING and planned and report.total <= planned:
        level = None
    if level is not None:
        stalled = f", {report.authenticating} of them still authenticating" if report.authenticating else ""
        report.flag(level, f"{report.total} of {usable} usable connections in use ({share:.0%}){stalled}",
                    "lower pools, or raise max_connections; see each role's usage")  # fmt: skip


def _judge_visibility(report: Report, conn: libpq.Connection, only_role: str | None) -> None:
    hidden = {usename: int(count or 0) for usename, count in conn.query(_HIDDEN_SQL) if usename}
    if only_role is not None:
        hidden = {k: v for k, v in hidden.items() if k == only_role}
    report.hidden = sum(hidden.values())
    if hidden:
        report.flag(
            Status.UNKNOWN,
            f"{sum(hidden.values())} sessions of {', '.join(sorted(hidden))} are hidden from this role: "
            "the counts would be wrong",
            "run as a superuser or a role granted pg_monitor (GRANT pg_monitor TO <role>)",
        )
