"""Cross-run summaries, built from run folders (``python scripts/reproduce.py summarize``):

- ``methods``, ``seeds``: CIFAR/digits training runs: Fig. 7a/b (accuracy against epoch
  and time, ``methods.md``) and Fig. 7c/d (accuracy over seeds, ``seeds.md``);
- ``timeseries``: the Latent ODE / ODE-RNN sweep: ``table.md``, ``table.csv`` (a record,
  one provenance stamp per row, with the checksum of generated data), ``trajectories.png``;
- ``vdp``, ``three_body``: each run's record (its report and stamp) as
  ``runs/<name>.json`` and its figure beside the summary table and (three-body) the
  combined figure, rebuilt from every record in ``runs/``.
"""

from __future__ import annotations

import math
import shutil
import statistics
from collections.abc import Callable
from pathlib import Path

import torch

from aca import provenance
from aca.errors import ConfigError, DataError
from aca.report import figures, paper
from aca.report.format import markdown_table, write_csv, write_json
from aca.report.runs import Run, find_runs, read_json
from aca.report.tables import MODEL_LABELS

TIMESERIES_COLUMNS = ("model", "observed_fraction", "method", "seed", "test_mse",
                      "test_mse_unobserved", "best_test_mse", "reference_mse", "mse_ratio",
                      "nfe_forward_per_iter", "nfe_backward_per_iter", "iterations",
                      "train_time_s", "epochs")


def _training_runs(paths: list[Path]) -> list[Run]:
    runs = find_runs(paths, mode="train")
    if not runs:
        raise DataError(f"no training runs (result.json + metrics.csv) under "
                        f"{', '.join(map(str, paths))}")
    return runs


def _label(run: Run) -> str:
    model = run.report.get("model", "?")
    label = MODEL_LABELS.get(model, model)
    return f"{label} ({run.result['method']})" if model == "node18" else label


# ------------------------------------------------------------------ classification


def methods(paths: list[Path], out: Path, title: str | None = None) -> Path:
    """Fig. 7a/b: test accuracy against epoch and training time, one line per run, and
    ``methods.md`` with each run's final and best accuracy, time and NFE."""
    runs = _training_runs(paths)
    title = title or runs[0].result["task"]
    curves, rows = [], []
    for run in runs:
        evaluated = [row for row in run.history if row.get("test_acc") is not None]
        elapsed, seconds = 0.0, {}
        for row in run.history:
            elapsed += row["time_s"]
            seconds[row["epoch"]] = elapsed
        epochs = [row["epoch"] for row in evaluated]
        accuracy = [100 * row["test_acc"] for row in evaluated]
        curves.append((_label(run), epochs, [seconds[e] for e in epochs], accuracy))
        final = run.result["final"]
        rows.append([_label(run), run.report.get("parameters"), run.result["seed"],
                     100 * final["test_acc"], max(accuracy), run.result["wall_time_s"],
                     run.result["nfe_total"], sum(run.column("nfe_forward")),
                     sum(run.column("nfe_backward")), final.get("test_nfe_per_batch", 0.0)])
    out.mkdir(parents=True, exist_ok=True)
    first_seed = min(row[2] for row in rows)
    png = figures.accuracy_curves([curve for curve, row in zip(curves, rows, strict=True)
                                   if row[2] == first_seed],
                                  f"{title}, seed {first_seed}",
                                  out / "accuracy_vs_epoch_and_time.png")
    by_label: dict[str, list[list]] = {}
    for row in rows:
        by_label.setdefault(row[0], []).append(row)
    over_seeds = [[label, len(group), mean_std([row[3] for row in group]),
                   mean_std([row[5] for row in group]), mean_std([row[6] for row in group])]
                  for label, group in by_label.items()]
    headers = ["run", "parameters", "seed", "final test acc (%)", "best test acc (%)",
               "train wall time (s)", "NFE total", "NFE forward", "NFE backward",
               "test NFE / batch"]
    (out / "methods.md").write_text(
        "## Over seeds (mean ± std)\n\n"
        + markdown_table(["run", "seeds", "final test acc (%)", "train wall time (s)",
                          "NFE total"], over_seeds)
        + "\n## Every run\n\n" + markdown_table(headers, rows))
    return png


def mean_std(values: list[float]) -> str:
    """``mean ± sample std`` (the value alone for one run)."""
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}"


