"""copy-tenant --from-sqlite: Dex's and Policy Reporter's files, recognised from their tables and refused
with what they hold and what not moving them costs; the file is only read. (Grafana's is imported:
test_grafana_import.py.)"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import Cli

SCHEMAS = {
    "dex": ["CREATE TABLE migrations (num integer)", "CREATE TABLE keys (id text)",
            "CREATE TABLE refresh_token (id text)", "CREATE TABLE auth_request (id text)",
            "CREATE TABLE client (id text)", "CREATE TABLE password (email text)"],
    "policy-reporter": ["CREATE TABLE policy_report (id text)", "CREATE TABLE policy_report_result (id text)",
                        "CREATE TABLE policy_report_config (id text)"],
    "other": ["CREATE TABLE things (id integer)"],
}  # fmt: skip
SAYS = {"dex": "Dex's storage", "policy-reporter": "rebuilt from the cluster's PolicyReport",
        "other": "not the database of Dex, Policy Reporter or Grafana"}  # fmt: skip


def sqlite_file(tmp_path: Path, app: str, rows: dict[str, int] | None = None) -> Path:
    path = tmp_path / f"{app}.db"
    with sqlite3.connect(path) as conn:
        for statement in SCHEMAS[app]:
            conn.execute(statement)
        for table, count in (rows or {}).items():
            conn.executemany(f"INSERT INTO {table} VALUES (?)", [(str(i),) for i in range(count)])
    return path


@pytest.mark.parametrize("app", sorted(SCHEMAS))
def test_each_sqlite_app_is_refused_with_its_reason_and_the_file_is_only_read(cli: Cli, tmp_path: Path,
                                                                              app: str) -> None:  # fmt: skip
    path = sqlite_file(tmp_path, app)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    path.chmod(0o444)
    result = cli("copy-tenant", app.replace("-", ""), "--from-sqlite", str(path), "--output", "json")
    assert result.code == 3 and result.result()["status"] == "failed", result
    [error] = [e for e in result.events() if e["level"] == "error"]
    assert SAYS[app] in error["error"], error
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before, "the file was written"


def test_dex_state_that_only_its_api_makes_is_named(cli: Cli, tmp_path: Path) -> None:
    path = sqlite_file(tmp_path, "dex", {"client": 2, "password": 0})
    [error] = [e for e in cli("copy-tenant", "dex", "--from-sqlite", str(path)).events() if e["level"] == "error"]
    assert "client (2)" in error["error"] and "password" not in error["error"].split("makes")[-1], error


def test_a_file_that_is_not_sqlite_is_a_usage_error(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a database\n" * 100)
    for path in (tmp_path / "notes.txt", tmp_path / "missing.db"):
        result = cli("copy-tenant", "grafana", "--from-sqlite", str(path))
        assert result.code == 2 and "--from-sqlite" in result.stderr and len(result.log_lines) == 1, result
