"""The GitOps tree as Argo CD would render it (tests/fix_gitops.py), with assertions on the rendered objects:
the root app's truth table, what each app really gets, a wiring check over the whole tree for every fuse row
(and fed broken trees, one per defect class), Argo CD's Application health check run in real Lua, and
``task deploy``'s order."""

from __future__ import annotations

import base64
import copy
import itertools
import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import trustme
import yaml

from sharedpg_tools import spec as spec_module
from tests.conftest import Cli
from tests.fix_gitops import (
    BUILD_OPTIONS,
    K8S_VERSION,
    ROOT_VALUES,
    SCHEMAS,
    SNIPPETS,
    STACKS,
    Placed,
    Renderer,
    Tree,
    _annotation,
    _docs,
    row_fuses,
)  # fmt: skip
from tests.func.test_k8s_snippets import env_of, gates

ROWS = list(itertools.product([False, True], repeat=4))
SERVICE_HOST = "shared-postgresql.database.svc.cluster.local"
# What exists in any cluster without this tree, or is the platform team's documented input (README).
EXTERNAL = {("Namespace", "", "argocd")}
AUTOMATIC = {"ServiceAccount": "default", "ConfigMap": "kube-root-ca.crt"}  # made in every namespace


def expected_apps(fuses: dict[str, bool], profile: str = "full") -> set[str]:
    active = [n for n, a in ROOT_VALUES["apps"].items() if fuses[a["stack"]] and profile in a["profiles"]]
    watch = {"sharedpg-monitoring"} if ROOT_VALUES["monitoring"]["enabled"] else set()
    plumbing = {"shared-postgresql", "sharedpg-bootstrap", *watch} if active else set()
    return plumbing | set(active) | {f"{n}-secrets" for n in active}


# -- the root app: the truth table ---------------------------------------------------------------------------


