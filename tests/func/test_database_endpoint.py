"""Where the clients find the server, set in one place (root values ``database.external``, ``database.tls``):
every container of the tree that logs in to it (the bootstrap Job, serve-metrics, the copy Jobs, every app's
gate, in charts and kustomizations alike) reads the host, port and TLS settings from the ConfigMap
sharedpg-database of its namespace and the CA from sharedpg-database-ca, rendered by the real charts; an
external server renders no server of ours; TLS for the in-cluster server is a switch. The rendered settings
then log in for real, with ``verify-full``, to a PostgreSQL whose certificate names the rendered host."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import trustme
import yaml

from tests.conftest import ROOT, Cli
from tests.fix_backstage import Backstage, not_installed
from tests.fix_gitops import SNIPPETS, WORKLOADS, Renderer, Tree, pod_template, row_fuses
from tests.fix_servers import MANAGED_ADMIN, Server, start_tls
from tests.func.test_k8s_snippets import DATABASE_CONFIGMAP, SERVICE_HOST

EXTERNAL = "sharedpg-prod.abc123.eu-west-1.rds.amazonaws.com"
CA_PATH = "/etc/sharedpg-database/ca.crt"
EVERYTHING = row_fuses((True, True, True, True))
# what sharedpg runs that never logs in to the database: admin-secret writes Vault. (Dex's sidecar gate runs
# python3 and logs in from its probes, with the container's environment: a client.)
NOT_CLIENTS = {"admin-secret"}


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="module")
def renderer(tmp_path_factory: pytest.TempPathFactory) -> Renderer:
    return Renderer(tmp_path_factory.mktemp("endpoint"))


def rendered(renderer: Renderer, where: str, ca_file: Path, profile: str = "full", port: int = 6432) -> Tree:
    """The whole tree with the server in-cluster, in-cluster with TLS, or external (at ``port``)."""
    sets = {
        "in-cluster": [],
        "in-cluster with TLS": ["--set", "database.tls.enabled=true"],
        "external": ["--set", f"database.external.host={EXTERNAL}", "--set", f"database.external.port={port}"],
    }
    tls = ["--set-file", f"database.tls.caBundle={ca_file}"] if where != "in-cluster" else []
    return renderer.tree(EVERYTHING, profile, *sets[where], *tls)  # fmt: skip


def clients(tree: Tree) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(app, namespace, pod spec, container) of every container that logs in to the shared server."""
    found = []
    for placed in (p for p in tree.objects if p.kind in WORKLOADS):
        pod = pod_template(placed.obj)
        for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
            runs = (container.get("args") or container.get("command") or [""])[0]
            if "sharedpg" in container.get("image", "") and runs not in NOT_CLIENTS:
                found.append((placed.app, placed.namespace, pod, container))
    return found


def mounted_ca(tree: Tree, namespace: str, pod: dict[str, Any], container: dict[str, Any], path: str = CA_PATH) -> str:
    """The file the container finds at ``path``: the mount of its directory, that volume's ConfigMap key."""
    [mount] = [m for m in container.get("volumeMounts", []) if m["mountPath"] == os.path.dirname(path)]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    source = volume["configMap"]
    name = os.path.basename(path)
    [item] = [i for i in source["items"] if i["path"] == name]
    return str(tree.one("ConfigMap", source["name"], namespace).obj["data"][item["key"]])


def resolved(tree: Tree, container: dict[str, Any], namespace: str) -> dict[str, str]:
    """The container's environment without what comes from Secrets."""
    return {k: v for k, v in tree.env(container, namespace).items() if isinstance(v, str)}


