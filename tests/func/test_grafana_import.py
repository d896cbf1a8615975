"""copy-tenant --from-sqlite with Grafana's grafana.db: every row right, by column name and type, into a
tenant Grafana initialised, on real PostgreSQL 15/16/18 with both kinds of admin; the file only read; every
refusal one line with nothing changed. The Grafana schemas are tests/fix_grafana.py's (it says what they
stand in for)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import fix_grafana
from tests.conftest import Cli, Result
from tests.fix_servers import Server
from tests.fix_tenant import STRICTER_ADMIN, Tenant, made_tenant


@pytest.fixture
def fresh(cli: Cli, pg: Server, admin: str, tmp_path: Path) -> Iterator[Tenant]:
    """A tenant made by ensure-tenant (by either kind of admin) that Grafana has not started on yet."""
    with made_tenant(cli, pg, admin, tmp_path, "grafana") as made:
        yield made


@pytest.fixture
def tenant(fresh: Tenant) -> Tenant:
    """The tenant after Grafana's first start on it: its schema, its migration log, its seed."""
    with fresh.connect() as conn:
        fix_grafana.initialise_tenant(conn)
    return fresh


def run(cli: Cli, tenant: Tenant, path: Path, *extra: str) -> Result:
    return cli("copy-tenant", tenant.name, "--from-sqlite", str(path), "--dsn", tenant.pg.conninfo(),
               "--tenant-password-file", str(tenant.pwfile), "--output", "json", *extra,
               env={"PGPASSWORD": tenant.pg.password}, timeout=120)  # fmt: skip


def grafana_db(tmp_path: Path, **kwargs: Any) -> tuple[Path, dict[str, Any]]:
    path = tmp_path / "grafana.db"
    facts = fix_grafana.make_sqlite(path, **kwargs)
    return path, facts


def file_rows(path: Path, table: str, columns: str = "*") -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return [tuple(r) for r in db.execute(f'SELECT {columns} FROM "{table}" ORDER BY 1')]


def test_every_row_lands_right_by_name_and_type_and_the_file_is_only_read(cli: Cli, tenant: Tenant,
                                                                        tmp_path: Path) -> None:  # fmt: skip
    path, facts = grafana_db(tmp_path)
    path.chmod(0o444)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    result = run(cli, tenant, path)
    assert result.code == 0, result
    report = result.result()
    assert report["status"] == "copied" and report["grafana_migrations"] == len(fix_grafana.MIGRATIONS)
    for table in fix_grafana.TABLES:
        if table != "migration_log":
            assert report["copied"][table] == len(file_rows(path, table)), table
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before, "the file was written"
    with tenant.connect() as conn:
        users = {
            r[0]: r
            for r in conn.execute(
                "SELECT id, login, is_admin, is_disabled, email_verified, "
                'is_service_account, help_flags1, created, updated, uid FROM "user"'
            )
        }
        assert sorted(users) == facts["users"], "the seeded admin was duplicated or a user dropped"
        assert users[1][9] == "u000000001", "the tenant's seeded admin was kept instead of the file's"
        assert (users[1][2], users[2][2], users[6][3], users[2][3]) == (True, False, True, False)  # 0/1 -> bool
        assert (users[1][4], users[2][4], users[5][4]) == (None, True, False)  # NULL stays NULL
        assert users[6][1] == "李雷" and users[5][6] == 2**40 + 5
        orgs = {r[0]: r[1:] for r in conn.execute("SELECT id, name, city, created, updated FROM org")}
        expected = fix_grafana.EXPECTED_TIMES
        assert orgs[1][2:] == (expected[0], expected[1]), "text times (with an offset) were not moved to UTC"
        assert orgs[4] == ("Équipe Ω", "Zürich", expected[2], expected[3]), "RFC 3339 / epoch times were not read"
        dashboards = {r[0]: r[1:] for r in conn.execute("SELECT id, data, is_folder, has_acl, is_public, deleted, "
                                                        "gnet_id FROM dashboard")}  # fmt: skip
        assert sorted(dashboards) == facts["dashboards"], "ids with gaps were renumbered"
        for did, data, is_folder, has_acl, is_public, deleted, gnet in file_rows(
                path, "dashboard", "id, data, is_folder, has_acl, is_public, deleted, gnet_id"):  # fmt: skip
            assert dashboards[did][0] == data, f"dashboard {did}'s JSON changed"
            assert dashboards[did][1:4] == (bool(is_folder), bool(has_acl), bool(is_public)), did
            assert (dashboards[did][4] is None) == (deleted is None) and dashboards[did][5] == gnet, did
        assert len(json.loads(dashboards[facts["dashboards"][0]][0])["panels"]) > 50
        [(blob,)] = conn.execute("SELECT encrypted_data FROM data_keys").fetchall()
        assert bytes(blob) == bytes(range(256)) * 2
        roles = conn.execute("SELECT name, version FROM role ORDER BY name").fetchall()
        assert [r[0] for r in roles] == sorted(r[0] for r in file_rows(path, "role", "name"))
        assert {r[1] for r in roles} == {2}, "the tenant's seeded roles were kept"
        # every sequence is past the highest id: Grafana's next inserts do not collide
        new = conn.execute("INSERT INTO dashboard (version, slug, title, data, org_id, created, updated) VALUES "
                           "(1, 'n', 'new', '{}', 1, now(), now()) RETURNING id").fetchone()  # fmt: skip
        assert new is not None and new[0] == max(facts["dashboards"]) + 1
        new_user = conn.execute("INSERT INTO \"user\" (version, login, email, org_id, is_admin, created, updated) "
                                "VALUES (0, 'x', 'x@x', 1, false, now(), now()) RETURNING id").fetchone()  # fmt: skip
        assert new_user == (max(facts["users"]) + 1,)
    assert report["replaced"] == {"org": 1, "user": 1, "org_user": 1, "role": 3, "kv_store": 1}
    assert report["encrypted"] == {"data_source.secure_json_data": 1, "data_keys": 1}
    warning = [e for e in result.events() if e["level"] == "warning"]
    assert warning and "secret_key" in warning[0]["hint"], result