def seeds(paths: list[Path], out: Path, title: str | None = None) -> Path:
    """Fig. 7c/d: the final test accuracy of each model over seeds (a box plot) and
    ``seeds.md`` with its median, mean, min and max."""
    runs = _training_runs(paths)
    title = title or runs[0].result["task"]
    by_model: dict[str, list[float]] = {}
    parameters: dict[str, int] = {}
    for run in runs:
        by_model.setdefault(_label(run), []).append(100 * run.result["final"]["test_acc"])
        parameters[_label(run)] = run.report.get("parameters")
    out.mkdir(parents=True, exist_ok=True)
    png = figures.accuracy_boxes(by_model, title, out / "accuracy_over_seeds.png")
    rows = [[label, parameters[label], len(values), statistics.median(values),
             statistics.mean(values), min(values), max(values)]
            for label, values in sorted(by_model.items())]
    headers = ["model", "parameters", "runs", "median (%)", "mean (%)", "min (%)", "max (%)"]
    (out / "seeds.md").write_text(markdown_table(headers, rows))
    return png


# --------------------------------------------------------------------- time series


def _series_row(run: Run) -> dict:
    """One row of the time-series table from a run folder; ``reference_mse`` is the test
    MSE of the training mean on the run's own data (each seed draws its own)."""
    task = run.config["task"]
    n_series = task.get("n_trajectories") or task.get("n_series")
    iterations_per_epoch = math.ceil(int(n_series * task["train_fraction"]) / task["batch_size"])
    iterations = iterations_per_epoch * len(run.history)
    final = run.result["final"]
    reference = run.report.get("mean_baseline_mse")
    return {
        "task": task["name"], "model": task["model"],
        "observed_fraction": float(task["observed_fraction"]), "method": run.result["method"],
        "seed": run.result["seed"],
        "test_mse": final["test_mse"], "test_mse_unobserved": final["test_mse_unobserved"],
        "best_test_mse": min(run.column("test_mse")), "reference_mse": reference,
        "mse_ratio": final["test_mse"] / reference if reference else None,
        "nfe_forward_per_iter": sum(run.column("nfe_forward")) / iterations,
        "nfe_backward_per_iter": sum(run.column("nfe_backward")) / iterations,
        "iterations": iterations, "train_time_s": run.result["wall_time_s"],
        "epochs": len(run.history), "provenance": run.result.get("provenance"), "run": run,
    }


def _over_seeds(rows: list[dict], model: str) -> dict[tuple[float, str], list[dict]]:
    """The runs of ``model`` by (observed fraction, method), one per seed, in table order."""
    grouped: dict[tuple[float, str], list[dict]] = {}
    for row in rows:
        if row["model"] == model:
            grouped.setdefault((row["observed_fraction"], row["method"]), []).append(row)
    return dict(sorted(grouped.items(), key=lambda item: (item[0][0],
                                                          paper.METHODS.index(item[0][1]))))


def _mean_std(runs: list[dict], key: str, scale: float = 1.0) -> str:
    """``mean ± std`` of ``key`` over ``runs`` (std 0 for one run), or "-" when absent."""
    values = [run[key] * scale for run in runs if run[key] is not None]
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3g} ± {spread:.2g}"


def _pivot(rows: list[dict], model: str) -> str:
    """Test MSE (x 1e-2, mean ± std over seeds) with observed fractions as rows and methods
    as columns."""
    grouped = _over_seeds(rows, model)
    table = []
    for fraction in sorted({fraction for fraction, _ in grouped}):
        table.append([f"{fraction:.0%}", *(_mean_std(grouped[(fraction, method)], "test_mse", 100)
                                           if (fraction, method) in grouped else "-"
                                           for method in paper.METHODS)])
    return markdown_table(["observed", *paper.METHODS], table)


def _seed_summary(rows: list[dict], model: str) -> str:
    """Per observed fraction and method, over seeds: test MSE, its ratio to the
    training-mean predictor, NFE per training iteration and training time."""
    table = [[f"{fraction:.0%}", method, len(runs), _mean_std(runs, "test_mse", 100),
              _mean_std(runs, "mse_ratio"),
              statistics.fmean(run["nfe_forward_per_iter"] for run in runs),
              statistics.fmean(run["nfe_backward_per_iter"] for run in runs),
              _mean_std(runs, "train_time_s")]
             for (fraction, method), runs in _over_seeds(rows, model).items()]
    return markdown_table(["observed", "method", "seeds", "test MSE (x 1e-2)",
                           "/ mean predictor", "NFE fwd / iter", "NFE bwd / iter",
                           "train time (s)"], table)


