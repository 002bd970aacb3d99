"""Reproduce the paper's tables and figures: one command per target, one to render them all.

    python scripts/reproduce.py run TARGET [--scale smoke|cpu|paper] [--dry-run] [--root DIR]
    python scripts/reproduce.py render [--root DIR]
    python scripts/reproduce.py list

``run`` executes the experiment presets of one paper table or figure (``aca-run`` and the
plotting scripts, from the repository root) with their records under ``<root>/<target>/``
(``.../paper/`` at paper scale) and writes the commands, their exit status and wall time
to ``REPRODUCE.txt`` there. ``smoke`` runs the same commands a few batches long into
``outputs/smoke`` (to check the pipeline), ``cpu`` the committed CPU-scale settings into
``results/``, ``paper`` the paper's settings (a GPU and the real data sets).

``render`` reads the run records under ``<root>`` and writes ``paper_tables.md`` and
``paper_tables.tex`` (our numbers beside the paper's, from /work/shared/PAPER.md) and a
``README.md`` linking every table and figure with its commands, the machine, versions and
date; a missing or partial record is named on stderr and its cells read "missing".
Rendering into the repository's ``results/`` also refreshes the README's Results section.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aca
from aca.tasks._results import format_cell, markdown_table

REPO_ROOT = Path(__file__).resolve().parent.parent
SCALES = ("smoke", "cpu", "paper")
DEFAULT_ROOTS = {"smoke": "outputs/smoke", "cpu": "results", "paper": "results"}
MISSING = "missing"
METHODS = ("aca", "adjoint", "naive")

# The paper's numbers, copied from /work/shared/PAPER.md (≈: read off the paper's plots).
# Experiment 1: absolute gradient error at T ≈ 19.5 (≈).
PAPER_TOY_ABS_ERROR = {"aca": "≈0.48", "adjoint": "≈0.78", "naive": "≈0.96"}
# Experiment 2: the reverse solve ends near x ≈ 0.5 instead of x(0) = 2 (≈).
PAPER_VDP_REVERSE = "x: ≈0.5 vs 2"
# Experiment 3: NODE-18 trained 90 epochs with each method: test accuracy (%), hours (≈).
PAPER_CIFAR_METHODS = {"aca": ("≈92.65", "≈10.0"), "adjoint": ("≈89.87", "≈17.6"),
                       "naive": ("≈90.14", "≈33.9")}
# Experiment 3: median test accuracy (%) over 10 runs (≈).
PAPER_CIFAR_MEDIANS = {"cifar10": {"node18": "≈94.16", "resnet18": "≈92.21"},
                       "cifar100": {"node18": "≈73.95", "resnet18": "≈72.61"}}
# Experiment 4: no values in PAPER.md, only the ordering.
PAPER_TIMESERIES = "ACA < adjoint (no value)"
# Experiment 5: masses recovered by the authors' ACA run.
PAPER_THREE_BODY_MASSES = "1.099986, 1.100022, 0.899978"
# Table 1: memory cost of each method.
PAPER_MEMORY = {"aca": "N_f + N_t", "adjoint": "N_f", "naive": "N_f·N_t·m"}

MODEL_LABELS = {"node18": "NODE-18", "resnet18": "ResNet-18"}


class ReproduceError(Exception):
    """Bad input to the reproduce command line (one line, valid choices named)."""


# ----------------------------------------------------------------------------- run


@dataclass(frozen=True)
class Step:
    """One command of a target: ``aca-run`` or a script, run from the repository root."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()

    def shell(self) -> str:
        """The command as one would type it."""
        prefix = [f"{key}={value}" for key, value in self.env]
        return " ".join(prefix + [shlex.quote(arg) for arg in self.argv])


def aca_run(*args: str, env: tuple[tuple[str, str], ...] = ()) -> Step:
    return Step(("aca-run", *args), env)


def script(name: str, *args: str) -> Step:
    return Step(("python", f"scripts/{name}", *args))


def _toy(scale: str, out: str) -> list[Step]:
    small = ("task.T_num=3", "task.solvers=[dopri5]", "task.tolerances=[1e-3]")
    extra = small if scale == "smoke" else ()
    return [aca_run("+experiment=toy", f"task.results_dir={out}", *extra),
            aca_run("+experiment=toy_decay", f"task.results_dir={out}/decay", *extra)]


