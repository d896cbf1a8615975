"""Shared fixtures: real servers (fix_servers), a TCP proxy (fix_proxy), and ``cli``, which runs
``sharedpg`` as a user does, in a subprocess, and checks every byte it printed for secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = [
    "tests.fix_servers",
    "tests.fix_proxy",
    "tests.fix_roles",
    "tests.fix_exporter",
    "tests.fix_openbao",
    "tests.fix_image",
    "tests.fix_legacy",
    "tests.fix_gitops",
]

ROOT = Path(__file__).resolve().parent.parent


class Result:
    def __init__(self, code: int, stdout: str, stderr: str):
        self.code = code
        self.stdout = stdout
        self.stderr = stderr

    @property
    def log_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    def events(self) -> list[dict[str, Any]]:
        """stderr as JSON log records (the default format when stderr is not a TTY)."""
        return [json.loads(line) for line in self.log_lines]

    def result(self) -> dict[str, Any]:
        """stdout as the JSON result of ``--output json``."""
        return json.loads(self.stdout)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"Result(code={self.code}, stdout={self.stdout!r}, stderr={self.stderr!r})"


class Running:
    def __init__(self, proc: subprocess.Popen[str], runner: Cli):
        self.proc = proc
        self.runner = runner

    def finish(self, timeout: float = 60) -> Result:
        out, err = self.proc.communicate(timeout=timeout)
        return self.runner.check(Result(self.proc.returncode, out, err))


class Cli:
    """Runs ``python -m sharedpg_tools`` with a clean environment (no PG* leaking in from the host)."""

    def __init__(self) -> None:
        self.secrets: set[str] = set()

    def env(self, extra: dict[str, str] | None) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "SHAREDPG_"))}
        base["PYTHONPATH"] = str(ROOT)
        return {**base, **(extra or {})}

    def start(self, *args: str, env: dict[str, str] | None = None) -> Running:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sharedpg_tools", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=self.env(env),
        )
        return Running(proc, self)

    def __call__(self, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Result:
        return self.start(*args, env=env).finish(timeout)

    def check(self, result: Result) -> Result:
        """What must hold for every run: no secret printed anywhere, no traceback."""
        printed = result.stdout + result.stderr
        for secret in self.secrets:
            assert secret not in printed, "a password was printed"
        assert "Traceback" not in printed, result.stderr
        return result


@pytest.fixture
def cli(request: pytest.FixtureRequest) -> Iterator[Cli]:
    runner = Cli()
    for name in ("pg", "own_server"):
        if name in request.fixturenames:
            server = request.getfixturevalue(name)
            runner.secrets |= {server.password, server.managed_password}
    yield runner


def pytest_report_header(config: pytest.Config) -> list[str]:
    from tests.fix_servers import server_params

    return [f"sharedpg test servers: {', '.join(server_params())}"]
