#!/bin/sh
# The image's install steps, in one place: the Dockerfile runs this, and the test suite runs it into a
# fresh directory to prove the steps work (no Docker engine exists in CI).
#   install.sh SOURCE_DIR TARGET_VENV
# Builds sharedpg's wheel from SOURCE_DIR, installs it with its dependencies into a new virtualenv at
# TARGET_VENV, removes pip and setuptools from it, and precompiles all bytecode (exec probes then pay
# no compile cost, and a read-only root filesystem is never written to).
set -eu
src=$1
target=$2
wheels=$(mktemp -d)
python3 -m pip wheel --no-cache-dir --no-deps --wheel-dir "$wheels" "$src"
python3 -m venv "$target"
"$target/bin/python" -m pip install --no-cache-dir --disable-pip-version-check "$wheels"/sharedpg-*.whl
"$target/bin/python" -m pip uninstall --yes --quiet pip setuptools
"$target/bin/python" -m compileall -q -j 0 "$target/lib"
rm -rf "$wheels"
