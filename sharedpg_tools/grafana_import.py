"""Grafana's SQLite database into its tenant on the shared server, every row as Grafana's own PostgreSQL
schema expects it.

Grafana has no SQLite-to-PostgreSQL path of its own, so the schema is never ours: Grafana of the same
version first creates it on the empty tenant (its migrations run at its first start), and this module only
moves rows into it. The rules, each checked before anything is written:

- **Same version.** Every ``*migration_log`` table (Grafana's, and those of its subsystems) must list the
  same successful migrations in the file and in the tenant; otherwise the run refuses and names both sides
  (how many migrations each ran and the newest of each).
- **Same shape.** Each table of the file exists in the tenant with the same columns, by name.
- **Nothing a user made is overwritten.** A tenant with more than the one organisation and the one admin
  that Grafana seeds, or with a row in any table only users fill (dashboards, folders, data sources, …,
  ``USER_TABLES``), is refused.
- **Grafana not running on the tenant**: no other session may be connected to its database.

Then, in one transaction of the tenant's own login: for every table of the file, what Grafana seeded in
the tenant (its main organisation, its admin, its built-in roles, its bookkeeping) is deleted and the
file's rows are copied in — the file's Grafana seeded the same things and its users changed them, so the
file's version wins; each replaced table is reported with its count, nothing is duplicated and nothing
dropped unsaid. Rows go by column name, never by position, each value converted to the target column's
type (``converter``); every sequence is then set past its column's highest value; every table's row count
is compared with the file's before the transaction commits. Any failure rolls it all back: the tenant is
left as Grafana made it.

Values encrypted with the old Grafana's ``secret_key`` (data-source passwords, envelope data keys, …) are
copied as they are and counted: they decrypt only under the same key, which this cannot check without it.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from sharedpg_tools import copy, sqlite_source
from sharedpg_tools.errors import PermanentError

# Tables only a user fills: a row in any of them means the tenant already holds someone's work.
USER_TABLES = (
    "alert_rule", "alert_rule_version", "annotation", "api_key", "correlation", "dashboard", "dashboard_public",
    "dashboard_snapshot", "dashboard_version", "data_source", "folder", "library_element", "playlist",
    "preferences", "query_history", "short_url", "star", "team", "team_member",
)  # fmt: skip
# What Grafana seeds at its first start in these: one main organisation, one admin user.
SEEDED_ONE = ("org", "user")
# Where the old Grafana's secret_key (or its envelope data keys) encrypted something.
ENCRYPTED_COLUMNS = (
    ("data_source", "secure_json_data"), ("plugin_setting", "secure_json_data"),
    ("alert_notification", "secure_settings"), ("setting", "encrypted_value"), ("secrets", "value"),
    ("user_auth", "o_auth_access_token"), ("user_auth", "o_auth_refresh_token"), ("user_auth", "o_auth_id_token"),
)  # fmt: skip
ENCRYPTED_TABLES = ("data_keys", "secret_data_key", "secret_encrypted_value")
_EMPTY_SECRETS = (None, "", "{}", b"", b"{}")


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # PostgreSQL's type name (pg_type.typname): bool, int8, timestamp, bytea, jsonb, …
    length: int | None  # varchar(n) / char(n)


@dataclass
class Plan:
    """What the checks found: where Grafana's schema is, the tables to copy and the file's counts."""

    schema: str
    migrations: int
    tables: dict[str, list[Column]]
    counts: dict[str, int]
    seeded: dict[str, int]


@dataclass
class Report:
    copied: dict[str, int] = field(default_factory=dict)
    replaced: dict[str, int] = field(default_factory=dict)
    encrypted: dict[str, int] = field(default_factory=dict)
    sequences: int = 0
    duration_s: float = 0.0


def is_grafana(tables: Iterable[str]) -> bool:
    return {"migration_log", "dashboard"} <= set(tables)


def plan(src: sqlite3.Connection, tdb: psycopg.Connection[Any], database: str) -> Plan:
    """Every check, nothing written.

    :raises PermanentError: naming what differs and what to do.
    """
    schema = _grafana_schema(tdb)
    if schema is None:
        raise PermanentError(
            f"database {database} has no Grafana schema (no migration_log table): Grafana has not initialised it",
            "start Grafana of the version that wrote the file on the tenant once (its migrations create the "
            "schema), stop it, then re-run this import",
        )
    target = _target_columns(tdb, schema)
    file_tables = sqlite_source.tables(src)
    logs = [t for t in file_tables if t.endswith("migration_log")]
    migrations = 0
    for log in logs:
        migrations += _same_migrations(src, tdb, schema, log, log in target)
    tables: dict[str, list[Column]] = {}
    problems = []
    for table in (t for t in file_tables if t not in logs):
        if table not in target:
            problems.append(f"table {table} is not in the tenant")
            continue
        have = [str(row[1]) for row in src.execute(f"PRAGMA table_info({sqlite_source.quote(table)})")]
        want = [c.name for c in target[table]]
        if set(have) != set(want):
            extra, absent = sorted(set(have) - set(want)), sorted(set(want) - set(have))
            problems.append(f"table {table}: columns only in the file {extra or '-'}, only in the tenant "
                            f"{absent or '-'}")  # fmt: skip
            continue
        tables[table] = target[table]
    if problems:
        raise PermanentError(f"the file's Grafana schema differs from the tenant's: {'; '.join(problems[:5])}",
                             "both must come from the same Grafana version; start the tenant with the version "
                             "that wrote the file")  # fmt: skip
    seeded = _counts(tdb, schema, tables)
    made = [f"{t} ({n})" for t, n in seeded.items() if n and (t in USER_TABLES or (t in SEEDED_ONE and n > 1))]
    if made:
        raise PermanentError(
            f"database {database} already holds what Grafana's users made: {', '.join(made)}; sharedpg never "
            "overwrites data silently",
            "import into a tenant only Grafana's first start has touched: drop its database, re-create it with "
            "ensure-tenant, start and stop Grafana once, then re-run",
        )
    copy.refuse_if_in_use(tdb, database, "Grafana")
    counts = {t: sqlite_source.count(src, t) for t in tables}
    return Plan(schema, migrations, tables, counts, {t: n for t, n in seeded.items() if n})


def load(src: sqlite3.Connection, tdb: psycopg.Connection[Any], plan: Plan,
         progress: Callable[[str, int], None]) -> Report:  # fmt: skip
    """Copy every table in one transaction (see the module docstring); the report of what was done.

    :raises PermanentError: for a value its column cannot hold, or counts that do not match (rolled back).
    """
    started = time.monotonic()
    report = Report(replaced=dict(plan.seeded))
    with tdb.transaction():
        for table, columns in plan.tables.items():
            if plan.seeded.get(table):
                tdb.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(plan.schema, table)))
            report.copied[table] = _copy_table(src, tdb, plan.schema, table, columns)
            progress(table, report.copied[table])
        report.sequences = _set_sequences(tdb, plan.schema, list(plan.tables))
        now = _counts(tdb, plan.schema, plan.tables)
        wrong = [f"{t}: {plan.counts[t]} rows in the file, {n} in the tenant"
                 for t, n in now.items() if n != plan.counts[t]]  # fmt: skip
        if wrong:
            raise PermanentError(f"verification failed, nothing was kept: {'; '.join(wrong[:5])}")
    report.encrypted = encrypted_values(src, plan.tables)
    report.duration_s = round(time.monotonic() - started, 3)
    return report


def encrypted_values(src: sqlite3.Connection, tables: Iterable[str]) -> dict[str, int]:
    """How many values of the file only the old Grafana's secret_key decrypts, by table (and column)."""
    present = set(tables)
    found = {}
    for table, column in ENCRYPTED_COLUMNS:
        if table in present:
            rows = src.execute(f"SELECT {sqlite_source.quote(column)} FROM {sqlite_source.quote(table)}")
            n = sum(1 for (value,) in rows if value not in _EMPTY_SECRETS)
            if n:
                found[f"{table}.{column}"] = n
    for table in ENCRYPTED_TABLES:
        if table in present and (n := sqlite_source.count(src, table)):
            found[table] = n
    return found


