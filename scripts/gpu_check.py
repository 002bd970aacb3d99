"""The paper's workloads checked on one CUDA device, in timed sections (issue 32).

    python scripts/gpu_check.py                        # one CUDA device, under 8 minutes
    python scripts/gpu_check.py --dry-run --out DIR    # every section on the CPU, toy sizes

Sections, each with its own time budget (``FULL.budgets``; a section past its budget skips
what is left of it and says so):

- ``tests``: tests/test_devices.py through pytest (the core's gradients, contract cases,
  dropout replay on the device's generator, per-sample steps, dense output and bf16
  autocast, on the CPU and on CUDA);
- ``bench``: scripts/bench_gradients.py's MLP and conv problems on the device: aca,
  adjoint, naive, torchdiffeq odeint / odeint_adjoint and TorchDiffEqPack's ACA, with
  forward+backward time (synchronised), peak ``torch.cuda.max_memory_allocated``, NFE and
  the gradient's error against a float64 reference;
- ``node18``: NODE-18 (and ResNet-18) at full CIFAR width, 11.2M parameters, training
  steps on synthetic CIFAR-shaped batches of 128 (scripts/time_cifar_epoch.py): time per
  step, peak memory, the hours of the paper's 90 epochs beside its 10.0 / 17.6 / 33.9 h,
  and the ratios between methods;
- ``amp_compile``: NODE-18 training steps with bf16 autocast on and off and through
  ``torch.compile`` (each compiled run in its own process, bounded by the budget; a
  failure is recorded, and the eager numbers stand);
- ``syncs``: host synchronisations per solver step (calls of ``item``, ``tolist``,
  ``__bool__``, ``__float__``, ``__int__`` on the state's device, and on CUDA the
  warnings of ``torch.cuda.set_sync_debug_mode``) and what one costs;
- ``ddp``: one DistributedDataParallel step of NODE-18 with 2 processes (nccl, when two
  CUDA devices exist; the dry run uses gloo on the CPU), replicas checked identical.

Writes ``gpu_check.md`` and ``gpu_check.json`` (the device's name, the provenance stamp,
every section's status, budget, wall time and rows) into ``--out`` (default: results/gpu/paper,
the record of ``python scripts/reproduce.py run gpu --scale paper``; a dry run must name
its folder); exit status 1 when a section failed (its error is in both files).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

SCRIPTS = Path(__file__).resolve().parent
REPO_ROOT = SCRIPTS.parent
sys.path.insert(0, str(SCRIPTS))

import bench_gradients as bench  # noqa: E402  (scripts/ is not a package)
import time_cifar_epoch as epoch  # noqa: E402

import aca  # noqa: E402
from aca import provenance  # noqa: E402
from aca.models.resnet import build_model  # noqa: E402
from aca.report import paper  # noqa: E402
from aca.report.format import markdown_table, write_json  # noqa: E402
from aca.report.measure import MIB  # noqa: E402
from aca.train import distributed  # noqa: E402

EPOCHS = 90  # the paper's CIFAR schedule
SYNC_METHODS = ("item", "tolist", "__bool__", "__float__", "__int__")


@dataclass(frozen=True)
class Sizes:
    """Problem sizes and time budgets (seconds) of a run: ``FULL`` on a GPU, ``DRY`` on
    the CPU."""

    mlp: dict = field(default_factory=lambda: {"dim": 64, "batch": 256})
    conv: dict = field(default_factory=lambda: {"channels": 64, "size": 16, "batch": 8})
    tolerance: tuple[float, float] = (1e-3, 1e-4)
    reference_tol: float = 1e-7
    repeats: int = 3
    width: int = 64  # NODE-18's first stage: 64 is the paper's (11,173,962 parameters)
    stages: int = 4  # the paper's
    batch: int = 128
    warmup: int = 3
    steps: int = 10
    compile_backend: str = "inductor"
    compile_amp: tuple[bool, ...] = (False, True)  # the autocast settings compiled
    budgets: dict = field(default_factory=lambda: {
        "tests": 90, "bench": 120, "node18": 90, "amp_compile": 90, "syncs": 20, "ddp": 40})


FULL = Sizes()
DRY = Sizes(mlp={"dim": 8, "batch": 4}, conv={"channels": 4, "size": 4, "batch": 2},
            reference_tol=1e-6, repeats=1, width=4, stages=1, batch=4, warmup=1, steps=2,
            compile_backend="eager",  # dynamo's tracing without inductor's minutes of codegen
            compile_amp=(False,),
            # generous: the dry run (about 30 s in all) checks that every part of every
            # section runs, and a busy shared CPU must not make it skip any
            budgets=dict.fromkeys(("tests", "bench", "node18", "amp_compile", "syncs", "ddp"),
                                  120))


class Budget:
    """A section's time allowance, counted from its start."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.perf_counter() + seconds

    def left(self) -> float:
        return max(0.0, self.deadline - time.perf_counter())

    def spent(self) -> bool:
        return self.left() == 0.0


