"""``python -m components.extract``: the same as ``dal extract`` (e.g. under torchrun)."""

import sys

from components.cli import main

sys.exit(main(["extract", *sys.argv[1:]]))
