"""The contention watch, with Prometheus's own tools: the PrometheusRule checked and unit-tested by
``promtool``, every metric the rules and the dashboard name exported by sharedpg, and a real Prometheus
server scraping ``serve-metrics`` against a real PostgreSQL while a tenant opens connections, until its
alert fires (Debian's ``prometheus`` package; scripts/test.sh installs it)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

from scripts.doc_sections import every_metric_family
from sharedpg_tools.localserver import free_port
from tests.conftest import ROOT, Cli
from tests.fix_exporter import Exporter, Start
from tests.fix_gitops import SCHEMAS, SNIPPETS, Renderer, _annotation, row_fuses
from tests.fix_roles import Tenant, make
from tests.fix_servers import Server, missing
from tests.func.test_bootstrap import Platform
from tests.func.test_check_pool import spec_file
from tests.func.test_k8s_snippets import objects, resolve_env

MONITORING = ROOT / "k8s-snippets" / "monitoring"
RULE = MONITORING / "prometheusrule.yaml"
RULE_TESTS = ROOT / "tests" / "data" / "prometheus" / "rules-test.yaml"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing(f"{name} not installed (Debian's prometheus package; scripts/test.sh installs it as root)")
    return path


def rule_groups(keep_descriptions: bool = True) -> dict[str, Any]:
    """The PrometheusRule's spec: a Prometheus rule file."""
    spec: dict[str, Any] = yaml.safe_load(RULE.read_text())["spec"]
    if not keep_descriptions:
        for group in spec["groups"]:
            for rule in group["rules"]:
                rule.get("annotations", {}).pop("description", None)
    return spec


def alerts_of(rules: dict[str, Any]) -> Iterator[dict[str, Any]]:
    return (rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule)


def alerts() -> list[dict[str, Any]]:
    return list(alerts_of(rule_groups()))


def test_prometheusrule_passes_promtool_check(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(rule_groups()))
    done = subprocess.run([_tool("promtool"), "check", "rules", str(rules)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in done.stdout


def test_alerts_fire_and_stay_quiet_as_their_unit_tests_say(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups(keep_descriptions=False)))
    shutil.copy(RULE_TESTS, tmp_path / "rules-test.yaml")
    done = subprocess.run([_tool("promtool"), "test", "rules", "rules-test.yaml"], cwd=tmp_path, capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr


def test_every_alert_has_a_case_that_fires_and_one_that_does_not() -> None:
    cases: dict[str, set[bool]] = {}
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], set()).add(bool(case["exp_alerts"]))
    for alert in alerts():
        assert cases.get(alert["alert"]) == {True, False}, f"{alert['alert']}: a firing and a quiet case, please"
        assert alert["labels"]["severity"] in {"warning", "critical"}
        assert {"summary", "description"} <= set(alert["annotations"])


def _referenced_metrics(text: str) -> set[str]:
    return set(re.findall(r"\bsharedpg_[a-z_]+\b", text)) - {"sharedpg_metrics"}


def test_rules_and_dashboard_name_only_metrics_sharedpg_exports() -> None:
    exported = set()
    for family in every_metric_family():
        exported |= {family.name, *(sample.name for sample in family.samples)}
    dashboard = (MONITORING / "dashboards" / "sharedpg.json").read_text()
    for where, text in (("prometheusrule.yaml", RULE.read_text()), ("the dashboard", dashboard)):
        unknown = _referenced_metrics(text) - exported
        assert not unknown, f"{where} names metrics sharedpg does not export: {sorted(unknown)}"


