"""The cutover (docs/cutover.md): each step rendered with the real charts as Argo CD would (tests/fix_gitops.py),
the wiring check fed the broken variants a cutover can have, and the copy Job's own rendered command line run
against real servers, twice, as a re-sync runs it."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import psycopg
import pytest
import yaml

from tests.conftest import ROOT, Cli
from tests.fix_gitops import K8S_VERSION, ROOT_VALUES, SNIPPETS, STACKS, Renderer, Tree, row_fuses
from tests.fix_legacy import Legacy, backstage_dbs, sonar_db
from tests.fix_servers import Server
from tests.func.test_gitops import _broken, wiring_problems

# The platform's values today: each app on its old server (Backstage's bundled PostgreSQL on; SonarQube's
# JDBC at the server an older chart bundled, which this tree does not render).
PLATFORM: dict[str, tuple[str, str, dict[str, Any]]] = {
    "backstage": ("backstage", "K8s/backstage/backstage/values.yaml", {
        "postgresql": {"enabled": True, "auth": {"username": "bn_backstage"}},
        "backstage": {"replicas": 2, "appConfig": {"app": {"title": "kept-portal-title"}}},
    }),
    "sonarqube": ("cicd", "K8s/cicd/sonarqube/values.yaml", {
        "community": {"enabled": True}, "monitoringPasscode": "platform-passcode",
        "jdbcOverwrite": {"enabled": True, "jdbcUrl": "jdbc:postgresql://sonarqube-postgresql:5432/sonarDB",
                          "jdbcUsername": "sonarUser", "jdbcSecretName": "sonarqube-postgresql",
                          "jdbcSecretPasswordKey": "postgresql-password"},
    }),
}  # fmt: skip
STEPS = ("old", "copy", "shared")


@pytest.fixture(scope="module")
def platform_renderer(tmp_path_factory: pytest.TempPathFactory) -> Renderer:
    """A renderer that finds the platform's own values files (PLATFORM) in its repository."""
    platform = tmp_path_factory.mktemp("platform-repo")
    for _, path, values in PLATFORM.values():
        (platform / path).parent.mkdir(parents=True, exist_ok=True)
        (platform / path).write_text(yaml.safe_dump(values))
    return Renderer(tmp_path_factory.mktemp("gitops-cutover"), platform=platform)


def fuses_of(app: str) -> dict[str, bool]:
    """The app's stack's fuse alone on."""
    return row_fuses(tuple(s == PLATFORM[app][0] for s in STACKS))


@pytest.fixture(scope="module")
def cut(platform_renderer: Renderer) -> Callable[[str, str], Tree]:
    """The tree for one app at one cutover step (memoised)."""
    trees: dict[tuple[str, str], Tree] = {}

    def tree(app: str, step: str) -> Tree:
        if (app, step) not in trees:
            path = PLATFORM[app][1]
            trees[app, step] = platform_renderer.tree(fuses_of(app), "full", "--set-json",
                                                      f'apps.{app}.platformValues=["{path}"]', "--set",
                                                      f"cutover.{app}.step={step}")  # fmt: skip
        return trees[app, step]

    return tree


RUNBOOK = ROOT / "docs" / "cutover.md"


def runbook_values() -> list[tuple[str, str, str]]:
    """(app, step, YAML) of each values block the runbook shows for a step."""
    found = re.findall(r"<!-- cutover-values: (\S+) (\S+) -->\n```yaml\n(.*?)```", RUNBOOK.read_text(), re.S)
    return [(str(a), str(s), str(y)) for a, s, y in found]


@pytest.mark.parametrize(("app", "step", "values"), runbook_values())
def test_each_runbook_step_renders_what_the_tested_step_renders(platform_renderer: Renderer, cut: Callable[
        [str, str], Tree], tmp_path: Path, app: str, step: str, values: str) -> None:  # fmt: skip
    """The values the runbook tells you to commit are the step the tests below check, object for object."""
    assert yaml.safe_load(values)["cutover"][app]["step"] == step
    (tmp_path / "step.yaml").write_text(values)
    documented = platform_renderer.tree(fuses_of(app), "full", "-f", str(tmp_path / "step.yaml"))
    assert [p.obj for p in documented.objects] == [p.obj for p in cut(app, step).objects]