def _vdp(scale: str, out: str) -> list[Step]:
    recon = ("task.solvers=[dopri5]", "task.tolerances=[1e-3]", "task.figure_tolerances=[1e-3]",
             "task.n_points=10")
    learn = ("trainer=smoke", "task.epochs=2")
    return [aca_run("+experiment=vdp_reconstruct", f"task.results_dir={out}",
                    *(recon if scale == "smoke" else ())),
            aca_run("-m", "+experiment=vdp", f"task.results_dir={out}",
                    *(learn if scale == "smoke" else ()))]


def _three_body(scale: str, out: str) -> list[Step]:
    if scale == "paper":
        return [aca_run("-m", "+experiment=three_body_paper", f"task.results_dir={out}")]
    small = ("trainer=smoke", "task.epochs=2", "task.n_train=20", "task.n_test=40")
    extra = small if scale == "smoke" else ()
    return [aca_run("-m", "+experiment=three_body", f"task.results_dir={out}", *extra),
            aca_run("+experiment=three_body_neural", f"task.results_dir={out}", *extra)]


def _cifar_methods(dataset: str) -> Callable[[str, str], list[Step]]:
    def steps(scale: str, out: str) -> list[Step]:
        runs = f"{out}/runs/methods"
        where = (f"hydra.sweep.dir={runs}", "hydra.sweep.subdir=${task.model}-${method.name}")
        if scale == "paper":
            train = [aca_run("-m", f"+experiment={dataset}_methods", *where)]
        else:
            recipe = (f"task={dataset}", "solver=heun_euler", "solver.rtol=0.01",
                      "solver.atol=0.01", *where)
            extra = ("trainer=smoke", "task.epochs=1") if scale == "smoke" else ()
            train = [aca_run("-m", *recipe, "method=aca,adjoint,naive", *extra),
                     aca_run("-m", *recipe, "task.model=resnet18", "method=aca", *extra)]
        return [*train, script("plot_cifar.py", "methods", runs, "--out", out)]

    return steps


def _cifar_seeds(dataset: str) -> Callable[[str, str], list[Step]]:
    def steps(scale: str, out: str) -> list[Step]:
        runs = f"{out}/runs/seeds"
        where = (f"hydra.sweep.dir={runs}", "hydra.sweep.subdir=${task.model}-seed${seed}")
        if scale == "paper":
            train = aca_run("-m", f"+experiment={dataset}_seeds", *where)
        else:
            seeds = "seed=0,1" if scale == "smoke" else "seed=0,1,2,3,4"
            extra = ("trainer=smoke", "task.epochs=1") if scale == "smoke" else ()
            train = aca_run("-m", f"task={dataset}", "solver=heun_euler", "solver.rtol=0.01",
                            "solver.atol=0.01", "task.model=node18,resnet18", seeds,
                            "trainer.checkpoint=false", *where, *extra)
        return [train, script("plot_cifar.py", "seeds", runs, "--out", out)]

    return steps


def _digits(scale: str, out: str) -> list[Step]:
    one_thread = (("OMP_NUM_THREADS", "1"),)
    methods, seeds = f"{out}/runs/methods", f"{out}/runs/seeds"
    smoke = scale == "smoke"
    extra = ("trainer=smoke", "task.epochs=1", "trainer.checkpoint=true") if smoke else ()
    solvers = ("--solvers", "rk4:step_size=0.5") if smoke else ()
    return [
        aca_run("-m", "+experiment=digits_methods", f"hydra.sweep.dir={methods}", *extra,
                env=one_thread),
        aca_run("-m", "+experiment=digits_methods", "task.model=resnet18", "method=aca",
                f"hydra.sweep.dir={methods}", *extra, env=one_thread),
        script("plot_cifar.py", "methods", methods, "--out", out, "--title",
               "digits (8x8), heun_euler rtol=atol=1e-2"),
        aca_run("-m", "+experiment=digits_seeds", f"hydra.sweep.dir={seeds}",
                *(("seed=0,1", "trainer=smoke", "task.epochs=1") if smoke else ()),
                env=one_thread),
        script("plot_cifar.py", "seeds", seeds, "--out", out, "--title", "digits (8x8)"),
        script("solver_robustness.py", f"{methods}/node18-aca/last.pt", "--out", out,
               "--runs", f"{out}/runs/robustness", "--threads", "1", *solvers),
    ]


