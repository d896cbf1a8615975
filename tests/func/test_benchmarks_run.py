"""Every benchmark command line the documents show runs as written, at the smallest sizes: the figures in
docs/performance.md and images/README.md come from commands that still work.

The sizes are the one substitution, declared once (``SMALL``, ``SMALL_DEFAULTS``): ``--runs 30`` becomes
``--runs 1``, a 600 s soak a few seconds, a 100 MB grafana.db 2 MB, bootstrap's 50/200/500 tenants 10, and a
drawing goes to the test's directory instead of docs/. Each
run must exit 0 and print its table. What the figures are is the benchmarks' business, never asserted here.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.fix_image import unavailable as image_unavailable
from tests.fix_servers import missing

DOCS = (ROOT / "docs" / "performance.md", ROOT / "images" / "README.md")
SMALL = {"--runs": "1", "--restarts": "1", "--wait": "10", "--duration": "6", "--mb": "2", "--scale": "1"}
# Where a documented line takes a benchmark's default size, the smallest one it accepts instead.
SMALL_DEFAULTS = {"bench.bootstrap_cost": ["--sizes", "10"]}
NEEDS = {"bench.image_cost": "image", "bench.grafana_import_cost": "pgloader"}


def documented() -> list[tuple[str, str]]:
    """(document, command line) of every benchmark run the documents show, in code blocks or inline."""
    found = []
    for doc in DOCS:
        for line in re.findall(r"\.venv/bin/python -m bench\.[a-z_]+[^`\n#]*", doc.read_text()):
            found.append((doc.name, " ".join(line.split())))
    return sorted(set(found))


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
    assert len(documented()) >= 10, documented()


@pytest.mark.slow
@pytest.mark.parametrize(("doc", "line"), documented())
def test_each_documented_benchmark_runs(doc: str, line: str, tmp_path: Path) -> None:
    module = line.split()[2]
    need = NEEDS.get(module)
    if need == "image" and (reason := image_unavailable()):
        missing(reason)
    if need == "pgloader" and shutil.which("pgloader") is None:
        missing("pgloader is missing: scripts/test.sh installs it (apt-get install pgloader)")
    command = small(line, tmp_path)
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert done.returncode == 0, f"{doc}: {' '.join(command)}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert len(done.stdout.strip().splitlines()) >= 2, f"{doc}: {line} printed no table:\n{done.stdout}"
