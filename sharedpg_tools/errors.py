"""One error hierarchy: each error carries its exit code and a one-line message an operator can act on."""

from __future__ import annotations

from sharedpg_tools.exitcodes import ExitCode


class SharedpgError(Exception):
    """Base of every error sharedpg reports; ``str()`` is the one line shown to the operator."""

    exit_code = ExitCode.NOT_READY

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class ConfigError(SharedpgError, ValueError):
    """Bad flag, environment value or file: exit 2 before any connection is tried.

    ``problems`` lists every problem found (a spec may have several); each is logged on its own line.
    """

    exit_code = ExitCode.USAGE

    def __init__(self, message: str, hint: str | None = None, problems: list[str] | None = None):
        super().__init__(message, hint)
        self.problems = problems or [message]


class PermanentError(SharedpgError):
    """Retrying cannot fix it (version out of range, privilege, TLS with --fail-fast)."""

    exit_code = ExitCode.PERMANENT


class AdminLoginRejected(SharedpgError):
    """The shared server rejected the admin's own login: not a server that is not up yet."""

    exit_code = ExitCode.ADMIN_LOGIN


class DeadlineExceeded(SharedpgError):
    exit_code = ExitCode.TIMEOUT


class Interrupted(SharedpgError):
    """SIGTERM or SIGINT arrived; the exit code is 128 + the signal number."""

    def __init__(self, signum: int, message: str | None = None):
        name = "SIGTERM" if signum == 15 else "SIGINT"
        super().__init__(message or f"interrupted by {name}", "a re-run finishes what this run did not")
        self.signum = signum
        self.exit_code = ExitCode.SIGTERM if signum == 15 else ExitCode.SIGINT


class Unusable(PermanentError):
    """Something no tenant can succeed without (a Vault mount that does not exist): it ends the whole run at
    once, as one error, instead of failing every tenant the same way."""