def _timeseries(name: str) -> Callable[[str, str], list[Step]]:
    def steps(scale: str, out: str) -> list[Step]:
        runs = f"{out}/runs"
        if scale == "paper":
            train = aca_run("-m", "+experiment=mujoco_paper", "task.model=latent_ode,ode_rnn",
                            "task.observed_fraction=0.1,0.2,0.5", "method=aca,adjoint",
                            f"hydra.sweep.dir={runs}",
                            "hydra.sweep.subdir=${task.model}-${task.observed_fraction}"
                            "-${method.name}")
        else:
            size = "task.n_trajectories=20" if name == "mujoco" else "task.n_series=40"
            extra = ("trainer=smoke", "task.epochs=1", size) if scale == "smoke" else ()
            train = aca_run("-m", f"+experiment={name}_table", f"hydra.sweep.dir={runs}", *extra)
        return [train, script("timeseries_table.py", runs, "--out", out)]

    return steps


def _bench(scale: str, out: str) -> list[Step]:
    return [script("bench_gradients.py", *(("--quick",) if scale == "smoke" else ()),
                   "--out", out)]


@dataclass(frozen=True)
class Target:
    """A paper table or figure: where its records live and how each scale makes them."""

    folder: str
    what: str
    steps: Callable[[str, str], list[Step]]
    scales: tuple[str, ...] = SCALES


TARGETS: dict[str, Target] = {
    "toy": Target("toy", "Exp. 1: toy gradient error vs the closed form", _toy, ("smoke", "cpu")),
    "vdp": Target("vdp", "Exp. 2: van der Pol reverse-time reconstruction (+ learning mu)", _vdp,
                  ("smoke", "cpu")),
    "cifar10": Target("cifar10", "Exp. 3, Fig. 7a/b: NODE-18 trained with each method",
                      _cifar_methods("cifar10")),
    "cifar10_seeds": Target("cifar10", "Exp. 3, Fig. 7c/d: NODE-18 vs ResNet-18 over seeds",
                            _cifar_seeds("cifar10")),
    "cifar100": Target("cifar100", "Exp. 3 on CIFAR-100: NODE-18 trained with each method",
                       _cifar_methods("cifar100")),
    "cifar100_seeds": Target("cifar100", "Exp. 3 on CIFAR-100: NODE-18 vs ResNet-18 over seeds",
                             _cifar_seeds("cifar100")),
    "digits": Target("digits", "CPU stand-in for exp. 3 (8x8 digits)", _digits, ("smoke", "cpu")),
    "mujoco": Target("mujoco", "Exp. 4: Latent ODE / ODE-RNN on Mujoco Hopper",
                     _timeseries("mujoco")),
    "sines": Target("sines", "Exp. 4's models on synthetic irregular sines",
                    _timeseries("sines"), ("smoke", "cpu")),
    "three_body": Target("three_body", "Exp. 5: three-body masses", _three_body),
    "bench": Target("bench", "Table 1 measured: speed, memory, NFE, gradient error", _bench,
                    ("smoke", "cpu")),
}


def output_dir(target: str, scale: str, root: str) -> str:
    """Where a target's records go: ``<root>/<folder>`` (``/paper`` at paper scale)."""
    folder = f"{root.rstrip('/')}/{TARGETS[target].folder}"
    return f"{folder}/paper" if scale == "paper" else folder


def plan(target: str, scale: str, root: str | None = None) -> list[Step]:
    """The commands that regenerate ``target`` at ``scale``; ReproduceError on bad input."""
    if target not in TARGETS:
        raise ReproduceError(f"unknown target {target!r}; choose one of: {', '.join(TARGETS)}")
    if scale not in SCALES:
        raise ReproduceError(f"unknown scale {scale!r}; choose one of: {', '.join(SCALES)}")
    spec = TARGETS[target]
    if scale not in spec.scales:
        raise ReproduceError(f"target {target!r} has no {scale!r} scale; choose one of: "
                             f"{', '.join(spec.scales)}")
    return spec.steps(scale, output_dir(target, scale, root or DEFAULT_ROOTS[scale]))


