"""Reading a password from a file (a Kubernetes Secret's volume): the one set of rules for every command.

Lean on purpose: the exec probe's path (``quick.py``) reads its password file through it too.
"""

from __future__ import annotations


class Unreadable(Exception):
    """Why the file gives no usable password, and what to do (``"cannot be read (…): mount …"``)."""


def read(path: str) -> str:
    """The password in ``path`` without its trailing newline.

    :raises Unreadable: when the file cannot be read, is not UTF-8, holds a NUL byte (libpq would cut the
        password there) or is empty.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            password = handle.read().rstrip("\r\n")
    except OSError as exc:
        raise Unreadable(f"cannot be read ({exc.strerror}): mount the Secret there or fix the path") from None
    except UnicodeDecodeError:
        raise Unreadable("is not UTF-8 text: write the password as UTF-8") from None
    if "\0" in password:
        raise Unreadable("holds a NUL byte, which would cut the password short: remove it")
    if not password:
        raise Unreadable("is empty: put the password in it")
    return password
