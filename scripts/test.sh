#!/usr/bin/env bash
# The project's whole gate, from a clean clone: the README's test command, and what CI runs.
# Makes .venv, installs the project with its test, lint and typing extras (PostgreSQL 16 and 18 come
# as wheels), installs Debian's postgresql-15 where it is missing and we may (root with apt-get),
# then runs ruff, mypy and pytest against real servers.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'

if [ ! -x /usr/lib/postgresql/15/bin/postgres ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing postgresql-15 (Debian) for the PostgreSQL 15 tests" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null
fi

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/hadolint images/Dockerfile
.venv/bin/python -m pytest "$@"