SKIPPED = "skipped: budget spent"


@dataclass
class Section:
    """What a section measured: table rows (dicts with the same keys) and notes."""

    rows: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failed: str | None = None  # why the section failed (the script exits 1)


def error_text(error: BaseException) -> str:
    """An exception as one short line."""
    return f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"


# -- tests ---------------------------------------------------------------------------------

def check_tests(sizes: Sizes, device: torch.device, budget: Budget) -> Section:
    """tests/test_devices.py in a pytest process: outcome counts and what failed."""
    command = [sys.executable, "-m", "pytest", "tests/test_devices.py", "-rfEX",
               "-p", "no:cacheprovider"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=max(budget.left(), 1.0))
    lines = result.stdout.splitlines()
    summary = next((line for line in reversed(lines)
                    if re.search(r"\d+ (passed|failed|errors?)\b.* in ", line)), "")
    counts = {kind: int(n) for n, kind in re.findall(
        r"(\d+) (passed|failed|skipped|xfailed|xpassed|errors?)", summary)}
    section = Section(rows=[{"outcome": kind, "tests": n} for kind, n in counts.items()],
                      notes=[f"`{' '.join(command[1:])}`: {summary.strip('= ')}"])
    section.notes += [line for line in lines if line.startswith(("FAILED", "ERROR", "XPASS"))]
    if device.type == "cuda":
        section.notes.append("CUDA parameters ran (skipped only without a CUDA device).")
    else:
        section.notes.append("No CUDA device: the tests' CUDA parameters were skipped.")
    if result.returncode != 0 or not counts:
        section.failed = f"pytest exit status {result.returncode}: {summary or 'no summary'}"
    return section


# -- gradient bench ------------------------------------------------------------------------

def on_device(problem: bench.Problem, device: torch.device) -> bench.Problem:
    return bench.Problem(problem.name, problem.func.to(device), problem.y0.to(device),
                         problem.weight.to(device))


def peak_mib(action: Callable[[], object], device: torch.device) -> float:
    """Peak memory of ``action`` above the level before it: ``max_memory_allocated`` on
    CUDA, the profiler's allocation events on the CPU (bench_gradients' probe)."""
    if device.type != "cuda":
        return bench.peak_memory_bytes(action) / MIB
    epoch.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    action()
    epoch.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / MIB


def bench_row(method: str, problem: bench.Problem, setting: bench.Setting,
              reference: torch.Tensor, device: torch.device, repeats: int) -> dict:
    """One method on one problem: a warm-up run (counts, gradient error), the peak of a
    second, then the median of ``repeats`` synchronised forward+backward times."""
    first = bench.run_once(method, problem, setting)
    peak = peak_mib(lambda: bench.run_once(method, problem, setting), device)
    times = []
    for _ in range(repeats):
        epoch.synchronize(device)
        started = time.perf_counter()
        bench.run_once(method, problem, setting)
        epoch.synchronize(device)
        times.append(time.perf_counter() - started)
    error = (first.gradient - reference).norm() / reference.norm()
    return {"problem": problem.name, "method": bench.METHOD_LABELS[method],
            "fwd_bwd_ms": 1e3 * statistics.median(times), "peak_mib": peak,
            "nfe_forward": first.nfe_forward, "nfe_backward": first.nfe_backward,
            "accepted": first.info.get("accepted"), "grad_rel_error": float(error),
            "status": "ok"}


