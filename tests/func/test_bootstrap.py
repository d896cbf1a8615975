"""``sharedpg bootstrap``: the spec, the fuses, Vault-held credentials, concurrency and recovery, on real servers."""

from __future__ import annotations

import itertools
import json
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

from sharedpg_tools import spec as spec_module
from tests.conftest import Cli, Result
from tests.fix_openbao import OpenBao
from tests.fix_servers import MANAGED_ADMIN, Server

STACKS = ("backstage", "cicd", "policies", "observability")


class Platform:
    """A copy of the built-in spec with names of its own, run by one admin against one server."""

    def __init__(self, cli: Cli, pg: Server, admin: str, tmp: Path, tenants: int = 0):
        self.cli, self.pg, self.admin, self.tmp = cli, pg, admin, tmp
        self.suffix = secrets.token_hex(3)
        raw = yaml.safe_load(spec_module.default_text())
        for tenant in raw["tenants"]:
            tenant["name"] = f"{tenant['name']}_{self.suffix}"
        for index in range(tenants):  # extra generated tenants, to make a run longer
            raw["tenants"].append({"name": f"extra{index}_{self.suffix}", "stack": "cicd", "pool": {"max": 1}})
        raw.pop("server")  # the test servers have their own capacity
        self.monitor_role = f"monitor_{self.suffix}"
        raw["monitoring"]["role"] = self.monitor_role  # the tests that want it drop it (it is no tenant)
        self.raw = raw
        self.spec = tmp / "tenants.yaml"
        self.spec.write_text(yaml.safe_dump(raw))
        self.password_dir = tmp / "passwords"

    @property
    def names(self) -> list[str]:
        return [t["name"] for t in self.raw["tenants"]]

    @property
    def roles(self) -> list[str]:
        """Every role a run makes: the tenants' and the monitoring login's (what a test drops)."""
        return [*self.names, self.monitor_role]

    def args(self, *extra: str, vault: OpenBao | None = None) -> list[str]:
        args = ["bootstrap", "--spec", str(self.spec), "--dsn", self.pg.conninfo(self.admin), "--output", "json"]
        return args + (["--no-vault", "--password-dir", str(self.password_dir)] if vault is None else []) + list(extra)

    def env(self, vault: OpenBao | None = None, **extra: str) -> dict[str, str]:
        env = {"PGPASSWORD": self.pg.password_of(self.admin), **extra}
        if vault is not None:
            env |= {k: v for k, v in vault.env().items() if k != "PATH"}
            self.cli.secrets.add(vault.root_token)
        return env

    def run(self, *extra: str, vault: OpenBao | None = None, **env: str) -> Result:
        return self.cli(*self.args(*extra, vault=vault), env=self.env(vault, **env), timeout=180)

    def password(self, name: str, vault: OpenBao | None = None) -> str:
        if vault is None:
            return (self.password_dir / name).read_text().strip()
        stack = next(t["stack"] for t in self.raw["tenants"] if t["name"] == name)
        latest = vault.latest(f"{stack}/{name}/postgres")
        assert latest is not None
        return str(latest["password"])

    def login(self, name: str, vault: OpenBao | None = None) -> None:
        with psycopg.connect(self.pg.conninfo(name, name), password=self.password(name, vault)):
            pass

    def assert_no_password_printed(self, result: Result, vault: OpenBao | None = None) -> None:
        for name in self.names:
            assert self.password(name, vault) not in result.stdout + result.stderr


@pytest.fixture
def platform(cli: Cli, pg: Server, admin: str, tmp_path: Path) -> Iterator[Platform]:
    made = Platform(cli, pg, admin, tmp_path)
    yield made
    pg.drop_tenants(made.roles)


def by_tenant(result: Result) -> dict[str, dict[str, Any]]:
    return {t["tenant"]: t for t in result.result()["tenants"]}


# -- the fuses and the plan: no server needed ---------------------------------------------------------


