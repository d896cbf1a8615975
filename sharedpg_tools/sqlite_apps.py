"""What the apps that kept their state in SQLite hold there, and why copy-tenant does not copy it.

``copy-tenant --from-sqlite FILE`` opens the file read-only, tells from its tables whose it is, and refuses
with the reason for that app (exit 3), so a platform team learns what moving to the shared server costs
it instead of getting a generic error. The facts, with their upstream sources, are in
docs/facts-consumers.md (Dex §6, Policy Reporter §4, Grafana §5) and docs/guide.md ("The SQLite apps").
"""

from __future__ import annotations

import contextlib
import sqlite3

from sharedpg_tools.errors import ConfigError, PermanentError

# Tables each app's own migrations create (Dex: storage/sql/migrate.go @ v2.44.0; Policy Reporter:
# pkg/database/bun.go @ 3.9.0; Grafana: its migration_log and the dashboard table).
_DEX = {"keys", "refresh_token", "auth_request"}
_POLICY_REPORTER = {"policy_report", "policy_report_result"}
_GRAFANA = {"migration_log", "dashboard"}
# Dex tables whose rows come only from its gRPC API: with a static configuration they are empty.
_DEX_API_TABLES = ("client", "password", "connector")


def refuse(path: str) -> PermanentError:
    """The refusal for the SQLite file at ``path``, naming what it holds.

    :raises ConfigError: when the file cannot be opened read-only or is not an SQLite database.
    """
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:  # only read
            tables = {str(n) for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            counts = {t: int(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0])
                      for t in _DEX_API_TABLES if t in tables}  # fmt: skip
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"--from-sqlite {path!r} is not an SQLite database that can be read ({exc}): "
                          "give the app's database file, e.g. grafana.db or dex.db") from None  # fmt: skip
    if tables >= _DEX:
        made = [f"{t} ({n})" for t, n in counts.items() if n]
        lost = (f"; but it holds what only Dex's API makes, which the shared server will not have: {', '.join(made)}"
                " — re-create those through the API" if made else "")  # fmt: skip
        return PermanentError(
            f"--from-sqlite {path}: Dex's storage. It holds runtime state only (signing keys, refresh tokens, "
            f"offline sessions, authorization requests and codes): nothing to copy{lost}",
            "start Dex on its tenant: it makes new signing keys and users log in once more; its static clients, "
            "users and connectors come from its configuration",
        )
    if tables >= _POLICY_REPORTER:
        return PermanentError(
            f"--from-sqlite {path}: Policy Reporter's storage, rebuilt from the cluster's PolicyReport resources "
            "(its tables are dropped and made again whenever its version changes): nothing to copy",
            "start Policy Reporter on its tenant: it fills them again from the PolicyReports",
        )
    if tables >= _GRAFANA:
        return PermanentError(
            f"--from-sqlite {path}: Grafana's database. Copying it needs Grafana's own import, which this release "
            "does not have; with the chart's defaults it lives on an emptyDir and is lost at every restart anyway",
            'see docs/guide.md, "The SQLite apps": keep Grafana on its SQLite until the import exists, or '
            "re-provision its dashboards and data sources as code",
        )
    return PermanentError(
        f"--from-sqlite {path}: not the database of Dex, Policy Reporter or Grafana (tables: "
        f"{', '.join(sorted(tables)[:8]) or 'none'})",
        "give the app's database file",
    )
