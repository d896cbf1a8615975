"""``sharedpg check-pool`` against real connections: counts by state, limits, thresholds, hidden rows, outputs."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql

from tests.conftest import ROOT, Cli, Result
from tests.fix_roles import Tenant, make
from tests.fix_servers import RESERVED_16, Server


def check(cli: Cli, pg: Server, *args: str, user: str | None = None, password: str | None = None) -> Result:
    env = {"PGPASSWORD": password or pg.password}
    return cli("check-pool", "--dsn", pg.conninfo(user), *args, env=env)


def spec_file(tmp_path: Path, tenant: Tenant, pool_max: int, margin: int = 2) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "connection_limit_margin": margin,
                "tenants": [{"name": tenant.name, "stack": "cicd", "pool": {"max": pool_max}}],
            }
        )
    )
    return str(path)


def test_usable_slots_subtract_reserved_connections(cli: Cli, pg: Server) -> None:
    result = check(cli, pg, "--output", "json")
    assert result.code == 0, result
    capacity = result.result()["capacity"]
    reserved = RESERVED_16 if pg.major >= 16 and pg.local is not None else capacity["reserved_connections"]
    assert capacity["reserved_connections"] == reserved
    expected = capacity["max_connections"] - capacity["superuser_reserved_connections"] - reserved
    assert capacity["usable"] == expected


def test_connections_are_counted_by_state(cli: Cli, pg: Server, tenants: list[Tenant]) -> None:
    tenant = make(tenants, pg, cli)
    tenant.open(idle=2, in_transaction=1, active=1)
    result = check(cli, pg, "--role", tenant.name, "--output", "json")
    assert result.code == 0, result
    [role] = result.result()["roles"]
    assert role["connections"] == 4 and role["connection_limit"] == 10
    assert role["states"] == {"idle": 2, "idle in transaction": 1, "active": 1}


def test_warning_then_critical_near_the_role_limit(cli: Cli, pg: Server, tenants: list[Tenant]) -> None:
    tenant = make(tenants, pg, cli, limit=5)
    tenant.open(idle=4)
    warning = check(cli, pg, "--role", tenant.name, "--warn", "0.75", "--crit", "0.95")
    assert warning.code == 1, warning
    assert warning.stdout.startswith("CHECK-POOL WARNING")
    assert f"role {tenant.name}: 4 of its 5 connections (80%)" in warning.stdout
    tenant.open(idle=1)
    critical = check(cli, pg, "--role", tenant.name, "--warn", "0.75", "--crit", "0.95")
    assert critical.code == 2 and critical.stdout.startswith("CHECK-POOL CRITICAL"), critical


def test_drifted_limit_is_flagged_against_the_spec(cli: Cli, pg: Server, tenants: list[Tenant], tmp_path: Path) -> None:
    tenant = make(tenants, pg, cli, limit=99)
    spec = spec_file(tmp_path, tenant, pool_max=5)  # budget 5, expected limit 5 + 2
    result = check(cli, pg, "--role", tenant.name, "--spec", spec, "--output", "json")
    assert result.code == 1, result
    [finding] = result.result()["findings"]
    assert finding["status"] == "WARNING" and "CONNECTION LIMIT 99 differs from the spec's 7" in finding["message"]


def test_an_unprivileged_caller_gets_unknown_not_a_wrong_count(cli: Cli, pg: Server, tenants: list[Tenant]) -> None:
    me, other = make(tenants, pg, cli), make(tenants, pg, cli)
    other.open(idle=2)
    me.open(idle=1)
    hidden = check(cli, pg, user=me.name, password=me.password)
    assert hidden.code == 3, hidden
    assert "hidden from this role" in hidden.stdout and "pg_monitor" in hidden.stdout
    own = check(cli, pg, "--role", me.name, "--output", "json", user=me.name, password=me.password)
    assert own.code == 0 and own.result()["roles"][0]["connections"] >= 1, own
    pg.admin_sql(sql.SQL("GRANT pg_monitor TO {}").format(sql.Identifier(me.name)))
    monitored = check(cli, pg, "--output", "json", user=me.name, password=me.password)
    assert monitored.code == 0, monitored
    counts = {r["role"]: r["connections"] for r in monitored.result()["roles"]}
    assert counts[other.name] == 2


def test_prometheus_output_parses_and_carries_each_role(cli: Cli, pg: Server, tenants: list[Tenant]) -> None:
    tenant = make(tenants, pg, cli)
    tenant.open(idle=3)
    result = check(cli, pg, "--output", "prometheus")
    assert result.code == 0, result
    families = {f.name: f for f in text_string_to_metric_families(result.stdout)}
    samples = families["sharedpg_role_connections"].samples
    assert sum(s.value for s in samples if s.labels["role"] == tenant.name) == 3
    limits = {s.labels["role"]: s.value for s in families["sharedpg_role_connection_limit"].samples}
    assert limits[tenant.name] == 10
    assert families["sharedpg_usable_connections"].samples[0].value > 0


def test_with_role_the_metrics_say_they_count_that_role_only(cli: Cli, pg: Server, tenants: list[Tenant]) -> None:
    tenant = make(tenants, pg, cli)
    tenant.open(idle=2)
    result = check(cli, pg, "--role", tenant.name, "--output", "prometheus")
    families = {f.name: f for f in text_string_to_metric_families(result.stdout)}
    total = families["sharedpg_connections"]
    assert total.samples[0].value == 2 and f"of role {tenant.name} only" in total.documentation, total
    assert "sharedpg_authenticating_connections" not in families, "not counted for one role: not exported"
    everything = {f.name: f for f in text_string_to_metric_families(check(cli, pg, "--output", "prometheus").stdout)}
    assert "all roles" in everything["sharedpg_connections"].documentation


def test_unreachable_server_is_unknown_with_nothing_invented(cli: Cli) -> None:
    result = cli("check-pool", "--dsn", "host=127.0.0.1 port=1", "--output", "json")
    assert result.code == 3 == result.result()["exit_code"], result
    report = result.result()
    assert "cannot connect" in report["findings"][0]["message"]
    assert not {"capacity", "connections", "roles", "admin_headroom"} & set(report), "figures it never read"
    text = cli("check-pool", "--dsn", "host=127.0.0.1 port=1")
    assert text.stdout.startswith("CHECK-POOL UNKNOWN - server not read") and "usable" not in text.stdout
    prom = cli("check-pool", "--dsn", "host=127.0.0.1 port=1", "--output", "prometheus")
    families = {f.name: f.samples[0].value for f in text_string_to_metric_families(prom.stdout)}
    assert families == {"sharedpg_pool_status": 3, "sharedpg_up": 0}


def test_an_unknown_role_is_unknown_not_ok(cli: Cli, pg: Server) -> None:
    result = check(cli, pg, "--role", "no_such_tenant", "--output", "json")
    assert result.code == 3 == result.result()["exit_code"], result
    assert "role no_such_tenant does not exist" in result.result()["findings"][0]["message"]


def test_live_report_carries_the_specs_admin_headroom(cli: Cli, pg: Server) -> None:
    without = check(cli, pg, "--output", "json").result()
    assert "admin_headroom" not in without, "no spec given: the headroom is unknown, not 0"
    with_spec = check(cli, pg, "--spec", str(ROOT / "sharedpg_tools" / "default-spec.yaml"), "--output", "json")
    assert with_spec.result()["admin_headroom"] == 5


def test_offline_seed_plan_fits_and_an_overfull_one_does_not(cli: Cli, tmp_path: Path) -> None:
    fits = cli("check-pool", "--offline")
    assert fits.code == 0, fits
    assert fits.stdout.startswith("CHECK-POOL OK - 65 budgeted connections of 82 usable slots")
    raw = yaml.safe_load(cli("bootstrap", "--print-default-spec").stdout)
    raw["tenants"].append({"name": "keycloak", "stack": "backstage", "pool": {"max": 10}, "replicas": 2})
    (tmp_path / "more.yaml").write_text(yaml.safe_dump(raw))
    full = cli("check-pool", "--offline", "--spec", str(tmp_path / "more.yaml"), "--output", "json")
    assert full.code == 2 == full.result()["exit_code"], full  # CRITICAL, as printed
    message = full.result()["findings"][0]["message"]
    assert "does not fit by 8" in message and "keycloak 20 (10x2x1)" in message


def test_the_limits_plus_the_headroom_must_fit_not_only_the_budgets(cli: Cli, tmp_path: Path) -> None:
    """Budgets that fit with limits that do not: with every tenant at its CONNECTION LIMIT the admin could not
    connect. The built-in spec and the shipped ConfigMaps fit both ways."""
    fits = cli("check-pool", "--offline", "--output", "json").result()
    assert fits["status"] == "OK" and fits["findings"] == [], fits
    for name in ("configmap-tenants.yaml", "configmap-tenants-pragmatic.yaml"):
        shipped = yaml.safe_load((ROOT / "k8s-snippets" / "bootstrap" / name).read_text())
        (tmp_path / name).write_text(next(iter(shipped["data"].values())))
        assert cli("check-pool", "--offline", "--spec", str(tmp_path / name)).code == 0, name
    raw = yaml.safe_load(cli("bootstrap", "--print-default-spec").stdout)
    raw["connection_limit_margin"] = 3  # budgets 65 + 5 = 70 fit; limits 83 + 5 = 88 do not, of 82
    (tmp_path / "margin.yaml").write_text(yaml.safe_dump(raw))
    tight = cli("check-pool", "--offline", "--spec", str(tmp_path / "margin.yaml"), "--output", "json")
    assert tight.code == 2, tight
    [finding] = tight.result()["findings"]
    assert "CONNECTION LIMITs 83 + admin headroom 5 > 82 usable slots" in finding["message"], finding
    assert "connection_limit_margin" in finding["hint"]
    refused = cli("bootstrap", "--plan", "--spec", str(tmp_path / "margin.yaml"))
    assert refused.code == 2 and "would lock the admin out" in refused.stderr, refused


def test_offline_capacity_flags_override_the_spec(cli: Cli) -> None:
    result = cli("check-pool", "--offline", "--max-connections", "100", "--reserved", "5", "--output", "json")
    assert result.code == 0, result
    assert result.result()["capacity"]["usable"] == 100 - 3 - 5


def test_invalid_input_is_unknown_in_both_modes(cli: Cli) -> None:
    assert cli("check-pool", "--warn", "1.5").code == 3
    assert cli("check-pool", "--offline", "--warn", "1.5").code == 3
    assert cli("check-pool", "--offline", "--max-connections", "ten").code == 3


def test_offline_warning_and_critical_exit_as_printed(cli: Cli) -> None:
    for max_connections, status in (("85", "OK"), ("60", "CRITICAL")):
        result = cli("check-pool", "--offline", "--max-connections", max_connections, "--output", "json")
        assert result.result()["status"] == status and result.code == result.result()["exit_code"], result


def test_help_shows_the_nagios_codes(cli: Cli) -> None:
    shown = cli("check-pool", "--help").stdout
    assert "exit codes (Nagios" in shown and "3    UNKNOWN" in shown and "124" not in shown


def test_a_tenant_at_its_full_budget_is_ok_and_one_more_is_a_warning(cli: Cli, pg: Server, tenants: list[Tenant],
                                                                     tmp_path: Path) -> None:  # fmt: skip
    """The spec's margin over a budget is small (2), so at a full pool a tenant sits at 83 % of its limit (the
    soak measured 83-91 % for the six): that is the plan, not a warning; a connection beyond the budget is."""
    tenant = make(tenants, pg, cli, limit=12)
    spec = spec_file(tmp_path, tenant, pool_max=10)  # budget 10, expected limit 12
    tenant.open(idle=10)
    full = check(cli, pg, "--spec", spec, "--role", tenant.name, "--output", "json")
    assert full.code == 0 and full.result()["findings"] == [], full
    tenant.open(idle=1)
    over = check(cli, pg, "--spec", spec, "--role", tenant.name, "--output", "json")
    [finding] = over.result()["findings"]
    assert over.code == 1 and "11 of its 12 connections (92%), above its budget of 10" in finding["message"], over


def stalled_logins(pg: Server, count: int) -> list[socket.socket]:
    """Connections that send a startup packet and never answer the password request: each holds a slot
    until the server's authentication_timeout, with no role in pg_stat_activity yet."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection((pg.host, pg.port))
        body = struct.pack("!I", 196608) + b"user\0nobody_yet\0database\0postgres\0\0"
        sock.sendall(struct.pack("!I", len(body) + 4) + body)
        assert sock.recv(1) == b"R", "the server asks for a password"
        sockets.append(sock)
    return sockets


def test_connections_still_authenticating_are_counted(cli: Cli, pg: Server) -> None:
    """PostgreSQL 18 lists a backend in pg_stat_activity while it authenticates (no role yet); 15 and 16 list
    it only once logged in, so there such slots cannot be seen (docs/guide.md, "Security model")."""
    stalled = stalled_logins(pg, 6)
    try:
        report = check(cli, pg, "--output", "json").result()
        text = check(cli, pg, "--output", "prometheus").stdout
    finally:
        for sock in stalled:
            sock.close()
    visible = 6 if pg.major >= 18 else 0
    assert report["authenticating"] == visible, report
    assert report["connections"] >= visible + 1, "they hold slots: the total counts them"
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["sharedpg_authenticating_connections"].samples[0].value == visible
