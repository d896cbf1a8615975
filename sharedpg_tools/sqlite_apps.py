"""What the apps that kept their state in SQLite hold there, and which of them copy-tenant imports.

``copy-tenant --from-sqlite FILE`` opens the file read-only and tells from its tables whose it is. Grafana's
is imported (``grafana_import``); Dex's and Policy Reporter's are refused with the reason for that app (exit
3), so a platform team learns what moving to the shared server costs it instead of getting a generic error.
The facts, with their upstream sources, are in docs/facts-consumers.md (Dex §6, Policy Reporter §4, Grafana
§5) and docs/guide.md ("The SQLite apps").
"""

from __future__ import annotations

import sqlite3

from sharedpg_tools import grafana_import, sqlite_source
from sharedpg_tools.errors import PermanentError

# Tables each app's own migrations create (Dex: storage/sql/migrate.go @ v2.44.0; Policy Reporter:
# pkg/database/bun.go @ 3.9.0; Grafana: grafana_import.is_grafana).
_DEX = {"keys", "refresh_token", "auth_request"}
_POLICY_REPORTER = {"policy_report", "policy_report_result"}
# Dex tables whose rows come only from its gRPC API: with a static configuration they are empty.
_DEX_API_TABLES = ("client", "password", "connector")


def check_grafana(src: sqlite3.Connection, path: str) -> None:
    """Nothing, when the open file is Grafana's.

    :raises PermanentError: the refusal for any other app's file, naming what it holds.
    """
    tables = set(sqlite_source.tables(src))
    if grafana_import.is_grafana(tables):
        return
    counts = {t: sqlite_source.count(src, t) for t in _DEX_API_TABLES if t in tables}
    if tables >= _DEX:
        made = [f"{t} ({n})" for t, n in counts.items() if n]
        lost = (f"; but it holds what only Dex's API makes, which the shared server will not have: {', '.join(made)}"
                " — re-create those through the API" if made else "")  # fmt: skip
        raise PermanentError(
            f"--from-sqlite {path}: Dex's storage. It holds runtime state only (signing keys, refresh tokens, "
            f"offline sessions, authorization requests and codes): nothing to copy{lost}",
            "start Dex on its tenant: it makes new signing keys and users log in once more; its static clients, "
            "users and connectors come from its configuration",
        )
    if tables >= _POLICY_REPORTER:
        raise PermanentError(
            f"--from-sqlite {path}: Policy Reporter's storage, rebuilt from the cluster's PolicyReport resources "
            "(its tables are dropped and made again whenever its version changes): nothing to copy",
            "start Policy Reporter on its tenant: it fills them again from the PolicyReports",
        )
    raise PermanentError(
        f"--from-sqlite {path}: not the database of Dex, Policy Reporter or Grafana (tables: "
        f"{', '.join(sorted(tables)[:8]) or 'none'})",
        "give the app's database file",
    )
