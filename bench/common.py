"""What the benchmarks share: measuring a command's CPU, wall time and peak RSS, and what they measure."""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sharedpg_tools import localserver

# Linux keeps a process's peak RSS across exec, so a child forked (or vforked) from this benchmark
# would report at least this Python process's RSS. Each command is therefore started by a small
# launcher (a bare interpreter, far smaller than anything measured) that forks, execs and reports.
_LAUNCHER = """
import os, sys, time
started = time.monotonic()
pid = os.fork()
if pid == 0:
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(usage.ru_utime + usage.ru_stime, time.monotonic() - started, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def measure(command: list[str], env: dict[str, str], python: list[str] | None = None,
            expect: int = 0) -> tuple[float, float, float]:  # fmt: skip
    """CPU seconds, wall seconds and peak RSS (MiB) of one run, which must exit ``expect``. ``python`` is
    the interpreter that runs the launcher (this one by default; the image's own, entered, for the image)."""
    launcher = [*(python or [sys.executable]), "-I", "-S", "-c", _LAUNCHER]
    out = subprocess.run([*launcher, *command], env=env, capture_output=True, text=True, check=True).stdout.split()
    cpu, wall, rss_kib, code = float(out[0]), float(out[1]), int(out[2]), int(out[3])
    if code != expect:
        raise SystemExit(f"{' '.join(command)} exited {code}, not {expect}")
    return cpu, wall, rss_kib / 1024


def proc_stat(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command's name (which may hold spaces): [0] is the state,
    [1] the parent's pid, [11] and [12] the user and system CPU in clock ticks."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def regular_install() -> str:
    """Install this checkout (not editable) into bench/.probe-venv, as the image does; return its sharedpg.

    An editable install would add an import hook to every start that the image does not have.
    """
    root = Path(__file__).resolve().parent.parent
    venv = root / "bench" / ".probe-venv"
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([*pip, str(root)], check=True)  # dependencies, new ones included
    subprocess.run([*pip, "--no-deps", "--force-reinstall", str(root)], check=True)  # this checkout's code
    return str(venv / "bin" / "sharedpg")


def tool(name: str, bindir: Path) -> str:
    """The client as a platform engineer has it (on PATH), else the server installation's."""
    return shutil.which(name) or str(bindir / name)


def parser_for(doc: str) -> argparse.ArgumentParser:
    """The options every benchmark takes: the server's major and the sharedpg executable to measure."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--major", type=int, default=None, help="server major (default: 15, else any)")
    parser.add_argument("--sharedpg", help="the sharedpg executable [default: a regular install in bench/.probe-venv]")
    return parser


def subjects(args: argparse.Namespace) -> tuple[localserver.Installation, str]:
    """The server installation and the sharedpg executable the options name."""
    return server_installation(args.major), args.sharedpg or regular_install()


def client_env(password: str) -> dict[str, str]:
    """The environment every measured client gets: the same for psql and sharedpg."""
    return {"PATH": os.environ.get("PATH", ""), "PGPASSWORD": password, "LC_ALL": "C"}


def server_installation(major: int | None) -> localserver.Installation:
    """PostgreSQL 15 (Debian) by default, as the issue's figures were taken; else what is asked or found."""
    installation = localserver.find(major or 15) or localserver.find(major)
    if installation is None:
        raise SystemExit("no PostgreSQL server binaries found")
    return installation


def compare(commands: dict[str, list[str]], env: dict[str, str], runs: int, python: list[str] | None = None) -> None:
    """Run the commands alternately ``runs`` times (after one untimed warm-up each) and print the median
    CPU, wall time and peak RSS of each, with ratios against the first command (the baseline)."""
    for command in commands.values():
        measure(command, env, python)
    samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            samples[name].append(measure(command, env, python))
    medians = {name: [statistics.median(s[i] for s in rows) for i in range(3)] for name, rows in samples.items()}
    base_cpu, _, base_rss = next(iter(medians.values()))
    width = max(len(name) for name in commands) + 2
    print(f"{'command':<{width}} {'CPU ms':>8} {'wall ms':>8} {'RSS MiB':>8} {'CPU/base':>9} {'RSS/base':>9}")
    for name, (cpu, wall, rss) in medians.items():
        ratios = f"{cpu / base_cpu:>9.2f} {rss / base_rss:>9.2f}"
        print(f"{name:<{width}} {cpu * 1000:>8.1f} {wall * 1000:>8.1f} {rss:>8.1f} {ratios}")


Bench = tuple[argparse.Namespace, str, localserver.LocalServer, dict[str, str]]


@contextmanager
def bench_server(doc: str, runs: int, scale: int | None = None,
                 options: Callable[[argparse.ArgumentParser], object] | None = None) -> Iterator[Bench]:  # fmt: skip
    """A benchmark's options (with ``--runs``, ``--scale`` where it has a default, and what ``options`` adds),
    the sharedpg it measures, and a throwaway server (SCRAM, on loopback) with the environment its clients get."""
    parser = parser_for(doc)
    parser.add_argument("--runs", type=int, default=runs)
    if scale is not None:
        parser.add_argument("--scale", type=int, default=scale, help="how many times the base data [%(default)s]")
    if options is not None:
        options(parser)
    args = parser.parse_args()
    installation, sharedpg = subjects(args)
    password = secrets.token_urlsafe(18)
    with localserver.LocalServer(installation, password) as server:
        yield args, sharedpg, server, client_env(password)


def compare_main(doc: str, commands_for: Callable[[localserver.LocalServer, str], dict[str, list[str]]]) -> int:
    """A whole side-by-side benchmark: options, a throwaway server, the commands ``commands_for(server,
    sharedpg)`` returns (the first is the baseline), the table."""
    with bench_server(doc, 10) as (args, sharedpg, server, env):
        print(
            f"PostgreSQL {server.major} ({server.installation.source}) on loopback, SCRAM login, median of "
            f"{args.runs} alternated runs; Python {sys.version.split()[0]}; base = the first row"
        )
        compare(commands_for(server, sharedpg), env, args.runs)
    return 0


def timed_copies(names: list[str], runs: int, sharedpg: str, server: localserver.LocalServer, env: dict[str, str],
                 tenant_pw: Path, copy: Callable[[str, str], None]) -> dict[str, list[float]]:  # fmt: skip
    """Each way of copying, alternated ``runs`` times: a fresh tenant made by ensure-tenant (with the password
    in ``tenant_pw``), then the wall time of ``copy(name, tenant)``."""
    walls: dict[str, list[float]] = {name: [] for name in names}
    for run in range(runs):
        for n, name in enumerate(names):
            tenant = f"bench_{run}_{n}"
            subprocess.run([sharedpg, "ensure-tenant", tenant, "--dsn", server.conninfo(), "--tenant-password-file",
                            str(tenant_pw)], env=env, check=True, capture_output=True)  # fmt: skip
            started = time.monotonic()
            copy(name, tenant)
            walls[name].append(time.monotonic() - started)
    return walls


def bare_copy(pg_dump: str, pg_restore: str, source: str, target: str, env: dict[str, str], password: str) -> None:
    """``pg_dump -Fc | pg_restore`` in one shell pipe, the target's password only in pg_restore's environment."""
    pipeline = (f"{pg_dump} -Fc --no-owner --no-privileges -d '{source}' | PGPASSWORD=\"$TENANT_PW\" {pg_restore} "
                f"--no-owner --no-privileges --exit-on-error --single-transaction -d '{target}'")  # fmt: skip
    subprocess.run(["bash", "-o", "pipefail", "-c", pipeline], env={**env, "TENANT_PW": password}, check=True)
