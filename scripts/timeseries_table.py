"""Tables and figure of a time-series sweep (experiments/mujoco_table.yaml, sines_table.yaml).

Reads every run directory of a Hydra multirun (config.yaml, metrics.csv,
result.json, predictions.pt) and writes into ``--out``:
``table.md`` (test MSE per observed fraction x gradient method for each model, and
per run: MSE, NFE per training iteration, wall time), ``table.csv`` (every number)
and ``trajectories.png`` (one test series: truth, observed points and each method's
prediction for a few dimensions, both models, at ``--fraction``).

    python scripts/timeseries_table.py multirun/mujoco_table --out results/mujoco
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import torch
import yaml
from omegaconf import OmegaConf

from aca import provenance
from aca.tasks._results import markdown_table, pyplot, write_csv
from aca.tasks.timeseries import AXIS_LABELS
from aca.train.config import task_class

METHODS = ("aca", "adjoint", "naive")
LINE_STYLES = {"aca": "--", "adjoint": ":", "naive": "-."}  # overlapping curves stay visible
MODEL_TITLES = {"latent_ode": "Latent ODE", "ode_rnn": "ODE-RNN"}
COLUMNS = ("model", "observed_fraction", "method", "test_mse", "test_mse_unobserved",
           "best_test_mse", "nfe_forward_per_iter", "nfe_backward_per_iter", "iterations",
           "train_time_s", "epochs")


def read_run(run_dir: Path) -> dict:
    """One row of the table from a run directory."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    result = json.loads((run_dir / "result.json").read_text())
    with (run_dir / "metrics.csv").open() as handle:
        history = list(csv.DictReader(handle))
    task = config["task"]
    n_series = task.get("n_trajectories") or task.get("n_series")
    iterations_per_epoch = math.ceil(int(n_series * task["train_fraction"]) / task["batch_size"])
    iterations = iterations_per_epoch * len(history)
    final = result["final"]
    return {
        "task": task["name"],
        "model": task["model"],
        "observed_fraction": float(task["observed_fraction"]),
        "method": result["method"],
        "test_mse": final["test_mse"],
        "test_mse_unobserved": final["test_mse_unobserved"],
        "best_test_mse": min(float(row["test_mse"]) for row in history if row["test_mse"]),
        "nfe_forward_per_iter": sum(float(r["nfe_forward"]) for r in history) / iterations,
        "nfe_backward_per_iter": sum(float(r["nfe_backward"]) for r in history) / iterations,
        "iterations": iterations,
        "train_time_s": result["wall_time_s"],
        "epochs": len(history),
        "provenance": result.get("provenance"),
        "run_dir": run_dir,
    }


def mean_baseline_mse(run_dir: Path) -> float:
    """Test MSE of predicting each dimension's training mean at every point: the
    score of a model that learned nothing about the individual series."""
    cfg = OmegaConf.load(run_dir / "config.yaml")
    train, test = task_class(cfg)(cfg).datasets()
    values, mask = train.tensors[0], train.tensors[1]
    mean = (values * mask).sum(dim=(0, 1)) / mask.sum(dim=(0, 1))
    test_values, test_mask = test.tensors[0], test.tensors[1]
    return float(((test_values - mean) ** 2 * test_mask).sum() / test_mask.sum())


def pivot(rows: list[dict], model: str) -> str:
    """Test MSE (x 1e-2) with observed fractions as rows and methods as columns."""
    fractions = sorted({row["observed_fraction"] for row in rows if row["model"] == model})
    table = []
    for fraction in fractions:
        cells = {row["method"]: row["test_mse"] * 100 for row in rows
                 if row["model"] == model and row["observed_fraction"] == fraction}
        table.append([f"{fraction:.0%}", *(cells.get(method, "-") for method in METHODS)])
    return markdown_table(["observed", *METHODS], table)


