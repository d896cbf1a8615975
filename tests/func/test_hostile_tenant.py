"""A hostile tenant and a hostile old server against the admin's sessions, on 15, 16 and 18 with both admins.

The tenant owns its database and logs in to it: it plants look-alikes of the catalog (views, functions,
better-matching overloads, operators) and points its database's search_path and role at them; on an old
maintenance database it plants them in ``public``. The old server that copy-tenant reads carries functions
that run while its data is restored or counted (CHECK constraints, domains, index expressions,
materialized views, a forced row-security policy) and try ``RESET ROLE``. Each payload tries what a tenant
wants of the admin — SUPERUSER for itself, membership in another tenant's role — and records who ran it.

What a user cares about, asserted after every attack: no role gained SUPERUSER or a membership, the other
tenant's data stayed unreadable, and no payload ran in a session whose user was an admin.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from sharedpg_tools import pinning
from tests.conftest import Result
from tests.fix_legacy import Legacy
from tests.fix_servers import MANAGED_ADMIN, Server
from tests.func.test_ensure_tenant import Tenants, ok, tenants  # noqa: F401 (the fixture)

ADMINS = ("postgres", MANAGED_ADMIN)


def payload(schema: str, attacker: str, victim: str) -> str:
    """``{schema}.hijack()``: records (current_user, session_user), tries RESET ROLE, then tries to make
    ``attacker`` SUPERUSER and a member of ``victim``; errors are swallowed, so only the outcome tells."""
    return f"""
    CREATE TABLE IF NOT EXISTS {schema}.ran (who text, sess text);
    GRANT INSERT ON {schema}.ran TO PUBLIC;
    GRANT USAGE ON SCHEMA {schema} TO PUBLIC;
    CREATE OR REPLACE FUNCTION {schema}.hijack() RETURNS boolean LANGUAGE plpgsql AS $f$
    DECLARE me text := '{attacker}';
    BEGIN
      BEGIN RESET ROLE; EXCEPTION WHEN others THEN NULL; END;
      INSERT INTO {schema}.ran VALUES (pg_catalog.current_user(), pg_catalog.session_user());
      BEGIN EXECUTE pg_catalog.format('ALTER ROLE %I SUPERUSER', me); EXCEPTION WHEN others THEN NULL; END;
      BEGIN EXECUTE pg_catalog.format('GRANT %I TO %I', '{victim}', me);
      EXCEPTION WHEN others THEN NULL; END;
      RETURN true;
    END $f$;
    """


def look_alikes(schema: str) -> str:
    """Catalog look-alikes in ``schema`` that call the payload: what an unpinned admin session would resolve
    to with ``search_path = {schema}, pg_catalog`` (exact names) or with ``public`` after pg_catalog (better
    overloads for the text parameters a client sends)."""
    return f"""
    CREATE VIEW {schema}.pg_extension AS SELECT * FROM pg_catalog.pg_extension WHERE {schema}.hijack();
    CREATE VIEW {schema}.pg_namespace AS SELECT * FROM pg_catalog.pg_namespace WHERE {schema}.hijack();
    CREATE VIEW {schema}.pg_roles AS SELECT * FROM pg_catalog.pg_roles WHERE {schema}.hijack();
    CREATE VIEW {schema}.pg_database AS SELECT * FROM pg_catalog.pg_database WHERE {schema}.hijack();
    CREATE FUNCTION {schema}.pg_get_userbyid(oid) RETURNS name LANGUAGE sql
      AS $f$ SELECT pg_catalog.pg_get_userbyid($1) WHERE {schema}.hijack() $f$;
    CREATE FUNCTION {schema}.pg_char_to_encoding(text) RETURNS int LANGUAGE sql
      AS $f$ SELECT pg_catalog.pg_char_to_encoding($1::name) WHERE {schema}.hijack() $f$;
    CREATE FUNCTION {schema}.pg_encoding_to_char(int) RETURNS name LANGUAGE sql
      AS $f$ SELECT pg_catalog.pg_encoding_to_char($1) WHERE {schema}.hijack() $f$;
    CREATE FUNCTION {schema}.pg_has_role(text, text) RETURNS boolean LANGUAGE sql
      AS $f$ SELECT pg_catalog.pg_has_role($1::name, $2) WHERE {schema}.hijack() $f$;
    CREATE FUNCTION {schema}.has_database_privilege(text, text, text) RETURNS boolean LANGUAGE sql
      AS $f$ SELECT pg_catalog.has_database_privilege($1, $2, $3) WHERE {schema}.hijack() $f$;
    CREATE FUNCTION {schema}.name_eq_text(name, text) RETURNS boolean LANGUAGE sql
      AS $f$ SELECT $1::text OPERATOR(pg_catalog.=) $2 AND {schema}.hijack() $f$;
    CREATE OPERATOR {schema}.= (LEFTARG = name, RIGHTARG = text, FUNCTION = {schema}.name_eq_text);
    CREATE FUNCTION {schema}.text_eq(text, text) RETURNS boolean LANGUAGE sql
      AS $f$ SELECT $1 OPERATOR(pg_catalog.=) $2 AND {schema}.hijack() $f$;
    CREATE OPERATOR {schema}.= (LEFTARG = text, RIGHTARG = text, FUNCTION = {schema}.text_eq);
    """


def assert_nothing_gained(pg: Server, attacker: str, victim: str) -> None:
    row = pg.admin_sql(
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, pg_has_role(%s, %s, 'MEMBER') "
        "FROM pg_roles WHERE rolname = %s", attacker, victim, attacker,
    )  # fmt: skip
    assert row == [(False, False, False, False, False)], f"{attacker} gained powers or {victim}'s role: {row}"
    memberships = pg.admin_sql(
        "SELECT pg_get_userbyid(roleid) FROM pg_auth_members WHERE member = %s::regrole", attacker
    )
    assert memberships == [], f"{attacker} became a member of {memberships}"


def admin_runs(pg: Server, dbname: str, table: str) -> list[tuple[Any, ...]]:
    """The payload's records made in a session whose user or session user is an admin (read in a session the
    tenant's planted settings cannot stop: pinned as sharedpg's are)."""
    with psycopg.connect(pg.conninfo(dbname=dbname), password=pg.password, autocommit=True,
                         options=pinning.pin({})["options"]) as conn:  # fmt: skip
        return conn.execute(
            sql.SQL("SELECT who, sess FROM {} WHERE who = ANY(%s) OR sess = ANY(%s)").format(sql.SQL(table)),
            [list(ADMINS), list(ADMINS)],
        ).fetchall()


def trusted_extension(pg: Server) -> str:
    rows = pg.admin_sql("SELECT DISTINCT name FROM pg_available_extension_versions WHERE trusted AND name NOT IN "
                        "('plpgsql') AND requires IS NULL ORDER BY 1")  # fmt: skip
    return str(rows[0][0]) if rows else "plpgsql"  # plpgsql: in every database already, found, not made


def test_a_tenant_that_plants_catalog_look_alikes_in_its_database_gains_nothing(tenants: Tenants,  # noqa: F811
                                                                                  pg: Server) -> None:  # fmt: skip
    """Then the admin goes into its database: to create an extension (as the tenant), and again to find it."""
    attacker, victim = tenants.name("grafana"), tenants.name("sonarqube")
    extension = trusted_extension(pg)
    ok(tenants.ensure(victim))
    ok(tenants.ensure(attacker))
    with tenants.connect(attacker) as conn:
        conn.execute("CREATE SCHEMA evil")
        conn.execute(payload("evil", attacker, victim))
        conn.execute(look_alikes("evil"))
        for setting in ("search_path = evil, pg_catalog", f"role = {attacker}", "row_security = on",
                        "standard_conforming_strings = off", "default_transaction_read_only = on",
                        "exit_on_error = on", "statement_timeout = 1", "client_min_messages = error",
                        "local_preload_libraries = 'not_a_library'", "temp_tablespaces = 'nowhere'",
                        "idle_in_transaction_session_timeout = 1", "lock_timeout = 1"):  # fmt: skip
            conn.execute(f"ALTER DATABASE {attacker} SET {setting}")
        conn.execute(f"ALTER ROLE {attacker} SET search_path = evil, pg_catalog")
    made = ok(tenants.ensure(attacker, "--extension", extension))  # into its database, past the planted objects
    assert extension == "plpgsql" or any(extension in change for change in made["changes"]), made
    again = ok(tenants.ensure(attacker, "--extension", extension))
    assert again["action"] == "unchanged", again
    check = tenants.cli("check-pool", "--dsn", tenants.pg.conninfo(tenants.admin, attacker),
                        env={"PGPASSWORD": pg.password_of(tenants.admin)})  # fmt: skip
    assert check.code in (0, 1, 2), check
    assert_nothing_gained(pg, attacker, victim)
    assert admin_runs(pg, attacker, "evil.ran") == [], "a planted object ran in an admin's session"
    for setting in (
        "statement_timeout",
        "default_transaction_read_only",
        "exit_on_error",
        "role",
        "local_preload_libraries",
        "idle_in_transaction_session_timeout",
        "lock_timeout",
    ):
        pg.admin_sql(f"ALTER DATABASE {attacker} RESET {setting}")  # they would stop the payload, not run it
    with unpinned(pg, tenants.admin, attacker) as conn:  # the control: what an unpinned session runs
        conn.execute("SELECT 1 FROM pg_extension WHERE extname = %s", [extension])
    assert admin_runs(pg, attacker, "evil.ran") != [], "the planted look-alikes are not what they should be"


@contextmanager
def unpinned(pg: Server, admin: str, dbname: str) -> Iterator[psycopg.Connection[Any]]:
    """An admin session as sharedpg opened them before pinning."""
    with psycopg.connect(pg.conninfo(admin, dbname), password=pg.password_of(admin), autocommit=True) as conn:
        yield conn


@contextmanager
def old_public_schema(pg: Server, attacker: str) -> Iterator[None]:
    """The maintenance database as before PostgreSQL 15 (or upgraded from 14): PUBLIC may create in public.
    Afterwards what the attacker made there is dropped and the grant revoked."""
    pg.admin_sql("GRANT CREATE ON SCHEMA public TO PUBLIC")
    try:
        yield
    finally:
        pg.admin_sql(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(attacker)))
        pg.admin_sql("REVOKE CREATE ON SCHEMA public FROM PUBLIC")


def test_public_of_an_old_maintenance_database_resolves_nothing_for_the_admin(tenants: Tenants,  # noqa: F811
                                                                              pg: Server) -> None:  # fmt: skip
    attacker, victim, newcomer = tenants.name("dex"), tenants.name("backstage"), tenants.name("argo")
    ok(tenants.ensure(victim))
    ok(tenants.ensure(attacker))
    with old_public_schema(pg, attacker):
        with tenants.connect(attacker, "postgres") as conn:  # PUBLIC may connect to the maintenance database
            conn.execute(payload("public", attacker, victim))
            conn.execute(look_alikes("public"))
        ok(tenants.ensure(newcomer, "--connection-limit", "5", "--encoding", "UTF8"))
        ok(tenants.ensure(attacker, "--connection-limit", "7"))  # drift repaired: every step runs again
        check = tenants.cli("check-pool", "--dsn", pg.conninfo(tenants.admin),
                            env={"PGPASSWORD": pg.password_of(tenants.admin)})  # fmt: skip
        assert check.code in (0, 1, 2), check
        assert_nothing_gained(pg, attacker, victim)
        assert admin_runs(pg, "postgres", "public.ran") == [], "a function in public ran as the admin"
        with unpinned(pg, tenants.admin, "postgres") as conn:  # the control: what an unpinned session runs
            conn.execute("SELECT pg_char_to_encoding(%s)", ["UTF8"])
        assert admin_runs(pg, "postgres", "public.ran") != [], "the planted overload is not what it should be"


def hostile_dump_sql(attacker: str, victim: str) -> str:
    """An old database whose restore and whose counting run the payload: every place a dump's own code runs."""
    return (
        payload("public", attacker, victim)
        + """
    CREATE FUNCTION public.hijack_int(integer) RETURNS integer LANGUAGE plpgsql IMMUTABLE
      AS $f$ BEGIN PERFORM public.hijack(); RETURN $1; END $f$;
    CREATE DOMAIN public.checked_int AS integer CHECK (public.hijack());
    CREATE TABLE public.accounts (id integer PRIMARY KEY, n public.checked_int, CHECK (public.hijack()));
    INSERT INTO public.accounts SELECT g, g FROM generate_series(1, 50) g;
    CREATE INDEX accounts_expr ON public.accounts (public.hijack_int(id));
    CREATE MATERIALIZED VIEW public.summary AS SELECT count(*) AS n FROM public.accounts WHERE public.hijack();
    CREATE TABLE public.guarded (id integer PRIMARY KEY);
    INSERT INTO public.guarded SELECT generate_series(1, 10);
    ALTER TABLE public.guarded ENABLE ROW LEVEL SECURITY;
    ALTER TABLE public.guarded FORCE ROW LEVEL SECURITY;
    CREATE POLICY everyone ON public.guarded USING (public.hijack());
    """
    )


