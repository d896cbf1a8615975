"""Tenant passwords: generated, and kept in files when Vault is not used.

Generated passwords use only ``[A-Za-z0-9_-]``: Policy Reporter and Grafana put the password into a
connection string unescaped, and Dex expands ``$`` in its config (docs/facts-consumers.md §0).
"""

from __future__ import annotations

import os
import secrets
import string
import tempfile
from pathlib import Path

from sharedpg_tools import logs
from sharedpg_tools.errors import ConfigError
from sharedpg_tools.settings import read_password_file

ALPHABET = string.ascii_letters + string.digits + "_-"
LENGTH = 40


def generate() -> str:
    """A new DSN-safe password of 40 characters (about 238 bits).

    >>> p = generate(); len(p) == LENGTH and set(p) <= set(ALPHABET)
    True
    """
    password = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
    logs.register_secret(password)
    return password


def stored(directory: str, tenant: str) -> bool:
    """Is there a password file for ``tenant`` in ``directory``?"""
    return (Path(directory) / tenant).exists()


def in_directory(directory: str, tenant: str, create: bool) -> tuple[str | None, bool]:
    """The password kept in ``directory/tenant``; generated and written create-only (mode 0600) when missing.

    :returns: (password, whether it was generated now); (None, False) when missing and not ``create``.
    :raises ConfigError: when the directory cannot be written.
    """
    path = Path(directory) / tenant
    if path.exists():
        return read_password_file(str(path), "--password-dir file"), False
    if not create:
        return None, False
    password = generate()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Written whole to a temporary file, then linked into place: link() never replaces an existing file,
        # and a reader never sees the name before the password is in it.
        fd, temporary = tempfile.mkstemp(prefix=f".{tenant}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as handle:  # mkstemp: mode 0600
                handle.write(password + "\n")
            os.link(temporary, path)
        finally:
            os.unlink(temporary)
    except FileExistsError:  # another run wrote it first: use theirs
        return read_password_file(str(path), "--password-dir file"), False
    except OSError as exc:
        raise ConfigError(f"--password-dir {directory!r}: cannot write {path} ({exc.strerror})") from None
    return password, True
