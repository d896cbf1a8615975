"""k8s-snippets/, validated offline and run for real: schemas, consistency with the tenants spec, and each
snippet's own sharedpg command line against a real server, so a snippet cannot drift from the CLI."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from sharedpg_tools import spec as spec_module
from tests.conftest import ROOT, Cli
from tests.fix_servers import Server

SNIPPETS = ROOT / "k8s-snippets"
SCHEMAS = ROOT / "tests" / "data" / "schemas"  # copied from the planning folder, with licences
K8S_VERSION = "1.33.0"
SERVICE_HOST = "shared-postgresql.database.svc.cluster.local"
# the ConfigMap sharedpg-database the root chart renders into every client namespace, with no database values set
DATABASE_CONFIGMAP = {"PGHOST": SERVICE_HOST, "PGPORT": "5432", "PGSSLMODE": "disable"}
# the custom resources written as plain files (the root chart's are validated rendered: test_gitops.py)
CRD_SCHEMAS = {
    "ExternalSecret": "externalsecret-external-secrets.io-v1.json",
    "Application": "application-argoproj.io-v1alpha1.json",
}
# values overlay -> (tenant, chart defaults file, path of the pool size, free-form subtrees)
OVERLAYS: dict[str, tuple[str, str, tuple[str, ...], tuple[tuple[str, ...], ...]]] = {
    "backstage/values.yaml": ("backstage", "values-default-backstage-2.8.2.yaml",
                              ("backstage", "appConfig", "backend", "database", "knexConfig", "pool", "max"),
                              (("backstage", "appConfig"), ("backstage", "startupProbe"))),
    "sonarqube/values.yaml": ("sonarqube", "values-default-sonarqube-2026.5.0.yaml",
                              ("sonarProperties", "sonar.jdbc.maxActive"), (("sonarProperties",),)),
    "argo-workflows/values.yaml": ("argo_workflows", "values-default-argo-workflows-1.0.18.yaml",
                                   ("controller", "persistence", "connectionPool", "maxOpenConns"),
                                   (("controller", "persistence"),)),
    "policy-reporter/values.yaml": ("policyreporter", "values-default-policy-reporter-3.9.1.yaml",
                                    ("database", "maxOpenConnections"), ()),
    "grafana/values.yaml": ("grafana", "values-default-grafana-12.11.1.yaml",
                            ("grafana.ini", "database", "max_open_conn"), (("grafana.ini",),)),
    "grafana/kube-prometheus-stack-values.yaml": ("grafana", "values-default-grafana-12.11.1.yaml",
                                          ("grafana", "grafana.ini", "database", "max_open_conn"),
                                          (("grafana.ini",),)),
    "dex/values.yaml": ("dex", "values-default-dex-0.24.0.yaml",
                        ("config", "storage", "config", "maxOpenConns"), (("config",),)),
}  # fmt: skip
# files whose wait-for-db gates belong to one tenant
# (the charts of Policy Reporter and Dex have no initContainers key: their gates are kustomize patches)
PATCHED = ("policy-reporter/values.yaml", "dex/values.yaml")
GATES = {"policy-reporter/wait-for-db-patch.yaml": "policyreporter", "dex/wait-for-db-patch.yaml": "dex",
         **{n: t[0] for n, t in OVERLAYS.items() if n not in PATCHED}}  # fmt: skip


def snippet_files() -> list[Path]:
    """The plain YAML files (the root chart's templates are Helm templates: test_gitops.py renders them)."""
    return sorted(p for p in SNIPPETS.rglob("*.yaml") if "templates" not in p.parts)


def documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in snippet_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                yield path, doc


def objects(kind: str | None = None) -> list[tuple[Path, dict[str, Any]]]:
    found = [(p, d) for p, d in documents() if "apiVersion" in d and "kind" in d]
    return [(p, d) for p, d in found if kind is None or d["kind"] == kind]


def containers(node: Any) -> Iterator[dict[str, Any]]:
    """Every container spec anywhere in a document (containers, initContainers, extraInitContainers)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key.endswith(("containers", "Containers")) and isinstance(value, list):
                yield from (c for c in value if isinstance(c, dict) and "image" in c)
            yield from containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from containers(item)


def gates(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Containers that run wait-for-db (as args, or as the command of their probes)."""
    found = []
    for c in containers(doc):
        probe_cmds = [c.get(p, {}).get("exec", {}).get("command", []) for p in ("startupProbe", "readinessProbe")]
        if (c.get("args") or [None])[0] == "wait-for-db" or any("wait-for-db" in cmd for cmd in probe_cmds):
            found.append(c)
    return found


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_every_file_parses_and_has_a_comment_header() -> None:
    for path in snippet_files():
        assert path.read_text().startswith("#"), f"{path} needs a comment header saying what it is for"
        list(yaml.safe_load_all(path.read_text()))


def test_core_objects_validate_against_kubernetes_schemas() -> None:
    checked = 0
    for path, doc in objects():
        # ServiceMonitor and PrometheusRule: no CRD schema here; test_monitoring.py checks them (promtool, wiring)
        monitoring = doc["apiVersion"].startswith("monitoring.coreos.com/")
        kustomize = doc["kind"] in ("Kustomization", "Component")
        if doc["kind"] in CRD_SCHEMAS or kustomize or "patch" in path.name or monitoring:
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        checked += 1
    assert checked == 11  # 2 services, statefulset, deployment, 2 networkpolicies, 2 tenants configmaps, 2 jobs,
    # argocd-cm


def test_patched_containers_validate_as_pod_containers() -> None:
    for _path, doc in (o for o in objects("Deployment") if "patch" in o[0].name):
        init = doc["spec"]["template"]["spec"]["initContainers"]
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"},
               "spec": {"initContainers": init, "containers": [{"name": "app", "image": "app"}]}}  # fmt: skip
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


