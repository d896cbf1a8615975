"""The contract every command shares: one-line usage errors with exit 2, help with exit codes, entry points."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Cli, Result
from tests.fix_servers import Server


@pytest.mark.parametrize(
    ("args", "env", "names"),
    [
        (["wait-for-db", "--timeout", "soon"], {}, ["--timeout", "'soon'"]),
        (["wait-for-db"], {"SHAREDPG_TIMEOUT": "soon"}, ["SHAREDPG_TIMEOUT", "'soon'"]),
        (["wait-for-db"], {"SHAREDPG_LOG_FORMAT": "xml"}, ["SHAREDPG_LOG_FORMAT", "'xml'"]),
        (["wait-for-db", "--require", "maybe"], {}, ["--require", "maybe"]),
        (["wait-for-db", "--bogus"], {}, ["--bogus"]),
        (["wait-for-db", "--password-file", "/nonexistent/pw"], {}, ["/nonexistent/pw", "mount the Secret"]),
        (["wait-for-db", "--once", "--stable", "5"], {}, ["--once", "--stable"]),
        (["wait-for-db", "--require-table", "orders"], {}, ["'orders'", "SCHEMA.TABLE"]),
        (["wait-for-db", "--server-version", "fifteen"], {}, ["--server-version", ">=14,<19"]),
        (["wait-for-db", "--require", "reachable", "--writable"], {}, ["--require reachable", "--require login"]),
        (["wait-for-db", "--dsn", "host=db bogus=1"], {}, ["--dsn", "bogus"]),
        (["wait-for-db", "--dsn", "host=db sslmode=sometimes", "--once"], {}, ["sslmode", "--dsn"]),
        (["wait-for-db", "--interval", "5"], {}, ["--interval 5", "--max-interval 2"]),
        (["nonsense"], {}, ["nonsense"]),
    ],
)
def test_bad_input_is_one_line_exit_2_naming_the_input(cli: Cli, args: list[str], env: dict[str, str],
                                                        names: list[str]) -> None:  # fmt: skip
    result = cli(*args, env=env)
    assert result.code == 2, result
    [line] = result.log_lines
    for name in names:
        assert name in line, line
    assert '"level": "error"' in line


def test_empty_password_file_is_a_usage_error(cli: Cli, tmp_path: Path) -> None:
    empty = tmp_path / "pw"
    empty.write_text("\n")
    result = cli("wait-for-db", "--password-file", str(empty))
    assert result.code == 2 and "is empty" in result.stderr


def test_help_lists_exit_codes_and_env_names(cli: Cli) -> None:
    result = cli("wait-for-db", "--help")
    assert result.code == 0
    for text in ("124  deadline", "143  terminated by SIGTERM", "[env: SHAREDPG_TIMEOUT]", "[env: PGPASSWORD_FILE]"):
        assert text in result.stdout


def test_console_format_is_human_readable(cli: Cli) -> None:
    result = cli("wait-for-db", "--timeout", "x", "--log-format", "console")
    [line] = result.log_lines
    assert " error    usage error  " in line and not line.startswith("{")


@pytest.mark.parametrize("section", ["cli-reference", "troubleshooting", "metrics"])
def test_reference_sections_match_the_code(section: str) -> None:
    """docs/reference.md's CLI reference and troubleshooting table are generated from the code; they must be current."""
    from scripts.doc_sections import REFERENCE, SECTIONS, section_of

    fix = "run: .venv/bin/python scripts/doc_sections.py --write"
    assert section_of(REFERENCE.read_text(), section) == SECTIONS[section](), fix


def _flags_with_checked_variables() -> list[tuple[str, str, str]]:
    """(command, variable, kind) for every flag whose environment variable can hold a bad value: booleans,
    numbers and choices (a free-text variable has no bad value)."""
    import argparse
    import re

    from sharedpg_tools.cli import COMMANDS, build_parser

    found = []
    for command in COMMANDS:
        parser = build_parser({}, command)
        [subparsers] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        for action in subparsers.choices[command]._actions:
            variable = re.search(r"\[env: (\w+)\]", action.help or "")
            if variable is None:
                continue
            if isinstance(action, argparse._StoreTrueAction):
                kind = "boolean"
            elif action.choices:
                kind = "choice"
            elif action.type is not None:
                kind = "number"
            else:
                continue
            found.append((command, variable[1], kind))
    return found


