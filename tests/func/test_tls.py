"""sharedpg against a PostgreSQL that accepts only TLS (``hostssl`` alone in pg_hba.conf; a CA and a server
certificate for ``localhost`` made by the test), with SCRAM and the non-superuser admin a managed service
gives: every command works with ``sslmode=verify-full``, and a wrong CA, a host name the certificate does not
name, or a server without TLS each stop at once with one line naming the setting to fix."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.conftest import Cli, Result
from tests.fix_legacy import Legacy
from tests.fix_servers import MANAGED_ADMIN, Server, start_tls


class TlsServer:
    def __init__(self, server: Server, ca: Path, other_ca: Path):
        self.server, self.ca, self.other_ca = server, ca, other_ca

    def dsn(self, user: str = MANAGED_ADMIN, dbname: str = "postgres", host: str = "localhost",
            ca: Path | None = None) -> str:  # fmt: skip
        """verify-full against the certificate's name (``hostaddr`` keeps it on the server's loopback)."""
        return (f"host={host} hostaddr=127.0.0.1 port={self.server.port} user={user} dbname={dbname} "
                f"sslmode=verify-full sslrootcert={ca or self.ca}")  # fmt: skip


@pytest.fixture(scope="module")
def tls() -> Iterator[TlsServer]:
    ca, other = trustme.CA(), trustme.CA()
    hba = (
        "local all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all 0.0.0.0/0 reject\n"
    )
    server, files = start_tls(ca, ("localhost",), hba)
    ca.cert_pem.write_to_path(str(files / "ca.pem"))
    other.cert_pem.write_to_path(str(files / "other-ca.pem"))
    yield TlsServer(server, files / "ca.pem", files / "other-ca.pem")
    server.local.stop()


def run(cli: Cli, tls: TlsServer, *args: str, dsn: str | None = None, password: str | None = None) -> Result:
    return cli(*args, "--dsn", dsn or tls.dsn(), env={"PGPASSWORD": password or tls.server.managed_password},
               timeout=120)  # fmt: skip


def test_every_command_works_with_verify_full(cli: Cli, tls: TlsServer, legacy: Legacy, tmp_path: Path) -> None:
    pw = tmp_path / "tenant.pw"
    pw.write_text("tenant-password-over-tls")
    cli.secrets |= {tls.server.managed_password, "tenant-password-over-tls"}
    assert run(cli, tls, "wait-for-db", "--timeout", "10").code == 0
    made = run(cli, tls, "ensure-tenant", "tls_app", "--tenant-password-file", str(pw))
    assert made.code == 0, made
    gate = run(cli, tls, "wait-for-db", "--timeout", "10", dsn=tls.dsn("tls_app", "tls_app"),
               password="tenant-password-over-tls")  # fmt: skip
    assert gate.code == 0, ("the tenant's own login, as its gate makes it", gate)
    booted = run(cli, tls, "bootstrap", "--no-vault", "--password-dir", str(tmp_path / "pw"))
    assert booted.code == 0, booted
    cli.secrets |= {p.read_text().strip() for p in (tmp_path / "pw").iterdir()}
    assert run(cli, tls, "check-pool").code in (0, 1)  # a verdict read over TLS, not UNKNOWN (3)
    old = tmp_path / "old.pw"
    old.write_text(legacy.password)
    cli.secrets.add(legacy.password)
    copied = cli("copy-tenant", "tls_app", "--from-dsn", legacy.dsn, "--from-password-file", str(old), "--dsn",
                 tls.dsn(), "--tenant-password-file", str(pw), "--output", "json",
                 env={"PGPASSWORD": tls.server.managed_password}, timeout=300)  # fmt: skip
    assert copied.code == 0 and copied.result()["mismatches"] == [], copied  # pg_restore too, over verify-full
    ssl = tls.server.admin_sql("SELECT bool_and(ssl) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) "
                               "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")  # fmt: skip
    assert ssl in ([(True,)], [(None,)])


SETTINGS = ("sslrootcert", "PGHOST", "sslmode")


@pytest.mark.parametrize(("case", "names"), [
    ("a CA that did not sign the server's certificate", "sslrootcert"),
    ("a host name the certificate does not name", "PGHOST"),
    ("a server without TLS", "sslmode"),
    ("a CA file that is not there", "sslrootcert"),
])  # fmt: skip
def test_a_tls_mismatch_is_one_line_naming_the_setting(cli: Cli, tls: TlsServer, pg: Server, case: str,
                                                       names: str) -> None:  # fmt: skip
    dsn = {
        "a CA that did not sign the server's certificate": tls.dsn(ca=tls.other_ca),
        "a host name the certificate does not name": tls.dsn(host="127.0.0.1"),
        "a server without TLS": f"{pg.conninfo()} sslmode=verify-full sslrootcert={tls.ca}",
        "a CA file that is not there": tls.dsn(ca=tls.ca.with_name("missing.pem")),
    }[case]
    expected = 2 if case == "a CA file that is not there" else 3  # a setting to fix, or a server's answer
    for command in (["ensure-tenant", "tls_nobody", "--dry-run"], ["wait-for-db", "--fail-fast", "--timeout", "10"]):
        result = cli(*command, "--dsn", dsn, env={"PGPASSWORD": tls.server.managed_password}, timeout=60)
        assert result.code == expected, (case, command, result)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, (case, command, lines)
        fields = json.loads(lines[0])  # a setting to fix (exit 2) says how in its error; a refusal, in its hint
        said = fields["error"].split(" failed: ", 1)[-1] if expected == 2 else fields["hint"]
        assert names in said and not [s for s in SETTINGS if s != names and s in said], (case, command, said)