def _executable(step: Step) -> list[str]:
    """argv to execute: aca-run and python from this interpreter's environment."""
    program, *args = step.argv
    if program == "python":
        return [sys.executable, *args]
    local = Path(sys.executable).parent / program
    found = str(local) if local.exists() else shutil.which(program)
    return [found, *args] if found else [sys.executable, "-m", "aca.cli", *args]


def run_target(target: str, scale: str, root: str | None = None, dry_run: bool = False) -> int:
    """Run (or print) a target's commands in order; stop at the first failure. Each
    command, its exit status and wall time go to ``REPRODUCE.txt`` beside the records."""
    steps = plan(target, scale, root)
    out = REPO_ROOT / output_dir(target, scale, root or DEFAULT_ROOTS[scale])
    if dry_run:
        print("\n".join(step.shell() for step in steps))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    log = out / "REPRODUCE.txt"
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# python scripts/reproduce.py run {target} --scale {scale}"
             + (f" --root {root}" if root else ""),
             f"# started {started} on {machine()['cpu']} ({machine()['cores']} cores), "
             f"run from the repository root"]
    log.write_text("\n".join(lines) + "\n")
    for step in steps:
        print(f"+ {step.shell()}", flush=True)
        begin = time.perf_counter()
        status = subprocess.call(_executable(step), cwd=REPO_ROOT,
                                 env={**os.environ, **dict(step.env)})
        seconds = time.perf_counter() - begin
        lines.append(f"{step.shell()}    # exit {status}, {seconds:.0f} s")
        log.write_text("\n".join(lines) + "\n")
        if status != 0:
            print(f"error: command failed with exit status {status}: {step.shell()}",
                  file=sys.stderr)
            return status
    print(f"done: {target} at {scale} scale; commands and times in {log}")
    return 0


# -------------------------------------------------------------------------- render


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
            return json.loads(path.read_text())
        except (OSError, ValueError) as error:
            self.missing(rel, target, f"is unreadable ({error})")
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
                found[path.parent.name] = json.loads(path.read_text())
            except (OSError, ValueError) as error:
                self.missing(f"{rel}/{path.parent.name}/result.json", target,
                             f"is unreadable ({error})")
        return found


def cell(value: Any, scale: float = 1.0) -> str:
    """A number for a table, or "missing"."""
    if value is None:
        return MISSING
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value
    return format_cell(value * scale if scale != 1.0 else value)


def mass(value: float | None) -> str:
    """A mass to the authors' six decimals, or "missing"."""
    return MISSING if value is None else f"{value:.6f}"


def toy_tables(records: Records) -> list[Table]:
    rows = []
    for rel in ("toy/toy.json", "toy/decay/toy.json"):
        data = records.json(rel, "toy")
        alpha = records.pick(data, "alpha", rel)
        by_method = {row.get("method"): row for row in (data or {}).get("at_T_report", [])}
        for method in METHODS:
            row = by_method.get(method)
            if data is not None and row is None:
                records.partial(rel, f"{method} row at T_report")
            setting = [records.pick(row, key, rel) for key in ("T", "solver", "rtol", "atol")]
            values = [records.pick(row, key, rel) for key in
                      ("abs_err_z0", "abs_err_alpha", "nfe_forward", "nfe_backward")]
            rows.append([cell(alpha), *(cell(value) for value in setting), method,
                         *(cell(value) for value in values), PAPER_TOY_ABS_ERROR[method]])
    return [Table("toy", "Toy: gradient error against the closed form (exp. 1)",
                  ["α", "T", "solver", "rtol", "atol", "method", "ours abs err dL/dz0",
                   "ours abs err dL/dα", "NFE fwd", "NFE bwd", "paper abs err at T ≈ 19.5 (≈)"],
                  rows,
                  ["dz/dt = αz, z0 = 1, L = z(T)²; the paper states neither α, z0, the tolerance "
                   "nor which gradient it plots, so compare orderings, not magnitudes."])]


