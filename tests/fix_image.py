"""The image, built for real from ``images/Dockerfile`` with podman (``images/build-offline.sh``: the base is
made from Debian's packages, since no registry is reachable here), and run the way a pod runs it.

Containers cannot start in this sandbox (the OCI runtime's ``setrlimit`` is refused), so ``ImageCli`` runs
the image's own entrypoint, environment, interpreter and libraries in its mounted root filesystem: in a
private mount namespace the root is bind-mounted **read-only** (``readOnlyRootFilesystem: true``), the
host's ``/dev`` is bound in (the runtime would provide one), the test's scratch directory is the only
writable place, mounted at ``/tmp`` (an ``emptyDir``), and the process is ``chroot``-ed as the image's
configured user (65532). The network is the host's (``--network host``), so the test servers on 127.0.0.1
are reachable as they would be from a pod.

Building needs root, podman and mmdebstrap (``scripts/test.sh`` installs them with apt-get): missing, the
image tests skip with the reason outside CI and fail in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Cli, Running
from tests.fix_servers import Server, in_ci

# Root-only storage for the image layers, kept between runs as a build cache.
STORE = Path(os.environ.get("SHAREDPG_PODMAN_STORE", "/var/tmp/sharedpg-podman"))  # noqa: S108
PODMAN = ["podman", "--storage-driver", "vfs", "--root", str(STORE / "storage"), "--runroot", str(STORE / "run")]
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

    def command(self, argv: list[str], env: dict[str, str], scratch: Path) -> list[str]:
        """``argv`` given to the image's entrypoint, as a pod with these arguments runs it."""
        return [*self.enter(env, scratch), *self.config["Entrypoint"], *argv]

    def added_bytes(self, base: str) -> int:
        """What the Dockerfile adds on top of ``base``, uncompressed."""
        base_size = int(json.loads(podman("image", "inspect", base))[0]["Size"])
        return int(self.inspect["Size"]) - base_size


def podman(*args: str, timeout: float = 120) -> str:
    done = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)
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
    env = {**os.environ, "PODMAN": " ".join(PODMAN)}
    done = subprocess.run(["sh", str(ROOT / "images" / "build-offline.sh"), TAG], capture_output=True, text=True,
                          env=env, timeout=1200)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"image build failed:\n{done.stderr[-4000:]}")
    return Image(TAG)


@pytest.fixture(scope="session")
def image() -> Iterator[Image]:
    reason = unavailable()
    if reason:
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
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
