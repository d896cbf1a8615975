"""Vault for real: ``bootstrap`` and ``admin-secret`` against OpenBao servers (tests/fix_openbao.py), and the
policies and auth roles of ``k8s-snippets/vault/`` applied by its own ``configure.sh`` and proved with the
Job's and External Secrets' own logins."""

from __future__ import annotations

import re
import secrets
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import psycopg
import pytest
import trustme

from sharedpg_tools import spec as spec_module
from sharedpg_tools.commands.admin_secret import DEFAULT_PATH as ADMIN_PATH
from tests.conftest import ROOT, Cli, Result
from tests.fix_gitops import STACKS, Renderer
from tests.fix_openbao import BAO, OpenBao, TokenReviewAPI
from tests.fix_servers import Server
from tests.func.test_bootstrap import Platform, by_tenant
from tests.func.test_k8s_snippets import objects, resolve_env

VAULT_SNIPPETS = ROOT / "k8s-snippets" / "vault"


@pytest.fixture
def platform(cli: Cli, pg: Server, tmp_path: Path) -> Iterator[Platform]:
    made = Platform(cli, pg, pg.superuser, tmp_path)
    yield made
    pg.drop_tenants(made.roles)


def path_of(platform: Platform, name: str) -> str:
    stack = next(t["stack"] for t in platform.raw["tenants"] if t["name"] == name)
    return f"{stack}/{name}/postgres"


def test_bootstrap_stores_what_each_app_needs_and_a_rerun_writes_nothing(platform: Platform, openbao: OpenBao) -> None:
    result = platform.run(vault=openbao)
    assert result.code == 0, result
    for tenant in platform.raw["tenants"]:
        stored = openbao.latest(path_of(platform, tenant["name"]))
        assert stored is not None and set(stored) == {"password", "username", "database", "host", "port"}
        assert stored["username"] == tenant["name"] and stored["database"] == tenant["name"]
        assert stored["host"] == platform.pg.host and stored["port"] == str(platform.pg.port)
        assert len(stored["password"]) >= 32
        platform.login(tenant["name"], openbao)
    platform.assert_no_password_printed(result, openbao)
    again = platform.run(vault=openbao)
    assert again.code == 0 and {r["action"] for r in by_tenant(again).values()} == {"unchanged"}, again
    assert {openbao.version(path_of(platform, n)) for n in platform.names} == {1}, "a re-run wrote a new version"


def test_four_bootstraps_at_once_agree_on_one_password_per_tenant(platform: Platform, openbao: OpenBao) -> None:
    runs = [platform.cli.start(*platform.args(vault=openbao), env=platform.env(openbao)) for _ in range(4)]
    results = [run.finish(timeout=180) for run in runs]
    assert [r.code for r in results] == [0, 0, 0, 0], [r.stderr[-2000:] for r in results if r.code]
    for name in platform.names:
        assert openbao.version(path_of(platform, name)) == 1, "create-only: one write per tenant, whoever won"
        platform.login(name, openbao)


def test_a_secret_already_there_is_used_and_never_overwritten(platform: Platform, openbao: OpenBao) -> None:
    name = platform.names[0]
    chosen = "chosen-by-a-person-" + secrets.token_hex(8)
    platform.cli.secrets.add(chosen)
    openbao.put(path_of(platform, name), {"password": chosen, "username": name, "database": name,
                                          "host": platform.pg.host, "port": str(platform.pg.port)})  # fmt: skip
    result = platform.run(vault=openbao)
    assert result.code == 0, result
    assert openbao.version(path_of(platform, name)) == 1
    with psycopg.connect(platform.pg.conninfo(name, name), password=chosen):
        pass


def test_a_new_version_written_by_a_person_rotates_the_role(platform: Platform, openbao: OpenBao) -> None:
    assert platform.run(vault=openbao).code == 0
    name = platform.names[-1]
    latest = openbao.latest(path_of(platform, name))
    assert latest is not None
    rotated = "rotated-by-hand-" + secrets.token_hex(8)
    platform.cli.secrets.add(rotated)
    openbao.put(path_of(platform, name), {**latest, "password": rotated})
    result = platform.run(vault=openbao)
    assert result.code == 0, result
    assert any("set the password" in c for c in by_tenant(result)[name]["changes"])
    platform.login(name, openbao)


