"""Ensure one app's role and database on the shared server: least privilege, isolated, idempotent.

The statement sequence is the one verified in ``docs/facts-postgresql.md`` §8 on PostgreSQL 15,
16 and 18, with a superuser admin and with a CREATEROLE CREATEDB admin (RDS, Cloud SQL, Azure):

0. one session-level advisory lock in a database of its own that PUBLIC cannot connect to
   (``sharedpg_lock``), so concurrent runs serialise instead of failing with 23505 / "tuple concurrently
   updated", whatever their maintenance database, and no tenant can hold or fake the lock;
1. the role: created, or compared field by field and repaired; pre-existing SUPERUSER/REPLICATION/
   BYPASSRLS roles and (16+) roles the admin holds no ADMIN option on are refused;
2. a non-superuser admin's membership in the role (``WITH INHERIT TRUE, SET TRUE`` on 16+);
3. the database, from template0, owned by the role (never in a transaction, never recreated);
4. CONNECT and TEMPORARY revoked from PUBLIC, run *as the owner*; the server's "succeeded but did
   nothing" warnings 01006/01007 are failures;
5. role-level settings; 6. extensions; 7. on 13/14-style databases, CREATE on ``public`` revoked;
8. a final check that PUBLIC cannot connect.

Every step reads the catalog first and runs DDL only for what differs, so a re-run runs none.
Passwords are hashed client-side to a SCRAM verifier: the plaintext never reaches the server.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import psycopg
from psycopg import sql

from sharedpg_tools import db, libpq, pinning, probe, scram
from sharedpg_tools.errors import ConfigError, PermanentError, SharedpgError
from sharedpg_tools.names import check_name
from sharedpg_tools.settings import Target

LOCK_KEY = 7300000001  # one constant for every sharedpg provisioner
LOCK_DATABASE = "sharedpg_lock"  # where that lock is taken: no tenant can connect there
# How sharedpg marks the roles it made tenants (COMMENT ON ROLE): a tenant's database is never adopted by
# another tenant. Only a superuser or an admin with ADMIN OPTION on the role can change the mark.
TENANT_MARK = "sharedpg tenant"
# Settings whose value is a list (GUC_LIST_INPUT): set item by item, or "a, b" becomes one item.
LIST_SETTINGS = frozenset({"search_path", "temp_tablespaces", "local_preload_libraries", "session_preload_libraries",
                           "datestyle"})  # fmt: skip
REDACTED = "<redacted>"
MIN_PASSWORD = 8  # a password sharedpg sets; the ones it generates have 32
Statement = sql.SQL | sql.Composed
# "Succeeded but did nothing": the trap for a non-superuser admin (docs/facts-postgresql.md §2c).
_SILENT_NO_OPS = ("01006", "01007")


class TenantSpec:
    """What one tenant should look like."""

    def __init__(
        self,
        name: str,
        role: str | None = None,
        database: str | None = None,
        password: str | None = None,
        connection_limit: int = -1,
        settings: dict[str, str] | None = None,
        encoding: str = "UTF8",
        extensions: tuple[str, ...] = (),
        adopt_database_from: str | None = None,
    ):
        self.name = name
        self.role = role or name
        self.database = database or name
        self.password = password
        self.connection_limit = connection_limit
        self.settings = dict(settings or {})
        self.encoding = encoding
        self.extensions = extensions
        self.adopt_database_from = adopt_database_from

    def validate(self, admin: str | None = None) -> None:
        """:raises ConfigError: naming the field at fault."""
        check_name("tenant", self.name)
        if self.password is not None and len(self.password) < MIN_PASSWORD:
            raise ConfigError(
                f"the password given for {self.name} has {len(self.password)} characters, too few for a real one "
                f"(at least {MIN_PASSWORD}): check its file, variable or Vault secret"
            )
        check_name("role", self.role, admin)
        check_name("database", self.database, admin)
        if self.connection_limit < -1:
            raise ConfigError(f"connection limit {self.connection_limit} is invalid: use -1 (none) or a number >= 0")
        for key in self.settings:
            if not re.fullmatch(r"[a-z_][a-z0-9_.]*", key):
                raise ConfigError(f"setting name {key!r} is invalid: use PARAM=VALUE, e.g. statement_timeout=15min")
        for extension in self.extensions:
            if not re.fullmatch(r"[a-z_][a-z0-9_-]*", extension):
                raise ConfigError(f"extension name {extension!r} is invalid: use the name in pg_available_extensions")


class Outcome:
    """What ensuring did: ``created``, ``updated`` or ``unchanged``, with one line per change."""

    def __init__(self, spec: TenantSpec):
        self.spec = spec
        self.changes: list[str] = []
        self.warnings: list[str] = []
        self.statements: list[str] = []
        self.created = False
        self.server_version = ""
        self.admin_kind = ""

    @property
    def action(self) -> str:
        return "created" if self.created else "updated" if self.changes else "unchanged"

    def as_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.spec.name,
            "role": self.spec.role,
            "database": self.spec.database,
            "action": self.action,
            "changes": self.changes,
            "warnings": self.warnings,
            "server_version": self.server_version,
            "admin_kind": self.admin_kind,
        }


class Record(Protocol):
    """Where a Session records what it did (a tenant's Outcome, the monitoring login's)."""

    changes: list[str]
    statements: list[str]


class Session:
    """The admin's autocommit connection: reads the catalog, and runs (or, dry, records) DDL."""

    def __init__(self, conn: psycopg.Connection[Any], outcome: Record, dry_run: bool):
        self.conn = conn
        self.outcome = outcome
        self.dry_run = dry_run
        self.notices: list[psycopg.errors.Diagnostic] = []
        conn.add_notice_handler(self.notices.append)

    def one(self, query: str, *params: Any) -> tuple[Any, ...] | None:
        return self.conn.execute(query, params or None).fetchone()

    def value(self, query: str, *params: Any) -> Any:
        row = self.one(query, *params)
        return row[0] if row else None

    def ddl(self, change: str, statement: Statement, shown: Statement | None = None,
            as_role: str | None = None, conn: psycopg.Connection[Any] | None = None) -> None:  # fmt: skip
        """Run one statement (as ``as_role`` when given) and record the change it makes."""
        conn = conn or self.conn
        text = (shown or statement).as_string(conn)
        if as_role:
            text = f"SET ROLE {sql.Identifier(as_role).as_string(conn)}; {text}; RESET ROLE"
        self.outcome.statements.append(text)
        if self.dry_run:
            self.outcome.changes.append(change)
            return
        del self.notices[:]
        _execute(conn, change, statement, as_role)
        self.outcome.changes.append(change)  # only what was made
        silent = [n for n in self.notices if n.sqlstate in _SILENT_NO_OPS]
        if silent:
            raise PermanentError(
                f"{change}: the server did nothing ({silent[0].sqlstate} {silent[0].message_primary}): "
                "the admin lacks the owner's privileges"
            )

    def set_password(self, role: str, verifier: str) -> None:
        """ALTER ROLE … PASSWORD with a verifier (``scram_verifier``), shown redacted in the statements."""
        alter = sql.SQL("ALTER ROLE {} PASSWORD {}")
        ident = sql.Identifier(role)
        self.ddl(f"set the password of role {role}", alter.format(ident, sql.Literal(verifier)),
                 alter.format(ident, sql.Literal(REDACTED)))  # fmt: skip


