"""What ``wait-for-db`` says when it ends: the ready event on stderr and the result on stdout.

Shared by the full command and by its lean ``--once`` path (``quick.py``), so an exec probe's line is the
same whichever path ran. Imports only what the probe path may spend (no argparse, json, re or enum).
"""

from __future__ import annotations

from sharedpg_tools import logs, output, probe

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

NAME = "wait-for-db"
STATUS = {0: "ready", 1: "not_ready", 2: "usage_error", 3: "error", 124: "timeout", 130: "interrupted",
          143: "interrupted"}  # fmt: skip


def log_ready(log: Any, ready: probe.Ready, level: str, attempts: int, elapsed: float) -> None:
    log.info("database ready", target=probe.where(ready.target), server_version=ready.version, require=level,
             attempts=attempts, elapsed_s=round(elapsed, 3))  # fmt: skip


def report(output_format: str, code: int, attempts: int, elapsed: float, message: str, failure: Any = None,
           target: dict[str, str] | None = None, version: str | None = None) -> None:  # fmt: skip
    """The result on stdout, one line of text or one JSON object."""
    status = STATUS.get(int(code), "error")
    result: dict[str, Any] = {
        "target": probe.where(target),
        "server_version": version,
        "attempts": attempts,
        "elapsed_s": round(elapsed, 3),
        "message": logs.redact(message),
    }
    if failure is not None:
        result.update(failure.fields())
        result["error"] = logs.redact(str(result["error"]))
    if int(code) == 0:
        shown = version or "(version not read)"
        line = f"ready: {result['target']} PostgreSQL {shown} after {attempts} attempt(s), {result['elapsed_s']} s"
    else:
        line = f"{status}: {result['message']}" + (f" [{failure.error_class}]" if failure is not None else "")
    output.result(output_format, NAME, status, code, result, [line])
