"""Table cells, Markdown/CSV/JSON writers and the one figure-saving function."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aca.errors import MissingExtraError

FIGURE_DPI = 120


def format_cell(value: Any) -> str:
    """Numbers in a compact form that keeps small errors readable."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value == 0.0:
            return "0"
        if 1e-3 <= abs(value) < 1e4:
            return f"{value:.4g}"
        return f"{value:.3e}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(format_cell(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """The full-precision table as CSV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(headers)
        writer.writerows(rows)


def write_json(path: Path, payload: Any) -> None:
    """A record as sorted, indented JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (no display here); a
    MissingExtraError naming the ``plots`` extra when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError as error:
        raise MissingExtraError("drawing figures", "plots", error) from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure: Any, path: Path) -> Path:
    """Lay out ``figure``, write it to ``path`` (PNG at FIGURE_DPI) and free it."""
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=FIGURE_DPI)
    pyplot().close(figure)
    return path