@STRICTER_ADMIN
def test_a_dry_run_lists_what_would_move_and_changes_nothing(cli: Cli, tenant: Tenant, tmp_path: Path) -> None:
    path, _ = grafana_db(tmp_path, dashboards=3)
    result = run(cli, tenant, path, "--dry-run")
    assert result.code == 0 and result.result()["would_copy"]["dashboard"] == 3, result
    assert result.result()["would_replace"]["user"] == 1
    with tenant.connect() as conn:
        assert conn.execute("SELECT count(*) FROM dashboard").fetchone() == (0,)


def unchanged(tenant: Tenant) -> None:
    """The tenant as Grafana's first start left it."""
    with tenant.connect() as conn:
        assert conn.execute('SELECT uid FROM "user"').fetchall() == [("fresh-admin",)]
        assert conn.execute("SELECT count(*) FROM dashboard").fetchone() == (0,)


def refused(result: Result, *says: str) -> str:
    assert result.code == 3 and result.result()["status"] == "failed", result
    [error] = [e for e in result.events() if e["level"] == "error"]
    for text in says:
        assert text in error["error"], error
    assert "Traceback" not in result.stderr
    return str(error["error"])


@STRICTER_ADMIN
def test_another_grafana_version_is_refused_naming_both(cli: Cli, tenant: Tenant, tmp_path: Path) -> None:
    path, _ = grafana_db(tmp_path, migrations=fix_grafana.OLDER_MIGRATIONS, dashboards=2)
    error = refused(
        run(cli, tenant, path),
        "different Grafana versions",
        f"ran {len(fix_grafana.OLDER_MIGRATIONS)} migrations",
        f"the tenant's {len(fix_grafana.MIGRATIONS)}",
    )
    assert repr(fix_grafana.MIGRATIONS[-1]) in error and repr(fix_grafana.OLDER_MIGRATIONS[-1]) in error
    unchanged(tenant)


@STRICTER_ADMIN
def test_a_tenant_grafana_has_not_initialised_is_refused(cli: Cli, fresh: Tenant, tmp_path: Path) -> None:
    path, _ = grafana_db(tmp_path, dashboards=2)
    result = run(cli, fresh, path)
    refused(result, "has no Grafana schema")
    assert "start Grafana" in result.events()[-1]["hint"]


@STRICTER_ADMIN
def test_a_tenant_that_holds_users_data_is_refused(cli: Cli, tenant: Tenant, tmp_path: Path) -> None:
    path, _ = grafana_db(tmp_path, dashboards=2)
    with tenant.connect() as conn:
        conn.execute("INSERT INTO dashboard (version, slug, title, data, org_id, created, updated) VALUES "
                     "(1, 'mine', 'Mine', '{}', 1, now(), now())")  # fmt: skip
        conn.execute("INSERT INTO org (version, name, created, updated) VALUES (0, 'Second', now(), now())")
    refused(run(cli, tenant, path), "dashboard (1)", "org (2)", "never overwrites")
    with tenant.connect() as conn:
        assert conn.execute("SELECT title FROM dashboard").fetchall() == [("Mine",)]


