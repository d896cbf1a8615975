"""``sharedpg copy-tenant``: an old per-app PostgreSQL 15 copied into a tenant on 15, 16 and 18, for real."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import Cli, Result
from tests.fix_legacy import LEGACY_DB, LEGACY_USER, ROWS, Legacy
from tests.fix_servers import Server
from tests.fix_tenant import made_tenant


@pytest.fixture
def tenant(cli: Cli, pg: Server, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A fresh tenant on the shared server (made by ensure-tenant), with its password."""
    name, password = f"copy_{secrets.token_hex(3)}", secrets.token_urlsafe(16)
    (tmp_path / "tenant.pw").write_text(password)
    cli.secrets.add(password)
    made = cli("ensure-tenant", name, "--dsn", pg.conninfo(), "--tenant-password-file", str(tmp_path / "tenant.pw"),
               env={"PGPASSWORD": pg.password})  # fmt: skip
    assert made.code == 0, made
    yield name, password
    pg.drop_tenants([name])


def tenant_pw(tmp_path: Path) -> tuple[str, str]:
    """The tenant fixture's password file, as copy-tenant's flag."""
    return "--tenant-password-file", str(tmp_path / "tenant.pw")


def copy(cli: Cli, pg: Server, legacy: Legacy, tmp_path: Path, name: str, *extra: str) -> Result:
    pw = tmp_path / "legacy.pw"
    pw.write_text(legacy.password + "\n")
    cli.secrets.add(legacy.password)
    return cli("copy-tenant", name, "--from-dsn", legacy.dsn, "--from-password-file", str(pw), "--dsn", pg.conninfo(),
               *tenant_pw(tmp_path), "--output", "json", *extra, env={"PGPASSWORD": pg.password},
               timeout=300)  # fmt: skip


def test_copy_lands_every_row_owned_by_the_tenant(cli: Cli, pg: Server, legacy: Legacy, tenant: tuple[str, str],
                                                   tmp_path: Path) -> None:  # fmt: skip
    name, password = tenant
    result = copy(cli, pg, legacy, tmp_path, name)
    assert result.code == 0, result
    report = result.result()
    assert report["tables"] == 3 and report["rows"] == ROWS and report["mismatches"] == []
    assert report["bytes"] > 400_000 and report["target_version"] == pg.major  # the bytea does not compress
    with psycopg.connect(pg.conninfo(name, name), password=password) as conn:  # the tenant reads its own data
        assert conn.execute("SELECT count(*) FROM big_orders").fetchone() == (4934,)
        assert conn.execute("SELECT note FROM customers WHERE id = 7").fetchone() == ("ñandú 北京 7",)
        assert conn.execute("SELECT length(data) FROM blobs").fetchone() == (500_000,)
        owners = conn.execute("SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class c JOIN pg_namespace n "
                              "ON n.oid = c.relnamespace WHERE n.nspname = 'public'").fetchall()  # fmt: skip
        assert owners == [(name,)]
        conn.execute("INSERT INTO customers (name) VALUES ('after the copy')")  # sequences came along


def test_nonempty_target_is_refused_then_replaced_on_request(
    cli: Cli, pg: Server, legacy: Legacy, tenant: tuple[str, str], tmp_path: Path
) -> None:
    name, _ = tenant
    assert copy(cli, pg, legacy, tmp_path, name).code == 0
    again = copy(cli, pg, legacy, tmp_path, name)
    assert again.code == 3 and "never overwrites data silently" in again.stderr, again
    redo = copy(cli, pg, legacy, tmp_path, name, "--into-nonempty", "--clean")
    assert redo.code == 0 and redo.result()["mismatches"] == [], redo


def test_a_failing_restore_reports_pg_restores_own_error(
    cli: Cli, pg: Server, legacy: Legacy, tenant: tuple[str, str], tmp_path: Path
) -> None:
    """pg_restore quits on its first error while pg_dump still writes: its error, not a broken pipe."""
    name, _ = tenant
    assert copy(cli, pg, legacy, tmp_path, name).code == 0
    again = copy(cli, pg, legacy, tmp_path, name, "--into-nonempty")  # no --clean: the tables exist
    assert again.code == 1, again
    failed = again.events()[-1]
    assert failed["error"].startswith("pg_restore failed") and "already exists" in failed["error"], failed
    assert "nothing was committed" in failed["hint"]


def test_dry_run_lists_what_would_be_copied_and_writes_nothing(
    cli: Cli, pg: Server, legacy: Legacy, tenant: tuple[str, str], tmp_path: Path
) -> None:
    name, password = tenant
    result = copy(cli, pg, legacy, tmp_path, name, "--dry-run")
    assert result.code == 0, result
    assert result.result()["would_copy"] == {"public.blobs": 1, "public.customers": 2000, "public.orders": 5000}
    with psycopg.connect(pg.conninfo(name, name), password=password) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)


