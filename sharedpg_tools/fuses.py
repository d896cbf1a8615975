"""The platform's fuses: which stacks are on, and the seed's rule for deploying the shared database.

A fuse comes from ``--fuse STACK=BOOL`` or the environment variable ``FUSE_<STACK>`` (``FUSE_BACKSTAGE``,
``FUSE_CICD``, ``FUSE_POLICIES``, ``FUSE_OBSERVABILITY``); the flag wins. An unset fuse is off.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence

from sharedpg_tools.errors import ConfigError
from sharedpg_tools.settings import boolean
from sharedpg_tools.spec import STACKS


def env_name(stack: str) -> str:
    return f"FUSE_{stack.upper()}"


def _parse(text: str, source: str) -> bool:
    try:
        return boolean(text)
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def read(flags: Sequence[str], environ: Mapping[str, str]) -> dict[str, bool]:
    """Every stack's fuse.

    >>> read(["cicd=on"], {"FUSE_BACKSTAGE": "1", "FUSE_CICD": "false"})
    {'backstage': True, 'cicd': True, 'policies': False, 'observability': False}

    :raises ConfigError: for an unknown stack or a value that is not a boolean.
    """
    fuses = {stack: _parse(environ[env_name(stack)], env_name(stack)) if env_name(stack) in environ else False
             for stack in STACKS}  # fmt: skip
    for flag in flags:
        stack, eq, value = flag.partition("=")
        if not eq or stack not in STACKS:
            raise ConfigError(f"--fuse {flag!r}: use STACK=BOOL with STACK one of {', '.join(STACKS)}")
        fuses[stack] = _parse(value, f"--fuse {stack}")
    return fuses


def database_needed(fuses: Mapping[str, bool], stacks: Sequence[str]) -> bool:
    """Deploy the shared PostgreSQL iff a stack it serves (``stacks``: those of the spec's tenants) is on. With
    the full spec, whose tenants cover every stack, that is the seed's truth table (any fuse on); with the
    pragmatic one (Backstage and SonarQube), only the backstage or cicd fuse."""
    return any(fuses.get(stack, False) for stack in stacks)
