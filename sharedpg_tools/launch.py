"""The ``sharedpg`` entry point: the lean ``wait-for-db --once`` path when it applies, else the full CLI.

Kept to what the exec probe needs: importing the CLI (argparse and the rest) is left for the commands that
use it (``quick.py`` says why).
"""

import os
import sys


def main() -> None:
    from sharedpg_tools import quick

    code = quick.main(sys.argv[1:], os.environ)
    if code is None:
        from sharedpg_tools.cli import main as full

        code = full()
    sys.exit(code)
