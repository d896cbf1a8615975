"""The ``sharedpg`` entry point: builds the CLI from the command modules and maps errors to exit codes.

This module only builds the CLI; each command lives in ``sharedpg_tools/commands/<name>.py`` and
exposes ``NAME``, ``SUMMARY``, ``USES_STRUCTLOG``, ``add_arguments(parser, environ)`` and
``run(args, ctx) -> int``. Commands are imported only when chosen, so a probe pays for nothing else.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from types import ModuleType

from sharedpg_tools import __version__, interrupts, logs, output
from sharedpg_tools.errors import ConfigError, Interrupted, SharedpgError
from sharedpg_tools.exitcodes import EPILOG, ExitCode
from sharedpg_tools.settings import Context, add_common

# command name -> (module, one-line summary); summaries here so `--help` imports no command
COMMANDS: dict[str, tuple[str, str]] = {
    "wait-for-db": ("wait_for_db", "wait until PostgreSQL is ready for this app (initContainer, exec probe)"),
    "ensure-tenant": ("ensure_tenant", "ensure one app's role and database on the shared server (idempotent)"),
    "bootstrap": ("bootstrap", "the init Job: every tenant of a spec ensured, credentials in Vault or files"),
    "check-pool": ("check_pool", "the connection budget: offline plan, live usage, Nagios and Prometheus output"),
    "serve-metrics": ("serve_metrics", "serve check-pool's reading at /metrics for Prometheus (and /healthz)"),
    "admin-secret": ("admin_secret", "create the shared server's admin password in Vault, once (first install)"),
    "copy-tenant": ("copy_tenant", "move an app's data from its old PostgreSQL into its tenant (pg_dump | pg_restore)"),
    "demo": ("demo", "start a throwaway local PostgreSQL and show the commands at work"),
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """argparse's formatter, told the width so it does not import shutil (and with it bz2 and lzma:
    ~3 ms of every probe) just to ask the terminal's size."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None):
        super().__init__(prog, indent_increment, max_help_position, width or _terminal_width() - 2)


def _terminal_width() -> int:
    """$COLUMNS, else the terminal's width, else 80: what shutil.get_terminal_size() would say."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns if sys.__stdout__ else 80
    except (OSError, ValueError):
        return 80


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (and exit 2) instead of usage + message."""

    command: str | None = None  # the command chosen on the line: its own --help is the one to read

    def error(self, message: str) -> None:  # type: ignore[override]
        prog = self.prog if self.command is None or self.prog.endswith(self.command) else f"{self.prog} {self.command}"
        raise ConfigError(f"{message}: see '{prog} --help'")


def _load(command: str) -> ModuleType:
    return importlib.import_module(f"sharedpg_tools.commands.{COMMANDS[command][0]}")


def build_parser(environ: Mapping[str, str], command: str | None) -> Parser:
    """The full parser; only ``command``'s module is imported (all of them for the help of all)."""
    parser = Parser(
        prog="sharedpg",
        description="Init and sidecar utilities for apps that share one PostgreSQL server.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.command = command
    parser.add_argument("--version", action="version", version=f"sharedpg {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    for name, (_module, summary) in COMMANDS.items():
        sub = subparsers.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=EPILOG,
            formatter_class=HelpFormatter,
        )
        if name == command:
            module = _load(name)
            sub.epilog = getattr(module, "EPILOG", EPILOG)  # check-pool: Nagios codes
            module.add_arguments(sub, environ)
            add_common(sub, environ, getattr(module, "OUTPUTS", ("text", "json")))
    return parser


def _chosen(argv: Sequence[str]) -> str | None:
    return next((arg for arg in argv if arg in COMMANDS), None)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one command; return its exit code (never raises, never prints a traceback for our errors)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if environ is None else environ
    signal.signal(signal.SIGTERM, interrupts.on_signal)
    signal.signal(signal.SIGINT, interrupts.on_signal)
    command = _chosen(args_list)
    logs.configure(_early_log_format(args_list, env), "info")
    try:
        parser = build_parser(env, command)
        args = parser.parse_args(args_list)
        module = _load(args.command)
        logs.configure(args.log_format, args.log_level, use_structlog=module.USES_STRUCTLOG)
        return int(module.run(args, Context(args.command, args_list, env)))
    except SharedpgError as exc:
        code = int(exc.exit_code)
        mapping = getattr(_load(command), "usage_exit_code", None) if command else None
        if isinstance(exc, ConfigError) and mapping is not None:  # a command may map usage errors itself
            code = int(mapping(args_list))
        if isinstance(exc, ConfigError) and exc.hint is None and command:
            exc.hint = f"see 'sharedpg {command} --help'"
        _log_error(command, exc, code)
        error = "; ".join(exc.problems) if isinstance(exc, ConfigError) else str(exc)
        output.failure(args_list, env, command, logs.redact(error), exc.hint, code)
        return code
    except SystemExit as exc:  # --help and --version
        return int(exc.code or 0) if isinstance(exc.code, int) else 0
    except Exception:  # a bug: say so, with the traceback, and exit 1
        import traceback

        logs.get_logger(command=command).error(
            "unexpected error, this is probably a bug in sharedpg", traceback=logs.redact(traceback.format_exc())
        )
        return int(ExitCode.NOT_READY)


def _early_log_format(argv: list[str], environ: Mapping[str, str]) -> str:
    """The log format for errors found while parsing: the flag or variable if it is valid."""
    return output.given(argv, environ, "--log-format", logs.FORMATS, "auto")


def _log_error(command: str | None, exc: SharedpgError, code: int) -> None:
    log = logs.get_logger(command=command)
    fields = {"exit_code": code, "hint": exc.hint}
    if isinstance(exc, ConfigError):
        for problem in exc.problems:
            log.error("usage error", error=problem, **fields)
    elif isinstance(exc, Interrupted):
        log.warning("interrupted", error=str(exc), **fields)
    else:
        log.error("gave up", error=str(exc), **fields)
