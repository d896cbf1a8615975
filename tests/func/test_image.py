"""The image: built from ``images/Dockerfile`` for real and every command run from it in a container, as its
own user with a read-only root, against the test servers (how, and the fallback where no container can
start: ``tests/fix_image.py``); the README's ``docker run`` lines as written; and its install steps, with the
locked dependencies, on this machine's Python too."""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from prometheus_client.parser import text_string_to_metric_families

from sharedpg_tools.localserver import free_port
from tests.conftest import ROOT, Cli, Result
from tests.fix_exporter import Exporter
from tests.fix_image import BASE, Image, ImageCli, podman, podman_command, sandbox_run_flags
from tests.fix_legacy import ROWS, Legacy
from tests.fix_proxy import Proxy
from tests.fix_servers import Server
from tests.func.test_bootstrap import Platform
from tests.func.test_copy_tenant import copy

LOCK = ROOT / "images" / "requirements.lock"
ADDED_BYTES_TARGET = 45_000_000  # issue #11: the layers sharedpg adds on top of the base, uncompressed


def test_image_runs_as_a_numeric_non_root_user_with_an_exec_entrypoint(image: Image) -> None:
    config = image.config
    user, group = config["User"].split(":")
    assert user.isdigit() and group.isdigit() and int(user) != 0, "runAsNonRoot needs a numeric, non-zero UID"
    assert config["Entrypoint"] == ["sharedpg"], "exec form: no shell between the runtime and sharedpg"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "sharedpg"
    assert labels["org.opencontainers.image.version"] == tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "project"]["version"]  # fmt: skip
    assert not [v for v in image.env if re.search(r"PASSWORD|TOKEN|SECRET", v.split("=")[0])]


def test_image_adds_at_most_45_mb_to_its_base(image: Image) -> None:
    added = image.added_bytes(BASE)
    print(f"layers added to the base: {added / 1e6:.1f} MB; whole image {int(image.inspect['Size']) / 1e6:.1f} MB")
    assert 0 < added <= ADDED_BYTES_TARGET