# A catalog row that another session updated while we waited for it: the statement is run again.
_CONCURRENT_RETRIES = 3
# Who holds a lock on a catalog row or object that a provisioning statement needs: shared catalogs
# (database 0: roles, databases, their settings) and the objects of the session's own database.
_HOLDERS_SQL = """
SELECT DISTINCT l.pid, a.usename, a.datname FROM pg_catalog.pg_locks l
JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
WHERE l.granted AND l.pid <> pg_catalog.pg_backend_pid() AND l.locktype IN ('relation', 'tuple', 'object')
  AND (l.database = 0 OR l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()))
ORDER BY 1
"""


def _execute(conn: psycopg.Connection[Any], change: str, statement: Statement, as_role: str | None) -> None:
    """One statement: its lock wait is bounded (the session's pinned lock_timeout), a lock held past it
    fails this statement alone naming who holds it, and a row updated under us is tried again."""
    for attempt in range(1, _CONCURRENT_RETRIES + 1):
        try:
            if as_role:
                with conn.transaction():
                    conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(as_role)))
                    conn.execute(statement)
            else:
                conn.execute(statement)
            return
        except psycopg.errors.LockNotAvailable:
            raise _blocked(conn, change) from None
        except psycopg.errors.InternalError_ as exc:
            if "concurrently" not in str(exc) or attempt == _CONCURRENT_RETRIES:
                raise


