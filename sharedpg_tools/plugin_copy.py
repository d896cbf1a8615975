"""Backstage's database-per-plugin layout moved into the schema-per-plugin layout of one tenant database.

Backstage's default (``pluginDivisionMode: database``) gives every backend plugin its own database, named
``<prefix><pluginId>`` (``backend.database.prefix``, default ``backstage_plugin_``); the overlay switches it
to ``pluginDivisionMode: schema``, where every plugin lives in the schema ``<schemaPrefix><pluginId>``
(default no prefix: ``catalog``, ``auth``, ``scaffolder``, ``search``) of the one database. Source:
``packages/backend-defaults/src/entrypoints/database/DatabaseManager.ts`` (the prefix) and
``connectors/postgres.ts`` (``computePgPluginConfig``: the database and schema names), docs/facts-consumers.md.

Each plugin database keeps its objects in ``public``; ``pg_dump`` writes them as ``public.…``, and
``pg_restore`` cannot rename a schema. So, for each plugin, as the tenant in its own database: the tenant's
``public`` is set aside (renamed ``sharedpg_public_held``), a new empty ``public`` is made, the plugin's dump
is restored into it in one transaction, and that schema is renamed to the plugin's while the tenant's
``public`` gets its name back. Defaults, sequences and indexes follow a renamed schema (they refer to
objects, not names). Nothing half-made: a failure puts ``public`` back and drops every plugin schema made
by this run (they did not exist, or were empty, when it began); a run that died between the renames is
repaired by the next one before anything else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from sharedpg_tools import copy
from sharedpg_tools.errors import ConfigError, PermanentError

HELD = "sharedpg_public_held"
DEFAULT_PREFIX = "backstage_plugin_"


@dataclass(frozen=True)
class Plugin:
    id: str
    database: str  # on the old server
    schema: str  # in the tenant's database


def parse(spec: str, prefix: str, schema_prefix: str) -> list[Plugin]:
    """``catalog,auth,search=old_search_db`` as plugins: a database named by Backstage's rule unless given.

    :raises ConfigError: for an empty list, a repeated plugin, or a name PostgreSQL cannot hold.
    """
    plugins = []
    for item in (part.strip() for part in spec.split(",")):
        plugin_id, _, database = item.partition("=")
        plugin = Plugin(plugin_id, database or f"{prefix}{plugin_id}", f"{schema_prefix}{plugin_id}")
        for what, name in (("plugin id", plugin.id), ("database", plugin.database), ("schema", plugin.schema)):
            if not name or len(name.encode()) > 63 or "\x00" in name:
                raise ConfigError(
                    f"--plugins {spec!r}: {what} {name!r} is empty or longer than PostgreSQL's 63 bytes",
                    "list Backstage's plugin ids, e.g. --plugins catalog,auth,scaffolder,search",
                )
        plugins.append(plugin)
    ids = [p.id for p in plugins]
    if len(set(ids)) != len(ids) or len({p.schema for p in plugins}) != len(plugins):
        raise ConfigError(f"--plugins {spec!r} names a plugin twice: list each once")
    return plugins


def repair(tdb: psycopg.Connection[Any]) -> bool:
    """Put the tenant's ``public`` back if a run died between the renames; True if it had to.

    :raises PermanentError: when the new ``public`` holds something (then a person must look).
    """
    if not _schema_exists(tdb, HELD):
        return False
    if _schema_exists(tdb, "public"):
        if _objects(tdb, "public"):
            raise PermanentError(f"the tenant's database has both {HELD} (its own public, set aside by an interrupted "
                                 "run) and a public that is not empty", f"move what public holds, then: DROP SCHEMA "
                                 f"public; ALTER SCHEMA {HELD} RENAME TO public; and re-run")  # fmt: skip
        tdb.execute("DROP SCHEMA public")
    tdb.execute(sql.SQL("ALTER SCHEMA {} RENAME TO public").format(sql.Identifier(HELD)))
    return True


def check_targets(tdb: psycopg.Connection[Any], plugins: list[Plugin], database: str) -> None:
    """Every target schema absent or empty.

    :raises PermanentError: naming the schemas that hold something.
    """
    full = [f"{p.schema} ({n} objects)" for p in plugins if (n := len(_objects(tdb, p.schema)))]
    if full:
        raise PermanentError(
            f"in database {database}, the plugins' schemas already hold objects: {', '.join(full)}; sharedpg never "
            "overwrites data silently",
            "Backstage has already started on the tenant in schema mode: drop those schemas (DROP SCHEMA … "
            "CASCADE, as the tenant) to copy over them, or leave out those plugins",
        )


def check_source(src: psycopg.Connection[Any], plugin: Plugin) -> None:
    """The plugin's database keeps everything in ``public``, as Backstage makes it.

    :raises PermanentError: naming the other schemas.
    """
    others = src.execute(
        "SELECT DISTINCT n.nspname FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid "
        "WHERE n.nspname NOT IN ('public', 'pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%' "
        "ORDER BY 1"
    ).fetchall()
    if others:
        names = ", ".join(str(n) for (n,) in others)
        raise PermanentError(f"plugin database {plugin.database} has objects outside public (in {names}): not the "
                             "layout Backstage's database mode makes", "copy that database with copy-tenant "
                             "--from-dsn alone, or leave it out of --plugins")  # fmt: skip


def copy_into_schema(tdb: psycopg.Connection[Any], plugin: Plugin, restore: Callable[[], int]) -> int:
    """Restore one plugin (``restore`` runs pg_dump | pg_restore into ``public``) and rename it to its schema;
    the bytes copied. On failure the tenant's ``public`` is back and nothing of the plugin remains."""
    existed = _schema_exists(tdb, plugin.schema)
    with tdb.transaction():
        tdb.execute(sql.SQL("ALTER SCHEMA public RENAME TO {}").format(sql.Identifier(HELD)))
        tdb.execute("CREATE SCHEMA public")
    try:
        copied = restore()
    except BaseException:
        with tdb.transaction():
            tdb.execute("DROP SCHEMA public CASCADE")
            tdb.execute(sql.SQL("ALTER SCHEMA {} RENAME TO public").format(sql.Identifier(HELD)))
        raise
    with tdb.transaction():
        if existed:
            tdb.execute(sql.SQL("DROP SCHEMA {}").format(sql.Identifier(plugin.schema)))  # empty: checked
        tdb.execute(sql.SQL("ALTER SCHEMA public RENAME TO {}").format(sql.Identifier(plugin.schema)))
        tdb.execute(sql.SQL("ALTER SCHEMA {} RENAME TO public").format(sql.Identifier(HELD)))
    return copied


