"""The monitoring login that serve-metrics connects as, ensured by bootstrap: LOGIN, a member of pg_monitor
and of nothing else, no database of its own, a small CONNECTION LIMIT.

pg_monitor lets it read every session's state in pg_stat_activity and the server's settings; it cannot
connect to a tenant's database (those are closed to PUBLIC) or read a table. A role of that name that is a
tenant, holds other powers or other memberships is refused, never silently changed, as for tenants.
GRANT pg_monitor needs a superuser, or on 16+ an admin holding ADMIN OPTION on pg_monitor: the refusal
says so.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from sharedpg_tools.errors import PermanentError
from sharedpg_tools.settings import Target
from sharedpg_tools.spec import MonitoringLogin
from sharedpg_tools.tenant import REDACTED, TENANT_MARK, Session, integer, login_works, scram_verifier

MONITOR_MARK = "sharedpg monitoring login"


class MonitorOutcome:
    def __init__(self, role: str):
        self.role = role
        self.changes: list[str] = []
        self.statements: list[str] = []
        self.created = False
        self.login_proven = False  # the password already logged in: no need to try it again

    @property
    def action(self) -> str:
        return "created" if self.created else "updated" if self.changes else "unchanged"


def ensure(conn: psycopg.Connection[Any], login: MonitoringLogin, password: str, dry_run: bool, target: Target,
           outcome: MonitorOutcome) -> None:  # fmt: skip
    """Bring the monitoring login to what it should be, recording each change in ``outcome`` as it is made
    (so a failure half-way still says what was made).

    :raises PermanentError: for a role sharedpg must not change, or a GRANT the admin may not give.
    """
    s = Session(conn, outcome, dry_run)
    role = sql.Identifier(login.role)
    row = s.one(
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, rolcanlogin, rolconnlimit, "
        "shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s",
        login.role,
    )
    verifier = scram_verifier(conn, login.role, password)
    limit = integer(login.connection_limit)
    mark = None
    if row is None:
        base = sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS "
                       "CONNECTION LIMIT {} PASSWORD ").format(role, limit)  # fmt: skip
        s.ddl(f"created role {login.role}", base + sql.Literal(verifier), base + sql.Literal(REDACTED))
        outcome.created = True
    else:
        mark = row[7]
        _refuse(s, login.role, row)
        if not row[5] or row[6] != login.connection_limit:
            s.ddl(f"altered role {login.role}: LOGIN CONNECTION LIMIT {login.connection_limit} (was {row[6]})",
                  sql.SQL("ALTER ROLE {} LOGIN CONNECTION LIMIT {}").format(role, limit))  # fmt: skip
        outcome.login_proven = login_works(target, login.role, password, conn.info.dbname)
        if not outcome.login_proven:
            s.set_password(login.role, verifier)
    if mark != MONITOR_MARK:
        s.ddl(f"marked role {login.role} as sharedpg's monitoring login",
              sql.SQL("COMMENT ON ROLE {} IS {}").format(role, sql.Literal(MONITOR_MARK)))  # fmt: skip
    if outcome.created or not s.value("SELECT pg_has_role(%s, 'pg_monitor', 'MEMBER')", login.role):
        try:
            s.ddl(f"granted pg_monitor to {login.role}", sql.SQL("GRANT pg_monitor TO {}").format(role))
        except psycopg.errors.InsufficientPrivilege:
            raise PermanentError(
                f"cannot GRANT pg_monitor TO {login.role}: this admin holds no ADMIN OPTION on pg_monitor",
                f"a superuser runs GRANT pg_monitor TO {login.role} once (or GRANT pg_monitor TO <admin> WITH "
                "ADMIN OPTION); serve-metrics exports sharedpg_hidden_sessions until then",
            ) from None


def _refuse(s: Session, name: str, row: tuple[Any, ...]) -> None:
    superuser, createrole, createdb, replication, bypassrls, _login, _limit, mark = row
    if mark == TENANT_MARK:
        raise PermanentError(f"role {name} is a sharedpg tenant: the monitoring login needs a role of its own",
                             "set monitoring.role in the spec to another name")  # fmt: skip
    powers = [n for n, on in (("SUPERUSER", superuser), ("CREATEROLE", createrole), ("CREATEDB", createdb),
                              ("REPLICATION", replication), ("BYPASSRLS", bypassrls)) if on]  # fmt: skip
    if powers:
        raise PermanentError(
            f"role {name} already exists with {', '.join(powers)}, more than a monitoring login may have",
            f"a superuser runs ALTER ROLE {name} NO{' NO'.join(powers)}, or set monitoring.role to another name",
        )
    query = ("SELECT pg_get_userbyid(m.roleid) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member "
             "WHERE r.rolname = %s AND pg_get_userbyid(m.roleid) <> 'pg_monitor' ORDER BY 1")  # fmt: skip
    other = [str(r) for (r,) in s.conn.execute(query, [name]).fetchall()]
    if other:
        raise PermanentError(
            f"role {name} is a member of {', '.join(other)}: a monitoring login is a member of pg_monitor only",
            "a superuser runs " + "; ".join(f"REVOKE {r} FROM {name}" for r in other),
        )
