"""The reproduction plan, as data: each paper table or figure (a target) with the commands
that regenerate it at each scale, the run records it leaves under results/, and the tables
rendered from them; ``run_target`` runs a target's commands from the repository root.

Every target runs ``aca-run`` into run folders under its own results folder (analyses:
that folder itself), then ``python scripts/reproduce.py summarize`` builds its cross-run
tables, records and figures from those run folders; nothing else writes results/.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aca
from aca import provenance
from aca.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
SCALES = ("smoke", "cpu", "paper")
DEFAULT_ROOTS = {"smoke": "outputs/smoke", "cpu": "results", "paper": "results"}


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


def summarize(kind: str, runs: str, out: str, *args: str) -> Step:
    """The cross-run summary ``kind`` of the run folders under ``runs``, written to ``out``."""
    return script("reproduce.py", "summarize", kind, runs, "--out", out, *args)


def _toy(scale: str, out: str) -> list[Step]:
    small = ("task.T_num=3", "task.solvers=[dopri5]", "task.tolerances=[1e-3]")
    extra = small if scale == "smoke" else ()
    return [aca_run("+experiment=toy", f"hydra.run.dir={out}", *extra),
            aca_run("+experiment=toy_decay", f"hydra.run.dir={out}/decay", *extra),
            aca_run("+experiment=toy_paper", f"hydra.run.dir={out}/paper", *extra)]


def _vdp(scale: str, out: str) -> list[Step]:
    recon = ("task.solvers=[dopri5]", "task.tolerances=[1e-3]",
             "task.figure_tolerances=[[1e-3,1e-3]]", "task.n_points=10")
    learn = ("trainer=smoke", "task.epochs=2")
    return [aca_run("+experiment=vdp_reconstruct", f"hydra.run.dir={out}",
                    *(recon if scale == "smoke" else ())),
            aca_run("-m", "+experiment=vdp", f"hydra.sweep.dir={out}/runs",
                    *(learn if scale == "smoke" else ())),
            summarize("vdp", f"{out}/runs", out)]


def _robertson(scale: str, out: str) -> list[Step]:
    small = ("task.solvers=[kvaerno5]", "task.tolerances=[1e-5]", "task.methods=[aca]",
             "task.n_train=2") if scale == "smoke" else ()
    learn = ("trainer=smoke", "task.epochs=2") if scale == "smoke" else ()
    return [aca_run("+experiment=robertson_gradients", f"hydra.run.dir={out}", *small),
            aca_run("-m", "+experiment=robertson", f"hydra.sweep.dir={out}/runs", *learn),
            summarize("robertson", f"{out}/runs", out)]


def _three_body(scale: str, out: str) -> list[Step]:
    runs = f"{out}/runs"
    if scale == "paper":
        return [aca_run("-m", "+experiment=three_body_paper", f"hydra.sweep.dir={runs}"),
                summarize("three_body", runs, out)]
    small = ("trainer=smoke", "task.epochs=2", "task.n_train=20", "task.n_test=40")
    extra = small if scale == "smoke" else ()
    return [aca_run("-m", "+experiment=three_body", f"hydra.sweep.dir={runs}", *extra),
            aca_run("+experiment=three_body_neural", f"hydra.run.dir={runs}/neural_aca", *extra),
            summarize("three_body", runs, out)]


def _cifar_methods(dataset: str) -> Callable[[str, str], list[Step]]:
    def steps(scale: str, out: str) -> list[Step]:
        runs = f"{out}/runs/methods"
        where = (f"hydra.sweep.dir={runs}", "hydra.sweep.subdir=${task.model}-${method.name}")
        if scale == "paper":
            train = [aca_run("-m", "+experiment=cifar_methods", f"task={dataset}", *where)]
        else:
            recipe = (f"task={dataset}", "solver=heun_euler", "solver.rtol=0.01",
                      "solver.atol=0.01", *where)
            extra = ("trainer=smoke", "task.epochs=1") if scale == "smoke" else ()
            train = [aca_run("-m", *recipe, "method=aca,adjoint,naive", *extra),
                     aca_run("-m", *recipe, "task.model=resnet18", "method=aca", *extra)]
        return [*train, summarize("methods", runs, out)]

    return steps


def _cifar_seeds(dataset: str) -> Callable[[str, str], list[Step]]:
    def steps(scale: str, out: str) -> list[Step]:
        runs = f"{out}/runs/seeds"
        where = (f"hydra.sweep.dir={runs}", "hydra.sweep.subdir=${task.model}-seed${seed}")
        if scale == "paper":
            train = aca_run("-m", "+experiment=cifar_seeds", f"task={dataset}", *where)
        else:
            seeds = "seed=0,1" if scale == "smoke" else "seed=0,1,2,3,4"
            extra = ("trainer=smoke", "task.epochs=1") if scale == "smoke" else ()
            train = aca_run("-m", f"task={dataset}", "solver=heun_euler", "solver.rtol=0.01",
                            "solver.atol=0.01", "task.model=node18,resnet18", seeds,
                            "trainer.checkpoint=false", *where, *extra)
        return [train, summarize("seeds", runs, out)]

    return steps


def _digits(scale: str, out: str) -> list[Step]:
    one_thread = (("OMP_NUM_THREADS", "1"),)
    methods, seeds = f"{out}/runs/methods", f"{out}/runs/seeds"
    smoke = scale == "smoke"
    extra = ("trainer=smoke", "task.epochs=1", "trainer.checkpoint=true") if smoke else ()
    solvers = ("--solvers", "rk4:step_size=0.5") if smoke else ()
    return [
        aca_run("-m", "+experiment=digits_methods", f"hydra.sweep.dir={methods}", *extra,
                *(("seed=0,1",) if smoke else ()), env=one_thread),
        aca_run("-m", "+experiment=digits_methods", "task.model=resnet18", "method=aca",
                "seed=0", f"hydra.sweep.dir={methods}", *extra, env=one_thread),
        summarize("methods", methods, out, "--title", "digits (8x8), heun_euler rtol=atol=1e-2"),
        aca_run("-m", "+experiment=digits_seeds", f"hydra.sweep.dir={seeds}",
                *(("seed=0,1", "trainer=smoke", "task.epochs=1") if smoke else ()),
                env=one_thread),
        summarize("seeds", seeds, out, "--title", "digits (8x8)"),
        script("solver_robustness.py", f"{methods}/node18-aca-seed0/last.pt", "--out", out,
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
            # the CPU sweep (54 runs) runs two jobs at a time (the launchers extra, in dev)
            extra = (("trainer=smoke", "task.epochs=1", "seed=0", size) if scale == "smoke"
                     else ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"))
            train = aca_run("-m", f"+experiment={name}_table", f"hydra.sweep.dir={runs}", *extra)
        baselines = script("timeseries_baselines.py", runs, "--out", out)
        if name != "sines":
            return [train, summarize("timeseries", runs, out), baselines]
        # the Latent ODE again with each series on its own steps (task.per_sample)
        per_sample = f"{out}/per_sample"
        again = aca_run("-m", "+experiment=sines_table", "task.model=latent_ode",
                        "task.per_sample=true", f"hydra.sweep.dir={per_sample}/runs", *extra)
        return [train, summarize("timeseries", runs, out), baselines,
                again, summarize("timeseries", f"{per_sample}/runs", per_sample)]

    return steps


def _bench(scale: str, out: str) -> list[Step]:
    quick = ("--quick",) if scale == "smoke" else ()
    per_sample = ("--batches", "64", "--repeats", "1") if scale == "smoke" else ()
    return [script("bench_gradients.py", *quick, "--out", out),
            script("bench_gradients.py", "--outputs", *quick, "--out", out),
            script("bench_per_sample.py", *per_sample, "--out", out),
            script("bench_gradients.py", "--torchdiffeq", *quick, "--out", out)]


def _cost_scaling(scale: str, out: str) -> list[Step]:
    quick = ("--quick", "--repeats", "3") if scale == "smoke" else ()
    return [script("bench_cost_scaling.py", "--out", out, *quick)]


def _diffrax(scale: str, out: str) -> list[Step]:
    """The diffrax peer: needs the JAX environment of scripts/make_jax_env.sh."""
    return [script("bench_diffrax.py", "--out", out)]


def _gradient_map(scale: str, out: str) -> list[Step]:
    quick = ("--quick",) if scale == "smoke" else ()
    return [script("gradient_accuracy_map.py", "--out", out, *quick)]


def _gpu(scale: str, out: str) -> list[Step]:
    """The GPU check (one CUDA device); at smoke scale its dry run on the CPU."""
    return [script("gpu_check.py", *(("--dry-run",) if scale == "smoke" else ()), "--out", out)]


@dataclass(frozen=True)
class Target:
    """A paper table or figure: where its records live and how each scale makes them.
    ``records``: glob patterns, under ``folder`` (and ``folder/paper`` at paper scale), of
    the run records the target writes, each stamped with the code that made it (a JSON
    file with a ``provenance`` stamp, or a CSV table with one per row); ``tables``: the
    keys of the tables rendered from them (aca.report.tables)."""

    folder: str
    what: str
    steps: Callable[[str, str], list[Step]]
    records: tuple[str, ...]
    tables: tuple[str, ...]
    scales: tuple[str, ...] = SCALES


TARGETS: dict[str, Target] = {
    "toy": Target("toy", "Exp. 1: toy gradient error vs the closed form", _toy,
                  ("toy.json", "decay/toy.json", "paper/toy.json", "result.json",
                   "decay/result.json", "paper/result.json"), ("toy",),
                  ("smoke", "cpu")),
    "vdp": Target("vdp", "Exp. 2: van der Pol reverse-time reconstruction (+ learning mu)", _vdp,
                  ("vdp_reconstruction.json", "result.json", "runs/*.json",
                   "runs/*/result.json"), ("vdp", "vdp_learning"), ("smoke", "cpu")),
    "cifar10": Target("cifar10", "Exp. 3, Fig. 7a/b: NODE-18 trained with each method",
                      _cifar_methods("cifar10"), ("runs/methods/*/result.json",),
                      ("cifar10_methods",)),
    "cifar10_seeds": Target("cifar10", "Exp. 3, Fig. 7c/d: NODE-18 vs ResNet-18 over seeds",
                            _cifar_seeds("cifar10"), ("runs/seeds/*/result.json",),
                            ("cifar10_seeds",)),
    "cifar100": Target("cifar100", "Exp. 3 on CIFAR-100: NODE-18 trained with each method",
                       _cifar_methods("cifar100"), ("runs/methods/*/result.json",),
                       ("cifar100_methods",)),
    "cifar100_seeds": Target("cifar100", "Exp. 3 on CIFAR-100: NODE-18 vs ResNet-18 over seeds",
                             _cifar_seeds("cifar100"), ("runs/seeds/*/result.json",),
                             ("cifar100_seeds",)),
    "digits": Target("digits", "CPU stand-in for exp. 3 (8x8 digits)", _digits,
                     ("runs/methods/*/result.json", "runs/seeds/*/result.json",
                      "runs/robustness/*/result.json", "solver_robustness.csv"),
                     ("digits_methods", "digits_seeds"),
                     ("smoke", "cpu")),
    "mujoco": Target("mujoco", "Exp. 4: Latent ODE / ODE-RNN on Mujoco Hopper",
                     _timeseries("mujoco"), ("table.csv", "baselines.csv", "runs/*/result.json"),
                     ("mujoco", "mujoco_baselines")),
    "sines": Target("sines", "Exp. 4's models on synthetic irregular sines",
                    _timeseries("sines"), ("table.csv", "baselines.csv", "runs/*/result.json",
                                           "per_sample/table.csv",
                                           "per_sample/runs/*/result.json"),
                    ("sines", "sines_baselines", "sines_per_sample"), ("smoke", "cpu")),
    "robertson": Target("robertson", "Issue 30: Robertson's stiff kinetics, each method's "
                        "gradient and the rate constants learned through kvaerno5", _robertson,
                        ("robertson_gradients.json", "result.json", "runs/*.json",
                         "runs/*/result.json"), ("robertson", "robertson_learning"),
                        ("smoke", "cpu")),
    "three_body": Target("three_body", "Exp. 5: three-body masses", _three_body,
                         ("runs/*.json", "runs/*/result.json"), ("three_body",)),
    "bench": Target("bench", "Table 1 measured: speed, memory, NFE, gradient error", _bench,
                    ("bench.json", "outputs.json", "per_sample.json", "torchdiffeq.json"),
                    ("bench",), ("smoke", "cpu")),
    "cost_scaling": Target("bench", "Table 1 as slopes: memory and time against N_t and N_f",
                           _cost_scaling, ("cost_scaling.json",), (), ("smoke", "cpu")),
    "diffrax": Target("bench", "Issue 31: aca against diffrax (JAX, jit) per step, in the same "
                      "run (the peer in its own venv: scripts/make_jax_env.sh)", _diffrax,
                      ("diffrax.json",), (), ("cpu",)),
    "gradient_map": Target("gradient_map", "The central claim mapped: gradient error against "
                           "cost per problem family and tolerance", _gradient_map,
                           ("gradient_map.json",), (), ("smoke", "cpu")),
    "gpu": Target("gpu", "The paper's workloads on one CUDA device: tests, bench, NODE-18 step "
                  "times, autocast, compile, host syncs, DDP", _gpu, ("gpu_check.json",), (),
                  ("smoke", "paper")),
}


def output_dir(target: str, scale: str, root: str) -> str:
    """Where a target's records go: ``<root>/<folder>`` (``/paper`` at paper scale)."""
    folder = f"{root.rstrip('/')}/{TARGETS[target].folder}"
    return f"{folder}/paper" if scale == "paper" else folder


