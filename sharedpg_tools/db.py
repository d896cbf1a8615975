"""psycopg connections for the commands off the probe path (ensure-tenant, and those built on it).

psycopg reports a failed connection with a message and no SQLSTATE, so when one fails we make one
lean probe attempt with the same parameters: it gets the SQLSTATE from libpq and the same
classification, hint and policy as ``wait-for-db``.
"""

from __future__ import annotations

import psycopg

from sharedpg_tools import probe
from sharedpg_tools.errors import ConfigError, PermanentError, SharedpgError
from sharedpg_tools.waiter import escalate

_CLASSIFY_TIMEOUT_S = 10.0


def connect(params: dict[str, str], fail_fast: bool = True) -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection (CREATE DATABASE cannot run in a transaction block).

    :raises SharedpgError: classified: exit 2 for a bad parameter, 3 for auth/permission/TLS when
        ``fail_fast``, else 1 with the hint of the failure class.
    """
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