@pytest.mark.parametrize("row", list(itertools.product([False, True], repeat=4)))
def test_truth_table_deploys_the_database_iff_any_fuse_is_on(cli: Cli, row: tuple[bool, ...]) -> None:
    env = {f"FUSE_{stack.upper()}": ("true" if on else "false") for stack, on in zip(STACKS, row, strict=True)}
    result = cli("bootstrap", "--plan", "--output", "json", env=env)
    assert result.code == (0 if any(row) else 1), result
    plan = result.result()
    assert plan["database_needed"] is any(row)
    active_stacks = {s for s, on in zip(STACKS, row, strict=True) if on}
    default = spec_module.load(None)
    assert plan["active_tenants"] == [t.name for t in default.tenants if t.stack in active_stacks]
    assert plan["active_budget"] == sum(t.budget for t in default.tenants if t.stack in active_stacks)


def test_plan_text_names_fuses_budget_and_capacity(cli: Cli) -> None:
    result = cli("bootstrap", "--plan", "--fuse", "cicd=on", env={"FUSE_BACKSTAGE": "off"})
    assert result.code == 0, result
    assert "fuses: backstage=off cicd=on policies=off observability=off" in result.stdout
    assert "active tenants: sonarqube (20), argo_workflows (10)" in result.stdout
    assert "30 active, 65 if every stack is on, +5 admin headroom, of 82 usable slots" in result.stdout


@pytest.mark.parametrize(("args", "env", "needle"), [
    (["--fuse", "cicd=maybe"], {}, "--fuse cicd"),
    ([], {"FUSE_POLICIES": "2"}, "FUSE_POLICIES"),
    (["--fuse", "storage=on"], {}, "storage=on"),
])  # fmt: skip
def test_bad_fuse_is_exit_2(cli: Cli, args: list[str], env: dict[str, str], needle: str) -> None:
    result = cli("bootstrap", "--plan", *args, env=env)
    assert result.code == 2 and needle in result.stderr, result


def test_default_spec_is_printed_and_valid(cli: Cli, tmp_path: Path) -> None:
    result = cli("bootstrap", "--print-default-spec")
    assert result.code == 0
    assert "statement_timeout: 15min" in result.stdout and "# " in result.stdout  # with its comments
    (tmp_path / "spec.yaml").write_text(result.stdout)
    assert [t.name for t in spec_module.load(str(tmp_path / "spec.yaml")).tenants] == [
        "backstage", "dex", "sonarqube", "argo_workflows", "policyreporter", "grafana",
    ]  # fmt: skip


def test_spec_problems_are_all_reported_one_line_each(cli: Cli, tmp_path: Path) -> None:
    bad = {
        "server": {"max_connections": 20},
        "colour": "blue",
        "tenants": [
            {"name": "grafana", "stack": "observability", "pool": {"max": 10}, "timeout": 5},
            {"name": "grafana", "stack": "observability", "pool": {"max": 5}},
            {"name": "Bad-Name", "stack": "cicd", "pool": {"max": 1}},
            {"name": "pg_app", "stack": "storage", "pool": {"max": 2, "min": 3}},
            {"name": "dex", "stack": "backstage", "pool": {"max": 5}, "connection_limit": 3},
        ],
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    result = cli("bootstrap", "--plan", "--spec", str(path))
    assert result.code == 2, result
    problems = [e["error"] for e in result.events()]
    expected = [
        "unknown key colour",
        "tenant 'grafana': unknown key timeout",
        "tenant 'grafana': name 'grafana' is used",
        "tenant 'Bad-Name': tenant name 'Bad-Name' is invalid",
        "tenant 'pg_app': tenant name 'pg_app' is reserved",
        "tenant 'pg_app': stack must be one of",
        "tenant 'pg_app': pool.min",
        "tenant 'dex': connection_limit 3 is below its pool budget 5",
    ]
    for needle in expected:
        assert any(needle in p for p in problems), (needle, problems)


@pytest.mark.parametrize(("text", "line"), [
    ("server: {max_conections: 80}\ntenants: [{name: a, stack: cicd, pool: {max: 2}}]",
     "unknown key server.max_conections, did you mean server.max_connections?"),
    ("tenants: [{name: a, stack: cicd, pool: {mn: 1, max: 2}}]",
     "tenant 'a': unknown key pool.mn, did you mean pool.min?"),
    ("tenants: [{name: a, stak: cicd, pool: {max: 2}}]", "tenant 'a': unknown key stak, did you mean stack?"),
    ("tenants: [{name: a, stack: cicd, pol: {max: 2}}]", "tenant 'a': unknown key pol, did you mean pool?"),
    ("tenants: " + "[" * 20000 + "]" * 20000, "nests lists or maps thousands of levels deep"),
])  # fmt: skip
def test_a_typo_is_one_line_naming_the_unknown_key_and_the_known_one(cli: Cli, tmp_path: Path, text: str,
                                                                      line: str) -> None:  # fmt: skip
    (tmp_path / "spec.yaml").write_text(text + "\n")
    result = cli("bootstrap", "--plan", "--spec", str(tmp_path / "spec.yaml"))
    assert result.code == 2 and len(result.log_lines) == 1, result
    assert line in result.events()[0]["error"], result.events()
    assert "None" not in result.stderr


def test_budget_that_cannot_fit_is_refused(cli: Cli, tmp_path: Path) -> None:
    raw = yaml.safe_load(spec_module.default_text())
    raw["server"]["max_connections"] = 60
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw))
    result = cli("bootstrap", "--plan", "--spec", str(tmp_path / "spec.yaml"))
    assert result.code == 2
    assert "pool budgets total 65 plus admin_headroom 5 = 70 exceed the 57 usable slots" in result.stderr


