"""Copy an app's data from its old per-app PostgreSQL into its tenant on the shared server.

``pg_dump -Fc`` from the source is streamed into ``pg_restore --no-owner --no-privileges
--single-transaction --exit-on-error`` logged in as the tenant into its database, so every object ends up
owned by the tenant, whatever the dump runs runs as the tenant, and an interrupted copy leaves nothing
behind. The source is only read. Afterwards every table's exact row count, the list of tables and every
sequence's last value are compared, as the tenant.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg

from sharedpg_tools import db, localserver
from sharedpg_tools.errors import PermanentError, SharedpgError

_TABLES_SQL = """
SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND NOT c.relispartition ORDER BY 1, 2
"""
_SEQUENCES_SQL = "SELECT schemaname, sequencename, last_value FROM pg_catalog.pg_sequences ORDER BY 1, 2"
_CHUNK = 1 << 20


class Tools:
    """The pg_dump and pg_restore used, and where they were found."""

    def __init__(self, bindir: Path, major: int):
        self.pg_dump = str(bindir / "pg_dump")
        self.pg_restore = str(bindir / "pg_restore")
        self.major = major
        self.where = str(bindir)


def _candidates() -> list[Path]:
    dirs = [inst.bindir for inst in localserver.installations()]
    on_path = shutil.which("pg_dump")
    if on_path:
        dirs.append(Path(on_path).resolve().parent)
    return [d for d in dict.fromkeys(dirs) if (d / "pg_dump").exists() and (d / "pg_restore").exists()]


def _major(binary: Path) -> int:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True).stdout
    return int(out.split()[-1].split(".")[0])


def find_tools(source_major: int, target_major: int) -> Tools:
    """pg_dump/pg_restore of a major from the source's to the target's, the target's own preferred.

    PostgreSQL's rule: pg_dump reads servers of its major and older, and its output is only guaranteed to
    load into a server of its major or newer (17's pg_restore writes ``SET transaction_timeout``, which 15
    and 16 refuse).

    :raises PermanentError: when none fits, naming what was found and what to install.
    """
    found = [(d, _major(d / "pg_dump")) for d in _candidates()]
    usable = [(d, m) for d, m in found if source_major <= m <= target_major]
    if not usable:
        seen = ", ".join(f"{m} in {d}" for d, m in found) or "none"
        raise PermanentError(
            f"no pg_dump/pg_restore of a major from {source_major} (the source) to {target_major} (the target) "
            f"(found: {seen}): install postgresql-client-{target_major} or put its bin directory on PATH"
        )
    bindir, major = max(usable, key=lambda item: item[1])
    return Tools(bindir, major)


def user_tables(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    return [(str(s), str(t)) for s, t in conn.execute(_TABLES_SQL).fetchall()]


def row_counts(conn: psycopg.Connection[Any], tables: list[tuple[str, str]]) -> dict[str, int]:
    """Exact row counts (count(*)), keyed ``schema.table``."""
    from psycopg import sql

    counts = {}
    for schema, table in tables:
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
        counts[f"{schema}.{table}"] = int(conn.execute(query).fetchone()[0])  # type: ignore[index]
    return counts


def other_sessions(conn: psycopg.Connection[Any]) -> int:
    """How many other clients are connected to ``conn``'s database (any role: pg_stat_activity shows every
    session's database to every role, only the query text is kept from others)."""
    row = conn.execute(
        "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE datname = pg_catalog.current_database() "
        "AND pid <> pg_catalog.pg_backend_pid() AND backend_type = 'client backend'"
    ).fetchone()
    return int(row[0]) if row else 0


def refuse_if_in_use(tdb: psycopg.Connection[Any], database: str, app: str) -> None:
    """Nothing, when no other client is connected to the tenant's database.

    :raises PermanentError: naming how many sessions, so the app is stopped before its data is moved.
    """
    if n := other_sessions(tdb):
        raise PermanentError(f"database {database} has {n} other session(s): {app} is still running on it",
                             f"scale {app} to 0 replicas (or stop it) and re-run")  # fmt: skip


def refuse_if_source_in_use(src: psycopg.Connection[Any], database: str, allowed: bool, until: float = 0.0,
                            waiting: Callable[[int], None] = lambda n: None) -> None:  # fmt: skip
    """Nothing, when no other client is connected to the old database (or ``allowed``): what an app still
    running writes after the dump began would not reach the shared server. Until the monotonic time
    ``until``, other sessions are waited for (the app's pods terminating), ``waiting`` told each second.

    :raises PermanentError: naming how many sessions and the two ways on.
    """
    while not allowed and (n := other_sessions(src)) and time.monotonic() < until:
        waiting(n)
        time.sleep(1.0)
    if not allowed and (n := other_sessions(src)):
        raise PermanentError(f"the old database {database} has {n} other session(s): its app may still be writing, "
                             "and what it writes after the copy begins would be lost",
                             "stop the app (scale it to 0) and re-run, or add --allow-source-sessions to copy "
                             "anyway")  # fmt: skip