def test_missing_tenant_is_refused_with_the_fix(cli: Cli, pg: Server, legacy: Legacy, tmp_path: Path) -> None:
    (tmp_path / "tenant.pw").write_text("no tenant has it")
    result = copy(cli, pg, legacy, tmp_path, "copy_nobody")
    assert result.code == 3 and "ensure-tenant" in result.stderr, result


def test_unreachable_source_says_so(cli: Cli, pg: Server, tenant: tuple[str, str], tmp_path: Path) -> None:
    source = "host=127.0.0.1 port=1 user=x dbname=x"
    result = cli("copy-tenant", tenant[0], "--from-dsn", source, "--dsn", pg.conninfo(), *tenant_pw(tmp_path),
                 env={"PGPASSWORD": pg.password})  # fmt: skip
    assert result.code == 1 and "Connection refused" in result.stderr, result


def test_newer_source_than_target_is_refused(cli: Cli, pg: Server, legacy: Legacy, tmp_path: Path) -> None:
    if pg.major <= 15:
        pytest.skip("needs a source newer than the 15 target")
    shared = legacy.server  # use the 15 server as the shared one, and this newer one as the source
    name = f"copy_{secrets.token_hex(3)}"
    (tmp_path / "tenant.pw").write_text(secrets.token_urlsafe(16))
    made = cli("ensure-tenant", name, "--dsn", shared.conninfo(), *tenant_pw(tmp_path),
               env={"PGPASSWORD": shared.password})  # fmt: skip
    assert made.code == 0, made
    try:
        source = f"{pg.conninfo()} password={pg.password}"  # in the environment, where a password may be
        result = cli("copy-tenant", name, "--dsn", shared.conninfo(), *tenant_pw(tmp_path),
                     env={"PGPASSWORD": shared.password, "SHAREDPG_FROM_DSN": source})  # fmt: skip
        assert result.code == 3 and "newer than the shared server" in result.stderr, result
    finally:
        shared.drop_tenants([name])


def test_a_wrong_source_password_points_at_the_source_inputs(
    cli: Cli, pg: Server, legacy: Legacy, tenant: tuple[str, str], tmp_path: Path
) -> None:
    name, _ = tenant
    (tmp_path / "legacy.pw").write_text("not-the-password\n")
    result = cli("copy-tenant", name, "--from-dsn", legacy.dsn, "--from-password-file", str(tmp_path / "legacy.pw"),
                 "--dsn", pg.conninfo(), *tenant_pw(tmp_path), env={"PGPASSWORD": pg.password})  # fmt: skip
    assert result.code == 3, result
    [failed] = [e for e in result.events() if e["level"] == "error"]
    assert failed["error"].startswith("the old server (--from-dsn):"), failed
    assert "--from-password-file" in failed["hint"] and "ExternalSecret" not in failed["hint"]


def test_the_source_password_from_its_own_passfile_reaches_pg_dump(
    cli: Cli, pg: Server, legacy: Legacy, tenant: tuple[str, str], tmp_path: Path
) -> None:
    """The old server's password in a password file that --from-dsn names (``passfile=``): the shared
    server's PGPASSFILE is never the old server's."""
    name, _ = tenant
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"{legacy.server.host}:{legacy.server.port}:*:legacy_user:{legacy.password}\n")
    passfile.chmod(0o600)
    cli.secrets.add(legacy.password)
    result = cli("copy-tenant", name, "--from-dsn", f"{legacy.dsn} passfile={passfile}", "--dsn", pg.conninfo(),
                 *tenant_pw(tmp_path), "--output", "json", env={"PGPASSWORD": pg.password}, timeout=300)  # fmt: skip
    assert result.code == 0, result
    assert result.result()["rows"] == ROWS


def test_a_source_extension_the_tenant_lacks_is_refused_before_copying(
    cli: Cli, pg: Server, legacy: Legacy, tenant: tuple[str, str], tmp_path: Path
) -> None:
    name, password = tenant
    source_db = f"legacy_ext_{secrets.token_hex(3)}"
    legacy.server.admin_sql(f"CREATE DATABASE {source_db} OWNER legacy_user")
    with psycopg.connect(legacy.server.conninfo("legacy_user", source_db), password=legacy.password,
                         autocommit=True) as conn:  # fmt: skip
        conn.execute("CREATE EXTENSION hstore")
        conn.execute("CREATE TABLE tags (id int PRIMARY KEY, attrs hstore)")
    (tmp_path / "legacy.pw").write_text(legacy.password)
    cli.secrets.add(legacy.password)
    dsn = legacy.dsn.replace("dbname=legacy_app", f"dbname={source_db}")
    result = cli("copy-tenant", name, "--from-dsn", dsn, "--from-password-file", str(tmp_path / "legacy.pw"),
                 "--dsn", pg.conninfo(), *tenant_pw(tmp_path), env={"PGPASSWORD": pg.password})  # fmt: skip
    assert result.code == 3, result
    [failed] = [e for e in result.events() if e["level"] == "error"]
    assert "hstore" in failed["error"]
    assert "--extension hstore" in failed["hint"] or "does not have" in failed["error"], failed
    with psycopg.connect(pg.conninfo(name, name), password=password) as conn:
        assert conn.execute("SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace").fetchone() \
            == (0,)  # fmt: skip