def test_unreadable_or_broken_spec_is_exit_2(cli: Cli, tmp_path: Path) -> None:
    assert cli("bootstrap", "--plan", "--spec", str(tmp_path / "missing.yaml")).code == 2
    (tmp_path / "broken.yaml").write_text("tenants: [\n")
    broken = cli("bootstrap", "--plan", "--spec", str(tmp_path / "broken.yaml"))
    assert broken.code == 2 and "not valid YAML for a spec at line" in broken.stderr


# -- against real servers -------------------------------------------------------------------------------


def test_bootstrap_without_vault_creates_every_tenant_then_changes_nothing(platform: Platform) -> None:
    first = platform.run("--fuse", "cicd=on")
    assert first.code == 0, first
    report = by_tenant(first)
    assert {r["action"] for r in report.values()} == {"created"}
    assert [n for n, r in report.items() if r["active"]] == [
        n for n in platform.names if "sonarqube" in n or "argo" in n
    ]
    for name in platform.names:
        platform.login(name)
        assert (platform.password_dir / name).stat().st_mode & 0o077 == 0  # 0600
    platform.assert_no_password_printed(first)
    again = platform.run("--fuse", "cicd=on")
    assert again.code == 0, again
    assert {r["action"] for r in by_tenant(again).values()} == {"unchanged"}


