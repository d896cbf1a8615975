"""The settings every session sharedpg opens as the admin is pinned to, at connect.

A tenant owns its database, and on servers created before PostgreSQL 15 (or upgraded from one) PUBLIC may
create objects in ``public`` of the maintenance database. Either lets a tenant decide what an admin's
statement resolves to: ``ALTER DATABASE own SET search_path = evil, pg_catalog`` and a look-alike
``evil.pg_get_userbyid(oid)`` or a better-matching overload of a catalog function run as the admin. So
the admin's sessions do not take the server's, the database's or the role's defaults for anything that
changes name resolution, who runs a statement, how literals are read, or whether an error ends the
session: libpq sends these values in the startup packet, where they win over every ``ALTER DATABASE`` and
``ALTER ROLE … SET`` (PostgreSQL's "client" source ranks above both), and ``RESET`` returns to them.

- ``search_path = pg_catalog, pg_temp``: only the system catalog resolves (pg_temp last: it is searched
  for relations only, and it is the admin's own);
- ``role = none``: ``ALTER DATABASE own SET role = own`` would otherwise run the admin's session as the
  tenant;
- ``row_security = off``: a policy on a table the admin reads is an error, never code that runs;
- ``standard_conforming_strings``, ``client_encoding``, ``DateStyle``, ``IntervalStyle``,
  ``bytea_output``: literals are written and results read as the client expects;
- ``default_transaction_read_only``, ``transaction_read_only``, ``default_transaction_isolation``,
  ``exit_on_error``, ``statement_timeout``, ``idle_in_transaction_session_timeout``,
  ``local_preload_libraries`` (a library that does not load ends the connection), ``temp_tablespaces``:
  the tenant cannot make our statements fail or our session end;
- ``client_min_messages``: the server's "succeeded but did nothing" warnings reach us (a tenant's
  ``error`` would hide them, and a REVOKE that revoked nothing would pass for done);
- ``lock_timeout``: every statement waits a bounded time for a lock a tenant (or anyone) holds.

This module is on the probe path (check-pool, serve-metrics use it): it imports nothing heavy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

LOCK_TIMEOUT_S = 10.0
STATEMENT_TIMEOUT_S = 300.0


def admin_settings(lock_timeout_s: float) -> dict[str, str]:
    """The value of every setting an admin's session is pinned to."""
    return {
        "search_path": "pg_catalog,pg_temp",
        "role": "none",
        "row_security": "off",
        "standard_conforming_strings": "on",
        "client_encoding": "UTF8",
        "DateStyle": "ISO,MDY",
        "IntervalStyle": "postgres",
        "bytea_output": "hex",
        "default_transaction_read_only": "off",
        "default_transaction_isolation": "read\\ committed",
        "exit_on_error": "off",
        "client_min_messages": "notice",
        "local_preload_libraries": "",
        "temp_tablespaces": "",
        "transaction_read_only": "off",
        "statement_timeout": f"{int(STATEMENT_TIMEOUT_S * 1000)}",
        "idle_in_transaction_session_timeout": "0",
        "lock_timeout": f"{max(1, int(lock_timeout_s * 1000))}",
    }


def pin(params: Mapping[str, str], lock_timeout_s: float = LOCK_TIMEOUT_S) -> dict[str, str]:
    """``params`` with every admin setting pinned."""
    return with_settings(params, admin_settings(lock_timeout_s))


def with_settings(params: Mapping[str, str], settings: Mapping[str, str],
                  environ: Mapping[str, str] = os.environ) -> dict[str, str]:  # fmt: skip
    """``params`` with ``settings`` appended to libpq's ``options`` (after the caller's own, from the conninfo
    or PGOPTIONS, so ours win: the last ``-c`` of a name is the one the server keeps)."""
    own = params.get("options", environ.get("PGOPTIONS", ""))
    ours = " ".join(f"-c {key}={value}" for key, value in settings.items())
    return {**params, "options": f"{own} {ours}".strip()}