def vdp_tables(records: Records) -> list[Table]:
    rel = "vdp/vdp_reconstruction.json"
    data = records.json(rel, "vdp")
    rows = []
    for row in (data or {}).get("rows", []):
        rows.append([row.get("solver"), cell(row.get("tol")), cell(row.get("reverse_error")),
                     *(cell(row.get(f"grad_rel_err_{m}")) for m in METHODS), PAPER_VDP_REVERSE])
    if not rows:
        if data is not None:
            records.partial(rel, "rows")
        rows.append([MISSING] * 5 + [MISSING, PAPER_VDP_REVERSE])
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
            learning_rows.append([method, rtol, *(cell(value) for value in values), "–"])
    learning = Table("vdp_learning", "Van der Pol: learning μ (true 1, start 0.5; not in the "
                     "paper)", ["method", "rtol", "ours μ", "μ error", "test MSE", "time (s)",
                                "paper"], learning_rows)
    return [reconstruction, learning]


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
        physics = model == "physics"
        masses = [mass(records.pick(record, key, rel)) if physics else "–"
                  for key in ("m1", "m2", "m3")]
        masses.append(cell(records.pick(record, "mass_error", rel)) if physics else "–")
        paper = PAPER_THREE_BODY_MASSES if physics and method == "aca" else "–"
        rows.append([scale, model, method,
                     *(cell(records.pick(record, key, rel)) for key in ("epochs", "rtol")),
                     *masses, cell(records.pick(record, "extrap_rmse", rel)), paper])
    return [Table("three_body", "Three-body: learned masses (true 1.1, 1.1, 0.9) and "
                  "extrapolation error (exp. 5)",
                  ["scale", "model", "method", "epochs", "rtol = atol", "m1", "m2", "m3",
                   "max mass error",
                   "position RMSE on [0, 2]", "paper masses"], rows,
                  ["cpu: the CPU-sized preset (100 observed points, dopri5); paper: the "
                   "authors' setting (1000 points, 100 epochs, dopri5 1e-7). neural: a black-box "
                   "MLP ODE without masses."])]


def _final_accuracy(records: Records, run: dict | None, rel: str) -> Any:
    value = None if run is None else records.field(run, ["final", "test_acc"], rel)
    return None if value is None else 100.0 * value


def cifar_tables(records: Records, dataset: str, paper_column: str) -> list[Table]:
    """Methods and seeds tables of one CIFAR-like data set (cifar10, cifar100, digits)."""
    tables = []
    scales = ["cpu"] + (["paper"] if (records.root / dataset / "paper").is_dir() else [])
    medians = PAPER_CIFAR_MEDIANS["cifar100" if dataset == "cifar100" else "cifar10"]
    methods_rows, seeds_rows = [], []
    for scale in scales:
        base = f"{dataset}/paper/runs" if scale == "paper" else f"{dataset}/runs"
        target = ("cifar10" if dataset == "cifar10" else dataset) + (
            " --scale paper" if scale == "paper" else "")
        runs = records.runs(f"{base}/methods", target)
        for name, method in [(f"node18-{m}", m) for m in METHODS] + [("resnet18-aca", None)]:
            rel = f"{base}/methods/{name}/result.json"
            run = runs.get(name)
            if run is None:
                records.missing(rel, target)
            seconds = None if run is None else records.field(run, ["wall_time_s"], rel)
            paper_acc, paper_hours = PAPER_CIFAR_METHODS.get(method, ("–", "–"))
            label = f"NODE-18 ({method})" if method else "ResNet-18"
            methods_rows.append([scale, label, cell(_final_accuracy(records, run, rel)),
                                 cell(seconds), paper_acc, paper_hours])
        seeds = records.runs(f"{base}/seeds", target)
        seeds_target = target.replace(dataset, f"{dataset}_seeds", 1) if dataset != "digits" \
            else target
        for model in ("node18", "resnet18"):
            accuracies = [_final_accuracy(records, run, f"{base}/seeds/{name}/result.json")
                          for name, run in seeds.items() if name.startswith(f"{model}-")]
            accuracies = [a for a in accuracies if a is not None]
            if not accuracies:
                records.missing(f"{base}/seeds/{model}-seed*/result.json", seeds_target,
                                "has no runs")
            stats = ([statistics.median(accuracies), min(accuracies), max(accuracies)]
                     if accuracies else [None] * 3)
            seeds_rows.append([scale, MODEL_LABELS[model], len(accuracies),
                               *(cell(v) for v in stats), medians[model]])
    title = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "digits": "Digits (8x8)"}[dataset]
    note = (["Digits is a CPU stand-in with 43k-parameter networks; the paper's columns are its "
             "CIFAR results with 11.2M-parameter networks, so compare orderings only."]
            if dataset == "digits" else [])
    method_note = ["PAPER.md gives the per-method accuracies and hours under exp. 3 without "
                   "naming the data set; they are shown beside CIFAR-10 and digits."]
    if dataset != "cifar100":
        tables.append(Table(f"{dataset}_methods", f"{title}: NODE-18 trained with each gradient "
                            "method (Fig. 7a/b)", ["scale", "model", "ours final test acc (%)",
                                                   "ours train time (s)",
                                                   f"paper {paper_column}acc (%)",
                                                   "paper time (h)"],
                            methods_rows, note + method_note))
    else:
        tables.append(Table(f"{dataset}_methods", f"{title}: NODE-18 trained with each gradient "
                            "method", ["scale", "model", "ours final test acc (%)",
                                       "ours train time (s)", "paper acc (%)", "paper time (h)"],
                            [row[:4] + ["–", "–"] for row in methods_rows]))
    tables.append(Table(f"{dataset}_seeds", f"{title}: final test accuracy over seeds "
                        "(Fig. 7c/d)", ["scale", "model", "runs", "ours median (%)",
                                        "ours min (%)", "ours max (%)",
                                        f"paper {paper_column}median (%)"],
                        seeds_rows, note))
    return tables