def plot(rows: list[dict], fraction: float, path: Path, dims: list[int], index: int) -> None:
    """Truth, observed points and every method's prediction of one test series."""
    plt = pyplot()
    time_label, value_label = AXIS_LABELS[rows[0]["task"]]
    models = [model for model in MODEL_TITLES if any(row["model"] == model for row in rows)]
    figure, axes = plt.subplots(len(dims), len(models), figsize=(5.5 * len(models),
                                2.3 * len(dims)), sharex=True, squeeze=False)
    for column, model in enumerate(models):
        runs = sorted((row for row in rows if row["model"] == model
                       and math.isclose(row["observed_fraction"], fraction)),
                      key=lambda row: METHODS.index(row["method"]))
        if not runs:
            raise SystemExit(f"no {model} runs at observed fraction {fraction}")
        for row_index, dim in enumerate(dims):
            axis = axes[row_index, column]
            for number, run in enumerate(runs):
                arrays = torch.load(run["run_dir"] / "predictions.pt")
                times = arrays["times"]
                if number == 0:
                    exists = arrays["mask"][index, :, dim] > 0
                    seen = arrays["observed"][index, :, dim] > 0
                    axis.plot(times[exists], arrays["values"][index, exists, dim], "k-",
                              lw=2, label="true")
                    axis.plot(times[seen], arrays["values"][index, seen, dim], "ko", ms=4,
                              label="observed")
                axis.plot(times, arrays["predictions"][index, :, dim], LINE_STYLES[run["method"]],
                          color=f"C{number}", lw=1.5,
                          label=f"{run['method']} (test MSE {run['test_mse']:.3g})")
            axis.set_ylabel(f"dim {dim} ({value_label})")
        axes[0, column].set_title(f"{MODEL_TITLES[model]}, {fraction:.0%} observed, test series "
                                  f"{index}")
        axes[0, column].legend(fontsize=7, loc="best")
        axes[-1, column].set_xlabel(time_label)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="the multirun directory of the sweep")
    parser.add_argument("--out", type=Path, required=True, help="where to write the results")
    parser.add_argument("--fraction", type=float, default=0.2, help="observed fraction to plot")
    parser.add_argument("--dims", type=int, nargs="+", default=None,
                        help="dims to plot (default: the first three)")
    parser.add_argument("--series", type=int, default=0, help="test series to plot")
    args = parser.parse_args()
    run_dirs = sorted(path.parent for path in args.sweep_dir.glob("*/result.json"))
    if not run_dirs:
        raise SystemExit(f"no runs (*/result.json) under {args.sweep_dir}")
    rows = sorted((read_run(run_dir) for run_dir in run_dirs),
                  key=lambda row: (row["model"], row["observed_fraction"],
                                   METHODS.index(row["method"])))
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "table.csv", COLUMNS + provenance.CSV_FIELDS,
              [[row[key] for key in COLUMNS] + provenance.csv_cells(row["provenance"])
               for row in rows])
    baseline = mean_baseline_mse(rows[0]["run_dir"])
    sections = [f"Reference: predicting each dimension's training mean everywhere gives test "
                f"MSE {baseline * 100:.4g} x 1e-2.\n"]
    for model in sorted({row["model"] for row in rows}):
        sections.append(f"### {MODEL_TITLES[model]}: test MSE (x 1e-2), all points\n\n"
                        + pivot(rows, model))
    sections.append("### Every run\n\n" + markdown_table(
        [*COLUMNS[:3], "test MSE", "test MSE unobserved", "best test MSE", "NFE fwd / iter",
         "NFE bwd / iter", "iterations", "train time (s)", "epochs"],
        [[row[key] for key in COLUMNS] for row in rows]))
    (args.out / "table.md").write_text("\n".join(sections))
    n_dims = torch.load(rows[0]["run_dir"] / "predictions.pt")["values"].shape[-1]
    dims = args.dims or list(range(min(3, n_dims)))
    plot(rows, args.fraction, args.out / "trajectories.png", dims, args.series)
    print((args.out / "table.md").read_text())


if __name__ == "__main__":
    main()
