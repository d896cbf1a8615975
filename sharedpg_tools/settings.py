"""Options every command shares: the target server, the password source, logs and output.

Precedence is flag > ``SHAREDPG_*`` environment > default. libpq's own variables (PGHOST, PGPORT,
PGUSER, PGDATABASE, PGPASSWORD, PGPASSFILE, PGSSLMODE, PGSERVICE, ...) are left to libpq, which reads
them exactly as psql does. A password is never taken from a flag value: flags show in ``ps`` and in
pod specs.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

from sharedpg_tools import libpq, logs, pinning, secretfile
from sharedpg_tools.errors import ConfigError

ENV_PREFIX = "SHAREDPG_"
LOCK_WAIT_S = pinning.LOCK_TIMEOUT_S  # how long an admin's statement waits for a lock another holds


def env_name(flag: str) -> str:
    """``--max-interval`` -> ``SHAREDPG_MAX_INTERVAL``."""
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


class EnvDefaults:
    """Adds flags whose default comes from the environment, with help that says so."""

    def __init__(self, parser: argparse.ArgumentParser, environ: Mapping[str, str]):
        self.parser = parser
        self.environ = environ

    def add(self, flag: str, *, default: object = None, env: str | None = None, shown: str | None = None,
            **kwargs: object) -> None:  # fmt: skip
        """Add ``flag``; a value from the environment is checked now, naming the variable if it is bad.
        ``shown`` is the default as the help states it, where the code derives it (``--require``).

        :raises ConfigError: when the environment variable holds an invalid value.
        """
        name = env or env_name(flag)
        value: object = self.environ.get(name, default)
        if name in self.environ:
            value = _check_env(name, self.environ[name], kwargs)
        shown = shown or ("(none)" if default is None else str(default))
        help_text = str(kwargs.pop("help", ""))
        self.parser.add_argument(
            flag,
            default=value,
            help=f"{help_text} [env: {name}] [default: {shown}]",
            **kwargs,  # type: ignore[arg-type]
        )


def _check_env(name: str, raw: str, kwargs: Mapping[str, object]) -> object:
    """The flag's value from environment variable ``name``, converted as the flag would be.

    :raises ConfigError: one line naming the variable and what it accepts.
    """
    convert = kwargs.get("type")
    try:
        if kwargs.get("action") == "append":
            return [item.strip() for item in raw.split(",") if item.strip()]
        if kwargs.get("action") == "store_true":
            return boolean(raw)
        value = convert(raw) if callable(convert) else raw
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    except ValueError:
        kind = "a whole number" if convert is int else "a number" if convert is float else "valid"
        raise ConfigError(f"{name}={raw!r} is not {kind}: fix or unset it") from None
    choices = kwargs.get("choices")
    if choices is not None and value not in choices:  # type: ignore[operator]
        raise ConfigError(f"{name}={raw!r} is not one of {', '.join(map(str, choices))}: set one of them")  # type: ignore[call-overload]
    return value


class Context:
    """What a command needs besides its parsed arguments: the environment and which flags were typed."""

    def __init__(self, command: str, argv: list[str], environ: Mapping[str, str]):
        self.command = command
        self.argv = argv
        self.environ = environ

    @property
    def app_name(self) -> str:
        """The default application_name, so our sessions are visible in pg_stat_activity."""
        return f"sharedpg-{self.command}"

    def flag_given(self, flag: str) -> bool:
        return any(arg == flag or arg.startswith(flag + "=") for arg in self.argv)


def seconds(text: str) -> float:
    """A duration in seconds, as a flag or environment value.

    >>> seconds("2.5")
    2.5
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds; use e.g. 30 or 0.5") from None
    if value < 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number of seconds >= 0")
    return value


def boolean(text: str | bool) -> bool:
    """true/false/1/0/on/off/yes/no, any case.

    >>> boolean("On"), boolean("0")
    (True, False)
    """
    if isinstance(text, bool):
        return text
    lowered = text.strip().lower()
    if lowered in ("true", "1", "on", "yes"):
        return True
    if lowered in ("false", "0", "off", "no", ""):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean; use true/false, 1/0, on/off or yes/no")