def timeseries_tables(records: Records, name: str, title: str) -> list[Table]:
    rel = f"{name}/table.csv"
    data = records.csv(rel, name)
    found = {(row.get("model"), _fraction(row.get("observed_fraction")), row.get("method")):
             row for row in data or []}
    rows = []
    for model, label in (("latent_ode", "Latent ODE"), ("ode_rnn", "ODE-RNN")):
        for fraction in ("0.1", "0.2", "0.5"):
            cells = []
            for method in METHODS:
                row = found.get((model, fraction, method))
                if data is not None and row is None:
                    records.partial(rel, f"{model} {fraction} {method} row")
                cells.append(cell(None if row is None else row.get("test_mse") or None, 100.0))
            rows.append([label, f"{float(fraction):.0%}", *cells, PAPER_TIMESERIES])
    return [Table(name, f"{title}: test MSE (×1e-2) by observed fraction (exp. 4)",
                  ["model", "observed", "ours aca", "ours adjoint", "ours naive", "paper"], rows,
                  ["PAPER.md reports no values for this table, only that ACA beats the "
                   "adjoint."])]


def _fraction(text: str | None) -> str | None:
    return None if text in (None, "") else format(float(text), "g")


def bench_tables(records: Records) -> list[Table]:
    rel = "bench/bench.json"
    data = records.json(rel, "bench")
    rows = []
    for row in (data or {}).get("rows", []) + (data or {}).get("hundred_step", []):
        method = row.get("method")
        rows.append([row.get("problem"), row.get("setting"), method, cell(row.get("fwd_bwd_ms")),
                     cell(row.get("peak_mib")), cell(row.get("nfe_forward")),
                     cell(row.get("nfe_backward")), cell(row.get("grad_rel_error"))
                     if row.get("grad_rel_error") is not None else "–",
                     PAPER_MEMORY.get(method, "–")])
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
    """Every table, in the paper's order."""
    return [*toy_tables(records), *vdp_tables(records),
            *cifar_tables(records, "cifar10", ""), *cifar_tables(records, "cifar100", ""),
            *cifar_tables(records, "digits", "(CIFAR-10) "),
            *timeseries_tables(records, "mujoco", "Mujoco Hopper"),
            *timeseries_tables(records, "sines", "Irregular sines"),
            *three_body_tables(records), *bench_tables(records)]


def table_markdown(table: Table) -> str:
    lines = [f"### {table.title}", "", markdown_table(table.headers, table.rows).rstrip()]
    lines += [""] + table.notes if table.notes else []
    return "\n".join(lines) + "\n"


LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                 "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                 "^": r"\textasciicircum{}", "≈": r"$\approx$", "α": r"$\alpha$", "μ": r"$\mu$",
                 "−": "-", "×": r"$\times$", "·": r"$\cdot$", "Δ": r"$\Delta$", "²": r"$^2$",
                 "|": r"$|$", "<": r"$<$", "–": "--", "‖": r"$\|$"}


def latex_escape(text: Any) -> str:
    return "".join(LATEX_ESCAPES.get(char, char) for char in str(text))


