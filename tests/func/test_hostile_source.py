"""The old server copy-tenant reads receives the ``--from-*`` credentials and nothing of the shared server's.

A fake old server on loopback speaks PostgreSQL's protocol (v3) up to authentication: it refuses TLS and
GSS encryption, asks for the password in cleartext or as MD5, and records every password message a client
sends. The shared server's credentials sit where libpq looks for them: PGPASSWORD, a PGPASSFILE entry that
matches every host, PGSERVICE. It is a stand-in for a hostile server, which no real PostgreSQL can be made
into: a real one never shows what a client sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.fix_servers import Server

CLEARTEXT, MD5 = 3, 5
SSL_REQUEST, GSS_REQUEST = 80877103, 80877104


class FakeOldServer:
    """Accepts connections, asks each for a password (``method``), records what it answers, then refuses."""

    def __init__(self, method: int):
        self.method = method
        self.salt = secrets.token_bytes(4)
        self.received: list[bytes] = []
        self.startups: list[dict[str, str]] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError, struct.error):
                    self._session(conn)

    @staticmethod
    def _read(conn: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise OSError("closed")
            data += chunk
        return data

    def _session(self, conn: socket.socket) -> None:
        while True:
            (length,) = struct.unpack("!I", self._read(conn, 4))
            body = self._read(conn, length - 4)
            (code,) = struct.unpack("!I", body[:4])
            if code in (SSL_REQUEST, GSS_REQUEST):
                conn.sendall(b"N")
                continue
            fields = body[4:].split(b"\0")
            self.startups.append({fields[i].decode(): fields[i + 1].decode() for i in range(0, len(fields) - 2, 2)})
            break
        request = struct.pack("!I", self.method) + (self.salt if self.method == MD5 else b"")
        conn.sendall(b"R" + struct.pack("!I", 4 + len(request)) + request)
        kind = self._read(conn, 1)
        (length,) = struct.unpack("!I", self._read(conn, 4))
        message = self._read(conn, length - 4)
        if kind == b"p":
            self.received.append(message.rstrip(b"\0"))
        error = b"SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed\0\0"
        conn.sendall(b"E" + struct.pack("!I", 4 + len(error)) + error)

    def md5_of(self, password: str, user: str) -> bytes:
        inner = hashlib.md5((password + user).encode()).hexdigest().encode()  # noqa: S324 (the protocol's)
        return b"md5" + hashlib.md5(inner + self.salt).hexdigest().encode()  # noqa: S324

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=[CLEARTEXT, MD5], ids=["cleartext", "md5"])
def fake(request: pytest.FixtureRequest) -> Iterator[FakeOldServer]:
    server = FakeOldServer(request.param)
    yield server
    server.close()


def shared_credentials_everywhere(pg: Server, admin: str, tmp_path: Path) -> dict[str, str]:
    """The shared server's admin password wherever libpq would find one for any server."""
    password = pg.password_of(admin)
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"*:*:*:*:{password}\n")
    passfile.chmod(0o600)
    services = tmp_path / "pg_service.conf"
    services.write_text(f"[shared]\nhost={pg.host}\nport={pg.port}\nuser={admin}\npassword={password}\n")
    (tmp_path / "tenant.pw").write_text("the tenant's")
    return {"PGPASSWORD": password, "PGPASSFILE": str(passfile), "PGSERVICEFILE": str(services),
            "PGSERVICE": "shared", "PGHOST": pg.host, "PGPORT": str(pg.port), "PGUSER": admin}  # fmt: skip


def copy_from(cli: Cli, fake: FakeOldServer, tmp_path: Path, env: dict[str, str], *extra: str) -> None:
    result = cli("copy-tenant", "anyone", "--from-dsn", f"host=127.0.0.1 port={fake.port} user=old dbname=old "
                 f"sslmode=disable{' '.join(('', *extra))}", "--tenant-password-file", str(tmp_path / "tenant.pw"),
                 *(["--from-password-file", str(tmp_path / "old.pw")] if (tmp_path / "old.pw").exists() else []),
                 env=env)  # fmt: skip
    assert result.code in (1, 3), result
    errors = [e for e in result.events() if e["level"] == "error"]
    assert len(errors) == 1 and errors[0]["error"].startswith("the old server (--from-dsn):"), result


def test_the_old_server_gets_nothing_of_the_shared_servers(cli: Cli, pg: Server, admin: str, fake: FakeOldServer,
                                                           tmp_path: Path) -> None:  # fmt: skip
    cli.secrets.add(pg.password_of(admin))
    copy_from(cli, fake, tmp_path, shared_credentials_everywhere(pg, admin, tmp_path))
    assert fake.startups, "copy-tenant never reached the old server"
    assert all(s.get("user") == "old" and s.get("database") == "old" for s in fake.startups), fake.startups
    assert fake.received == [], "the old server was sent a password it was not given"


def test_an_old_server_without_a_host_is_refused(cli: Cli, pg: Server, admin: str, tmp_path: Path) -> None:
    env = shared_credentials_everywhere(pg, admin, tmp_path)
    cli.secrets.add(pg.password_of(admin))
    result = cli("copy-tenant", "anyone", "--from-dsn", "user=old dbname=old", "--tenant-password-file",
                 str(tmp_path / "tenant.pw"), env=env)  # fmt: skip
    assert result.code == 2 and "--from-dsn names no host" in result.stderr and len(result.log_lines) == 1, result


def test_the_old_server_gets_its_own_password_and_never_in_cleartext_unless_allowed(
    cli: Cli, pg: Server, admin: str, fake: FakeOldServer, tmp_path: Path
) -> None:
    old = secrets.token_urlsafe(12)
    (tmp_path / "old.pw").write_text(old)
    cli.secrets |= {pg.password_of(admin), old}
    env = shared_credentials_everywhere(pg, admin, tmp_path)
    copy_from(cli, fake, tmp_path, env)
    if fake.method == MD5:
        assert set(fake.received) == {fake.md5_of(old, "old")}, "only the --from password, hashed, as MD5 asks"
        return
    assert fake.received == [], "a cleartext request is refused unless --from-dsn allows it (require_auth)"
    copy_from(cli, fake, tmp_path, env, "require_auth=password")
    assert set(fake.received) == {old.encode()}, "allowed: the --from password, and only it"