@pytest.mark.parametrize("row", ROWS, ids=["".join("1" if on else "0" for on in row) for row in ROWS])
def test_root_emits_exactly_the_truth_tables_applications(renderer: Renderer, row: tuple[bool, ...]) -> None:
    fuses = row_fuses(row)
    docs = renderer.root(fuses)
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "Application"} == expected_apps(fuses)
    namespaces = {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
    wanted = {ROOT_VALUES["apps"][n]["namespace"] for n in expected_apps(fuses) if n in ROOT_VALUES["apps"]}
    assert namespaces == (wanted | {"database"} if any(row) else set())
    assert not [d for d in docs if d["kind"] == "ClusterSecretStore"], "no store every namespace may use"
    stores = {d["metadata"]["namespace"] for d in docs if d["kind"] == "SecretStore"}
    assert stores == (wanted | {"database"} if any(row) else set()), "a store in each namespace that reads Vault"


@pytest.mark.parametrize("profile", ["full", "pragmatic"])
def test_the_tree_and_the_plan_agree_on_the_database(renderer: Renderer, cli: Cli, tmp_path: Path,
                                                     profile: str) -> None:  # fmt: skip
    """The database (and its plumbing) exists iff a stack it serves is on: any fuse in the full profile, the
    backstage or cicd fuse in the pragmatic one; `bootstrap --plan` on the profile's own spec says the same."""
    name = "configmap-tenants.yaml" if profile == "full" else "configmap-tenants-pragmatic.yaml"
    configmap = yaml.safe_load((SNIPPETS / "bootstrap" / name).read_text())
    (tmp_path / "spec.yaml").write_text(configmap["data"]["tenants.yaml"])
    for row in ROWS:
        fuses = row_fuses(row)
        docs = renderer.root(fuses, profile)
        deployed = any(d["kind"] == "Application" and d["metadata"]["name"] == "shared-postgresql" for d in docs)
        assert deployed is any(d["kind"] == "Namespace" and d["metadata"]["name"] == "database" for d in docs)
        plan = cli("bootstrap", "--plan", "--spec", str(tmp_path / "spec.yaml"), "--output", "json",
                   *itertools.chain.from_iterable(("--fuse", f"{k}={v}") for k, v in fuses.items()))  # fmt: skip
        assert plan.result()["database_needed"] is deployed and plan.code == (0 if deployed else 1), (profile, row)
        if profile == "pragmatic":
            assert deployed is (fuses["backstage"] or fuses["cicd"]), row


def test_pragmatic_profile_is_backstage_and_sonarqube_on_their_own_spec(renderer: Renderer) -> None:
    fuses = row_fuses((True, True, True, True))
    docs = renderer.root(fuses, "pragmatic")
    apps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Application"}
    assert set(apps) == expected_apps(fuses, "pragmatic")
    plumbing = {"shared-postgresql", "sharedpg-bootstrap", "sharedpg-monitoring"}
    assert set(apps) - plumbing == {"backstage", "backstage-secrets", "sonarqube",
                                                                       "sonarqube-secrets"}  # fmt: skip
    [tenants] = [d for d in renderer.application(apps["sharedpg-bootstrap"]) if d["kind"] == "ConfigMap"]
    assert [t["name"] for t in yaml.safe_load(tenants["data"]["tenants.yaml"])["tenants"]] == ["backstage", "sonarqube"]


def test_every_application_retries_prunes_through_its_finalizer_and_validates(renderer: Renderer) -> None:
    schema = json.loads((SCHEMAS / "application-argoproj.io-v1alpha1.json").read_text())
    store_schema = json.loads((SCHEMAS / "secretstore-external-secrets.io-v1.json").read_text())
    docs = renderer.root(row_fuses((True, True, True, True)))
    root_app = _docs((SNIPPETS / "argocd" / "root-application.yaml").read_text())
    for doc in docs + root_app:
        if doc["kind"] == "Application":
            jsonschema.Draft7Validator(schema).validate(doc)
            assert doc["spec"]["syncPolicy"]["retry"]["limit"] > 0 and doc["spec"]["syncPolicy"]["retry"]["backoff"]
            if doc not in root_app:
                assert doc["metadata"]["finalizers"] == ["resources-finalizer.argocd.argoproj.io"]
        elif doc["kind"] == "SecretStore":
            jsonschema.Draft7Validator(store_schema).validate(doc)
        else:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_vault_is_reached_over_https_with_its_ca_from_one_place(renderer: Renderer, tmp_path: Path,
                                                                 test_ca: trustme.CA) -> None:  # fmt: skip
    """vaultServer and vaultCABundle are the only places: every SecretStore and both Jobs take them from there,
    and plain http is refused at render time."""
    ca = tmp_path / "vault-ca.pem"
    test_ca.cert_pem.write_to_path(str(ca))
    server = "https://vault.example.internal:8200"
    tree = renderer.tree(row_fuses((True, True, True, True)))
    docs = renderer.root(row_fuses((True, True, True, True)), "full", SNIPPETS / "root",
                         "--set", f"vaultServer={server}", "--set-file", f"vaultCABundle={ca}")  # fmt: skip
    stores = [d for d in docs if d["kind"] == "SecretStore"]
    assert stores and all(s["spec"]["provider"]["vault"]["server"] == server for s in stores)
    assert all(base64.b64decode(s["spec"]["provider"]["vault"]["caBundle"]) == ca.read_bytes() for s in stores)
    [settings] = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "sharedpg-vault"]
    [bundle] = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "sharedpg-vault-ca"]
    assert settings["data"] == {"VAULT_ADDR": server, "VAULT_CACERT": "/etc/sharedpg-vault/ca.crt"}
    assert bundle["data"]["ca.crt"] == ca.read_text()
    jobs = [p.obj for p in tree.objects if p.kind == "Job" and p.name.startswith("sharedpg-")]
    assert len(jobs) == 2
    for job in jobs:
        pod = job["spec"]["template"]["spec"]
        [volume] = [v for v in pod["volumes"] if v.get("configMap", {}).get("name") == "sharedpg-vault-ca"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            assert "VAULT_ADDR" not in {e["name"] for e in container.get("env", [])}, "the address in one place"
            sources = [v["name"] for f in container["envFrom"] for k, v in f.items() if k == "configMapRef"]
            assert "sharedpg-vault" in sources, container["name"]
            [mount] = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
            assert mount["mountPath"] == "/etc/sharedpg-vault"
    refused = subprocess.run([str(renderer.helm), "template", "platform", str(SNIPPETS / "root"), "--set",
                              "fuses.cicd=true", "--set", "vaultServer=http://vault:8200"],
                             capture_output=True, text=True)  # fmt: skip
    assert refused.returncode != 0 and "use https://" in refused.stderr, refused.stderr


def test_the_database_namespace_and_volume_outlive_every_fuse(renderer: Renderer) -> None:
    [database] = [d for d in renderer.root(row_fuses((False, True, False, False))) if d["kind"] == "Namespace"
                  and d["metadata"]["name"] == "database"]  # fmt: skip
    assert set(_annotation(database, "sync-options").split(",")) == {"Prune=false", "Delete=false"}
    statefulset = _docs((SNIPPETS / "database" / "statefulset.yaml").read_text())[0]
    assert statefulset["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }


# -- Argo CD's health check of Applications, run in real Lua --------------------------------------------------


def _health(status: dict[str, Any] | None) -> tuple[str, str]:
    from lupa import LuaRuntime

    cm = _docs((SNIPPETS / "argocd" / "argocd-cm.yaml").read_text())[0]
    lua = LuaRuntime(unpack_returned_tuples=True)
    script = cm["data"]["resource.customizations.health.argoproj.io_Application"]
    check = lua.eval(f"function(obj) {script} end")
    obj = lua.table_from({} if status is None else {"status": _lua_table(lua, status)})
    result = check(obj)
    return str(result["status"]), str(result["message"])


def _lua_table(lua: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return lua.table_from({k: _lua_table(lua, v) for k, v in value.items()})
    return value


@pytest.mark.parametrize(("status", "health"), [
    (None, "Progressing"),
    ({"operationState": {"phase": "Running"}, "sync": {"status": "OutOfSync"}, "health": {"status": "Healthy"}},
     "Progressing"),
    ({"operationState": {"phase": "Failed", "message": "hook failed"}, "sync": {"status": "OutOfSync"}}, "Degraded"),
    ({"operationState": {"phase": "Succeeded"}, "sync": {"status": "OutOfSync"}, "health": {"status": "Healthy"}},
     "Progressing"),
    ({"operationState": {"phase": "Succeeded"}, "sync": {"status": "Synced"}, "health": {"status": "Progressing"}},
     "Progressing"),
    ({"operationState": {"phase": "Succeeded"}, "sync": {"status": "Synced"}, "health": {"status": "Healthy"}},
     "Healthy"),
])  # fmt: skip
def test_a_child_application_is_healthy_only_when_synced_succeeded_and_healthy(
    status: dict[str, Any] | None, health: str
) -> None:
    assert _health(status)[0] == health


def test_argocd_is_told_to_build_kustomize_with_helm_and_linked_platform_values() -> None:
    cm = _docs((SNIPPETS / "argocd" / "argocd-cm.yaml").read_text())[0]
    assert cm["data"]["kustomize.buildOptions"].split() == ["--enable-helm", "--load-restrictor",
                                                            "LoadRestrictionsNone"]  # fmt: skip
    assert cm["data"]["kustomize.buildOptions"] == BUILD_OPTIONS  # what the renderer runs kustomize with


# -- each consumer, rendered as Argo CD would ----------------------------------------------------------------


@pytest.fixture(scope="session")
def full_tree(renderer: Renderer) -> Tree:
    return renderer.tree(row_fuses((True, True, True, True)))


def pod_specs(tree: Tree, app: str) -> Iterator[dict[str, Any]]:
    for placed in tree.objects:
        if placed.app == app and placed.kind in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
            yield placed.obj["spec"]["template"]["spec"]


def secret_keys(tree: Tree, namespace: str, name: str) -> dict[str, str]:
    """The keys of the Secret an ExternalSecret makes, each with where it comes from (Vault ``key#property``,
    or the template's expression), as External Secrets resolves them (template merged over the data)."""
    [placed] = [p for p in tree.of("ExternalSecret") if p.namespace == namespace
                and p.obj["spec"]["target"]["name"] == name]  # fmt: skip
    spec = placed.obj["spec"]
    keys = {d["secretKey"]: f"{d['remoteRef']['key']}#{d['remoteRef']['property']}" for d in spec["data"]}
    keys |= {k: str(v) for k, v in (spec["target"].get("template") or {}).get("data", {}).items()}
    return keys


def tenant(name: str) -> spec_module.Tenant:
    return next(t for t in spec_module.load(None).tenants if t.name == name)


def assert_gate(tree: Tree, app: str, tenant_name: str, secret: str) -> None:
    """A wait-for-db gate in the app's pods, as the tenant into its database, with the app's own Secret."""
    t = tenant(tenant_name)
    found = [c for spec in pod_specs(tree, app) for c in gates(spec)]
    assert found, f"{app}: no wait-for-db gate in the rendered pods"
    for gate in found:
        env = env_of(gate)
        assert env["PGUSER"] == t.role and env["PGDATABASE"] == t.database, (app, env)
        assert env["PGPASSWORD"]["secretKeyRef"]["name"] == secret
        assert env["PGPASSWORD"]["secretKeyRef"]["key"] in secret_keys(
            tree, ROOT_VALUES["apps"][app]["namespace"], secret
        )


def test_backstage_keeps_its_images_config_and_reads_the_tenants_secret(full_tree: Tree) -> None:
    [spec] = pod_specs(full_tree, "backstage")
    [backend] = spec["containers"]
    args = backend["args"]
    assert args[:4] == ["--config", "app-config.yaml", "--config", "app-config.production.yaml"]
    assert args[-2:] == ["--config", "/app/app-config-from-configmap.yaml"], "the overlay's config comes last"
    assert {"secretRef": {"name": "backstage-db"}} in backend["envFrom"]
    [config] = [p.obj for p in full_tree.of("ConfigMap", "backstage")]
    database = yaml.safe_load(next(iter(config["data"].values())))["backend"]["database"]
    keys = secret_keys(full_tree, "backstage", "backstage-db")
    connection = database["connection"]
    for setting, prop in (("host", "host"), ("port", "port"), ("user", "username"), ("password", "password")):
        variable = connection[setting].removeprefix("${").removesuffix("}")
        assert keys[variable] == f"backstage/backstage/postgres#{prop}", setting
    assert connection["database"] == "backstage" and database["client"] == "pg"
    t = tenant("backstage")
    assert database["knexConfig"]["pool"]["max"] * t.pool_multiplier * t.replicas == t.budget
    assert_gate(full_tree, "backstage", "backstage", "backstage-db")


def test_sonarqube_renders_community_build_with_jdbc_and_passcode_from_vault(full_tree: Tree) -> None:
    [spec] = pod_specs(full_tree, "sonarqube")
    [app] = [c for c in spec["containers"] if c["name"] == "sonarqube"]
    env = env_of(app)
    assert env["SONAR_JDBC_PASSWORD"]["secretKeyRef"] == {"name": "sonarqube-db", "key": "jdbc-password"}
    assert secret_keys(full_tree, "cicd", "sonarqube-db")["jdbc-password"] == "cicd/sonarqube/postgres#password"
    assert env["SONAR_WEB_SYSTEMPASSCODE"]["secretKeyRef"] == {"name": "sonarqube-monitoring", "key": "passcode"}
    assert secret_keys(full_tree, "cicd", "sonarqube-monitoring")["passcode"] == "cicd/sonarqube/monitoring#password"
    [jdbc] = [p.obj for p in full_tree.of("ConfigMap", "sonarqube") if "SONAR_JDBC_URL" in p.obj.get("data", {})]
    assert jdbc["data"]["SONAR_JDBC_URL"] == f"jdbc:postgresql://{SERVICE_HOST}:5432/sonarqube"
    assert jdbc["data"]["SONAR_JDBC_USERNAME"] == tenant("sonarqube").role
    assert {"configMapRef": {"name": jdbc["metadata"]["name"]}} in app["envFrom"]
    [props] = [p.obj for p in full_tree.of("ConfigMap", "sonarqube") if "sonar.properties" in p.obj.get("data", {})]
    t = tenant("sonarqube")
    assert "sonar.jdbc.maxActive=10" in props["data"]["sonar.properties"] and 10 * t.pool_multiplier == t.budget
    assert_gate(full_tree, "sonarqube", "sonarqube", "sonarqube-db")


def test_argo_workflows_archives_into_its_tenant(full_tree: Tree) -> None:
    [config] = [p.obj for p in full_tree.of("ConfigMap", "argo-workflows") if "config" in p.obj.get("data", {})]
    persistence = yaml.safe_load(config["data"]["config"])["persistence"]
    postgres = persistence["postgresql"]
    assert postgres["host"] == SERVICE_HOST and postgres["port"] == 5432 and postgres["database"] == "argo_workflows"
    keys = secret_keys(full_tree, "cicd", postgres["userNameSecret"]["name"])
    assert keys[postgres["userNameSecret"]["key"]] == "cicd/argo_workflows/postgres#username"
    assert keys[postgres["passwordSecret"]["key"]] == "cicd/argo_workflows/postgres#password"
    t = tenant("argo_workflows")
    assert persistence["connectionPool"]["maxOpenConns"] * t.pool_multiplier == t.budget
    assert_gate(full_tree, "argo-workflows", "argo_workflows", "argo-workflows-db")


def test_policy_reporter_really_opens_postgresql(full_tree: Tree) -> None:
    [spec] = pod_specs(full_tree, "policy-reporter")
    [app] = spec["containers"]
    assert "--rest-enabled=true" in app["args"], "without the REST API Policy Reporter never opens its database"
    [config_secret] = [p.obj for p in full_tree.of("Secret", "policy-reporter") if "config.yaml" in
                       (p.obj.get("stringData") or p.obj.get("data") or {})]  # fmt: skip
    raw = config_secret.get("stringData", {}).get("config.yaml")
    if raw is None:
        raw = base64.b64decode(config_secret["data"]["config.yaml"]).decode()
    database = yaml.safe_load(raw)["database"]
    assert database["type"] == "postgres" and database["secretRef"] == "policy-reporter-db"
    keys = secret_keys(full_tree, "policies", "policy-reporter-db")
    assert {"host", "username", "password", "database"} <= set(keys)
    t = tenant("policyreporter")
    assert database["maxOpenConnections"] * t.pool_multiplier * t.replicas == t.budget
    assert_gate(full_tree, "policy-reporter", "policyreporter", "policy-reporter-db")


def test_grafana_gets_every_database_variable_it_names(full_tree: Tree) -> None:
    [spec] = pod_specs(full_tree, "grafana")
    [app] = [c for c in spec["containers"] if c["name"] == "grafana"]
    assert {"secretRef": {"name": "grafana-db"}} in app["envFrom"]
    [config] = [p.obj for p in full_tree.of("ConfigMap", "grafana") if "grafana.ini" in p.obj.get("data", {})]
    ini = config["data"]["grafana.ini"]
    section = ini.split("[database]")[1].split("\n[")[0]
    settings = dict(line.split(" = ", 1) for line in section.strip().splitlines())
    assert settings["type"] == "postgres" and settings["name"] == "grafana" and settings["user"] == "grafana"
    keys = secret_keys(full_tree, "observability", "grafana-db")
    for value in settings.values():
        if value.startswith("$__env{"):
            assert value[7:-1] in keys, f"grafana.ini names {value}, which the grafana-db Secret does not have"
    t = tenant("grafana")
    assert int(settings["max_open_conn"]) * t.pool_multiplier * t.replicas == t.budget
    assert_gate(full_tree, "grafana", "grafana", "grafana-db")


def test_dex_stores_in_its_tenant_behind_a_native_sidecar_gate(full_tree: Tree) -> None:
    [spec] = pod_specs(full_tree, "dex")
    [sidecar] = [c for c in spec["initContainers"] if c["name"] == "db-gate"]
    assert sidecar["restartPolicy"] == "Always", "the native-sidecar form of the gate"
    assert "wait-for-db" in sidecar["startupProbe"]["exec"]["command"]
    [config_secret] = [p.obj for p in full_tree.of("Secret", "dex")]
    raw = (
        config_secret.get("stringData", {}).get("config.yaml")
        or base64.b64decode(config_secret["data"]["config.yaml"]).decode()
    )
    storage = yaml.safe_load(raw)["storage"]
    assert (
        storage["type"] == "postgres" and storage["config"]["database"] == "dex" and storage["config"]["user"] == "dex"
    )
    password = storage["config"]["password"]
    assert password.startswith("$") and password[1:] in secret_keys(full_tree, "backstage", "dex-db")
    assert {"secretRef": {"name": "dex-db"}} in spec["containers"][0]["envFrom"]
    t = tenant("dex")
    assert storage["config"]["maxOpenConns"] * t.pool_multiplier * t.replicas == t.budget
    assert_gate(full_tree, "dex", "dex", "dex-db")


def test_the_rendered_budgets_fit_the_servers_usable_slots(cli: Cli) -> None:
    """Each app's rendered pool is its spec budget (tests above); the spec's sum fits the server's slots."""
    result = cli("check-pool", "--offline", "--output", "json")
    assert result.code == 0, result


def test_every_rendered_object_validates(full_tree: Tree) -> None:
    """Every built-in Kubernetes object the tree renders, against the Kubernetes schemas (the custom resources
    are validated against their CRDs above)."""
    builtin = ("v1", "apps/v1", "batch/v1", "rbac.authorization.k8s.io/v1", "networking.k8s.io/v1", "policy/v1")
    checked = 0
    for placed in full_tree.objects:
        if placed.obj["apiVersion"] in builtin:
            kubernetes_validate.validate(placed.obj, K8S_VERSION, strict=True)
            checked += 1
    assert checked > 50


# -- the wiring check ----------------------------------------------------------------------------------------


def _refs(obj: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(kind, name) of what a pod spec refers to and needs (optional references are skipped)."""
    spec = obj["spec"]["template"]["spec"]
    if spec.get("serviceAccountName"):
        yield "ServiceAccount", spec["serviceAccountName"]
    for volume in spec.get("volumes") or []:
        if "secret" in volume and not volume["secret"].get("optional"):
            yield "Secret", volume["secret"]["secretName"]
        if "configMap" in volume and not volume["configMap"].get("optional"):
            yield "ConfigMap", volume["configMap"]["name"]
    for container in (spec.get("initContainers") or []) + spec["containers"]:
        for item in container.get("env") or []:
            for ref_key, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
                ref = (item.get("valueFrom") or {}).get(ref_key)
                if ref and not ref.get("optional"):
                    yield kind, ref["name"]
        for source in container.get("envFrom") or []:
            for ref_key, kind in (("secretRef", "Secret"), ("configMapRef", "ConfigMap")):
                if ref_key in source and not source[ref_key].get("optional"):
                    yield kind, source[ref_key]["name"]


def _vault_writes(placed: Placed) -> set[str]:
    """The Vault keys a Job of this tree writes: the tenants of the spec it mounts, or admin-secret's path."""
    written = set()
    for container in placed.obj["spec"]["template"]["spec"].get("initContainers", []) + \
            placed.obj["spec"]["template"]["spec"]["containers"]:  # fmt: skip
        args = container.get("args") or []
        if args[:1] == ["admin-secret"]:
            written.add(args[args.index("--vault-path") + 1])
        if args[:1] == ["bootstrap"]:
            spec = spec_module.load(None)
            written |= {t.vault_path for t in spec.tenants}
            written |= {spec.monitoring.vault_path} if spec.monitoring else set()
    return written


def wiring_problems(tree: Tree, outside: frozenset[tuple[str, str, str]] = frozenset()) -> list[str]:
    """Every reference an object makes must be produced by an object of the tree (or exist in any cluster,
    or be a documented external input, or be one of ``outside``: what the platform runs beside the tree, such
    as a cutover's old server) no later in the sync order than the object that needs it."""
    produced: dict[tuple[str, str, str], tuple[int, int, int]] = {}

    def produce(kind: str, namespace: str, name: str, order: tuple[int, int, int]) -> None:
        key = (kind, namespace, name)
        produced[key] = min(order, produced.get(key, order))

    for p in tree.objects:
        namespaced = p.kind not in ("Namespace", "ClusterRole", "ClusterRoleBinding")
        produce(p.kind, p.namespace if namespaced else "", p.name, p.order)
        if p.kind == "ExternalSecret":
            produce("Secret", p.namespace, p.obj["spec"]["target"]["name"], p.order)
        if p.kind == "Job":
            for key in _vault_writes(p):
                produce("VaultSecret", "", key, p.order)
    problems = []

    def need(p: Placed, kind: str, namespace: str, name: str) -> None:
        if (kind, namespace, name) in EXTERNAL | outside or AUTOMATIC.get(kind) == name:
            return
        made = produced.get((kind, namespace, name))
        where = f"{p.app}: {p.kind} {p.namespace}/{p.name}"
        if made is None:
            problems.append(f"{where} needs {kind} {namespace}/{name}, which nothing in the tree makes")
        elif made > p.order:
            problems.append(f"{where} (order {p.order}) needs {kind} {namespace}/{name}, made later ({made})")

    for p in tree.objects:
        if p.namespace:
            need(p, "Namespace", "", p.namespace)
        if p.kind in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
            for kind, name in _refs(p.obj):
                need(p, kind, p.namespace, name)
        if p.kind == "ExternalSecret":
            store = p.obj["spec"]["secretStoreRef"]
            if store["kind"] != "SecretStore":
                problems.append(f"{p.app}: ExternalSecret {p.namespace}/{p.name} uses a {store['kind']}: any "
                                "namespace could use that store; use its namespace's SecretStore")  # fmt: skip
                continue
            need(p, "SecretStore", p.namespace, store["name"])
            kubernetes = _kubernetes_store(tree, p.namespace, store["name"])
            for item in p.obj["spec"]["data"]:
                if kubernetes is None:
                    need(p, "VaultSecret", "", item["remoteRef"]["key"])
                    problems += _unreadable(tree, p, store["name"], item["remoteRef"]["key"])
                else:  # a Secret of another namespace, which the store's service account must be let get
                    need(p, "Secret", kubernetes["remoteNamespace"], item["remoteRef"]["key"])
                    problems += _ungranted(tree, p, kubernetes, item["remoteRef"]["key"])
        if p.kind == "SecretStore":
            provider = p.obj["spec"]["provider"]
            ref = provider["vault"]["auth"]["kubernetes"]["serviceAccountRef"] if "vault" in provider \
                else provider["kubernetes"]["auth"]["serviceAccount"]  # fmt: skip
            need(p, "ServiceAccount", p.namespace, ref["name"])
        if p.kind == "Job" and _args(p)[:1] == ["copy-tenant"]:
            problems += _cutover_problems(tree, p, need)
        if p.kind in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
            problems += _unadmitted(tree, p)
    return problems


def _unadmitted(tree: Tree, p: Placed) -> list[str]:
    """A pod that connects to the shared server (PGHOST) must be let in by the database's NetworkPolicy."""
    pod = p.obj["spec"]["template"]
    hosts = {str(tree.env(c, p.namespace).get("PGHOST"))
             for c in (pod["spec"].get("initContainers") or []) + pod["spec"]["containers"]}  # fmt: skip
    if SERVICE_HOST not in hosts:
        return []
    labels = pod["metadata"].get("labels") or {}
    for policy in (q.obj for q in tree.objects if q.kind == "NetworkPolicy" and q.name == "shared-postgresql"):
        for peer in (peer for rule in policy["spec"]["ingress"] for peer in rule["from"]):
            names = [e["values"] for e in peer.get("namespaceSelector", {}).get("matchExpressions", [])
                     if e["key"] == "kubernetes.io/metadata.name" and e["operator"] == "In"]  # fmt: skip
            if names and p.namespace in names[0]:
                return []
            wanted = peer.get("podSelector", {}).get("matchLabels")
            if "namespaceSelector" not in peer and p.namespace == "database" and wanted and \
                    wanted.items() <= labels.items():  # fmt: skip
                return []
    return [
        f"{p.app}: {p.kind} {p.namespace}/{p.name} connects to the shared server, which NetworkPolicy "
        "database/shared-postgresql does not let it reach"
    ]


def _args(p: Placed) -> list[str]:
    return list(p.obj["spec"]["template"]["spec"]["containers"][0].get("args") or [])


def _kubernetes_store(tree: Tree, namespace: str, name: str) -> dict[str, Any] | None:
    """The kubernetes provider of a store (External Secrets reading Secrets of a namespace), or None."""
    stores = [p for p in tree.objects if p.kind == "SecretStore" and p.name == name and p.namespace == namespace]
    provider = stores[0].obj["spec"]["provider"] if stores else {}
    return dict(provider["kubernetes"]) | {"_namespace": namespace} if "kubernetes" in provider else None


def _ungranted(tree: Tree, secret: Placed, store: dict[str, Any], key: str) -> list[str]:
    """The store's service account must be bound, in the remote namespace, to a Role that lets it get ``key``."""
    remote, account = store["remoteNamespace"], store["auth"]["serviceAccount"]["name"]
    roles = {p.name: p.obj for p in tree.objects if p.kind == "Role" and p.namespace == remote}
    for binding in (p.obj for p in tree.objects if p.kind == "RoleBinding" and p.namespace == remote):
        bound = any(s.get("kind") == "ServiceAccount" and s["name"] == account and s.get("namespace") ==
                    store["_namespace"] for s in binding.get("subjects") or [])  # fmt: skip
        role = roles.get(binding["roleRef"]["name"]) if binding["roleRef"]["kind"] == "Role" else None
        rules = role.get("rules") or [] if role else []
        if bound and any("secrets" in r.get("resources", []) and "get" in r.get("verbs", [])
                         and key in r.get("resourceNames", [key]) for r in rules):  # fmt: skip
            return []
    return [f"{secret.app}: ExternalSecret {secret.namespace}/{secret.name} asks for Secret {remote}/{key}, which no "
            f"Role bound to service account {store['_namespace']}/{account} lets it get"]  # fmt: skip


def _cutover_problems(tree: Tree, job: Placed, need: Callable[[Placed, str, str, str], None]) -> list[str]:
    """A cutover's copy reads the old server, which must exist then (not pruned), and runs only once the
    app is stopped: every workload of the app's Application but the old server's own at zero replicas, and
    ordered before the copy."""
    dsn = dict(item.split("=", 1) for item in next(
        e["value"] for e in job.obj["spec"]["template"]["spec"]["containers"][0]["env"]
        if e["name"] == "SHAREDPG_FROM_DSN").split())  # fmt: skip
    service, namespace = dsn["host"].split(".")[:2]
    need(job, "Service", namespace, service)
    app = job.app.removesuffix("-cutover")
    servers = [p for p in tree.objects if p.kind == "Service" and p.namespace == namespace and p.name == service]
    selector = (servers[0].obj["spec"].get("selector") or {}) if servers else {}
    problems = []
    for p in tree.objects:
        if p.app != app or p.kind not in ("Deployment", "StatefulSet"):
            continue
        labels = p.obj["spec"]["template"]["metadata"].get("labels") or {}
        if selector and selector.items() <= labels.items():
            continue  # the old server itself, which must run
        if (replicas := p.obj["spec"].get("replicas", 1)) != 0:
            problems.append(f"{job.app}: Job {job.namespace}/{job.name} copies while {p.kind} {p.namespace}/{p.name} "
                            f"of {app} runs ({replicas} replicas): stop the app first")  # fmt: skip
        elif p.order > job.order:
            problems.append(f"{job.app}: Job {job.namespace}/{job.name} (order {job.order}) copies before {p.kind} "
                            f"{p.namespace}/{p.name} of {app} is stopped ({p.order})")  # fmt: skip
    return problems


def _unreadable(tree: Tree, secret: Placed, store_name: str, key: str) -> list[str]:
    """An ExternalSecret may ask only for what its namespace's Vault role may read (vault/<role>.hcl)."""
    stores = [p for p in tree.objects if p.kind == "SecretStore" and p.name == store_name
              and p.namespace == secret.namespace]  # fmt: skip
    if not stores:
        return []  # reported as a missing store
    vault = stores[0].obj["spec"]["provider"]["vault"]
    role = vault["auth"]["kubernetes"]["role"]
    policy = SNIPPETS / "vault" / f"{role}.hcl"
    readable = set(re.findall(r'path "([^"]+)" \{ capabilities = \[[^\]]*"read"', policy.read_text())) \
        if policy.exists() else set()  # fmt: skip
    if f"{vault['path']}/data/{key}" in readable:
        return []
    return [
        f"{secret.app}: ExternalSecret {secret.namespace}/{secret.name} asks for {key}, which Vault role {role} "
        f"of namespace {secret.namespace} may not read"
    ]


@pytest.mark.parametrize("row", ROWS, ids=["".join("1" if on else "0" for on in row) for row in ROWS])
def test_the_whole_tree_is_wired_in_order_for_every_fuse_row(renderer: Renderer, row: tuple[bool, ...]) -> None:
    fuses = row_fuses(row)
    tree = renderer.tree(fuses)
    assert wiring_problems(tree) == []
    off = {n for n, a in ROOT_VALUES["apps"].items() if not fuses[a["stack"]]}
    assert not [p for p in tree.objects if p.app in off or p.app in {f"{n}-secrets" for n in off}]
    namespaces_used = {p.namespace for p in tree.objects if p.app != "platform"}
    assert namespaces_used <= {"database"} | {
        ROOT_VALUES["apps"][n]["namespace"] for n in ROOT_VALUES["apps"] if n not in off
    }


def _broken(tree: Tree, change: Callable[[Tree], None]) -> Tree:
    copied = copy.deepcopy(tree)
    change(copied)
    return copied


def _drop(kind: str, name: str, namespace: str | None = None) -> Callable[[Tree], None]:
    return lambda t: t.objects.remove(t.one(kind, name, namespace))


def _move(kind: str, name: str, order: tuple[int, int, int], namespace: str | None = None) -> Callable[[Tree], None]:
    def change(t: Tree) -> None:
        t.one(kind, name, namespace).order = order

    return change


def _ask(external_secret: str, key: str) -> Callable[[Tree], None]:
    """An ExternalSecret whose first item asks for ``key`` instead."""

    def change(t: Tree) -> None:
        t.one("ExternalSecret", external_secret).obj["spec"]["data"][0]["remoteRef"]["key"] = key

    return change


def _cluster_store(external_secret: str) -> Callable[[Tree], None]:
    def change(t: Tree) -> None:
        t.one("ExternalSecret", external_secret).obj["spec"]["secretStoreRef"]["kind"] = "ClusterSecretStore"

    return change


@pytest.mark.parametrize(("defect", "change", "needle"), [
    ("a Secret nothing makes (SonarQube's monitoring passcode)", _drop("ExternalSecret", "sonarqube-monitoring"),
     "needs Secret cicd/sonarqube-monitoring, which nothing"),
    ("a namespace nothing makes (ExternalSecrets before their stack's namespace)", _drop("Namespace", "cicd"),
     "needs Namespace /cicd, which nothing"),
    ("the store after the admin ExternalSecret (the old wave deadlock)",
     _move("SecretStore", "sharedpg-vault", (5, 1, 0), "database"),
     "needs SecretStore database/sharedpg-vault, made later"),
    ("a namespace's store missing", _drop("SecretStore", "sharedpg-vault", "cicd"),
     "needs SecretStore cicd/sharedpg-vault, which"),
    ("a store's service account missing", _drop("ServiceAccount", "sharedpg-secrets", "policies"),
     "needs ServiceAccount policies/sharedpg-secrets, which nothing"),
    ("an ExternalSecret of cicd asking for the admin's password",
     _ask("sonarqube-db", "database/shared-postgresql/admin"),
     "asks for database/shared-postgresql/admin, which Vault role eso-cicd of namespace cicd may not read"),
    ("an ExternalSecret of observability asking for another stack's path",
     _ask("grafana-db", "backstage/backstage/postgres"), "which Vault role eso-observability"),
    ("an ExternalSecret through a store every namespace may use", _cluster_store("dex-db"),
     "uses a ClusterSecretStore"),
    ("the apps' secrets read before the bootstrap Job writes Vault", _move("Job", "sharedpg-bootstrap", (4, 1, 1)),
     "needs VaultSecret /cicd/sonarqube/postgres, made later"),
    ("the admin secret read before it is created", _drop("Job", "sharedpg-admin-secret"),
     "needs VaultSecret /database/shared-postgresql/admin, which nothing"),
    ("the Job's service account missing", _drop("ServiceAccount", "sharedpg-bootstrap"),
     "needs ServiceAccount database/sharedpg-bootstrap, which nothing"),
    ("the tenants spec missing", _drop("ConfigMap", "sharedpg-tenants"),
     "needs ConfigMap database/sharedpg-tenants, which nothing"),
])  # fmt: skip
def test_the_wiring_check_catches(full_tree: Tree, defect: str, change: Callable[[Tree], None], needle: str) -> None:
    problems = wiring_problems(_broken(full_tree, change))
    assert any(needle in p for p in problems), (defect, problems)


def test_the_sharedpg_jobs_deadlines_fit_every_try(full_tree: Tree) -> None:
    ours = [
        p
        for p in full_tree.of("Job")
        if p.obj["spec"]["template"]["spec"]["containers"][0]["image"].startswith("sharedpg:")
    ]
    assert {p.name for p in ours} == {"sharedpg-bootstrap", "sharedpg-admin-secret"}
    for placed in ours:
        spec = placed.obj["spec"]
        container = spec["template"]["spec"]["containers"][0]
        args = container["args"]
        timeout = float(args[args.index("--timeout") + 1])
        tries = spec["backoffLimit"] + 1
        assert timeout * tries <= spec["activeDeadlineSeconds"] <= timeout * tries * 1.25, placed.name


# -- task deploy ---------------------------------------------------------------------------------------------


def test_task_deploy_applies_the_root_then_waits_for_database_and_bootstrap_before_the_stacks() -> None:
    taskfile = yaml.safe_load((SNIPPETS / "Taskfile.yml").read_text())
    commands = [c if isinstance(c, str) else c.get("cmd", "") for c in taskfile["tasks"]["deploy"]["cmds"]]
    text = "\n".join(commands)
    apply_at = text.index("root-application.yaml")
    database_at = text.index("application/shared-postgresql")
    bootstrap_at = text.index("application/sharedpg-bootstrap")
    stacks_at = text.index("--for=jsonpath='{.status.health.status}'=Healthy application/platform")
    assert apply_at < database_at < bootstrap_at < stacks_at
    fuses = [text.index(f'"{stack}":{{{{.FUSE_{stack.upper()}}}}}') for stack in STACKS]
    assert all(apply_at < at < database_at for at in fuses), "the fuses are set before anything is waited for"
