"""serve-metrics against the real servers: what Prometheus scrapes while tenants connect, what it gets when the
server cannot be read (that fact, no zeros), the cache that makes a burst of scrapes one read, and the
least-privilege login it is meant to run as."""

from __future__ import annotations

import resource
import secrets
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from sharedpg_tools.localserver import free_port
from tests.conftest import Cli
from tests.fix_exporter import Exporter, Start
from tests.fix_proxy import Proxy
from tests.fix_roles import Tenant, make
from tests.fix_servers import Server
from tests.func.test_check_pool import spec_file


def by_role(samples: list[Any], role: str) -> dict[str, float]:
    return {s.labels.get("state", ""): s.value for s in samples if s.labels.get("role") == role}


def test_scrape_carries_each_tenant_by_state_with_its_limit_and_budget(
    start_exporter: Start, cli: Cli, pg: Server, tenants: list[Tenant], tmp_path: Path
) -> None:
    tenant = make(tenants, pg, cli, limit=12)
    tenant.open(idle=2, in_transaction=1)
    exporter = start_exporter(pg.conninfo(), pg.password, "--spec", spec_file(tmp_path, tenant, 4), "--cache", "0")
    families = exporter.scrape()
    assert families["sharedpg_up"][0].value == 1
    states = by_role(families["sharedpg_role_connections"], tenant.name)
    assert states["idle"] == 2 and states["idle in transaction"] == 1 and states["active"] == 0
    assert by_role(families["sharedpg_role_connection_limit"], tenant.name) == {"": 12}
    assert by_role(families["sharedpg_role_connection_budget"], tenant.name) == {"": 4}
    assert by_role(families["sharedpg_role_expected_connection_limit"], tenant.name) == {"": 6}  # budget + margin
    usable = families["sharedpg_usable_connections"][0].value
    reserved = sum(s.value for s in families["sharedpg_reserved_connections"])
    assert usable == families["sharedpg_max_connections"][0].value - reserved
    assert families["sharedpg_connections"][0].value >= 3
    tenant.open(idle=3)  # the next scrape reads again (no cache): Prometheus sees the change
    assert by_role(exporter.scrape()["sharedpg_role_connections"], tenant.name)["idle"] == 5
    assert "Traceback" not in exporter.stop()


def test_a_burst_of_scrapes_costs_one_read(start_exporter: Start, pg: Server) -> None:
    exporter = start_exporter(pg.conninfo(), pg.password, "--cache", "30")
    with ThreadPoolExecutor(max_workers=10) as pool:
        scrapes = list(pool.map(lambda _: exporter.scrape(), range(10)))
    reads = [s.value for s in exporter.scrape()["sharedpg_exporter_reads"] if s.labels["result"] == "ok"]
    assert reads == [1], "ten scrapes together, and one more, read the server once"
    assert all(s["sharedpg_up"][0].value == 1 for s in scrapes)


def test_a_server_that_cannot_be_read_is_exported_as_such_not_as_zeros(start_exporter: Start, pg: Server,
                                                                        cli: Cli) -> None:  # fmt: skip
    proxy = Proxy(pg.host, pg.port)
    proxy.up()
    exporter = start_exporter(proxy.conninfo(pg), pg.password, "--cache", "0", "--read-timeout", "2")
    assert exporter.scrape()["sharedpg_up"][0].value == 1
    proxy.down()
    down = exporter.scrape()
    assert down["sharedpg_up"][0].value == 0 and down["sharedpg_pool_status"][0].value == 3
    assert not {"sharedpg_role_connections", "sharedpg_connections", "sharedpg_usable_connections"} & set(down)
    assert exporter.get("/healthz")[0] == 200, "liveness does not follow the database"
    proxy.blackhole()  # accepts and never answers: the read is bounded by --read-timeout
    started = time.monotonic()
    assert exporter.scrape()["sharedpg_up"][0].value == 0
    assert time.monotonic() - started < 10
    proxy.up()
    again = exporter.scrape()
    assert again["sharedpg_up"][0].value == 1
    errors = [s.value for s in again["sharedpg_exporter_reads"] if s.labels["result"] == "error"]
    assert errors == [2]
    log = exporter.stop()
    assert log.count("cannot read the server") == 1, "one line per failure streak, not per scrape"
    assert "reading the server again" in log
    proxy.down()


