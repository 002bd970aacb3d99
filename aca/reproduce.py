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
import contextlib
import csv
import datetime as dt
import io
import json
import math
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
from aca import provenance
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
    quick = ("--quick",) if scale == "smoke" else ()
    return [script("bench_gradients.py", *quick, "--out", out),
            script("bench_gradients.py", "--outputs", *quick, "--out", out)]


@dataclass(frozen=True)
class Target:
    """A paper table or figure: where its records live and how each scale makes them.
    ``records``: glob patterns, under ``folder`` (and ``folder/paper`` at paper scale), of
    the run records the target writes, each stamped with the code that made it (a JSON
    file with a ``provenance`` stamp, or a CSV table with one per row)."""

    folder: str
    what: str
    steps: Callable[[str, str], list[Step]]
    records: tuple[str, ...]
    scales: tuple[str, ...] = SCALES


TARGETS: dict[str, Target] = {
    "toy": Target("toy", "Exp. 1: toy gradient error vs the closed form", _toy,
                  ("toy.json", "decay/toy.json"), ("smoke", "cpu")),
    "vdp": Target("vdp", "Exp. 2: van der Pol reverse-time reconstruction (+ learning mu)", _vdp,
                  ("vdp_reconstruction.json", "runs/*.json"), ("smoke", "cpu")),
    "cifar10": Target("cifar10", "Exp. 3, Fig. 7a/b: NODE-18 trained with each method",
                      _cifar_methods("cifar10"), ("runs/methods/*/result.json",)),
    "cifar10_seeds": Target("cifar10", "Exp. 3, Fig. 7c/d: NODE-18 vs ResNet-18 over seeds",
                            _cifar_seeds("cifar10"), ("runs/seeds/*/result.json",)),
    "cifar100": Target("cifar100", "Exp. 3 on CIFAR-100: NODE-18 trained with each method",
                       _cifar_methods("cifar100"), ("runs/methods/*/result.json",)),
    "cifar100_seeds": Target("cifar100", "Exp. 3 on CIFAR-100: NODE-18 vs ResNet-18 over seeds",
                             _cifar_seeds("cifar100"), ("runs/seeds/*/result.json",)),
    "digits": Target("digits", "CPU stand-in for exp. 3 (8x8 digits)", _digits,
                     ("runs/methods/*/result.json", "runs/seeds/*/result.json",
                      "solver_robustness.csv"), ("smoke", "cpu")),
    "mujoco": Target("mujoco", "Exp. 4: Latent ODE / ODE-RNN on Mujoco Hopper",
                     _timeseries("mujoco"), ("table.csv", "longer/table.csv")),
    "sines": Target("sines", "Exp. 4's models on synthetic irregular sines",
                    _timeseries("sines"), ("table.csv",), ("smoke", "cpu")),
    "three_body": Target("three_body", "Exp. 5: three-body masses", _three_body, ("runs/*.json",)),
    "bench": Target("bench", "Table 1 measured: speed, memory, NFE, gradient error", _bench,
                    ("bench.json", "outputs.json"), ("smoke", "cpu")),
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
             f"run from the repository root",
             f"# code: {provenance.describe(provenance.stamp())}"]
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


# ----------------------------------------------------------------------- staleness

STALE_MARK = "†"
STALE_NOTE = ("†: a stale record, made by other code than the current aca/, configs/ and "
              "experiments/ (or not stamped); `python scripts/reproduce.py check` lists them.")


def stamp_of(record: Any) -> dict | None:
    """The provenance stamp of a JSON record or of a CSV table's row, or None."""
    if not isinstance(record, dict):
        return None
    if isinstance(record.get("provenance"), dict):
        return record["provenance"]
    if all(record.get(key) not in (None, "") for key in provenance.CSV_FIELDS):
        return {key: record[key] for key in provenance.CSV_FIELDS}
    return None


def is_current(stamp: dict | None, code_now: str) -> bool:
    """Whether a record was made by exactly the code there is now."""
    return stamp is not None and stamp.get("code") == code_now != provenance.UNKNOWN


def current_code() -> str | None:
    """The code hash of the checkout aca runs from, or None outside a git checkout."""
    root = provenance.repo_root()
    return provenance.working_code(root) if root is not None else None


