"""``python -m components.search``: the same as ``dal search``."""

import sys

from components.cli import main

sys.exit(main(["search", *sys.argv[1:]]))