def test_one_tenant_failing_does_not_stop_the_others(platform: Platform) -> None:
    victim = platform.names[2]
    platform.pg.admin_sql(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER").format(sql.Identifier(victim)))
    platform.password_dir.mkdir(mode=0o700, exist_ok=True)
    (platform.password_dir / victim).write_text(secrets.token_urlsafe(16))  # its source has one: refused as such
    result = platform.run()
    assert result.code == 3, result
    report = by_tenant(result)
    assert report[victim]["action"] == "failed" and "SUPERUSER" in report[victim]["error"]
    assert all(r["action"] == "created" for n, r in report.items() if n != victim)


def test_server_killed_mid_run_then_rerun_converges(cli: Cli, own_server: Server, tmp_path: Path) -> None:
    platform = Platform(cli, own_server, own_server.superuser, tmp_path, tenants=12)
    running = cli.start(*platform.args("--timeout", "5"), env=platform.env())
    time.sleep(0.6)
    own_server.local.kill()
    interrupted = running.finish(timeout=120)
    assert interrupted.code != 0, "the kill came after the run ended: make the run longer"
    own_server.local.restart()
    result = platform.run()
    assert result.code == 0, result
    for name in platform.names:
        platform.login(name)


SPEC_ATTACKS = {
    "duplicate key": ("tenants:\n  - name: a\n    stack: cicd\n    pool: {max: 1}\n    pool: {max: 50}\n",
                      "key 'pool' is given twice"),
    "alias bomb": ("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                   "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\ntenants: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n",
                   "aliases are not allowed"),
    "wrong encoding type": ("tenants:\n  - {name: a, stack: cicd, pool: {max: 1}, encoding: 6}\n",
                            "encoding must be a string"),
    "absurd pool": ("tenants:\n  - {name: a, stack: cicd, pool: {max: 100000000000000000000}}\n", "pool must be"),
    "setting as a map": ("tenants:\n  - {name: a, stack: cicd, pool: {max: 1},\n"
                         "     settings: {statement_timeout: {a: 1}}}\n", "settings must be a map of PARAM: VALUE"),
    "extension as a number": ("tenants:\n  - {name: a, stack: cicd, pool: {max: 1}, extensions: [1]}\n",
                              "extensions must be a list of names"),
    "name with a newline": ('tenants:\n  - {name: "evil\\n", stack: cicd, pool: {max: 1}}\n', "is invalid"),
    "role shared, default first": ("tenants:\n  - {name: a, stack: cicd, pool: {max: 1}}\n"
                                   "  - {name: b, role: a, stack: cicd, pool: {max: 1}}\n", "role 'a' is used"),
    "role shared, default last": ("tenants:\n  - {name: b, role: a, stack: cicd, pool: {max: 1}}\n"
                                  "  - {name: a, stack: cicd, pool: {max: 1}}\n", "role 'a' is used"),
    "database shared": ("tenants:\n  - {name: a, database: d, stack: cicd, pool: {max: 1}}\n"
                        "  - {name: b, database: d, stack: cicd, pool: {max: 1}}\n", "database 'd' is used"),
}  # fmt: skip


@pytest.mark.parametrize("attack", sorted(SPEC_ATTACKS))
def test_a_broken_or_hostile_spec_is_exit_2_before_connecting(cli: Cli, tmp_path: Path, attack: str) -> None:
    text, needle = SPEC_ATTACKS[attack]
    (tmp_path / "spec.yaml").write_text(text)
    started = time.monotonic()
    result = cli("bootstrap", "--spec", str(tmp_path / "spec.yaml"), "--no-vault", "--password-dir", str(tmp_path),
                 "--dsn", "host=127.0.0.1 port=1", "--timeout", "30")  # fmt: skip
    assert result.code == 2, result
    assert needle in result.stderr, result.stderr
    assert time.monotonic() - started < 10, "it waited for the server: the spec was not checked first"


def test_a_spec_that_is_not_utf8_is_exit_2(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_bytes(b"tenants:\n  - name: \xff\xfe\n")
    result = cli("bootstrap", "--plan", "--spec", str(tmp_path / "spec.yaml"))
    assert result.code == 2 and "is not UTF-8" in result.stderr, result


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_run_stops_between_statements_and_a_rerun_finishes(
    cli: Cli, pg: Server, admin: str, tmp_path: Path, signum: int
) -> None:
    platform = Platform(cli, pg, admin, tmp_path, tenants=24)
    try:
        running = cli.start(*platform.args(), env=platform.env())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # signal once a few tenants exist: mid-run on every server
            made = pg.admin_sql("SELECT count(*) FROM pg_database WHERE datname = ANY(%s)", platform.names)[0][0]
            if made >= 3:
                break
            time.sleep(0.02)
        running.proc.send_signal(signum)
        result = running.finish(timeout=60)
        assert result.code == 128 + signum, result  # not 1, no traceback (checked by cli)
        report = by_tenant(result)
        done = [n for n, r in report.items() if r["action"] == "created"]
        not_done = [n for n, r in report.items() if r["action"] == "failed"]
        assert done and not_done, "the signal came too early or too late to interrupt the run: adjust the delay"
        assert all("interrupted" in report[n]["error"] for n in not_done)
        open_to_public = pg.admin_sql(
            "SELECT datname FROM pg_database WHERE datname = ANY(%s) AND has_database_privilege('public', oid, "
            "'CONNECT')", platform.names)  # fmt: skip
        assert open_to_public == [], "a database was left open to PUBLIC"
        again = platform.run()
        assert again.code == 0, again
        for name in platform.names:
            platform.login(name)
    finally:
        pg.drop_tenants(platform.roles)


def test_a_wrong_admin_password_is_exit_4_naming_its_file_not_a_server_never_up(cli: Cli, pg: Server,
                                                                                 tmp_path: Path) -> None:  # fmt: skip
    """bootstrap retries a rejected admin login for --auth-grace (a Secret being rotated), not --timeout;
    ensure-tenant and copy-tenant fail at once; each hint names where the admin's password came from."""
    wrong = tmp_path / "admin-password"
    wrong.write_text("not-the-admin-password\n")
    env = {"PGPASSWORD_FILE": str(wrong)}
    started = time.monotonic()
    boot = cli("bootstrap", "--no-vault", "--password-dir", str(tmp_path / "pw"), "--dsn", pg.conninfo(),
               "--auth-grace", "2", "--timeout", "120", env=env)  # fmt: skip
    assert boot.code == 4 and time.monotonic() - started < 30, boot
    tenant_pw = tmp_path / "tenant.pw"
    tenant_pw.write_text(secrets.token_urlsafe(16))
    ensure = cli("ensure-tenant", "nobody_here", "--dsn", pg.conninfo(), "--tenant-password-file", str(tenant_pw),
                 env=env)  # fmt: skip
    copy = cli("copy-tenant", "nobody_here", "--dsn", pg.conninfo(), "--tenant-password-file", str(tenant_pw),
               env={**env, "SHAREDPG_FROM_DSN": f"{pg.conninfo()} password={pg.password}"})  # fmt: skip
    for result in (boot, ensure, copy):
        assert result.code == 4, result
        [error] = [e for e in result.events() if e["level"] == "error"]
        assert "rejected the admin's login" in error["error"], error
        assert str(wrong) in error["hint"] and "ExternalSecret" not in error["hint"], error


def test_an_admin_database_that_does_not_exist_is_exit_2_naming_the_setting(cli: Cli, pg: Server,
                                                                           tmp_path: Path) -> None:  # fmt: skip
    """No database named: libpq uses the login's own name, which the managed admin has none of. No bootstrap
    Job makes it, so waiting for it is no use: one line naming PGDATABASE, at once, nothing made."""
    dsn = f"host={pg.host} port={pg.port} user={MANAGED_ADMIN}"
    started = time.monotonic()
    boot = cli("bootstrap", "--no-vault", "--password-dir", str(tmp_path / "pw"), "--dsn", dsn, "--timeout", "120",
               env={"PGPASSWORD": pg.managed_password})  # fmt: skip
    assert boot.code == 2 and time.monotonic() - started < 30, boot
    [line] = boot.stderr.strip().splitlines()
    error = json.loads(line)["error"]
    assert f'database "{MANAGED_ADMIN}" does not exist' in error and "PGDATABASE=postgres" in error, line
    assert not (tmp_path / "pw").exists() or not any((tmp_path / "pw").iterdir()), "nothing made"


def test_an_existing_tenants_password_never_changes_behind_its_back(platform: Platform, tmp_path: Path) -> None:
    """A tenant made with one source (ensure-tenant's file, or a first --password-dir) keeps the password its app
    logs in with when bootstrap runs with a source that has none for it: refused, one line, with the way to
    carry the password over; --rotate gives it a new one on purpose."""
    first = platform.run()
    assert first.code == 0, first
    name = platform.names[0]
    before = platform.password(name)
    moved = tmp_path / "another-dir"
    again = platform.cli(*[a if a != str(platform.password_dir) else str(moved) for a in platform.args()],
                         env=platform.env(), timeout=180)  # fmt: skip
    assert again.code == 3, again
    report = by_tenant(again)
    assert all(r["action"] == "failed" for r in report.values()), report
    error = next(e for e in again.events() if e.get("tenant") == name and e["level"] == "error")
    assert "already exists" in error["error"] and f"{moved}/{name}" in error["hint"], error
    assert f"--rotate {name}" in error["hint"]
    with psycopg.connect(platform.pg.conninfo(name, name), password=before):  # still the same password
        pass
    (moved / name).parent.mkdir(mode=0o700, exist_ok=True)
    (moved / name).write_text(before)  # carried over, as the hint says
    carried = platform.cli(*[a if a != str(platform.password_dir) else str(moved) for a in platform.args()],
                           "--rotate", platform.names[1], env=platform.env(), timeout=180)  # fmt: skip
    report = by_tenant(carried)
    assert report[name]["action"] == "unchanged", report[name]
    assert report[platform.names[1]]["action"] == "updated", "rotated on purpose"
    with psycopg.connect(platform.pg.conninfo(name, name), password=before):
        pass