def record_stamps(path: Path) -> list[dict | None]:
    """The stamp of a JSON record, or of each row of a CSV record ([None]: unreadable)."""
    try:
        if path.suffix == ".json":
            return [stamp_of(json.loads(path.read_text()))]
        with path.open(newline="") as handle:
            return [stamp_of(row) for row in csv.DictReader(handle)] or [None]
    except (OSError, ValueError):
        return [None]


def find_records(root: Path) -> list[tuple[str, Path]]:
    """``(target, path)`` of every run record under ``root`` that a target declares."""
    found: dict[Path, str] = {}
    for name, spec in TARGETS.items():
        for pattern in spec.records:
            for prefix in ("", "paper/"):
                for path in sorted((root / spec.folder).glob(prefix + pattern)):
                    found.setdefault(path, name)
    return [(name, path) for path, name in found.items()]


@dataclass
class Staleness:
    """One record that was not made by the current code, and why."""

    target: str
    path: Path
    reason: str

    @property
    def rerun(self) -> str:
        scale = " --scale paper" if "paper" in self.path.parts else ""
        return f"python scripts/reproduce.py run {self.target}{scale}"


def _why_stale(stamps: list[dict | None], code_now: str) -> str | None:
    old = [stamp for stamp in stamps if not is_current(stamp, code_now)]
    if not old:
        return None
    rows = f" ({len(old)} of {len(stamps)} rows)" if len(stamps) > 1 else ""
    stamp = old[0]
    if stamp is None:
        return "no provenance stamp (made before stamps existed)" + rows
    if stamp.get("code") in (None, provenance.UNKNOWN):
        return "made outside a git checkout: its code is unknown" + rows
    since = provenance.code_commits_since(provenance.repo_root(), str(stamp.get("commit")))
    changed = f"; {since} commit(s) changed the code since" if since else ""
    return f"made by {provenance.short(stamp)}, code {str(stamp['code'])[:10]}{changed}{rows}"


def stale_records(root: Path, code_now: str) -> tuple[list[Staleness], int]:
    """The records under ``root`` not made by ``code_now``, and how many records there are."""
    records = find_records(root)
    stale = []
    for target, path in records:
        reason = _why_stale(record_stamps(path), code_now)
        if reason is not None:
            stale.append(Staleness(target, path, reason))
    return stale, len(records)


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path)


def check(root: Path, strict: bool = False) -> int:
    """List the records under ``root`` made by other code than the current (stale); with
    ``strict``, return 1 when there is one."""
    code_now = current_code()
    if code_now is None:
        raise ReproduceError("check needs the git checkout aca is imported from (pip install "
                             "-e .); outside one the code that made a record is unknown")
    head = provenance.make_stamp(provenance.repo_root())
    print(f"code now: {provenance.short(head)}, code {code_now[:10]} (aca/, configs/, "
          "experiments/; not the reporting code)")
    stale, total = stale_records(root, code_now)
    for item in stale:
        print(f"stale  {_shown(item.path)}: {item.reason}")
    print(f"{len(stale)} of {total} records under {_shown(root)} are stale"
          + (", rerun them with the current code:" if stale else "."))
    for command in dict.fromkeys(item.rerun for item in stale):
        print(f"  {command}")
    return 1 if strict and stale else 0


# --------------------------------------------------------------------------- drift

#: values that differ between identical runs: timings, where and when, the stamp
VOLATILE = frozenset({"provenance", "command", "out_dir", "date", "time_s", "total_time_s",
                      "wall_time_s", "train_time_s", "test_time_s"})


class Unverifiable(Exception):
    """A committed record without a provenance stamp: made before stamps, not comparable."""


@dataclass(frozen=True)
class DriftCheck:
    """A cheap deterministic ``aca-run`` job whose records must equal the committed ones.

    ``overrides``: the job (``{out}``: its temporary results folder); ``record``: the
    committed record (under results/) whose stamp makes the check apply; ``files``: pairs
    (committed file under results/, new file under the job's folder) compared value by
    value to relative tolerance ``rtol`` (integers such as NFE exactly, in effect), leaving
    out ``VOLATILE`` keys; ``columns``/``rows`` restrict a CSV to the values that do not
    depend on the CPU, and to the epochs of a shortened run."""

    target: str
    overrides: tuple[str, ...]
    record: str
    files: tuple[tuple[str, str], ...]
    rtol: float
    columns: tuple[str, ...] | None = None
    rows: int | None = None