def test_values_containers_validate_as_pod_containers() -> None:
    for name in (n for n in OVERLAYS if n not in PATCHED):
        doc = yaml.safe_load((SNIPPETS / "apps" / name).read_text())
        init = list(containers(doc))
        assert init, f"{name} has no wait-for-db initContainer"
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"},
               "spec": {"initContainers": init[:1], "containers": [{"name": "app", "image": "app"}]}}  # fmt: skip
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


def test_custom_resources_validate_against_their_crd_schemas() -> None:
    seen = set()
    for _path, doc in objects():
        if doc["kind"] in CRD_SCHEMAS:
            schema = json.loads((SCHEMAS / CRD_SCHEMAS[doc["kind"]]).read_text())
            jsonschema.Draft7Validator(schema).validate(doc)
            seen.add(doc["kind"])
    assert seen == set(CRD_SCHEMAS)


def merged(defaults: Any, overlay: Any) -> Any:
    if isinstance(defaults, dict) and isinstance(overlay, dict):
        out = copy.deepcopy(defaults)
        for key, value in overlay.items():
            out[key] = merged(defaults.get(key), value) if key in defaults else value
        return out
    return overlay


CHART_SCHEMAS = [
    ("backstage/values.yaml", "values-schema-backstage-2.8.2.json"),
    ("sonarqube/values.yaml", "values-schema-sonarqube-2026.5.0.json"),
]


@pytest.mark.parametrize(("overlay", "schema"), CHART_SCHEMAS)
def test_chart_overlays_validate_against_the_charts_own_schema(overlay: str, schema: str) -> None:
    defaults = yaml.safe_load((SCHEMAS / OVERLAYS[overlay][1]).read_text())
    values = merged(defaults, yaml.safe_load((SNIPPETS / "apps" / overlay).read_text()))
    jsonschema.Draft202012Validator(json.loads((SCHEMAS / schema).read_text())).validate(values)