class Prometheus:
    """A real Prometheus server scraping one target every second and evaluating the rules every second."""

    def __init__(self, workdir: Path, target: str, rules: dict[str, Any]):
        self.port = free_port()
        (workdir / "rules.yaml").write_text(yaml.safe_dump(rules))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["rules.yaml"],
            "scrape_configs": [{"job_name": "sharedpg-metrics", "static_configs": [{"targets": [target]}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = (workdir / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [_tool("prometheus"), f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=workdir,
        )  # fmt: skip
        self.wait_for(lambda: self.api("query", query="up") is not None, "Prometheus to answer")

    def api(self, endpoint: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{endpoint}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return json.loads(answer.read())["data"]
        except OSError:
            return None

    def value(self, query: str) -> float | None:
        result = (self.api("query", query=query) or {}).get("result") or []
        return float(result[0]["value"][1]) if result else None

    def firing(self, alertname: str) -> list[dict[str, str]]:
        data = self.api("alerts") or {"alerts": []}
        return [a["labels"] for a in data["alerts"] if a["labels"]["alertname"] == alertname and a["state"] == "firing"]

    def wait_for(self, condition: Any, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.proc.poll() is None, f"Prometheus exited: {Path(self.log.name).read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"waited {timeout:g} s for {what}"
            time.sleep(0.5)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Any]:
    started: list[Prometheus] = []

    def start(target: str) -> Prometheus:
        rules = rule_groups()
        for rule in alerts_of(rules):  # the durations are promtool's to test; here an alert fires at once
            rule["for"] = "0s"
        started.append(Prometheus(tmp_path, target, rules))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads((MONITORING / "dashboards" / "sharedpg.json").read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


@pytest.mark.parametrize("pg", ["pg18"], indirect=True)  # one server is enough: the exporter is tested on all
def test_prometheus_scrapes_serve_metrics_and_the_tenant_alerts_fire(
    prometheus_for: Any, start_exporter: Start, cli: Cli, pg: Server, tenants: list[Tenant], tmp_path: Path
) -> None:
    """``for:`` durations are set to 0 s here (promtool's unit tests cover them) so the run takes seconds."""
    tenant = make(tenants, pg, cli, limit=5)
    exporter = start_exporter(pg.conninfo(), pg.password, "--spec", spec_file(tmp_path, tenant, 3), "--cache", "0")
    prometheus = prometheus_for(exporter.url.removeprefix("http://"))
    role = f'role="{tenant.name}"'
    prometheus.wait_for(lambda: prometheus.value(f"sharedpg_role_connection_limit{{{role}}}") == 5, "the limit")
    assert prometheus.value('up{job="sharedpg-metrics"}') == 1
    assert prometheus.value(f"sharedpg_role_connection_budget{{{role}}}") == 3
    assert prometheus.value("sharedpg_up") == 1 and prometheus.value("sharedpg_usable_connections")
    assert not prometheus.firing("SharedpgTenantNearConnectionLimit")
    tenant.open(idle=4)  # 80 %
    prometheus.wait_for(lambda: prometheus.value(f"sum(sharedpg_role_connections{{{role}}})") == 4, "4 sessions")
    prometheus.wait_for(lambda: prometheus.firing("SharedpgTenantNearConnectionLimit"), "the 80 % alert")
    [fired] = prometheus.firing("SharedpgTenantNearConnectionLimit")
    assert fired["role"] == tenant.name and fired["severity"] == "warning"
    assert not prometheus.firing("SharedpgTenantAtConnectionLimit")
    tenant.open(idle=1)  # 100 %
    prometheus.wait_for(lambda: prometheus.firing("SharedpgTenantAtConnectionLimit"), "the 95 % alert")
    for title, expr in dashboard_queries():  # every panel's query, on this Prometheus, while the alerts fire
        answer = prometheus.api("query", query=expr.replace("$role", ".*"))
        assert answer is not None, f"the dashboard's {title!r} query is refused: {expr}"
        assert answer["result"], f"the dashboard's {title!r} query finds nothing: {expr}"
    tenant.stack.close()  # the app lets its connections go: the alerts resolve
    prometheus.wait_for(lambda: not prometheus.firing("SharedpgTenantNearConnectionLimit"), "the alert to resolve")
    assert not prometheus.firing("SharedpgExporterCannotReadServer")


def test_the_deployments_command_reads_every_session_as_the_login_bootstrap_makes(
    cli: Cli, pg: Server, admin: str, tenants: list[Tenant], tmp_path: Path
) -> None:
    """deployment.yaml's command line and environment (the Service and Secret pointed at the test server and
    the password bootstrap stored), as the monitoring login the bootstrap Job makes with either admin kind. A
    CREATEROLE admin on 16+ may not grant pg_monitor: bootstrap says so and still succeeds; the exporter then
    exports the hidden sessions, which alerts."""
    [deployment] = [d for path, d in objects("Deployment") if path.parent == MONITORING]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    platform = Platform(cli, pg, admin, tmp_path)
    exporter = None
    try:
        made = platform.run()
        assert made.code == 0, made
        watch = made.result()["monitoring"]
        password_file = platform.password_dir / platform.monitor_role
        monitor_password = password_file.read_text().strip()
        cli.secrets.add(monitor_password)
        port = free_port()
        args = [{"/etc/sharedpg/tenants.yaml": str(platform.spec), ":9187": f"127.0.0.1:{port}"}.get(a, a)
                for a in container["args"]]  # fmt: skip
        env = resolve_env(container, pg, {}, "") | {"PGUSER": platform.monitor_role,
                                                    "PGPASSWORD_FILE": str(password_file)}  # fmt: skip
        exporter = Exporter(cli.start(*args, env=env), port)
        other = make(tenants, pg, cli)
        other.open(idle=2)
        families = exporter.scrape()
        assert families["sharedpg_up"][0].value == 1
        budgets = {s.labels["role"]: s.value for s in families["sharedpg_role_connection_budget"]}
        assert set(budgets) == set(platform.names) and sum(budgets.values()) == 65  # the seed's six tenants
        if admin == pg.superuser or pg.major < 16:
            assert "error" not in watch, watch
            assert "sharedpg_hidden_sessions" not in families
            idle = [s.value for s in families["sharedpg_role_connections"]
                    if s.labels == {"role": other.name, "state": "idle"}]  # fmt: skip
            assert idle == [2]
        else:
            assert "ADMIN OPTION on pg_monitor" in watch["error"], watch
            assert families["sharedpg_hidden_sessions"][0].value >= 2
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            psycopg.connect(pg.conninfo(platform.monitor_role, platform.names[0]), password=monitor_password)
    finally:
        if exporter is not None:
            exporter.stop()
        pg.drop_tenants(platform.roles)


def _subset(labels: dict[str, str], of: dict[str, str]) -> bool:
    return all(of.get(k) == v for k, v in labels.items())


def test_kube_prometheus_stack_finds_the_exporter_the_alerts_and_the_dashboard(renderer: Renderer) -> None:
    """The monitoring Application as Argo CD renders it (kustomize), against kube-prometheus-stack 88.5.3's
    default values (tests/data/schemas): its Prometheus selects ServiceMonitors and rules by the release
    label in every namespace, and its Grafana sidecar loads ConfigMaps labelled grafana_dashboard: "1" from
    all namespaces. Then each link: ServiceMonitor -> Service -> pod port, and the database's NetworkPolicy."""
    tree = renderer.tree(row_fuses((True, True, True, True)))
    [app] = [p.obj for p in tree.objects if p.kind == "Application" and p.name == "sharedpg-monitoring"]
    assert _annotation(app, "sync-wave") == "3", "after the bootstrap Job (2) made the monitoring login"
    ours = {(p.kind, p.name): p.obj for p in tree.objects if p.app == "sharedpg-monitoring"}
    kps = yaml.safe_load((SCHEMAS / "values-default-kube-prometheus-stack-88.5.3.yaml").read_text())
    prom = kps["prometheus"]["prometheusSpec"]
    assert prom["serviceMonitorSelectorNilUsesHelmValues"] and prom["ruleSelectorNilUsesHelmValues"]
    assert prom["serviceMonitorNamespaceSelector"] == {} and prom["ruleNamespaceSelector"] == {}
    monitor, rule = ours["ServiceMonitor", "sharedpg-metrics"], ours["PrometheusRule", "sharedpg"]
    for selected in (monitor, rule):  # the selector kube-prometheus-stack builds: release: <its release>
        assert selected["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"] == rule_groups()
    service, deployment = ours["Service", "sharedpg-metrics"], ours["Deployment", "sharedpg-metrics"]
    assert _subset(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    [endpoint] = monitor["spec"]["endpoints"]
    [port] = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
    pod = deployment["spec"]["template"]
    assert _subset(service["spec"]["selector"], pod["metadata"]["labels"])
    [container] = pod["spec"]["containers"]
    assert port["targetPort"] in {p["name"] for p in container["ports"]}
    assert f'up{{job="{service["metadata"]["name"]}"}}' in RULE.read_text(), "the job label is the Service's name"
    sidecar = kps["grafana"]["sidecar"]["dashboards"]
    assert sidecar["enabled"] and sidecar["searchNamespace"] == "ALL"
    dashboard = ours["ConfigMap", "sharedpg-dashboard"]
    assert dashboard["metadata"]["labels"][sidecar["label"]] == sidecar["labelValue"]
    assert json.loads(dashboard["data"]["sharedpg.json"]) == json.loads(
        (MONITORING / "dashboards" / "sharedpg.json").read_text()
    )
    [policy] = [p.obj for p in tree.objects if p.kind == "NetworkPolicy" and p.name == "shared-postgresql"]
    peers = [
        peer.get("podSelector", {}).get("matchLabels") for rule_ in policy["spec"]["ingress"] for peer in rule_["from"]
    ]
    assert any(labels and _subset(labels, pod["metadata"]["labels"]) for labels in peers), (
        "the exporter may not reach the server"
    )
    guard = ours["NetworkPolicy", "sharedpg-metrics"]  # only Prometheus reaches the exporter
    assert _subset(guard["spec"]["podSelector"]["matchLabels"], pod["metadata"]["labels"])
    [admitted] = guard["spec"]["ingress"]
    [peer] = admitted["from"]
    assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}, peer
    assert set(peer["namespaceSelector"]["matchLabels"]) == {"kubernetes.io/metadata.name"}
    assert [p["port"] for p in admitted["ports"]] == [9187]


def test_monitoring_off_renders_no_monitoring_application(renderer: Renderer, tmp_path: Path) -> None:
    chart = tmp_path / "root"
    shutil.copytree(SNIPPETS / "root", chart)
    values = yaml.safe_load((chart / "values.yaml").read_text())
    values["monitoring"]["enabled"] = False
    (chart / "values.yaml").write_text(yaml.safe_dump(values))
    names = {d["metadata"]["name"] for d in renderer.root(row_fuses((True, True, True, True)), chart=chart)}
    assert "sharedpg-monitoring" not in names and "sharedpg-bootstrap" in names


def _run_with_monitor(cli: Cli, pg: Server, admin: str, tmp_path: Path, **monitoring: Any) -> tuple[Platform, Any]:
    platform = Platform(cli, pg, admin, tmp_path)
    platform.raw["monitoring"] |= monitoring
    platform.spec.write_text(yaml.safe_dump(platform.raw))
    return platform, platform.run()


def test_the_monitoring_login_is_made_once_and_left_alone_after(cli: Cli, pg: Server, admin: str,
                                                                tmp_path: Path) -> None:  # fmt: skip
    """With a CREATEROLE admin on 16+ the GRANT is refused each run, saying what was made, until a superuser
    runs the one GRANT the hint gives; from then on that admin's runs leave the login alone too."""
    platform, first = _run_with_monitor(cli, pg, admin, tmp_path)
    try:
        assert first.code == 0, first
        made = first.result()["monitoring"]
        if admin != pg.superuser and pg.major >= 16:
            assert made["action"] == "failed" and f"created role {platform.monitor_role}" in made["changes"], made
            assert platform.run().result()["monitoring"]["action"] == "failed", "refused again, not half-done"
            pg.admin_sql(made["hint"].split("a superuser runs ")[1].split(" once")[0])  # the fix it gives
        else:
            assert made["action"] == "created", made
        again = platform.run()
        assert again.code == 0 and again.result()["monitoring"]["action"] == "unchanged", again.result()
        [(limit, comment)] = pg.admin_sql("SELECT rolconnlimit, shobj_description(oid, 'pg_authid') FROM pg_roles "
                                          "WHERE rolname = %s", platform.monitor_role)  # fmt: skip
        assert limit == 2 and comment == "sharedpg monitoring login"
    finally:
        pg.drop_tenants(platform.roles)


@pytest.mark.parametrize(("setup", "needle"), [
    ("CREATE ROLE {} LOGIN CREATEDB", "ALTER ROLE {} NOCREATEDB"),
    ("CREATE ROLE {} LOGIN IN ROLE pg_read_all_data", "REVOKE pg_read_all_data FROM {}"),
])  # fmt: skip
def test_a_role_with_more_than_a_monitoring_login_may_have_is_refused_not_changed(
    cli: Cli, pg: Server, tmp_path: Path, setup: str, needle: str
) -> None:
    platform = Platform(cli, pg, pg.superuser, tmp_path)
    pg.admin_sql(sql.SQL(setup.replace("{}", "{role}")).format(role=sql.Identifier(platform.monitor_role)))
    try:
        result = platform.run()
        assert result.code == 0, "the apps' tenants are made all the same"
        watch = result.result()["monitoring"]
        assert watch["action"] == "failed" and needle.format(platform.monitor_role) in watch["hint"], watch
        assert "monitoring login failed" in result.stderr
        members = pg.admin_sql("SELECT pg_has_role(%s, 'pg_monitor', 'MEMBER')", platform.monitor_role)
        assert members == [(False,)], "nothing granted to a role that was refused"
    finally:
        pg.drop_tenants(platform.roles)


def test_a_tenants_role_is_never_the_monitoring_login(cli: Cli, pg: Server, tmp_path: Path) -> None:
    platform = Platform(cli, pg, pg.superuser, tmp_path)
    platform.raw["monitoring"]["role"] = platform.names[0]
    platform.spec.write_text(yaml.safe_dump(platform.raw))
    result = platform.run()
    assert result.code == 2 and len(result.log_lines) == 1, result
    assert f"role '{platform.names[0]}' is a tenant's" in result.stderr
