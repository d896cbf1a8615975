"""An app's SQLite file, opened so that it is only ever read and seen as one consistent snapshot.

The file is opened read-only (``mode=ro``) and read inside one read transaction, so every table is seen as
of one moment, whatever a still-running app writes meanwhile, and the committed contents of a WAL file are
included. When a read-only connection cannot read it — the app died mid-transaction and left a hot
rollback journal, or a WAL file whose shared-memory index a read-only connection may not create — the file
and its journal or WAL are copied into a private temporary directory and that copy is opened instead:
SQLite then recovers the copy exactly as the app's next start would, and the original stays untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from sharedpg_tools.errors import ConfigError

_SIDECARS = ("-wal", "-journal")  # what SQLite needs beside the file to see what was committed


@contextlib.contextmanager
def snapshot(path: str) -> Iterator[sqlite3.Connection]:
    """A connection to ``path`` in an open read transaction: one consistent view, nothing written.

    :raises ConfigError: when ``path`` is not an SQLite database that can be read.
    """
    with tempfile.TemporaryDirectory(prefix="sharedpg-sqlite-") as scratch:
        conn = _open(path, Path(scratch))
        try:
            yield conn
        finally:
            conn.close()


def _open(path: str, scratch: Path) -> sqlite3.Connection:
    """The file read-only, else (it needs recovering) a private copy of it; a read transaction begun."""
    try:
        conn = _read_only(path)
        try:
            _begin(conn)
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn
    except sqlite3.OperationalError as exc:
        if not _needs_recovery(exc):
            raise _not_sqlite(path, exc) from None
    except sqlite3.DatabaseError as exc:
        raise _not_sqlite(path, exc) from None
    copy = scratch / "app.db"
    shutil.copyfile(path, copy)
    for suffix in _SIDECARS:
        if os.path.exists(path + suffix):
            shutil.copyfile(path + suffix, str(copy) + suffix)
    conn = sqlite3.connect(copy, isolation_level=None)
    try:
        _begin(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise _not_sqlite(path, exc) from None
    return conn


def _read_only(path: str) -> sqlite3.Connection:
    if not os.path.isfile(path):
        raise sqlite3.DatabaseError("no such file")
    uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro"
    return sqlite3.connect(uri, uri=True, isolation_level=None)


def _begin(conn: sqlite3.Connection) -> None:
    """Start the read transaction and take its snapshot now (a deferred BEGIN takes it at the first read)."""
    conn.execute("BEGIN")
    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()


def _needs_recovery(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "readonly" in text or "read-only" in text or "unable to open" in text


def _not_sqlite(path: str, exc: Exception) -> ConfigError:
    return ConfigError(f"--from-sqlite {path!r} is not an SQLite database that can be read ({exc}): "
                       "give the app's database file, e.g. grafana.db or dex.db")  # fmt: skip


def tables(conn: sqlite3.Connection) -> list[str]:
    """The file's own tables (not SQLite's ``sqlite_*`` bookkeeping), by name."""
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' "
                        "ESCAPE '\\' ORDER BY name").fetchall()  # fmt: skip
    return [str(name) for (name,) in rows]


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def count(conn: sqlite3.Connection, table: str) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {quote(table)}").fetchone()[0])
