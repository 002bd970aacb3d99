"""Reproduce the paper's tables and figures (see aca/report/cli.py and results/README.md).

    python scripts/reproduce.py run TARGET [--scale smoke|cpu|paper] [--dry-run]
    python scripts/reproduce.py render
    python scripts/reproduce.py list
    python scripts/reproduce.py check [--strict]
    python scripts/reproduce.py drift [NAME ...]
    python scripts/reproduce.py summarize KIND RUNS... --out DIR
"""

import sys

from aca.report.cli import main

if __name__ == "__main__":
    sys.exit(main())
