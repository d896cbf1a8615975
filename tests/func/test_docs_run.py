"""Every ``sharedpg`` example of the README and docs/, run as written against real servers, in the order a
platform team would, each asserting what its text says it does.

The substitutions are declared once (``Substitutions``): the cluster's host names become the test servers
(the shared one, and an old SonarQube server for copy-tenant), the Secrets' mount paths become files that
hold what the Secret would (the admin's password, SonarQube's from Vault as its ExternalSecret syncs it,
the monitoring login's), Vault is a real OpenBao. A line is run by bash exactly as the document shows it,
with only those strings replaced. Every documented example must have a step here (the last test checks).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from sharedpg_tools import spec as spec_module
from sharedpg_tools.localserver import free_port
from tests import fix_grafana
from tests.conftest import ROOT, Cli, Result
from tests.fix_legacy import Legacy, backstage_dbs, sonar_db
from tests.fix_openbao import OpenBao
from tests.fix_servers import Server

DOCS = (ROOT / "README.md", ROOT / "docs" / "guide.md")


def documented_lines() -> list[tuple[str, str]]:
    """(document, line) of every shell line that runs sharedpg, continuations joined, comments dropped."""
    found = []
    for doc in DOCS:
        for block in re.findall(r"```sh\n(.*?)```", doc.read_text(), flags=re.DOTALL):
            for line in block.replace("\\\n", " ").splitlines():
                command = line.split(" #", 1)[0].strip()
                if re.search(r"(^|\s)sharedpg ", command) and "pip install" not in command:
                    found.append((doc.name, " ".join(command.split())))
    return found


class Substitutions:
    """The one place where the documents' cluster names and Secret paths become this test's."""

    def __init__(self, pg: Server, legacy: Legacy, workdir: Path, old_password: str):
        self.workdir = workdir
        self.spec = workdir / "tenants.yaml"
        self.spec.write_text(spec_module.default_text())
        names = (
            "admin-password",
            "sonarqube-password",
            "old-password",
            "monitor-password",
            "grafana-password",
            "backstage-password",
        )
        self.files = {name: workdir / name for name in names}
        self.files["admin-password"].write_text(pg.password + "\n")
        self.files["old-password"].write_text(old_password + "\n")
        self.prom = workdir / "sharedpg.prom"
        self.port = free_port()
        old = f"host={legacy.server.host} port={legacy.server.port}"
        self.pairs = [
            ("PGHOST=shared-postgresql.database.svc", f"PGHOST={pg.host} PGPORT={pg.port}"),
            ("PGUSER=admin", f"PGUSER={pg.superuser}"),
            ("/secrets/admin/password", str(self.files["admin-password"])),
            ("/secrets/sonarqube/password", str(self.files["sonarqube-password"])),
            ("/run/secrets/sonarqube-password", str(self.files["sonarqube-password"])),
            ("/run/secrets/old-password", str(self.files["old-password"])),
            ("host=sonarqube-postgresql.cicd user=sonarUser dbname=sonarDB password=…",
             f"{old} user=sonarUser dbname=sonarDB password={old_password}"),
            ("host=sonarqube-postgresql user=sonarUser", f"{old} user=sonarUser"),
            ("host=backstage-postgresql.backstage user=bn_backstage password=…",
             f"{old} user=bn_backstage password={old_password}"),
            ("/run/secrets/backstage-password", str(self.files["backstage-password"])),
            ("/etc/sharedpg/tenants.yaml", str(self.spec)),
            (" tenants.yaml", f" {self.spec}"),
            ("/var/run/pw", str(workdir / "password-dir")),
            ("host=db user=sharedpg_monitor", f"host={pg.host} port={pg.port} user=sharedpg_monitor"),
            ("/run/pw", str(self.files["monitor-password"])),
            ("/var/lib/node-exporter/sharedpg.prom", str(self.prom)),
            ("127.0.0.1:9187", f"127.0.0.1:{self.port}"),
            ("/var/lib/dex/dex.db", str(workdir / "dex.db")),
            ("/var/lib/grafana/grafana.db", str(workdir / "grafana.db")),
            ("/secrets/grafana/password", str(self.files["grafana-password"])),
        ]  # fmt: skip

    def apply(self, line: str) -> str:
        for documented, here in self.pairs:
            line = line.replace(documented, here)
        return line


class Docs:
    """Runs documented lines (by their document and a prefix of the line) and remembers which ran."""

    def __init__(self, cli: Cli, subs: Substitutions, env: dict[str, str]):
        self.cli, self.subs, self.env = cli, subs, env
        self.lines = documented_lines()
        self.ran: set[tuple[str, str]] = set()

    def line(self, doc: str, prefix: str) -> str:
        [line] = [text for d, text in self.lines if d == doc and text.startswith(prefix)]
        self.ran.add((doc, line))
        return self.subs.apply(line)

    def run(self, doc: str, prefix: str, env: dict[str, str] | None = None, timeout: float = 180) -> Result:
        done = subprocess.run(["bash", "-euc", self.line(doc, prefix)], capture_output=True, text=True,
                              env=self.cli.env({**self.env, **(env or {})}), timeout=timeout,
                              cwd=self.subs.workdir)  # fmt: skip
        return self.cli.check(Result(done.returncode, done.stdout, done.stderr))

    def start(self, doc: str, prefix: str, env: dict[str, str]) -> subprocess.Popen[str]:
        return subprocess.Popen(["bash", "-euc", f"exec {self.line(doc, prefix)}"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=self.cli.env({**self.env, **env}),
                                cwd=self.subs.workdir)  # fmt: skip


@pytest.fixture
def docs(cli: Cli, pg: Server, legacy: Legacy, tmp_path: Path) -> Iterator[tuple[Docs, OpenBao]]:
    (tmp_path / "bao").mkdir()
    vault = OpenBao.dev(tmp_path / "bao")
    old_password = "old-" + tmp_path.name[-8:] + "-sonar-password"
    cli.secrets |= {pg.password, vault.root_token, old_password}
    drop_old = sonar_db(legacy, old_password)
    drop_backstage = backstage_dbs(legacy, old_password)
    subs = Substitutions(pg, legacy, tmp_path, old_password)
    env = {"PGHOST": pg.host, "PGPORT": str(pg.port), "PGUSER": pg.superuser, "PGPASSWORD": pg.password,
           "VAULT_ADDR": vault.addr, "VAULT_TOKEN": vault.root_token,
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}  # sharedpg as installed  # fmt: skip
    spec = spec_module.load(None)
    names = [t.name for t in spec.tenants] + ([spec.monitoring.role] if spec.monitoring else [])
    pg.drop_tenants(names)
    try:
        yield Docs(cli, subs, env), vault
    finally:
        pg.drop_tenants(names)
        drop_old()
        drop_backstage()
        vault.stop()


def _scrape(port: int, proc: subprocess.Popen[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
                return {f.name: f.samples for f in text_string_to_metric_families(answer.read().decode())}
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    return err


@pytest.mark.parametrize("pg", ["pg18"], indirect=True)
def test_every_documented_example_does_what_its_text_says(docs: tuple[Docs, OpenBao], pg: Server) -> None:
    run, vault = docs
    subs = run.subs
    # No server needed: the plan, the default spec, the offline budget.
    plan = run.run("guide.md", "sharedpg bootstrap --plan --fuse cicd=on")
    assert plan.code == 0 and "cicd=on" in plan.stdout and "shared database: deploy" in plan.stdout, plan
    printed = run.run("guide.md", "sharedpg bootstrap --print-default-spec")
    assert printed.code == 0 and len(yaml.safe_load(subs.spec.read_text())["tenants"]) == 6, printed
    for doc in ("README.md", "guide.md"):
        offline = run.run(doc, "sharedpg check-pool --offline")
        assert offline.code == 0 and offline.stdout.startswith("CHECK-POOL OK"), offline
    # Without Vault, on a server with none of the tenants: passwords generated into files.
    files = run.run("guide.md", "sharedpg bootstrap --no-vault --password-dir")
    assert files.code == 0 and "6 of 6 tenants ready" in files.stdout, files
    assert len(list((subs.workdir / "password-dir").iterdir())) == 7  # the six and the monitoring login
    pg.drop_tenants([*(p.name for p in (subs.workdir / "password-dir").iterdir())])
    # Vault: the admin secret once, then every tenant's.
    created = run.run("README.md", "sharedpg admin-secret")
    kept = run.run("guide.md", "sharedpg admin-secret")
    assert created.code == kept.code == 0 and "created" in created.stdout and "kept" in kept.stdout, (created, kept)
    boot = run.run("README.md", "sharedpg bootstrap --spec")
    assert boot.code == 0 and "6 of 6 tenants ready" in boot.stdout, boot
    again = run.run("guide.md", "sharedpg bootstrap --spec")
    assert again.code == 0 and again.stdout.count(" unchanged ") == 7, again
    # The apps' Secrets as their ExternalSecrets sync them from Vault; the monitoring login's too.
    synced = {
        "sonarqube-password": "cicd/sonarqube/postgres",
        "grafana-password": "observability/grafana/postgres",
        "backstage-password": "backstage/backstage/postgres",
        "monitor-password": "database/shared-postgresql/monitoring",
    }
    for name, path in synced.items():
        stored = vault.latest(path)
        assert stored is not None
        run.cli.secrets.add(stored["password"])
        subs.files[name].write_text(stored["password"] + "\n")
    for doc, prefix in (("README.md", "sharedpg ensure-tenant sonarqube"), ("guide.md", "PGHOST=")):
        ensured = run.run(doc, prefix)
        assert ensured.code == 0 and "sonarqube: unchanged" in ensured.stdout, ensured  # the spec's limit and timeout
    assert pg.admin_sql("SELECT rolconnlimit FROM pg_roles WHERE rolname = 'sonarqube'") == [(22,)]
    sonar_env = {"PGUSER": "sonarqube", "PGDATABASE": "sonarqube", "PGPASSWORD": subs.files["sonarqube-password"]
                 .read_text().strip()}  # fmt: skip
    waited = run.run("README.md", "sharedpg wait-for-db --timeout 600", env=sonar_env)
    assert waited.code == 0 and waited.stdout.startswith("ready: sonarqube@"), waited
    live = run.run("guide.md", "sharedpg check-pool --spec")
    assert live.code == 0 and live.stdout.startswith("CHECK-POOL OK"), live
    textfile = run.run("guide.md", "sharedpg check-pool --role sonarqube")
    families = {f.name: f for f in text_string_to_metric_families(subs.prom.read_text())}
    assert textfile.code == 0 and families["sharedpg_up"].samples[0].value == 1, textfile
    # serve-metrics as the monitoring login: the README's from PG* variables, the guide's from its --dsn.
    monitor = {
        "PGUSER": "sharedpg_monitor",
        "PGDATABASE": "postgres",
        "PGPASSWORD": subs.files["monitor-password"].read_text().strip(),
        "SHAREDPG_LISTEN": f":{free_port()}",
    }
    readme = run.start("README.md", "sharedpg serve-metrics", monitor)
    port = int(monitor["SHAREDPG_LISTEN"].lstrip(":"))
    assert _scrape(port, readme)["sharedpg_up"][0].value == 1
    _stop(readme)
    guide = run.start("guide.md", "sharedpg serve-metrics", {"PGPASSWORD": ""})
    scraped = _scrape(subs.port, guide)
    assert scraped["sharedpg_up"][0].value == 1 and "sharedpg_hidden_sessions" not in scraped
    _stop(guide)
    # copy-tenant: the old server's SonarQube data into the tenant, as the tenant; the guide's into it again.
    copied = run.run("README.md", "sharedpg copy-tenant sonarqube")
    assert copied.code == 0 and copied.stdout.startswith("copied 1 tables, 300 rows"), copied
    with psycopg.connect(pg.conninfo("postgres", "sonarqube"), password=pg.password, autocommit=True) as conn:
        conn.execute("DROP TABLE public.projects")  # for the guide's copy, into an empty database again
    guide_copy = run.run("guide.md", "SHAREDPG_FROM_DSN='host=sonarqube")
    assert guide_copy.code == 0 and "300 rows" in guide_copy.stdout, guide_copy
    # Backstage's plugin databases on the old server, into their schemas of the backstage tenant.
    plugins = run.run("guide.md", "SHAREDPG_FROM_DSN='host=backstage")
    assert plugins.code == 0 and "copied 4 plugin databases" in plugins.stdout, plugins
    backstage_pw = subs.files["backstage-password"].read_text().strip()
    with psycopg.connect(pg.conninfo("backstage", "backstage"), password=backstage_pw) as conn:
        assert conn.execute("SELECT count(*) FROM scaffolder.tasks").fetchone() == (3,)
    # An SQLite app's file: refused with what it holds; the shared server unchanged.
    dex_db = subs.workdir / "dex.db"
    with contextlib.closing(sqlite3.connect(dex_db)) as conn:
        conn.executescript("CREATE TABLE keys (id text); CREATE TABLE refresh_token (id text); "
                           "CREATE TABLE auth_request (id text);")  # fmt: skip
    refused = run.run("guide.md", "sharedpg copy-tenant dex --from-sqlite")
    assert refused.code == 3 and "Dex's storage" in refused.stderr and "log in once more" in refused.stderr, refused
    # Grafana's SQLite: into the tenant its first start initialised (tests/fix_grafana.py stands in for it).
    grafana_pw = subs.files["grafana-password"].read_text().strip()
    with psycopg.connect(pg.conninfo("grafana", "grafana"), password=grafana_pw, autocommit=True) as conn:
        fix_grafana.initialise_tenant(conn)
    facts = fix_grafana.make_sqlite(subs.workdir / "grafana.db", dashboards=4)
    imported = run.run("guide.md", "sharedpg copy-tenant grafana --from-sqlite")
    assert imported.code == 0 and imported.stdout.startswith("imported Grafana's SQLite into grafana"), imported
    with psycopg.connect(pg.conninfo("grafana", "grafana"), password=grafana_pw) as conn:
        assert [r[0] for r in conn.execute("SELECT id FROM dashboard ORDER BY id")] == facts["dashboards"]
    # Every documented example ran, but the README's install line (tests/func/test_demo.py runs the demo).
    missing = {(d, line) for d, line in run.lines if "sharedpg demo" not in line} - run.ran
    assert missing == set(), f"documented examples no step runs: {sorted(missing)}"


def test_the_substitutions_leave_no_cluster_name_in_a_run_line(tmp_path: Path) -> None:
    """Every documented line, substituted, names no cluster host, Secret mount or placeholder."""

    class _Fake:
        host, port, password, superuser = "127.0.0.1", 1, "x" * 12, "postgres"

        def __init__(self) -> None:
            self.server = self

    subs = Substitutions(_Fake(), _Fake(), tmp_path, "y" * 12)  # type: ignore[arg-type]
    for doc, line in documented_lines():
        applied = subs.apply(line)
        for leftover in ("svc", "/secrets/", "/run/", "sonarqube-postgresql", "…", "/etc/sharedpg", "host=db "):
            assert leftover not in applied, (doc, line, applied)
        assert shlex.split(applied)
