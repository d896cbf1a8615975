"""The image's install steps, run for real: no Docker engine exists in CI, so ``images/install.sh`` (what
the Dockerfile runs) installs into a fresh directory, and the result must work as the image would."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.fix_servers import Server


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    target = tmp_path_factory.mktemp("image") / "opt-sharedpg"
    done = subprocess.run(["sh", str(ROOT / "images" / "install.sh"), str(ROOT), str(target)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    yield target


def run(venv: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "SHAREDPG_", "PYTHON"))}
    clean["PYTHONDONTWRITEBYTECODE"] = "1"  # as the image sets it
    return subprocess.run([str(venv / "bin" / "sharedpg"), *args], capture_output=True, text=True,
                          env={**clean, **(env or {})}, timeout=60)  # fmt: skip


def test_installed_image_has_no_pip_and_precompiled_bytecode(image_venv: Path) -> None:
    assert not (image_venv / "bin" / "pip").exists()
    compiled = list(image_venv.glob("lib/python3*/site-packages/sharedpg_tools/__pycache__/cli.*.pyc"))
    assert compiled, "bytecode must be compiled at build time (read-only root filesystem)"
    help_run = run(image_venv, "--help")
    assert help_run.returncode == 0 and "wait-for-db" in help_run.stdout


def test_installed_image_waits_for_a_real_server(image_venv: Path, pg: Server) -> None:
    result = run(image_venv, "wait-for-db", "--once", "--dsn", pg.conninfo(), env={"PGPASSWORD": pg.password})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"ready: postgres@{pg.host}:{pg.port}/postgres PostgreSQL {pg.major}.")
    assert pg.password not in result.stdout + result.stderr