def test_the_runbook_shows_the_copy_jobs_own_command_line(cut: Callable[[str, str], Tree]) -> None:
    [job] = cut("backstage", "copy").of("Job", "backstage-cutover")
    container = job.obj["spec"]["template"]["spec"]["containers"][0]
    [block] = re.findall(r"```sh\n(sharedpg copy-tenant .*?)```", RUNBOOK.read_text(), re.S)
    command, _, env = block.partition("  # ")
    assert command.replace("\\\n", " ").split() == ["sharedpg", *container["args"]]
    dsn = next(e["value"] for e in container["env"] if e["name"] == "SHAREDPG_FROM_DSN")
    assert env.strip() == f"SHAREDPG_FROM_DSN={dsn}"
    assert job.obj["spec"]["backoffLimit"] == 5 and job.obj["spec"]["ttlSecondsAfterFinished"] == 7 * 86400


def outside(app: str) -> frozenset[tuple[str, str, str]]:
    """The old server the platform runs beside the tree (``from.outsideTree``): its Service and Secret."""
    old = ROOT_VALUES["cutover"][app]["from"]
    namespace = ROOT_VALUES["apps"][app]["namespace"]
    return frozenset({("Service", namespace, old["service"]), ("Secret", namespace, old["secret"]["name"])}
                     if old["outsideTree"] else set())  # fmt: skip


def workloads(tree: Tree, app: str) -> dict[str, int]:
    return {p.name: p.obj["spec"].get("replicas", 1) for p in tree.objects
            if p.app == app and p.kind in ("Deployment", "StatefulSet")}  # fmt: skip


@pytest.mark.parametrize("app", PLATFORM)
def test_each_step_is_wired_in_order_and_validates(cut: Callable[[str, str], Tree], app: str) -> None:
    for step in STEPS:
        tree = cut(app, step)
        assert wiring_problems(tree, outside(app)) == [], (step, wiring_problems(tree, outside(app)))
        for placed in tree.objects:
            if placed.obj["apiVersion"] in ("v1", "apps/v1", "batch/v1", "rbac.authorization.k8s.io/v1"):
                kubernetes_validate.validate(placed.obj, K8S_VERSION, strict=True)