def table_latex(table: Table) -> str:
    """A booktabs table (needs \\usepackage{booktabs})."""
    body = [" & ".join(latex_escape(format_cell(c) if not isinstance(c, str) else c)
                       for c in row) + r" \\" for row in table.rows]
    return "\n".join([
        r"\begin{table}[ht]", r"\centering", r"\small",
        rf"\caption{{{latex_escape(table.title)}}}", rf"\label{{tab:{table.key}}}",
        r"\begin{tabular}{" + "l" * len(table.headers) + "}", r"\toprule",
        " & ".join(latex_escape(h) for h in table.headers) + r" \\", r"\midrule", *body,
        r"\bottomrule", r"\end{tabular}", r"\end{table}", ""])


def machine() -> dict[str, Any]:
    """This machine and the versions that matter, for the results README."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import torch

    return {"cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "aca": aca.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"}


def _figures(root: Path, folder: str) -> list[Path]:
    base = root / folder
    if not base.is_dir():
        return []
    return sorted(p for p in base.rglob("*.png") if "runs" not in p.relative_to(base).parts)


def _command_notes(root: Path, folder: str) -> list[Path]:
    """The task's own notes (COMMAND.txt, README.md, timings) and REPRODUCE.txt logs."""
    base = root / folder
    if not base.is_dir():
        return []
    return sorted(p for pattern in ("*.txt", "README.md") for p in base.rglob(pattern)
                  if "runs" not in p.relative_to(base).parts)


def results_readme(root: Path, tables: list[Table], problems: list[str]) -> str:
    """results/README.md: what each table and figure is, its commands, machine, versions."""
    info = machine()
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Results: the paper's tables and figures, regenerated",
        "",
        "Rendered by `python scripts/reproduce.py render` from the run records in this folder",
        f"on {date}: CPU {info['cpu']} ({info['cores']} cores), GPU {info['gpu']}, "
        f"{info['os']}; Python {info['python']}, torch {info['torch']}, aca {info['aca']}.",
        "The records themselves were made by the commands below (each target's COMMAND.txt /",
        "README.md / REPRODUCE.txt says when, where and how long); the paper's numbers come from",
        "PAPER.md (≈: read off the paper's plots).",
        "",
        "- All tables: [paper_tables.md](paper_tables.md) (LaTeX: "
        "[paper_tables.tex](paper_tables.tex)).",
        "- Regenerate one target: `python scripts/reproduce.py run TARGET --scale cpu` "
        "(`--dry-run` prints its commands; `--scale smoke` checks the pipeline in seconds into "
        "`outputs/smoke`, `--scale paper` needs a GPU and the data sets); then "
        "`python scripts/reproduce.py render`.",
        "- CIFAR targets read `data/cifar-10-batches-py` / `data/cifar-100-python` (or "
        "`$ACA_DATA_DIR`): `python scripts/download_cifar.py cifar10 cifar100` on a machine with "
        "internet. Mujoco needs the `mujoco` extra (dm_control).",
        "",
    ]
    if problems:
        lines += ["## Missing or partial records", ""] + [f"- {p}" for p in problems] + [""]
    lines += ["## Targets", ""]
    for name, spec in TARGETS.items():
        lines += [f"### `{name}`: {spec.what}", ""]
        keys = _table_keys(name)
        linked = [t for t in tables if t.key in keys]
        if linked:
            lines.append("- Tables: " + ", ".join(
                f"[{t.title}](paper_tables.md#{_anchor(t.title)})" for t in linked))
        figures = _figures(root, spec.folder) if not name.endswith("_seeds") else []
        if figures:
            lines.append("- Figures: " + ", ".join(
                f"[{p.relative_to(root)}]({p.relative_to(root)})" for p in figures))
        notes = _command_notes(root, spec.folder) if not name.endswith("_seeds") else []
        if notes:
            lines.append("- Commands, timings and notes: " + ", ".join(
                f"[{p.relative_to(root)}]({p.relative_to(root)})" for p in notes))
        lines += ["", "```bash"]
        for scale in (s for s in ("cpu", "paper") if s in spec.scales):
            lines.append(f"python scripts/reproduce.py run {name} --scale {scale}   # runs:")
            lines += [f"    {step.shell()}" for step in plan(name, scale)]
        lines += ["```", ""]
    return "\n".join(lines)


