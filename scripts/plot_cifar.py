"""Figures 7a-d of the paper from run records (metrics.csv + result.json + config.yaml).

    # Fig. 7a/b: test accuracy vs epoch and vs training wall time, one line per run
    python scripts/plot_cifar.py methods multirun/cifar10_methods --out results/cifar10
    # Fig. 7c/d: box plot of final test accuracy per model over seeds
    python scripts/plot_cifar.py seeds multirun/cifar10_seeds --out results/cifar10

Each RUN argument is a run directory or a folder searched recursively for them
(anything holding a result.json of a training run). Besides the PNG a Markdown
table of the plotted numbers is written next to it.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from aca.tasks._results import markdown_table  # noqa: E402

MODEL_LABELS = {"node18": "NODE-18", "resnet18": "ResNet-18"}


@dataclass
class RunRecord:
    """One training run: its result.json and its per-epoch metrics.csv rows."""

    path: Path
    result: dict
    history: list[dict[str, float]]

    @property
    def model(self) -> str:
        return self.result.get("report", {}).get("model", "?")

    @property
    def label(self) -> str:
        model = MODEL_LABELS.get(self.model, self.model)
        return f"{model} ({self.result['method']})" if self.model == "node18" else model

    def column(self, name: str) -> list[float]:
        return [row[name] for row in self.history if row.get(name) is not None]


def _number(text: str) -> float | None:
    return float(text) if text not in ("", None) else None


def load_runs(paths: list[Path]) -> list[RunRecord]:
    """Every training run found under ``paths`` (sorted by path)."""
    runs = []
    for root in paths:
        for result_path in sorted(Path(root).rglob("result.json")):
            result = json.loads(result_path.read_text())
            metrics = result_path.parent / "metrics.csv"
            if result.get("mode") != "train" or not metrics.is_file():
                continue
            with open(metrics, newline="") as file:
                history = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(file)]
            runs.append(RunRecord(result_path.parent, result, history))
    if not runs:
        raise SystemExit(f"no training runs (result.json + metrics.csv) under {paths}")
    return runs


def _time_axis(seconds: float) -> tuple[float, str]:
    if seconds > 2 * 3600:
        return 3600.0, "h"
    if seconds > 2 * 60:
        return 60.0, "min"
    return 1.0, "s"


def plot_methods(runs: list[RunRecord], out: Path, title: str) -> Path:
    """Fig. 7a/b: test accuracy against epoch and against cumulative training time."""
    figure, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(11, 4.2))
    longest = max(sum(run.column("time_s")) for run in runs)
    scale, unit = _time_axis(longest)
    rows = []
    for run in runs:
        evaluated = [row for row in run.history if row.get("test_acc") is not None]
        epochs = [row["epoch"] for row in evaluated]
        accuracy = [100 * row["test_acc"] for row in evaluated]
        elapsed, times = 0.0, {}
        for row in run.history:
            elapsed += row["time_s"]
            times[row["epoch"]] = elapsed / scale
        by_epoch.plot(epochs, accuracy, marker=".", label=run.label)
        by_time.plot([times[e] for e in epochs], accuracy, marker=".", label=run.label)
        final = run.result["final"]
        rows.append([run.label, run.result["report"].get("parameters"), run.result["seed"],
                     100 * final["test_acc"],
                     100 * max(row["test_acc"] for row in evaluated),
                     run.result["wall_time_s"], run.result["nfe_total"],
                     sum(run.column("nfe_forward")), sum(run.column("nfe_backward")),
                     final.get("test_nfe_per_batch", 0.0)])
    by_epoch.set(xlabel="epoch", ylabel="test accuracy (%)", title=f"{title}: accuracy vs epoch")
    by_time.set(xlabel=f"training wall time ({unit})", ylabel="test accuracy (%)",
                title=f"{title}: accuracy vs time")
    for axis in (by_epoch, by_time):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    png = out / "accuracy_vs_epoch_and_time.png"
    figure.savefig(png, dpi=120)
    plt.close(figure)
    headers = ["run", "parameters", "seed", "final test acc (%)", "best test acc (%)",
               "train wall time (s)", "NFE total", "NFE forward", "NFE backward",
               "test NFE / batch"]
    (out / "methods.md").write_text(markdown_table(headers, rows))
    return png


def plot_seeds(runs: list[RunRecord], out: Path, title: str) -> Path:
    """Fig. 7c/d: box plot of the final test accuracy of each model over seeds."""
    by_model: dict[str, list[float]] = {}
    parameters: dict[str, int] = {}
    for run in runs:
        by_model.setdefault(run.label, []).append(100 * run.result["final"]["test_acc"])
        parameters[run.label] = run.result["report"].get("parameters")
    labels = sorted(by_model)
    figure, axis = plt.subplots(figsize=(5.5, 4.2))
    axis.boxplot([by_model[label] for label in labels], tick_labels=labels)
    for position, label in enumerate(labels, start=1):
        axis.scatter([position] * len(by_model[label]), by_model[label], s=12, alpha=0.6,
                     label="one seed" if position == 1 else None, color="black")
    seeds = "/".join(str(len(by_model[label])) for label in labels)
    axis.set(xlabel="model", ylabel="final test accuracy (%)",
             title=f"{title}: final accuracy over {seeds} seeds")
    axis.grid(alpha=0.3, axis="y")
    axis.legend()
    figure.tight_layout()
    png = out / "accuracy_over_seeds.png"
    figure.savefig(png, dpi=120)
    plt.close(figure)
    rows = [[label, parameters[label], len(by_model[label]), statistics.median(by_model[label]),
             statistics.mean(by_model[label]), min(by_model[label]), max(by_model[label])]
            for label in labels]
    headers = ["model", "parameters", "runs", "median (%)", "mean (%)", "min (%)", "max (%)"]
    (out / "seeds.md").write_text(markdown_table(headers, rows))
    return png


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("figure", choices=["methods", "seeds"])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories or their parents")
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNG and table")
    parser.add_argument("--title", default=None, help="plot title (default: the task name)")
    args = parser.parse_args()
    runs = load_runs(args.runs)
    args.out.mkdir(parents=True, exist_ok=True)
    title = args.title or runs[0].result["task"]
    plot = plot_methods if args.figure == "methods" else plot_seeds
    print(plot(runs, args.out, title))


if __name__ == "__main__":
    main()
