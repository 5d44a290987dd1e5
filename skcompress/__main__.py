"""``python -m skcompress`` runs the command line."""

import sys

from skcompress.cli import main

if __name__ == "__main__":
    sys.exit(main())
