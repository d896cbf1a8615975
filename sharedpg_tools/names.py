"""Names of tenants, roles and databases: what sharedpg accepts before any SQL is written."""

from __future__ import annotations

import re

from sharedpg_tools.errors import ConfigError

NAME_PATTERN = re.compile(r"[a-z_][a-z0-9_]{0,62}")
RESERVED = frozenset({"postgres", "template0", "template1", "public", "none", "current_user", "current_role",
                      "session_user", "user", "all", "sharedpg_lock"})  # fmt: skip


def check_name(kind: str, name: str, admin: str | None = None) -> None:
    """:raises ConfigError: for a name that is invalid, reserved or the admin's own.

    >>> check_name("tenant", "argo_workflows")
    >>> check_name("tenant", 'x"; drop table y; --')  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sharedpg_tools.errors.ConfigError: tenant name 'x"; drop table y; --' is invalid: use lower-case letters, ...
    """
    if not NAME_PATTERN.fullmatch(name):  # not match: its $ would accept a trailing newline
        raise ConfigError(
            f"{kind} name {name!r} is invalid: use lower-case letters, digits and _, "
            "starting with a letter or _, at most 63 characters"
        )
    if name in RESERVED or name.startswith("pg_"):
        raise ConfigError(f"{kind} name {name!r} is reserved by PostgreSQL: choose another name")
    if admin is not None and name == admin:
        raise ConfigError(f"{kind} name {name!r} is the admin's own role: choose another name")
