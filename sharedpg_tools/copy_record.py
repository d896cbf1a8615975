"""Where copy-tenant records a finished copy, so a re-run of the same cutover does nothing (``--copy-id``).

The record lives in a table of ``sharedpg_lock``, the database the provisioners' lock lives in: PUBLIC
cannot connect there (``tenant.ensure_lock_database`` checks it on every run), so a tenant can neither write
a record that makes the copy skip its data nor delete one to make a finished copy run again. Only the
admin reads and writes it. A copy is recorded after its verification passed; a run that failed records
nothing, and its retry copies again (into a tenant the failed run left as it found it).

With the record goes the tenant's fingerprint right after the copy (every table's exact row count, every
sequence's last value). A run under a *new* id (a cutover redone after going back to the old server)
replaces a copy only while the tenant still matches it, so a copy the app has since written to is never
replaced; a tenant that changed is refused, naming what changed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from sharedpg_tools import copy, db, tenant
from sharedpg_tools.errors import PermanentError
from sharedpg_tools.settings import Target

SCHEMA, TABLE = "sharedpg", "copies"
_CREATE = f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.{TABLE} (
    tenant text PRIMARY KEY, copy_id text NOT NULL, source text NOT NULL, tables integer NOT NULL,
    rows bigint NOT NULL, fingerprint jsonb NOT NULL, copied_at timestamptz NOT NULL DEFAULT now())"""
# A superuser that made the table lets the CREATEROLE admins record there too (they may connect and create
# in sharedpg_lock: tenant.ensure_lock_database), as a managed admin's run may follow.
_SHARE = f"""DO $$ DECLARE r text; BEGIN
  FOR r IN SELECT quote_ident(rolname) FROM pg_roles WHERE rolcreaterole AND NOT rolsuper LOOP
    EXECUTE 'GRANT USAGE ON SCHEMA {SCHEMA} TO ' || r;
    EXECUTE 'GRANT SELECT, INSERT, UPDATE ON {SCHEMA}.{TABLE} TO ' || r;
  END LOOP; END $$"""


@dataclass(frozen=True)
class Copied:
    copy_id: str
    source: str
    tables: int
    rows: int
    fingerprint: dict[str, dict[str, int | None]]
    copied_at: str


@contextmanager
def _open(target: Target, maintenance_db: str) -> Iterator[psycopg.Connection[Any]]:
    with db.admin(target, maintenance_db) as admin:
        tenant.ensure_lock_database(admin)
    with db.admin(target, tenant.LOCK_DATABASE) as conn:
        try:
            if conn.execute("SELECT to_regclass(%s)", [f"{SCHEMA}.{TABLE}"]).fetchone() == (None,):
                # (IF NOT EXISTS alone would still need CREATE on a schema another admin made)
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
                conn.execute(_CREATE)
            if db.is_superuser(conn):
                conn.execute(_SHARE)
            yield conn
        except psycopg.errors.InsufficientPrivilege as exc:
            raise PermanentError(
                f"the admin may not record copies in database {tenant.LOCK_DATABASE} ({exc.diag.message_primary})",
                "run copy-tenant --copy-id once as a superuser (it shares the record with the CREATEROLE admins), "
                "or copy without --copy-id",
            ) from None


def find(target: Target, maintenance_db: str, name: str) -> Copied | None:
    """The copy recorded for tenant ``name``, if any."""
    with _open(target, maintenance_db) as conn:
        row = conn.execute(f"SELECT copy_id, source, tables, rows, fingerprint, copied_at::text FROM "
                           f"{SCHEMA}.{TABLE} WHERE tenant = %s", [name]).fetchone()  # fmt: skip
    return Copied(*row) if row else None


def save(target: Target, maintenance_db: str, name: str, copied: Copied) -> None:
    with _open(target, maintenance_db) as conn:
        conn.execute(
            f"INSERT INTO {SCHEMA}.{TABLE} (tenant, copy_id, source, tables, rows, fingerprint) VALUES "
            "(%s, %s, %s, %s, %s, %s) ON CONFLICT (tenant) DO UPDATE SET copy_id = excluded.copy_id, "
            "source = excluded.source, tables = excluded.tables, rows = excluded.rows, "
            "fingerprint = excluded.fingerprint, copied_at = now()",
            [name, copied.copy_id, copied.source, copied.tables, copied.rows, Jsonb(copied.fingerprint)],
        )


def fingerprint(tdb: psycopg.Connection[Any]) -> dict[str, dict[str, int | None]]:
    """What the tenant holds, as the tenant sees it: exact row counts and sequences' last values."""
    return {"rows": dict(copy.row_counts(tdb, copy.user_tables(tdb))), "sequences": copy.sequences(tdb)}


def check_unchanged(tdb: psycopg.Connection[Any], recorded: Copied, database: str) -> None:
    """Nothing, when the tenant still holds exactly the recorded copy.

    :raises PermanentError: naming what changed: the app has written there, and a new copy would lose it.
    """
    now, then = fingerprint(tdb), recorded.fingerprint
    changed = [f"{k}: {then[part].get(k)} -> {now[part].get(k)}" for part in ("rows", "sequences")
               for k in sorted(set(now[part]) | set(then[part])) if now[part].get(k) != then[part].get(k)]  # fmt: skip
    if changed:
        raise PermanentError(
            f"database {database} changed since copy {recorded.copy_id} of {recorded.copied_at} "
            f"({'; '.join(changed[:5])}{' …' if len(changed) > 5 else ''}): the app has written there, and a new "
            "copy would lose it",
            f"keep the tenant as it is (set the cutover's attempt back to {recorded.copy_id}), or, to replace the "
            "app's data with the old server's anyway, empty the tenant's database first",
        )


def clear(tdb: psycopg.Connection[Any]) -> None:
    """Empty the tenant's database of a copy nobody used (``check_unchanged`` first): every schema dropped,
    as the tenant, and an empty ``public`` made again, in one transaction."""
    schemas = [str(r[0]) for r in tdb.execute(
        "SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
        "AND nspname <> 'information_schema'").fetchall()]  # fmt: skip
    with tdb.transaction():
        for schema in schemas:
            tdb.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        tdb.execute("CREATE SCHEMA public")