@pytest.mark.parametrize(("command", "variable", "kind"), _flags_with_checked_variables())
def test_every_flags_variable_with_a_bad_value_is_one_line_and_the_usage_code(
    cli: Cli, command: str, variable: str, kind: str
) -> None:
    bad = {"boolean": "maybe", "choice": "neither-of-them", "number": "ten"}[kind]
    result = cli(command, env={variable: bad})
    assert result.code == (3 if command == "check-pool" else 2), result  # check-pool: UNKNOWN, its usage code
    [line] = result.log_lines
    assert variable in line and repr(bad) in line, line


def test_the_walk_covers_the_variables_the_issue_names() -> None:
    walked = {variable for _, variable, _ in _flags_with_checked_variables()}
    assert {"SHAREDPG_ONCE", "SHAREDPG_WRITABLE", "SHAREDPG_NO_VAULT", "SHAREDPG_OFFLINE",
            "SHAREDPG_CONNECTION_LIMIT", "SHAREDPG_MAX_CONNECTIONS"} <= walked  # fmt: skip


@pytest.mark.parametrize(("content", "needle"), [
    (b"\xff\xfe not utf-8", "is not UTF-8 text"),
    (b"secret\x00tail", "holds a NUL byte"),
])  # fmt: skip
def test_a_password_file_libpq_would_misread_is_a_usage_error(cli: Cli, tmp_path: Path, content: bytes,
                                                              needle: str) -> None:  # fmt: skip
    path = tmp_path / "pw"
    path.write_bytes(content)
    result = cli("wait-for-db", "--password-file", str(path))
    assert result.code == 2, result
    [line] = result.log_lines
    assert needle in line and str(path) in line


@pytest.mark.parametrize(("command", "variable", "dsn"), [
    ("wait-for-db", "SHAREDPG_DSN", "host=db password=hunter2 xyzzy"),
    ("wait-for-db", "SHAREDPG_DSN", "postgresql://app:hunter2 xyzzy@db/app"),
    ("copy-tenant", "SHAREDPG_FROM_DSN", "host=old password='hunter2 xyzzy"),
])  # fmt: skip
def test_a_malformed_dsn_never_echoes_its_password(cli: Cli, command: str, variable: str, dsn: str) -> None:
    cli.secrets |= {"hunter2", "xyzzy"}  # checked on every byte printed
    args = [command, "app"] if command == "copy-tenant" else [command]
    result = cli(*args, "--once", env={variable: dsn}) if command == "wait-for-db" else cli(*args, env={variable: dsn})
    assert result.code == 2, result
    [line] = result.log_lines
    assert "conninfo" in line or "connection" in line, line


@pytest.mark.parametrize(("args", "env", "needles"), [
    (["demo", "--dsn", "host=db"], {}, ["--dsn", "throwaway server of its own"]),
    (["demo"], {"SHAREDPG_DSN": "host=db"}, ["SHAREDPG_DSN", "drop it"]),
    (["demo", "--major", "9"], {}, ["PostgreSQL 9", "postgresql-9", "omit --major"]),
    (["bootstrap", "--no-vault", "--dsn", "host=127.0.0.1 port=1"], {}, ["--no-vault", "--password-dir", "grafana"]),
])  # fmt: skip
def test_inputs_that_would_be_ignored_or_misled_are_refused_before_anything_runs(
    cli: Cli, args: list[str], env: dict[str, str], needles: list[str]
) -> None:
    result = cli(*args, env=env)
    assert result.code == 2, result
    [line] = result.log_lines
    assert all(n in line for n in needles), line
    assert "Vault" not in line and "sharedpg[embedded]" not in line


