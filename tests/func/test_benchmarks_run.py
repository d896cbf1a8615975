"""Every benchmark command line the documents show runs as written, at the smallest sizes: the figures in
docs/performance.md and images/README.md come from commands that still work.

The sizes are the one substitution, declared once (``SMALL``, ``SMALL_DEFAULTS``): ``--runs 30`` becomes
``--runs 1``, a 600 s soak 4 seconds, a 100 MB grafana.db 2 MB, a 500 MB cutover 5 MB, bootstrap's
50/200/500 tenants 10, and a
drawing goes to the test's directory instead of docs/. Each
run must exit 0 and print its table. What the figures are is the benchmarks' business, never asserted here.
They run three at a time (nothing here is timed), all with the one regular install of this checkout that
``bench.common.regular_install`` makes first (``--sharedpg``), so that no two install it at once.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bench.common import regular_install
from tests.conftest import ROOT
from tests.fix_backstage import not_installed as backstage_not_installed
from tests.fix_image import unavailable as image_unavailable
from tests.fix_servers import missing

DOCS = (ROOT / "docs" / "performance.md", ROOT / "images" / "README.md")
SMALL = {"--runs": "1", "--restarts": "1", "--wait": "3", "--duration": "4", "--mb": "2", "--scale": "1", "--size": "5"}
# Where a documented line takes a benchmark's default size, the smallest one it accepts instead.
SMALL_DEFAULTS = {"bench.bootstrap_cost": ["--sizes", "10"]}
NEEDS = {"bench.image_cost": "image", "bench.grafana_import_cost": "pgloader", "bench.cutover_downtime": "backstage"}
WITHOUT_SHAREDPG = {"bench.soak"}  # runs this checkout's sharedpg_tools with this interpreter


def documented() -> list[tuple[str, str]]:
    """(document, command line) of every benchmark run the documents show, in code blocks or inline: each
    one that is still different once made small (the same benchmark at two sizes runs once)."""
    found: dict[tuple[str, ...], tuple[str, str]] = {}
    for doc in DOCS:
        for line in re.findall(r"\.venv/bin/python -m bench\.[a-z_]+[^`\n#]*", doc.read_text()):
            line = " ".join(line.split())
            found.setdefault(tuple(small(line, Path("/small"))), (doc.name, line))
    return sorted(found.values())


def small(line: str, workdir: Path) -> list[str]:
    words = shlex.split(line)[1:]  # without .venv/bin/python: this interpreter runs it
    out = []
    for n, word in enumerate(words):
        if n and words[n - 1] in SMALL:
            out.append(SMALL[words[n - 1]])
        elif n and words[n - 1] == "--png":
            out.append(str(workdir / Path(word).name))  # never over the documented drawing
        else:
            out.append(word)
    return [sys.executable, *out, *SMALL_DEFAULTS.get(words[1], [])]


def test_the_documents_show_benchmarks() -> None:
    assert len({line.split()[2] for _, line in documented()}) >= 11, documented()


def _unavailable(module: str) -> str | None:
    need = NEEDS.get(module)
    if need == "image":
        return image_unavailable()
    if need == "backstage":
        return backstage_not_installed()
    if need == "pgloader" and shutil.which("pgloader") is None:
        return "pgloader is missing: scripts/test.sh installs it (apt-get install pgloader)"
    return None


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every documented benchmark that can run here, run small, keyed by its documented line."""
    sharedpg = regular_install()
    todo = {line: small(line, tmp_path_factory.mktemp("bench")) for _, line in documented()
            if _unavailable(line.split()[2]) is None}  # fmt: skip

    def run(command: list[str]) -> subprocess.CompletedProcess[str]:
        own = ["--sharedpg", sharedpg] if command[2] not in WITHOUT_SHAREDPG else []
        return subprocess.run([*command, *own], cwd=ROOT, capture_output=True, text=True, timeout=900,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(todo, pool.map(run, todo.values()), strict=True))


@pytest.mark.slow
@pytest.mark.parametrize(("doc", "line"), documented())
def test_each_documented_benchmark_runs(doc: str, line: str, runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    if reason := _unavailable(line.split()[2]):
        missing(reason)
    done = runs[line]
    assert done.returncode == 0, f"{doc}: {' '.join(done.args)}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert len(done.stdout.strip().splitlines()) >= 2, f"{doc}: {line} printed no table:\n{done.stdout}"
