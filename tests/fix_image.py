"""The image, built for real from ``images/Dockerfile`` with podman (``images/build-offline.sh``: the base is
made from Debian's packages, since no registry is reachable here), and run the way a pod runs it.

``ImageCli`` runs every command in a real container, ``podman run`` with what the snippets' pods ask for:
the image's entrypoint and user (65532), a read-only root (``readOnlyRootFilesystem: true``), every
capability dropped, no privilege escalation, the test's scratch directory as the only writable place at
``/tmp`` (an ``emptyDir``), and the host's network so the test servers on 127.0.0.1 are reachable as they
would be from a pod. Two things this sandbox needs, said here because they are not the image's: runc (crun
refuses the sandbox's hybrid cgroup hierarchy) and explicit rlimits no higher than this process's own (the
sandbox may not raise them, and refuses an nproc above ``kernel.pid_max``).

Where a container cannot start, ``ImageCli`` says why once and runs the same commands in the image's mounted
root filesystem instead: in a private mount namespace the root is bind-mounted **read-only**, the host's
``/dev`` is bound in (the runtime would provide one), the scratch directory is mounted at ``/tmp``, and the
process is ``chroot``-ed as the image's user. ``bench.image_cost`` always measures that way, so that only
the measured command is counted, not the container runtime.

Building needs root, podman and mmdebstrap (``scripts/test.sh`` installs them and runc with apt-get):
missing, the image tests skip with the reason outside CI and fail in CI. Layers are kept in the overlay
driver where the kernel allows an overlay mount here, else in vfs (slower: it copies the image per container).
"""

from __future__ import annotations

import functools
import json
import os
import resource
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Cli, Running
from tests.fix_servers import Server, missing

# Root-only storage for the image layers, kept between runs as a build cache.
STORE = Path(os.environ.get("SHAREDPG_PODMAN_STORE", "/var/tmp/sharedpg-podman"))  # noqa: S108
TAG = "localhost/sharedpg:test"
BASE = "localhost/sharedpg-base:trixie"  # what images/build-offline.sh makes and builds on
SCRATCH = "/tmp"  # noqa: S108 (inside the image: where the scratch directory is mounted)

# In the private mount namespace: the read-only root, /dev, the writable scratch; then the image's user.
_ENTER = """
root=$1 scratch=$2 user=$3; shift 3
ro=$(mktemp -d)
mount --bind "$root" "$ro"
mount -o remount,bind,ro "$ro"
mount --rbind /dev "$ro/dev"
mount --bind "$scratch" "$ro/tmp"
exec chroot --userspec="$user" "$ro" /usr/bin/env -i "$@"  # no HOME: stricter than a runtime (HOME=/)
"""


class Image:
    """A built image: its configuration (``podman image inspect``) and its mounted root filesystem."""

    def __init__(self, tag: str):
        self.tag = tag
        self.inspect: dict[str, Any] = json.loads(podman("image", "inspect", tag))[0]
        self.config: dict[str, Any] = self.inspect["Config"]
        self.root = Path(podman("image", "mount", tag).strip())

    @property
    def env(self) -> list[str]:
        return list(self.config.get("Env") or [])

    def enter(self, env: dict[str, str], scratch: Path) -> list[str]:
        """The command line that enters the image (read-only root, its user, its environment plus ``env``);
        what follows it is run there."""
        extra = [f"{k}={v}" for k, v in env.items()]
        return ["unshare", "--mount", "--propagation", "private", "sh", "-euc", _ENTER, "enter",
                str(self.root), str(scratch), self.config["User"], *self.env, *extra]  # fmt: skip

    def command(self, argv: list[str], env: dict[str, str], scratch: Path, entrypoint: str | None = None) -> list[str]:
        """``argv`` given to the image's entrypoint (or to ``entrypoint``), as a pod with these arguments runs
        it: in a container where one can start, else chroot-ed (see the module's docstring)."""
        if self.container_failure is None:
            return self.run(argv, env, scratch, entrypoint)
        return [*self.enter(env, scratch), *([entrypoint] if entrypoint else self.config["Entrypoint"]), *argv]

    def run(self, argv: list[str], env: dict[str, str], scratch: Path, entrypoint: str | None = None) -> list[str]:
        """The ``podman run`` command line: the snippets' ``securityContext`` (``runAsUser`` left to the
        image's ``USER``, as the snippets' value is the same)."""
        extra = [f"--env={k}={v}" for k, v in env.items()] + (["--entrypoint", entrypoint] if entrypoint else [])
        return [*podman_command(), "run", "--rm", *sandbox_run_flags(), "--network", "host", "--read-only",
                "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--volume", f"{scratch}:{SCRATCH}",
                *extra, self.tag, *argv]  # fmt: skip

    @functools.cached_property
    def container_failure(self) -> str | None:
        """Why a container cannot start here, or None when it can."""
        with tempfile.TemporaryDirectory() as scratch:
            tried = subprocess.run(self.run(["--version"], {}, Path(scratch)), capture_output=True, text=True,
                                   timeout=120)  # fmt: skip
        if tried.returncode == 0:
            return None
        return (tried.stderr.strip().splitlines() or [f"exit {tried.returncode}"])[-1]

    def added_bytes(self, base: str) -> int:
        """What the Dockerfile adds on top of ``base``, uncompressed."""
        base_size = int(json.loads(podman("image", "inspect", base))[0]["Size"])
        return int(self.inspect["Size"]) - base_size


