"""Generate the reference sections of docs/reference.md from the code, so the two cannot drift apart.

Sections sit between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``: ``cli-reference`` (every
``--help``), ``results`` (every command's result statuses), ``troubleshooting`` (every error class with
its policy and hint) and ``metrics`` (every Prometheus metric check-pool and serve-metrics export).
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
from typing import Any

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


def every_metric_family() -> list[Any]:
    """Each family once, from a full live report, a report with hidden sessions and the exporter's own."""
    from sharedpg_tools import metrics, pool
    from sharedpg_tools.spec import Capacity

    full, hidden = pool.Report("live", Capacity(100, 3, 2)), pool.Report("live", Capacity(100, 3, 2))
    full.headroom, hidden.hidden = 5, 1
    usage = full.role("app")
    usage.states, usage.limit, usage.budget, usage.expected_limit = {"idle": 1}, 7, 5, 7
    every = [*metrics.families(full), *metrics.families(hidden), *metrics.exporter_families({"ok": 1}, 0.1)]
    unique: dict[str, Any] = {}
    for family in every:
        unique.setdefault(family.name, family)
    return list(unique.values())


def metrics_table() -> str:
    """One row per metric, as every_metric_family() yields them."""
    rows = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for family in every_metric_family():
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = ", ".join(f"`{k}`" for k in dict.fromkeys(k for sample in family.samples for k in sample.labels))
        only = " (serve-metrics only)" if family.name.startswith("sharedpg_exporter_") else ""
        rows.append(f"| `{name}` | {family.type} | {labels or '-'} | {family.documentation}{only} |")
    return "\n".join(rows)


def results_table() -> str:
    """One row per command: the statuses its result may carry."""
    from sharedpg_tools.output import STATUSES

    rows = ["| command | `status` on success or refusal | on an error that ends it |", "|---|---|---|"]
    rows += [f"| `{command}` | {', '.join(f'`{s}`' for s in statuses)} | `failed` |"
             for command, statuses in STATUSES.items()]  # fmt: skip
    return "\n".join(rows)


SECTIONS: dict[str, Callable[[], str]] = {
    "cli-reference": cli_reference,
    "results": results_table,
    "troubleshooting": troubleshooting,
    "metrics": metrics_table,
}


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
