"""One readiness attempt against the server: connect, then run the requested checks.

An attempt runs in a worker thread so that it is bounded by ``--attempt-timeout`` even where libpq
blocks (host name resolution), and so that the main thread stays free to act on SIGTERM at once:
waiting on a lock with a timeout is interrupted by signals. The thread comes from ``_thread``, not
``threading``, whose import would cost the probe a few milliseconds for nothing it needs.
"""

from __future__ import annotations

import _thread
import time

from sharedpg_tools import libpq
from sharedpg_tools.classify import Failure, connect_failure, query_failure

TYPE_CHECKING = False
if TYPE_CHECKING:  # the probe path imports none of these (argparse and the rest cost more than a psql)
    from collections.abc import Callable

    from sharedpg_tools.settings import Target
    from sharedpg_tools.versionspec import VersionSpec

LEVELS = ("reachable", "login", "query")
# A worker that is past its own deadline is given this long to notice before it is abandoned.
_ABANDON_GRACE_S = 0.5
_FALSY = ("", "f", "false", "0", "no", "off", "n")


class Requirement:
    """What "ready" means for this run (``--require`` and the extra gates)."""

    def __init__(
        self,
        level: str = "login",
        query: str = "SELECT 1",
        tables: tuple[tuple[str, str], ...] = (),
        version: VersionSpec | None = None,
        writable: bool = False,
    ):
        self.level = level
        self.query = query
        self.tables = tables
        self.version = version
        self.writable = writable


class Ready:
    """A successful attempt: where, and which server (unknown when only ``reachable`` was asked)."""

    def __init__(self, target: dict[str, str], version_num: int | None = None, version: str | None = None):
        self.target = target
        self.version_num = version_num
        self.version = version


def where(target: dict[str, str] | None) -> str | None:
    """``user@host:port/dbname`` for logs and reports (never a password)."""
    if not target:
        return None
    return f"{target.get('user', '')}@{target.get('host', '')}:{target.get('port', '')}/{target.get('dbname', '')}"


class AttemptFailed(Exception):
    def __init__(self, failure: Failure, target: dict[str, str] | None = None):
        super().__init__(failure.message)
        self.failure = failure
        self.target = target or {}


def attempt(target: Target, requirement: Requirement, timeout: float) -> Ready:
    """Run one bounded attempt.

    :raises AttemptFailed: with the classified failure.
    :raises ConfigError: when the password file has become unreadable.
    """
    return attempt_params(target.params(), requirement, timeout)  # a ConfigError surfaces here


def attempt_params(params: dict[str, str], requirement: Requirement, timeout: float) -> Ready:
    """One bounded attempt with explicit libpq parameters.

    :raises AttemptFailed: with the classified failure.
    """
    outcome: dict[str, object] = {}
    abandoned: list[bool] = []
    done = _thread.allocate_lock()
    done.acquire()

    def work() -> None:
        try:
            outcome["ready"] = _check(params, requirement, timeout, lambda: bool(abandoned))
        except BaseException as exc:  # handed to the main thread below
            outcome["error"] = exc
        finally:
            done.release()

    _thread.start_new_thread(work, ())
    if not done.acquire(timeout=timeout + _ABANDON_GRACE_S):
        abandoned.append(True)  # the worker notices, closes its connection and ends
        raise AttemptFailed(_timed_out(timeout))
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["ready"]  # type: ignore[return-value]


def _timed_out(timeout: float) -> Failure:
    return Failure("timeout", f"no answer within {timeout:g} s")


def _check(params: dict[str, str], req: Requirement, timeout: float, cancelled: Callable[[], bool]) -> Ready:
    try:
        conn = libpq.Connection(params, time.monotonic() + timeout, cancelled)
    except libpq.ConnectFailed as exc:
        err = exc.error
        if req.level == "reachable" and (err.needs_password or err.sqlstate not in (None, "57P03")):
            return Ready(exc.target)  # the server answered the protocol: that is all "reachable" asks
        raise AttemptFailed(connect_failure(err.message, err.sqlstate, err.needs_password), exc.target) from None
    except libpq.Cancelled:
        raise AttemptFailed(_timed_out(timeout)) from None
    try:
        version_num, version = conn.server_version()
        _gates(conn, req, version_num, version)
        return Ready(conn.target, version_num, version)
    except libpq.QueryFailed as exc:
        raise AttemptFailed(query_failure(exc.error.message, exc.error.sqlstate), conn.target) from None
    except libpq.Cancelled:
        raise AttemptFailed(_timed_out(timeout), conn.target) from None
    except AttemptFailed as exc:
        exc.target = conn.target
        raise
    finally:
        conn.close()


def _gates(conn: libpq.Connection, req: Requirement, version_num: int, version: str) -> None:
    if req.version is not None and not req.version.allows(version_num):
        raise AttemptFailed(
            Failure(
                "version_out_of_range", f"server is PostgreSQL {version}, outside --server-version {req.version.text!r}"
            )
        )
    if req.writable:
        in_recovery, read_only = conn.query(
            "SELECT pg_catalog.pg_is_in_recovery(), pg_catalog.current_setting('default_transaction_read_only')"
        )[0]
        if in_recovery == "t" or read_only == "on":
            state = "in recovery (a standby)" if in_recovery == "t" else "default_transaction_read_only=on"
            raise AttemptFailed(Failure("read_only", f"server is {state}"))
    if req.tables:
        missing = [
            row[0] for row in conn.query(_missing_tables_sql(len(req.tables)), [p for t in req.tables for p in t])
        ]
        if missing:
            raise AttemptFailed(Failure("tables_missing", "waiting for " + ", ".join(str(m) for m in missing)))
    if req.level == "query":
        rows = conn.query(req.query)
        value = rows[0][0] if rows and rows[0] else None
        if value is None or _falsy(value):
            shown = "no row" if not rows else ("NULL" if value is None else repr(value))
            raise AttemptFailed(Failure("query_false", f"--query returned {shown}"))


def _falsy(value: str) -> bool:
    """A first column is false when it reads as false or as the number zero.

    >>> [_falsy(v) for v in ("t", "f", "0", "0.0", "3", "yes", "")]
    [False, True, True, True, False, False, True]
    """
    text = value.strip().lower()
    if text in _FALSY:
        return True
    try:
        return float(text) == 0
    except ValueError:
        return False


def _missing_tables_sql(count: int) -> str:
    """Which of ``count`` (schema, name) pairs, given as parameters, name no table, view or matview.

    Reads pg_class directly, so it needs no privilege on the tables themselves.
    """
    pairs = ", ".join(f"(${2 * i + 1}::text, ${2 * i + 2}::text)" for i in range(count))
    return (
        f"SELECT t.s || '.' || t.n FROM (VALUES {pairs}) AS t(s, n) WHERE NOT EXISTS ("
        "SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace ns ON ns.oid = c.relnamespace "
        "WHERE ns.nspname = t.s AND c.relname = t.n AND c.relkind IN ('r', 'p', 'v', 'm', 'f'))"
    )
