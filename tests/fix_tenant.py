"""A tenant made for a test the way a platform makes it (``sharedpg ensure-tenant``, by either kind of admin),
with its own login: for the copy tests, which then act as that tenant."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import Cli
from tests.fix_servers import Server

# What a tenant's own login does cannot depend on which admin made the tenant: the refusals run with the
# stricter one (CREATEROLE CREATEDB only); the full copies run with both.
STRICTER_ADMIN = pytest.mark.parametrize("admin", ["managed"], indirect=True)


class Tenant:
    def __init__(self, pg: Server, name: str, password: str, pwfile: Path):
        self.pg, self.name, self.password, self.pwfile = pg, name, password, pwfile

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.pg.conninfo(self.name, self.name), password=self.password, autocommit=True)

    def schemas(self) -> set[str]:
        with self.connect() as conn:
            rows = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
                                "AND nspname <> 'information_schema'").fetchall()  # fmt: skip
        return {str(r[0]) for r in rows}


@contextmanager
def made_tenant(cli: Cli, pg: Server, admin: str, tmp_path: Path, prefix: str) -> Iterator[Tenant]:
    """A fresh tenant ``<prefix>_<random>`` made by ``admin``, its password in ``tmp_path/tenant.pw``; dropped after."""
    name, password = f"{prefix}_{secrets.token_hex(3)}", secrets.token_urlsafe(16)
    pwfile = tmp_path / "tenant.pw"
    pwfile.write_text(password)
    cli.secrets.add(password)
    made = cli("ensure-tenant", name, "--dsn", pg.conninfo(admin), "--tenant-password-file", str(pwfile),
               env={"PGPASSWORD": pg.password_of(admin)})  # fmt: skip
    assert made.code == 0, made
    try:
        yield Tenant(pg, name, password, pwfile)
    finally:
        pg.drop_tenants([name])