def _grafana_schema(tdb: psycopg.Connection[Any]) -> str | None:
    row = tdb.execute(
        "SELECT n.nspname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relname = 'migration_log' AND c.relkind = 'r' AND pg_catalog.has_table_privilege(c.oid, 'SELECT') "
        "ORDER BY n.nspname = 'public' DESC, n.nspname LIMIT 1"
    ).fetchone()
    return None if row is None else str(row[0])


def _target_columns(tdb: psycopg.Connection[Any], schema: str) -> dict[str, list[Column]]:
    rows = tdb.execute(
        "SELECT c.relname, a.attname, t.typname, CASE WHEN t.typname IN ('varchar', 'bpchar') AND a.atttypmod > 4 "
        "THEN a.atttypmod - 4 END FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace JOIN pg_catalog.pg_type t ON t.oid = a.atttypid "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY c.relname, a.attnum",
        [schema],
    ).fetchall()
    tables: dict[str, list[Column]] = {}
    for table, name, typname, length in rows:
        tables.setdefault(str(table), []).append(Column(str(name), str(typname), length))
    return tables


def _same_migrations(src: sqlite3.Connection, tdb: psycopg.Connection[Any], schema: str, log: str,
                     in_tenant: bool) -> int:  # fmt: skip
    """The number of migrations both sides ran, when they ran the same ones.

    :raises PermanentError: naming both sides' counts and newest migrations.
    """
    quoted = sqlite_source.quote(log)
    theirs = [str(m) for (m,) in src.execute(f"SELECT migration_id FROM {quoted} WHERE success ORDER BY id")]
    ours: list[str] = []
    if in_tenant:
        query = sql.SQL("SELECT migration_id FROM {} WHERE success ORDER BY id").format(sql.Identifier(schema, log))
        ours = [str(m) for (m,) in tdb.execute(query).fetchall()]
    if set(theirs) == set(ours):
        return len(theirs)
    only_file, only_tenant = [m for m in theirs if m not in set(ours)], [m for m in ours if m not in set(theirs)]
    raise PermanentError(
        f"the file and the tenant come from different Grafana versions ({log}): the file's Grafana ran "
        f"{len(theirs)} migrations (newest {_newest(theirs)}), the tenant's {len(ours)} (newest {_newest(ours)}); "
        f"only in the file: {len(only_file)} (e.g. {_newest(only_file)}), only in the tenant: {len(only_tenant)} "
        f"(e.g. {_newest(only_tenant)})",
        "start the tenant with the Grafana version that wrote the file (its image tag), stop it, and re-run; "
        "upgrade Grafana only after the import",
    )