@pytest.mark.parametrize(("shape", "needle"), [
    ({"username": "x"}, "no 'password' key"),
    ({"password": "set-by-hand-4b1d9e", "pw": "set-by-hand-4b1d9e"}, "keys sharedpg does not write: pw"),
    ({"password": "set-by-hand-4b1d9e", "username": "someone_else"}, "username='someone_else' where sharedpg expects"),
])  # fmt: skip
def test_a_secret_of_the_wrong_shape_is_refused_naming_its_path(
    platform: Platform, openbao: OpenBao, shape: dict[str, str], needle: str
) -> None:
    name = platform.names[0]
    fields = {"username": name, "database": name, "host": platform.pg.host, "port": str(platform.pg.port)}
    openbao.put(path_of(platform, name), {**fields, **shape})
    result = platform.run(vault=openbao)
    assert result.code == 3, result
    report = by_tenant(result)[name]
    assert report["action"] == "failed" and f"secret/{path_of(platform, name)}" in report["error"]
    assert needle in report["error"] and "never overwrites" in report["hint"]
    assert openbao.version(path_of(platform, name)) == 1, "the person's secret was overwritten"
    assert platform.pg.admin_sql("SELECT count(*) FROM pg_roles WHERE rolname = %s", name) == [(0,)]
    others = [n for n in platform.names if n != name]
    assert all(report_["action"] == "created" for n, report_ in by_tenant(result).items() if n in others)


def test_a_moved_server_is_refused_with_the_command_that_carries_the_password(platform: Platform,
                                                                              openbao: OpenBao) -> None:  # fmt: skip
    """The secrets name the old server (in-cluster), bootstrap now reaches another (a managed one): the
    password is kept, never replaced; the hint's patch, run as written, carries it to the new endpoint."""
    assert platform.run(vault=openbao).code == 0
    name = platform.names[0]
    before = openbao.latest(path_of(platform, name))
    assert before is not None
    openbao.put(
        path_of(platform, name), {**before, "host": "shared-postgresql.database.svc.cluster.local", "port": "5432"}
    )  # what the in-cluster server's bootstrap wrote
    moved = platform.run(vault=openbao)
    assert moved.code == 3, moved
    report = by_tenant(moved)[name]
    assert "the server moved" in report["error"] and "still names the old one" in report["error"], report
    command = report["hint"].split("keeping it: ", 1)[1].split(" (sharedpg")[0]
    assert command == (f"bao kv patch -mount=secret {path_of(platform, name)} host={platform.pg.host} "
                       f"port={platform.pg.port}")  # fmt: skip
    openbao.bao(*shlex.split(command)[1:])
    again = by_tenant(platform.run(vault=openbao))
    assert again[name]["action"] == "unchanged", again[name]
    after = openbao.latest(path_of(platform, name))
    assert after == before, "the password carried, the endpoint the current one"
    platform.login(name, openbao)


def test_a_kv_version_1_mount_is_refused_before_anything_is_written(platform: Platform, openbao: OpenBao) -> None:
    mount = f"kv1_{secrets.token_hex(3)}"
    openbao.bao("secrets", "enable", f"-path={mount}", "-version=1", "kv")
    result = platform.run(vault=openbao, SHAREDPG_VAULT_MOUNT=mount)
    assert result.code == 3, result
    assert f"Vault mount {mount}/ is KV version 1, not KV version 2" in result.stderr
    with pytest.raises(hvac.exceptions.InvalidPath):  # nothing was written there
        openbao.client().secrets.kv.v1.list_secrets(path="", mount_point=mount)
    assert platform.pg.admin_sql("SELECT count(*) FROM pg_roles WHERE rolname = ANY(%s)", platform.names) == [(0,)]