def _blocked(conn: psycopg.Connection[Any], change: str) -> SharedpgError:
    holders = conn.execute(_HOLDERS_SQL).fetchall()
    waited = conn.execute("SELECT current_setting('lock_timeout')").fetchone()
    who = ", ".join(f"pid {pid} (role {user}, database {dbname})" for pid, user, dbname in holders) or "a session"
    return SharedpgError(
        f"{change}: not done, a lock was held longer than lock_timeout {waited[0] if waited else ''} by {who}",
        "that session keeps a transaction open: end it (pg_terminate_backend(PID)) or let it finish, then re-run",
    )


def scram_verifier(conn: psycopg.Connection[Any], role: str, password: str) -> str:
    """The SCRAM verifier of ``password``, computed here: the plaintext never reaches the server or its log."""
    return conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()


def integer(value: int) -> Statement:
    """An integer as SQL text (sql.Literal writes ' -1' for a negative one)."""
    return sql.SQL(str(int(value)))


@contextmanager
def provisioning_lock(conn: psycopg.Connection[Any], target: Target, timeout_s: float,
                      dry_run: bool = False) -> Iterator[None]:  # fmt: skip
    """Hold the provisioners' lock while ``conn`` (the admin's maintenance connection) provisions.

    An advisory lock, session level (CREATE DATABASE cannot be in a transaction), taken in database
    ``LOCK_DATABASE`` whatever the maintenance database: one lock for every run on the server, which no
    tenant can take or fake, because PUBLIC cannot connect there. A dry run changes nothing, so it takes
    no lock and waits for nobody.
    """
    if dry_run:
        yield
        return
    ensure_lock_database(conn)
    with db.admin(target, LOCK_DATABASE) as lock:
        lock.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{int(timeout_s * 1000)}ms")))
        try:
            lock.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
        except psycopg.errors.LockNotAvailable:
            raise SharedpgError(
                f"another sharedpg run held the provisioning lock for {timeout_s:g} s",
                "wait for it to finish (a crashed run releases the lock when its connection closes)",
            ) from None
        yield  # the lock ends with this connection


def ensure_lock_database(conn: psycopg.Connection[Any]) -> None:
    """The lock's database: made once (two first runs may race: the loser finds it made), closed to PUBLIC
    (checked on every run: one that died between the two statements leaves it open), and, when a superuser
    runs, open to the roles that may provision: CREATEROLE ones, never a tenant, which may also create there
    (copy-tenant's record of finished copies, ``copy_record``)."""
    name = sql.Identifier(LOCK_DATABASE)
    if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [LOCK_DATABASE]).fetchone() is None:
        with contextlib.suppress(
            psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation
        ):  # a racing run made it
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(name))
    if conn.execute("SELECT has_database_privilege('public', %s, 'CONNECT')", [LOCK_DATABASE]).fetchone() == (True,):
        conn.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(name))
    if db.is_superuser(conn):
        for (admin,) in conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolcreaterole AND NOT rolsuper "
            "AND NOT (has_database_privilege(oid, %s, 'CONNECT') AND has_database_privilege(oid, %s, 'CREATE'))",
            [LOCK_DATABASE, LOCK_DATABASE],
        ).fetchall():  # fmt: skip
            conn.execute(sql.SQL("GRANT CONNECT, CREATE ON DATABASE {} TO {}").format(name, sql.Identifier(admin)))