def add_common(
    parser: argparse.ArgumentParser, environ: Mapping[str, str], outputs: tuple[str, ...] = ("text", "json")
) -> None:
    """The target, logging and output options of every command."""
    opts = EnvDefaults(parser, environ)
    target = parser.add_argument_group("target (libpq's PG* variables apply as in psql)")
    target_opts = EnvDefaults(target, environ)  # type: ignore[arg-type]
    target_opts.add(
        "--dsn",
        metavar="CONNINFO",
        help="conninfo string or URI, e.g. 'host=db port=5432 dbname=app user=app'; a password is "
        "only accepted from the environment variable, never in the flag",
    )
    target_opts.add(
        "--password-file",
        env="PGPASSWORD_FILE",
        metavar="PATH",
        help="read the password from this file (a Kubernetes Secret volume); trailing newline stripped, "
        "re-read on every attempt",
    )
    opts.add("--log-format", default="auto", choices=logs.FORMATS, help="auto = console on a TTY, JSON otherwise")
    opts.add("--log-level", default="info", choices=list(logs.LEVELS), help="least severe level logged")
    opts.add("--output", default="text", choices=outputs, help="format of the result on stdout")


def read_password_file(path: str, what: str = "--password-file / PGPASSWORD_FILE") -> str:
    """The password in ``path`` without its trailing newline.

    :raises ConfigError: when the file cannot be read, is not UTF-8, holds a NUL byte (libpq would cut
        the password there) or is empty.
    """
    try:
        password = secretfile.read(path)
    except secretfile.Unreadable as exc:
        raise ConfigError(f"{what} {path!r} {exc}") from None
    logs.register_secret(password)
    return password


class Target:
    """How to reach the server: a conninfo, an optional password file, and libpq's environment."""

    def __init__(self, dsn: str | None, password_file: str | None, app_name: str, connect_timeout: float | None = None,
                 lock_wait: float = LOCK_WAIT_S):  # fmt: skip
        self.dsn = dsn or ""
        self.password_file = password_file
        self.app_name = app_name
        self.connect_timeout = connect_timeout
        self.lock_wait = lock_wait  # every admin statement's lock_timeout (pinning)

    def password_source(self) -> str:
        """Where this target's password comes from, for a hint (never the password)."""
        if self.password_file:
            return f"the password file {self.password_file} (--password-file / PGPASSWORD_FILE)"
        if self.dsn and "password" in libpq.parse_conninfo(self.dsn):
            return "the password in SHAREDPG_DSN"
        if os.environ.get("PGPASSWORD"):
            return "PGPASSWORD"
        if os.environ.get("PGPASSFILE"):
            return f"the password file {os.environ['PGPASSFILE']} (PGPASSFILE)"
        return "no password was given: set PGPASSWORD_FILE to the admin Secret's file"

    def params(self, **overrides: str) -> dict[str, str]:
        """libpq keyword parameters for one connection; the password file is read again each time.

        ``overrides`` replace what the DSN says (another database, a tenant's credentials); what
        neither gives is left to libpq's environment and defaults.
        """
        params = libpq.parse_conninfo(self.dsn) if self.dsn else {}
        params.setdefault("fallback_application_name", self.app_name)
        libpq.bound_connect(params, self.connect_timeout, os.environ)
        if self.password_file:
            params["password"] = read_password_file(self.password_file)
        params.update(overrides)
        return params


def target_from_args(args: argparse.Namespace, ctx: Context) -> Target:
    """Validate the target options before any network I/O.

    :raises ConfigError: a malformed --dsn, a password in the --dsn flag, an unreadable password file.
    """
    dsn = args.dsn
    logs.register_secret(ctx.environ.get("PGPASSWORD") or os.environ.get("PGPASSWORD"))
    if dsn:
        source = "--dsn" if ctx.flag_given("--dsn") else "SHAREDPG_DSN"
        try:
            parsed = libpq.parse_conninfo(dsn)
        except ValueError as exc:
            raise ConfigError(
                f"{source} is not a valid conninfo string or URI ({logs.redact(str(exc))}): "
                "use 'host=H port=P dbname=D user=U' or postgresql://U@H:P/D"
            ) from None
        logs.register_secret(parsed.get("password"))
        if "password" in parsed and source == "--dsn":
            raise ConfigError(
                "--dsn contains a password, which would show in ps and in the pod spec: "
                "remove it and use --password-file, PGPASSWORD_FILE, PGPASSWORD or SHAREDPG_DSN"
            )
    target = Target(dsn, args.password_file, ctx.app_name, getattr(args, "attempt_timeout", None),
                    getattr(args, "lock_wait", LOCK_WAIT_S))  # fmt: skip
    if args.password_file:
        read_password_file(args.password_file)
    return target


def add_lock_wait(opts: EnvDefaults) -> None:
    """``--lock-wait``, for the commands that run DDL as the admin."""
    opts.add("--lock-wait", type=seconds, default=LOCK_WAIT_S, metavar="SECONDS",
             help="how long one statement waits for a lock another session holds (an open transaction)")  # fmt: skip