def timeseries(paths: list[Path], out: Path, fraction: float = 0.2,
               dims: list[int] | None = None, series: list[int] | None = None) -> Path:
    """``table.md`` (test MSE, mean ± std over seeds, per observed fraction x method for
    each model; its ratio to the training-mean predictor, NFE per iteration and training
    time; every run), ``table.csv`` (every run's numbers, each row stamped with its run's
    provenance) and ``trajectories.png`` (test ``series`` at observed ``fraction``, first
    seed: truth, observed points and each method's prediction, both models)."""
    rows = sorted((_series_row(run) for run in _training_runs(paths)),
                  key=lambda row: (row["model"], row["observed_fraction"],
                                   paper.METHODS.index(row["method"]), row["seed"]))
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "table.csv", (*TIMESERIES_COLUMNS, *provenance.CSV_FIELDS, "data"),
              [[row[key] for key in TIMESERIES_COLUMNS] + provenance.csv_cells(row["provenance"])
               + [provenance.data_cell(row["provenance"])] for row in rows])
    sections = []
    references = {row["seed"]: row["reference_mse"] for row in rows if row["reference_mse"]}
    if references:
        sections.append(f"Reference: predicting each dimension's training mean everywhere gives "
                        f"test MSE {statistics.fmean(references.values()) * 100:.4g} x 1e-2 "
                        f"(mean over {len(references)} seed(s), each with its own data); "
                        f"'/ mean predictor' divides each run's test MSE by its seed's.\n")
    for model in sorted({row["model"] for row in rows}):
        title = figures.SERIES_MODEL_TITLES[model]
        sections.append(f"### {title}: test MSE (x 1e-2, mean ± std over seeds), all points\n\n"
                        + _pivot(rows, model))
        sections.append(f"### {title}: over seeds\n\n" + _seed_summary(rows, model))
    sections.append("### Every run\n\n" + markdown_table(
        [*TIMESERIES_COLUMNS[:4], "test MSE", "test MSE unobserved", "best test MSE",
         "mean predictor MSE", "/ mean predictor", "NFE fwd / iter", "NFE bwd / iter",
         "iterations", "train time (s)", "epochs"],
        [[row[key] for key in TIMESERIES_COLUMNS] for row in rows]))
    (out / "table.md").write_text("\n".join(sections))
    seed = min(row["seed"] for row in rows)
    columns = {}
    for model in (m for m in figures.SERIES_MODEL_TITLES if any(r["model"] == m for r in rows)):
        picked = [row for row in rows if row["model"] == model and row["seed"] == seed
                  and math.isclose(row["observed_fraction"], fraction)]
        if not picked:
            raise DataError(f"no {model} runs at observed fraction {fraction}, seed {seed}")
        columns[model] = [(row["method"], row["test_mse"],
                           torch.load(row["run"].path / "predictions.pt")) for row in picked]
    n_dims = next(iter(columns.values()))[0][2]["values"].shape[-1]
    figures.series_methods(columns, f"{fraction:.0%} observed, seed {seed}", rows[0]["task"],
                           dims or list(range(min(2, n_dims))), series or [0, 1, 2],
                           out / "trajectories.png")
    return out / "table.md"


# ---------------------------------------------------------- collected run records


def _collect(paths: list[Path], out: Path, name: Callable[[dict], str],
             figure: Callable[[str], str]) -> list[Run]:
    """Write each training run's record (its report and provenance stamp) to
    ``out/runs/<name>.json`` and copy its figure into ``out``."""
    runs = _training_runs(paths)
    for run in runs:
        record = run.record()
        write_json(out / "runs" / f"{name(record)}.json", record)
        shutil.copyfile(run.path / figure(name(record)), out / figure(name(record)))
    return runs


def _records(out: Path) -> list[dict]:
    return [read_json(path) for path in sorted((out / "runs").glob("*.json"))]


def fit_name(record: dict) -> str:
    return f"{record['method']}_{record['solver']}_rtol{record['rtol']:g}"