def test_an_old_database_still_in_use_is_refused_unless_allowed(
    cli: Cli, pg: Server, legacy: Legacy, tenant: tuple[str, str], tmp_path: Path
) -> None:
    """The app still connected to its old server could write after the dump began: that would be lost."""
    name, password = tenant
    with psycopg.connect(legacy.server.conninfo(LEGACY_USER, LEGACY_DB), password=legacy.password):
        refused = copy(cli, pg, legacy, tmp_path, name)
        assert refused.code == 3 and "1 other session" in refused.result()["error"], refused
        assert "--allow-source-sessions" in refused.result()["hint"]
        with psycopg.connect(pg.conninfo(name, name), password=password) as conn:
            assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)
        allowed = copy(cli, pg, legacy, tmp_path, name, "--allow-source-sessions")
        assert allowed.code == 0, allowed


def test_the_copy_waits_for_the_old_apps_sessions_to_end_when_asked(
    cli: Cli, pg: Server, legacy: Legacy, tenant: tuple[str, str], tmp_path: Path
) -> None:
    """--source-idle-wait, as the cutover Job runs while the app's pods are still terminating: it starts as soon
    as the last session ends, and refuses as before when they outlive the wait."""
    name, _ = tenant
    held = psycopg.connect(legacy.server.conninfo(LEGACY_USER, LEGACY_DB), password=legacy.password)
    threading.Timer(2.0, held.close).start()  # the app's last pod going away
    waited = copy(cli, pg, legacy, tmp_path, name, "--source-idle-wait", "60")
    assert waited.code == 0, waited
    assert any(e.get("event") == "waiting for the old app to stop" and e["sessions"] == 1 for e in waited.events())
    with psycopg.connect(legacy.server.conninfo(LEGACY_USER, LEGACY_DB), password=legacy.password):
        refused = copy(cli, pg, legacy, tmp_path, name, "--into-nonempty", "--clean", "--source-idle-wait", "1.5")
        assert refused.code == 3 and "1 other session" in refused.result()["error"], refused


def test_a_recorded_copy_runs_once_and_no_tenant_can_forge_its_record(
    cli: Cli, pg: Server, admin: str, legacy: Legacy, tmp_path: Path
) -> None:
    """--copy-id, as the cutover Job runs it on every sync: the first run copies and records; a re-run with the
    same id does nothing; a new id replaces a copy nobody has touched, never one the app wrote to; the record
    is where the tenant's login cannot reach. Both admin kinds: the managed one records in a database a
    superuser may have made first."""
    pw = tmp_path / "legacy.pw"
    pw.write_text(legacy.password)
    cli.secrets.add(legacy.password)
    with made_tenant(cli, pg, admin, tmp_path, "once") as made:

        def run(copy_id: str) -> Result:
            return cli("copy-tenant", made.name, "--from-dsn", legacy.dsn, "--from-password-file", str(pw), "--dsn",
                       pg.conninfo(admin), "--tenant-password-file", str(made.pwfile), "--output", "json",
                       "--copy-id", copy_id, env={"PGPASSWORD": pg.password_of(admin)}, timeout=300)  # fmt: skip

        first = run("1")
        assert first.code == 0 and first.result()["copy_id"] == "1", first
        again = run("1")  # the next sync
        assert again.code == 0 and again.result()["status"] == "already_copied", again
        assert again.result()["rows"] == ROWS and legacy.password not in again.stdout
        redone = run("2")  # a new attempt (after going back to the old server): nobody used copy 1, so replaced
        assert redone.code == 0 and redone.result()["replaced_copy"] == "1", redone
        with made.connect() as conn:
            assert conn.execute("SELECT count(*) FROM customers").fetchone() == (2000,)
            conn.execute("INSERT INTO customers (name) VALUES ('written by the app on the shared server')")
            conn.execute("DELETE FROM customers WHERE name = 'written by the app on the shared server'")
        refused = run("3")  # the same count again, but the app's sequence moved: its data is never replaced
        assert refused.code == 3 and "changed since copy 2" in refused.stderr, refused
        assert "public.customers_id_seq: 2000 -> 2001" in refused.stderr, refused
        with made.connect() as conn:
            assert conn.execute("SELECT max(id) FROM customers").fetchone() == (2000,), "the tenant is as it was"
        with pytest.raises(psycopg.OperationalError, match="permission denied"):
            psycopg.connect(pg.conninfo(made.name, "sharedpg_lock"), password=made.password)  # nowhere to forge
        with pg.connect(dbname="sharedpg_lock") as conn:
            recorded = conn.execute("SELECT copy_id FROM sharedpg.copies WHERE tenant = %s", [made.name]).fetchall()
        assert recorded == [("2",)]
        bad = run("one two")
        assert bad.code == 2 and "--copy-id" in bad.stderr and "Traceback" not in bad.stderr, bad