@pytest.mark.parametrize("token", ["root", "least privilege"])
def test_a_mount_that_does_not_exist_is_one_line_naming_it(platform: Platform, openbao: OpenBao, token: str) -> None:
    """With the root token the mount check sees no engine; with a token whose policy covers the path but
    cannot look at mounts, Vault's "no handler for route" on the read is not taken for "no secret yet"."""
    mount = f"nowhere_{secrets.token_hex(3)}"
    env = {"SHAREDPG_VAULT_MOUNT": mount}
    if token != "root":
        openbao.bao("policy", "write", mount, "-", stdin=f'path "{mount}/*" {{ capabilities = ["create", "read"] }}\n')
        env["VAULT_TOKEN"] = openbao.token(mount)
    result = platform.cli(*platform.args(vault=openbao), env={**platform.env(openbao), **env}, timeout=180)
    assert result.code == 3, result
    [error] = [e for e in result.events() if e["level"] == "error"]
    assert f"no secrets engine at {mount}/" in error["error"] and "secrets enable" in error["hint"], error
    assert platform.pg.admin_sql("SELECT count(*) FROM pg_roles WHERE rolname = ANY(%s)", platform.names) == [(0,)]


def test_dry_run_writes_nothing_to_vault(platform: Platform, openbao: OpenBao) -> None:
    result = platform.run("--dry-run", vault=openbao)
    assert result.code == 0, result
    assert {openbao.version(path_of(platform, n)) for n in platform.names} == {0}


def _tenant_is_whole_or_absent(platform: Platform, vault: OpenBao, name: str) -> bool:
    """No role without its secret, and a role logs in with the secret's password. (A secret without its
    role is what the next run finishes: it reads the secret and makes the role.)"""
    stored = vault.latest(path_of(platform, name))
    role = platform.pg.admin_sql("SELECT count(*) FROM pg_roles WHERE rolname = %s", name) == [(1,)]
    if role and stored is None:
        return False
    if role:
        platform.login(name, vault)
    return True


@pytest.mark.parametrize("how", ["revoked", "expired"])
def test_a_dead_token_is_a_clear_error_at_once(platform: Platform, openbao: OpenBao, how: str) -> None:
    openbao.bao("policy", "write", "tenants-test", "-",
                stdin='path "secret/data/*" { capabilities = ["create", "read"] }\n')  # fmt: skip
    token = openbao.token("tenants-test", ttl="1s" if how == "expired" else "1h")
    platform.cli.secrets.add(token)
    if how == "revoked":
        openbao.bao("token", "revoke", token)
    else:
        time.sleep(1.5)
    started = time.monotonic()
    result = platform.cli(*platform.args(vault=openbao), env={**platform.env(openbao), "VAULT_TOKEN": token})
    assert result.code == 3, result
    assert time.monotonic() - started < 30, "a dead token was retried"
    assert "permission denied" in result.stderr and "expired or was revoked" in result.stderr
    assert platform.pg.admin_sql("SELECT count(*) FROM pg_roles WHERE rolname = ANY(%s)", platform.names) == [(0,)]


def test_a_token_revoked_mid_run_leaves_no_tenant_half_made(cli: Cli, pg: Server, openbao: OpenBao,
                                                            tmp_path: Path) -> None:  # fmt: skip
    platform = Platform(cli, pg, pg.superuser, tmp_path, tenants=24)
    openbao.bao("policy", "write", "tenants-test", "-",
                stdin='path "secret/data/*" { capabilities = ["create", "read"] }\n')  # fmt: skip
    token = openbao.token("tenants-test")
    cli.secrets.add(token)
    try:
        running = cli.start(*platform.args(vault=openbao), env={**platform.env(openbao), "VAULT_TOKEN": token})
        time.sleep(0.4)
        openbao.bao("token", "revoke", token)
        result = running.finish(timeout=180)
        assert result.code in (0, 3), result
        assert all(_tenant_is_whole_or_absent(platform, openbao, n) for n in platform.names)
        again = platform.run(vault=openbao)  # with a good token, the next run finishes every tenant
        assert again.code == 0, again
        for name in platform.names:
            platform.login(name, openbao)
    finally:
        pg.drop_tenants(platform.roles)


def test_sealed_until_the_deadline_is_exit_1_with_a_hint(platform: Platform, openbao_tls: OpenBao) -> None:
    openbao_tls.seal()
    result = platform.run("--timeout", "3", vault=openbao_tls)
    assert result.code == 1, result
    assert any(e["event"] == "vault not ready" for e in result.events())
    assert "sealed" in result.stderr and "unseal" in result.stderr