def check_bench(sizes: Sizes, device: torch.device, budget: Budget) -> Section:
    """bench_gradients' problems and methods, measured on the device."""
    section = Section()
    setting = bench.Setting(*sizes.tolerance)
    for problem in (bench.mlp_problem(**sizes.mlp), bench.conv_problem(**sizes.conv)):
        problem = on_device(problem, device)
        reference = bench.reference_gradient(problem, sizes.reference_tol)
        for method in bench.METHODS:
            base = {"problem": problem.name, "method": bench.METHOD_LABELS[method]}
            if budget.spent():
                section.rows.append({**base, "status": SKIPPED})
                continue
            try:
                section.rows.append(bench_row(method, problem, setting, reference, device,
                                              sizes.repeats))
            except Exception as error:  # a peer library failing on the device is a finding
                section.rows.append({**base, "status": error_text(error)})
    section.notes = [
        f"dopri5 rtol={setting.rtol:g} atol={setting.atol:g}, loss = sum(w * y(1)); MLP "
        f"{sizes.mlp}, conv block {sizes.conv} (scripts/bench_gradients.py); float32.",
        "fwd_bwd_ms: median of synchronised forward+backward runs after a warm-up; peak_mib: "
        "above the level before the run (CUDA: max_memory_allocated; CPU: profiler events); "
        f"grad_rel_error: against float64 torchdiffeq at rtol = atol = {sizes.reference_tol:g}."]
    return section


# -- NODE-18 at CIFAR width -----------------------------------------------------------------

def training_args(sizes: Sizes) -> argparse.Namespace:
    """time_cifar_epoch's arguments at these sizes."""
    return argparse.Namespace(width=sizes.width, stages=sizes.stages, batch_size=sizes.batch,
                              warmup=sizes.warmup, batches=sizes.steps)


def training_row(model_name: str, method: str | None, sizes: Sizes, device: torch.device,
                 **variant: object) -> dict:
    """One time_cifar_epoch row as a dict, with the hours of the paper's 90 epochs."""
    label, parameters, ms, epoch_s, nfe_f, nfe_b, peak_gib = epoch.time_training(
        model_name, method, training_args(sizes), device, **variant)
    return {"model": label, "parameters": parameters, "ms_per_step": ms,
            "hours_90_epochs": epoch_s * EPOCHS / 3600, "nfe_forward": nfe_f,
            "nfe_backward": nfe_b, "peak_mib": None if peak_gib is None else peak_gib * 1024}


def check_node18(sizes: Sizes, device: torch.device, budget: Budget) -> Section:
    """Training steps of NODE-18 with each method and of ResNet-18, projected to 90 epochs
    beside the paper's hours; the ratios between methods, ours and the paper's."""
    section = Section()
    for model_name, method in epoch.RUNS:
        hours = paper.CIFAR_METHODS[method][1] if model_name == "node18" else None
        base = {"model": f"{model_name} ({method})", "paper_hours": hours}
        if budget.spent():
            section.rows.append({**base, "status": SKIPPED})
            continue
        try:
            row = training_row(model_name, method, sizes, device)
            section.rows.append({**row, "paper_hours": hours, "status": "ok"})
        except Exception as error:  # e.g. naive out of device memory: a finding
            section.rows.append({**base, "status": error_text(error)})
            torch.cuda.empty_cache()  # a no-op without CUDA
    ours = {r["model"]: r.get("hours_90_epochs") for r in section.rows}
    aca_hours = ours.get("NODE-18 (aca)")
    for method in ("adjoint", "naive"):
        mine = ours.get(f"NODE-18 ({method})")
        theirs = paper.CIFAR_METHODS[method][1] / paper.CIFAR_METHODS["aca"][1]
        ratio = f"{mine / aca_hours:.2f}" if mine and aca_hours else "–"
        section.notes.append(f"{method} / aca training time: ours {ratio}, the paper's "
                             f"{theirs:.2f}")
    section.notes += [
        f"width {sizes.width}, {sizes.stages} stage(s), batch {sizes.batch}, heun_euler "
        f"rtol = atol = 1e-2 (the paper's), SGD; {sizes.steps} timed steps after "
        f"{sizes.warmup} on random 3x32x32 images and labels; hours: ms per step x "
        "ceil(50000 / batch) steps x 90 epochs (evaluation and data loading not counted). "
        "Random inputs change the solver's step counts, so compare the ratios, not the hours.",
        "paper_hours: docs/paper.md (≈, read off its plots)."]
    return section