# Tolerances, measured by rerunning each job with torch's scalar kernels
# (ATEN_CPU_CAPABILITY=default, ONEDNN_MAX_CPU_ISA=SSE41) against AVX-512 on one machine;
# AVX2 against AVX-512 gave bit-identical records for every job but digits.
# - toy: gradients of a linear ODE in float64; the largest change was 1.2e-11 (relative).
# - vdp_reconstruct: van der Pol's reverse-time solves amplify round-off, most in dopri8's
#   rows: up to 6.1e-4 (reverse error and gradient errors), so 1e-3; NFE stays exact.
# - digits: float32 training is chaotic across CPUs (test loss after one epoch moved by 20 %),
#   so only the solver's counts of the first epoch (identical on all three) and its mean
#   training loss (moved by 2.8e-4) are compared, to 1e-3: a changed step-size controller or
#   initial step changes the counts (the stale records of issue 19: 502 vs 552 forward NFE).
DRIFT_CHECKS: dict[str, DriftCheck] = {
    "toy": DriftCheck("toy", ("+experiment=toy", "task.results_dir={out}"), "toy/toy.json",
                      tuple((f"toy/{name}", name) for name in
                            ("toy.json", "toy_error_vs_T.csv", "toy_error_vs_tol.csv")), 1e-6),
    "toy_decay": DriftCheck("toy", ("+experiment=toy_decay", "task.results_dir={out}"),
                            "toy/decay/toy.json",
                            tuple((f"toy/decay/{name}", name) for name in
                                  ("toy.json", "toy_error_vs_T.csv", "toy_error_vs_tol.csv")),
                            1e-6),
    # n_points and figure_tolerances shape the figure only, not the records compared
    "vdp_reconstruct": DriftCheck("vdp", ("+experiment=vdp_reconstruct", "task.results_dir={out}",
                                          "task.n_points=2", "task.figure_tolerances=[1e-2]"),
                                  "vdp/vdp_reconstruction.json",
                                  (("vdp/vdp_reconstruction.json", "vdp_reconstruction.json"),),
                                  1e-3),
    # the first of the 15 epochs of digits' node18-aca run (its schedule steps at epoch 10)
    "digits": DriftCheck("digits", ("+experiment=digits_methods", "method=aca", "task.epochs=1",
                                    "trainer.checkpoint=false"),
                         "digits/runs/methods/node18-aca/result.json",
                         (("digits/runs/methods/node18-aca/metrics.csv", "run/metrics.csv"),),
                         1e-3, columns=("epoch", "train_loss", "nfe_forward", "nfe_backward",
                                        "accepted", "rejected", "test_nfe_per_batch"), rows=1),
}


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def differences(committed: Any, new: Any, rtol: float, where: str = "") -> list[str]:
    """Where two records differ: numbers beyond ``rtol`` (relative), anything else unequal;
    ``VOLATILE`` keys are left out."""
    if isinstance(committed, dict) and isinstance(new, dict):
        found = []
        for key in [k for k in {**committed, **new} if k not in VOLATILE]:
            if key not in committed or key not in new:
                side = "committed" if key in committed else "new"
                found.append(f"{where}.{key}: only in the {side} record")
            else:
                found += differences(committed[key], new[key], rtol, f"{where}.{key}")
        return found
    if isinstance(committed, list) and isinstance(new, list):
        if len(committed) != len(new):
            return [f"{where}: {len(committed)} entries committed, {len(new)} now"]
        return [line for i, (a, b) in enumerate(zip(committed, new))
                for line in differences(a, b, rtol, f"{where}[{i}]")]
    a, b = _number(committed), _number(new)
    if a is not None and b is not None:
        same = a == b or (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rtol)
    else:
        same = committed == new
    return [] if same else [f"{where}: committed {committed!r}, now {new!r}"]


def _load(path: Path, spec: DriftCheck) -> Any:
    if not path.is_file():
        raise ReproduceError(f"{_shown(path)} is missing: run `python scripts/reproduce.py run "
                             f"{spec.target}`")
    if path.suffix == ".json":
        return json.loads(path.read_text())
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))[:spec.rows]
    return [{k: v for k, v in row.items() if spec.columns is None or k in spec.columns}
            for row in rows]


