"""``sharedpg ensure-tenant`` on real PostgreSQL 15/16/18, as a superuser admin and as a CREATEROLE CREATEDB
admin: what each tenant can and cannot do afterwards, re-runs, drift, concurrency, and refusals."""

from __future__ import annotations

import secrets
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

from tests.conftest import Cli, Result
from tests.fix_proxy import Proxy
from tests.fix_servers import MANAGED_ADMIN, Server

SEED_APPS = ("backstage", "sonarqube", "argo_workflows", "policyreporter", "grafana", "dex")


class Tenants:
    """Runs ensure-tenant as one admin, remembers tenant passwords, and drops what it made."""

    def __init__(self, cli: Cli, pg: Server, admin: str, tmp_path: Path):
        self.cli, self.pg, self.admin, self.tmp = cli, pg, admin, tmp_path
        self.passwords: dict[str, str] = {}
        self.suffix = secrets.token_hex(3)

    def name(self, app: str) -> str:
        return f"{app}_{self.suffix}"

    def password_file(self, tenant: str, password: str | None = None) -> str:
        password = password or self.passwords.get(tenant) or secrets.token_urlsafe(24)
        self.passwords[tenant] = password
        self.cli.secrets.add(password)
        path = self.tmp / f"{tenant}.pw"
        path.write_text(password + "\n")
        return str(path)

    def ensure(self, tenant: str, *extra: str, password: str | None = None, output: str = "json") -> Result:
        args = ["ensure-tenant", tenant, "--dsn", self.pg.conninfo(self.admin), "--output", output]
        if "--tenant-password-file" not in extra:
            args += ["--tenant-password-file", self.password_file(tenant, password)]
        return self.cli(*args, *extra, env={"PGPASSWORD": self.pg.password_of(self.admin)})

    def connect(self, tenant: str, dbname: str | None = None) -> psycopg.Connection[Any]:
        return psycopg.connect(self.pg.conninfo(tenant, dbname or tenant), password=self.passwords[tenant],
                               autocommit=True)  # fmt: skip


@pytest.fixture
def tenants(cli: Cli, pg: Server, admin: str, tmp_path: Path) -> Iterator[Tenants]:
    made = Tenants(cli, pg, admin, tmp_path)
    yield made
    pg.drop_tenants([t for t in made.passwords if t.endswith(made.suffix)])  # never "postgres" & co.


def ok(result: Result) -> dict[str, Any]:
    assert result.code == 0, result
    return result.result()


def test_six_seed_tenants_each_own_their_database(tenants: Tenants) -> None:
    names = [tenants.name(app) for app in SEED_APPS]
    for name in names:
        report = ok(tenants.ensure(name, "--connection-limit", "10"))
        assert report["action"] == "created"
        assert report["admin_kind"] == ("superuser" if tenants.admin == "postgres" else "createrole_createdb")
    for name in names:
        with tenants.connect(name) as conn:
            conn.execute("CREATE TABLE public.first_start (id int)")  # owns public through pg_database_owner (15+)
            assert conn.execute("SELECT current_database(), current_user").fetchone() == (name, name)


def test_other_tenants_cannot_connect_and_nobody_can_create_roles_or_databases(tenants: Tenants) -> None:
    a, b = tenants.name("grafana"), tenants.name("dex")
    ok(tenants.ensure(a))
    ok(tenants.ensure(b))
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        tenants.connect(b, dbname=a)
    with tenants.connect(a) as conn:
        for statement in ("CREATE ROLE intruder", "CREATE DATABASE intruder"):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(statement)


def test_connection_limit_is_enforced_by_the_server(tenants: Tenants) -> None:
    name = tenants.name("policyreporter")
    ok(tenants.ensure(name, "--connection-limit", "2"))
    with (
        tenants.connect(name),
        tenants.connect(name),
        pytest.raises(psycopg.OperationalError, match="too many connections for role"),
    ):
        tenants.connect(name)