def _counts(tdb: psycopg.Connection[Any], schema: str, tables: Iterable[str]) -> dict[str, int]:
    """Each table's exact row count in the tenant, by table name (copy.row_counts keys them schema.table)."""
    names = list(tables)
    return dict(zip(names, copy.row_counts(tdb, [(schema, t) for t in names]).values(), strict=True))


def _copy_table(src: sqlite3.Connection, tdb: psycopg.Connection[Any], schema: str, table: str,
                columns: list[Column]) -> int:  # fmt: skip
    names = [c.name for c in columns]
    convert = [converter(c) for c in columns]
    select = f"SELECT {', '.join(map(sqlite_source.quote, names))} FROM {sqlite_source.quote(table)}"
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(schema, table),
                                                          sql.SQL(", ").join(map(sql.Identifier, names)))  # fmt: skip
    n = 0
    with tdb.cursor() as cur, cur.copy(statement) as copy:
        for row in src.execute(select):
            try:
                copy.write_row([f(v) for f, v in zip(convert, row, strict=True)])
            except ValueError as exc:
                raise PermanentError(
                    f"{table} row {n + 1} (in the file's order): {_which(columns, convert, row)}: {exc}",
                    "the file holds a value Grafana's PostgreSQL column cannot: fix that row in a copy of the "
                    "file (with Grafana stopped) and re-run",
                ) from None
            n += 1
    return n


def _which(columns: list[Column], convert: list[Callable[[Any], Any]], row: tuple[Any, ...]) -> str:
    for column, f, value in zip(columns, convert, row, strict=True):
        try:
            f(value)
        except ValueError:
            return f"column {column.name} ({column.type})"
    return "a value"


