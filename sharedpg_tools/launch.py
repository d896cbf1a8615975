"""The ``sharedpg`` entry point: the lean ``wait-for-db --once`` path when it applies, else the full CLI.

Kept to what the exec probe needs: importing the CLI (argparse and the rest) is left for the commands that
use it (``quick.py`` says why), and so is ``os``: the environment is read from ``posix``, the C module under
``os``, since importing ``os`` (with posixpath, stat and collections.abc) costs 1.6 ms of CPU in the image,
a tenth of a whole probe.
"""

import posix
import sys


def environ() -> dict[str, str]:
    """What ``os.environ`` holds, decoded as it decodes it."""
    encoding = sys.getfilesystemencoding()
    return {key.decode(encoding, "surrogateescape"): value.decode(encoding, "surrogateescape")
            for key, value in posix.environ.items()}  # fmt: skip


def main() -> None:
    from sharedpg_tools import quick

    code = quick.main(sys.argv[1:], environ())
    if code is None:
        from sharedpg_tools.cli import main as full

        code = full()
    sys.exit(code)
