"""What the image weighs and what an exec probe costs inside it: ``wait-for-db --once`` beside ``psql -c
'select 1'``, both from the image, as its user, with its read-only root (``tests/fix_image.py`` says how
it runs without a container engine).

Builds the image from this checkout (``images/build-offline.sh``; root, podman and mmdebstrap), starts a
PostgreSQL on loopback with SCRAM, then prints the layers the Dockerfile adds to its base and the whole
image's size, and the median CPU, wall time and peak RSS of each command over N alternated runs. The
launcher that measures each run is itself started by the image's Python, inside the image, so only the
measured command is counted. Run it from the checkout's root with the project's venv::

    .venv/bin/python -m bench.image_cost [--runs 20] [--major 15]

Where gcc and libpq's headers are present, it also builds ``bench/minimal_probe.c`` (one libpq login, one
line) and runs it in the image beside them: what a probe that is not a Python program would cost.

Targets: added layers <= 45 MB uncompressed; the probe <= 2.0x psql's CPU and <= 20 MiB (it takes the lean
``--once`` path, sharedpg_tools/quick.py, through the image's launcher, ``python -IS``). The interpreter's own
start is printed beside them, as the launcher starts it (``-IS``) and as plain ``python -c pass``: no Python
command can cost less.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import common
from sharedpg_tools import localserver
from tests import fix_image


def main() -> int:
    parser = common.parser_for(__doc__ or "")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    reason = fix_image.unavailable()
    if reason:
        raise SystemExit(reason)
    image = fix_image.build()
    print(f"image {image.tag}: {int(image.inspect['Size']) / 1e6:.1f} MB uncompressed; the Dockerfile adds "
          f"{image.added_bytes(fix_image.BASE) / 1e6:.1f} MB to its base ({fix_image.BASE})")  # fmt: skip
    password = secrets.token_urlsafe(18)
    with localserver.LocalServer(common.server_installation(args.major), password) as server, \
            tempfile.TemporaryDirectory() as scratch:  # fmt: skip
        target = server.conninfo()
        python = [*image.enter({"PGPASSWORD": password, "LC_ALL": "C"}, Path(scratch)), "/usr/bin/python3"]
        print(f"PostgreSQL {server.major} on loopback, SCRAM login, median of {args.runs} alternated runs, "
              "each command from the image as its user; base = the first row")  # fmt: skip
        probe = ["/opt/sharedpg/bin/sharedpg", "wait-for-db", "--once", "--dsn", target]
        commands = {
            "psql -c 'select 1' (image)": ["/usr/lib/postgresql/17/bin/psql", target, "-XAtqc", "select 1"],
            "python -c pass (image)": ["/opt/sharedpg/bin/python", "-c", "pass"],
            "python -IS -c pass (image; the launcher's floor)": ["/opt/sharedpg/bin/python", "-IS", "-c", "pass"],
            "sharedpg wait-for-db --once (image)": probe,
        }
        compiled = _minimal_probe(Path(scratch))
        if compiled:
            commands["a minimal C client on libpq (image; bench/minimal_probe.c)"] = [compiled, target]
        common.compare(commands, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, args.runs, python)
    fix_image.podman("image", "unmount", image.tag)
    return 0


def _minimal_probe(scratch: Path) -> str | None:
    """``bench/minimal_probe.c`` built into the scratch directory, as the image sees it; None without gcc or
    libpq's headers (it links the image's own libpq5)."""
    header = Path("/usr/include/postgresql/libpq-fe.h")
    if shutil.which("gcc") is None or not header.exists():
        print("(no gcc or libpq-fe.h here: the minimal C client is not measured)")
        return None
    source = Path(__file__).with_name("minimal_probe.c")
    subprocess.run(["gcc", "-O2", "-o", str(scratch / "minimal-probe"), str(source), f"-I{header.parent}", "-lpq"],
                   check=True)  # fmt: skip
    scratch.chmod(0o755)  # the image's user runs it from there
    return f"{fix_image.SCRATCH}/minimal-probe"


if __name__ == "__main__":
    sys.exit(main())
