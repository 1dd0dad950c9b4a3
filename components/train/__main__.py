"""``python -m components.train [flags]``: the same as ``dal train [flags]`` (what torchrun runs)."""

import sys

from components.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
