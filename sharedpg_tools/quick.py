"""``wait-for-db --once`` as exec probes run it, paying for little more than the interpreter and libpq.

An exec probe runs every few seconds for the life of every pod, so this is sharedpg's hot path. The full
CLI imports argparse, json, re, enum and typing before it does anything: several times the CPU of the
attempt itself. This path understands the probe's usual command line — ``--once`` with ``--dsn``,
``--password-file``, ``--attempt-timeout``, ``--require reachable|login``, ``--fail-fast``, ``--log-format``,
``--log-level`` and ``--output text`` (flags or their variables) — and makes the very same attempt, through
the same modules, with the same log line, result line and exit code (a test runs both paths side by side).
Anything else, and any input it would have to refuse, returns ``None``: the full CLI then runs and says
what is wrong, exactly as it always has.
"""

from __future__ import annotations

from sharedpg_tools import libpq, logs, probe, readiness, secretfile

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

_VALUED = {"--dsn": "SHAREDPG_DSN", "--password-file": "PGPASSWORD_FILE",
           "--attempt-timeout": "SHAREDPG_ATTEMPT_TIMEOUT", "--require": "SHAREDPG_REQUIRE",
           "--log-format": "SHAREDPG_LOG_FORMAT", "--log-level": "SHAREDPG_LOG_LEVEL",
           "--output": "SHAREDPG_OUTPUT"}  # fmt: skip
_ALLOWED_ENV = set(_VALUED.values())
_DEADLINE_S = 300.0  # --timeout's default: an attempt is bounded by the smaller of the two, as the Waiter does


def main(argv: Sequence[str], environ: Mapping[str, str]) -> int | None:
    """The exit code, or None when this path does not handle the command line (the full CLI must)."""
    planned = plan(argv, environ)
    return None if planned is None else _attempt(*planned)


def plan(argv: Sequence[str], environ: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]] | None:
    """The options and libpq parameters of a command line this path handles, else None; nothing is run."""
    options = _options(argv, environ)
    params = None if options is None else _params(options, environ)
    return None if options is None or params is None else (options, params)


def _options(argv: Sequence[str], environ: Mapping[str, str]) -> dict[str, str] | None:
    if argv[:1] != ["wait-for-db"] or "--once" not in argv:
        return None
    if any(k.startswith("SHAREDPG_") and k not in _ALLOWED_ENV for k in environ):
        return None  # a variable for a flag this path does not know: the full CLI reads (or refuses) it
    options = {flag: environ[name] for flag, name in _VALUED.items() if name in environ}
    args = list(argv[1:])
    while args:
        arg = args.pop(0)
        flag, eq, value = arg.partition("=")
        if arg in ("--once", "--fail-fast"):
            options[arg] = "1"
        elif flag in _VALUED and eq:
            options[flag] = value
        elif arg in _VALUED and args:
            options[arg] = args.pop(0)
        else:
            return None
    if options.get("--require", "login") not in ("reachable", "login") or options.get("--output", "text") != "text":
        return None
    if options.get("--log-format", "auto") not in logs.FORMATS or options.get("--log-level", "info") not in logs.LEVELS:
        return None
    try:
        seconds = float(options.get("--attempt-timeout", "5"))
    except ValueError:
        return None
    if not 0 < seconds < float("inf"):
        return None
    return options


def _params(options: dict[str, str], environ: Mapping[str, str]) -> dict[str, str] | None:
    """libpq's parameters as ``Target.params`` makes them, or None where the full CLI would refuse."""
    logs.register_secret(environ.get("PGPASSWORD"))
    params: dict[str, str] = {}
    if options.get("--dsn"):
        try:
            params = libpq.parse_conninfo(options["--dsn"])
        except ValueError:
            return None
        if "password" in params:
            return None  # refused in the flag, allowed in SHAREDPG_DSN: the full CLI tells which
    params.setdefault("fallback_application_name", f"sharedpg-{readiness.NAME}")
    libpq.bound_connect(params, float(options.get("--attempt-timeout", "5")), environ)
    if options.get("--password-file"):
        try:
            password = secretfile.read(options["--password-file"])
        except secretfile.Unreadable:
            return None  # the full CLI says which rule the file breaks
        logs.register_secret(password)
        params["password"] = password
    return params


def _attempt(options: dict[str, str], params: dict[str, str]) -> int:
    """One attempt, reported as ``Waiter.once`` and the full command report it."""
    import time

    logs.configure(options.get("--log-format", "auto"), options.get("--log-level", "info"))
    log = logs.get_logger(command=readiness.NAME)
    level = options.get("--require", "login")
    started = time.monotonic()
    timeout = min(float(options.get("--attempt-timeout", "5")), _DEADLINE_S)
    _stop_on_signals()
    try:
        ready = probe.attempt_params(params, probe.Requirement(level), timeout)
    except _Stopped as stopped:  # as the CLI ends on SIGTERM/SIGINT: 128 + N, said once
        code, name = 128 + stopped.signum, "SIGTERM" if stopped.signum == 15 else "SIGINT"
        readiness.report("text", code, 1, time.monotonic() - started, f"interrupted by {name}")
        log.warning("interrupted", error=f"interrupted by {name}", exit_code=code,
                    hint="a re-run finishes what this run did not")  # fmt: skip
        return code
    except probe.AttemptFailed as exc:
        failure = exc.failure
        elapsed = time.monotonic() - started
        if failure.kind == "config":  # as escalate() and the CLI report a ConfigError
            message = f"{failure.message}: {failure.hint}"
            readiness.report("text", 2, 1, elapsed, message)
            log.error("usage error", error=message, exit_code=2, hint=f"see 'sharedpg {readiness.NAME} --help'")
            return 2
        permanent = failure.kind == "permanent" or (failure.kind == "auth" and "--fail-fast" in options)
        code = 3 if permanent else 1
        readiness.report("text", code, 1, elapsed, failure.message, failure=failure,
                         target=None if permanent else exc.target)  # fmt: skip
        log.error("gave up", error=failure.message, exit_code=code, hint=failure.hint)
        return code
    elapsed = time.monotonic() - started
    readiness.log_ready(log, ready, level, 1, elapsed)
    readiness.report("text", 0, 1, elapsed, "ready", target=ready.target, version=ready.version)
    return 0


class _Stopped(BaseException):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _stop_on_signals() -> None:
    """SIGTERM and SIGINT end the attempt as in the CLI. Through ``_signal``, the C module under ``signal``:
    ``signal`` itself builds enums at import, milliseconds of the probe's budget."""
    import _signal  # type: ignore[import-not-found]  # (no stubs: the same functions as signal.signal)

    def stop(signum: int, _frame: object) -> None:
        raise _Stopped(signum)

    _signal.signal(_signal.SIGTERM, stop)
    _signal.signal(_signal.SIGINT, stop)