def login_works(target: Target, role: str, password: str, dbname: str) -> bool:
    """Can ``role`` log into ``dbname`` with ``password``? (One lean attempt, as wait-for-db makes; pinned, so
    a setting the tenant put on its database, such as a library that does not load, cannot fail it.)"""
    params = pinning.pin(target.params(user=role, password=password, dbname=dbname), target.lock_wait)
    try:
        probe.attempt_params(params, probe.Requirement(), 10.0)
    except probe.AttemptFailed:
        return False
    return True


class Ensurer:
    """Brings one tenant to its spec over an admin connection to the maintenance database.

    ``target`` is how the admin connects: used again to reach the tenant's own database (for steps
    that must run there) and, with the tenant's credentials, to try its login.
    """

    def __init__(self, conn: psycopg.Connection[Any], spec: TenantSpec, dry_run: bool, target: Target):
        self.spec = spec
        self.outcome = Outcome(spec)
        self.s = Session(conn, self.outcome, dry_run)
        self.target = target
        self._adopted = False
        self._existing_db: tuple[Any, ...] | None = None  # (owner, encoding) before this run, read by the preflight
        self._extension_facts: dict[str, tuple[bool, str | None]] = {}  # name -> (trusted, fixed schema)
        row = self.s.one(
            "SELECT current_setting('server_version_num')::int, current_setting('server_version'), current_user, "
            "r.rolsuper, r.rolcreaterole, r.rolcreatedb FROM pg_roles r WHERE r.rolname = current_user"
        )
        assert row is not None
        self.version, version_text, self.admin, self.superuser, createrole, createdb = row
        self.outcome.server_version = libpq.display_version(str(version_text))
        self.outcome.admin_kind = "superuser" if self.superuser else "createrole_createdb"
        if not self.superuser and not (createrole and createdb):
            raise PermanentError(
                f"the admin {self.admin!r} is neither a superuser nor CREATEROLE CREATEDB: "
                f"a superuser must run ALTER ROLE {self.admin} CREATEROLE CREATEDB"
            )
        spec.validate(self.admin)

    def ensure(self) -> Outcome:
        """:raises SharedpgError: ``self.outcome`` then holds the changes made before the failure."""
        self._preflight()
        self._role()
        self._membership()
        db_exists = self._database()
        self._revoke_public(db_exists)
        self._settings()
        if not db_exists and self.s.dry_run:  # the database would be new: it would get every extension
            self._extensions(None)
        elif self._tenant_database_to_check():
            with db.admin(self.target, self.spec.database) as tdb:
                self._extensions(tdb)
                self._public_schema(tdb)
        self._verify()
        return self.outcome

    def _preflight(self) -> None:
        """Everything that can be checked before the first DDL, so a refusal leaves nothing half-made:
        extensions, the encoding, an existing database's encoding and owner, each setting and its value."""
        self._check_extensions()
        if self.s.value("SELECT pg_char_to_encoding(%s)", self.spec.encoding) == -1:
            raise ConfigError(f"--encoding {self.spec.encoding!r} is not an encoding PostgreSQL knows: use e.g. UTF8")
        self._existing_db = self.s.one(
            "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding) FROM pg_database WHERE datname = %s",
            self.spec.database,
        )
        if self._existing_db is not None:
            self._check_existing_database(*self._existing_db)
        for key, value in self.spec.settings.items():
            self._check_setting(key)
            self._check_value(key, value)

    def _check_value(self, key: str, value: str) -> None:
        """The server parses the value, in a transaction rolled back at once (nothing is set)."""
        try:
            with self.s.conn.transaction(force_rollback=True):
                self.s.conn.execute("SELECT set_config(%s, %s, true)", [key, value])
        except psycopg.errors.InvalidParameterValue as exc:
            raise ConfigError(f"--set {key}={value}: {exc.diag.message_primary}: fix the value") from None
        except psycopg.errors.InsufficientPrivilege:
            pass  # a value only its grantee may set: checked by _check_setting's privilege rule

    def _tenant_database_to_check(self) -> bool:
        """Steps 6 and 7 need a connection to the tenant's database; skip it when they cannot change
        anything: 15+ makes ``public`` right in every database we create from template0 and keep."""
        return bool(self.spec.extensions) or self.version < 150000 or self._adopted

    # 1. the role ---------------------------------------------------------------------------
    def _role(self) -> None:
        spec, role = self.spec, sql.Identifier(self.spec.role)
        row = self.s.one(
            "SELECT rolsuper, rolreplication, rolbypassrls, rolcanlogin, rolcreatedb, rolcreaterole, rolconnlimit "
            "FROM pg_roles WHERE rolname = %s",
            spec.role,
        )
        verifier = self._verifier()
        if row is None:
            password = sql.SQL(" PASSWORD {}").format(sql.Literal(verifier)) if verifier else sql.SQL("")
            shown = sql.SQL(" PASSWORD {}").format(sql.Literal(REDACTED)) if verifier else sql.SQL("")
            create = (
                "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS CONNECTION LIMIT {}"
            )
            base = sql.SQL(create).format(role, integer(spec.connection_limit))
            self.s.ddl(f"created role {spec.role}", base + password, base + shown)
            self.outcome.created = True
            self._mark(role)
            if not verifier:
                self.outcome.warnings.append(f"role {spec.role} has no password: it cannot log in with a password yet")
            return
        superuser, replication, bypassrls, login, createdb, createrole, connlimit = row
        dangerous = [
            n for n, on in (("SUPERUSER", superuser), ("REPLICATION", replication), ("BYPASSRLS", bypassrls)) if on
        ]
        if dangerous:
            raise PermanentError(
                f"role {spec.role} already exists with {', '.join(dangerous)}; sharedpg neither keeps nor silently "
                f"removes that: a superuser must run ALTER ROLE {spec.role} NO{' NO'.join(dangerous)}, "
                "or choose another --role"
            )
        if (
            self.version >= 160000
            and not self.superuser
            and not self.s.value("SELECT pg_has_role(%s, 'MEMBER WITH ADMIN OPTION')", spec.role)
        ):
            raise PermanentError(
                f"role {spec.role} exists but was not created by {self.admin} and {self.admin} holds no ADMIN option "
                f"on it (PostgreSQL 16+): a superuser must run GRANT {spec.role} TO {self.admin} WITH ADMIN OPTION"
            )
        self._refuse_memberships()
        if self.s.value("SELECT rolvaliduntil < now() FROM pg_roles WHERE rolname = %s", spec.role):
            self.s.ddl(f"role {spec.role}: its password had expired (VALID UNTIL); now it does not",
                       sql.SQL("ALTER ROLE {} VALID UNTIL 'infinity'").format(role))  # fmt: skip
        if self._mark_of(spec.role) != TENANT_MARK:
            self._mark(role)
        drift = [f for f, bad in (("LOGIN", not login), ("NOCREATEDB", createdb), ("NOCREATEROLE", createrole)) if bad]
        if connlimit != spec.connection_limit:
            drift.append(f"CONNECTION LIMIT {spec.connection_limit} (was {connlimit})")
        if drift:
            alter = "ALTER ROLE {} LOGIN NOCREATEDB NOCREATEROLE CONNECTION LIMIT {}"
            self.s.ddl(f"altered role {spec.role}: {', '.join(drift)}",
                       sql.SQL(alter).format(role, integer(spec.connection_limit)))  # fmt: skip
        if verifier is not None and not self._password_matches():
            self.s.set_password(spec.role, verifier)

    def _mark_of(self, role: str) -> str | None:
        return self.s.value("SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s", role)  # type: ignore[no-any-return]

    def _mark(self, role: sql.Identifier) -> None:
        self.s.ddl(f"marked role {self.spec.role} as a sharedpg tenant",
                   sql.SQL("COMMENT ON ROLE {} IS {}").format(role, sql.Literal(TENANT_MARK)))  # fmt: skip

    def _refuse_memberships(self) -> None:
        """A tenant is a member of no role (not a predefined one reaching files, programs, all data or other
        sessions, not another tenant), and no role but an admin is a member of it (it would reach the data).

        :raises PermanentError: naming each membership and the REVOKE that ends it.
        """
        role = self.spec.role
        of = [str(r) for (r,) in self.s.conn.execute(
            "SELECT pg_get_userbyid(m.roleid) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member "
            "WHERE r.rolname = %s ORDER BY 1", [role]).fetchall()]  # fmt: skip
        members = [str(r) for (r,) in self.s.conn.execute(
            "SELECT u.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid "
            "JOIN pg_roles u ON u.oid = m.member WHERE r.rolname = %s AND NOT (u.rolsuper OR u.rolcreaterole) "
            "ORDER BY 1", [role]).fetchall()]  # fmt: skip
        problems = [f"it is a member of {r} (REVOKE {r} FROM {role})" for r in of]
        problems += [f"{m} is a member of it (REVOKE {role} FROM {m})" for m in members]
        if problems:
            raise PermanentError(
                f"role {role} already exists with memberships a tenant must not have: {'; '.join(problems)}",
                "sharedpg neither keeps nor silently removes them: a superuser must run the REVOKEs, or choose "
                "another --role",
            )

    def _verifier(self) -> str | None:
        if self.spec.password is None:
            return None
        return scram_verifier(self.s.conn, self.spec.role, self.spec.password)

    def _password_matches(self) -> bool:
        assert self.spec.password is not None
        if self.superuser:
            stored = self.s.value("SELECT rolpassword FROM pg_authid WHERE rolname = %s", self.spec.role)
            return scram.matches(stored, self.spec.password, self.spec.role)
        # pg_authid is unreadable for a non-superuser (RDS too): try a login as the tenant.
        dbname = self.spec.database if self._existing_db else self.s.conn.info.dbname
        return login_works(self.target, self.spec.role, self.spec.password, dbname)

    # 2. membership -------------------------------------------------------------------------
    def _membership(self) -> None:
        if self.superuser:
            return
        role, admin = sql.Identifier(self.spec.role), sql.Identifier(self.admin)
        if self.version >= 160000:
            held = not self.outcome.created and self.s.value(
                "SELECT pg_has_role(%s, 'SET') AND pg_has_role(%s, 'USAGE')", self.spec.role, self.spec.role
            )
            statement = sql.SQL("GRANT {} TO {} WITH INHERIT TRUE, SET TRUE").format(role, admin)
        else:
            held = not self.outcome.created and self.s.value("SELECT pg_has_role(%s, 'USAGE')", self.spec.role)
            statement = sql.SQL("GRANT {} TO {}").format(role, admin)
        if not held:
            self.s.ddl(f"granted role {self.spec.role} to admin {self.admin}", statement)

    # 3. the database -----------------------------------------------------------------------
    def _database(self) -> bool:
        spec = self.spec
        db, role = sql.Identifier(spec.database), sql.Identifier(spec.role)
        row = self._existing_db  # unchanged since the preflight: every run holds the provisioning lock
        if row is None:
            self.s.ddl(
                f"created database {spec.database} owned by {spec.role}",
                sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING {}").format(
                    db, role, sql.Literal(spec.encoding)
                ),
            )
            self.outcome.created = True
            return False
        owner, _ = row
        if owner != spec.role:
            self._adopted = True  # someone else's database: its public schema is checked too
            self.s.ddl(
                f"changed the owner of database {spec.database} from {owner} to {spec.role}",
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, role),
            )
        return True

    def _check_existing_database(self, owner: str, encoding: str) -> None:
        spec = self.spec
        if encoding.replace("-", "").upper() != spec.encoding.replace("-", "").upper():
            raise PermanentError(
                f"database {spec.database} exists with encoding {encoding}, not {spec.encoding}; an encoding cannot be "
                "changed in place and sharedpg never recreates a database: dump, recreate and restore it"
            )
        if owner != spec.role:
            self._refuse_takeover(owner)

    def _refuse_takeover(self, owner: str) -> None:
        """:raises PermanentError: unless the database is explicitly adopted from its owner, a non-tenant."""
        spec = self.spec
        if spec.adopt_database_from != owner:
            raise PermanentError(
                f"database {spec.database} is owned by {owner}, not {spec.role}: sharedpg never takes a database "
                "over (it may be another app's)",
                f"if it is {owner}'s to give to {spec.role}, adopt it explicitly: --adopt-database-from {owner} "
                "(spec: adopt_database_from)",
            )
        if self._mark_of(owner) == TENANT_MARK:
            raise PermanentError(
                f"database {spec.database} belongs to {owner}, another sharedpg tenant: never adopted",
                f"give {spec.role} a database of its own (--database), or retire {owner} first",
            )

    # 4. isolation --------------------------------------------------------------------------
    def _revoke_public(self, db_exists: bool) -> None:
        spec = self.spec
        if db_exists:
            self._revoke_grantees()
            open_to = self.s.one(
                "SELECT has_database_privilege('public', %s, 'CONNECT'), "
                "has_database_privilege('public', %s, 'TEMPORARY')",
                spec.database,
                spec.database,
            )
            if open_to is not None and not any(open_to):
                return
        self.s.ddl(
            f"revoked CONNECT, TEMPORARY on database {spec.database} from PUBLIC",
            sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(sql.Identifier(spec.database)),
            as_role=spec.role,
        )

    def _revoke_grantees(self) -> None:
        """Roles other than the owner granted CONNECT or TEMPORARY on the database lose them (as the owner,
        so a grant it cannot revoke fails loudly instead of being kept while reporting ``unchanged``)."""
        database = self.spec.database
        grantees = self.s.conn.execute(
            "SELECT DISTINCT pg_get_userbyid(a.grantee) FROM pg_database d, aclexplode(d.datacl) a "
            "WHERE d.datname = %s AND a.grantee NOT IN (0, d.datdba) AND a.privilege_type IN ('CONNECT', 'TEMPORARY') "
            "ORDER BY 1",
            [database],
        ).fetchall()
        for (grantee,) in grantees:
            self.s.ddl(
                f"revoked CONNECT, TEMPORARY on database {database} from {grantee}",
                sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM {}").format(
                    sql.Identifier(database), sql.Identifier(str(grantee))
                ),
                as_role=self.spec.role,
            )

    # 5. settings ---------------------------------------------------------------------------
    def _settings(self) -> None:
        if not self.spec.settings:
            return
        current = set(
            self.s.value("SELECT coalesce(rolconfig, '{}') FROM pg_roles WHERE rolname = %s", self.spec.role) or []
        )
        for key, value in self.spec.settings.items():
            items = [item.strip() for item in value.split(",")] if key.lower() in LIST_SETTINGS else [value]
            if f"{key}={', '.join(items)}" in current:
                continue  # (checked by the preflight)
            self.s.ddl(
                f"set {key}={', '.join(items)} for role {self.spec.role}",
                sql.SQL("ALTER ROLE {} SET {} = {}").format(
                    sql.Identifier(self.spec.role), sql.Identifier(key), sql.SQL(", ").join(map(sql.Literal, items))
                ),
            )

    def _check_setting(self, key: str) -> None:
        context = self.s.value("SELECT context FROM pg_settings WHERE name = %s", key)
        if context is None:
            raise ConfigError(
                f"--set {key}: PostgreSQL {self.outcome.server_version} has no parameter {key!r} "
                "(some exist only on newer servers, e.g. transaction_timeout from 17): drop it for this server"
            )
        if context not in ("user", "superuser"):
            raise ConfigError(f"--set {key}: a {context} parameter cannot be set per role: set it on the server")
        if context == "superuser" and not self.superuser and not self._may_set(key):
            raise PermanentError(
                f"--set {key}: only a superuser may set it: "
                f"a superuser must run GRANT SET ON PARAMETER {key} TO {self.admin}"
            )

    def _may_set(self, key: str) -> bool:
        if self.version < 150000:
            return False
        return bool(self.s.value("SELECT has_parameter_privilege(%s, 'SET')", key))

    # 6, 7. inside the tenant's database ----------------------------------------------------
    def _check_extensions(self) -> None:
        """Before changing anything: every extension asked for is available, and trusted unless the admin is
        a superuser (a CREATEROLE admin creates it as the database's owner)."""
        for extension in self.spec.extensions:
            row = self.s.one(
                "SELECT bool_or(v.trusted), min(v.schema) FILTER (WHERE v.version = e.default_version) "
                "FROM pg_available_extension_versions v JOIN pg_available_extensions e ON e.name = v.name "
                "WHERE v.name = %s", extension,
            )  # fmt: skip
            trusted, schema = row if row else (None, None)
            if trusted is None:
                raise PermanentError(
                    f"--extension {extension}: PostgreSQL {self.outcome.server_version} has no extension "
                    f"{extension!r} available: install it on the server or drop --extension"
                )
            if not trusted and not self.superuser:
                raise PermanentError(
                    f"--extension {extension}: not a trusted extension, so only a superuser may create it",
                    f"a superuser must run CREATE EXTENSION {extension} in database {self.spec.database}",
                )
            self._extension_facts[extension] = (bool(trusted), schema)

    def _extensions(self, tdb: psycopg.Connection[Any] | None) -> None:
        """Each missing extension, in ``public`` unless its control file fixes the schema (the session's
        search_path is pinned to pg_catalog, so nothing is left to a default).

        A trusted one is created *as the tenant*, exactly what the tenant may do itself (PostgreSQL runs the
        script as the bootstrap superuser either way). An untrusted one runs its script as the superuser
        admin, in a schema the tenant owns and may have planted objects in: only in the database this run
        created, before the tenant could log in to it.
        """
        for extension in self.spec.extensions:
            if tdb is not None and tdb.execute("SELECT 1 FROM pg_extension WHERE extname = %s", [extension]).fetchone():
                continue
            trusted, schema = self._extension_facts[extension]
            if not trusted and not self.outcome.created:
                raise PermanentError(
                    f"--extension {extension}: untrusted, so its script would run as the superuser admin in "
                    f"database {self.spec.database}, which its tenant owns and may have prepared: not done",
                    f"a superuser who has checked schema public there must run CREATE EXTENSION {extension}",
                )
            create = sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(extension))
            if schema is None:
                create += sql.SQL(" SCHEMA public")
            self.s.ddl(f"created extension {extension} in database {self.spec.database}", create, conn=tdb,
                       as_role=self.spec.role if trusted else None)  # fmt: skip

    def _public_schema(self, tdb: psycopg.Connection[Any]) -> None:
        """13/14-style ``public`` (owned by the bootstrap superuser, CREATE for PUBLIC): lock it down."""
        row = tdb.execute(
            "SELECT pg_get_userbyid(nspowner), EXISTS (SELECT 1 "
            "FROM aclexplode(coalesce(nspacl, acldefault('n', nspowner))) a "
            "WHERE a.grantee = 0 AND a.privilege_type = 'CREATE') FROM pg_namespace WHERE nspname = 'public'"
        ).fetchone()
        if row is None:
            return
        owner, public_create = row
        if not public_create and owner in (self.spec.role, "pg_database_owner"):
            return
        may = self.superuser or tdb.execute("SELECT pg_has_role(%s, 'USAGE')", [owner]).fetchone() == (True,)
        if not may:
            self.outcome.warnings.append(
                f"schema public in {self.spec.database} is owned by {owner} and PUBLIC may create in it; {self.admin} "
                "cannot change that, but no other tenant can connect to the database, so isolation holds"
            )
            return
        self.s.ddl(f"revoked CREATE on schema public in {self.spec.database} from PUBLIC",
                   sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"), conn=tdb)  # fmt: skip
        give = sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(self.spec.role))
        self.s.ddl(f"gave schema public in {self.spec.database} to {self.spec.role}", give, conn=tdb)

    # 8. verify -----------------------------------------------------------------------------
    def _verify(self) -> None:
        if self.s.dry_run:
            return
        if self.s.value("SELECT has_database_privilege('public', %s, 'CONNECT')", self.spec.database):
            raise PermanentError(
                f"database {self.spec.database} still accepts connections from PUBLIC after the REVOKE"
            )
