"""The image: built from ``images/Dockerfile`` for real and every command run from it, as its own user with a
read-only root, against the test servers (how, without a container engine: ``tests/fix_image.py``); and its
install steps, with the locked dependencies, on this machine's Python too."""

from __future__ import annotations

import os
import re
import secrets
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
from tests.conftest import ROOT
from tests.fix_image import BASE, Image, ImageCli
from tests.fix_legacy import ROWS, Legacy
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
    writer = [*image.enter({}, tmp_path), "/usr/bin/touch", "/opt/sharedpg/written"]
    done = subprocess.run(writer, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "Read-only file system" in done.stderr


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
        pg.drop_tenants(platform.names)


def test_check_pool_from_the_image_text_and_prometheus(image_cli: ImageCli, pg: Server) -> None:
    text = image_cli("check-pool", "--dsn", pg.conninfo(), env={"PGPASSWORD": pg.password})
    assert text.code == 0 and text.stdout.startswith("CHECK-POOL OK"), text
    prom = image_cli("check-pool", "--dsn", pg.conninfo(), "--output", "prometheus", env={"PGPASSWORD": pg.password})
    assert prom.code == 0, prom
    families = {f.name: f for f in text_string_to_metric_families(prom.stdout)}
    assert families["sharedpg_usable_connections"].samples[0].value > 0


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
