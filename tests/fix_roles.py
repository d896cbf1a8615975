"""Login roles with their own databases, made by the superuser, and connections held open as them: the
sessions check-pool and serve-metrics count."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.conftest import Cli
from tests.fix_servers import Server


class Tenant:
    """A login role with its own database, made by the superuser, and connections opened as it."""

    def __init__(self, pg: Server, limit: int):
        self.pg = pg
        self.name = f"pool_{secrets.token_hex(4)}"
        self.password = secrets.token_urlsafe(16)
        role = sql.Identifier(self.name)
        pg.admin_sql(sql.SQL("CREATE ROLE {} LOGIN CONNECTION LIMIT {} PASSWORD {}").format(
            role, sql.SQL(str(limit)), sql.Literal(self.password)))  # fmt: skip
        pg.admin_sql(sql.SQL("CREATE DATABASE {} OWNER {}").format(role, role))
        self.stack = ExitStack()

    def connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.pg.conninfo(self.name, self.name), password=self.password)
        self.stack.enter_context(conn)
        return conn

    def open(self, idle: int = 0, in_transaction: int = 0, active: int = 0) -> None:
        for _ in range(idle):
            self.connect().commit()
        for _ in range(in_transaction):
            self.connect().execute("SELECT 1")  # psycopg opens a transaction and leaves it open
        for _ in range(active):
            conn = self.connect()
            started = threading.Event()

            def sleep(c: psycopg.Connection[Any] = conn, s: threading.Event = started) -> None:
                s.set()
                c.execute("SELECT pg_sleep(3)")

            threading.Thread(target=sleep, daemon=True).start()
            started.wait()

    def drop(self) -> None:
        self.stack.close()
        self.pg.drop_tenants([self.name])


@pytest.fixture
def tenants(pg: Server, cli: Cli) -> Iterator[list[Tenant]]:
    made: list[Tenant] = []
    yield made
    for tenant in made:
        tenant.drop()


def make(tenants: list[Tenant], pg: Server, cli: Cli, limit: int = 10) -> Tenant:
    tenant = Tenant(pg, limit)
    tenants.append(tenant)
    cli.secrets.add(tenant.password)
    return tenant