def compose_job(overrides: Sequence[str]) -> Any:
    """The config ``aca-run OVERRIDES`` composes (one job, no sweep)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def drift(name: str, workdir: Path, results: Path = REPO_ROOT / "results") -> list[str]:
    """Rerun drift check ``name`` in this process, into ``workdir``; return how its records
    differ from the committed ones under ``results`` (empty: they reproduce). Raises
    Unverifiable when the committed record has no stamp (made before stamps existed)."""
    from aca.train import run

    spec = DRIFT_CHECKS[name]
    if stamp_of(_load(results / spec.record, spec)) is None:
        raise Unverifiable(f"{spec.record} has no provenance stamp; rerun it with `python "
                           f"scripts/reproduce.py run {spec.target}` to check it")
    out = workdir / "results"
    run(compose_job([o.replace("{out}", str(out)) for o in spec.overrides]), workdir / "run")
    found = []
    for committed, new in spec.files:
        found += differences(_load(results / committed, spec),
                             _load((workdir / "run" if new.startswith("run/") else out)
                                   / new.removeprefix("run/"), spec),
                             spec.rtol, committed)
    return found


def drift_command(names: Sequence[str]) -> int:
    """``drift``: rerun each check (one torch thread), print how it went; 1 on any drift."""
    import tempfile

    import torch

    unknown = [name for name in names if name not in DRIFT_CHECKS]
    if unknown:
        raise ReproduceError(f"unknown drift check {unknown[0]!r}; choose one of: "
                             f"{', '.join(DRIFT_CHECKS)}")
    torch.set_num_threads(1)
    drifted = False
    for name in names or DRIFT_CHECKS:
        began = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory() as workdir, \
                    contextlib.redirect_stdout(io.StringIO()):  # the runs' own tables
                found = drift(name, Path(workdir))
        except Unverifiable as reason:
            print(f"skipped {name}: {reason}")
            continue
        seconds = time.perf_counter() - began
        if not found:
            print(f"ok      {name}: reproduces the committed records ({seconds:.1f} s)")
            continue
        drifted = True
        print(f"DRIFT   {name}: {len(found)} value(s) differ from the committed records "
              f"({seconds:.1f} s); rerun `python scripts/reproduce.py run "
              f"{DRIFT_CHECKS[name].target}` if the change is intended")
        print("\n".join(f"    {line}" for line in found[:20]))
    return 1 if drifted else 0


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
                         PAPER_TOY_ABS_ERROR[method]])
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
                     PAPER_VDP_REVERSE])
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
            learning_rows.append([method, rtol, *(cell(value, stale=records.stale(record))
                                                  for value in values), "–"])
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
        physics, stale = model == "physics", records.stale(record)
        masses = [mass(records.pick(record, key, rel), stale) if physics else "–"
                  for key in ("m1", "m2", "m3")]
        masses.append(cell(records.pick(record, "mass_error", rel), stale=stale) if physics
                      else "–")
        paper = PAPER_THREE_BODY_MASSES if physics and method == "aca" else "–"
        rows.append([scale, model, method,
                     *(cell(records.pick(record, key, rel)) for key in ("epochs", "rtol")),
                     *masses, cell(records.pick(record, "extrap_rmse", rel), stale=stale),
                     paper])
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
            stale = records.stale(run)
            accuracy = _final_accuracy(records, run, rel)
            methods_rows.append([scale, label, cell(accuracy, stale=stale),
                                 cell(seconds, stale=stale), paper_acc, paper_hours])
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
                cells.append(cell(None if row is None else row.get("test_mse") or None, 100.0,
                                  stale=records.stale(row)))
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
    rows, stale = [], records.stale(data)
    for row in (data or {}).get("rows", []) + (data or {}).get("hundred_step", []):
        method = row.get("method")
        measured = [cell(row.get(key), stale=stale) for key in
                    ("fwd_bwd_ms", "peak_mib", "nfe_forward", "nfe_backward")]
        rows.append([row.get("problem"), row.get("setting"), method, *measured,
                     cell(row.get("grad_rel_error"), stale=stale)
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
    """Every table, in the paper's order; a table with stale cells says what the mark means."""
    tables = [*toy_tables(records), *vdp_tables(records),
              *cifar_tables(records, "cifar10", ""), *cifar_tables(records, "cifar100", ""),
              *cifar_tables(records, "digits", "(CIFAR-10) "),
              *timeseries_tables(records, "mujoco", "Mujoco Hopper"),
              *timeseries_tables(records, "sines", "Irregular sines"),
              *three_body_tables(records), *bench_tables(records)]
    for table in tables:
        if any(str(value).endswith(STALE_MARK) for row in table.rows for value in row):
            table.notes.append(STALE_NOTE)
    return tables


