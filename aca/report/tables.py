"""The paper's tables, filled from the run records under results/: our numbers beside the
paper's (aca.report.paper), each missing or partial record noted once, the cells of stale
records marked."""

from __future__ import annotations

import csv
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aca.errors import DataError
from aca.report import paper
from aca.report.baselines import BASELINES
from aca.report.format import MISSING, cell, mass, spread
from aca.report.paper import METHODS, approx
from aca.report.records import STALE_MARK, STALE_NOTE, is_current, stamp_of
from aca.report.runs import read_json

MODEL_LABELS = {"node18": "NODE-18", "resnet18": "ResNet-18"}
VDP_REVERSE = f"x: {approx(paper.VDP_REVERSE_X)} vs {paper.VDP_X0}"


@dataclass
class Table:
    """One rendered table: our numbers with the paper's in a column beside them."""

    key: str
    title: str
    headers: list[str]
    rows: list[list[Any]]
    notes: list[str] = field(default_factory=list)


@dataclass
class Records:
    """Reads run records under ``root``; every missing or partial one is noted once."""

    root: Path
    problems: list[str] = field(default_factory=list)
    #: the current code hash; None: staleness unknown (nothing is marked)
    code_now: str | None = None

    def stale(self, *records: Any) -> bool:
        """Whether any of these records (JSON records or CSV rows; None: missing) is stale."""
        return self.code_now is not None and any(
            record is not None and not is_current(stamp_of(record), self.code_now)
            for record in records)

    def _note(self, message: str) -> None:
        if message not in self.problems:
            self.problems.append(message)

    def missing(self, rel: str, target: str, what: str = "is missing") -> None:
        """Note a record that is not there, with the command that makes it."""
        self._note(f"{self.root.name}/{rel} {what}: run `python scripts/reproduce.py run "
                   f"{target}`")

    def partial(self, rel: str, what: str) -> None:
        """Note a record that lacks something."""
        self._note(f"{self.root.name}/{rel} is partial: no {what}")

    def json(self, rel: str, target: str) -> Any:
        """The parsed file, or None (noted) when it is missing or unreadable."""
        path = self.root / rel
        if not path.is_file():
            self.missing(rel, target)
            return None
        try:
            return read_json(path)
        except DataError as error:
            self.missing(rel, target, f"is unreadable ({error.__cause__})")
            return None

    def csv(self, rel: str, target: str) -> list[dict[str, str]] | None:
        path = self.root / rel
        if not path.is_file():
            self.missing(rel, target)
            return None
        with path.open(newline="") as handle:
            return list(csv.DictReader(handle))

    def field(self, record: Any, keys: Sequence[str], rel: str) -> Any:
        """``record[k0][k1]...`` or None (noted as a partial record) when absent."""
        value = record
        for key in keys:
            if not isinstance(value, dict) or value.get(key) is None:
                self.partial(rel, ".".join(keys))
                return None
            value = value[key]
        return value

    def pick(self, record: dict | None, key: str, rel: str) -> Any:
        """``record[key]``; None when the record is missing (already noted) or lacks it."""
        return None if record is None else self.field(record, [key], rel)

    def runs(self, rel: str, target: str) -> dict[str, dict]:
        """result.json of every run directory directly under ``rel``, by folder name."""
        folder = self.root / rel
        found = {}
        for path in sorted(folder.glob("*/result.json")) if folder.is_dir() else []:
            try:
                found[path.parent.name] = read_json(path)
            except DataError as error:
                self.missing(f"{rel}/{path.parent.name}/result.json", target,
                             f"is unreadable ({error.__cause__})")
        return found


