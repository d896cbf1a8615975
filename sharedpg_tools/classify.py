"""Classify why an attempt failed, by SQLSTATE where the server sent one, else by libpq's failure kind.

Each class has a stable name (logged as ``error_class`` and listed in docs/reference.md's troubleshooting
table), a hint an operator can act on at 3 a.m., and a policy: retried while waiting, or fatal.
``auth`` classes are retried by default because the bootstrap Job or the ExternalSecret may simply
not be done yet; ``--fail-fast`` turns them into exit 3 at once.
"""

from __future__ import annotations

# name: (kind, hint). kind: "retry" = wait for it; "auth" = retry, or exit 3 with --fail-fast;
# "config" = exit 2 at once; "permanent" = exit 3 at once.
CLASSES: dict[str, tuple[str, str]] = {
    "dns": ("retry", "the host name does not resolve (yet): is the Service created? check PGHOST / --dsn host"),
    "refused": (
        "retry",
        "nothing listens on that host and port (yet): is the server pod running and ready? check PGPORT",
    ),
    "no_socket": ("retry", "the Unix socket does not exist (yet): is the server running locally? check PGHOST"),
    "timeout": (
        "retry",
        "no answer within --attempt-timeout: a NetworkPolicy dropping packets, or an overloaded server",
    ),
    "network": ("retry", "the connection broke before login completed: server restarting, or a proxy in between"),
    "starting": ("retry", "the server is starting up, shutting down or in recovery (57P03): wait for it"),
    "too_many_connections": (
        "retry",
        "max_connections or the role's CONNECTION LIMIT is used up (53300): "
        "a pool-budget problem, run 'sharedpg check-pool'",
    ),
    "database_missing": ("retry", "the database does not exist yet: has the bootstrap Job (ensure-tenant) run?"),
    "auth_failed": (
        "auth",
        "the password was rejected (28P01): is the ExternalSecret synced and the bootstrap Job done? "
        "is it the right Secret?",
    ),
    "not_authorized": (
        "auth",
        "the role does not exist or pg_hba.conf has no entry for this client (28000): "
        "bootstrap not run yet, or wrong user/sslmode",
    ),
    "password_missing": (
        "auth",
        "the server asks for a password and none was given: set --password-file, PGPASSWORD_FILE or PGPASSWORD",
    ),
    "permission_denied": (
        "auth",
        "the role lacks a privilege (42501), e.g. CONNECT on the database: check the tenant's grants",
    ),
    "tls_untrusted": (
        "auth",
        "the server's certificate is not signed by the CA in sslrootcert (PGSSLROOTCERT): give the CA that signed it",
    ),
    "tls_host_mismatch": (
        "auth",
        "the server's certificate does not name the host connected to: connect by a name it holds (PGHOST / "
        "--dsn host), not by an address or another alias",
    ),
    "tls_unavailable": (
        "auth",
        "the server offers no TLS, but sslmode requires it: turn TLS on at the server, or lower sslmode where "
        "the network is trusted",
    ),
    "tls_ca_missing": ("config", "sslrootcert (PGSSLROOTCERT) names no readable file: mount the CA bundle there"),
    "tls": ("auth", "TLS failed: check sslmode, sslrootcert and that the certificate matches the host name"),
    "read_only": ("retry", "the server is in recovery or default_transaction_read_only is on: connected to a standby?"),
    "tables_missing": ("retry", "the required tables do not exist yet: another component's migrations have not run"),
    "query_false": ("retry", "--query returned no row, NULL or a false value"),
    "query_error": ("retry", "--query failed on the server; see the message and SQLSTATE"),
    "query_invalid": ("permanent", "--query is not valid SQL (42601 syntax error): fix the query"),
    "version_out_of_range": ("permanent", "the server's version is outside --server-version: use a supported server"),
    "bad_conninfo": ("config", "a connection parameter is invalid: fix --dsn / SHAREDPG_DSN or the PG* variable"),
    "server_error": ("retry", "the server refused the connection; see the message and SQLSTATE"),
}

_SQLSTATE_CLASSES = {
    "57P03": "starting",
    "53300": "too_many_connections",
    "3D000": "database_missing",
    "28P01": "auth_failed",
    "28000": "not_authorized",
    "42501": "permission_denied",
}

# libpq's client-side messages (it is built without translations in psycopg-binary)
_MESSAGE_CLASSES = (
    ("root certificate file", "tls_ca_missing"),  # before "No such file or directory", which it contains
    ("certificate verify failed", "tls_untrusted"),
    ("does not match host name", "tls_host_mismatch"),
    ("server does not support SSL", "tls_unavailable"),
    ("could not translate host name", "dns"),
    ("Name or service not known", "dns"),
    ("Temporary failure in name resolution", "dns"),
    ("Connection refused", "refused"),
    ("No such file or directory", "no_socket"),
    ("timeout expired", "timeout"),
    ("SSL SYSCALL", "network"),
    ("SSL", "tls"),
    ("certificate", "tls"),
    ("definition of service", "bad_conninfo"),
)


class Failure:
    """One failed attempt, as logged and reported."""

    __slots__ = ("error_class", "message", "sqlstate")

    def __init__(self, error_class: str, message: str, sqlstate: str | None = None):
        self.error_class = error_class
        self.message = message
        self.sqlstate = sqlstate

    @property
    def kind(self) -> str:
        return CLASSES[self.error_class][0]

    @property
    def hint(self) -> str:
        return CLASSES[self.error_class][1]

    def same_as(self, other: Failure | None) -> bool:
        return other is not None and (self.error_class, self.sqlstate) == (other.error_class, other.sqlstate)

    def fields(self) -> dict[str, str | None]:
        return {"error_class": self.error_class, "sqlstate": self.sqlstate, "error": self.message, "hint": self.hint}


def connect_failure(message: str, sqlstate: str | None, needs_password: bool) -> Failure:
    """Classify a failed connection attempt.

    >>> connect_failure('FATAL:  database "x" does not exist', "3D000", False).error_class
    'database_missing'
    >>> connect_failure('connection to server at "h", port 5 failed: Connection refused', None, False).error_class
    'refused'
    >>> connect_failure("fe_sendauth: no password supplied", None, True).error_class
    'password_missing'
    """
    if sqlstate:
        return Failure(_SQLSTATE_CLASSES.get(sqlstate, "server_error"), message, sqlstate)
    if needs_password:
        return Failure("password_missing", message)
    if message.startswith("invalid "):  # libpq's own checks of a value: 'invalid sslmode value: "x"'
        return Failure("bad_conninfo", message)
    for needle, name in _MESSAGE_CLASSES:
        if needle in message:
            return Failure(name, message)
    return Failure("network", message)


def query_failure(message: str, sqlstate: str | None) -> Failure:
    """Classify an error answer to one of the probe's queries.

    >>> query_failure('syntax error at or near "selec"', "42601").kind
    'permanent'
    >>> query_failure('relation "t" does not exist', "42P01").error_class
    'query_error'
    """
    if sqlstate == "42601":
        return Failure("query_invalid", message, sqlstate)
    if sqlstate in _SQLSTATE_CLASSES:
        return Failure(_SQLSTATE_CLASSES[sqlstate], message, sqlstate)
    return Failure("query_error", message, sqlstate)