def test_unsealed_during_the_wait_goes_on(platform: Platform, openbao_tls: OpenBao) -> None:
    openbao_tls.seal()
    running = platform.cli.start(*platform.args(vault=openbao_tls), env=platform.env(openbao_tls))
    time.sleep(1.5)
    openbao_tls.unseal()
    result = running.finish(timeout=120)
    assert result.code == 0, result
    assert any(e["event"] == "vault not ready" and "sealed" in e["hint"] for e in result.events())
    for name in platform.names:
        platform.login(name, openbao_tls)


def test_a_wrong_ca_is_a_tls_error_not_a_retry_loop(platform: Platform, openbao_tls: OpenBao, tmp_path: Path) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    started = time.monotonic()
    result = platform.cli(
        *platform.args(vault=openbao_tls), env={**platform.env(openbao_tls), "VAULT_CACERT": str(other)}
    )
    assert result.code == 3, result
    assert time.monotonic() - started < 30
    assert "TLS verification" in result.stderr and "VAULT_CACERT" in result.stderr
    assert not any(e["event"] == "vault not ready" for e in result.events())


# --- the admin secret -------------------------------------------------------------------------------------------


def admin_secret(cli: Cli, vault: OpenBao, path: str, *extra: str, **env: str) -> Result:
    cli.secrets.add(vault.root_token)
    return cli("admin-secret", "--vault-path", path, "--output", "json", *extra,
               env={**{k: v for k, v in vault.env().items() if k != "PATH"}, **env})  # fmt: skip


def test_admin_secret_is_created_once_and_kept(cli: Cli, openbao: OpenBao) -> None:
    path = f"database/test-{secrets.token_hex(3)}/admin"
    first = admin_secret(cli, openbao, path)
    assert first.code == 0 and first.result() == {
        "command": "admin-secret",
        "status": "created",
        "exit_code": 0,
        "path": f"secret/{path}",
        "username": "postgres",
        "created": True,
    }
    stored = openbao.latest(path)
    assert stored is not None and set(stored) == {"username", "password"} and len(stored["password"]) >= 32
    assert stored["password"] not in first.stdout + first.stderr
    again = admin_secret(cli, openbao, path)
    assert again.code == 0 and again.result()["created"] is False and again.result()["status"] == "kept"
    assert openbao.version(path) == 1 and openbao.latest(path) == stored


def test_admin_secret_runs_at_once_agree(cli: Cli, openbao: OpenBao) -> None:
    path = f"database/test-{secrets.token_hex(3)}/admin"
    env = {k: v for k, v in openbao.env().items() if k != "PATH"}
    runs = [cli.start("admin-secret", "--vault-path", path, "--output", "json", env=env) for _ in range(4)]
    results = [run.finish() for run in runs]
    assert [r.code for r in results] == [0] * 4, results
    assert sorted(r.result()["created"] for r in results) == [False, False, False, True]
    assert openbao.version(path) == 1


def test_admin_secret_of_another_shape_is_refused(cli: Cli, openbao: OpenBao) -> None:
    path = f"database/test-{secrets.token_hex(3)}/admin"
    openbao.put(path, {"user": "postgres", "password": "set-by-hand-4b1d9e"})
    result = admin_secret(cli, openbao, path)
    assert result.code == 3, result
    assert f"secret/{path}" in result.stderr and "keys sharedpg does not write: user" in result.stderr
    assert openbao.version(path) == 1


# --- the platform's Vault, configured by k8s-snippets/vault/configure.sh ----------------------------------------


class PlatformVault:
    """A fresh OpenBao configured exactly as the snippet tells the platform team, with the TokenReview
    stand-in as its Kubernetes API."""

    def __init__(self, server: OpenBao, api: TokenReviewAPI, workdir: Path):
        self.server, self.api = server, api
        ca = workdir / "kubernetes-ca.pem"
        api.ca.cert_pem.write_to_path(str(ca))
        reviewer = workdir / "reviewer.jwt"
        reviewer.write_text(api.reviewer_jwt)
        env = {**server.env(), "VAULT": str(BAO), "KUBERNETES_HOST": api.host, "KUBERNETES_CA_CERT": str(ca),
               "TOKEN_REVIEWER_JWT": str(reviewer)}  # fmt: skip
        for _ in range(2):  # the second run proves it is safe to re-run
            done = subprocess.run(["sh", str(VAULT_SNIPPETS / "configure.sh")], env=env, capture_output=True, text=True,
                                  timeout=120)  # fmt: skip
            assert done.returncode == 0, done.stderr

    def login(self, namespace: str, account: str, role: str) -> hvac.Client:
        """What a pod of ``namespace/account`` gets: a client logged in through the kubernetes auth method."""
        client = self.server.client(token="")
        client.token = client.auth.kubernetes.login(role, self.api.issue(namespace, account))["auth"]["client_token"]
        return client