def _table_keys(target: str) -> set[str]:
    return {"toy": {"toy"}, "vdp": {"vdp", "vdp_learning"}, "cifar10": {"cifar10_methods"},
            "cifar10_seeds": {"cifar10_seeds"}, "cifar100": {"cifar100_methods"},
            "cifar100_seeds": {"cifar100_seeds"}, "digits": {"digits_methods", "digits_seeds"},
            "mujoco": {"mujoco"}, "sines": {"sines"}, "three_body": {"three_body"},
            "bench": {"bench"}}[target]


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    kept = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")


HEADLINE_TABLES = ("toy", "three_body", "digits_methods")
HEADLINE_FIGURE = "vdp/vdp_reconstruction.png"


def readme_section(tables: list[Table]) -> str:
    """The README's Results section: headline tables and one figure, from the records."""
    chosen = [t for key in HEADLINE_TABLES for t in tables if t.key == key]
    parts = ["## Results", "",
             "Regenerated from the run records in `results/` by "
             "`python scripts/reproduce.py render`; every table and figure, the commands that "
             "made them, the machine and the versions are in [results/README.md]"
             "(results/README.md). The paper's numbers stand beside ours.", ""]
    for table in chosen:
        parts.append(table_markdown(table).replace("### ", "#### ", 1))
    parts += ["![Van der Pol: forward and reverse-time trajectories](results/"
              f"{HEADLINE_FIGURE})", ""]
    return "\n".join(parts)


def replace_section(text: str, section: str, heading: str = "## Results") -> str:
    """``text`` with the Markdown section under ``heading`` (up to the next ``## ``) replaced."""
    start = text.find(f"\n{heading}\n")
    if start < 0:
        return text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    end = text.find("\n## ", start + len(heading) + 2)
    tail = text[end:] if end >= 0 else "\n"
    return text[:start + 1] + section.rstrip("\n") + "\n" + tail


def render(root: Path, readme: Path | None = None) -> list[str]:
    """Write paper_tables.md/.tex and README.md under ``root`` (and the Results section of
    ``readme`` when given); return the missing/partial-record messages."""
    records = Records(root)
    tables = all_tables(records)
    root.mkdir(parents=True, exist_ok=True)
    header = ("# The paper's tables, regenerated\n\nOur numbers beside the paper's (PAPER.md; "
              "≈: read off its plots). \"missing\": no run record yet (see README.md).\n\n")
    (root / "paper_tables.md").write_text(header + "\n".join(table_markdown(t) for t in tables))
    (root / "paper_tables.tex").write_text(
        "% Generated by `python scripts/reproduce.py render`; needs \\usepackage{booktabs}.\n"
        + "\n".join(table_latex(t) for t in tables))
    (root / "README.md").write_text(results_readme(root, tables, records.problems))
    if readme is not None and readme.is_file():
        readme.write_text(replace_section(readme.read_text(), readme_section(tables)))
    return records.problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reproduce.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run one target's experiments")
    run_parser.add_argument("target", help=f"one of: {', '.join(TARGETS)}")
    run_parser.add_argument("--scale", default="cpu", help=f"one of: {', '.join(SCALES)}")
    run_parser.add_argument("--root", default=None,
                            help="records go to ROOT/<target> (default: results, "
                                 "outputs/smoke at smoke scale)")
    run_parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    render_parser = commands.add_parser("render", help="render every table from the records")
    render_parser.add_argument("--root", type=Path, default=REPO_ROOT / "results")
    commands.add_parser("list", help="the targets and their scales")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return run_target(args.target, args.scale, args.root, args.dry_run)
        if args.command == "list":
            for name, spec in TARGETS.items():
                print(f"{name:15s} {'/'.join(spec.scales):16s} {spec.what}")
            return 0
    except ReproduceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    root = args.root.resolve()
    default = root == (REPO_ROOT / "results").resolve()
    problems = render(root, REPO_ROOT / "README.md" if default else None)
    for problem in problems:
        print(f"missing: {problem}", file=sys.stderr)
    print(f"wrote {root / 'paper_tables.md'}, paper_tables.tex and README.md"
          + (" and the README's Results section" if default else "")
          + (f"; {len(problems)} missing or partial record(s)" if problems else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
