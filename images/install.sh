#!/bin/sh
# The image's install steps, in one place: the Dockerfile runs this, and the test suite runs it into a
# fresh directory on the host as well as inside the real image build.
#   install.sh SOURCE_DIR TARGET_VENV
# Makes a virtualenv at TARGET_VENV; installs the runtime dependencies exactly as locked in
# images/requirements.lock (every file checked against its hash, wheels only); then sharedpg's own wheel,
# built from SOURCE_DIR, with no further resolution (--no-deps); then `pip check` proves the lock satisfies
# what pyproject.toml asks for. Removes pip and setuptools and precompiles all bytecode (exec probes pay no
# compile cost, and a read-only root filesystem is never written to).
set -eu
src=$1
target=$2
python3 -m venv "$target"
pip() { "$target/bin/python" -m pip --no-cache-dir --disable-pip-version-check --no-input "$@"; }
pip install --quiet --require-hashes --only-binary :all: -r "$src/images/requirements.lock"
wheels=$(mktemp -d)
pip wheel --quiet --no-deps --wheel-dir "$wheels" "$src"
pip install --quiet --no-deps "$wheels"/sharedpg-*.whl
pip check
rm -rf "$wheels"
pip uninstall --yes --quiet pip setuptools
# The console script pip writes imports re before anything else: milliseconds of every exec probe. This
# one starts the interpreter isolated and without the site module (-I -S: no PYTHON* variables, no user
# site, no .pth processing), puts the environment's own packages on the path, and goes straight to the
# entry point (sharedpg_tools/launch.py).
packages=$("$target/bin/python" -I -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
cat > "$target/bin/sharedpg" <<LAUNCHER
#!$target/bin/python -IS
import sys
sys.path.append("$packages")
from sharedpg_tools.launch import main
main()
LAUNCHER
"$target/bin/python" -m compileall -q -j 0 "$target/lib"