def drop(tdb: psycopg.Connection[Any], plugins: list[Plugin]) -> None:
    """Undo the plugins copied so far (their schemas were absent or empty before the run)."""
    with tdb.transaction():
        for plugin in plugins:
            tdb.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(plugin.schema)))


def verify(src: psycopg.Connection[Any], tdb: psycopg.Connection[Any], own: psycopg.Connection[Any],
           plugin: Plugin) -> tuple[int, int, list[str]]:  # fmt: skip
    """(tables, rows, problems): the plugin's tables, exact row counts and sequences, source ``public``
    against target schema (the catalog read in ``tdb``, rows counted in ``own``, the tenant's settings)."""
    tables = copy.user_tables(src)
    counts = copy.row_counts(src, tables)
    moved = [(plugin.schema, t) for _, t in tables]
    present = {".".join(t) for t in copy.user_tables(tdb)}
    problems = [f"{plugin.schema}.{t} is missing on the target" for s, t in moved if f"{s}.{t}" not in present]
    target = copy.row_counts(own, [t for t in moved if ".".join(t) in present])
    problems += [f"{plugin.schema}.{t}: {counts[f'public.{t}']} rows in {plugin.database}, {n} in the target"
                 for (_, t), n in zip(moved, [target.get(f"{s}.{t}") for s, t in moved], strict=True)
                 if n is not None and n != counts[f"public.{t}"]]  # fmt: skip
    src_seq = {k.split(".", 1)[1]: v for k, v in copy.sequences(src).items() if k.startswith("public.")}
    tgt_seq = {k.split(".", 1)[1]: v for k, v in copy.sequences(tdb).items() if k.startswith(f"{plugin.schema}.")}
    problems += [f"sequence {plugin.schema}.{s}: last value {v} in {plugin.database}, {tgt_seq.get(s)} in the target"
                 for s, v in src_seq.items() if tgt_seq.get(s) != v]  # fmt: skip
    return len(tables), sum(counts.values()), problems


def _schema_exists(conn: psycopg.Connection[Any], schema: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", [schema]).fetchone() is not None


def _objects(conn: psycopg.Connection[Any], schema: str) -> list[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s UNION ALL SELECT p.proname FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n "
        "ON n.oid = p.pronamespace WHERE n.nspname = %s UNION ALL SELECT t.typname FROM pg_catalog.pg_type t "
        "JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = %s AND t.typtype IN ('d', 'e')",
        [schema, schema, schema],
    ).fetchall()
    return [str(r[0]) for r in rows]
