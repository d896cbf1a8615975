"""``sharedpg wait-for-db`` against real servers: exit codes, the result line, and the log an operator reads."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
from psycopg import sql

from sharedpg_tools.localserver import free_port
from tests.conftest import Cli, Result
from tests.fix_proxy import Proxy
from tests.fix_servers import MANAGED_ADMIN, Server

FAST = ["--interval", "0.05", "--max-interval", "0.2"]


def password_file(tmp_path: Path, password: str, name: str = "password") -> str:
    path = tmp_path / name
    path.write_text(password + "\n")
    return str(path)


def warnings_of(result: Result, error_class: str) -> list[dict[str, object]]:
    return [e for e in result.events() if e["event"] == "not ready" and e["error_class"] == error_class]


def later(delay: float, action: object) -> threading.Timer:
    timer = threading.Timer(delay, action)  # type: ignore[arg-type]
    timer.start()
    return timer


def test_ready_with_each_admin_and_a_password_file(cli: Cli, pg: Server, admin: str, tmp_path: Path) -> None:
    pw = password_file(tmp_path, pg.password_of(admin))
    result = cli("wait-for-db", "--dsn", pg.conninfo(admin), "--password-file", pw, "--output", "json")
    assert result.code == 0, result
    report = result.result()
    assert report["status"] == "ready"
    assert report["target"] == f"{admin}@{pg.host}:{pg.port}/postgres"
    assert report["server_version"].split(".")[0] == str(pg.major)
    [ready] = [e for e in result.events() if e["event"] == "database ready"]
    assert ready["level"] == "info" and ready["attempts"] == 1


def test_text_result_is_one_line_naming_target_and_version(cli: Cli, pg: Server) -> None:
    result = cli("wait-for-db", "--once", env={"PGPASSWORD": pg.password, "SHAREDPG_DSN": pg.conninfo()})
    assert result.code == 0, result
    assert result.stdout.startswith(f"ready: postgres@{pg.host}:{pg.port}/postgres PostgreSQL {pg.major}.")
    assert result.stdout.count("\n") == 1


def test_libpq_environment_is_honoured_as_psql_does(cli: Cli, pg: Server, tmp_path: Path) -> None:
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"{pg.host}:{pg.port}:*:{MANAGED_ADMIN}:{pg.managed_password}\n")
    passfile.chmod(0o600)
    service = tmp_path / "pg_service.conf"
    service.write_text(f"[shared]\nhost={pg.host}\nport={pg.port}\nuser={MANAGED_ADMIN}\ndbname=postgres\n")
    env = {"PGSERVICEFILE": str(service), "PGSERVICE": "shared", "PGPASSFILE": str(passfile), "PGAPPNAME": "from-env"}
    query = "SELECT application_name = 'from-env' FROM pg_stat_activity WHERE pid = pg_backend_pid()"
    result = cli("wait-for-db", "--once", "--require", "query", "--query", query, "--output", "json", env=env)
    assert result.code == 0, result
    assert result.result()["target"] == f"{MANAGED_ADMIN}@{pg.host}:{pg.port}/postgres"


def test_default_application_name_names_the_command(cli: Cli, pg: Server) -> None:
    query = "SELECT application_name = 'sharedpg-wait-for-db' FROM pg_stat_activity WHERE pid = pg_backend_pid()"
    env = {"PGPASSWORD": pg.password}
    result = cli("wait-for-db", "--once", "--dsn", pg.conninfo(), "--query", query, env=env)
    assert result.code == 0, result


def test_password_in_environment_dsn_is_used_and_never_printed(cli: Cli, pg: Server) -> None:
    uri = f"postgresql://{pg.superuser}:{pg.password}@{pg.host}:{pg.port}/nosuchdb"
    result = cli("wait-for-db", "--once", "--log-level", "debug", env={"SHAREDPG_DSN": uri})
    assert result.code == 1, result  # the password worked: the database is what is missing
    assert "[database_missing]" in result.stdout


def test_password_in_dsn_flag_is_refused(cli: Cli, pg: Server) -> None:
    dsn = f"{pg.conninfo()} password={pg.password}"
    result = cli("wait-for-db", "--once", "--dsn", dsn)
    assert result.code == 2
    [line] = result.log_lines
    assert "--dsn contains a password" in line and "--password-file" in line


def test_server_down_at_start_then_up(cli: Cli, pg: Server, proxy: Proxy) -> None:
    timer = later(1.0, proxy.up)
    result = cli("wait-for-db", "--dsn", proxy.conninfo(pg), "--timeout", "30", *FAST, "--output", "json",
                 env={"PGPASSWORD": pg.password})  # fmt: skip
    timer.join()
    assert result.code == 0, result
    assert result.result()["attempts"] > 1
    [first] = warnings_of(result, "refused")  # said once, at warning, not once per attempt
    assert "is the server pod running" in str(first["hint"])


def test_never_up_exits_124_near_the_deadline(cli: Cli, pg: Server, proxy: Proxy) -> None:
    result = cli("wait-for-db", "--dsn", proxy.conninfo(pg), "--timeout", "1.5", *FAST, "--output", "json")
    assert result.code == 124, result
    report = result.result()
    assert report["status"] == "timeout" and report["error_class"] == "refused"
    assert 1.5 <= report["elapsed_s"] < 3.0
    assert result.events()[-1]["event"] == "gave up"


def test_blackholed_attempt_is_bounded_by_attempt_timeout(cli: Cli, pg: Server, proxy: Proxy) -> None:
    proxy.blackhole()
    result = cli("wait-for-db", "--dsn", proxy.conninfo(pg), "--once", "--attempt-timeout", "0.5", "--output", "json")
    assert result.code == 1, result
    assert result.result()["error_class"] == "timeout"


def test_server_restarted_during_stable_window_then_ready(cli: Cli, own_server: Server) -> None:
    server = own_server
    running = cli.start("wait-for-db", "--dsn", server.conninfo(), "--stable", "2", "--timeout", "60", *FAST,
                        "--log-level", "debug", env={"PGPASSWORD": server.password})  # fmt: skip
    time.sleep(0.7)
    server.local.kill()
    time.sleep(0.5)
    server.local.restart()
    result = running.finish()
    assert result.code == 0, result
    events = [e["event"] for e in result.events()]
    holding = events.index("ready, holding for --stable")
    assert "not ready" in events[holding:], "the restart must have been seen and the window restarted"
    assert events[-1] == "database ready"


def test_wrong_password_is_retried_with_hint_then_124(cli: Cli, pg: Server, tmp_path: Path) -> None:
    pw = password_file(tmp_path, "wrong-password")
    result = cli("wait-for-db", "--dsn", pg.conninfo(), "--password-file", pw, "--timeout", "1", *FAST)
    assert result.code == 124, result
    [warning] = warnings_of(result, "auth_failed")
    assert warning["sqlstate"] == "28P01" and "ExternalSecret" in str(warning["hint"])


def test_wrong_password_with_fail_fast_exits_3_at_once(cli: Cli, pg: Server, admin: str, tmp_path: Path) -> None:
    pw = password_file(tmp_path, "wrong-password")
    result = cli("wait-for-db", "--dsn", pg.conninfo(admin), "--password-file", pw, "--fail-fast", "--output", "json")
    assert result.code == 3, result
    report = result.result()
    assert report["attempts"] == 1 and report["sqlstate"] == "28P01"


def test_rotated_password_file_is_picked_up_without_restart(cli: Cli, pg: Server, tmp_path: Path) -> None:
    pw = password_file(tmp_path, "old-password")
    timer = later(1.0, lambda: Path(pw).write_text(pg.password + "\n"))
    result = cli("wait-for-db", "--dsn", pg.conninfo(), "--password-file", pw, "--timeout", "30", *FAST)
    timer.join()
    assert result.code == 0, result
    assert warnings_of(result, "auth_failed")


def test_missing_database_is_waited_for_until_created(cli: Cli, pg: Server, unique_name: str) -> None:
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(unique_name))
    timer = later(1.0, lambda: pg.admin_sql(create))
    try:
        result = cli("wait-for-db", "--dsn", pg.conninfo(dbname=unique_name), "--timeout", "30", *FAST,
                     env={"PGPASSWORD": pg.password})  # fmt: skip
        timer.join()
        assert result.code == 0, result
        [warning] = warnings_of(result, "database_missing")
        assert warning["sqlstate"] == "3D000" and "bootstrap" in str(warning["hint"])
    finally:
        timer.join()
        pg.admin_sql(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(unique_name)))


def test_missing_role_is_not_authorized(cli: Cli, pg: Server) -> None:
    result = cli("wait-for-db", "--once", "--dsn", pg.conninfo("nobody_here"), "--output", "json",
                 env={"PGPASSWORD": "x"})  # fmt: skip
    assert result.code == 1, result
    assert result.result()["error_class"] in ("auth_failed", "not_authorized")


def test_connection_limit_reached_says_pool_budget(cli: Cli, pg: Server, unique_name: str) -> None:
    role = sql.Identifier(unique_name)
    pg.admin_sql(sql.SQL("CREATE ROLE {} LOGIN CONNECTION LIMIT 0 PASSWORD {}").format(role, sql.Literal("pw-limit")))
    cli.secrets.add("pw-limit")
    try:
        result = cli("wait-for-db", "--once", "--dsn", pg.conninfo(unique_name), "--output", "json",
                     env={"PGPASSWORD": "pw-limit"})  # fmt: skip
        assert result.code == 1, result
        report = result.result()
        assert report["sqlstate"] == "53300" and "check-pool" in report["hint"]
    finally:
        pg.admin_sql(sql.SQL("DROP ROLE {}").format(role))


def test_no_connect_privilege_is_permission_denied(cli: Cli, pg: Server, unique_name: str) -> None:
    db = sql.Identifier(unique_name)
    pg.admin_sql(sql.SQL("CREATE DATABASE {}").format(db))
    pg.admin_sql(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(db))
    try:
        args = ["wait-for-db", "--dsn", pg.conninfo(MANAGED_ADMIN, unique_name), "--output", "json"]
        env = {"PGPASSWORD": pg.managed_password}
        once = cli(*args, "--once", env=env)
        assert once.code == 1 and once.result()["error_class"] == "permission_denied", once
        fail_fast = cli(*args, "--fail-fast", env=env)
        assert fail_fast.code == 3 and fail_fast.result()["sqlstate"] == "42501", fail_fast
    finally:
        pg.admin_sql(sql.SQL("DROP DATABASE {}").format(db))


@pytest.mark.parametrize(("spec", "code"), [(">=14,<19", 0), ("<14", 3), (">=19", 3)])
def test_server_version_range(cli: Cli, pg: Server, spec: str, code: int) -> None:
    result = cli("wait-for-db", "--dsn", pg.conninfo(), "--server-version", spec, "--output", "json",
                 env={"PGPASSWORD": pg.password})  # fmt: skip
    assert result.code == code, result
    if code == 3:
        report = result.result()
        assert report["error_class"] == "version_out_of_range" and report["attempts"] == 1
        assert f"PostgreSQL {pg.major}." in report["error"]


def test_query_level_waits_for_a_true_value(cli: Cli, pg: Server) -> None:
    env = {"PGPASSWORD": pg.password}
    false = cli("wait-for-db", "--once", "--dsn", pg.conninfo(), "--query", "SELECT 0", "--output", "json", env=env)
    assert false.code == 1 and false.result()["error_class"] == "query_false", false
    true = cli("wait-for-db", "--once", "--dsn", pg.conninfo(), "--query", "SELECT count(*) FROM pg_database", env=env)
    assert true.code == 0, true
    invalid = cli("wait-for-db", "--dsn", pg.conninfo(), "--query", "SELEC 1", "--output", "json", env=env)
    assert invalid.code == 3 and invalid.result()["sqlstate"] == "42601", invalid


def test_require_table_waits_for_migrations(cli: Cli, pg: Server, unique_name: str) -> None:
    table = sql.Identifier("public", unique_name)
    timer = later(1.0, lambda: pg.admin_sql(sql.SQL("CREATE TABLE {} (id int)").format(table)))
    try:
        result = cli("wait-for-db", "--dsn", pg.conninfo(MANAGED_ADMIN), "--require-table", f"public.{unique_name}",
                     "--timeout", "30", *FAST, env={"PGPASSWORD": pg.managed_password})  # fmt: skip
        timer.join()
        assert result.code == 0, result
        [warning] = warnings_of(result, "tables_missing")
        assert f"public.{unique_name}" in str(warning["error"])
    finally:
        timer.join()
        pg.admin_sql(sql.SQL("DROP TABLE IF EXISTS {}").format(table))


def test_reachable_accepts_a_wrong_password_login_does_not(cli: Cli, pg: Server) -> None:
    env = {"PGPASSWORD": "wrong-password"}
    reachable = cli("wait-for-db", "--once", "--require", "reachable", "--dsn", pg.conninfo(), env=env)
    assert reachable.code == 0, reachable
    login = cli("wait-for-db", "--once", "--dsn", pg.conninfo(), env=env)
    assert login.code == 1, login


def test_standby_is_not_ready_until_promoted(cli: Cli, own_server: Server) -> None:
    """A real server in recovery: 57P03 without hot standby, read-only with it."""
    server = own_server
    local = server.local
    local.stop(remove=False)
    (local.datadir / "standby.signal").touch()
    with open(local.datadir / "postgresql.conf", "a") as conf:
        conf.write("hot_standby = off\n")
    local.restart()
    env = {"PGPASSWORD": server.password}
    starting = cli("wait-for-db", "--once", "--require", "reachable", "--dsn", server.conninfo(), "--output", "json",
                   env=env)  # fmt: skip
    assert starting.code == 1 and starting.result()["sqlstate"] == "57P03", starting

    local.stop(remove=False)
    with open(local.datadir / "postgresql.conf", "a") as conf:
        conf.write("hot_standby = on\n")
    local.restart()
    read_only = cli("wait-for-db", "--once", "--writable", "--dsn", server.conninfo(), "--output", "json", env=env)
    assert read_only.code == 1 and read_only.result()["error_class"] == "read_only", read_only

    timer = later(1.0, local.promote)
    promoted = cli("wait-for-db", "--writable", "--dsn", server.conninfo(), "--timeout", "30", *FAST, env=env)
    timer.join()
    assert promoted.code == 0, promoted


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_ends_the_wait_within_a_second(cli: Cli, pg: Server, proxy: Proxy, signum: int, code: int) -> None:
    proxy.blackhole()  # an attempt in progress that would otherwise hang for --attempt-timeout
    running = cli.start("wait-for-db", "--dsn", proxy.conninfo(pg), "--attempt-timeout", "30", "--output", "json")
    time.sleep(1.0)
    sent = time.monotonic()
    running.proc.send_signal(signum)
    result = running.finish(timeout=10)
    assert time.monotonic() - sent < 1.0
    assert result.code == code, result
    assert result.result()["status"] == "interrupted"


def test_tls_required_by_a_server_without_tls(cli: Cli, pg: Server) -> None:
    """sslmode=require against a server without TLS: retried as tls_unavailable, exit 3 at once with --fail-fast."""
    args = ["wait-for-db", "--dsn", f"{pg.conninfo()} sslmode=require", "--output", "json"]
    once = cli(*args, "--once", env={"PGPASSWORD": pg.password})
    assert once.code == 1 and once.result()["error_class"] == "tls_unavailable", once
    fail_fast = cli(*args, "--fail-fast", env={"PGPASSWORD": pg.password})
    assert fail_fast.code == 3 and "SSL" in fail_fast.result()["error"], fail_fast


def test_unresolvable_host_is_dns(cli: Cli) -> None:
    result = cli("wait-for-db", "--once", "--dsn", "host=shared-postgresql.invalid", "--output", "json")
    assert result.code == 1, result
    assert result.result()["error_class"] == "dns"
    assert "Service" in result.result()["hint"]


@pytest.mark.slow
def test_nothing_listening_until_the_deadline_makes_few_attempts(cli: Cli) -> None:
    """While nothing listens the port is polled, not logged into: one attempt per --max-interval at most,
    and none in a burst at the deadline."""
    result = cli("wait-for-db", "--timeout", "3", "--dsn", f"host=127.0.0.1 port={free_port()} user=app",
                 "--output", "json")  # fmt: skip
    assert result.code == 124, result
    report = result.result()
    assert report["attempts"] <= 3 / 2 + 2 and 2.9 <= report["elapsed_s"] < 3.5, report


@pytest.mark.slow
def test_a_rejected_login_is_retried_once_per_max_interval_in_the_servers_log(cli: Cli, own_server: Server,
                                                                            tmp_path: Path) -> None:  # fmt: skip
    wrong = tmp_path / "pw"
    wrong.write_text("not-the-password")
    before = own_server.server_log().count("password authentication failed")
    result = cli("wait-for-db", "--timeout", "4", "--dsn", own_server.conninfo(), "--password-file", str(wrong),
                 "--output", "json")  # fmt: skip
    assert result.code == 124, result
    failed_logins = own_server.server_log().count("password authentication failed") - before
    assert failed_logins == result.result()["attempts"] <= 4 / 2 + 2, (failed_logins, result.result())