@pytest.fixture
def hostile_source(legacy: Legacy) -> Iterator[Callable[[str, str], str]]:
    """Makes a database on the old server, as its own user, with the hostile dump's objects aimed at the
    tenant that will receive it; returns its --from-dsn, as the old server's superuser (a FORCE ROW LEVEL
    SECURITY table dumps only so, as with the bundled servers' postgres user)."""
    made: list[str] = []

    def make(attacker: str, victim: str) -> str:
        name = f"hostile_{secrets.token_hex(3)}"
        legacy.server.admin_sql(f"CREATE DATABASE {name} OWNER legacy_user")
        made.append(name)
        with psycopg.connect(legacy.server.conninfo("legacy_user", name), password=legacy.password,
                             autocommit=True) as conn:  # fmt: skip
            conn.execute(hostile_dump_sql(attacker, victim))
            conn.execute("TRUNCATE public.ran")  # what the old server's own run of it recorded
        return legacy.server.conninfo(dbname=name)

    yield make
    for name in made:
        legacy.server.admin_sql(f"DROP DATABASE {name} WITH (FORCE)")


def test_a_hostile_dump_runs_only_as_the_tenant_during_copy_and_verification(
    tenants: Tenants,  # noqa: F811
    pg: Server,
    legacy: Legacy,
    hostile_source: Callable[[str, str], str],
    tmp_path: Path,
) -> None:
    attacker, victim_role = tenants.name("backstage"), tenants.name("victim")
    copy = hostile_copy(tenants, legacy, hostile_source(attacker, victim_role), attacker, victim_role, tmp_path)
    with tenants.connect(victim_role) as conn:
        conn.execute("CREATE TABLE secrets AS SELECT 'the victim''s data' AS s")
    result = copy()
    # Copied (the dump's code ran as the tenant; its records make the counts differ: exit 1), or failed with
    # nothing committed: never as an admin.
    assert result.code in (0, 1), result
    assert_nothing_gained(pg, attacker, victim_role)
    with pytest.raises(psycopg.OperationalError), tenants.connect(attacker, victim_role):
        pass
    assert admin_runs(pg, attacker, "public.ran") == [], "the dump's code ran as an admin"
    with tenants.connect(attacker) as conn:
        sessions = {r[0] for r in conn.execute("SELECT DISTINCT sess FROM public.ran").fetchall()}
    assert attacker in sessions and sessions <= {attacker, "legacy_user"}, sessions