def toy_tables(records: Records) -> list[Table]:
    rows = []
    for rel in ("toy/toy.json", "toy/decay/toy.json"):
        data = records.json(rel, "toy")
        alpha, stale = records.pick(data, "alpha", rel), records.stale(data)
        by_method = {row.get("method"): row for row in (data or {}).get("at_T_report", [])}
        for method in METHODS:
            row = by_method.get(method)
            if data is not None and row is None:
                records.partial(rel, f"{method} row at T_report")
            setting = [records.pick(row, key, rel) for key in ("T", "solver", "rtol", "atol")]
            values = [records.pick(row, key, rel) for key in
                      ("abs_err_z0", "abs_err_alpha", "nfe_forward", "nfe_backward")]
            rows.append([cell(alpha), *(cell(value) for value in setting), method,
                         *(cell(value, stale=stale) for value in values),
                         approx(paper.TOY_ABS_ERROR[method])])
    return [Table("toy", "Toy: gradient error against the closed form (exp. 1)",
                  ["α", "T", "solver", "rtol", "atol", "method", "ours abs err dL/dz0",
                   "ours abs err dL/dα", "NFE fwd", "NFE bwd", "paper abs err at T ≈ 19.5 (≈)"],
                  rows,
                  ["dz/dt = αz, z0 = 1, L = z(T)²; the paper states neither α, z0, the tolerance "
                   "nor which gradient it plots, so compare orderings, not magnitudes."])]


def vdp_tables(records: Records) -> list[Table]:
    rel = "vdp/vdp_reconstruction.json"
    data = records.json(rel, "vdp")
    stale = records.stale(data)
    rows = []
    for row in (data or {}).get("rows", []):
        rows.append([row.get("solver"), cell(row.get("tol")),
                     cell(row.get("reverse_error"), stale=stale),
                     *(cell(row.get(f"grad_rel_err_{m}"), stale=stale) for m in METHODS),
                     VDP_REVERSE])
    if not rows:
        if data is not None:
            records.partial(rel, "rows")
        rows.append([MISSING] * 5 + [MISSING, VDP_REVERSE])
    reconstruction = Table(
        "vdp", "Van der Pol: reverse-time reconstruction and gradient error (exp. 2)",
        ["solver", "rtol = atol", "ours ‖y_rev(0) − y(0)‖", "grad rel err aca",
         "grad rel err adjoint", "grad rel err naive", "paper (solver, tol not stated)"], rows,
        [f"y(0) = {cell(records.pick(data, 'y0', rel))}, μ = {cell(records.pick(data, 'mu', rel))}"
         f", T = {cell(records.pick(data, 'T', rel))}; inf: the reverse solve (or the adjoint's "
         "backward) blew up. Gradient errors against ACA at rtol = atol = 1e-12."])
    learning_rows = []
    for method in METHODS:
        for rtol in ("0.01", "1e-05"):
            name = f"vdp/runs/{method}_dopri5_rtol{rtol}.json"
            record = records.json(name, "vdp")
            values = [records.pick(record, key, name) for key in
                      ("mu", "mu_error", "final_test_mse", "total_time_s")]
            learning_rows.append([method, rtol, *(cell(value, stale=records.stale(record))
                                                  for value in values), "–"])
    learning = Table("vdp_learning", "Van der Pol: learning μ (true 1, start 0.5; not in the "
                     "paper)", ["method", "rtol", "ours μ", "μ error", "test MSE", "time (s)",
                                "paper"], learning_rows)
    return [reconstruction, learning]


