"""A command's result on stdout: one shape for every command, on success and on failure.

``--output json`` prints one object whose first keys are always ``command``, ``status`` and ``exit_code``,
then the command's own fields; ``text`` prints lines for people. A failure that ends a command (bad input,
a refusal, a server that never came up) is a result too: ``status`` ``failed`` with ``error`` and ``hint``.
Everything printed is redacted. A reader that goes away early (``| head -c0``) is not an error: the rest
of the output is dropped and the command still exits with its own code.
"""

from __future__ import annotations

import sys

from sharedpg_tools import logs

TYPE_CHECKING = False
if TYPE_CHECKING:  # on the probe's path: annotations only
    from collections.abc import Iterable, Mapping, Sequence
    from typing import Any

_state = {"printed": False}
# Every ``status`` a command's result may carry, besides ``failed`` (docs/reference.md is generated from this).
STATUSES: dict[str, tuple[str, ...]] = {
    "wait-for-db": ("ready", "not_ready", "usage_error", "error", "timeout", "interrupted"),
    "ensure-tenant": ("ok", "dry_run"),
    "bootstrap": ("ok", "dry_run", "deploy", "not_needed"),
    "admin-secret": ("created", "kept"),
    "check-pool": ("OK", "WARNING", "CRITICAL", "UNKNOWN"),
    "copy-tenant": ("copied", "mismatch", "dry_run", "already_copied"),
}


def emit(text: str) -> None:
    """Write ``text`` (redacted) to stdout and flush it."""
    _state["printed"] = True
    try:
        sys.stdout.write(logs.redact(text))
        sys.stdout.flush()
    except BrokenPipeError:  # nobody reads any more: send the rest (and the exit-time flush) nowhere
        import os  # only here: the probe's path does without it (launch.py)

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def result(output: str, command: str, status: str, exit_code: int, fields: Mapping[str, Any],
           lines: Iterable[str] = ()) -> None:  # fmt: skip
    """The command's result: the JSON object, or the text lines.

    :raises ValueError: for a status the command does not declare in ``STATUSES`` (a bug).
    """
    if status != "failed" and status not in STATUSES.get(command, ()):
        raise ValueError(f"{command}: undeclared status {status!r}")
    if output == "json":
        emit(logs.dumps({"command": command, "status": status, "exit_code": int(exit_code), **fields}) + "\n")
    else:
        emit("".join(f"{line}\n" for line in lines))


def printed() -> bool:
    """Has this command printed its result already (so a failure must not add a second)?"""
    return _state["printed"]


def failure(argv: Sequence[str], environ: Mapping[str, str], command: str | None, error: str, hint: str | None,
            exit_code: int) -> None:  # fmt: skip
    """The result of a command that ended with an error, unless it printed its own."""
    chosen = requested_output(argv, environ)
    if printed() or command is None or chosen == "prometheus":  # a textfile collector reads only metrics
        return
    fields = {"error": error, "hint": hint}
    line = f"{command}: failed (exit {exit_code}): {error}"
    result(chosen, command, "failed", exit_code, fields, [line])


def requested_output(argv: Sequence[str], environ: Mapping[str, str]) -> str:
    """``--output`` as given, even when parsing failed (the flag, else SHAREDPG_OUTPUT, else text)."""
    return given(argv, environ, "--output", ("text", "json", "prometheus"), "text")


def given(argv: Sequence[str], environ: Mapping[str, str], flag: str, choices: Sequence[str], default: str) -> str:
    """A flag's value as typed (else its SHAREDPG_ variable), read before (or without) the parser: the last
    occurrence, if it is one of ``choices``, else ``default``."""
    chosen = environ.get("SHAREDPG_" + flag.lstrip("-").replace("-", "_").upper(), default)
    for index, arg in enumerate(argv):
        if arg == flag and index + 1 < len(argv):
            chosen = argv[index + 1]
        elif arg.startswith(flag + "="):
            chosen = arg.partition("=")[2]
    return chosen if chosen in choices else default