def app_container(tree: Tree, app: str, name: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    [(namespace, pod, container)] = [(p.namespace, pod_template(p.obj), c) for p in tree.objects
                                     if p.app == app and p.kind in WORKLOADS
                                     for c in pod_template(p.obj)["containers"] if c["name"] == name]  # fmt: skip
    return namespace, pod, container


def data_of(tree: Tree, app: str, kind: str, key: str) -> str:
    [obj] = [p.obj for p in tree.of(kind, app) if key in (p.obj.get("data") or {})]
    value = str(obj["data"][key])
    return base64.b64decode(value).decode() if kind == "Secret" else value


def app_tls(tree: Tree, app: str) -> list[tuple[str, str, str | None]]:
    """What each app's own database client is told, read from its rendered objects through its chart's own
    keys: (the process, its sslmode, the CA it reads, as the file its container has there)."""
    found = []

    def add(container: str, sslmode: str, ca: str | None) -> None:
        namespace, pod, spec = app_container(tree, app, container)
        found.append((container, sslmode, mounted_ca(tree, namespace, pod, spec, ca) if ca else None))

    if app == "sonarqube":
        url = urlsplit(data_of(tree, app, "ConfigMap", "SONAR_JDBC_URL").removeprefix("jdbc:"))
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        add("sonarqube", query.get("sslmode", "prefer"), query.get("sslrootcert"))  # pgjdbc's default: prefer
    elif app == "argo-workflows":
        postgres = yaml.safe_load(data_of(tree, app, "ConfigMap", "config"))["persistence"]["postgresql"]
        for container in ("controller", "argo-server"):
            namespace, _, spec = app_container(tree, app, container)
            sslmode = postgres["sslMode"] if postgres.get("ssl") else "prefer"  # Argo: sslMode only with ssl
            add(container, sslmode, resolved(tree, spec, namespace).get("PGSSLROOTCERT"))  # pgx reads it
    elif app == "grafana":
        ini = data_of(tree, app, "ConfigMap", "grafana.ini").split("[database]")[1].split("\n[")[0]
        settings = dict(line.split(" = ", 1) for line in ini.strip().splitlines())
        add("grafana", settings["ssl_mode"], settings.get("ca_cert_path"))
    elif app == "backstage":
        config = yaml.safe_load(data_of(tree, app, "ConfigMap", "app-config.yaml"))
        ssl = config["backend"]["database"]["connection"].get("ssl")  # node-postgres: checks the name when set
        add("backstage-backend", "verify-full" if ssl and ssl["rejectUnauthorized"] else "disable",
            ssl["ca"]["$file"] if ssl else None)  # fmt: skip
    elif app == "dex":  # Dex expands $VARIABLES of its storage config from its environment
        namespace, _, spec = app_container(tree, app, "dex")
        env = resolved(tree, spec, namespace)
        storage = yaml.safe_load(data_of(tree, app, "Secret", "config.yaml"))["storage"]["config"]

        def expand(value: object) -> str:
            return re.sub(r"\$(\w+)", lambda m: env.get(m.group(1), ""), str(value))

        assert expand(storage["host"]) == env["PGHOST"] and "port" not in storage  # lib/pq: PGPORT
        add("dex", expand(storage["ssl"]["mode"]) or "verify-full", expand(storage["ssl"]["caFile"]) or None)
    elif app == "policy-reporter":  # DATABASE_ENABLESSL: verify-full, against Go's roots plus SSL_CERT_DIR
        namespace, _, spec = app_container(tree, app, "policy-reporter")
        env = resolved(tree, spec, namespace)
        add("policy-reporter", "verify-full" if env.get("DATABASE_ENABLESSL") == "true" else "disable",
            f"{env['SSL_CERT_DIR']}/ca.crt" if "SSL_CERT_DIR" in env else None)  # fmt: skip
    return found


@pytest.mark.parametrize("where", ["in-cluster", "in-cluster with TLS", "external"])
def test_each_apps_own_client_uses_verify_full_with_the_ca(renderer: Renderer, ca_file: Path, where: str) -> None:
    """Every app's own configuration, rendered by its real chart, through that chart's own keys: with TLS on,
    verify-full and the CA file its container really has; without, no TLS (the in-cluster server has none)."""
    tls = where != "in-cluster"
    tree = rendered(renderer, where, ca_file, port=5432)
    for app in ("sonarqube", "argo-workflows", "grafana", "backstage", "dex", "policy-reporter"):
        for container, sslmode, ca in app_tls(tree, app):
            if tls:
                assert (sslmode, ca) == ("verify-full", ca_file.read_text()), (app, container, sslmode)
            else:
                assert sslmode in ("disable", "prefer") and ca is None, (app, container, sslmode, ca)
    jdbc = urlsplit(data_of(tree, "sonarqube", "ConfigMap", "SONAR_JDBC_URL").removeprefix("jdbc:"))
    archive = yaml.safe_load(data_of(tree, "argo-workflows", "ConfigMap", "config"))["persistence"]["postgresql"]
    host = EXTERNAL if where == "external" else SERVICE_HOST
    assert jdbc.hostname == archive["host"] == host and jdbc.port == archive["port"] == 5432, "host and port, too"


@pytest.mark.parametrize("where", ["in-cluster", "in-cluster with TLS", "external"])
@pytest.mark.parametrize("profile", ["full", "pragmatic"])
def test_every_client_reads_the_one_endpoint(renderer: Renderer, ca_file: Path, where: str, profile: str) -> None:
    tls = where != "in-cluster"
    tree = rendered(renderer, where, ca_file, profile)
    found = clients(tree)
    apps = {app for app, *_ in found}
    expected_apps = {"sharedpg-bootstrap", "backstage", "sonarqube"} | (
        {"sharedpg-monitoring", "argo-workflows", "grafana", "dex", "policy-reporter"} if profile == "full" else set()
    )
    assert apps >= expected_apps, apps
    expected = {"PGHOST": EXTERNAL if where == "external" else SERVICE_HOST,
                "PGPORT": "6432" if where == "external" else "5432",
                "PGSSLMODE": "verify-full" if tls else "disable"}  # fmt: skip
    for app, namespace, pod, container in found:
        assert not {"PGHOST", "PGPORT", "PGSSLMODE", "PGSSLROOTCERT"} & {e["name"] for e in container.get("env", [])}, (
            f"{app}/{container['name']}: the endpoint is set in one place, not in its env"
        )
        env = tree.env(container, namespace)
        assert {k: env.get(k) for k in expected} == expected, (app, container["name"])
        assert env.get("PGSSLROOTCERT") == (CA_PATH if tls else None), (app, container["name"])
        assert mounted_ca(tree, namespace, pod, container) == (ca_file.read_text() if tls else ""), app
    if where == "in-cluster":  # what test_k8s_snippets runs the raw files' gates with
        assert tree.one("ConfigMap", "sharedpg-database", "database").obj["data"] == DATABASE_CONFIGMAP


def test_the_documented_switch_renders_what_the_document_says(renderer: Renderer, ca_file: Path,
                                                             tmp_path: Path) -> None:  # fmt: skip
    """docs/managed-database.md's values block, as written (its CA placeholder given a real CA): no server of
    ours, every client on that host with verify-full."""
    [block] = re.findall(r"```yaml\n(# root values: .*?)```", (ROOT / "docs" / "managed-database.md").read_text(),
                         re.S)  # fmt: skip
    values = yaml.safe_load(block)
    values["database"]["tls"]["caBundle"] = ca_file.read_text()
    (tmp_path / "switch.yaml").write_text(yaml.safe_dump(values))
    tree = renderer.tree(EVERYTHING, "full", "-f", str(tmp_path / "switch.yaml"))
    assert not tree.of("StatefulSet", "shared-postgresql")
    host = values["database"]["external"]["host"]
    for app, namespace, _, container in clients(tree):
        env = tree.env(container, namespace)
        assert (env["PGHOST"], env["PGSSLMODE"]) == (host, "verify-full"), (app, container["name"])


def test_an_external_server_renders_no_server_of_ours(renderer: Renderer, ca_file: Path) -> None:
    tree = renderer.tree(EVERYTHING, "full", "--set", f"database.external.host={EXTERNAL}", "--set-file",
                         f"database.tls.caBundle={ca_file}")  # fmt: skip
    ours = [(p.kind, p.name) for p in tree.objects if p.name == "shared-postgresql" and p.kind != "Application"]
    assert ours == [], ours
    [hook] = tree.of("Job", "shared-postgresql")
    spec = hook.obj["spec"]["template"]["spec"]
    assert "initContainers" not in spec, "that server's admin is the one it gave: no password of ours for it"
    assert [c["args"][:3] for c in spec["containers"]] == [["admin-secret", "--vault-path",
                                                            "cicd/sonarqube/monitoring"]]  # fmt: skip
    assert tree.one("ExternalSecret", "shared-postgresql-admin", "database")  # the admin's login, from Vault


def test_tls_on_the_in_cluster_server_serves_the_named_secret(renderer: Renderer, ca_file: Path) -> None:
    tree = renderer.tree(EVERYTHING, "full", "--set", "database.tls.enabled=true", "--set",
                         "database.tls.serverSecret=db-cert", "--set-file",
                         f"database.tls.caBundle={ca_file}")  # fmt: skip
    [server] = tree.of("StatefulSet", "shared-postgresql")
    pod = server.obj["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    settings = dict(a.split("=", 1) for a in args if "=" in a)
    assert settings["ssl"] == "on"
    [volume] = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == "db-cert"]
    [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"]]
    assert {settings["ssl_cert_file"], settings["ssl_key_file"]} == {f"{mount['mountPath']}/tls.crt",
                                                                     f"{mount['mountPath']}/tls.key"}  # fmt: skip
    untouched = renderer.tree(EVERYTHING, "full").of("StatefulSet", "shared-postgresql")[0].obj
    assert "ssl=on" not in untouched["spec"]["template"]["spec"]["containers"][0]["args"]


@pytest.mark.parametrize(("sets", "needle"), [
    (["database.tls.enabled=true"], r"database\.tls\.caBundle: TLS is on \(database\.tls\.enabled\)"),
    ([f"database.external.host={EXTERNAL}"], r"database\.tls\.caBundle: TLS is on \(an external server\)"),
    (["database.tls.enabled=true", "database.tls.caBundle=not a certificate"], r"database\.tls\.caBundle"),
    (["database.external.host=postgres://db:5432"], r'database\.external\.host "postgres://db:5432": give'),
])  # fmt: skip
def test_an_endpoint_that_cannot_work_fails_the_render_naming_the_value(tmp_path: Path, sets: list[str],
                                                                         needle: str) -> None:  # fmt: skip
    with pytest.raises(AssertionError, match=needle):
        Renderer(tmp_path).root(row_fuses((False, True, False, False)), "full", SNIPPETS / "root",
                                *(a for s in sets for a in ("--set", s)))  # fmt: skip


# -- the rendered settings, logging in for real --------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_server(ca: trustme.CA) -> Iterator[Server]:
    """PostgreSQL 15 (Debian's, built with OpenSSL) accepting only TLS, with a certificate for the names the
    tree renders (the in-cluster Service and the external host), reached on loopback through ``PGHOSTADDR``."""
    server, _ = start_tls(ca, (SERVICE_HOST, EXTERNAL, "localhost"),  # localhost: for Node, which has no hostaddr
                          "local all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\n"
                          "hostssl all all ::1/128 scram-sha-256\n")  # fmt: skip
    yield server
    server.local.stop()


@pytest.fixture(scope="module")
def password_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One for the module: the second bootstrap finds the tenants the first made, and their passwords."""
    return tmp_path_factory.mktemp("passwords")


@pytest.mark.parametrize("where", ["in-cluster with TLS", "external"])
def test_the_rendered_settings_log_in_with_verify_full(renderer: Renderer, ca_file: Path, tls_server: Server,
                                                       cli: Cli, tmp_path: Path, password_dir: Path,
                                                       where: str) -> None:  # fmt: skip
    """The bootstrap Job's and a gate's environment exactly as rendered (host, port, sslmode, the CA file's
    path and content), only the address (PGHOSTADDR) and the mounted files made local: the managed admin
    bootstraps every tenant over verify-full, and a tenant's gate then logs in the same way."""
    tree = rendered(renderer, where, ca_file, port=tls_server.port)
    mounted = tmp_path / "ca.crt"
    by_app = {(app, c["name"]): (ns, pod, c) for app, ns, pod, c in clients(tree)}

    def env_of(app: str, name: str) -> dict[str, str]:
        namespace, pod, container = by_app[(app, name)]
        mounted.write_text(mounted_ca(tree, namespace, pod, container))
        env = resolved(tree, container, namespace)
        assert env["PGSSLROOTCERT"] == CA_PATH
        return env | {"PGSSLROOTCERT": str(mounted), "PGHOSTADDR": "127.0.0.1", "PGPORT": str(tls_server.port)}

    admin = env_of("sharedpg-bootstrap", "bootstrap") | {"PGUSER": MANAGED_ADMIN,
                                                         "PGPASSWORD": tls_server.managed_password}  # fmt: skip
    admin.pop("PGPASSWORD_FILE", None)
    cli.secrets.add(tls_server.managed_password)
    booted = cli("bootstrap", "--no-vault", "--password-dir", str(password_dir), env=admin, timeout=120)
    assert booted.code == 0, booted
    password = (password_dir / "sonarqube").read_text().strip()
    cli.secrets.add(password)
    gate = env_of("sonarqube", "wait-for-db") | {"PGPASSWORD": password}
    ready = cli("wait-for-db", "--timeout", "20", env=gate)
    assert ready.code == 0, ready  # over TLS: the server's pg_hba.conf admits nothing else on TCP


def test_the_real_backstage_backend_connects_with_the_rendered_ssl(renderer: Renderer, ca_file: Path,
                                                                   tls_server: Server, cli: Cli, tmp_path: Path,
                                                                   password_dir: Path) -> None:  # fmt: skip
    """Backstage's backend (the real one, from npm) with the database block the chart renders with TLS on:
    its connection.ssl, the CA read through $file from where its container has it, over a server that admits
    only TLS. Node has no hostaddr, so the host is the certificate's other name, localhost."""
    reason = not_installed()
    if reason:
        pytest.skip(reason)
    tree = renderer.tree(EVERYTHING, "full", "--set", "database.tls.enabled=true", "--set-file",
                         f"database.tls.caBundle={ca_file}")  # fmt: skip
    namespace, pod, backend = app_container(tree, "backstage", "backstage-backend")
    database = yaml.safe_load(data_of(tree, "backstage", "ConfigMap", "app-config.yaml"))["backend"]["database"]
    local_ca = tmp_path / "ca.crt"
    local_ca.write_text(mounted_ca(tree, namespace, pod, backend, database["connection"]["ssl"]["ca"]["$file"]))
    database["connection"]["ssl"]["ca"]["$file"] = str(local_ca)
    admin = {
        "PGHOST": "localhost",
        "PGPORT": str(tls_server.port),
        "PGDATABASE": "postgres",
        "PGSSLMODE": "verify-full",
        "PGSSLROOTCERT": str(ca_file),
        "PGUSER": MANAGED_ADMIN,
        "PGPASSWORD": tls_server.managed_password,
    }
    cli.secrets.add(tls_server.managed_password)
    booted = cli("bootstrap", "--no-vault", "--password-dir", str(password_dir), env=admin, timeout=120)
    assert booted.code == 0, booted
    password = (password_dir / "backstage").read_text().strip()
    backstage = Backstage(tmp_path, [{"backend": {"database": database}}], {
        "POSTGRES_HOST": "localhost", "POSTGRES_PORT": str(tls_server.port), "POSTGRES_USER": "backstage",
        "POSTGRES_PASSWORD": password})  # fmt: skip
    try:
        backstage.ready()
        assert backstage.wait(backstage.entities), "the catalog, stored in the tenant over TLS"
    finally:
        backstage.stop()
