"""SIGTERM and SIGINT: they raise ``Interrupted`` where the program is, except inside ``deferred()``.

Inside it they wait for the block to end and are raised then. ensure-tenant and bootstrap ensure each
tenant inside one: no statement is cut in two (which left the session "busy" and the statement running
on), ``CREATE DATABASE`` is never left without the ``REVOKE`` that closes it to PUBLIC, and the run ends
right after the tenant in progress, saying which tenants were done. The handler runs in the main thread,
whichever thread the signal reached, so this works with worker threads too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from sharedpg_tools.errors import Interrupted

_state = {"depth": 0, "pending": 0}


def on_signal(signum: int, _frame: FrameType | None) -> None:
    if _state["depth"]:
        _state["pending"] = _state["pending"] or signum
        return
    raise Interrupted(signum)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGTERM/SIGINT until the block ends; then raise the first one that came."""
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        if not _state["depth"] and _state["pending"]:
            signum, _state["pending"] = _state["pending"], 0
            raise Interrupted(signum)
