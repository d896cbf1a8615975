"""Both loggers render the same line; secrets are masked whichever wrote it."""

from __future__ import annotations

import io
import json

import pytest

from sharedpg_tools import logs


@pytest.mark.parametrize("use_structlog", [False, True])
def test_lines_have_the_same_shape_from_either_logger(use_structlog: bool) -> None:
    out = io.StringIO()
    logs.configure("json", "info", stream=out, use_structlog=use_structlog)
    logs.register_secret("hunter2-secret")
    log = logs.get_logger(command="test")
    log.debug("hidden below the threshold")
    log.warning("not ready", attempt=2, error="password hunter2-secret rejected", target={"password": "x"})
    [line] = out.getvalue().splitlines()
    record = json.loads(line)
    assert list(record)[:3] == ["timestamp", "level", "event"]
    assert record["level"] == "warning" and record["event"] == "not ready" and record["command"] == "test"
    assert record["error"] == "password *** rejected" and record["target"] == {"password": "***"}
    assert "hunter2-secret" not in out.getvalue()


def test_auto_format_is_console_on_a_tty() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert logs.resolve_format("auto", Tty()) == "console"
    assert logs.resolve_format("auto", io.StringIO()) == "json"


def test_a_short_secret_is_masked_as_a_value_never_inside_words() -> None:
    logs.register_secret("ed")
    assert logs.redact("exceeded the limit; VAULT_TOKEN=ed, 'ed'") == "exceeded the limit; VAULT_TOKEN=***, '***'"
    logs.register_secret("a-long-secret-value")
    assert logs.redact("xa-long-secret-valuex") == "x***x", "a long one is masked wherever it is"