def check_amp_compile(sizes: Sizes, device: torch.device, budget: Budget,
                      dry_run: bool) -> Section:
    """NODE-18 steps with bf16 autocast on and off (aca and naive), then aca through
    torch.compile (each in its own process, killed at the budget)."""
    section = Section()
    for method in ("aca", "naive"):
        for amp in (False, True):
            base = {"model": f"NODE-18 ({method})", "amp": amp, "compile": "off"}
            if budget.spent():
                section.rows.append({**base, "status": SKIPPED})
                continue
            try:
                row = training_row("node18", method, sizes, device, amp=amp)
                section.rows.append({**base, "ms_per_step": row["ms_per_step"],
                                     "peak_mib": row["peak_mib"], "status": "ok"})
            except Exception as error:  # e.g. the core under autocast: recorded
                section.rows.append({**base, "status": error_text(error)})
    for amp in sizes.compile_amp:
        base = {"model": "NODE-18 (aca)", "amp": amp, "compile": sizes.compile_backend}
        if budget.spent():
            section.rows.append({**base, "status": SKIPPED})
            continue
        worker = ["--worker", "compile", *(["--dry-run"] if dry_run else []),
                  *(["--amp"] if amp else [])]
        try:
            row, stderr = run_worker(worker, budget.left())
            limit = "recompile_limit" in stderr
            section.rows.append({**base, "ms_per_step": row["ms_per_step"],
                                 "peak_mib": row["peak_mib"],
                                 "status": "ok, dynamo hit its recompile limit" if limit
                                 else "ok"})
        except subprocess.TimeoutExpired:
            section.rows.append({**base, "status": "killed: compiling took the rest of the "
                                                   "budget (eager rows stand)"})
        except RuntimeError as error:
            section.rows.append({**base, "status": str(error)})
    section.notes = [
        "amp: the loss under torch.autocast(bfloat16), backward after it (the trainer's "
        "trainer.amp); compile: torch.compile(model) with that backend (the first steps, "
        "which compile, are the untimed warm-up). A failure is recorded in status; eager "
        "numbers are the fallback."]
    return section


# -- host synchronisations -------------------------------------------------------------------