def robertson_tables(records: Records) -> list[Table]:
    rel = "robertson/robertson_gradients.json"
    data = records.json(rel, "robertson")
    stale = records.stale(data)

    def shown(row: dict, key: str, absent: str) -> str:
        """``row[key]`` as a cell; ``absent`` where the analysis left it out (a failed
        gradient, a failed forward solve's uncounted work)."""
        return absent if row.get(key) is None else cell(row[key], stale=stale)

    rows = [[row.get("solver"), cell(row.get("rtol")), row.get("method"),
             shown(row, "grad_rel_error", "failed"), shown(row, "steps", "–"),
             shown(row, "jacobians", "–"), shown(row, "time_s", "–"), row.get("error") or "–"]
            for row in (data or {}).get("rows", [])]
    if not rows:
        if data is not None:
            records.partial(rel, "rows")
        rows.append([MISSING] * 8)
    gradients = Table(
        "robertson", "Robertson's stiff kinetics: each method's gradient (not in the paper)",
        ["solver", "rtol", "method", "grad rel err", "steps", "Jacobians", "time (s)",
         "what stopped it"], rows,
        ["Gradient of the learning loss w.r.t. log10 k at the initial guess, against central "
         "differences of kvaerno5 solves at rtol 1e-11; atol = 1e-4 · rtol. The adjoint solves "
         "y backwards in time, where Robertson's fast decaying modes grow; an explicit solver "
         "needs a step per fastest time scale."])
    learning_rows = []
    for method in ("aca", "naive"):
        name = f"robertson/runs/{method}_kvaerno5_rtol1e-06.json"
        record = records.json(name, "robertson")
        rates = records.pick(record, "rates", name) or [None] * 3
        errors = [records.pick(record, f"k{i}_rel_error", name) for i in (1, 2, 3)]
        learning_rows.append([method, *(cell(value, stale=records.stale(record))
                                        for value in (*rates, *errors,
                                                      records.pick(record, "final_test_mse", name),
                                                      records.pick(record, "total_nfe_forward",
                                                                   name),
                                                      records.pick(record, "total_nfe_backward",
                                                                   name)))])
    learning = Table("robertson_learning", "Robertson: learning the rate constants through "
                     "kvaerno5 (true 0.04, 3e7, 1e4; start 0.02, 6e7, 5e3; not in the paper)",
                     ["method", "k1", "k2", "k3", "k1 rel err", "k2 rel err", "k3 rel err",
                      "test MSE", "NFE fwd", "NFE bwd"], learning_rows,
                     ["NFE summed over the epochs (ACA's backward rebuilds each accepted step; "
                      "naive's is autograd through the forward's operations). The runs' wall "
                      "times are in results/robertson/robertson_learning.md."])
    return [gradients, learning]


def three_body_tables(records: Records) -> list[Table]:
    runs = [("cpu", "three_body/runs", "three_body", ("physics", m)) for m in METHODS]
    runs.append(("cpu", "three_body/runs", "three_body", ("neural", "aca")))
    if (records.root / "three_body/paper").is_dir():
        runs += [("paper", "three_body/paper/runs", "three_body --scale paper", ("physics", m))
                 for m in METHODS]
    rows = []
    for scale, folder, target, (model, method) in runs:
        rel = f"{folder}/{model}_{method}.json"
        record = records.json(rel, target)
        physics, stale = model == "physics", records.stale(record)
        masses = [mass(records.pick(record, key, rel), stale) if physics else "–"
                  for key in ("m1", "m2", "m3")]
        masses.append(cell(records.pick(record, "mass_error", rel), stale=stale) if physics
                      else "–")
        published = paper.masses() if physics and method == "aca" else "–"
        best = (", ".join(mass(record.get(f"best_m{index}"), stale) for index in (1, 2, 3))
                if physics and record is not None and "best_m1" in record else "–")
        rows.append([scale, model, method,
                     *(cell(records.pick(record, key, rel)) for key in ("epochs", "rtol")),
                     *masses, best, cell(records.pick(record, "extrap_rmse", rel), stale=stale),
                     published])
    return [Table("three_body", "Three-body: learned masses (true 1.1, 1.1, 0.9) and "
                  "extrapolation error (exp. 5)",
                  ["scale", "model", "method", "epochs", "rtol = atol", "m1", "m2", "m3",
                   "max mass error", "best model's masses (by training loss)",
                   "position RMSE on [0, 2]", "paper masses"], rows,
                  ["cpu: the CPU-sized preset (100 observed points, dopri5); paper: the "
                   "authors' setting (1000 points, 100 epochs, dopri5 1e-7, float32). m1-m3: "
                   "the final epoch's; the paper's masses are its best model's by training "
                   "loss. neural: a black-box MLP ODE without masses."])]


def _final_accuracy(records: Records, run: dict | None, rel: str) -> Any:
    value = None if run is None else records.field(run, ["final", "test_acc"], rel)
    return None if value is None else 100.0 * value