def test_backstage_keeps_its_old_server_until_the_copy_is_done(cut: Callable[[str, str], Tree]) -> None:
    """Step by step: as the platform ran it; stopped with its bundled PostgreSQL still running and the copy after
    it; on its tenant, the old server's pods pruned (its volume, the StatefulSet's claim, is not the tree's)."""
    old, copying, shared = (cut("backstage", s) for s in STEPS)
    assert workloads(old, "backstage") == {"backstage": 2, "backstage-postgresql": 1}
    assert workloads(copying, "backstage") == {"backstage": 0, "backstage-postgresql": 1}
    assert workloads(shared, "backstage") == {"backstage": 2}, "the old server is pruned, the platform's replicas kept"
    [container] = shared.one("Deployment", "backstage").obj["spec"]["template"]["spec"]["containers"]
    assert "POSTGRES_HOST" not in {e["name"] for e in container.get("env", [])}, "the old server's env would win"
    assert "kept-portal-title" in str([p.obj for p in shared.objects if p.app == "backstage"])
    assert not [p for t in (old, shared) for p in t.objects if p.app == "backstage-cutover"]
    [job] = copying.of("Job", "backstage-cutover")
    assert job.order[0] == 5 and job.namespace == "database"
    args = job.obj["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:4] == ["copy-tenant", "backstage", "--copy-id", "1"]
    assert args[args.index("--plugins") + 1] == "catalog,auth,scaffolder,search"
    [claim] = copying.one("StatefulSet", "backstage-postgresql").obj["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"  # data-backstage-postgresql-0, kept after the prune


def test_the_copy_job_runs_as_the_bootstrap_job_runs(cut: Callable[[str, str], Tree]) -> None:
    """The same pod and container security context as the tree's other Jobs (the bootstrap Job's)."""
    [job] = cut("backstage", "copy").of("Job", "backstage-cutover")
    [bootstrap] = cut("backstage", "copy").of("Job", "sharedpg-bootstrap")
    pods = [j.obj["spec"]["template"]["spec"] for j in (job, bootstrap)]
    assert pods[0]["securityContext"] == pods[1]["securityContext"]
    assert pods[0]["containers"][0]["securityContext"] == pods[1]["containers"][0]["securityContext"]
    assert pods[0]["automountServiceAccountToken"] is False, "its account's Secret access is External Secrets' own"


def test_sonarqube_is_stopped_while_its_outside_server_is_read(cut: Callable[[str, str], Tree]) -> None:
    copying = cut("sonarqube", "copy")
    assert set(workloads(copying, "sonarqube").values()) == {0}
    [job] = copying.of("Job", "sonarqube-cutover")
    env = {e["name"]: e.get("value") for e in job.obj["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SHAREDPG_FROM_DSN"] == "host=sonarqube-postgresql.cicd.svc.cluster.local port=5432 user=sonarUser " \
        "sslmode=prefer dbname=sonarDB"  # fmt: skip
    assert set(workloads(cut("sonarqube", "shared"), "sonarqube").values()) == {1}


def _running(t: Tree) -> None:
    t.one("Deployment", "backstage").obj["spec"]["replicas"] = 1


def _copy_first(t: Tree) -> None:
    [job] = t.of("Job", "backstage-cutover")
    job.order = (3, 1, 2)


def _unlabelled(t: Tree) -> None:
    [job] = t.of("Job", "backstage-cutover")
    job.obj["spec"]["template"]["metadata"]["labels"] = {"app.kubernetes.io/name": "sharedpg-copy-backstage"}


def _role_for_another_secret(t: Tree) -> None:
    t.one("Role", "sharedpg-copy-backstage").obj["rules"][0]["resourceNames"] = ["backstage-db"]


@pytest.mark.parametrize(("defect", "change", "needle"), [
    ("the copy while the app runs", _running, "copies while Deployment backstage/backstage of backstage runs"),
    ("the copy before the app is stopped", _copy_first, "copies before Deployment backstage/backstage"),
    ("the copy of a pruned server", lambda t: t.objects.remove(t.one("Service", "backstage-postgresql")),
     "needs Service backstage/backstage-postgresql, which nothing in the tree makes"),
    ("the old server's Secret nobody makes", lambda t: t.objects.remove(t.one("Secret", "backstage-postgresql")),
     "needs Secret backstage/backstage-postgresql, which nothing"),
    ("the tenant's Secret nobody makes", lambda t: t.objects.remove(t.one("ExternalSecret", "backstage-db")),
     "needs Secret backstage/backstage-db, which nothing"),
    ("a copy the database's NetworkPolicy keeps out", _unlabelled,
     "Job database/sharedpg-copy-backstage connects to the shared server, which NetworkPolicy"),
    ("a store whose account may not get the old server's Secret", _role_for_another_secret,
     "asks for Secret backstage/backstage-postgresql, which no Role bound to service account "
     "database/sharedpg-copy-backstage lets it get"),
])  # fmt: skip
def test_the_wiring_check_catches(cut: Callable[[str, str], Tree], defect: str, change: Callable[[Tree], None],
                                  needle: str) -> None:  # fmt: skip
    problems = wiring_problems(_broken(cut("backstage", "copy"), change))
    assert any(needle in p for p in problems), (defect, problems)


@pytest.mark.parametrize(("values", "needle"), [
    (["--set", "cutover.sonarqube.step=copy"], "list its values files in apps.sonarqube.platformValues"),
    (["--set", "cutover.sonarqube.step=later"], 'cutover.sonarqube.step "later": use old, copy or shared'),
    (["--set", "cutover.argo-workflows.step=copy"], "Argo Workflows' archive is new with the shared server"),
    (["--set", "cutover.sonarqube.step=old", "--set", "cutover.sonarqube.attempt=two words"],
     'cutover.sonarqube.attempt "two words": use 1 to 63 letters'),
])  # fmt: skip
def test_a_cutover_that_cannot_work_fails_the_render_naming_the_value(tmp_path: Path, values: list[str],
                                                                        needle: str) -> None:  # fmt: skip
    renderer = Renderer(tmp_path)
    with pytest.raises(AssertionError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        renderer.root(row_fuses((False, True, False, False)), "full", SNIPPETS / "root", *values)


# -- the rendered copy Job, run against real servers ---------------------------------------------------------


def job_command(
    tree: Tree, app: str, old: Server, pg: Server, files: dict[str, Path]
) -> tuple[list[str], dict[str, str]]:
    """The copy Job's args and env as rendered, with the cluster's names replaced by the test servers' and
    its mounted files by ``files`` (the Secrets External Secrets would fill)."""
    [job] = tree.of("Job", f"{app}-cutover")
    container = job.obj["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for name, rendered in tree.env(container, "database").items():
        value = str(rendered) if isinstance(rendered, str) else ""
        if name == "SHAREDPG_FROM_DSN":
            host = value.split()[0]
            value = value.replace(host, f"host={old.host} port={old.port}").replace(" port=5432", "")
        env[name] = {"shared-postgresql.database.svc.cluster.local": pg.host, "5432": str(pg.port)}.get(value, value)
    env["PGUSER"] = pg.superuser  # the admin Secret's username
    env["PGPASSWORD_FILE"] = str(files["/secrets/admin/password"])
    args = [str(files.get(a, a)) for a in container["args"]]
    return args, env


@pytest.fixture
def mounted(tmp_path: Path, pg: Server) -> Iterator[dict[str, Path]]:
    files = {f"/secrets/{n}": tmp_path / n.replace("/", "-") for n in ("admin/password", "copy/from-password",
                                                                          "copy/tenant-password")}  # fmt: skip
    files["/secrets/admin/password"].write_text(pg.password)
    yield files


@pytest.mark.parametrize("app", PLATFORM)
def test_the_rendered_copy_job_moves_the_data_once(cut: Callable[[str, str], Tree], cli: Cli, pg: Server,
                                                   legacy: Legacy, mounted: dict[str, Path],
                                                   app: str) -> None:  # fmt: skip
    """As the cluster runs it: the old server as the chart made it (SonarQube's sonarUser/sonarDB, Backstage's
    database per plugin), the tenant made by bootstrap's ensure-tenant, then the Job's command line as
    rendered. A second run (the next sync) does nothing; the tenant's data is the app's."""
    old_password, tenant_password = "old-sonar-" + mounted["/secrets/admin/password"].parent.name[-6:], "tenant-pw-1234"
    cli.secrets |= {old_password, tenant_password, pg.password}
    drop = (sonar_db if app == "sonarqube" else backstage_dbs)(legacy, old_password)
    mounted["/secrets/copy/from-password"].write_text(old_password)
    mounted["/secrets/copy/tenant-password"].write_text(tenant_password)
    tenant = "sonarqube" if app == "sonarqube" else "backstage"
    try:
        made = cli("ensure-tenant", tenant, "--dsn", pg.conninfo(), "--tenant-password-file",
                   str(mounted["/secrets/copy/tenant-password"]), env={"PGPASSWORD": pg.password})  # fmt: skip
        assert made.code == 0, made
        args, env = job_command(cut(app, "copy"), app, legacy.server, pg, mounted)
        if app == "backstage":  # the stand-in's user; the real chart's admin is postgres as well
            env["SHAREDPG_FROM_DSN"] = env["SHAREDPG_FROM_DSN"].replace("user=postgres", "user=bn_backstage")
        first = cli(*args, "--output", "json", env=env, timeout=300)
        assert first.code == 0 and first.result()["status"] == "copied", first
        again = cli(*args, "--output", "json", env=env, timeout=300)
        assert again.code == 0 and again.result()["status"] == "already_copied", again
        attempt = args.index("--copy-id") + 1
        redone = cli(*args[:attempt], "2", *args[attempt + 1 :], "--output", "json", env=env, timeout=300)
        assert redone.code == 0 and redone.result()["replaced_copy"] == "1", redone  # attempt raised: nobody used 1
        table = "public.projects" if app == "sonarqube" else "scaffolder.tasks"
        with psycopg.connect(pg.conninfo(tenant, tenant), password=tenant_password) as conn:
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (300 if app == "sonarqube" else 3,)
            conn.execute(f"DELETE FROM {table} WHERE id = 1")  # the app at work on its tenant
        for copy_id in ("2", "3"):  # the next sync does nothing; a raised attempt refuses to replace the app's data
            rerun = cli(*args[:attempt], copy_id, *args[attempt + 1 :], "--output", "json", env=env, timeout=300)
            assert rerun.code == (0 if copy_id == "2" else 3), rerun
        assert "changed since copy 2" in rerun.stderr and table in rerun.stderr, rerun
        with psycopg.connect(pg.conninfo(tenant, tenant), password=tenant_password) as conn:
            assert conn.execute(f"SELECT count(*) FROM {table} WHERE id = 1").fetchone() == (0,), "the app's data"
    finally:
        drop()
        pg.drop_tenants([tenant])
        with pg.connect(dbname="sharedpg_lock") as conn:
            conn.execute("DELETE FROM sharedpg.copies WHERE tenant = %s", [tenant])
