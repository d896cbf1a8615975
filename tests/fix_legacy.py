"""An app's old per-app server for copy-tenant: a PostgreSQL 15 with its own user and a few thousand rows."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

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