def test_a_login_without_pg_monitor_exports_hidden_sessions_not_low_counts(
    start_exporter: Start, cli: Cli, pg: Server, tenants: list[Tenant]
) -> None:
    tenant, viewer = make(tenants, pg, cli), make(tenants, pg, cli)
    tenant.open(idle=2)
    exporter = start_exporter(pg.conninfo(viewer.name), viewer.password, "--cache", "0")
    families = exporter.scrape()
    assert families["sharedpg_hidden_sessions"][0].value >= 2
    assert "sharedpg_role_connections" not in families, "counts it cannot see are not exported"
    assert families["sharedpg_pool_status"][0].value == 3


def test_the_monitoring_login_reads_every_session_and_no_tenant_data(
    start_exporter: Start, cli: Cli, pg: Server, tenants: list[Tenant]
) -> None:
    """What the snippets deploy: a login that is a member of pg_monitor only (the bootstrap Job makes it)."""
    tenant, monitor = make(tenants, pg, cli), make(tenants, pg, cli)
    pg.admin_sql(sql.SQL("GRANT pg_monitor TO {}").format(sql.Identifier(monitor.name)))
    tenant.open(idle=2)
    exporter = start_exporter(pg.conninfo(monitor.name), monitor.password, "--cache", "0")
    families = exporter.scrape()
    assert "sharedpg_hidden_sessions" not in families
    assert by_role(families["sharedpg_role_connections"], tenant.name)["idle"] == 2


def test_bad_listen_addresses_are_one_line_usage_errors(cli: Cli, pg: Server) -> None:
    for value in ("9187", "host:port", ":0", ":70000"):
        result = cli("serve-metrics", "--listen", value, "--dsn", pg.conninfo())
        assert result.code == 2 and "--listen" in result.stderr and len(result.log_lines) == 1, result
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = cli("serve-metrics", "--listen", f"127.0.0.1:{taken.getsockname()[1]}", "--dsn", pg.conninfo())
    assert result.code == 2 and "choose a free port" in result.stderr and len(result.log_lines) == 1, result


def monitored_from_a_file(start_exporter: Start, cli: Cli, pg: Server, tenants: list[Tenant],
                          tmp_path: Path) -> tuple[Tenant, Path, Exporter]:  # fmt: skip
    """A pg_monitor login whose password serve-metrics reads from a file (the Secret's), scraped once."""
    monitor = make(tenants, pg, cli)
    pg.admin_sql(sql.SQL("GRANT pg_monitor TO {}").format(sql.Identifier(monitor.name)))
    secret = tmp_path / "password"
    secret.write_text(monitor.password)
    exporter = start_exporter(pg.conninfo(monitor.name), "", "--cache", "0", "--password-file", str(secret))
    assert exporter.scrape()["sharedpg_up"][0].value == 1
    return monitor, secret, exporter


def test_a_rotated_password_is_read_from_its_file_on_the_next_scrape(
    start_exporter: Start, cli: Cli, pg: Server, tenants: list[Tenant], tmp_path: Path
) -> None:
    """The Secret's file changes when the ExternalSecret refreshes: the exporter logs in with the new password
    without a restart (and, between the role's change and the file's, says it cannot read the server)."""
    monitor, secret, exporter = monitored_from_a_file(start_exporter, cli, pg, tenants, tmp_path)
    rotated = monitor.password[::-1] + "x"
    cli.secrets.add(rotated)
    pg.admin_sql(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(monitor.name), sql.Literal(rotated)))
    assert exporter.scrape()["sharedpg_up"][0].value == 0
    secret.write_text(rotated)
    assert exporter.scrape()["sharedpg_up"][0].value == 1
    assert "password authentication failed" in exporter.stop()