def cifar_tables(records: Records, dataset: str, paper_column: str) -> list[Table]:
    """Methods and seeds tables of one CIFAR-like data set (cifar10, cifar100, digits)."""
    tables = []
    scales = ["cpu"] + (["paper"] if (records.root / dataset / "paper").is_dir() else [])
    medians = {model: approx(value) for model, value in
               paper.CIFAR_MEDIANS["cifar100" if dataset == "cifar100" else "cifar10"].items()}
    methods_rows, seeds_rows = [], []
    for scale in scales:
        base = f"{dataset}/paper/runs" if scale == "paper" else f"{dataset}/runs"
        target = ("cifar10" if dataset == "cifar10" else dataset) + (
            " --scale paper" if scale == "paper" else "")
        runs = records.runs(f"{base}/methods", target)
        for name, method in [(f"node18-{m}", m) for m in METHODS] + [("resnet18-aca", None)]:
            # one run per method (<name>) or one per seed (<name>-seed<k>)
            found = {key: run for key, run in runs.items()
                     if key == name or key.startswith(f"{name}-seed")}
            if not found:
                records.missing(f"{base}/methods/{name}/result.json", target)
            accuracies = [_final_accuracy(records, run, f"{base}/methods/{key}/result.json")
                          for key, run in found.items()]
            seconds = [records.field(run, ["wall_time_s"], f"{base}/methods/{key}/result.json")
                       for key, run in found.items()]
            paper_acc, paper_hours = (map(approx, paper.CIFAR_METHODS[method])
                                      if method in paper.CIFAR_METHODS else ("–", "–"))
            label = f"NODE-18 ({method})" if method else "ResNet-18"
            stale = records.stale(*found.values())
            methods_rows.append([scale, label, len(found), spread(accuracies, stale),
                                 spread(seconds, stale), paper_acc, paper_hours])
        seeds = records.runs(f"{base}/seeds", target)
        seeds_target = target.replace(dataset, f"{dataset}_seeds", 1) if dataset != "digits" \
            else target
        for model in ("node18", "resnet18"):
            runs_of_model = {name: run for name, run in seeds.items()
                             if name.startswith(f"{model}-")}
            accuracies = [_final_accuracy(records, run, f"{base}/seeds/{name}/result.json")
                          for name, run in runs_of_model.items()]
            accuracies = [a for a in accuracies if a is not None]
            stale = records.stale(*runs_of_model.values())
            if not accuracies:
                records.missing(f"{base}/seeds/{model}-seed*/result.json", seeds_target,
                                "has no runs")
            stats = ([statistics.median(accuracies), min(accuracies), max(accuracies)]
                     if accuracies else [None] * 3)
            seeds_rows.append([scale, MODEL_LABELS[model], len(accuracies),
                               *(cell(v, stale=stale) for v in stats), medians[model]])
    title = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "digits": "Digits (8x8)"}[dataset]
    note = (["Digits is a CPU stand-in with 43k-parameter networks; the paper's columns are its "
             "CIFAR results with 11.2M-parameter networks, so compare orderings only."]
            if dataset == "digits" else [])
    method_note = ["Ours: mean ± std over the runs (seeds). The paper gives the per-method "
                   "accuracies and hours under exp. 3 without naming the data set "
                   "(docs/paper.md); they are shown beside CIFAR-10 and digits."]
    if dataset != "cifar100":
        tables.append(Table(f"{dataset}_methods", f"{title}: NODE-18 trained with each gradient "
                            "method (Fig. 7a/b)", ["scale", "model", "runs",
                                                   "ours final test acc (%)",
                                                   "ours train time (s)",
                                                   f"paper {paper_column}acc (%)",
                                                   "paper time (h)"],
                            methods_rows, note + method_note))
    else:
        tables.append(Table(f"{dataset}_methods", f"{title}: NODE-18 trained with each gradient "
                            "method", ["scale", "model", "runs", "ours final test acc (%)",
                                       "ours train time (s)", "paper acc (%)", "paper time (h)"],
                            [row[:5] + ["–", "–"] for row in methods_rows]))
    tables.append(Table(f"{dataset}_seeds", f"{title}: final test accuracy over seeds "
                        "(Fig. 7c/d)", ["scale", "model", "runs", "ours median (%)",
                                        "ours min (%)", "ours max (%)",
                                        f"paper {paper_column}median (%)"],
                        seeds_rows, note))
    return tables