def vdp(paths: list[Path], out: Path) -> Path:
    """Van der Pol learning: each run's record and fit figure, and ``vdp_learning.md/.csv``
    from every record in ``out/runs``."""
    _collect(paths, out, fit_name, lambda name: f"vdp_fit_{name}.png")
    keys = ["method", "solver", "rtol", "atol", "mu_true", "mu_init", "mu", "mu_error",
            "final_train_mse", "final_test_mse", "total_nfe_forward", "total_nfe_backward",
            "total_time_s", "epochs"]
    rows = [[record.get(key, "") for key in keys] for record in _records(out)]
    write_csv(out / "vdp_learning.csv", keys, rows)
    (out / "vdp_learning.md").write_text(
        "# Van der Pol: recover mu from observed trajectories\n\n"
        "mu_error = |mu - mu_true|; MSE of the positions and velocities at the observed times "
        "(final epoch); NFE and time summed over all training epochs.\n\n"
        + markdown_table(keys, rows))
    return out / "vdp_learning.md"


def robertson(paths: list[Path], out: Path) -> Path:
    """Robertson learning: each run's record and fit figure, and
    ``robertson_learning.md/.csv`` from every record in ``out/runs``."""
    _collect(paths, out, fit_name, lambda name: f"robertson_fit_{name}.png")
    keys = ["method", "solver", "rtol", "atol", "k1", "k2", "k3", "k1_rel_error",
            "k2_rel_error", "k3_rel_error", "final_train_mse", "final_test_mse",
            "total_nfe_forward", "total_nfe_backward", "total_time_s", "epochs"]
    records = [{**record, **dict(zip(("k1", "k2", "k3"), record.get("rates", [])))}
               for record in _records(out)]
    rows = [[record.get(key, "") for key in keys] for record in records]
    write_csv(out / "robertson_learning.csv", keys, rows)
    (out / "robertson_learning.md").write_text(
        "# Robertson: learn the rate constants from observed trajectories\n\n"
        "True k = (0.04, 3e7, 1e4); k*_rel_error = |k / k_true - 1| after the last epoch; MSE "
        "of the scaled states (1, 1e4, 1) at the observed times (final epoch); NFE and time "
        "summed over all training epochs.\n\n" + markdown_table(keys, rows))
    return out / "robertson_learning.md"


def three_body_name(record: dict) -> str:
    return f"{record['model']}_{record['method']}"


def three_body(paths: list[Path], out: Path) -> Path:
    """Three-body: each run's record and figure, ``three_body.md/.csv`` and the combined
    figure ``three_body_trajectories.png`` from every record in ``out/runs``."""
    runs = _collect(paths, out, three_body_name, lambda name: f"three_body_{name}.png")
    settings = {(run.report["T_train"], tuple(run.report["true_masses"])) for run in runs}
    if len(settings) != 1:
        raise ConfigError(f"the runs under {', '.join(map(str, paths))} observe different "
                          f"windows or masses (T_train, true masses: {sorted(settings)}); "
                          "summarize each setting on its own")
    (T_train, true_masses), = settings
    records = _records(out)
    keys = ["model", "method", "m1", "m2", "m3", "mass_error", "best_epoch", "best_m1",
            "best_m2", "best_m3", "best_mass_error", "extrap_rmse",
            "extrap_rmse_beyond", "total_nfe_forward", "total_nfe_backward", "total_time_s",
            "epochs", "solver", "rtol", "atol"]
    rows = [[record.get(key, "-") for key in keys] for record in records]
    write_csv(out / "three_body.csv", keys, rows)
    shown = [[f"{value:.6f}" if key.removeprefix("best_") in ("m1", "m2", "m3")
              and isinstance(value, float)
              else value for key, value in zip(keys, row, strict=True)] for row in rows]
    (out / "three_body.md").write_text(
        "# Three-body problem: learn the masses, extrapolate\n\n"
        f"True masses {true_masses}; the paper's ACA run recovers ({paper.masses()}).\n"
        "m1-m3: the final epoch's masses; best_*: the model with the lowest unweighted "
        "training loss (the one the authors keep and report). "
        "mass_error = max |m_i - true m_i|; extrap_rmse = position RMSE over the test window, "
        "extrap_rmse_beyond = over the part after the observed window.\n\n"
        + markdown_table(keys, shown))
    figures.three_body_orbits({f"{record['model']}, {record['method']}": record["curves"]
                               for record in records}, T_train, true_masses,
                              out / "three_body_trajectories.png")
    return out / "three_body.md"


SUMMARIES: dict[str, Callable[..., Path]] = {"methods": methods, "seeds": seeds,
                                             "timeseries": timeseries, "vdp": vdp,
                                             "three_body": three_body, "robertson": robertson}