def test_an_unreadable_spec_is_a_one_line_usage_error(cli: Cli, pg: Server, tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text("tenants: [{name: a, stack: nope, pool: {max: 1}}]\n")
    for spec in (str(tmp_path / "missing.yaml"), str(tmp_path / "spec.yaml")):
        result = cli("serve-metrics", "--listen", f"127.0.0.1:{free_port()}", "--spec", spec, "--dsn", pg.conninfo())
        assert result.code == 2 and len(result.log_lines) == 1 and spec in result.stderr, result


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set (VmHWM), what a memory limit would have had to hold."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize("pg", ["pg18"], indirect=True)  # the exporter's own limits, whatever the server
def test_five_thousand_idle_clients_neither_stop_scrapes_nor_outgrow_the_memory_limit(
    start_exporter: Start, pg: Server
) -> None:
    """Clients that connect and say nothing (or half a request), from any namespace the NetworkPolicy admits:
    scrapes still answer, and the exporter stays under the Deployment's 64 Mi limit with few descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))  # the test's own 5,000 sockets
    exporter = start_exporter(pg.conninfo(), pg.password, "--cache", "0")
    pid = exporter.running.proc.pid
    port = int(exporter.url.rsplit(":", 1)[1])
    idle: list[socket.socket] = []
    try:
        for n in range(5000):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            if n % 2:
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # half a request, never finished
            idle.append(sock)
            if n % 1000 == 999:
                assert exporter.scrape()["sharedpg_up"][0].value == 1, f"a scrape failed with {n + 1} idle clients"
        scrapes = [exporter.scrape()["sharedpg_up"][0].value for _ in range(5)]
        descriptors = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    finally:
        for sock in idle:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert scrapes == [1] * 5
    assert descriptors < 400, f"{descriptors} descriptors open: connections are not bounded"
    assert peak_rss_mib(pid) < 64, f"peak RSS {peak_rss_mib(pid):.1f} MiB"
    assert "Traceback" not in exporter.stop()


def test_an_empty_or_missing_password_file_is_a_failed_read_not_an_error_page(
    start_exporter: Start, cli: Cli, pg: Server, tenants: list[Tenant], tmp_path: Path
) -> None:
    """The Secret's file during a rotation: empty, then gone, then back."""
    monitor, secret, exporter = monitored_from_a_file(start_exporter, cli, pg, tenants, tmp_path)
    secret.write_text("")
    empty = exporter.scrape()
    assert empty["sharedpg_up"][0].value == 0 and empty["sharedpg_pool_status"][0].value == 3
    secret.unlink()
    assert exporter.scrape()["sharedpg_up"][0].value == 0
    secret.write_text(monitor.password)
    assert exporter.scrape()["sharedpg_up"][0].value == 1
    log = exporter.stop()
    assert log.count("cannot read the server") == 1 and "is empty" in log and "Traceback" not in log, log


def test_a_login_without_a_database_named_gets_the_fix_not_the_bootstrap_job(start_exporter: Start, cli: Cli,
                                                                              pg: Server) -> None:  # fmt: skip
    """The monitoring login has no database of its own: a --dsn without dbname makes libpq ask for one."""
    name, password = f"monitor_{secrets.token_hex(3)}", secrets.token_urlsafe(16)
    cli.secrets.add(password)
    create = sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE pg_monitor")
    pg.admin_sql(create.format(sql.Identifier(name), sql.Literal(password)))
    try:
        exporter = start_exporter(f"host={pg.host} port={pg.port} user={name}", password, "--cache", "0")
        assert exporter.scrape()["sharedpg_up"][0].value == 0
        log = exporter.stop()
    finally:
        pg.admin_sql(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))
    assert "add dbname=postgres to --dsn" in log, log
