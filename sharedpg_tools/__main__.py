"""``python -m sharedpg_tools``: the same entry point as the ``sharedpg`` console script."""

from sharedpg_tools.launch import main

main()