def table_markdown(table: Table) -> str:
    lines = [f"### {table.title}", "", markdown_table(table.headers, table.rows).rstrip()]
    lines += [""] + table.notes if table.notes else []
    return "\n".join(lines) + "\n"


LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                 "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                 "^": r"\textasciicircum{}", "≈": r"$\approx$", "α": r"$\alpha$", "μ": r"$\mu$",
                 "−": "-", "×": r"$\times$", "·": r"$\cdot$", "Δ": r"$\Delta$", "²": r"$^2$",
                 "|": r"$|$", "<": r"$<$", "–": "--", "‖": r"$\|$", STALE_MARK: r"\dag{}"}


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
    import torch

    return {"cpu": provenance.cpu_name(), "cores": os.cpu_count(), "os": platform.platform(),
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


def results_readme(root: Path, tables: list[Table], problems: list[str],
                   stale: Sequence[Staleness] = ()) -> str:
    """results/README.md: what each table and figure is, its commands, machine, versions."""
    info = machine()
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Results: the paper's tables and figures, regenerated",
        "",
        "Rendered by `python scripts/reproduce.py render` from the run records in this folder",
        f"on {date}: CPU {info['cpu']} ({info['cores']} cores), GPU {info['gpu']}, "
        f"{info['os']}; Python {info['python']}, torch {info['torch']}, aca {info['aca']}.",
        "The records themselves were made by the commands below (each target's REPRODUCE.txt /",
        "COMMAND.txt / README.md says when, where and how long), and each record's provenance",
        "stamp names the code that made it: cells of records made by other code than the current",
        "are marked †, and `python scripts/reproduce.py check` lists those records. The paper's",
        "numbers come from PAPER.md (≈: read off the paper's plots).",
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
    if stale:
        by_target: dict[str, list[Staleness]] = {}
        for item in stale:
            by_target.setdefault(item.rerun, []).append(item)
        lines += ["## Stale records", "",
                  f"Made by other code than the current one; their cells are marked {STALE_MARK}. "
                  "`python scripts/reproduce.py check` lists each record and why.", ""]
        lines += [f"- {len(items)} record(s) of `{items[0].target}`: `{command}`"
                  for command, items in by_target.items()] + [""]
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
    ``readme`` when given); return the missing/partial-record messages (stale records are
    marked, listed in README.md and counted on stdout)."""
    code_now = current_code()
    records = Records(root, code_now=code_now)
    tables = all_tables(records)
    stale = stale_records(root, code_now)[0] if code_now is not None else []
    root.mkdir(parents=True, exist_ok=True)
    header = ("# The paper's tables, regenerated\n\nOur numbers beside the paper's (PAPER.md; "
              "≈: read off its plots). \"missing\": no run record yet (see README.md).\n\n")
    (root / "paper_tables.md").write_text(header + "\n".join(table_markdown(t) for t in tables))
    (root / "paper_tables.tex").write_text(
        "% Generated by `python scripts/reproduce.py render`; needs \\usepackage{booktabs}.\n"
        + "\n".join(table_latex(t) for t in tables))
    (root / "README.md").write_text(results_readme(root, tables, records.problems, stale))
    if stale:
        print(f"{len(stale)} stale record(s), their cells marked {STALE_MARK}: "
              "python scripts/reproduce.py check lists them")
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
    check_parser = commands.add_parser("check", help="list the records made by older code")
    check_parser.add_argument("--root", type=Path, default=REPO_ROOT / "results")
    check_parser.add_argument("--strict", action="store_true",
                              help="exit with status 1 when a record is stale")
    drift_parser = commands.add_parser("drift", help="rerun the cheap deterministic targets "
                                       "and compare them with the committed records")
    drift_parser.add_argument("names", nargs="*", help=f"some of: {', '.join(DRIFT_CHECKS)}")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return run_target(args.target, args.scale, args.root, args.dry_run)
        if args.command == "check":
            return check(args.root.resolve(), args.strict)
        if args.command == "drift":
            return drift_command(args.names)
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