def key_paths(node: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from key_paths(value, (*prefix, key))


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_every_key_an_overlay_sets_exists_in_the_chart(overlay: str) -> None:
    _, defaults_file, _, free = OVERLAYS[overlay]
    values = yaml.safe_load((SNIPPETS / "apps" / overlay).read_text())
    if "kube-prometheus-stack" in overlay:  # its Grafana is the subchart's; the rest is the stack's own
        stack = yaml.safe_load((SCHEMAS / "values-default-kube-prometheus-stack-88.5.3.yaml").read_text())
        for path in key_paths({k: v for k, v in values.items() if k != "grafana"}):
            level: Any = stack
            for part in path:
                assert isinstance(level, dict) and part in level, f"{overlay}: {'.'.join(path)} is not a chart key"
                level = level[part]
        values = values["grafana"]
    text = (SCHEMAS / defaults_file).read_text()
    defaults = yaml.safe_load(text)
    # options a chart documents only as comments (SonarQube's jdbcSecretName: "# jdbcSecretName: ...")
    commented = set(re.findall(r"^\s*#\s*([A-Za-z0-9_.-]+):", text, flags=re.MULTILINE))
    for path in key_paths(values):
        if any(path[: len(f)] == f and len(path) > len(f) for f in free):
            continue
        node: Any = defaults
        for part in path:
            if isinstance(node, list) or part in commented:  # containers: Kubernetes' schema checks those
                break
            assert isinstance(node, dict) and part in node, f"{overlay}: {'.'.join(path)} is not a key of the chart"
            if part == "resources":  # a container's ResourceRequirements: Kubernetes' schema checks what is inside
                break
            node = node[part]


def test_each_tenant_has_an_externalsecret_at_its_vault_path() -> None:
    keys = {ref["remoteRef"]["key"] for _, es in objects("ExternalSecret") for ref in es["spec"]["data"]}
    for tenant in spec_module.load(None).tenants:
        assert tenant.vault_location == f"secret/{tenant.vault_path}"
        assert tenant.vault_path in keys, f"no ExternalSecret reads {tenant.vault_location}"


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_pool_times_its_multiplier_is_the_spec_budget(overlay: str) -> None:
    tenant_name, _, pool_path, _ = OVERLAYS[overlay]
    tenant = next(t for t in spec_module.load(None).tenants if t.name == tenant_name)
    node: Any = yaml.safe_load((SNIPPETS / "apps" / overlay).read_text())
    for part in pool_path:
        node = node[part]
    assert int(node) == tenant.pool_max
    assert int(node) * tenant.pool_multiplier * tenant.replicas == tenant.budget


@pytest.mark.parametrize(("file", "tenant"), sorted(GATES.items()))
def test_every_gate_uses_its_apps_own_role_and_database(file: str, tenant: str) -> None:
    doc = yaml.safe_load((SNIPPETS / "apps" / file).read_text())
    found = gates(doc)
    assert found, f"{file} has no wait-for-db gate"
    for gate in found:
        env = env_of(gate)
        assert env["PGUSER"] == tenant and env["PGDATABASE"] == tenant
        assert "secretKeyRef" in env["PGPASSWORD"]


def test_no_plaintext_password_anywhere() -> None:
    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if "name" in node and "PASSWORD" in str(node["name"]).upper() and "value" in node:
                assert str(node["value"]).startswith("/"), f"{where}: {node['name']} has a literal value"
            for key, value in node.items():
                if "password" in str(key).lower() and isinstance(value, str | int) and not isinstance(value, bool):
                    text = str(value)
                    # a variable, a file, a Secret's key name, or empty (pinned to nothing: the Secret supplies it)
                    assert text.startswith(("$", "/")) or text in ("password", "jdbc-password", ""), f"{where}: {key}"
                walk(value, where)
        elif isinstance(node, list):
            for item in node:
                walk(item, where)

    for path, doc in documents():
        walk(doc, str(path.relative_to(SNIPPETS)))


def test_every_container_runs_non_root_with_a_read_only_root_filesystem() -> None:
    for path, doc in documents():
        pod_context: dict[str, Any] = {}
        if isinstance(doc.get("spec"), dict):
            template = doc["spec"].get("template", {})
            pod_context = template.get("spec", {}).get("securityContext", {}) if isinstance(template, dict) else {}
        for container in containers(doc):
            context = container.get("securityContext", {})
            assert context.get("readOnlyRootFilesystem") is True, f"{path}: {container['name']}"
            assert context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is True, f"{path}: {container['name']}"
            assert context.get("allowPrivilegeEscalation") is False, f"{path}: {container['name']}"


def test_tenants_configmaps_hold_valid_specs() -> None:
    [(_, full)] = [(p, d) for p, d in objects("ConfigMap") if p.name == "configmap-tenants.yaml"]
    assert full["data"]["tenants.yaml"] == spec_module.default_text()
    [(_, pragmatic)] = [(p, d) for p, d in objects("ConfigMap") if p.name == "configmap-tenants-pragmatic.yaml"]
    assert pragmatic["metadata"]["name"] == full["metadata"]["name"], "the profile picks a file, the Job one name"
    raw = yaml.safe_load(pragmatic["data"]["tenants.yaml"])
    assert spec_module.validate(raw) == []
    assert [t["name"] for t in raw["tenants"]] == ["backstage", "sonarqube"]


# -- the snippets' own command lines, against a real server ----------------------------------------------


def resolve_env(container: dict[str, Any], pg: Server, passwords: dict[str, str], tenant: str) -> dict[str, str]:
    """The container's env as written, with the Service and the Secrets replaced by the test server's; the
    ConfigMap sharedpg-database as the root chart renders it by default (test_database_endpoint checks it does)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if source.get("configMapRef", {}).get("name") == "sharedpg-database":
            env |= {k: {SERVICE_HOST: pg.host, "5432": str(pg.port)}.get(v, v) for k, v in DATABASE_CONFIGMAP.items()}
    for item in container.get("env", []):
        name = item["name"]
        if "valueFrom" in item:
            env[name] = {"PGHOST": pg.host, "PGPORT": str(pg.port)}.get(name, passwords.get(tenant, ""))
        else:
            env[name] = {SERVICE_HOST: pg.host, "5432": str(pg.port)}.get(str(item["value"]), str(item["value"]))
    return env


@pytest.fixture
def seed_tenants(cli: Cli, pg: Server, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The six seed tenants on the test server, as the built-in spec makes them (passwords in files)."""
    spec = spec_module.load(None)
    names = [t.name for t in spec.tenants]
    result = cli("bootstrap", "--no-vault", "--password-dir", str(tmp_path / "pw"), "--dsn", pg.conninfo(),
                 env={"PGPASSWORD": pg.password})  # fmt: skip
    assert result.code == 0, result
    passwords = {n: (tmp_path / "pw" / n).read_text().strip() for n in names}
    cli.secrets |= set(passwords.values())
    yield passwords
    pg.drop_tenants(names + ([spec.monitoring.role] if spec.monitoring else []))


def test_every_gate_command_line_works_against_a_real_server(
    cli: Cli, pg: Server, seed_tenants: dict[str, str]
) -> None:
    ran = 0
    for file, tenant in sorted(GATES.items()):
        for gate in gates(yaml.safe_load((SNIPPETS / "apps" / file).read_text())):
            env = resolve_env(gate, pg, seed_tenants, tenant)
            if gate.get("args"):
                args = [*gate["args"], "--timeout", "20"]
            else:
                args = gate["startupProbe"]["exec"]["command"][1:]
            result = cli(*args, env=env)
            assert result.code == 0, (file, result)
            ran += 1
    assert ran >= len(GATES)