@pytest.fixture
def platform_vault(tmp_path_factory: pytest.TempPathFactory, kube_api: TokenReviewAPI,
                   test_ca: trustme.CA) -> Iterator[PlatformVault]:  # fmt: skip
    """Over TLS, as the manifests reach it (https with the CA bundle)."""
    workdir = tmp_path_factory.mktemp("platform-vault")
    server = OpenBao.configured(workdir, test_ca)
    yield PlatformVault(server, kube_api, workdir)
    server.stop()


def hcl_paths(name: str) -> dict[str, list[str]]:
    text = (VAULT_SNIPPETS / name).read_text()
    return {
        m[0]: re.findall(r'"(\w+)"', m[1])
        for m in re.findall(r'path "([^"]+)" \{ capabilities = \[([^\]]*)\] \}', text)
    }


def test_the_bootstrap_policy_is_create_and_read_on_each_login_and_the_admin_secret_only() -> None:
    policy = hcl_paths("sharedpg-bootstrap.hcl")
    spec = spec_module.load(None)
    assert spec.monitoring is not None
    [(_, hook)] = [(p, d) for p, d in objects("Job") if d["metadata"]["name"] == "sharedpg-admin-secret"]
    pod = hook["spec"]["template"]["spec"]
    created = {c["args"][c["args"].index("--vault-path") + 1] for c in pod["initContainers"] + pod["containers"]}
    assert ADMIN_PATH in created
    paths = [t.vault_path for t in spec.tenants] + [spec.monitoring.vault_path]
    wanted = {f"secret/data/{path}" for path in paths} | {f"secret/data/{p}" for p in created}
    assert set(policy) == wanted
    assert all(caps == ["create", "read"] for caps in policy.values())


def asked_by_namespace() -> dict[str, set[str]]:
    """The Vault keys the ExternalSecrets of each namespace ask for."""
    asked: dict[str, set[str]] = {}
    for _, es in objects("ExternalSecret"):
        asked.setdefault(es["metadata"]["namespace"], set()).update(r["remoteRef"]["key"] for r in es["spec"]["data"])
    return asked


def test_each_namespaces_policy_reads_exactly_what_its_externalsecrets_ask_for() -> None:
    asked = asked_by_namespace()
    configured = re.search(r'NAMESPACES="([^"]+)"', (VAULT_SNIPPETS / "configure.sh").read_text())
    assert configured and set(configured[1].split()) == set(asked), "configure.sh makes a role per namespace"
    for namespace, keys in asked.items():
        policy = hcl_paths(f"eso-{namespace}.hcl")
        assert set(policy) == {f"secret/data/{k}" for k in keys}, namespace
        assert all(caps == ["read"] for caps in policy.values())
    assert {k for k in asked["database"] if k.startswith("database/")} == set(asked["database"])
    assert not [k for ns, keys in asked.items() if ns != "database" for k in keys if not k.startswith(f"{ns}/")], (
        "every namespace but database reads only its own stack's paths"
    )