@contextmanager
def count_host_syncs(device: torch.device) -> Iterator[Counter]:
    """Count the calls that copy a value of a tensor on ``device`` to the host (``item``,
    ``tolist``, ``bool()``, ``float()``, ``int()``; on CUDA also the synchronisations
    ``torch.cuda.set_sync_debug_mode`` warns of, as ``cuda_sync_warnings``)."""
    counts: Counter = Counter()
    originals = {name: getattr(torch.Tensor, name) for name in SYNC_METHODS}

    def counted(name: str, original: Callable) -> Callable:
        def call(self: torch.Tensor, *args: object, **kwargs: object) -> object:
            if self.device.type == device.type and device.index in (None, self.device.index):
                counts[name] += 1
            return original(self, *args, **kwargs)
        return call

    for name, original in originals.items():
        setattr(torch.Tensor, name, counted(name, original))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("warn")
            try:
                yield counts
            finally:
                if device.type == "cuda":
                    torch.cuda.set_sync_debug_mode("default")
        counts["cuda_sync_warnings"] = sum("synchroniz" in str(w.message) for w in caught)
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def sync_latency_us(device: torch.device, repeats: int = 50) -> float:
    """Median time of one tiny kernel plus ``item()``: what one host sync costs at least."""
    x = torch.zeros((), device=device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        (x + 1).item()
        times.append(time.perf_counter() - started)
    return 1e6 * statistics.median(times)


def check_syncs(sizes: Sizes, device: torch.device, budget: Budget) -> Section:
    """Host syncs of one forward and one backward per gradient method: dopri5 (per
    attempted step) and rk4 on grids of N and 2N steps (the difference: per fixed step)."""
    section = Section()
    problem = on_device(bench.mlp_problem(**sizes.mlp), device)
    latency = sync_latency_us(device)
    settings = {"dopri5": {"solver": "dopri5", "rtol": sizes.tolerance[0],
                           "atol": sizes.tolerance[1]},
                "rk4 10 steps": {"solver": "rk4", "step_size": 0.1},
                "rk4 20 steps": {"solver": "rk4", "step_size": 0.05}}
    for gradient in ("aca", "adjoint", "naive"):
        for label, options in settings.items():
            if budget.spent():
                section.rows.append({"gradient": gradient, "solver": label, "status": SKIPPED})
                continue
            y0 = problem.y0.detach().clone().requires_grad_()
            stats = aca.SolveStats()
            epoch.synchronize(device)
            started = time.perf_counter()
            with count_host_syncs(device) as forward:
                ys = aca.odeint(problem.func, y0, [0.0, 1.0], gradient=gradient, stats=stats,
                                **options)
            with count_host_syncs(device) as backward:
                (problem.weight * ys[-1]).sum().backward()
            epoch.synchronize(device)
            step_us = 1e6 * (time.perf_counter() - started) / (stats.accepted + stats.rejected)
            syncs_f = sum(v for k, v in forward.items() if k != "cuda_sync_warnings")
            syncs_b = sum(v for k, v in backward.items() if k != "cuda_sync_warnings")
            attempts = stats.accepted + stats.rejected
            section.rows.append({
                "gradient": gradient, "solver": label, "attempted": attempts,
                "syncs_forward": syncs_f, "syncs_backward": syncs_b,
                "forward_per_attempt": syncs_f / attempts,
                "cuda_sync_warnings": forward["cuda_sync_warnings"]
                + backward["cuda_sync_warnings"],
                "us_per_attempt_fwd_bwd": step_us,
                "sync_share": (syncs_f + syncs_b) * latency / (step_us * attempts),
                "status": "ok"})
    by_key = {(r["gradient"], r["solver"]): r for r in section.rows if r["status"] == "ok"}
    for gradient in ("aca", "adjoint", "naive"):
        ten, twenty = by_key.get((gradient, "rk4 10 steps")), by_key.get((gradient, "rk4 20 steps"))
        if ten and twenty:
            extra = twenty["syncs_forward"] - ten["syncs_forward"]
            section.notes.append(f"{gradient}: {extra / 10:g} forward host syncs per fixed "
                                 "step (rk4 20 steps minus 10, over 10)")
    section.notes += [
        f"One host sync (a tiny kernel and item()) takes {latency:.1f} µs here; sync_share: "
        "syncs x that latency / the solve's forward+backward time (a lower bound of their "
        "cost: a sync also drains the device's queue).",
        f"MLP {sizes.mlp}, t in [0, 1]; syncs: calls of {', '.join(SYNC_METHODS)} on tensors "
        "on the state's device (cuda_sync_warnings: torch.cuda.set_sync_debug_mode's count "
        "on CUDA, 0 on the CPU)."]
    return section


# -- DDP -----------------------------------------------------------------------------------------

def run_worker(args: list[str], timeout: float) -> tuple[dict, str]:
    """This script's ``--worker`` in a new process: the JSON it prints last, and its
    standard error (torch's warnings)."""
    result = subprocess.run([sys.executable, __file__, *args], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=max(timeout, 1.0))
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise RuntimeError(f"worker exit {result.returncode}: {lines[-1] if lines else ''}")
    return json.loads(result.stdout.splitlines()[-1]), result.stderr


def torchrun_cause(stderr: str) -> str:
    """The first failing rank's own last words in torchrun's report: the last line it
    printed itself (``[rankN]: ...``, or a C++ abort), else the root cause's signal."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()
             and not line.startswith("USDT")]
    own = [line for line in lines if line.startswith("[rank") or line.startswith("terminate")]
    signals = [line for line in lines if line.startswith("traceback :")]
    return own[-1] if own else signals[-1] if signals else lines[-1] if lines else ""


def check_ddp(sizes: Sizes, device: torch.device, budget: Budget, dry_run: bool) -> Section:
    """One DDP training step of NODE-18 with 2 processes under torchrun."""
    if device.type == "cuda" and torch.cuda.device_count() < 2:
        return Section(notes=["skipped: one CUDA device (the 2-process nccl step needs two)"])
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "ddp.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc_per_node=2", __file__, "--worker", "ddp", "--worker-out", str(out),
                   *(["--dry-run"] if dry_run else [])]
        result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True,
                                timeout=max(budget.left(), 1.0))
        if result.returncode != 0:
            return Section(failed=f"torchrun exit {result.returncode}: "
                                  f"{torchrun_cause(result.stderr)}")
        row = json.loads(out.read_text())
    section = Section(rows=[row])
    if row["replica_divergence"] != 0.0:
        section.failed = f"replicas differ after one step by {row['replica_divergence']:g}"
    section.notes = [f"NODE-18 width {sizes.width}, {sizes.stages} stage(s), global batch "
                     f"{sizes.batch} split over 2 processes (aca.train.distributed: setup, "
                     "wrap, replica_divergence); one warm-up step, then one timed step."]
    return section


def ddp_worker(sizes: Sizes, out: Path, device: str) -> None:
    """One rank of ``check_ddp``: rank 0 writes the row."""
    info = distributed.setup(True, device)
    torch.manual_seed(0)
    ode = {"solver": "heun_euler", "gradient": "aca", "rtol": 1e-2, "atol": 1e-2}
    model = build_model("node18", width=sizes.width, num_stages=sizes.stages,
                        ode_options=ode).to(info.device)
    model = distributed.wrap(model, info)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    generator = torch.Generator().manual_seed(info.rank)
    local = sizes.batch // info.world_size
    images = torch.randn(local, 3, 32, 32, generator=generator).to(info.device)
    labels = torch.randint(0, 10, (local,), generator=generator).to(info.device)
    times = []
    for _ in range(2):
        epoch.synchronize(info.device)
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
        epoch.synchronize(info.device)
        times.append(time.perf_counter() - started)
    divergence = distributed.replica_divergence(model, info)
    if info.is_main:
        out.write_text(json.dumps({
            "backend": torch.distributed.get_backend(), "world_size": info.world_size,
            "device": str(info.device), "step_ms": 1e3 * times[-1],
            "replica_divergence": divergence}))
    distributed.end_rank()


def compile_worker(sizes: Sizes, amp: bool, device: str) -> None:
    """One ``amp_compile`` row through torch.compile, printed as JSON."""
    row = training_row("node18", "aca", sizes, torch.device(device), amp=amp,
                       compile_backend=sizes.compile_backend)
    print(json.dumps(row))


# -- the report ------------------------------------------------------------------------------------

CHECKS = {"tests": check_tests, "bench": check_bench, "node18": check_node18,
          "amp_compile": check_amp_compile, "syncs": check_syncs, "ddp": check_ddp}
SECTIONS = tuple(CHECKS)
STARTS_WORKERS = ("amp_compile", "ddp")  # they pass --dry-run on to this script's workers


def run_section(name: str, sizes: Sizes, device: torch.device, dry_run: bool) -> dict:
    """Run one section within its budget; its record (an exception is its failure)."""
    budget = Budget(sizes.budgets[name])
    started = time.perf_counter()
    try:
        section = CHECKS[name](sizes, device, budget,
                               *((dry_run,) if name in STARTS_WORKERS else ()))
    except Exception as error:
        section = Section(failed=error_text(error))
    wall = time.perf_counter() - started
    status = f"failed: {section.failed}" if section.failed else "ok"
    if wall > budget.seconds:
        status += f" (over its {budget.seconds:g} s budget)"
    return {"name": name, "budget_s": budget.seconds, "wall_s": wall, "status": status,
            "rows": section.rows, "notes": section.notes}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {provenance.cpu_name()}"


def to_markdown(record: dict) -> str:
    """The sections' tables and notes."""
    lines = [f"# GPU check{' (dry run on the CPU, toy sizes)' if record['dry_run'] else ''}",
             "", f"Device: {record['device']}; torch {record['torch']} (CUDA "
             f"{record['cuda'] or 'none'}); {record['date']}; {record['wall_s']:.0f} s in all; "
             f"code: {provenance.describe(record['provenance'])}.", "",
             f"Command: `{record['command']}`", ""]
    for section in record["sections"]:
        lines += [f"## {section['name']}", "",
                  f"Status: {section['status']}; {section['wall_s']:.1f} s of a "
                  f"{section['budget_s']:g} s budget.", ""]
        if section["rows"]:
            headers = list(dict.fromkeys(key for row in section["rows"] for key in row))
            rows = [["–" if row.get(h) is None else row.get(h) for h in headers]
                    for row in section["rows"]]
            lines += [markdown_table(headers, rows)]
        lines += [f"- {note}" for note in section["notes"]] + [""]
    return "\n".join(lines)


def run_check(sizes: Sizes, device: torch.device, dry_run: bool, out: Path,
              command: str, log: Callable[[str], None] = print) -> dict:
    """Every section in order; write gpu_check.md and gpu_check.json into ``out``."""
    started = time.perf_counter()
    sections = []
    for name in SECTIONS:
        sections.append(run_section(name, sizes, device, dry_run))
        log(f"{name}: {sections[-1]['status']} ({sections[-1]['wall_s']:.1f} s)")
    record = {"device": device_name(device), "device_type": device.type, "dry_run": dry_run,
              "torch": torch.__version__, "cuda": torch.version.cuda,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": command,
              "wall_s": time.perf_counter() - started, "provenance": provenance.stamp(),
              "sections": sections}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "gpu_check.json", record)
    (out / "gpu_check.md").write_text(to_markdown(record))
    return record


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write gpu_check.md and gpu_check.json here "
                        "(default: results/gpu/paper; a dry run must name its folder)")
    parser.add_argument("--dry-run", action="store_true",
                        help="every section on the CPU at toy sizes (under a minute)")
    parser.add_argument("--worker", choices=("ddp", "compile"), help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--amp", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = DRY if args.dry_run else FULL
    if args.dry_run:
        torch.set_num_threads(1)  # the CPU's other cores belong to the other processes
    if args.worker == "ddp":
        ddp_worker(sizes, args.worker_out, "cpu" if args.dry_run else "auto")
        return 0
    if args.worker == "compile":
        compile_worker(sizes, args.amp, "cpu" if args.dry_run else "cuda")
        return 0
    if args.out is None and args.dry_run:
        parser.error("--dry-run needs --out: its toy numbers do not belong in results/")
    out = args.out or REPO_ROOT / "results" / "gpu" / "paper"
    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device; run with --dry-run to check the script on the CPU",
              file=sys.stderr)
        return 2
    device = torch.device("cpu")
    if not args.dry_run:  # with its index: tensors report cuda:0, never cuda
        device = torch.device("cuda", torch.cuda.current_device())
        torch.backends.cudnn.benchmark = True
    command = " ".join(["python", "scripts/gpu_check.py", *argv])
    record = run_check(sizes, device, args.dry_run, out, command,
                       log=lambda msg: print(msg, flush=True))
    print(f"{record['wall_s']:.0f} s; wrote {out / 'gpu_check.md'}")
    return 1 if any(s["status"].startswith("failed") for s in record["sections"]) else 0


if __name__ == "__main__":
    sys.exit(main())