def test_the_verification_counts_a_forced_policy_table_as_the_tenant(
    tenants: Tenants,  # noqa: F811
    pg: Server,
    legacy: Legacy,
    hostile_source: Callable[[str, str], str],
    tmp_path: Path,
) -> None:
    """A second copy over the first, ``--into-nonempty --clean``: the count of the forced policy's table runs
    the policy, as the tenant."""
    attacker, victim_role = tenants.name("grafana"), tenants.name("victim")
    copy = hostile_copy(tenants, legacy, hostile_source(attacker, victim_role), attacker, victim_role, tmp_path)
    assert copy().code in (0, 1)
    again = copy("--into-nonempty", "--clean")
    assert again.code in (0, 1), again
    assert_nothing_gained(pg, attacker, victim_role)
    assert admin_runs(pg, attacker, "public.ran") == []


def hostile_copy(tenants: Tenants, legacy: Legacy, source: str, attacker: str, victim: str,  # noqa: F811
                 tmp_path: Path) -> Callable[..., Result]:  # fmt: skip
    """Both tenants made; returns a copy-tenant run from ``source`` into ``attacker`` (extra flags appended)."""
    ok(tenants.ensure(victim))  # the role the dump tries to join
    ok(tenants.ensure(attacker))
    (tmp_path / "legacy.pw").write_text(legacy.server.password)
    tenants.cli.secrets.add(legacy.server.password)
    args = ["copy-tenant", attacker, "--from-dsn", source, "--from-password-file", str(tmp_path / "legacy.pw"),
            "--dsn", tenants.pg.conninfo(tenants.admin), "--tenant-password-file", tenants.password_file(attacker),
            "--output", "json"]  # fmt: skip
    env = {"PGPASSWORD": tenants.pg.password_of(tenants.admin)}
    return lambda *extra: tenants.cli(*args, *extra, env=env, timeout=300)