def sequences(conn: psycopg.Connection[Any]) -> dict[str, int | None]:
    return {f"{s}.{n}": v for s, n, v in conn.execute(_SEQUENCES_SQL).fetchall()}


def stream(dump: list[str], restore: list[str], dump_env: dict[str, str], restore_env: dict[str, str],
           progress: Callable[[int], None]) -> int:  # fmt: skip
    """Pipe pg_dump into pg_restore through this process (to count bytes); return the bytes copied.

    :raises SharedpgError: with the failing tool's own error, when either exits non-zero.
    """
    dumper = subprocess.Popen(dump, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dump_env)
    restorer = subprocess.Popen(restore, stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=restore_env)
    assert dumper.stdout is not None and restorer.stdin is not None
    copied, reported, restore_quit = 0, time.monotonic(), False
    try:
        try:
            for moved in _relay(dumper.stdout.fileno(), restorer.stdin.fileno()):
                copied += moved
                if time.monotonic() - reported >= 2.0:
                    progress(copied)
                    reported = time.monotonic()
        except BrokenPipeError:  # pg_restore stopped reading: it failed, and its stderr says why
            restore_quit = True
            dumper.kill()
        with contextlib.suppress(BrokenPipeError):
            restorer.stdin.close()
        dump_err = dumper.stderr.read().decode(errors="replace") if dumper.stderr else ""
        restore_err = restorer.stderr.read().decode(errors="replace") if restorer.stderr else ""
        dumper.wait()
        restorer.wait()
    except BaseException:  # SIGTERM included: stop both; the restore's single transaction rolls back
        for proc in (dumper, restorer):
            proc.kill()
            proc.wait()
        raise
    # The first tool to fail is the cause: a pg_dump that failed truncates pg_restore's input, and a
    # pg_restore that quit makes pg_dump's writes fail.
    if dumper.returncode != 0 and not restore_quit:
        raise SharedpgError(f"pg_dump failed ({dumper.returncode}): {_tool_error(dump_err)}",
                            "nothing was committed (single transaction): fix the cause and re-run")  # fmt: skip
    if restorer.returncode != 0:
        raise SharedpgError(f"pg_restore failed ({restorer.returncode}): {_tool_error(restore_err)}",
                            "nothing was committed (single transaction): fix the cause and re-run")  # fmt: skip
    return copied


def _relay(source: int, sink: int) -> Iterator[int]:
    """Move what pg_dump writes into pg_restore, yielding how many bytes each step moved.

    In the kernel (``splice``, pipe to pipe) where the platform has it, through a buffer elsewhere; both pipes
    grown to 1 MiB first, so that neither tool waits on the other for each 64 KiB (a relay that reads a whole
    chunk before writing it made the pair take turns: 0.8x a bare shell pipe on 500 MB)."""
    for fd in (source, sink):
        with contextlib.suppress(OSError, AttributeError):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _CHUNK)  # Linux only: elsewhere the default size stays
    splice = getattr(os, "splice", None)
    while True:
        if splice is not None:
            moved = splice(source, sink, _CHUNK)
        else:
            data = os.read(source, _CHUNK)
            view, moved = memoryview(data), len(data)
            while view:
                view = view[os.write(sink, view) :]
        if not moved:
            return
        yield moved


def _tool_error(text: str) -> str:
    """The line that says what went wrong: the tools print ``pg_restore: error: …`` and then the SQL that
    failed (``Command was: …``), so the first error line, else the last line."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in lines if " error: " in line]
    return (errors or lines or ["no message"])[0 if errors else -1]


def child_env(password: str | None) -> dict[str, str]:
    """pg_restore's environment: ours without the PG* variables that would point it elsewhere (its conninfo
    says where, and whom: the tenant), keeping PGPASSFILE, plus the tenant's password (never on its command
    line)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") or k == "PGPASSFILE"}
    if password:
        env["PGPASSWORD"] = password
    return env


def source_env(params: dict[str, str]) -> dict[str, str]:
    """pg_dump's environment: nothing of the shared server's (no PG* variable), the old server's password if
    ``--from-*`` gave one, and its ``require_auth`` (a variable, which a libpq older than 16 ignores where a
    keyword would fail)."""
    env = db.source_environ()
    if params.get("password"):
        env["PGPASSWORD"] = params["password"]
    env["PGREQUIREAUTH"] = params.get("require_auth", db.SOURCE_REQUIRE_AUTH)
    return env
