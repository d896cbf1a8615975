"""The cutover of Backstage's data, proved with the real Backstage backend (catalog, auth, scaffolder and
search backends from the npm registry, pinned by tests/backstage/package-lock.json).

Started in its default database-per-plugin mode on an "old" PostgreSQL 15 whose user may create databases
(as the chart's bundled PostgreSQL allowed), Backstage makes ``backstage_plugin_<id>`` databases, runs its
migrations and ingests a catalog; stopped; ``copy-tenant --plugins`` moves those databases into schemas of
the tenant; Backstage is started again on the tenant with the database configuration the GitOps overlay
renders (read from the rendered chart, not a copy of it), where it serves the very same entities (same
uids: not re-ingested) and finds its migrations done.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

from tests.conftest import Cli
from tests.fix_backstage import Backstage, not_installed
from tests.fix_gitops import Renderer, row_fuses
from tests.fix_servers import Server, missing, start_local


@pytest.fixture(scope="module")
def installed() -> None:
    if reason := not_installed():
        missing(reason)


@pytest.fixture
def old_server() -> Iterator[tuple[Server, str]]:
    server = start_local(15)
    password = secrets.token_urlsafe(16)
    server.admin_sql(sql.SQL("CREATE ROLE bn_backstage LOGIN CREATEDB PASSWORD {}").format(sql.Literal(password)))
    yield server, password
    server.local.stop()


def rendered_database(renderer: Renderer) -> dict[str, Any]:
    """``backend.database`` exactly as the GitOps tree renders Backstage's app-config (its ConfigMap)."""
    tree = renderer.tree(row_fuses((True, False, False, False)))
    [config] = [p.obj for p in tree.of("ConfigMap", "backstage") if "app-config" in json.dumps(p.obj["data"])]
    return dict(yaml.safe_load(next(iter(config["data"].values())))["backend"]["database"])


def migrations(conn: psycopg.Connection[Any], schema: str) -> dict[str, int]:
    """Each knex migrations table of the schema (a plugin may keep several, under its own names) and its rows."""
    tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename LIKE '%%migrations' "
                          "ORDER BY 1", [schema]).fetchall()  # fmt: skip
    counts = {}
    for (table,) in tables:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))).fetchone()
        counts[str(table)] = int(row[0]) if row else 0
    return counts


@pytest.mark.parametrize("pg", ["pg18"], indirect=True)
@pytest.mark.parametrize("admin", ["managed"], indirect=True)
def test_backstage_serves_the_same_catalog_after_the_cutover(installed: None, cli: Cli, pg: Server, admin: str,
                                                             old_server: tuple[Server, str], renderer: Renderer,
                                                             tmp_path: Path) -> None:  # fmt: skip
    old, old_password = old_server
    cli.secrets |= {old_password}
    # 1. The old install: Backstage's defaults, one database per plugin, made by Backstage itself.
    first = Backstage(tmp_path, [{"backend": {"database": {"client": "pg", "connection": {
        "host": old.host, "port": old.port, "user": "bn_backstage", "password": old_password}}}}], {})  # fmt: skip
    try:
        first.ready()
        before = first.wait(lambda: len(e := first.entities()) == 9 and e)
    finally:
        first.stop()
    made = sorted(str(d).removeprefix("backstage_plugin_") for (d,) in old.admin_sql(
        "SELECT datname FROM pg_database WHERE datname LIKE 'backstage\\_plugin\\_%'"))  # fmt: skip
    assert {"catalog", "auth", "scaffolder", "search"} <= set(made), made
    ran: dict[str, dict[str, int]] = {}
    for plugin in made:
        with old.connect(dbname=f"backstage_plugin_{plugin}") as conn:
            ran[plugin] = migrations(conn, "public")
    assert sum(ran["catalog"].values()) > 10, ran
    # 2. The tenant, as bootstrap makes it, and the copy (the rendered config names the database backstage).
    pg.drop_tenants(["backstage"])
    password = secrets.token_urlsafe(16)
    pwfile, oldpw = tmp_path / "tenant.pw", tmp_path / "old.pw"
    pwfile.write_text(password)
    oldpw.write_text(old_password)
    cli.secrets.add(password)
    try:
        made_tenant = cli("ensure-tenant", "backstage", "--dsn", pg.conninfo(admin), "--tenant-password-file",
                          str(pwfile), env={"PGPASSWORD": pg.password_of(admin)})  # fmt: skip
        assert made_tenant.code == 0, made_tenant
        copied = cli("copy-tenant", "backstage", "--from-dsn", f"host={old.host} port={old.port} user=bn_backstage",
                     "--from-password-file", str(oldpw), "--plugins", ",".join(made), "--dsn", pg.conninfo(admin),
                     "--tenant-password-file", str(pwfile), "--output", "json",
                     env={"PGPASSWORD": pg.password_of(admin)}, timeout=300)  # fmt: skip
        assert copied.code == 0 and copied.result()["mismatches"] == [], copied
        # 3. Backstage on the tenant, configured by what the overlay renders (its ${POSTGRES_*} from the Secret).
        database = rendered_database(renderer)
        assert database["pluginDivisionMode"] == "schema" and database["connection"]["database"] == "backstage"
        second = Backstage(tmp_path, [{"backend": {"database": database}}], {
            "POSTGRES_HOST": pg.host, "POSTGRES_PORT": str(pg.port), "POSTGRES_USER": "backstage",
            "POSTGRES_PASSWORD": password})  # fmt: skip
        try:
            second.ready()
            after = second.entities()
        finally:
            second.stop()
        assert after == before, "the catalog is not the copied one (a re-ingest gives new uids)"
        with psycopg.connect(pg.conninfo("backstage", "backstage"), password=password) as conn:
            assert {p: migrations(conn, p) for p in made} == ran, "Backstage redid or added migrations"
            public = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
            assert public == (0,), "a plugin's tables landed in public"
    finally:
        pg.drop_tenants(["backstage"])