def timeseries_tables(records: Records, name: str, title: str) -> list[Table]:
    rel = f"{name}/table.csv"
    data = records.csv(rel, name)
    found: dict[tuple, list[dict[str, str]]] = {}  # a row per seed
    for row in data or []:
        key = (row.get("model"), _fraction(row.get("observed_fraction")), row.get("method"))
        found.setdefault(key, []).append(row)
    rows = []
    for model, label in (("latent_ode", "Latent ODE"), ("ode_rnn", "ODE-RNN")):
        for fraction in ("0.1", "0.2", "0.5"):
            cells = []
            for method in METHODS:
                runs = found.get((model, fraction, method), [])
                if data is not None and not runs:
                    records.partial(rel, f"{model} {fraction} {method} row")
                values = [float(run["test_mse"]) for run in runs if run.get("test_mse")]
                cells.append(cell(statistics.fmean(values) if values else None, 100.0,
                                  stale=records.stale(*runs)))
            rows.append([label, f"{float(fraction):.0%}", *cells, paper.TIMESERIES_CLAIM])
    return [Table(name, f"{title}: test MSE (×1e-2, mean over seeds) by observed fraction "
                  "(exp. 4)",
                  ["model", "observed", "ours aca", "ours adjoint", "ours naive", "paper"], rows,
                  ["docs/paper.md reports no values for this table, only that ACA beats the "
                   "adjoint."]),
            _baselines_table(records, name, title, data or [])]


def _baselines_table(records: Records, name: str, title: str,
                     models: list[dict[str, str]]) -> Table:
    """The trivial baselines of a time-series table beside the best model's test MSE."""
    rel = f"{name}/baselines.csv"
    found: dict[tuple, list[dict[str, str]]] = {}
    for row in records.csv(rel, name) or []:
        found.setdefault((_fraction(row.get("observed_fraction")), row.get("baseline")),
                         []).append(row)
    rows = []
    for fraction in ("0.1", "0.2", "0.5"):
        means = []
        for model in ("latent_ode", "ode_rnn"):
            for method in METHODS:
                values = [float(row["test_mse"]) for row in models
                          if (row.get("model"), _fraction(row.get("observed_fraction")),
                              row.get("method")) == (model, fraction, method)]
                if values:
                    means.append(statistics.fmean(values))
        for baseline in BASELINES:
            chosen = found.get((fraction, baseline), [])
            values = [float(row["test_mse"]) for row in chosen]
            rows.append([f"{float(fraction):.0%}", baseline,
                         cell(statistics.fmean(values) if values else None, 100.0,
                              stale=records.stale(*chosen)),
                         cell(min(means) if means else None, 100.0)])
    return Table(f"{name}_baselines", f"{title}: trivial baselines (no training) against the "
                 "best model, test MSE ×1e-2, mean over seeds",
                 ["observed", "baseline", "baseline MSE", "best model × method MSE"], rows,
                 ["Each series predicted from its own observed points: their mean "
                  "(series_mean), the nearest in time (nearest), linear interpolation between "
                  "them (linear); scored like the models, on the same test sets "
                  "(scripts/timeseries_baselines.py). A model that does not beat them cannot "
                  "rank the gradient methods."])


