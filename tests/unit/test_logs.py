"""Both loggers render the same line; secrets are masked whichever wrote it."""

from __future__ import annotations

import io
import json
import random

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


def test_the_lean_json_writer_is_json_dumps_byte_for_byte() -> None:
    """What logs and results print, from the writer the probe path uses instead of importing json."""
    rng = random.Random(7)
    alphabet = ['"', "\\", "\n", "\r", "\t", "\b", "\f", "\x00", "\x1f", "\x7f", " ", "a", "ñ", "北", "😀", "/", "'"]

    def value(depth: int) -> object:
        kind = rng.randrange(9 if depth < 3 else 7)
        if kind == 0:
            return "".join(rng.choice(alphabet) for _ in range(rng.randrange(8)))
        if kind == 1:
            return rng.randrange(-(10**12), 10**12)
        if kind == 2:
            return rng.choice([0.1, 1e-9, 3.0, -2.5e300, float("inf"), float("-inf"), 1 / 3, rng.random()])
        if kind in (3, 4):
            return rng.choice([True, False, None])
        if kind in (5, 6):
            return rng.choice(["plain", "", "x y", "password=***"])
        if kind == 7:
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        return {"".join(rng.choice(alphabet) for _ in range(3)): value(depth + 1) for _ in range(rng.randrange(4))}

    for _ in range(3000):
        sample = value(0)
        assert logs.dumps(sample) == json.dumps(sample, ensure_ascii=False, default=str), sample
    assert logs.dumps(float("nan")) == json.dumps(float("nan"))