def _sharedpg_args(words: list[str]) -> list[str] | None:
    """The arguments given to sharedpg in one shell command, or None when it does not run sharedpg."""
    while words and "=" in words[0] and not words[0].startswith("-"):  # VAR=value prefixes
        words = words[1:]
    if words and words[0].rsplit("/", 1)[-1] == "sharedpg":
        return words[1:]
    if words[:2] == ["docker", "run"]:
        images = [i for i, w in enumerate(words) if w.startswith("sharedpg:")]
        return words[images[0] + 1 :] if images else None
    return None


def _documented_command_lines() -> list[tuple[str, list[str]]]:
    """Every sharedpg command in the README's and docs' shell blocks (continuations joined, comments dropped)."""
    import re
    import shlex

    from tests.conftest import ROOT

    found = []
    for doc in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "images" / "README.md"):
        for block in re.findall(r"```sh\n(.*?)```", doc.read_text(), flags=re.DOTALL):
            for line in block.replace("\\\n", " ").splitlines():
                # split into commands at shell operators; a redirection's target is not an argument
                commands: list[list[str]] = [[]]
                for word in shlex.split(line, comments=True):
                    if word in ("|", "&&", ";", ">", ">>"):
                        commands.append([] if word not in (">", ">>") else ["(redirection)"])
                    elif commands[-1][:1] != ["(redirection)"]:
                        commands[-1].append(word)
                for command in commands:
                    args = _sharedpg_args(command)
                    if args:
                        found.append((f"{doc.name}: {line.strip()[:60]}", args))
    return found


