"""An app's old per-app server for copy-tenant: a PostgreSQL 15 with its own user and a few thousand rows."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql

from tests.fix_servers import Server, start_local

LEGACY_DB, LEGACY_USER = "legacy_app", "legacy_user"
SCHEMA = """
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, note text);
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers (id),
                     total numeric(10, 2), created timestamptz DEFAULT now());
CREATE INDEX orders_customer ON orders (customer_id);
CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100;
CREATE TABLE blobs (id int PRIMARY KEY, data bytea);
INSERT INTO customers (name, note) SELECT 'cliente ' || g, 'ñandú 北京 ' || g FROM generate_series(1, 2000) g;
INSERT INTO orders (customer_id, total) SELECT (g % 2000) + 1, g * 1.5 FROM generate_series(1, 5000) g;
INSERT INTO blobs SELECT 1, decode(string_agg(md5(g::text), ''), 'hex') FROM generate_series(1, 31250) g;
"""
ROWS = 2000 + 5000 + 1


class Legacy:
    """The app's old server: a PostgreSQL 15 with its own user and a few thousand rows."""

    def __init__(self, server: Server):
        self.server = server
        self.password = secrets.token_urlsafe(16)
        server.admin_sql(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(LEGACY_USER),
                                                                          sql.Literal(self.password)))  # fmt: skip
        server.admin_sql(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(LEGACY_DB), sql.Identifier(LEGACY_USER))
        )
        with psycopg.connect(server.conninfo(LEGACY_USER, LEGACY_DB), password=self.password, autocommit=True) as conn:
            conn.execute(SCHEMA)

    @property
    def dsn(self) -> str:
        return f"host={self.server.host} port={self.server.port} user={LEGACY_USER} dbname={LEGACY_DB}"


@pytest.fixture(scope="module")
def legacy() -> Iterator[Legacy]:
    server = start_local(15)
    yield Legacy(server)
    server.local.stop()


def sonar_db(legacy: Legacy, password: str) -> Callable[[], None]:
    """The old SonarQube server's database as the chart's bundled PostgreSQL named it; returns its cleanup."""
    legacy.server.admin_sql(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier("sonarUser"),
                                                                            sql.Literal(password)))  # fmt: skip
    legacy.server.admin_sql('CREATE DATABASE "sonarDB" OWNER "sonarUser"')
    with psycopg.connect(legacy.server.conninfo("sonarUser", "sonarDB"), password=password) as conn:
        conn.execute("CREATE TABLE projects AS SELECT g AS id, 'p' || g AS kee FROM generate_series(1, 300) g")

    def drop() -> None:
        legacy.server.admin_sql('DROP DATABASE IF EXISTS "sonarDB" WITH (FORCE)')
        legacy.server.admin_sql('DROP ROLE IF EXISTS "sonarUser"')

    return drop


def backstage_dbs(legacy: Legacy, password: str) -> Callable[[], None]:
    """The old Backstage server's databases, one per plugin as its default database mode makes them."""
    legacy.server.admin_sql(
        sql.SQL("CREATE ROLE bn_backstage LOGIN CREATEDB PASSWORD {}").format(sql.Literal(password))
    )
    plugins = ("catalog", "auth", "scaffolder", "search")
    for plugin in plugins:
        legacy.server.admin_sql(f"CREATE DATABASE backstage_plugin_{plugin} OWNER bn_backstage")
        with psycopg.connect(legacy.server.conninfo("bn_backstage", f"backstage_plugin_{plugin}"),
                             password=password) as conn:  # fmt: skip
            conn.execute("CREATE TABLE knex_migrations (id serial PRIMARY KEY, name text)")
            conn.execute(f"CREATE TABLE {'tasks' if plugin == 'scaffolder' else 'things'} AS SELECT g AS id "
                         "FROM generate_series(1, 3) g")  # fmt: skip

    def drop() -> None:
        for plugin in plugins:
            legacy.server.admin_sql(f"DROP DATABASE IF EXISTS backstage_plugin_{plugin} WITH (FORCE)")
        legacy.server.admin_sql("DROP ROLE IF EXISTS bn_backstage")

    return drop