def per_sample_tables(records: Records) -> list[Table]:
    """The Latent ODE on the sines with ``task.per_sample=true`` beside the same runs with
    one step size per batch (the sines table's): test MSE, evaluations per iteration and
    training time, means over seeds."""
    runs = {}
    for mode, rel in (("shared", "sines/table.csv"), ("per_sample", "sines/per_sample/table.csv")):
        for row in records.csv(rel, "sines") or []:
            if row.get("model") == "latent_ode":
                key = (mode, _fraction(row.get("observed_fraction")), row.get("method"))
                runs.setdefault(key, []).append(row)

    def mean(mode: str, fraction: str, method: str, column: str, scale: float = 1.0) -> str:
        chosen = runs.get((mode, fraction, method), [])
        values = [float(row[column]) for row in chosen if row.get(column)]
        return cell(statistics.fmean(values) if values else None, scale,
                    stale=records.stale(*chosen))

    columns = (("test_mse", 100.0), ("nfe_forward_per_iter", 1.0),
               ("nfe_backward_per_iter", 1.0), ("train_time_s", 1.0))
    rows = [[f"{float(fraction):.0%}", method,
             *(mean(mode, fraction, method, column, scale)
               for column, scale in columns for mode in ("shared", "per_sample"))]
            for fraction in ("0.1", "0.2", "0.5") for method in METHODS]
    return [Table("sines_per_sample", "Irregular sines, Latent ODE: one step size per batch "
                  "vs task.per_sample=true (mean over seeds)",
                  ["observed", "method", "test MSE ×1e-2 shared", "per-sample",
                   "NFE fwd/iter shared", "per-sample", "NFE bwd/iter shared", "per-sample",
                   "train time (s) shared", "per-sample"], rows,
                  ["per-sample: every series its own steps in the encoder (its own observation "
                   "times) and the decoder, on the whole time grid; a series' prediction does "
                   "not depend on its batch. NFE counts batched evaluations."])]


def _fraction(text: str | None) -> str | None:
    return None if text in (None, "") else format(float(text), "g")


def bench_tables(records: Records) -> list[Table]:
    rel = "bench/bench.json"
    data = records.json(rel, "bench")
    rows, stale = [], records.stale(data)
    for row in (data or {}).get("rows", []) + (data or {}).get("hundred_step", []):
        method = row.get("method")
        measured = [cell(row.get(key), stale=stale) for key in
                    ("fwd_bwd_ms", "peak_mib", "nfe_forward", "nfe_backward")]
        rows.append([row.get("problem"), row.get("setting"), method, *measured,
                     cell(row.get("grad_rel_error"), stale=stale)
                     if row.get("grad_rel_error") is not None else "–",
                     paper.MEMORY.get(method, "–")])
    if not rows:
        if data is not None:
            records.partial(rel, "rows")
        rows.append([MISSING] * 8 + ["–"])
    notes = ["Methods aca/adjoint/naive are this package's; torchdiffeq* and tdep_aca "
             "(TorchDiffEqPack's ACA) are the reference libraries. Memory: peak MiB of one "
             "forward+backward; the paper's column is its Table 1 memory cost (N_f: one f "
             "evaluation's graph, N_t: accepted steps, m: trials per step)."]
    if data is not None and data.get("environment"):
        environment = data["environment"]
        notes.append(f"Measured on {environment.get('cpu')}, torch {environment.get('torch')}, "
                     f"{environment.get('threads')} thread(s).")
    return [Table("bench", "Gradient benchmark: time, memory, NFE and gradient error "
                  "(paper Table 1 measured)",
                  ["problem", "setting", "method", "fwd+bwd (ms)", "peak (MiB)", "NFE fwd",
                   "NFE bwd", "grad rel err", "paper memory"], rows, notes)]


def all_tables(records: Records) -> list[Table]:
    """Every table, in the paper's order; a table with stale cells says what the mark means."""
    tables = [*toy_tables(records), *vdp_tables(records),
              *cifar_tables(records, "cifar10", ""), *cifar_tables(records, "cifar100", ""),
              *cifar_tables(records, "digits", "(CIFAR-10) "),
              *timeseries_tables(records, "mujoco", "Mujoco Hopper"),
              *timeseries_tables(records, "sines", "Irregular sines"),
              *per_sample_tables(records),
              *three_body_tables(records), *robertson_tables(records),
              *bench_tables(records)]
    for table in tables:
        if any(str(value).endswith(STALE_MARK) for row in table.rows for value in row):
            table.notes.append(STALE_NOTE)
    return tables
