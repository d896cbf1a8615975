"""``--server-version`` specs such as ``>=14,<19``, checked against the server's version number."""

from __future__ import annotations

import operator
from collections.abc import Callable

_OPERATORS: dict[str, Callable[[tuple[int, ...], tuple[int, ...]], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}


class VersionSpec:
    """A comma-separated list of comparisons, all of which must hold.

    Each comparison uses as many parts as it gives: ``<19`` compares the major version only,
    ``>=15.4`` the major and minor.

    >>> spec = VersionSpec.parse(">=14,<19")
    >>> spec.allows(150018), spec.allows(130011), spec.allows(190000)
    (True, False, False)
    >>> VersionSpec.parse(">=15.4").allows(150003)
    False
    """

    def __init__(self, text: str, clauses: list[tuple[str, tuple[int, ...]]]):
        self.text = text
        self.clauses = clauses

    @classmethod
    def parse(cls, text: str) -> VersionSpec:
        """:raises ValueError: with a message saying what a valid spec looks like."""
        clauses = []
        for raw in text.split(","):
            item = raw.strip()
            op = next((o for o in _OPERATORS if item.startswith(o)), None)
            parts = item[len(op) :].strip().split(".") if op else []
            if op is None or not 1 <= len(parts) <= 2 or not all(p.isdigit() for p in parts):
                raise ValueError(
                    f"{text!r} is not a version spec; use comparisons like '>=14,<19' or '==15' "
                    f"(operators {' '.join(_OPERATORS)})"
                )
            clauses.append((op, tuple(int(p) for p in parts)))
        return cls(text, clauses)

    def allows(self, version_num: int) -> bool:
        """``version_num`` as libpq reports it: 150018 for 15.18 (and 90624 for 9.6.24)."""
        version: tuple[int, ...]
        if version_num >= 100000:
            version = (version_num // 10000, version_num % 10000)
        else:
            version = (version_num // 10000, version_num // 100 % 100, version_num % 100)
        return all(_OPERATORS[op](version[: len(want)], want) for op, want in self.clauses)
