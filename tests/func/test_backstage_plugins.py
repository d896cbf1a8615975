"""copy-tenant --plugins: Backstage's database per plugin on an old server (its own PostgreSQL 15, whose user
could create databases, as the chart's bundled one allowed) into a schema per plugin in the tenant's one
database, on real PostgreSQL 15/16/18; verified table by table and sequence by sequence; nothing half-made."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.conftest import Cli, Result
from tests.fix_servers import Server, start_local
from tests.fix_tenant import STRICTER_ADMIN, Tenant, made_tenant

OLD_USER = "bn_backstage"
# What Backstage's knex migrations leave in each plugin's database (abridged): a migrations table, a lock,
# the plugin's own tables with serial keys, all in public.
PLUGIN_TABLES = {
    "catalog": "CREATE TABLE final_entities (entity_id text PRIMARY KEY, final_entity text, hash text);"
               "CREATE TABLE refresh_state (entity_id text PRIMARY KEY, entity_ref text UNIQUE, "
               "unprocessed_entity text, next_update_at timestamptz DEFAULT now());"
               "INSERT INTO final_entities SELECT 'e' || g, '{\"kind\":\"Component\",\"n\":' || g || '}', md5(g::text) "
               "FROM generate_series(1, 500) g;"
               "INSERT INTO refresh_state (entity_id, entity_ref) SELECT 'e' || g, 'component:default/c' || g "
               "FROM generate_series(1, 500) g;",
    "auth": "CREATE TABLE signing_keys (kid text PRIMARY KEY, key text NOT NULL, created_at timestamptz DEFAULT now());"
            "INSERT INTO signing_keys (kid, key) VALUES ('k1', '{\"kty\":\"EC\"}');",
    "search": "CREATE TABLE documents (id bigserial PRIMARY KEY, type text, document jsonb);"
              "INSERT INTO documents (type, document) SELECT 'software-catalog', jsonb_build_object('title', 'é' || g) "
              "FROM generate_series(1, 50) g;",
}  # fmt: skip


class OldBackstage:
    def __init__(self, server: Server):
        self.server, self.password = server, secrets.token_urlsafe(16)
        server.admin_sql(
            sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                sql.Identifier(OLD_USER), sql.Literal(self.password)
            )
        )
        for plugin, ddl in PLUGIN_TABLES.items():
            self.add(plugin, ddl)

    def add(self, plugin: str, ddl: str, database: str | None = None) -> None:
        database = database or f"backstage_plugin_{plugin}"
        self.server.admin_sql(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database),
                                                                          sql.Identifier(OLD_USER)))  # fmt: skip
        with psycopg.connect(self.server.conninfo(OLD_USER, database), password=self.password, autocommit=True) as c:
            c.execute("CREATE TABLE knex_migrations (id serial PRIMARY KEY, name varchar(255), batch int, "
                      "migration_time timestamptz); CREATE TABLE knex_migrations_lock (index serial PRIMARY KEY, "
                      "is_locked int); INSERT INTO knex_migrations_lock (is_locked) VALUES (0);")  # fmt: skip
            c.execute(sql.SQL("INSERT INTO knex_migrations (name, batch, migration_time) SELECT {} || g || '.js', 1, "
                              "now() FROM generate_series(1, 12) g").format(sql.Literal(f"{plugin}_")))  # fmt: skip
            c.execute(ddl.encode())

    @property
    def dsn(self) -> str:
        return f"host={self.server.host} port={self.server.port} user={OLD_USER}"


@pytest.fixture(scope="module")
def old() -> Iterator[OldBackstage]:
    server = start_local(15)
    yield OldBackstage(server)
    server.local.stop()


@pytest.fixture
def tenant(cli: Cli, pg: Server, admin: str, tmp_path: Path) -> Iterator[Tenant]:
    with made_tenant(cli, pg, admin, tmp_path, "backstage") as made:
        with made.connect() as conn:  # the tenant's own public holds something of its own: it must survive
            conn.execute("CREATE TABLE public.keep_me (id int); INSERT INTO public.keep_me VALUES (42)")
        yield made


def run(cli: Cli, old: OldBackstage, tenant: Tenant, tmp_path: Path, plugins: str, *extra: str) -> Result:
    pw = tmp_path / "old.pw"
    pw.write_text(old.password)
    cli.secrets.add(old.password)
    return cli("copy-tenant", tenant.name, "--from-dsn", old.dsn, "--from-password-file", str(pw), "--plugins",
               plugins, "--dsn", tenant.pg.conninfo(), "--tenant-password-file", str(tenant.pwfile), "--output",
               "json", *extra, env={"PGPASSWORD": tenant.pg.password}, timeout=300)  # fmt: skip


def untouched(tenant: Tenant) -> None:
    assert tenant.schemas() == {"public"}, tenant.schemas()
    with tenant.connect() as conn:
        assert conn.execute("SELECT id FROM public.keep_me").fetchall() == [(42,)]


def test_each_plugin_database_lands_in_its_schema_verified(cli: Cli, old: OldBackstage, tenant: Tenant,
                                                            tmp_path: Path) -> None:  # fmt: skip
    result = run(cli, old, tenant, tmp_path, "catalog,auth,search")
    assert result.code == 0, result
    report = result.result()
    assert report["mismatches"] == [] and report["plugins"]["catalog"] == {
        "database": "backstage_plugin_catalog",
        "schema": "catalog",
        "tables": 4,
        "rows": 500 + 500 + 12 + 1,
    }
    assert tenant.schemas() == {"public", "catalog", "auth", "search"}
    with tenant.connect() as conn:
        assert conn.execute("SELECT id FROM public.keep_me").fetchall() == [(42,)]  # the tenant's public intact
        assert conn.execute("SELECT count(*) FROM catalog.final_entities").fetchone() == (500,)
        assert conn.execute("SELECT count(*) FROM search.knex_migrations WHERE name LIKE 'search\\_%'").fetchone() == (
            12,
        )
        # Backstage in schema mode: its search_path is the plugin's schema, and the sequences continue
        conn.execute("SET search_path TO search")
        assert conn.execute("INSERT INTO documents (type) VALUES ('x') RETURNING id").fetchone() == (51,)
        assert conn.execute("INSERT INTO knex_migrations (name) VALUES ('n') RETURNING id").fetchone() == (13,)
        owners = conn.execute(
            "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c JOIN pg_namespace n ON "
            "n.oid = c.relnamespace WHERE n.nspname IN ('catalog', 'auth', 'search')"
        ).fetchall()
        assert owners == [(tenant.name,)]
    again = run(cli, old, tenant, tmp_path, "catalog")  # a second run never copies over what is there
    assert again.code == 3 and "catalog (" in again.result()["error"], again


@STRICTER_ADMIN
def test_a_target_schema_that_is_not_empty_is_refused(cli: Cli, old: OldBackstage, tenant: Tenant,
                                                      tmp_path: Path) -> None:  # fmt: skip
    with tenant.connect() as conn:
        conn.execute("CREATE SCHEMA auth; CREATE TABLE auth.signing_keys (kid text)")
        conn.execute("CREATE SCHEMA search")  # empty, as Backstage's ensureSchemaExists leaves it: allowed
    result = run(cli, old, tenant, tmp_path, "catalog,auth,search")
    assert result.code == 3 and "auth (" in result.result()["error"] and "search" not in result.result()["error"]
    assert tenant.schemas() == {"public", "auth", "search"}


@STRICTER_ADMIN
@pytest.mark.parametrize(("plugins", "says"), [
    ("catalog,nosuch", "database backstage_plugin_nosuch does not exist"),
    ("catalog,auth=gone_db", "database gone_db does not exist"),
])  # fmt: skip
def test_a_plugin_database_missing_is_refused_before_anything(
    cli: Cli, old: OldBackstage, tenant: Tenant, tmp_path: Path, plugins: str, says: str
) -> None:
    result = run(cli, old, tenant, tmp_path, plugins)
    assert result.code == 3 and says in result.result()["error"], result
    untouched(tenant)


@STRICTER_ADMIN
def test_a_failure_midway_leaves_nothing_half_made(cli: Cli, old: OldBackstage, tenant: Tenant,
                                                   tmp_path: Path) -> None:  # fmt: skip
    """The second plugin's restore fails (it needs an extension the tenant may not create): the first plugin's
    schema is dropped again and public is the tenant's own."""
    if "backstage_plugin_broken" not in {r[0] for r in old.server.admin_sql("SELECT datname FROM pg_database")}:
        old.add("broken", "CREATE TABLE t (id int)")
        with old.server.connect(dbname="backstage_plugin_broken") as conn:  # the old server's superuser
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    result = run(cli, old, tenant, tmp_path, "catalog,broken")
    assert result.code == 1 and "pg_restore failed" in result.result()["error"], result
    untouched(tenant)


