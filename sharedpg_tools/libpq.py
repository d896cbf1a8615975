"""A minimal binding to libpq (ctypes' types, made by ``cbinding``), for the probe path of ``wait-for-db``.

Why not psycopg here: ``wait-for-db --once`` runs as a Kubernetes exec probe every few seconds in
pods limited to 100m CPU. Importing psycopg costs over 100 ms of CPU in the image, some fifteen times a
whole ``psql -c 'select 1'``; loading libpq this way costs a few milliseconds. The library is the
libpq that ships inside ``psycopg-binary`` (a dependency anyway), else the system's ``libpq.so.5``.

Only what the probe needs is bound: a non-blocking connect (so an attempt can be bounded and
abandoned), one parameterised query, and conninfo parsing. libpq reads its own environment
(PGHOST, PGSSLMODE, PGPASSFILE, PGSERVICE, ...) exactly as psql does, because it *is* libpq.
"""

from __future__ import annotations

import posix
import select
import sys
import time

from sharedpg_tools.cbinding import CDLL, POINTER, Structure, byref, c_char_p, c_int, c_void_p

TYPE_CHECKING = False
if TYPE_CHECKING:  # collections.abc imports collections: milliseconds the probe does not spend
    from collections.abc import Callable, Mapping, Sequence
    from ctypes import Array

# libpq enums (libpq-fe.h)
_CONNECTION_BAD = 1
_POLLING_FAILED, _POLLING_READING, _POLLING_WRITING, _POLLING_OK = 0, 1, 2, 3
_PQERRORS_VERBOSE = 2
_PGRES_TUPLES_OK = 2
_PGRES_COMMAND_OK = 1
_PG_DIAG_SQLSTATE = ord("C")
_PG_DIAG_MESSAGE_PRIMARY = ord("M")

_c_char_p_p = POINTER(c_char_p)


class _ConninfoOption(Structure):
    _fields_ = (
        ("keyword", c_char_p),
        ("envvar", c_char_p),
        ("compiled", c_char_p),
        ("val", c_char_p),
        ("label", c_char_p),
        ("dispchar", c_char_p),
        ("dispsize", c_int),
    )


def _candidate_paths() -> list[str]:
    """psycopg-binary's bundled libpq first, then the system's.

    Found by looking along sys.path, not with importlib.util (a few ms the probe does not spend), through
    ``posix`` rather than ``os`` (launch.py says why).
    """
    paths = []
    for entry in sys.path:
        libs = f"{entry or '.'}/psycopg_binary.libs"
        try:
            names = posix.listdir(libs)
        except OSError:  # not there, or not a directory
            continue
        paths += [f"{libs}/{name}" for name in sorted(names) if name.startswith("libpq")]
    return [*paths, "libpq.so.5"]


def _load() -> CDLL:
    errors = []
    for path in _candidate_paths():
        try:
            lib = CDLL(path)
        except OSError as exc:
            errors.append(str(exc))
            continue
        _declare(lib)
        return lib
    raise OSError("libpq not found (install psycopg[binary] or libpq5): " + "; ".join(errors))


def _declare(lib: CDLL) -> None:
    vp, cp, i = c_void_p, c_char_p, c_int
    signatures: dict[str, tuple[object, list[object]]] = {
        "PQconnectStartParams": (vp, [_c_char_p_p, _c_char_p_p, i]),
        "PQconnectPoll": (i, [vp]),
        "PQstatus": (i, [vp]),
        "PQsocket": (i, [vp]),
        "PQerrorMessage": (cp, [vp]),
        "PQsetErrorVerbosity": (i, [vp, i]),
        "PQfinish": (None, [vp]),
        "PQparameterStatus": (cp, [vp, cp]),
        "PQserverVersion": (i, [vp]),
        "PQconnectionNeedsPassword": (i, [vp]),
        "PQhost": (cp, [vp]),
        "PQport": (cp, [vp]),
        "PQdb": (cp, [vp]),
        "PQuser": (cp, [vp]),
        "PQsendQueryParams": (i, [vp, cp, i, vp, _c_char_p_p, vp, vp, i]),
        "PQconsumeInput": (i, [vp]),
        "PQisBusy": (i, [vp]),
        "PQgetResult": (vp, [vp]),
        "PQresultStatus": (i, [vp]),
        "PQresultErrorField": (cp, [vp, i]),
        "PQntuples": (i, [vp]),
        "PQnfields": (i, [vp]),
        "PQgetisnull": (i, [vp, i, i]),
        "PQgetvalue": (cp, [vp, i, i]),
        "PQclear": (None, [vp]),
        "PQconninfoParse": (POINTER(_ConninfoOption), [cp, _c_char_p_p]),
        "PQconninfoFree": (None, [POINTER(_ConninfoOption)]),
        "PQfreemem": (None, [vp]),
        "PQlibVersion": (i, []),
    }
    for name, (restype, argtypes) in signatures.items():
        func = getattr(lib, name)
        func.restype = restype
        func.argtypes = argtypes


