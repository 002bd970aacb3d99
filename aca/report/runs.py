"""The one reader of run folders.

A run folder is what ``aca-run`` writes for one job: ``result.json`` (always),
``metrics.csv`` (a training run's per-epoch history), ``config.yaml`` (the resolved
config) and the task's own files (figures, ``predictions.pt``...).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aca.errors import DataError


def read_json(path: Path) -> Any:
    """A JSON file; a DataError naming it when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"{path} is unreadable ({error})") from error


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file as dicts of text."""
    with Path(path).open(newline="") as handle:
        return list(csv.DictReader(handle))


def number(text: str | None) -> float | None:
    """A CSV cell as a number (None when empty)."""
    return float(text) if text not in ("", None) else None


@dataclass
class Run:
    """One run folder: its result.json, metrics.csv rows (numbers; None where an epoch was
    not evaluated) and config.yaml (empty when absent)."""

    path: Path
    result: dict[str, Any]
    history: list[dict[str, float | None]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def report(self) -> dict[str, Any]:
        """The task's own report of a training run (empty for other runs)."""
        return self.result.get("report") or {}

    @property
    def name(self) -> str:
        return self.path.name

    def column(self, key: str) -> list[float]:
        """``key`` over the epochs that have it."""
        return [row[key] for row in self.history if row.get(key) is not None]

    def record(self) -> dict[str, Any]:
        """The task's report with the run's provenance stamp: the run's record."""
        return {**self.report, "provenance": self.result.get("provenance")}


def read_run(folder: Path) -> Run:
    """The run folder ``folder`` (it must hold a result.json)."""
    folder = Path(folder)
    result = read_json(folder / "result.json")
    metrics, config = folder / "metrics.csv", folder / "config.yaml"
    history = ([{key: number(value) for key, value in row.items()} for row in read_csv(metrics)]
               if metrics.is_file() else [])
    return Run(folder, result, history,
               yaml.safe_load(config.read_text()) if config.is_file() else {})


def find_runs(paths: Iterable[Path], mode: str | None = None) -> list[Run]:
    """Every run folder at or under ``paths`` (sorted by path within each), optionally only
    those of one ``mode`` (``train``: training runs with their metrics.csv)."""
    runs = []
    for root in paths:
        for result in sorted(Path(root).rglob("result.json")):
            run = read_run(result.parent)
            if mode is None or (run.result.get("mode") == mode and run.history):
                runs.append(run)
    return runs
