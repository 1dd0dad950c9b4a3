"""``python -m components.evaluate``: the same as ``dal evaluate``."""

import sys

from components.cli import main

sys.exit(main(["evaluate", *sys.argv[1:]]))
