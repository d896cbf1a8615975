"""psycopg connections for the commands off the probe path: the only place they are opened.

Three kinds, each with its own rule:

- ``admin``: every session sharedpg opens as the admin, into any database. Its settings are pinned at
  connect (``pinning``): nothing a tenant plants in its database, or anyone in ``public`` of an old
  maintenance database, resolves in it, and every statement's lock wait is bounded.
- ``tenant``: work that is the tenant's own (restoring its data, counting its rows) runs logged in as the
  tenant, so its session user is the tenant and there is nothing to ``RESET ROLE`` back to.
- ``source``: the old server copy-tenant reads sees only the ``--from-*`` credentials: libpq's environment
  (PGPASSWORD, PGPASSFILE, PGSERVICE, PG* of the shared server) is withheld from it, its default password
  file and client certificate are replaced by paths that do not exist, and it may not ask for the password
  in cleartext unless the conninfo allows it (``require_auth``).

psycopg reports a failed connection with a message and no SQLSTATE, so when one fails we make one
lean probe attempt with the same parameters: it gets the SQLSTATE from libpq and the same
classification, hint and policy as ``wait-for-db``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

import psycopg

from sharedpg_tools import pinning, probe
from sharedpg_tools.errors import AdminLoginRejected, ConfigError, PermanentError, SharedpgError
from sharedpg_tools.settings import Target
from sharedpg_tools.waiter import escalate

_CLASSIFY_TIMEOUT_S = 10.0
# What the old server's session is given instead of the home directory's files of the shared server's user.
NO_FILE = "/nonexistent/sharedpg-nothing-here"
# The old server may ask for any method but the cleartext password, unless --from-dsn says otherwise.
SOURCE_REQUIRE_AUTH = "!password"
_SOURCE_DEFAULTS = {"passfile": NO_FILE, "sslcert": NO_FILE, "sslkey": NO_FILE, "require_auth": SOURCE_REQUIRE_AUTH}

Conn = psycopg.Connection[tuple[Any, ...]]


def admin(target: Target, dbname: str, fail_fast: bool = True) -> Conn:
    """An admin's autocommit session into ``dbname`` (CREATE DATABASE cannot run in a transaction block),
    pinned, with ``target.lock_wait`` as every statement's lock_timeout.

    :raises SharedpgError: classified: exit 2 for a bad parameter, 3 for auth/permission/TLS when
        ``fail_fast``, else 1 with the hint of the failure class.
    """
    try:
        return _open(pinning.pin(target.params(dbname=dbname), target.lock_wait), fail_fast)
    except PermanentError as exc:
        failure = getattr(exc, "failure", None)
        if failure is not None and failure.error_class in ADMIN_AUTH:
            raise admin_rejected(failure, target) from None
        raise


# An admin login the server refused: its password, its role or its pg_hba.conf entry.
ADMIN_AUTH = frozenset({"auth_failed", "password_missing", "not_authorized"})


def is_superuser(conn: psycopg.Connection[Any]) -> bool:
    """Is the session's role a superuser (a self-hosted admin), not a managed service's CREATEROLE one?"""
    row = conn.execute("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user").fetchone()
    return row == (True,)


def admin_rejected(failure: Any, target: Target) -> AdminLoginRejected:
    """The error for a refused admin login, naming where its password came from (not a tenant's Secret)."""
    return AdminLoginRejected(
        f"the shared server rejected the admin's login: {failure.message}",
        f"check the admin's credentials: {target.password_source()}, and PGUSER / --dsn user (in the cluster: "
        "the Secret shared-postgresql-admin)",
    )


def tenant(params: Mapping[str, str], own_search_path: bool = False) -> Conn:
    """A session logged in as the tenant itself, for the tenant's own work. Its search_path is pinned to the
    catalog, so what sharedpg reads there (tables, owners, sequences) is the catalog's and not a look-alike,
    unless ``own_search_path``: counting rows runs the tenant's policies, which expect its own."""
    pinned = params if own_search_path else pinning.with_settings(params, {"search_path": "pg_catalog,pg_temp"})
    return _open(dict(pinned), fail_fast=True)


def source_params(params: Mapping[str, str]) -> dict[str, str]:
    """The old server's parameters: what ``--from-*`` gave, with our defaults where they gave nothing
    (``require_auth`` only where this libpq knows it: 16 and newer)."""
    defaults = {k: v for k, v in _SOURCE_DEFAULTS.items() if k != "require_auth" or psycopg.pq.version() >= 160000}
    return {**defaults, **params}


def source_environ(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """An environment for a tool that talks to the old server: ours without any PG* variable."""
    return {k: v for k, v in environ.items() if not k.startswith("PG")}


def source(params: Mapping[str, str]) -> Conn:
    """A session on the old server that copy-tenant reads (see the module docstring)."""
    with _without_libpq_environment():
        return _open(source_params(params), fail_fast=True)


@contextlib.contextmanager
def _without_libpq_environment() -> Iterator[None]:
    """libpq reads PG* variables for every keyword a connection leaves unset, and no keyword turns that off
    for the password: withhold them while the connection is made (commands are single-threaded here)."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("PG")}
    for key in saved:
        del os.environ[key]
    try:
        yield
    finally:
        os.environ.update(saved)


def _open(params: dict[str, str], fail_fast: bool) -> Conn:
    try:
        return psycopg.connect(autocommit=True, **params)  # type: ignore[arg-type]
    except psycopg.OperationalError as exc:
        try:
            probe.attempt_params(
                params, probe.Requirement("login"), float(params.get("connect_timeout", _CLASSIFY_TIMEOUT_S))
            )
        except probe.AttemptFailed as failed:
            raise escalate(failed, fail_fast) from None
        raise SharedpgError(f"could not connect: {str(exc).strip().splitlines()[0]}") from None


def explain(exc: psycopg.Error) -> SharedpgError:
    """A server error met while provisioning, as the operator needs it: message, detail, hint, exit code."""
    diag = exc.diag
    text = diag.message_primary or str(exc).strip()
    for extra in (diag.message_detail, diag.message_hint):
        if extra:
            text += f" ({extra})"
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return PermanentError(f"{text}: the admin lacks a privilege for this step", "a superuser must grant it")
    if isinstance(exc, (psycopg.errors.InvalidParameterValue, psycopg.errors.UndefinedObject)):
        return ConfigError(f"{text}: fix the value given")
    return SharedpgError(text)