@STRICTER_ADMIN
def test_a_run_that_died_between_the_renames_is_repaired_first(cli: Cli, old: OldBackstage, tenant: Tenant,
                                                               tmp_path: Path) -> None:  # fmt: skip
    with tenant.connect() as conn:  # as a run killed right after setting public aside leaves it
        conn.execute("ALTER SCHEMA public RENAME TO sharedpg_public_held; CREATE SCHEMA public")
    result = run(cli, old, tenant, tmp_path, "auth")
    assert result.code == 0, result
    assert any(e.get("event") == "repaired" for e in result.events()), result
    assert tenant.schemas() == {"public", "auth"}
    with tenant.connect() as conn:
        assert conn.execute("SELECT id FROM public.keep_me").fetchall() == [(42,)]


@STRICTER_ADMIN
def test_bad_plugin_input_is_a_usage_error(cli: Cli, old: OldBackstage, tenant: Tenant, tmp_path: Path) -> None:
    for plugins, extra, says in (("catalog,catalog", [], "names a plugin twice"), ("x" * 70, [], "63 bytes"),
                                 ("catalog", ["--into-nonempty"], "must be empty")):  # fmt: skip
        result = run(cli, old, tenant, tmp_path, plugins, *extra)
        assert result.code == 2 and says in result.stderr and len(result.log_lines) == 1, result
    pw = tmp_path / "old.pw"
    named = cli("copy-tenant", tenant.name, "--from-dsn", f"{old.dsn} dbname=backstage_plugin_catalog",
                "--from-password-file", str(pw), "--plugins", "catalog", "--dsn", tenant.pg.conninfo(),
                "--tenant-password-file", str(tenant.pwfile), env={"PGPASSWORD": tenant.pg.password})  # fmt: skip
    assert named.code == 2 and "drop dbname" in named.stderr, named
    untouched(tenant)