def test_the_security_models_table_is_the_policies() -> None:
    """docs/guide.md's table of what each namespace reads, against the policies that grant it."""
    section = (ROOT / "docs" / "guide.md").read_text().split("## Security model", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| (.+?) \| `(eso-\w+)` \|$", section, re.MULTILINE)
    assert {ns for ns, _, _ in rows} == set(asked_by_namespace())
    for namespace, paths, role in rows:
        shown, previous = set(), ""
        for path in re.findall(r"`([^`]+)`", paths):
            path = previous.rsplit("/", 1)[0] + path[1:] if path.startswith("…") else path
            shown.add(f"secret/data/{path.removeprefix('secret/')}")
            previous = path
        assert role == f"eso-{namespace}" and shown == set(hcl_paths(f"{role}.hcl")), namespace


def _denied(call: Any) -> bool:
    try:
        call()
    except hvac.exceptions.Forbidden:
        return True
    return False


def test_the_job_bootstraps_with_its_own_role_and_external_secrets_reads_what_it_wrote(
    cli: Cli, pg: Server, platform_vault: PlatformVault, renderer: Renderer, tmp_path: Path
) -> None:
    """The Job's own command line and environment (k8s-snippets/bootstrap/job.yaml), logging in with its
    service account's token through the kubernetes auth method and the least-privilege policy; then every
    ExternalSecret's remoteRef resolved as ESO does (the store's path, version v2, key, property) with ESO's
    own login, and compared with what each tenant logs in with."""
    vault = platform_vault.server
    [(_, job)] = [(p, d) for p, d in objects("Job") if d["metadata"]["name"] == "sharedpg-bootstrap"]
    [container] = job["spec"]["template"]["spec"]["containers"]
    [(_, configmap)] = [(p, d) for p, d in objects("ConfigMap") if p.name == "configmap-tenants.yaml"]
    spec_path = tmp_path / "tenants.yaml"
    spec_path.write_text(configmap["data"]["tenants.yaml"])
    (tmp_path / "admin-password").write_text(pg.password + "\n")
    jwt = tmp_path / "token"
    jwt.write_text(
        platform_vault.api.issue(job["metadata"]["namespace"], job["spec"]["template"]["spec"]["serviceAccountName"])
    )
    cli.secrets.add(jwt.read_text())
    env = resolve_env(container, pg, {}, "")
    env |= {"PGUSER": pg.superuser, "PGPASSWORD_FILE": str(tmp_path / "admin-password"), "VAULT_ADDR": vault.addr,
            "VAULT_CACERT": str(vault.cacert), "SHAREDPG_VAULT_K8S_JWT_FILE": str(jwt),
            "FUSE_CICD": "true"}  # fmt: skip
    assert env["SHAREDPG_VAULT_K8S_ROLE"] == "sharedpg-bootstrap" and "VAULT_TOKEN" not in env
    args = [a if a != "/etc/sharedpg/tenants.yaml" else str(spec_path) for a in container["args"]]
    tenants = spec_module.load(None).tenants
    watcher = spec_module.load(None).monitoring
    assert watcher is not None
    try:
        result = cli(*args, "--output", "json", env=env, timeout=120)
        assert result.code == 0, result
        assert "error" not in result.result()["monitoring"], result.result()["monitoring"]
        [(_, hook)] = [(p, d) for p, d in objects("Job") if d["metadata"]["name"] == "sharedpg-admin-secret"]
        hook_pod = hook["spec"]["template"]["spec"]
        assert hook_pod["serviceAccountName"] == job["spec"]["template"]["spec"]["serviceAccountName"]
        for step in hook_pod["initContainers"] + hook_pod["containers"]:  # the hook's own command lines, in order
            step_env = resolve_env(step, pg, {}, "") | {
                "VAULT_ADDR": vault.addr,
                "VAULT_CACERT": str(vault.cacert),
                "SHAREDPG_VAULT_K8S_JWT_FILE": str(jwt),
            }
            made = cli(*step["args"], "--output", "json", env=step_env)
            assert made.code == 0 and made.result()["created"] is True, made

        job_client = platform_vault.login("database", "sharedpg-bootstrap", "sharedpg-bootstrap")
        kv = job_client.secrets.kv.v2
        first = tenants[0].vault_path
        assert _denied(lambda: kv.create_or_update_secret(path=first, secret={"password": "x"}, mount_point="secret"))
        assert _denied(
            lambda: kv.read_secret_version(
                path="someone/else/postgres", mount_point="secret", raise_on_deleted_version=True
            )
        )
        assert _denied(lambda: kv.list_secrets(path="", mount_point="secret"))
        assert _denied(lambda: kv.delete_metadata_and_all_versions(path=first, mount_point="secret"))

        stores = {d["metadata"]["namespace"]: d["spec"]["provider"]["vault"]
                  for d in renderer.root(dict.fromkeys(STACKS, True)) if d["kind"] == "SecretStore"}  # fmt: skip
        eso = {  # each namespace's store, logging in with that namespace's own service account
            ns: platform_vault.login(ns, p["auth"]["kubernetes"]["serviceAccountRef"]["name"],
                                     p["auth"]["kubernetes"]["role"])
            for ns, p in stores.items()
        }  # fmt: skip
        login_as = {t.vault_path: t for t in tenants}
        monitor_checked = False
        for _, external in objects("ExternalSecret"):
            namespace = external["metadata"]["namespace"]
            provider = stores[namespace]
            assert provider["version"] == "v2" and provider["server"].startswith("https://")
            for ref in external["spec"]["data"]:
                key, prop = ref["remoteRef"]["key"], ref["remoteRef"]["property"]
                data = eso[namespace].secrets.kv.v2.read_secret_version(
                    path=key, mount_point=provider["path"], raise_on_deleted_version=True)["data"]["data"]  # fmt: skip
                for other, client in eso.items():  # no other namespace's token reads it
                    if other != namespace:
                        assert _denied(lambda c=client, k=key: c.secrets.kv.v2.read_secret_version(
                            path=k, mount_point="secret", raise_on_deleted_version=True)), (other, key)  # fmt: skip
                assert prop in data, f"{external['metadata']['name']}: {key} has no {prop!r}"
                if key in login_as and prop == "password":
                    tenant = login_as[key]
                    with psycopg.connect(pg.conninfo(tenant.role, tenant.database), password=data[prop]):
                        pass
                if key == ADMIN_PATH and prop == "username":
                    assert data[prop] == "postgres"
                if key == watcher.vault_path and prop == "password":  # serve-metrics' login, as it logs in
                    with psycopg.connect(pg.conninfo(data["username"]), password=data[prop]) as conn:
                        assert conn.execute("SELECT pg_has_role('pg_monitor', 'MEMBER')").fetchone() == (True,)
                    monitor_checked = True
        assert monitor_checked, "the monitoring login's ExternalSecret was not among those resolved"
        cicd = eso["cicd"].secrets.kv.v2
        assert _denied(lambda: cicd.create_or_update_secret(path=first, secret={}, mount_point="secret"))
        assert _denied(
            lambda: cicd.read_secret_version(path="cicd/other/postgres", mount_point="secret",
                                             raise_on_deleted_version=True)
        )  # fmt: skip
        assert _denied(lambda: cicd.list_secrets(path="cicd", mount_point="secret"))
        with pytest.raises(hvac.exceptions.Forbidden):  # another namespace's account cannot take cicd's role
            platform_vault.login("observability", "sharedpg-secrets", "eso-cicd")
    finally:
        pg.drop_tenants([t.name for t in tenants] + [watcher.role])


def test_a_service_account_of_another_namespace_cannot_log_in_as_the_job(platform_vault: PlatformVault) -> None:
    with pytest.raises(hvac.exceptions.Forbidden):
        platform_vault.login("default", "sharedpg-bootstrap", "sharedpg-bootstrap")
    with pytest.raises(hvac.exceptions.Forbidden):
        platform_vault.login("database", "default", "sharedpg-bootstrap")


def test_switching_from_files_to_vault_keeps_every_password(cli: Cli, pg: Server, admin: str, openbao: OpenBao,
                                                            tmp_path: Path) -> None:  # fmt: skip
    """Tenants made with --password-dir, then bootstrap with Vault, where nothing is stored yet: refused for
    each (their apps log in with the files' passwords), with the create-only command that carries a password
    over; run as the hint says, the next run is unchanged for that tenant."""
    files = Platform(cli, pg, admin, tmp_path)
    try:
        assert files.run().code == 0
        name = files.names[0]
        switched = files.run(vault=openbao)
        assert switched.code == 3, switched
        assert {r["action"] for r in by_tenant(switched).values()} == {"failed"}
        error = next(e for e in switched.events() if e.get("tenant") == name and e["level"] == "error")
        command = error["hint"].split("carry its current password into the source: ", 1)[1].split(" (create-only")[0]
        assert command.startswith(f"bao kv put -mount=secret -cas=0 {path_of(files, name)} "), command
        current = files.password(name)
        cli.secrets.add(current)  # the hint's command, with the password filled in
        openbao.bao(*shlex.split(command.replace("<its current password>", shlex.quote(current)))[1:])
        carried = by_tenant(files.run(vault=openbao))
        assert carried[name]["action"] == "unchanged", carried[name]
        with psycopg.connect(pg.conninfo(name, name), password=current):
            pass
    finally:
        pg.drop_tenants(files.roles)