_lib: CDLL | None = None


def lib() -> CDLL:
    """Load libpq once per process."""
    global _lib
    if _lib is None:
        _lib = _load()
    return _lib


def bound_connect(params: dict[str, str], seconds: float | None, environ: Mapping[str, str]) -> None:
    """Bound each connection attempt (libpq's connect_timeout, whole seconds, at least 2) unless the conninfo
    or PGCONNECT_TIMEOUT (in ``environ``, the process's) already does: a server that accepts TCP and never
    answers must not hang a command."""
    if seconds and "connect_timeout" not in params and "PGCONNECT_TIMEOUT" not in environ:
        params["connect_timeout"] = str(max(2, -int(-seconds // 1)))  # math.ceil, without importing math


def _text(value: bytes | None) -> str:
    return value.decode("utf-8", "replace") if value is not None else ""


def _array(items: Sequence[str | None]) -> Array[c_char_p]:
    return (c_char_p * (len(items) + 1))(*[s.encode() if s is not None else None for s in items], None)


def _may_hold_password(conninfo: str) -> bool:
    """A password keyword, or a URI with ``user:password@``."""
    import re  # off the probe's path: only for a conninfo that failed to parse

    return "password" in conninfo.lower() or bool(re.match(r"^postgres(?:ql)?://[^@/]*:[^@/]*@", conninfo))


def parse_conninfo(conninfo: str) -> dict[str, str]:
    """Parse a conninfo string or URI with libpq's own parser; return the keywords it sets.

    :raises ValueError: with libpq's message when the string is malformed or names an unknown keyword;
        when the string holds a password, the fragments libpq quotes are left out (they may be part of it).
    """
    errmsg = c_char_p()
    options = lib().PQconninfoParse(conninfo.encode(), byref(errmsg))
    if not options:
        message = _text(errmsg.value).strip() or "invalid connection string"
        if errmsg.value is not None:
            lib().PQfreemem(errmsg)
        if _may_hold_password(conninfo):
            import re

            message = re.sub(r'"[^"]*"', '"…"', message)
        raise ValueError(message)
    try:
        parsed = {}
        index = 0
        while options[index].keyword is not None:
            if options[index].val is not None:
                parsed[_text(options[index].keyword)] = _text(options[index].val)
            index += 1
        return parsed
    finally:
        lib().PQconninfoFree(options)


class ServerError:
    """What a failed connect or query left behind: the SQLSTATE when the server sent one."""

    __slots__ = ("message", "needs_password", "sqlstate")

    def __init__(self, message: str, sqlstate: str | None = None, needs_password: bool = False):
        self.message = message
        self.sqlstate = sqlstate
        self.needs_password = needs_password

    def __repr__(self) -> str:
        return f"ServerError({self.message!r}, sqlstate={self.sqlstate!r})"


class ConnectFailed(Exception):
    """A connection attempt that did not reach CONNECTION_OK; ``target`` says where it tried."""

    def __init__(self, error: ServerError, target: dict[str, str]):
        super().__init__(error.message)
        self.error = error
        self.target = target


class QueryFailed(Exception):
    """A query the server answered with an error."""

    def __init__(self, error: ServerError):
        super().__init__(error.message)
        self.error = error


class Cancelled(Exception):
    """The attempt ran past its deadline or was abandoned by the caller."""


def _sqlstate_from_verbose(message: str) -> str | None:
    """In VERBOSE mode libpq writes ``FATAL:  28P01: password ...``; take the code out of it.

    >>> _sqlstate_from_verbose('connection to server at "h" failed: FATAL:  3D000: database "x" does not exist')
    '3D000'
    >>> _sqlstate_from_verbose('could not translate host name "db" to address') is None
    True
    """
    marker = message.find(":  ")
    while marker != -1:
        code = message[marker + 3 : marker + 8]
        if len(code) == 5 and code.isalnum() and code.upper() == code and message[marker + 8 : marker + 9] == ":":
            return code
        marker = message.find(":  ", marker + 1)
    return None


def display_version(server_version: str) -> str:
    """The version as an operator reads it, without the packager's suffix.

    >>> display_version("15.18 (Debian 15.18-0+deb12u1)")
    '15.18'
    """
    return server_version.split(" ")[0]


def _first_line(message: str, sqlstate: str | None = None) -> str:
    """libpq VERBOSE messages add DETAIL/HINT/LOCATION lines and the code; keep what psql would show.

    >>> _first_line('failed: FATAL:  28P01: password authentication failed\\nLOCATION:  auth.c:1', '28P01')
    'failed: FATAL:  password authentication failed'
    """
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    first = lines[0] if lines else "unknown libpq error"
    return first.replace(f":  {sqlstate}: ", ":  ") if sqlstate else first


class Connection:
    """One libpq connection, opened without blocking so it honours a deadline and a cancel check."""

    def __init__(self, params: Mapping[str, str], deadline: float, cancelled: Callable[[], bool]):
        self._deadline = deadline
        self._cancelled = cancelled
        keys = list(params)
        self._pgconn = lib().PQconnectStartParams(_array(keys), _array([params[k] for k in keys]), 1)
        if not self._pgconn:
            raise MemoryError("libpq could not allocate a connection")
        self.target = self.describe()
        try:
            self._connect()
        except BaseException:
            self.close()
            raise

    def _connect(self) -> None:
        pq = lib()
        # Before the server can answer: VERBOSE makes libpq put the SQLSTATE into the message, the
        # only way to get it for a failed connection (libpq keeps no PGresult for it).
        pq.PQsetErrorVerbosity(self._pgconn, _PQERRORS_VERBOSE)
        state = _POLLING_FAILED if pq.PQstatus(self._pgconn) == _CONNECTION_BAD else _POLLING_WRITING
        while state not in (_POLLING_OK, _POLLING_FAILED):
            self._wait_socket(write=state == _POLLING_WRITING)
            state = pq.PQconnectPoll(self._pgconn)
        self.target = self.describe()
        if state == _POLLING_FAILED:
            raise ConnectFailed(self._error(), self.target)

    def _error(self) -> ServerError:
        message = _text(lib().PQerrorMessage(self._pgconn))
        sqlstate = _sqlstate_from_verbose(message)
        return ServerError(
            message=_first_line(message, sqlstate),
            sqlstate=sqlstate,
            needs_password=bool(lib().PQconnectionNeedsPassword(self._pgconn)),
        )

    def _wait_socket(self, write: bool) -> None:
        sock = lib().PQsocket(self._pgconn)
        if sock < 0:
            raise ConnectFailed(self._error(), self.describe())
        while True:
            if self._cancelled():
                raise Cancelled()
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise Cancelled()
            # poll, not select: select() cannot watch a descriptor above 1023, which a busy process has
            poller = select.poll()
            poller.register(sock, select.POLLOUT if write else select.POLLIN)
            if poller.poll(min(remaining, 0.1) * 1000):
                return

    def describe(self) -> dict[str, str]:
        """Where libpq connected (after env and defaults), for logs: never the password."""
        pq = lib()
        return {
            "host": _text(pq.PQhost(self._pgconn)),
            "port": _text(pq.PQport(self._pgconn)),
            "dbname": _text(pq.PQdb(self._pgconn)),
            "user": _text(pq.PQuser(self._pgconn)),
        }

    def server_version(self) -> tuple[int, str]:
        """The server's version number (e.g. 150018) and its display form ("15.18")."""
        pq = lib()
        shown = display_version(_text(pq.PQparameterStatus(self._pgconn, b"server_version")))
        return pq.PQserverVersion(self._pgconn), shown

    def query(self, sql: str, params: Sequence[str] = ()) -> list[list[str | None]]:
        """Run one statement with text parameters; return its rows as text.

        :raises QueryFailed: when the server answers with an error.
        """
        pq = lib()
        values = _array(list(params))
        if not pq.PQsendQueryParams(self._pgconn, sql.encode(), len(params), None, values, None, None, 0):
            raise QueryFailed(self._error())
        rows: list[list[str | None]] = []
        failure: ServerError | None = None
        while True:
            while pq.PQisBusy(self._pgconn):
                self._wait_socket(write=False)
                if not pq.PQconsumeInput(self._pgconn):
                    raise QueryFailed(self._error())
            result = pq.PQgetResult(self._pgconn)
            if not result:
                break
            try:
                status = pq.PQresultStatus(result)
                if status == _PGRES_TUPLES_OK and not rows:
                    rows = _rows(result)
                elif status not in (_PGRES_TUPLES_OK, _PGRES_COMMAND_OK) and failure is None:
                    failure = ServerError(
                        message=_text(pq.PQresultErrorField(result, _PG_DIAG_MESSAGE_PRIMARY))
                        or _first_line(_text(pq.PQerrorMessage(self._pgconn))),
                        sqlstate=_text(pq.PQresultErrorField(result, _PG_DIAG_SQLSTATE)) or None,
                    )
            finally:
                pq.PQclear(result)
        if failure is not None:
            raise QueryFailed(failure)
        return rows

    def close(self) -> None:
        if self._pgconn:
            lib().PQfinish(self._pgconn)
            self._pgconn = None


def _rows(result: int) -> list[list[str | None]]:
    pq = lib()
    ncols = pq.PQnfields(result)
    return [
        [None if pq.PQgetisnull(result, r, c) else _text(pq.PQgetvalue(result, r, c)) for c in range(ncols)]
        for r in range(pq.PQntuples(result))
    ]
