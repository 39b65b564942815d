"""``python -m videopoet``: the same command as ``videopoet``."""

import sys

from videopoet.cli import main

if __name__ == "__main__":
    sys.exit(main())
