"""Generate the reference sections of docs/reference.md from the code, so the two cannot drift apart.

Sections sit between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``: ``cli-reference`` (every
``--help``) and ``troubleshooting`` (every error class with its policy and hint).
``python scripts/doc_sections.py --write`` rewrites them; tests/func/test_cli_contract.py fails
when one is out of date.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Callable
from pathlib import Path

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "reference.md"
_POLICY = {
    "retry": "retried until `--timeout`",
    "auth": "retried; exit 3 at once with `--fail-fast`",
    "permanent": "exit 3 at once",
    "config": "exit 2 at once",
}


def _help(*args: str) -> str:
    from sharedpg_tools.cli import main

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        main([*args, "--help"], environ={})
    return buffer.getvalue().rstrip()


def cli_reference() -> str:
    """The top-level help, then each command's, in fixed-width blocks."""
    from sharedpg_tools.cli import COMMANDS

    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal; fix it so output is stable
    blocks = [f"```text\n$ sharedpg --help\n{_help()}\n```"]
    blocks += [f"```text\n$ sharedpg {name} --help\n{_help(name)}\n```" for name in COMMANDS]
    return "\n\n".join(blocks)


def troubleshooting() -> str:
    """One row per error class: what ``error_class`` in the log means and what to do."""
    from sharedpg_tools.classify import CLASSES

    rows = ["| `error_class` | what sharedpg does | what to check |", "|---|---|---|"]
    rows += [f"| `{name}` | {_POLICY[kind]} | {hint} |" for name, (kind, hint) in CLASSES.items()]
    return "\n".join(rows)


SECTIONS: dict[str, Callable[[], str]] = {"cli-reference": cli_reference, "troubleshooting": troubleshooting}


def section_of(text: str, name: str) -> str:
    return text.split(f"<!-- {name}:start -->", 1)[1].split(f"<!-- {name}:end -->", 1)[0].strip()


def rewrite(text: str) -> str:
    for name, render in SECTIONS.items():
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        head, rest = text.split(start, 1)
        text = f"{head}{start}\n{render()}\n{end}{rest.split(end, 1)[1]}"
    return text


def main() -> int:
    updated = rewrite(REFERENCE.read_text())
    if "--write" in sys.argv:
        REFERENCE.write_text(updated)
    else:
        print(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