@STRICTER_ADMIN
def test_grafana_still_connected_is_refused(cli: Cli, tenant: Tenant, tmp_path: Path) -> None:
    path, _ = grafana_db(tmp_path, dashboards=2)
    with tenant.connect():  # Grafana's pool, still open
        refused(run(cli, tenant, path), "other session", "Grafana is still running")
    unchanged(tenant)


@STRICTER_ADMIN
@pytest.mark.parametrize(("column", "value", "says"), [
    ("is_folder", "'yes'", "column is_folder (bool)"),
    ("slug", "'" + "s" * 200 + "'", "longer than the column's 189"),
    ("created", "'last tuesday'", "column created (timestamp)"),
])  # fmt: skip
def test_a_value_its_column_cannot_hold_fails_the_whole_import(cli: Cli, tenant: Tenant, tmp_path: Path,
                                                              column: str, value: str, says: str) -> None:  # fmt: skip
    path, facts = grafana_db(tmp_path, dashboards=4)
    last = facts["dashboards"][-1]
    with sqlite3.connect(path) as db:
        db.execute(f"UPDATE dashboard SET {column} = {value} WHERE id = {last}")
    refused(run(cli, tenant, path), "dashboard row", says)
    unchanged(tenant)  # the tables copied before it were rolled back too


@STRICTER_ADMIN
def test_committed_rows_still_in_the_wal_are_imported(cli: Cli, tenant: Tenant, tmp_path: Path) -> None:
    """Grafana killed with its WAL not checkpointed: what it committed is in the -wal file only."""
    path, facts = grafana_db(tmp_path, dashboards=2)
    writer = sqlite3.connect(path)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("INSERT INTO dashboard (id, version, slug, title, data, org_id, created, updated) VALUES "
                   "(999, 1, 'late', 'Late', '{}', 1, '2024-03-05 10:00:00', '2024-03-05 10:00:00')")  # fmt: skip
    writer.commit()
    try:
        assert Path(f"{path}-wal").stat().st_size > 0
        result = run(cli, tenant, path)
        assert result.code == 0, result
        with tenant.connect() as conn:
            row = conn.execute("SELECT title, created FROM dashboard WHERE id = 999").fetchone()
            assert row == ("Late", dt.datetime(2024, 3, 5, 10, 0))
            assert conn.execute("SELECT count(*) FROM dashboard").fetchone() == (len(facts["dashboards"]) + 1,)
    finally:
        writer.close()


@STRICTER_ADMIN
def test_a_file_that_is_not_grafanas_names_the_app(cli: Cli, tenant: Tenant, tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE things (id integer)")
    result = run(cli, tenant, path)
    refused(result, "not the database of Dex, Policy Reporter or Grafana")


@STRICTER_ADMIN
def test_a_file_left_mid_transaction_is_recovered_in_a_copy_never_in_place(cli: Cli, tenant: Tenant,
                                                                           tmp_path: Path) -> None:  # fmt: skip
    """Grafana killed mid-write leaves a hot rollback journal: the import sees the last committed state, and
    the file and its journal stay exactly as they were (Grafana's own next start would roll it back)."""
    live = tmp_path / "live"
    live.mkdir()
    path, facts = grafana_db(live, dashboards=3)
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA cache_size=1")  # the uncommitted pages reach the file itself
    writer.execute("BEGIN")
    writer.execute("DELETE FROM dashboard_version")
    writer.execute("UPDATE dashboard SET title = 'half-written', data = ?", ("x" * 100_000,))
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    for suffix in ("", "-journal"):  # the files as a crash leaves them
        (crashed / f"grafana.db{suffix}").write_bytes(Path(f"{path}{suffix}").read_bytes())
    writer.execute("ROLLBACK")
    writer.close()
    copied = crashed / "grafana.db"
    before = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in crashed.iterdir()}
    assert "grafana.db-journal" in before
    result = run(cli, tenant, copied)
    assert result.code == 0, result
    assert {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in crashed.iterdir()} == before
    with tenant.connect() as conn:
        assert conn.execute("SELECT count(*) FROM dashboard WHERE title = 'half-written'").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM dashboard_version").fetchone() == (len(facts["dashboards"]) * 3,)