def _overlay_mounts() -> bool:
    """Whether the kernel lets us mount overlayfs here (tried in a private mount namespace)."""
    with tempfile.TemporaryDirectory() as work:
        dirs = [Path(work, d) for d in ("lower", "upper", "work", "merged")]
        for d in dirs:
            d.mkdir()
        options = f"lowerdir={dirs[0]},upperdir={dirs[1]},workdir={dirs[2]}"
        tried = subprocess.run(["unshare", "--mount", "mount", "-t", "overlay", "overlay", "-o", options, str(dirs[3])],
                               capture_output=True, timeout=30)  # fmt: skip
        return tried.returncode == 0


@functools.cache
def podman_command() -> list[str]:
    """``podman`` with this suite's own storage (a different root per driver: podman refuses to mix them)."""
    driver = "overlay" if _overlay_mounts() else "vfs"
    root, runroot = STORE / driver, STORE / f"run-{driver}"
    return ["podman", "--storage-driver", driver, "--root", str(root), "--runroot", str(runroot)]


def sandbox_run_flags() -> list[str]:
    """What ``podman run`` needs in this sandbox and a cluster does not (see the module's docstring)."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], int(Path("/proc/sys/kernel/pid_max").read_text()))
    runtime = ["--runtime", "runc"] if shutil.which("runc") else []
    return [*runtime, "--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]


def podman(*args: str, timeout: float = 120) -> str:
    done = subprocess.run([*podman_command(), *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"podman {' '.join(args)}: {done.stderr[-2000:]}"
    return done.stdout


def unavailable() -> str | None:
    if os.geteuid() != 0:
        return "building and mounting the image needs root (podman with the vfs driver, chroot, unshare)"
    missing = [tool for tool in ("podman", "mmdebstrap", "unshare", "chroot") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (scripts/test.sh installs them with apt-get as root)"
    return None


def build() -> Image:
    """Build the image from this checkout with ``images/build-offline.sh`` (layers cached in
    ``SHAREDPG_PODMAN_STORE`` between runs) and mount it."""
    env = {**os.environ, "PODMAN": " ".join(podman_command())}
    done = subprocess.run(["sh", str(ROOT / "images" / "build-offline.sh"), TAG], capture_output=True, text=True,
                          env=env, timeout=1200)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"image build failed:\n{done.stderr[-4000:]}")
    return Image(TAG)


@pytest.fixture(scope="session")
def image() -> Iterator[Image]:
    reason = unavailable()
    if reason:
        missing(reason)
    built = build()
    yield built
    podman("image", "unmount", TAG)


class ImageCli(Cli):
    """``cli`` with every run inside the image (see the module's docstring). Paths under the test's
    scratch directory are given to the image as the same paths under ``/tmp``."""

    def __init__(self, image: Image, scratch: Path):
        super().__init__()
        self.image = image
        self.scratch = scratch
        scratch.chmod(0o1777)  # writable by the image's user, as an emptyDir is

    def start(self, *args: str, env: dict[str, str] | None = None) -> Running:
        argv = [arg.replace(str(self.scratch), SCRATCH) for arg in args]
        proc = subprocess.Popen(self.image.command(argv, env or {}, self.scratch), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)  # fmt: skip
        return Running(proc, self)


@pytest.fixture
def image_cli(image: Image, tmp_path: Path, request: pytest.FixtureRequest) -> ImageCli:
    runner = ImageCli(image, tmp_path)
    if "pg" in request.fixturenames:
        server: Server = request.getfixturevalue("pg")
        runner.secrets |= {server.password, server.managed_password}
    return runner
