"""Reproduce the paper's tables and figures (see aca/reproduce.py and results/README.md).

    python scripts/reproduce.py run TARGET [--scale smoke|cpu|paper] [--dry-run]
    python scripts/reproduce.py render
    python scripts/reproduce.py list
"""

import sys

from aca.reproduce import main

if __name__ == "__main__":
    sys.exit(main())