def test_rerun_is_unchanged_and_runs_no_ddl(tenants: Tenants, pg: Server) -> None:
    name = tenants.name("sonarqube")
    args = ("--connection-limit", "20", "--set", "statement_timeout=15min")
    ok(tenants.ensure(name, *args))
    before = len(pg.server_log())
    again = ok(tenants.ensure(name, *args))
    assert again["action"] == "unchanged" and again["changes"] == []
    ddl = [line for line in pg.server_log()[before:].splitlines() if "statement:" in line]
    assert ddl == []
    text = tenants.ensure(name, *args, output="text")
    assert text.stdout == f"{name}: unchanged (PostgreSQL {again['server_version']}, {again['admin_kind']} admin)\n"


def test_plaintext_password_reaches_neither_output_nor_server_log(tenants: Tenants, pg: Server) -> None:
    name = tenants.name("backstage")
    ok(tenants.ensure(name))  # the cli fixture scans every output for the password
    ok(tenants.ensure(name, password="a-rotated-password-123"))
    assert "statement: CREATE ROLE" in pg.server_log()  # DDL is logged: the check below means something
    for password in tenants.passwords.values():
        assert password not in pg.server_log()
    with tenants.connect(name):  # and the rotated password is the one that works
        pass


def test_drift_is_repaired_in_one_run_field_by_field(tenants: Tenants, pg: Server) -> None:
    name = tenants.name("argo_workflows")
    ok(tenants.ensure(name, "--connection-limit", "10"))
    role, database = sql.Identifier(name), sql.Identifier(name)
    other_owner = sql.Identifier(tenants.admin)  # someone else the admin may take it from
    pg.admin_sql(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO PUBLIC").format(database))
    pg.admin_sql(sql.SQL("ALTER ROLE {} CONNECTION LIMIT 99 CREATEDB PASSWORD 'changed-by-hand'").format(role))
    pg.admin_sql(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(database, other_owner))
    report = ok(tenants.ensure(name, "--connection-limit", "10", "--adopt-database-from", tenants.admin))
    changes = "\n".join(report["changes"])
    assert report["action"] == "updated"
    assert "NOCREATEDB" in changes and "CONNECTION LIMIT 10 (was 99)" in changes
    assert "set the password" in changes
    assert f"changed the owner of database {name} from {tenants.admin} to {name}" in changes
    assert "revoked CONNECT, TEMPORARY" in changes
    assert ok(tenants.ensure(name, "--connection-limit", "10"))["action"] == "unchanged"
    with tenants.connect(name) as conn:
        assert conn.execute(
            "SELECT rolcreatedb, rolconnlimit FROM pg_roles WHERE rolname = current_user"
        ).fetchone() == (False, 10)


def test_eight_concurrent_runs_for_one_tenant_all_succeed(tenants: Tenants) -> None:
    name = tenants.name("grafana")
    pw = tenants.password_file(name)
    args = ["ensure-tenant", name, "--dsn", tenants.pg.conninfo(tenants.admin), "--tenant-password-file", pw,
            "--connection-limit", "10", "--set", "statement_timeout=60s", "--output", "json"]  # fmt: skip
    env = {"PGPASSWORD": tenants.pg.password_of(tenants.admin)}
    runs = [tenants.cli.start(*args, env=env) for _ in range(8)]
    results = [run.finish(timeout=120) for run in runs]
    assert [r.code for r in results] == [0] * 8, [r.stderr for r in results if r.code]
    actions = sorted(r.result()["action"] for r in results)
    assert actions == ["created"] + ["unchanged"] * 7


def test_role_created_by_a_superuser_is_refused_on_16_for_a_managed_admin(tenants: Tenants, pg: Server) -> None:
    if tenants.admin != MANAGED_ADMIN:
        pytest.skip("a superuser admin may manage any role")
    name = tenants.name("backstage")
    tenants.password_file(name)
    pg.admin_sql(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    result = tenants.ensure(name)
    if pg.major >= 16:
        assert result.code == 3, result
        assert f"GRANT {name} TO {MANAGED_ADMIN} WITH ADMIN OPTION" in result.stderr
    else:
        assert ok(result)["action"] == "created"  # 15: CREATEROLE covers any non-superuser role


def test_existing_superuser_role_is_refused_not_demoted(tenants: Tenants, pg: Server) -> None:
    name = tenants.name("dex")
    tenants.password_file(name)
    pg.admin_sql(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER").format(sql.Identifier(name)))
    result = tenants.ensure(name)
    assert result.code == 3, result
    assert "SUPERUSER" in result.stderr and f"ALTER ROLE {name} NOSUPERUSER" in result.stderr
    assert pg.admin_sql("SELECT rolsuper FROM pg_roles WHERE rolname = %s", name) == [(True,)]


@pytest.mark.parametrize("bad", ['x"; drop table y; --', "Grafana", "pg_stats", "postgres", "template1", "a" * 64])
def test_invalid_reserved_and_injection_names_create_nothing(tenants: Tenants, pg: Server, bad: str) -> None:
    roles_before = pg.admin_sql("SELECT count(*) FROM pg_roles")
    result = tenants.ensure(bad)
    assert result.code == 2, result
    assert len(result.log_lines) == 1
    assert pg.admin_sql("SELECT count(*) FROM pg_roles") == roles_before


def test_admin_own_name_is_refused(tenants: Tenants) -> None:
    result = tenants.ensure(tenants.admin)
    assert result.code == 2, result
    assert "admin's own role" in result.stderr or "reserved by PostgreSQL" in result.stderr


def test_dry_run_prints_the_sql_and_changes_nothing(tenants: Tenants, pg: Server) -> None:
    name = tenants.name("sonarqube")
    result = tenants.ensure(name, "--dry-run", "--set", "statement_timeout=15min", output="text")
    assert result.code == 0, result
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f'CREATE ROLE "{name}" LOGIN NOSUPERUSER') and "PASSWORD '<redacted>'" in lines[0]
    assert any(line.startswith(f'CREATE DATABASE "{name}" OWNER "{name}" TEMPLATE template0') for line in lines)
    assert any("REVOKE CONNECT, TEMPORARY" in line for line in lines)
    assert pg.admin_sql("SELECT count(*) FROM pg_roles WHERE rolname = %s", name) == [(0,)]


def test_role_settings_apply_to_tenant_sessions(tenants: Tenants) -> None:
    name = tenants.name("sonarqube")
    ok(tenants.ensure(name, "--set", "statement_timeout=15min", "--set", "lock_timeout=5s"))
    with tenants.connect(name) as conn:
        assert conn.execute(
            "SELECT current_setting('statement_timeout'), current_setting('lock_timeout')"
        ).fetchone() == (
            "15min",
            "5s",
        )


def test_setting_newer_than_the_server_names_the_version(tenants: Tenants, pg: Server) -> None:
    name = tenants.name("argo_workflows")
    result = tenants.ensure(name, "--set", "transaction_timeout=10min")
    if pg.major >= 17:
        ok(result)
    else:
        assert result.code == 2, result
        assert f"PostgreSQL {pg.major}." in result.stderr and "transaction_timeout" in result.stderr


def test_missing_extension_is_refused_before_anything_is_created(tenants: Tenants, pg: Server) -> None:
    name = tenants.name("grafana")
    result = tenants.ensure(name, "--extension", "no_such_extension")
    assert result.code == 3 and "no_such_extension" in result.stderr, result
    assert pg.admin_sql("SELECT count(*) FROM pg_roles WHERE rolname = %s", name) == [(0,)]


def test_available_extension_is_created_once(tenants: Tenants, pg: Server) -> None:
    rows = pg.admin_sql("SELECT DISTINCT name, trusted FROM pg_available_extension_versions WHERE name <> 'plpgsql'")
    trusted = sorted(name for name, is_trusted in rows if is_trusted)
    untrusted = sorted(name for name, is_trusted in rows if not is_trusted)
    name = tenants.name("backstage")
    if trusted:
        assert "created extension" in "\n".join(ok(tenants.ensure(name, "--extension", trusted[0]))["changes"])
        assert ok(tenants.ensure(name, "--extension", trusted[0]))["action"] == "unchanged"
    if untrusted and tenants.admin == MANAGED_ADMIN:  # only a superuser may create an untrusted one
        result = tenants.ensure(tenants.name("dex"), "--extension", untrusted[0])
        assert result.code == 3 and "superuser" in result.stderr.lower(), result


def test_existing_database_with_another_encoding_is_refused(tenants: Tenants, pg: Server) -> None:
    name = tenants.name("sonarqube")
    tenants.password_file(name)
    pg.admin_sql(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'LATIN1'").format(sql.Identifier(name)))
    result = tenants.ensure(name)
    assert result.code == 3 and "LATIN1" in result.stderr and "dump" in result.stderr, result


def test_pre_15_public_schema_is_locked_down_or_reported(tenants: Tenants, pg: Server) -> None:
    """An adopted database whose public schema is as before 15: owned by the superuser, CREATE for PUBLIC."""
    name = tenants.name("policyreporter")
    tenants.password_file(name)
    pg.admin_sql(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    with pg.connect(dbname=name) as conn:
        conn.execute("ALTER SCHEMA public OWNER TO postgres")
        conn.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
    if tenants.admin != "postgres":
        pg.admin_sql(
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(name), sql.Identifier(tenants.admin))
        )
    report = ok(tenants.ensure(name, "--adopt-database-from", tenants.admin))
    if tenants.admin == "postgres":
        assert any("revoked CREATE on schema public" in c for c in report["changes"])
        with tenants.connect(name) as conn:
            owner = conn.execute(
                "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'"
            ).fetchone()
            assert owner == (name,)
    else:
        assert any("schema public" in w and "isolation holds" in w for w in report["warnings"])


APP_FIRST_START: dict[str, Callable[[psycopg.Connection[Any]], None]] = {}


def first_start(
    app: str,
) -> Callable[[Callable[[psycopg.Connection[Any]], None]], Callable[[psycopg.Connection[Any]], None]]:
    def register(fn: Callable[[psycopg.Connection[Any]], None]) -> Callable[[psycopg.Connection[Any]], None]:
        APP_FIRST_START[app] = fn
        return fn

    return register


@first_start("argo_workflows")
def _argo(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_history (schema_version int NOT NULL)")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS argo_archived_workflows (clustername varchar(64) NOT NULL, "
        "uid varchar(128) NOT NULL, instanceid varchar(64), name varchar(256), namespace varchar(256), "
        "workflow json, startedat timestamp, finishedat timestamp, PRIMARY KEY (clustername, uid))"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS argo_archived_workflows_labels (clustername varchar(64) NOT NULL, "
        "uid varchar(128) NOT NULL, name varchar(317) NOT NULL, value varchar(63) NOT NULL, "
        "PRIMARY KEY (clustername, uid, name), FOREIGN KEY (clustername, uid) "
        "REFERENCES argo_archived_workflows(clustername, uid) ON DELETE CASCADE)"
    )
    conn.execute("CREATE INDEX argo_archived_workflows_i1 ON argo_archived_workflows (clustername, namespace)")


@first_start("grafana")
def _grafana(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS migration_log (id SERIAL PRIMARY KEY, migration_id VARCHAR(255) NOT NULL, "
        "sql TEXT NOT NULL, success BOOL NOT NULL, error TEXT NOT NULL, timestamp TIMESTAMP NOT NULL)"
    )
    conn.execute("CREATE TABLE dashboard (id BIGSERIAL PRIMARY KEY, data TEXT NOT NULL)")


@first_start("backstage")
def _backstage(conn: psycopg.Connection[Any]) -> None:
    # pluginDivisionMode: schema, ensureExists: false: one schema per plugin in the tenant's own database
    for plugin in ("catalog", "scaffolder", "auth"):
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(plugin)))
        conn.execute(
            sql.SQL("CREATE TABLE {}.knex_migrations (id serial PRIMARY KEY, name text)").format(sql.Identifier(plugin))
        )


@first_start("sonarqube")
def _sonarqube(conn: psycopg.Connection[Any]) -> None:
    assert conn.execute(
        "SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()"
    ).fetchone() == ("UTF8",)
    conn.execute("CREATE TABLE schema_migrations (version varchar(255) NOT NULL)")
    conn.execute("CREATE SEQUENCE projects_seq")


@first_start("dex")
def _dex(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE migrations (num integer NOT NULL, at timestamptz NOT NULL)")
    conn.execute("CREATE TABLE client (id text NOT NULL PRIMARY KEY, secret text NOT NULL)")


@first_start("policyreporter")
def _policyreporter(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE policy_report (id text PRIMARY KEY, name text, created timestamptz)")
    conn.execute("CREATE TEMP TABLE scratch (id int)")  # the owner keeps TEMPORARY


@pytest.mark.parametrize("app", SEED_APPS)
def test_each_app_first_start_ddl_works_as_its_tenant(tenants: Tenants, app: str) -> None:
    name = tenants.name(app)
    ok(tenants.ensure(name, "--set", "statement_timeout=15min"))
    with tenants.connect(name) as conn:
        APP_FIRST_START[app](conn)


@pytest.mark.slow
def test_a_server_that_never_answers_is_bounded_by_attempt_timeout(cli: Cli, pg: Server, proxy: Proxy,
                                                                   unique_name: str) -> None:  # fmt: skip
    proxy.blackhole()  # accepts TCP, never answers
    started = time.monotonic()
    result = cli("ensure-tenant", unique_name, "--dsn", proxy.conninfo(pg), "--attempt-timeout", "2",
                 env={"PGPASSWORD": pg.password}, timeout=60)  # fmt: skip
    assert result.code == 1, result
    assert time.monotonic() - started < 15, "the connect was not bounded"
    assert "--attempt-timeout" in result.stderr


def test_a_tenant_without_a_password_says_so_on_stdout_too(cli: Cli, pg: Server, unique_name: str) -> None:
    try:
        result = cli("ensure-tenant", unique_name, "--dsn", pg.conninfo(), env={"PGPASSWORD": pg.password})
        assert result.code == 0, result
        assert f"WARNING: role {unique_name} has no password" in result.stdout
    finally:
        pg.drop_tenants([unique_name])


# -- attacked: roles and databases that would break isolation (issue 13) -----------------------------------------


def _precreate(tenants: Tenants, name: str) -> None:
    """The role exists before sharedpg runs, made by the admin under test (so a CREATEROLE admin holds ADMIN on it)."""
    with psycopg.connect(tenants.pg.conninfo(tenants.admin), password=tenants.pg.password_of(tenants.admin),
                         autocommit=True) as conn:  # fmt: skip
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    tenants.password_file(name)


def _nothing_made(pg: Server, name: str) -> bool:
    return pg.admin_sql("SELECT count(*) FROM pg_database WHERE datname = %s", name) == [(0,)]


@pytest.mark.parametrize("predefined", ["pg_execute_server_program", "pg_read_server_files", "pg_read_all_data"])
def test_a_role_holding_a_dangerous_predefined_role_is_refused(tenants: Tenants, pg: Server, predefined: str) -> None:
    name = tenants.name("grafana")
    _precreate(tenants, name)
    pg.admin_sql(sql.SQL("GRANT {} TO {}").format(sql.Identifier(predefined), sql.Identifier(name)))
    result = tenants.ensure(name)
    assert result.code == 3, result
    assert f"it is a member of {predefined} (REVOKE {predefined} FROM {name})" in result.stderr
    assert _nothing_made(pg, name)
    again = tenants.ensure(name)
    assert again.code == 3, "a second run must not call it unchanged"


def test_a_role_that_others_inherit_from_or_that_holds_another_tenant_is_refused(tenants: Tenants, pg: Server) -> None:
    victim, thief, spy = tenants.name("dex"), tenants.name("grafana"), tenants.name("spy")
    ok(tenants.ensure(victim))
    _precreate(tenants, thief)
    pg.admin_sql(sql.SQL("GRANT {} TO {}").format(sql.Identifier(victim), sql.Identifier(thief)))
    pg.admin_sql(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(spy)))
    tenants.passwords[spy] = ""  # dropped with the others
    pg.admin_sql(sql.SQL("GRANT {} TO {}").format(sql.Identifier(thief), sql.Identifier(spy)))
    result = tenants.ensure(thief)
    assert result.code == 3, result
    assert f"it is a member of {victim} (REVOKE {victim} FROM {thief})" in result.stderr
    assert f"{spy} is a member of it (REVOKE {thief} FROM {spy})" in result.stderr
    assert _nothing_made(pg, thief)


def test_an_expired_password_is_repaired_not_called_unchanged(tenants: Tenants, pg: Server) -> None:
    name = tenants.name("sonarqube")
    ok(tenants.ensure(name))
    pg.admin_sql(sql.SQL("ALTER ROLE {} VALID UNTIL '2001-01-01'").format(sql.Identifier(name)))
    report = ok(tenants.ensure(name))
    assert report["action"] == "updated" and any("had expired" in c for c in report["changes"]), report
    with tenants.connect(name):
        pass


def test_another_tenants_database_is_never_taken_over(tenants: Tenants, pg: Server) -> None:
    victim, thief = tenants.name("backstage"), tenants.name("thief")
    ok(tenants.ensure(victim))
    tenants.password_file(thief)
    for extra in ((), ("--adopt-database-from", victim)):
        result = tenants.ensure(thief, "--database", victim, *extra)
        assert result.code == 3, result
        assert ("another sharedpg tenant" if extra else f"--adopt-database-from {victim}") in result.stderr
    assert pg.admin_sql("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", victim) == [(victim,)]
    with tenants.connect(victim):
        pass


def test_extra_connect_grants_on_the_tenants_database_are_revoked(tenants: Tenants, pg: Server) -> None:
    name, other = tenants.name("policyreporter"), tenants.name("other")
    ok(tenants.ensure(name))
    pg.admin_sql(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(other)))
    tenants.passwords[other] = ""
    pg.admin_sql(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(sql.Identifier(name),
                                                                                  sql.Identifier(other)))  # fmt: skip
    report = ok(tenants.ensure(name))
    assert f"revoked CONNECT, TEMPORARY on database {name} from {other}" in report["changes"], report
    assert pg.admin_sql("SELECT has_database_privilege(%s, %s, 'CONNECT')", other, name) == [(False,)]
    assert ok(tenants.ensure(name))["action"] == "unchanged"


def test_a_tenant_cannot_reach_the_servers_files_or_programs(tenants: Tenants) -> None:
    name = tenants.name("argo_workflows")
    ok(tenants.ensure(name))
    with tenants.connect(name) as conn:
        for attack in ("COPY (SELECT 1) TO PROGRAM 'id'", "SELECT pg_read_file('/etc/passwd')",
                       "SELECT pg_ls_dir('.')", "COPY (SELECT 1) TO '/tmp/sharedpg-attack'"):  # fmt: skip
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(attack)


def test_a_list_setting_is_set_item_by_item(tenants: Tenants, pg: Server) -> None:
    name = tenants.name("backstage")
    report = ok(tenants.ensure(name, "--set", "search_path=app, public"))
    config = pg.admin_sql("SELECT rolconfig FROM pg_roles WHERE rolname = %s", name)[0][0]
    assert "search_path=app, public" in config, config
    with tenants.connect(name) as conn:
        assert conn.execute("SELECT current_schemas(false) IS NOT NULL, current_setting('search_path')").fetchone() \
            == (True, "app, public")  # fmt: skip
    assert report["action"] == "created"
    assert ok(tenants.ensure(name, "--set", "search_path=app, public"))["action"] == "unchanged"


@pytest.mark.parametrize("name", ["evil\n", "evil\nx", "Evil"])
def test_a_name_that_would_slip_through_a_dollar_anchor_is_refused(cli: Cli, pg: Server, name: str) -> None:
    result = cli("ensure-tenant", name, "--dsn", pg.conninfo(), env={"PGPASSWORD": pg.password})
    assert result.code == 2, result
    assert pg.admin_sql("SELECT count(*) FROM pg_roles WHERE rolname = %s", name) == [(0,)]


def test_a_tenant_can_neither_hold_nor_reach_the_provisioning_lock(tenants: Tenants, pg: Server) -> None:
    from sharedpg_tools.tenant import LOCK_DATABASE, LOCK_KEY

    squatter, newcomer = tenants.name("grafana"), tenants.name("dex")
    ok(tenants.ensure(squatter))
    with psycopg.connect(pg.conninfo(squatter, "postgres"), password=tenants.passwords[squatter],
                         autocommit=True) as conn:  # fmt: skip
        conn.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])  # where the lock used to be
        assert ok(tenants.ensure(newcomer, "--lock-timeout", "3"))["action"] == "created"
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        psycopg.connect(pg.conninfo(squatter, LOCK_DATABASE), password=tenants.passwords[squatter]).close()


def test_runs_with_different_maintenance_databases_share_one_lock(tenants: Tenants) -> None:
    name = tenants.name("sonarqube")
    pw = tenants.password_file(name)
    env = {"PGPASSWORD": tenants.pg.password_of(tenants.admin)}
    args = ["ensure-tenant", name, "--dsn", tenants.pg.conninfo(tenants.admin), "--tenant-password-file", pw]
    runs = [tenants.cli.start(*args, "--maintenance-db", maintenance, "--output", "json", env=env)
            for maintenance in ("postgres", "template1", "postgres", "template1")]  # fmt: skip
    results = [run.finish(timeout=120) for run in runs]
    assert [r.code for r in results] == [0] * 4, [r.stderr for r in results if r.code]
    assert sorted(r.result()["action"] for r in results) == ["created", "unchanged", "unchanged", "unchanged"]


def _untouched(pg: Server, name: str) -> bool:
    return pg.admin_sql("SELECT (SELECT count(*) FROM pg_roles WHERE rolname = %s) + "
                        "(SELECT count(*) FROM pg_database WHERE datname = %s)", name, name) == [(0,)]  # fmt: skip


@pytest.mark.parametrize(("extra", "needle"), [
    (("--set", "statement_timeout=banana"), "statement_timeout=banana"),
    (("--set", "shared_buffers=1GB"), "cannot be set per role"),
    (("--set", "transaction_timeout=5s"), "no parameter 'transaction_timeout'"),
    (("--encoding", "BOGUS"), "'BOGUS' is not an encoding"),
    (("--set", "search_path=app, public", "--set", "work_mem=lots"), "work_mem=lots"),
])  # fmt: skip
def test_bad_input_found_by_the_server_is_refused_before_any_ddl(
    tenants: Tenants, pg: Server, extra: tuple[str, ...], needle: str
) -> None:
    if "transaction_timeout=5s" in extra and pg.major >= 17:
        pytest.skip("transaction_timeout exists from PostgreSQL 17")
    name = tenants.name("grafana")
    result = tenants.ensure(name, *extra)
    assert result.code == 2, result
    assert needle in result.stderr
    assert _untouched(pg, name), "a refused run left a role or database behind"


def test_a_refused_rerun_changes_nothing_of_an_existing_tenant(tenants: Tenants, pg: Server) -> None:
    name = tenants.name("dex")
    ok(tenants.ensure(name, "--connection-limit", "7"))
    result = tenants.ensure(name, "--connection-limit", "20", "--set", "statement_timeout=banana")
    assert result.code == 2, result
    assert pg.admin_sql("SELECT rolconnlimit FROM pg_roles WHERE rolname = %s", name) == [(7,)]


def test_an_existing_database_of_another_encoding_is_refused_before_the_role_is_made(tenants: Tenants,
                                                                                     pg: Server) -> None:  # fmt: skip
    name = tenants.name("argo_workflows")
    tenants.password_file(name)
    pg.admin_sql(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'LATIN1'").format(sql.Identifier(name)))
    result = tenants.ensure(name)
    assert result.code == 3 and "LATIN1" in result.stderr, result
    assert pg.admin_sql("SELECT count(*) FROM pg_roles WHERE rolname = %s", name) == [(0,)]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_run_finishes_the_tenant_then_says_what_was_made(tenants: Tenants, pg: Server,
                                                                      signum: int) -> None:  # fmt: skip
    name = tenants.name("backstage")
    args = ["ensure-tenant", name, "--dsn", pg.conninfo(tenants.admin), "--tenant-password-file",
            tenants.password_file(name)]  # fmt: skip
    running = tenants.cli.start(*args, env={"PGPASSWORD": pg.password_of(tenants.admin)})
    deadline = time.monotonic() + 30
    while pg.admin_sql("SELECT count(*) FROM pg_roles WHERE rolname = %s", name) == [(0,)]:
        assert time.monotonic() < deadline, "the role never appeared"
        time.sleep(0.005)
    running.proc.send_signal(signum)  # the role exists: the run is between its statements
    result = running.finish(timeout=60)
    assert result.code == 128 + signum, result
    assert f"made before the failure: created role {name}" in result.stdout
    assert f"created database {name} owned by {name}" in result.stdout, "the tenant in progress is finished"
    assert pg.admin_sql("SELECT has_database_privilege('public', %s, 'CONNECT')", name) == [(False,)]
    with tenants.connect(name):
        pass