def test_image_root_is_read_only_for_its_user(image: Image, tmp_path: Path) -> None:
    """The harness's own promise, checked: a command that writes outside /tmp fails as it would in the pod."""
    writer = image.command(["/opt/sharedpg/written"], {}, tmp_path, entrypoint="/usr/bin/touch")
    done = subprocess.run(writer, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Read-only file system" in done.stderr


def test_image_commands_run_in_a_real_container(image: Image, tmp_path: Path) -> None:
    """Says, as a skip with the reason, when the commands below run chroot-ed instead (tests/fix_image.py)."""
    if image.container_failure is not None:
        pytest.skip(f"no container can start here, the image's commands run chroot-ed: {image.container_failure}")
    inside = subprocess.run(image.run(["/proc/self/status"], {}, tmp_path, entrypoint="/usr/bin/cat"),
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    status = dict(line.split(":", 1) for line in inside.stdout.splitlines())
    assert status["Uid"].split() == ["65532"] * 4, inside.stderr
    assert int(status["CapEff"], 16) == 0 and status["NoNewPrivs"].strip() == "1"


def test_wait_for_db_from_the_image_ready(image_cli: ImageCli, pg: Server) -> None:
    result = image_cli("wait-for-db", "--once", "--dsn", pg.conninfo(), env={"PGPASSWORD": pg.password})
    assert result.code == 0, result
    assert result.stdout.startswith(f"ready: postgres@{pg.host}:{pg.port}/postgres PostgreSQL {pg.major}.")


def test_wait_for_db_from_the_image_not_ready(image_cli: ImageCli) -> None:
    result = image_cli("wait-for-db", "--timeout", "2", "--dsn", f"host=127.0.0.1 port={free_port()} user=app")
    assert result.code == 124, result  # the documented "not ready in time"
    assert "nothing listens on that host and port" in result.stderr


def test_ensure_tenant_from_the_image(image_cli: ImageCli, pg: Server, admin: str, tmp_path: Path,
                                      unique_name: str) -> None:  # fmt: skip
    password = secrets.token_urlsafe(16)
    image_cli.secrets.add(password)
    (tmp_path / "tenant.pw").write_text(password)
    try:
        result = image_cli("ensure-tenant", unique_name, "--dsn", pg.conninfo(admin), "--tenant-password-file",
                           str(tmp_path / "tenant.pw"), env={"PGPASSWORD": pg.password_of(admin)})  # fmt: skip
        assert result.code == 0, result
        with psycopg.connect(pg.conninfo(unique_name, unique_name), password=password) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (unique_name,)
    finally:
        pg.drop_tenants([unique_name])


def test_bootstrap_no_vault_from_the_image_writes_only_its_emptydir(image_cli: ImageCli, pg: Server, admin: str,
                                                                     tmp_path: Path) -> None:  # fmt: skip
    platform = Platform(image_cli, pg, admin, tmp_path)
    try:
        result = platform.run()
        assert result.code == 0, result
        for name in platform.names:
            written = platform.password_dir / name
            assert written.stat().st_uid == int(image_cli.image.config["User"].split(":")[0])
            assert written.stat().st_mode & 0o077 == 0, "a password file readable by others"
            platform.login(name)
        platform.assert_no_password_printed(result)
    finally:
        pg.drop_tenants(platform.roles)


def test_check_pool_from_the_image_text_and_prometheus(image_cli: ImageCli, pg: Server) -> None:
    text = image_cli("check-pool", "--dsn", pg.conninfo(), env={"PGPASSWORD": pg.password})
    assert text.code == 0 and text.stdout.startswith("CHECK-POOL OK"), text
    prom = image_cli("check-pool", "--dsn", pg.conninfo(), "--output", "prometheus", env={"PGPASSWORD": pg.password})
    assert prom.code == 0, prom
    families = {f.name: f for f in text_string_to_metric_families(prom.stdout)}
    assert families["sharedpg_usable_connections"].samples[0].value > 0


def test_serve_metrics_from_the_image_is_scraped_and_stops_on_sigterm(image_cli: ImageCli, pg: Server) -> None:
    port = free_port()
    running = image_cli.start("serve-metrics", "--listen", f"127.0.0.1:{port}", "--dsn", pg.conninfo(),
                              env={"PGPASSWORD": pg.password})  # fmt: skip
    exporter = Exporter(running, port)
    families = exporter.scrape()
    assert families["sharedpg_up"][0].value == 1 and families["sharedpg_usable_connections"][0].value > 0
    assert "Traceback" not in exporter.stop()  # SIGTERM through the runtime: exit 143


@pytest.fixture
def image_tenant(image_cli: ImageCli, pg: Server, tmp_path: Path) -> Iterator[tuple[str, str]]:
    name, password = f"copy_{secrets.token_hex(3)}", secrets.token_urlsafe(16)
    (tmp_path / "tenant.pw").write_text(password)
    image_cli.secrets.add(password)
    made = image_cli("ensure-tenant", name, "--dsn", pg.conninfo(), "--tenant-password-file",
                     str(tmp_path / "tenant.pw"), env={"PGPASSWORD": pg.password})  # fmt: skip
    assert made.code == 0, made
    yield name, password
    pg.drop_tenants([name])


IMAGE_TOOLS_MAJOR = 17  # postgresql-client-17 in images/Dockerfile


def test_copy_tenant_from_the_image_with_its_own_tools_or_a_refusal_before_writing(
    image_cli: ImageCli,
    pg: Server,
    legacy: Legacy,
    image_tenant: tuple[str, str],
    tmp_path: Path,
) -> None:
    """The image's pg_dump/pg_restore 17 copy from the PostgreSQL 15 source into a 17+ target; into 15 or 16
    pg_restore 17 would write SQL they refuse (``SET transaction_timeout``), so that is refused up front."""
    name, password = image_tenant
    result = copy(image_cli, pg, legacy, tmp_path, name)
    with psycopg.connect(pg.conninfo(name, name), password=password) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace").fetchone()
        if pg.major >= IMAGE_TOOLS_MAJOR:
            assert result.code == 0, result
            report = result.result()
            assert report["tools"] == f"/usr/lib/postgresql/{IMAGE_TOOLS_MAJOR}/bin", "the image's own tools"
            assert report["rows"] == ROWS and report["mismatches"] == [] and report["target_version"] == pg.major
            assert conn.execute("SELECT count(*) FROM orders").fetchone() == (5000,)
        else:
            assert result.code == 3, result
            assert f"to {pg.major} (the target)" in result.stderr
            assert f"install postgresql-client-{pg.major}" in result.stderr
            assert tables == (0,), "nothing written"


def _readme_docker_commands() -> list[str]:
    """The shell lines of images/README.md's ``docker run`` section, continuation lines joined."""
    section = (ROOT / "images" / "README.md").read_text().split("## Debugging with `docker run`", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("pg", ["pg18"], indirect=True)  # the README's copy-tenant targets 17 or 18
def test_readme_docker_run_commands_work_as_written(image: Image, pg: Server, legacy: Legacy, cli: Cli,
                                                    tmp_path: Path) -> None:  # fmt: skip
    """Each line of the README's ``docker run`` section, run by bash as written, with ``docker`` being podman
    (plus the sandbox's runtime flags, tests/fix_image.py) and the servers where the lines say they are: the
    shared server on 127.0.0.1:5432 and the old instance on 5433 (TCP proxies to the test servers)."""
    if image.container_failure is not None:
        pytest.skip(f"no container can start here: {image.container_failure}")
    if _listening(5432) or _listening(5433):
        pytest.skip("the README's addresses, 127.0.0.1:5432 and 5433, are taken on this machine")
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    podman("tag", image.tag, f"localhost/sharedpg:{version}")
    passwords = {"sonarqube": secrets.token_urlsafe(16), "sonarUser": secrets.token_urlsafe(16)}
    cli.secrets |= set(passwords.values())
    (tmp_path / "tenant.pw").write_text(passwords["sonarqube"])
    made = cli("ensure-tenant", "sonarqube", "--dsn", pg.conninfo(), "--tenant-password-file",
               str(tmp_path / "tenant.pw"), env={"PGPASSWORD": pg.password})  # fmt: skip
    assert made.code == 0, made
    legacy.server.admin_sql(f"CREATE ROLE \"sonarUser\" LOGIN PASSWORD '{passwords['sonarUser']}'")
    legacy.server.admin_sql('CREATE DATABASE "sonarDB" OWNER "sonarUser"')
    with psycopg.connect(legacy.server.conninfo("sonarUser", "sonarDB"), password=passwords["sonarUser"]) as conn:
        conn.execute("CREATE TABLE projects AS SELECT g AS id, 'p' || g AS kee FROM generate_series(1, 300) g")
    shutil.copy(ROOT / "sharedpg_tools" / "default-spec.yaml", tmp_path / "tenants.yaml")
    docker = f'docker() {{ shift; {shlex.join(podman_command())} run {shlex.join(sandbox_run_flags())} "$@"; }}'
    shared, old = Proxy(pg.host, pg.port, 5432), Proxy(legacy.server.host, legacy.server.port, 5433)
    shared.up()
    old.up()
    try:
        runs = []
        for line in _readme_docker_commands():
            if line.startswith("docker run"):  # pw holds the password of the login the line uses
                user = "sonarqube" if "PGUSER=sonarqube" in line else pg.superuser
                (tmp_path / "pw").write_text(passwords.get(user, pg.password))
                (tmp_path / "old-pw").write_text(passwords["sonarUser"])
                (tmp_path / "tenant-pw").write_text(passwords["sonarqube"])
            done = subprocess.run(["bash", "-euc", f"{docker}\n{line}"], cwd=tmp_path, capture_output=True,
                                  text=True, timeout=300)  # fmt: skip
            runs.append(cli.check(Result(done.returncode, done.stdout, done.stderr)))
            assert done.returncode == 0, f"{line}\n{done.stderr[-3000:]}"
        assert len(runs) == 8, "the README's section changed: update this test"
        assert json.loads(runs[3].stdout)["status"] == "ready"
        assert "cicd=on" in runs[4].stdout, "FUSE_CICD reached the plan"
        families = {f.name for f in text_string_to_metric_families(runs[6].stdout)}
        assert "sharedpg_usable_connections" in families
        with psycopg.connect(pg.conninfo("sonarqube", "sonarqube"), password=passwords["sonarqube"]) as conn:
            assert conn.execute("SELECT count(*), current_user FROM projects").fetchone() == (300, "sonarqube")
    finally:
        shared.down()
        old.down()
        pg.drop_tenants(["sonarqube"])
        legacy.server.admin_sql('DROP DATABASE IF EXISTS "sonarDB"')
        legacy.server.admin_sql('DROP ROLE IF EXISTS "sonarUser"')
        podman("untag", image.tag, f"localhost/sharedpg:{version}")


def _locked() -> dict[str, tuple[str, int]]:
    """The lock's entries: name -> (version, number of hashes)."""
    entries: dict[str, tuple[str, int]] = {}
    current = ""
    for line in LOCK.read_text().splitlines():
        if not line.startswith(("#", " ")) and "==" in line:
            name, version = line.split(";")[0].strip(" \\").split("==")
            current = canonicalize_name(name)
            entries[current] = (version, 0)
        elif line.strip().startswith("--hash=sha256:") and current:
            entries[current] = (entries[current][0], entries[current][1] + 1)
    return entries


def test_lock_pins_every_runtime_dependency_of_pyproject_with_hashes() -> None:
    locked = _locked()
    assert locked and all(hashes > 0 for _, hashes in locked.values()), "every locked file needs its hash"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for req in map(Requirement, project["dependencies"]):
        name = canonicalize_name(req.name)
        assert name in locked, f"{req.name} is in pyproject.toml but not in images/requirements.lock: regenerate it"
        assert req.specifier.contains(locked[name][0]), f"locked {name}=={locked[name][0]} does not satisfy {req}"
        for extra in req.extras:  # psycopg[binary] -> psycopg-binary
            assert canonicalize_name(f"{req.name}-{extra}") in locked


@pytest.fixture(scope="module")
def host_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``images/install.sh`` into a fresh directory with this machine's Python (the oldest one supported)."""
    target = tmp_path_factory.mktemp("image") / "opt-sharedpg"
    done = subprocess.run(["sh", str(ROOT / "images" / "install.sh"), str(ROOT), str(target)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    yield target


def test_install_steps_on_this_python_have_no_pip_and_precompiled_bytecode(host_venv: Path) -> None:
    assert not (host_venv / "bin" / "pip").exists()
    compiled = list(host_venv.glob("lib/python3*/site-packages/sharedpg_tools/__pycache__/cli.*.pyc"))
    assert compiled, "bytecode must be compiled at build time (read-only root filesystem)"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "SHAREDPG_", "PYTHON"))}
    help_run = subprocess.run([str(host_venv / "bin" / "sharedpg"), "--help"], capture_output=True, text=True,
                              env=clean, timeout=60)  # fmt: skip
    assert help_run.returncode == 0 and "wait-for-db" in help_run.stdout
