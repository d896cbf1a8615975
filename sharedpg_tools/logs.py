"""Logging to stderr: JSON lines when stderr is not a TTY (Kubernetes), readable lines on a TTY.

Commands log through structlog. The probe path (``wait-for-db``) does not: ``import structlog``
alone costs ~90 ms of CPU (it pulls in asyncio, typing and inspect), more than a whole
``psql -c 'select 1'``, and that path runs every few seconds as an exec probe. There a lean logger
with the same methods is used. Both end in :func:`render`, so a line looks the same whichever wrote
it, and both pass every string through :func:`redact`, so a secret registered with
:func:`register_secret` never reaches the output even if a library echoes it in a message.
"""

from __future__ import annotations

import sys
import time

# The probe path must not import typing (~3 ms of CPU per probe): names for annotations only.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, MutableMapping
    from typing import IO, Any

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
FORMATS = ("auto", "json", "console")
_MASK = "***"
_SHORT = 12  # a secret this long is masked wherever it occurs; a shorter one only as a whole value

_secrets: set[str] = set()
_config: dict[str, Any] = {"format": "json", "level": 20, "stream": None, "structlog": False}


def register_secret(value: str | None) -> None:
    """Never print ``value``: every rendered string has it replaced by ``***``."""
    if value:
        _secrets.add(value)


def redact(text: str) -> str:
    """Mask every registered secret in ``text``: a long one wherever it occurs, a short one only where it
    stands as a value of its own (not inside a word: "ed" must not turn "exceeded" into "exce***").

    >>> register_secret("s3cr3t")
    >>> redact("password=s3cr3t host=db")
    'password=*** host=db'
    >>> register_secret("ed")
    >>> redact("exceeded: token=ed")
    'exceeded: token=***'
    """
    for secret in _secrets:
        if secret not in text:
            continue
        if len(secret) >= _SHORT:
            text = text.replace(secret, _MASK)
        else:
            import re  # only when a short secret is about to be printed (the probe path rarely gets here)

            text = re.sub(rf"(?<![\w]){re.escape(secret)}(?![\w])", _MASK, text)
    return text


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _MASK if k == "password" else _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return redact(str(value))


def _timestamp() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def render(level: str, event: str, fields: Mapping[str, Any], fmt: str) -> str:
    """One log line: ``timestamp``, ``level``, ``event``, then the fields, secrets masked."""
    record = {"timestamp": _timestamp(), "level": level, "event": redact(event)}
    record.update({k: _clean(v) for k, v in fields.items() if v is not None})
    if fmt == "json":
        return dumps(record)
    head = f"{record.pop('timestamp')} {record.pop('level'):<8} {record.pop('event')}"
    pairs = " ".join(f"{k}={_console_value(v)}" for k, v in record.items())
    return f"{head}  {pairs}" if pairs else head


def _console_value(value: Any) -> str:
    text = value if isinstance(value, str) else dumps(value)
    return dumps(text) if (" " in text or not text) else text


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def _string(text: str) -> str:
    if not any(c in _ESCAPES or c < " " for c in text):
        return f'"{text}"'
    return '"' + "".join(_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if c < " " else c) for c in text) + '"'


def dumps(value: Any) -> str:
    """``json.dumps(value, ensure_ascii=False, default=str)``, byte for byte, for what sharedpg prints
    (strings, numbers, booleans, None, lists and dicts with string keys), without importing json: json
    imports re, and re enum, a few milliseconds an exec probe would spend on every run."""
    if isinstance(value, str):
        return _string(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if value in (float("inf"), float("-inf")):
            return "Infinity" if value > 0 else "-Infinity"
        return float.__repr__(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_string(str(k))}: {dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(dumps(v) for v in value) + "]"
    return _string(str(value))


def resolve_format(fmt: str, stream: IO[str]) -> str:
    """``auto`` is console on a TTY and JSON otherwise."""
    if fmt != "auto":
        return fmt
    isatty = getattr(stream, "isatty", None)
    return "console" if isatty is not None and isatty() else "json"


def configure(
    fmt: str = "auto", level: str = "info", stream: IO[str] | None = None, use_structlog: bool = False
) -> None:
    """Set format and threshold for every logger; ``use_structlog`` for commands off the probe path."""
    out = stream if stream is not None else sys.stderr
    _config.update(format=resolve_format(fmt, out), level=LEVELS[level], stream=out, structlog=use_structlog)
    if use_structlog:
        from typing import TextIO, cast

        import structlog

        def finish(_logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> str:
            event = str(event_dict.pop("event", ""))
            return render(method, event, event_dict, _config["format"])

        structlog.configure(
            processors=[finish],
            wrapper_class=structlog.make_filtering_bound_logger(_config["level"]),
            logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, out)),
            cache_logger_on_first_use=False,
        )


class LeanLogger:
    """The subset of structlog's bound-logger API the probe path uses, without importing structlog."""

    def __init__(self, context: Mapping[str, Any] | None = None):
        self._context = dict(context or {})

    def bind(self, **fields: Any) -> LeanLogger:
        return LeanLogger({**self._context, **fields})

    def _log(self, level: str, event: str, fields: Mapping[str, Any]) -> None:
        if LEVELS[level] < _config["level"]:
            return
        stream = _config["stream"] or sys.stderr
        stream.write(render(level, event, {**self._context, **fields}, _config["format"]) + "\n")
        stream.flush()

    def debug(self, event: str, **fields: Any) -> None:
        self._log("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log("error", event, fields)


def get_logger(**context: Any) -> Any:
    """A structlog logger when configured for it, else the lean one; both render identically."""
    if _config["structlog"]:
        import structlog

        return structlog.get_logger().bind(**context)
    return LeanLogger(context)
