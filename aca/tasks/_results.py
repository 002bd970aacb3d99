"""Small helpers the paper tasks share to write their tables and figures."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from aca.train.config import ConfigError


def check_names(names: Sequence[str], valid: Iterable[str], key: str) -> list[str]:
    """``names`` as a list, or a ConfigError naming the first unknown one and the choices."""
    valid = list(valid)
    for name in names:
        if name not in valid:
            raise ConfigError(f"{key}: unknown name {name!r}; choose one of: {', '.join(valid)}")
    return list(names)


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
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def publish(out_dir: Path, results_dir: str | None, names: list[str]) -> None:
    """Copy the named files of a run directory into the committed results folder
    (``task.results_dir``), when the config names one."""
    if not results_dir:
        return
    target = Path(results_dir)
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(Path(out_dir) / name, target / name)


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def history_totals(history: list[dict[str, float]]) -> dict[str, float]:
    """Totals over the trainer's per-epoch history: NFE and wall time, plus the
    last epoch's losses."""
    totals: dict[str, float] = {"epochs": len(history)}
    for key in ("nfe_forward", "nfe_backward", "time_s"):
        values = [entry[key] for entry in history if key in entry]
        if values:
            totals[f"total_{key}"] = float(sum(values))
    if history:
        for key, value in history[-1].items():
            if key.startswith(("train_", "test_")):
                totals[f"final_{key}"] = value
    return totals
