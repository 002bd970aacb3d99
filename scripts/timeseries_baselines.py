"""Trivial baselines of the time-series tables (no training): each series predicted from
its own observed points by their mean, by the nearest observed point and by linear
interpolation between them, scored like the models (test MSE over every existing point).

    python scripts/timeseries_baselines.py results/mujoco/runs --out results/mujoco

Reads each run folder's ``config.yaml`` under RUNS and rebuilds that run's test set (the
same data, windows, split and observed points, which depend on the run's seed and
observed fraction) once per (seed, observed fraction). Writes ``baselines.csv`` (one row
per seed, fraction and baseline, with the provenance stamp) and ``baselines.md`` into
``--out``. The claims table judges the models against these (aca/report/claims.py).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from omegaconf import OmegaConf

from aca import provenance
from aca.errors import DataError
from aca.report.baselines import BASELINES, baseline_predictions, masked_mse
from aca.report.format import markdown_table, write_csv
from aca.tasks.timeseries import TimeSeriesTask, mean_baseline_mse
from aca.train.config import build_task

COLUMNS = ("observed_fraction", "seed", "baseline", "test_mse", "reference_mse", "mse_ratio")


def baseline_rows(runs: Path, data_dir: str | None = None) -> list[dict]:
    """One row per (seed, observed fraction, baseline) of the runs' settings."""
    configs = sorted(runs.glob("*/config.yaml"))
    if not configs:
        raise DataError(f"no run folders with a config.yaml under {runs}")
    rows, done = [], set()
    for path in configs:
        cfg = OmegaConf.load(path)
        if data_dir is not None:
            cfg.data_dir = data_dir
        key = (int(cfg.seed), float(cfg.task.observed_fraction))
        if key in done:
            continue
        done.add(key)
        task = build_task(cfg)
        if not isinstance(task, TimeSeriesTask):
            raise DataError(f"{path}: task {cfg.task.name} is not a time-series task")
        train, test = task.datasets()
        reference = mean_baseline_mse(train, test)
        predictions = baseline_predictions(test.times, test.values, test.observed)
        for name in BASELINES:
            mse = masked_mse(predictions[name], test.values, test.mask)
            rows.append({"observed_fraction": key[1], "seed": key[0], "baseline": name,
                         "test_mse": mse, "reference_mse": reference,
                         "mse_ratio": mse / reference})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, help="folder of the table's run folders")
    parser.add_argument("--out", type=Path, required=True, help="where the tables go")
    parser.add_argument("--data-dir", default=None,
                        help="data directory (default: the runs' own data_dir)")
    args = parser.parse_args()
    rows = baseline_rows(args.runs, args.data_dir)
    stamp = provenance.csv_cells(provenance.stamp())
    write_csv(args.out / "baselines.csv", COLUMNS + provenance.CSV_FIELDS,
              [[row[key] for key in COLUMNS] + stamp for row in rows])
    summary = []
    for fraction in sorted({row["observed_fraction"] for row in rows}):
        for name in BASELINES:
            chosen = [row for row in rows
                      if row["observed_fraction"] == fraction and row["baseline"] == name]
            summary.append([f"{fraction:.0%}", name, len(chosen),
                            statistics.fmean(row["test_mse"] for row in chosen),
                            statistics.fmean(row["mse_ratio"] for row in chosen)])
    (args.out / "baselines.md").write_text(
        "Trivial baselines (no training), mean over seeds; written by "
        f"`python scripts/timeseries_baselines.py {args.runs} --out {args.out}`.\n\n"
        + markdown_table(["observed", "baseline", "seeds", "test MSE", "/ mean predictor"],
                         summary))
    print(f"wrote {args.out / 'baselines.csv'} ({len(rows)} rows)")


if __name__ == "__main__":
    main()
