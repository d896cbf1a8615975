"""``python -m sharedpg_tools``: the same entry point as the ``sharedpg`` console script."""

import sys

from sharedpg_tools.cli import main

sys.exit(main())