def test_a_tenant_holding_its_database_row_fails_alone_naming_itself(tenants: Tenants,  # noqa: F811
                                                                      pg: Server) -> None:  # fmt: skip
    """The tenant makes drift for the next run to repair (CONNECT for PUBLIC) and holds its own pg_database row
    in an open transaction: that run fails after --lock-wait naming the holder, a run for another tenant
    waiting on the provisioning lock meanwhile finishes, and once the holder commits, the repair is retried."""
    attacker, other = tenants.name("policyreporter"), tenants.name("argo")
    ok(tenants.ensure(attacker))
    env = {"PGPASSWORD": pg.password_of(tenants.admin)}

    def run(name: str, *extra: str) -> Any:
        return tenants.cli.start("ensure-tenant", name, "--dsn", pg.conninfo(tenants.admin), "--tenant-password-file",
                                 tenants.password_file(name), "--output", "json", *extra, env=env)  # fmt: skip

    with tenants.connect(attacker) as holder:
        holder.execute(f"GRANT CONNECT ON DATABASE {attacker} TO PUBLIC")
        pid = holder.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        holder.execute("BEGIN")
        holder.execute(f"ALTER DATABASE {attacker} CONNECTION LIMIT 50")
        blocked = run(attacker, "--lock-wait", "2")
        time.sleep(0.5)
        bystander = run(other)
        failed, finished = blocked.finish(), bystander.finish()
        assert failed.code == 1, failed
        [error] = [e for e in failed.events() if e["level"] == "error"]
        assert f"pid {pid} (role {attacker}" in error["error"] and "pg_terminate_backend" in error["hint"], error
        assert finished.code == 0 and finished.result()["action"] == "created", finished
        retried = run(attacker, "--lock-wait", "20")
        time.sleep(1.5)
        holder.execute("COMMIT")  # while the run waits: its REVOKE finds the row updated, and is run again
        repaired = ok(retried.finish())
    assert any("revoked CONNECT" in change for change in repaired["changes"]), repaired
    assert pg.admin_sql("SELECT has_database_privilege('public', %s, 'CONNECT')", attacker) == [(False,)]