def plan(target: str, scale: str, root: str | None = None) -> list[Step]:
    """The commands that regenerate ``target`` at ``scale``; ConfigError on bad input."""
    if target not in TARGETS:
        raise ConfigError(f"unknown target {target!r}; choose one of: {', '.join(TARGETS)}")
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; choose one of: {', '.join(SCALES)}")
    spec = TARGETS[target]
    if scale not in spec.scales:
        raise ConfigError(f"target {target!r} has no {scale!r} scale; choose one of: "
                          f"{', '.join(spec.scales)}")
    return spec.steps(scale, output_dir(target, scale, root or DEFAULT_ROOTS[scale]))


def machine() -> dict[str, Any]:
    """This machine and the versions that matter, for REPRODUCE.txt and results/README.md."""
    import torch

    return {"cpu": provenance.cpu_name(), "cores": os.cpu_count(), "os": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "aca": aca.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"}


def _executable(step: Step) -> list[str]:
    """argv to execute: aca-run and python from this interpreter's environment."""
    program, *args = step.argv
    if program == "python":
        return [sys.executable, *args]
    local = Path(sys.executable).parent / program
    found = str(local) if local.exists() else shutil.which(program)
    return [found, *args] if found else [sys.executable, "-m", "aca.cli", *args]


def finished_runs(out: Path, scale: str) -> list[Path]:
    """The ``last.pt`` of finished runs (beside their ``result.json``) under ``out`` (not
    its ``paper/`` records below a smaller scale): ``aca-run`` would resume them, train
    nothing and stamp the old result with the current code. Interrupted runs (no
    ``result.json`` yet) are left to resume."""
    paper = out / "paper"
    return sorted(path for path in out.rglob("last.pt")
                  if (path.parent / "result.json").is_file()
                  and (scale == "paper" or paper not in path.parents))


def run_target(target: str, scale: str, root: str | None = None, dry_run: bool = False,
               fresh: bool = False) -> int:
    """Run (or print) a target's commands in order; stop at the first failure. Each
    command, its exit status and wall time go to ``REPRODUCE.txt`` beside the records.
    Finished runs left in the run folders are refused, or with ``fresh`` their
    checkpoints (and logs) removed so that they train again."""
    steps = plan(target, scale, root)
    out = REPO_ROOT / output_dir(target, scale, root or DEFAULT_ROOTS[scale])
    if dry_run:
        print("\n".join(step.shell() for step in steps))
        return 0
    finished = finished_runs(out, scale)
    if finished and not fresh:
        raise ConfigError(f"{len(finished)} finished run(s) under {out} keep their last.pt "
                          f"(e.g. {finished[0]}): aca-run would resume them and train nothing; "
                          "pass --fresh to delete those checkpoints and train them again")
    for path in finished:  # and the run's log: aca-run appends to it, run after run
        for stale in (path, *path.parent.glob("*.log")):
            stale.unlink()
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
