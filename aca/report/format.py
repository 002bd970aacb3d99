"""Table cells, Markdown/CSV/JSON writers and the one figure-saving function."""

from __future__ import annotations

import csv
import itertools
import json
import statistics
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aca.errors import MissingExtraError
from aca.report.records import STALE_MARK

FIGURE_DPI = 120


class FigureLayoutWarning(UserWarning):
    """A figure's title or label is cut off at its edge or overlaps another."""


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


def layout_problems(figure: Any) -> list[str]:
    """The titles, axis labels and legends of ``figure``, as drawn at its size, that reach
    past its edges, and the titles and labels that overlap one another."""
    renderer = figure.canvas.get_renderer()
    labels = [text for text in figure.texts if text.get_text() and text.get_visible()]
    legends = list(figure.legends)
    for axis in figure.axes:
        labels += [text for text in (axis.title, axis.xaxis.label, axis.yaxis.label)
                   if text.get_text() and text.get_visible()]
        legends += [axis.get_legend()] if axis.get_legend() is not None else []
    edges = figure.bbox
    boxes = {id(text): text.get_window_extent(renderer) for text in labels}
    problems = []
    for artist in labels + legends:
        box = boxes.get(id(artist)) or artist.get_window_extent(renderer)
        if (box.x0 < edges.x0 - 1 or box.y0 < edges.y0 - 1 or box.x1 > edges.x1 + 1
                or box.y1 > edges.y1 + 1):
            name = artist.get_text() if hasattr(artist, "get_text") else "a legend"
            problems.append(f"{name!r} is cut off at the figure's edge")
    for first, second in itertools.combinations(labels, 2):
        if boxes[id(first)].overlaps(boxes[id(second)]):
            problems.append(f"{first.get_text()!r} overlaps {second.get_text()!r}")
    return problems


def save_figure(figure: Any, path: Path) -> Path:
    """Lay out ``figure``, write it to ``path`` (PNG at FIGURE_DPI) and free it; a
    FigureLayoutWarning names each title or label that is cut off or overlaps another."""
    figure.tight_layout()
    for problem in layout_problems(figure):
        warnings.warn(f"{path.name}: {problem}", FigureLayoutWarning, stacklevel=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=FIGURE_DPI)
    pyplot().close(figure)
    return path


MISSING = "missing"


def cell(value: Any, scale: float = 1.0, stale: bool = False) -> str:
    """A number for a table (marked when its record is stale), or "missing"."""
    if value is None:
        return MISSING
    mark = f" {STALE_MARK}" if stale else ""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value + mark
    return format_cell(value * scale if scale != 1.0 else value) + mark


def mass(value: float | None, stale: bool = False) -> str:
    """A mass to the authors' six decimals, or "missing"."""
    return MISSING if value is None else f"{value:.6f}" + (f" {STALE_MARK}" if stale else "")


def spread(values: list[Any], stale: bool = False) -> str:
    """One value, or ``mean ± std`` of several (over seeds); "missing" when none."""
    values = [float(value) for value in values if value is not None]
    if len(values) < 2:
        return cell(values[0] if values else None, stale=stale)
    mark = f" {STALE_MARK}" if stale else ""
    return (f"{format_cell(statistics.mean(values))} ± "
            f"{format_cell(statistics.stdev(values))}{mark}")