def _set_sequences(tdb: psycopg.Connection[Any], schema: str, tables: list[str]) -> int:
    """Every sequence owned by a copied table's column set so that its next value is past the column's highest."""
    owned = tdb.execute(
        "SELECT s.relname, c.relname, a.attname FROM pg_catalog.pg_depend d "
        "JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
        "JOIN pg_catalog.pg_class c ON c.oid = d.refobjid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.refobjsubid "
        "WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.deptype IN ('a', 'i') "
        "AND n.nspname = %s AND c.relname = ANY(%s)",
        [schema, tables],
    ).fetchall()
    for sequence, table, column in owned:
        tdb.execute(
            sql.SQL("SELECT pg_catalog.setval(%s::pg_catalog.regclass, COALESCE(pg_catalog.max({}), 0) + 1, false) "
                    "FROM {}").format(sql.Identifier(column), sql.Identifier(schema, table)),
            [sql.Identifier(schema, sequence).as_string(tdb)],
        )  # fmt: skip
    return len(owned)


# Converters: a value as SQLite holds it (int, float, str, bytes or None) to what its PostgreSQL column takes.


def converter(column: Column) -> Callable[[Any], Any]:
    """The function that turns the file's value into the column's; it raises ValueError naming the problem."""
    kind = column.type
    if kind == "bool":
        return _boolean
    if kind in ("int2", "int4", "int8"):
        return _integer
    if kind in ("float4", "float8", "numeric"):
        return _number
    if kind in ("timestamp", "timestamptz", "date"):
        return _timestamp(kind)
    if kind == "bytea":
        return _bytes
    if kind in ("json", "jsonb"):
        return _json
    return _text(column.length)


def _boolean(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _BOOLEAN_WORDS:
        return _BOOLEAN_WORDS[value.strip().lower()]
    raise ValueError(f"{_shape(value)} is not a boolean (Grafana stores 0 or 1)")


_BOOLEAN_WORDS = {"0": False, "1": True, "false": False, "true": True, "f": False, "t": True}


def _integer(value: Any) -> Any:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ValueError(f"{_shape(value)} is not an integer")


def _number(value: Any) -> Any:
    if value is None or isinstance(value, int | float):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{_shape(value)} is not a number") from None


def _timestamp(kind: str) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if value is None:
            return None
        moment = _moment(value)
        if kind == "date":
            return moment.date()
        # Aware times are moved to UTC; naive ones are UTC already (Grafana writes UTC).
        moment = moment.astimezone(dt.UTC) if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)
        return moment if kind == "timestamptz" else moment.replace(tzinfo=None)

    return convert


def _moment(value: Any) -> dt.datetime:
    """Text as Grafana's SQLite drivers write times (``2024-05-01 12:34:56``, with fractions, ``T``, ``Z`` or
    an offset), or epoch seconds or milliseconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value / 1000 if abs(value) >= 1e11 else value
        return dt.datetime.fromtimestamp(seconds, dt.UTC)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").replace(".", "", 1).isdigit():
            return _moment(float(text))
        try:
            return dt.datetime.fromisoformat(text.replace(" +", "+").replace(" UTC", "+00:00"))
        except ValueError:
            pass
    raise ValueError(f"{_shape(value)} is not a time Grafana writes")


def _bytes(value: Any) -> Any:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise ValueError(f"{_shape(value)} is not binary data")


def _json(value: Any) -> Any:
    text = _text(None)(value)
    if text is not None:
        try:
            json.loads(text)
        except ValueError:
            raise ValueError(f"{_shape(value)} is not JSON") from None
    return text


def _text(length: int | None) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bytes):
            try:
                value = value.decode()
            except UnicodeDecodeError:
                raise ValueError("binary data that is not UTF-8 text") from None
        elif not isinstance(value, str):
            value = str(value)
        if "\x00" in value:
            raise ValueError("text with a NUL character, which PostgreSQL's text cannot hold")
        if length is not None and len(value) > length:
            raise ValueError(f"text of {len(value)} characters, longer than the column's {length}")
        return value

    return convert


def _shape(value: Any) -> str:
    """A value described for an error without printing it whole (it may be long, or someone's data)."""
    if isinstance(value, str | bytes):
        return f"{type(value).__name__} of length {len(value)} starting {value[:12]!r}"
    return f"{type(value).__name__} {value!r}"


def _newest(ids: list[str]) -> str:
    return repr(ids[-1]) if ids else "none"