@pytest.mark.parametrize(("where", "args"), _documented_command_lines(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_documented_command_line_parses(where: str, args: list[str]) -> None:
    from sharedpg_tools.cli import build_parser

    parser = build_parser({}, args[0])
    _, unknown = parser.parse_known_args(args)
    assert unknown == [], f"{where}: {unknown} are not flags of sharedpg {args[0]}"


def test_every_documented_refusal_is_still_in_the_code() -> None:
    """docs/reference.md's refusals table quotes the messages: each quoted phrase must still be in the code."""
    import re

    from tests.conftest import ROOT

    reference = (ROOT / "docs" / "reference.md").read_text()
    table = reference.split("## Refusals", 1)[1].split("## Troubleshooting", 1)[0]
    source = "".join(p.read_text() for p in (ROOT / "sharedpg_tools").rglob("*.py"))
    source = re.sub(r"[\"']\s*\n\s*f?[\"']", "", source)  # adjacent literals of one message, joined
    phrases = [
        c for row in table.splitlines() if row.startswith("| `") for c in re.findall(r"`([^`]+)`", row.split("|")[1])
    ]
    assert len(phrases) >= 12
    for phrase in phrases:
        words = [w for w in re.split(r"\s*…\s*", phrase) if w]
        assert all(w in source for w in words), f"the refusal {phrase!r} is documented but no longer in the code"


def _shape(result: Result) -> dict[str, Any]:
    report = result.result()
    assert list(report)[:3] == ["command", "status", "exit_code"], report
    assert report["exit_code"] == result.code, (report, result.code)
    return report


def test_every_result_has_one_shape_on_success_and_on_failure(cli: Cli, pg: Server, tmp_path: Path) -> None:
    """--output json: command, status and exit_code first, on success and failure, from every command."""
    env = {"PGPASSWORD": pg.password}
    name = f"shape_{secrets.token_hex(3)}"
    (tmp_path / "pw").write_text(secrets.token_urlsafe(16))
    try:
        runs = {
            ("ensure-tenant", "ok"): cli("ensure-tenant", name, "--dsn", pg.conninfo(), "--tenant-password-file",
                                         str(tmp_path / "pw"), "--output", "json", env=env),
            ("ensure-tenant", "failed"): cli("ensure-tenant", name, "--dsn", pg.conninfo(), "--encoding", "KLINGON",
                                             "--output", "json", env=env),
            ("wait-for-db", "ready"): cli("wait-for-db", "--once", "--dsn", pg.conninfo(), "--output", "json", env=env),
            ("wait-for-db", "failed"): cli("wait-for-db", "--once", "--timeout", "soon", "--output", "json"),
            ("check-pool", "OK"): cli("check-pool", "--offline", "--output", "json"),
            ("bootstrap", "not_needed"): cli("bootstrap", "--plan", "--output", "json"),
            ("bootstrap", "failed"): cli("bootstrap", "--no-vault", "--output", "json"),
            ("copy-tenant", "failed"): cli("copy-tenant", name, "--from-dsn", "user=x", "--tenant-password-file",
                                           str(tmp_path / "pw"), "--output", "json"),
            ("admin-secret", "failed"): cli("admin-secret", "--output", "json"),
        }  # fmt: skip
    finally:
        pg.drop_tenants([name])
    for (command, status), result in runs.items():
        report = _shape(result)
        assert (report["command"], report["status"]) == (command, status), report
        if status == "failed":
            assert report["error"] and result.code != 0, report


@pytest.mark.parametrize("args", [["check-pool", "--offline"], ["check-pool", "--offline", "--output", "json"],
                                  ["check-pool", "--offline", "--output", "prometheus"],
                                  ["bootstrap", "--print-default-spec"], ["bootstrap", "--plan"]])  # fmt: skip
def test_a_reader_that_goes_away_early_is_not_an_error(cli: Cli, args: list[str]) -> None:
    """``| head -c0``: the command's own exit code, no traceback, nothing on stderr about it."""
    done = subprocess.run(["bash", "-c", 'set -o pipefail; "$@" | head -c0; echo "${PIPESTATUS[0]}" >&2', "-",
                           sys.executable, "-m", "sharedpg_tools", *args],
                          capture_output=True, text=True, env=cli.env(None), timeout=60)  # fmt: skip
    expected = cli(*args).code
    assert done.stderr.strip().splitlines()[-1] == str(expected), done.stderr
    assert "Traceback" not in done.stderr and "Broken pipe" not in done.stderr, done.stderr


def test_usage_errors_point_at_the_commands_own_help(cli: Cli) -> None:
    for args in (["wait-for-db", "--bogus"], ["admin-secret"], ["check-pool", "--warn", "2"]):
        [event] = cli(*args).events()
        assert f"sharedpg {args[0]} --help" in f"{event['error']} {event.get('hint')}", event


def test_admin_secret_without_vault_says_it_needs_vault(cli: Cli) -> None:
    [event] = cli("admin-secret").events()
    assert "VAULT_ADDR is not set" in event["error"] and "--no-vault" not in event["error"], event


def test_secrets_too_short_to_be_real_are_refused_and_short_values_never_corrupt_words(
    cli: Cli, tmp_path: Path
) -> None:
    (tmp_path / "short").write_text("ed")
    result = cli("ensure-tenant", "app", "--tenant-password-file", str(tmp_path / "short"), "--dsn", "host=127.0.0.1")
    assert result.code == 2 and "2 characters, too few" in result.stderr, result
    token = cli("admin-secret", env={"VAULT_ADDR": "https://vault.invalid:8200", "VAULT_TOKEN": "ed"})
    assert token.code == 2 and "VAULT_TOKEN holds 2 characters" in token.stderr, token
    assert "exce***" not in token.stdout + token.stderr


def test_the_reference_lists_every_exit_code_the_help_does() -> None:
    from sharedpg_tools.exitcodes import EPILOG

    table = (ROOT / "docs" / "reference.md").read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    listed = {
        c for row in table.splitlines() if row.startswith("| ") for c in row.split("|")[1].replace("/", " ").split()
    }
    assert {line.split()[0] for line in EPILOG.splitlines()[1:] if line[:3].strip().isdigit()} <= listed


def test_no_file_refers_outside_the_repository() -> None:
    """The facts the project relies on are in docs/ (plan.md, facts-consumers.md, facts-postgresql.md) with
    their upstream sources: no tracked file points at the planning folder beside a checkout."""
    tracked = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    outside = re.compile(r"shared/(notes|seed|charts|schemas)|\.\./shared|\.\./notes/|(?<!facts-)consumers\.md"
                         r"|pg-semantics|anchors\.md")  # fmt: skip
    found = []
    for name in tracked.split():
        path = ROOT / name
        if name == "tests/func/test_cli_contract.py" or not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        found += [f"{name}: {m[0]}" for m in outside.finditer(text)]
    assert found == [], found
