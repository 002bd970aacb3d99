"""Benchmark aca's three gradient methods against torchdiffeq and TorchDiffEqPack (issue 2).

One run measures, side by side on this CPU, for an MLP ODE and a conv ODE block:
forward time, forward+backward time, peak memory, NFE forward/backward, steps and
the gradient's relative error against a tight float64 reference; then the peak
memory of a 100-step fixed-grid solve. Methods are interleaved within each repeat
(the machine is shared, so medians of interleaved runs are the fair comparison).

    python scripts/bench_gradients.py [--quick] [--out results/bench] [--threads 1]

writes ``bench.md`` (tables, ratios, notes), ``bench.json`` (every number), ``bench.csv``
and ``COMMAND.txt`` into ``--out``. ``--outputs`` measures only the cost of output
times (issue 14): 2, 10, 100, 1000 outputs on [0, 5] for the 16-64-16 MLP, forward NFE
and forward+backward time of every method and torchdiffeq's, as ratios.
``--checkpoints`` measures only ACA's memory under ``max_checkpoints=K`` (K = 2, 4, 8,
16, all; 200 Euler steps of a 1e6-float state): forward and backward peak, backward
evaluations, bit-identity of the gradient.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torchdiffeq
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile, record_function
from TorchDiffEqPack import odesolve_adjoint

import aca
import aca.torchdiffeq as aca_torchdiffeq
from aca import provenance
from aca.report.format import markdown_table
from aca.report.measure import MIB, allocation_levels, peak_memory_bytes

METHODS = ("aca", "adjoint", "adjoint_seminorm", "naive", "torchdiffeq", "torchdiffeq_adjoint",
           "tdep_aca")
METHOD_LABELS = {
    "aca": "aca (gradient=aca)",
    "adjoint": "aca (gradient=adjoint)",
    "naive": "aca (gradient=naive)",
    "torchdiffeq": "torchdiffeq odeint",
    "torchdiffeq_adjoint": "torchdiffeq odeint_adjoint",
    "tdep_aca": "TorchDiffEqPack ACA",
    "aca_landing": "aca (gradient=aca, interpolate=False)",
    "adjoint_seminorm": "aca (gradient=adjoint, adjoint_seminorm=True)",
    "dropin": "aca.torchdiffeq odeint",
    "dropin_adjoint": "aca.torchdiffeq odeint_adjoint",
}
#: the conv block at torchdiffeq's tolerances: smaller, and default initialisation (gain 1),
#: since both continuous adjoints take minutes per run on the full-size stiffer block
DROPIN_CONV = {"channels": 16, "size": 8, "batch": 2}
#: aca.torchdiffeq against torchdiffeq, the pairs compared
DROPIN_PAIRS = (("dropin", "torchdiffeq"), ("dropin_adjoint", "torchdiffeq_adjoint"))
OUTPUT_METHODS = ("aca", "adjoint", "naive", "torchdiffeq", "torchdiffeq_adjoint", "aca_landing")
COLUMNS = ("problem", "setting", "method", "forward_ms", "fwd_bwd_ms", "peak_mib", "nfe_forward",
           "nfe_backward", "accepted", "attempted", "grad_rel_error")
GAIN = 4.0  # initial weights of f's last layer are scaled by this: stiffer dynamics, more steps


class CountingFunc(nn.Module):
    """``f(t, y) = net(y)``, counting its evaluations (the same count for every library)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.tally = [0]  # a list: setting an int attribute goes through Module.__setattr__ (slow)

    @property
    def calls(self) -> int:
        return self.tally[0]

    def forward(self, t: float | Tensor, y: Tensor) -> Tensor:
        self.tally[0] += 1
        return self.net(y)


@dataclass
class Problem:
    """An ODE ``dy/dt = func(y)`` on ``[0, 1]`` with the loss ``sum(weight * y(1))``."""

    name: str
    func: CountingFunc
    y0: Tensor
    weight: Tensor

    def to(self, dtype: torch.dtype) -> Problem:
        func = copy.deepcopy(self.func).to(dtype)
        return Problem(self.name, func, self.y0.to(dtype), self.weight.to(dtype))


def _scaled(layer: nn.Module, gain: float) -> nn.Module:
    """Multiply a layer's initial weights by ``gain``."""
    with torch.no_grad():
        layer.weight.mul_(gain)
    return layer


def mlp_problem(dim: int = 64, batch: int = 256, gain: float = GAIN, seed: int = 0,
                hidden: int | None = None) -> Problem:
    """``f = Linear(dim, hidden) - tanh - Linear(hidden, dim)`` (``hidden`` = ``dim``
    unless given)."""
    torch.manual_seed(seed)
    hidden = hidden or dim
    net = nn.Sequential(_scaled(nn.Linear(dim, hidden), gain), nn.Tanh(),
                        _scaled(nn.Linear(hidden, dim), gain))
    return Problem("mlp", CountingFunc(net), torch.randn(batch, dim), torch.randn(batch, dim))


def conv_problem(channels: int = 64, size: int = 16, batch: int = 8, gain: float = GAIN,
                 seed: int = 0) -> Problem:
    """``f = conv3x3 - GroupNorm - ReLU - conv3x3`` (the ODE block of an ODE-ResNet)."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1),
                        nn.GroupNorm(min(8, channels), channels), nn.ReLU(),
                        _scaled(nn.Conv2d(channels, channels, 3, padding=1), gain))
    shape = (batch, channels, size, size)
    return Problem("conv", CountingFunc(net), torch.randn(shape), torch.randn(shape))


@dataclass(frozen=True)
class Setting:
    """How to solve: ``dopri5`` adaptive at ``rtol``/``atol``, or ``rk4`` with ``step_size``."""

    rtol: float = 1e-3
    atol: float = 1e-4
    step_size: float | None = None
    outputs: int = 2  # output times, evenly spaced on [0, t1] (the loss sums over them)
    t1: float = 1.0

    @property
    def label(self) -> str:
        if self.step_size is not None:
            return f"rk4 h={self.step_size:g} ({round(1 / self.step_size)} steps)"
        label = f"dopri5 rtol={self.rtol:g} atol={self.atol:g}"
        outputs = f", {self.outputs} outputs on [0, {self.t1:g}]" if self.outputs != 2 else ""
        return label + outputs


def solve(method: str, problem: Problem, y0: Tensor, setting: Setting) -> tuple[Tensor, dict]:
    """``y`` at the output times after ``t0 = 0`` by one method; also return what the
    method reports about its steps. ``aca_landing``: ACA landing on every output time."""
    func = problem.func
    times = torch.linspace(0.0, setting.t1, setting.outputs, dtype=y0.dtype, device=y0.device)
    fixed = setting.step_size is not None
    if method in ("aca", "adjoint", "naive", "aca_landing", "adjoint_seminorm"):
        stats = aca.SolveStats()
        ys = aca.odeint(func, y0, times, solver="rk4" if fixed else "dopri5",
                        gradient=method.removesuffix("_landing").removesuffix("_seminorm"),
                        interpolate=method != "aca_landing", rtol=setting.rtol,
                        atol=setting.atol, step_size=setting.step_size, stats=stats,
                        adjoint_seminorm=method == "adjoint_seminorm")
        return ys[1:], {"accepted": stats.accepted, "attempted": stats.accepted + stats.rejected}
    if method in ("torchdiffeq", "torchdiffeq_adjoint", "dropin", "dropin_adjoint"):
        library = torchdiffeq if method.startswith("torchdiffeq") else aca_torchdiffeq
        solver = library.odeint_adjoint if method.endswith("adjoint") else library.odeint
        options = {"method": "rk4", "options": {"step_size": setting.step_size}} if fixed else {
            "method": "dopri5", "rtol": setting.rtol, "atol": setting.atol}
        return solver(func, y0, times, **options)[1:], {}
    if method == "tdep_aca":
        options = {"method": "rk4" if fixed else "dopri5", "t0": 0.0, "t1": setting.t1,
                   "h": setting.step_size, "rtol": setting.rtol, "atol": setting.atol,
                   "neval_max": 1_000_000, "print_neval": False}
        y1 = odesolve_adjoint(func, y0, options=options)
        return y1.unsqueeze(0), {"accepted": len(y1.grad_fn.steps)}
    raise ValueError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")


def _attempted_from_nfe(method: str, nfe_forward: int, setting: Setting) -> int | None:
    """torchdiffeq's dopri5 does not report its steps: 2 evaluations choose the first
    step, then 6 per attempted step (first-same-as-last)."""
    if setting.step_size is not None:
        return round(1 / setting.step_size)
    if method in ("torchdiffeq", "torchdiffeq_adjoint", "dropin", "dropin_adjoint"):
        return (nfe_forward - 2) // 6
    return None


@dataclass
class Run:
    """One forward+backward: timings, evaluation counts and the gradient."""

    forward_s: float
    fwd_bwd_s: float
    nfe_forward: int
    nfe_backward: int
    info: dict
    gradient: Tensor


def run_once(method: str, problem: Problem, setting: Setting) -> Run:
    """Forward and backward of ``sum(weight * y(t_k))`` over the output times after the
    first; gradient w.r.t. ``y0`` and parameters."""
    func = problem.func
    func.zero_grad(set_to_none=True)
    y0 = problem.y0.detach().clone().requires_grad_()
    func.tally[0] = 0
    start = time.perf_counter()
    ys, info = solve(method, problem, y0, setting)
    forward_end = time.perf_counter()
    nfe_forward = func.calls
    (problem.weight * ys).sum().backward()
    end = time.perf_counter()
    grads = [y0.grad] + [p.grad if p.grad is not None else torch.zeros_like(p)
                         for p in func.parameters()]
    gradient = torch.cat([g.reshape(-1) for g in grads]).double()
    return Run(forward_end - start, end - start, nfe_forward, func.calls - nfe_forward, info,
               gradient)


def phase_peaks(forward: Callable[[], Tensor],
                backward: Callable[[Tensor], None]) -> tuple[int, int]:
    """Peak bytes held by torch's CPU allocator during ``forward()`` and during
    ``backward(output)``, both counted from the level before the forward (so the
    backward's peak includes what the forward left allocated: checkpoints, outputs)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        output = forward()
        with record_function("backward"):
            backward(output)
        del output
    start = next(e.start_ns() for e in prof.profiler.kineto_results.events()
                 if e.name() == "backward")
    levels = allocation_levels(prof)
    return (max((v for t, v in levels if t < start), default=0),
            max((v for t, v in levels if t >= start), default=0))


class Elementwise(nn.Module):
    """``f(y) = tanh(a * y)`` with one parameter per state entry: a large state whose
    step graph is small, so that stored states dominate memory."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.linspace(-1.0, 1.0, size, dtype=torch.float32))

    def forward(self, t: float | Tensor, y: Tensor) -> Tensor:
        return torch.tanh(self.a * y)


def checkpoint_budget_rows(size: int = 1_000_000, n_steps: int = 200,
                           budgets: tuple[int | None, ...] = (2, 4, 8, 16, None)) -> list[dict]:
    """ACA with ``max_checkpoints=K`` on an Euler solve of ``n_steps`` steps of an
    ``size``-float state: forward and backward peak memory, backward evaluations, and
    whether the gradient is bit-identical to unbounded ACA's (the last budget)."""
    func = Elementwise(size)
    rows, gradients = [], {}
    for budget in budgets:
        func.zero_grad(set_to_none=True)
        y0 = torch.ones(size, dtype=torch.float32, requires_grad=True)
        stats = aca.SolveStats()

        def forward(budget: int | None = budget, y0: Tensor = y0,
                    stats: aca.SolveStats = stats) -> Tensor:
            return aca.odeint(func, y0, [0.0, 1.0], solver="euler", step_size=1 / n_steps,
                              max_checkpoints=budget, stats=stats)

        forward_peak, backward_peak = phase_peaks(forward, lambda ys: ys[-1].sum().backward())
        gradients[budget] = torch.cat([y0.grad, func.a.grad])
        rows.append({"max_checkpoints": "all" if budget is None else budget,
                     "forward_peak_mib": forward_peak / MIB,
                     "backward_peak_mib": backward_peak / MIB,
                     "nfe_backward": stats.nfe_backward, "state_mib": 4 * size / MIB})
    unbounded = rows[-1]
    for row, budget in zip(rows, budgets):
        row["backward_peak_ratio"] = row["backward_peak_mib"] / unbounded["backward_peak_mib"]
        row["recompute_nfe"] = row["nfe_backward"] - unbounded["nfe_backward"]
        row["gradient_identical"] = torch.equal(gradients[budget], gradients[budgets[-1]])
    return rows


def checkpoint_budget_markdown(rows: list[dict], n_steps: int) -> str:
    size = round(rows[0]["state_mib"] * MIB / 4)
    lines = [f"# ACA memory under max_checkpoints=K: {n_steps} Euler steps, a {size:g}-float "
             "float32 state", "",
             "| K | forward peak MiB | backward peak MiB | backward peak / unbounded | "
             "NFE backward | recompute NFE | gradient bit-identical |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['max_checkpoints']} | {r['forward_peak_mib']:.0f} | "
                     f"{r['backward_peak_mib']:.0f} | {r['backward_peak_ratio']:.3f} | "
                     f"{r['nfe_backward']} | {r['recompute_nfe']} | "
                     f"{'yes' if r['gradient_identical'] else 'NO'} |")
    lines += ["", "Peaks: bytes held by torch's CPU allocator (PyTorch profiler memory events), "
              "counted from before the forward, so the backward peak includes the stored "
              "states; one state is "
              f"{rows[0]['state_mib']:.2f} MiB. f(y) = tanh(a * y), loss = sum(y(1)). "
              "Recompute NFE: backward evaluations beyond unbounded ACA's one per step."]
    return "\n".join(lines) + "\n"


def reference_gradient(problem: Problem, tol: float) -> Tensor:
    """float64 gradient by backpropagation through torchdiffeq's dopri5 at ``rtol=atol=tol``
    (an implementation independent of aca)."""
    problem64 = problem.to(torch.float64)
    return run_once("torchdiffeq", problem64, Setting(rtol=tol, atol=tol)).gradient


def rotated(items: tuple[str, ...], shift: int) -> list[str]:
    shift %= len(items)
    return list(items[shift:] + items[:shift])


def measure(problem: Problem, setting: Setting, methods: tuple[str, ...], repeats: int,
            reference: Tensor | None, profile_memory: bool = True) -> list[dict]:
    """One table block: a warm-up run per method (counts, gradient; profiled for its peak
    memory unless not ``profile_memory``: the profiler holds every event, gigabytes for
    thousands of outputs), then ``repeats`` timed rounds with the methods interleaved in
    rotating order."""
    first, peak = {}, {}
    for m in methods:
        def action(m: str = m) -> None:
            first[m] = run_once(m, problem, setting)
        peak[m] = peak_memory_bytes(action) if profile_memory else action()
    forward: dict[str, list[float]] = {m: [] for m in methods}
    fwd_bwd: dict[str, list[float]] = {m: [] for m in methods}
    for r in range(repeats):
        for m in rotated(methods, r):
            run = run_once(m, problem, setting)
            forward[m].append(run.forward_s)
            fwd_bwd[m].append(run.fwd_bwd_s)
    rows = []
    for m in methods:
        run = first[m]
        error = None
        if reference is not None:
            error = float((run.gradient - reference).norm() / reference.norm())
        rows.append({
            "problem": problem.name, "setting": setting.label, "method": m,
            "forward_ms": 1e3 * statistics.median(forward[m]),
            "fwd_bwd_ms": 1e3 * statistics.median(fwd_bwd[m]),
            "peak_mib": peak[m] / MIB if profile_memory else None,
            "nfe_forward": run.nfe_forward, "nfe_backward": run.nfe_backward,
            "accepted": run.info.get("accepted"),
            "attempted": run.info.get("attempted",
                                      _attempted_from_nfe(m, run.nfe_forward, setting)),
            "grad_rel_error": error,
        })
    return rows


@dataclass
class Config:
    """Sizes and settings of a benchmark run (``--quick`` and tests shrink them)."""

    mlp: dict = field(default_factory=lambda: {"dim": 64, "batch": 256})
    conv: dict = field(default_factory=lambda: {"channels": 64, "size": 16, "batch": 8})
    # (rtol, atol) per problem: the conv block's continuous adjoint needs ~100x the
    # forward's evaluations at 1e-5 (minutes), so it is measured at 1e-3 only
    tolerances: dict = field(default_factory=lambda: {
        "mlp": ((1e-3, 1e-4), (1e-5, 1e-6)), "conv": ((1e-3, 1e-4),)})
    reference_factor: float = 1e-4  # reference rtol = atol = this times the tightest rtol
    repeats: int = 3
    methods: tuple[str, ...] = METHODS
    # the 100-step solve of the conv block takes seconds per method: the target pair only
    hundred_step_methods: dict = field(default_factory=lambda: {
        "mlp": ("aca", "naive", "adjoint", "torchdiffeq"), "conv": ("aca", "naive")})
    hundred_step_size: float = 0.01
    threads: int = 1

    @classmethod
    def quick(cls) -> Config:
        return cls(tolerances={"mlp": ((1e-3, 1e-4),), "conv": ((1e-3, 1e-4),)}, repeats=1,
                   conv={"channels": 32, "size": 8, "batch": 4},
                   hundred_step_methods={"mlp": ("aca", "naive", "torchdiffeq"),
                                         "conv": ("aca", "naive")})


def outputs_problem(seed: int = 0) -> Problem:
    """Issue 14's problem: ``f = Linear(16, 64) - tanh - Linear(64, 16)`` (default
    initialisation), batch 128."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 16))
    return Problem("mlp16", CountingFunc(net), torch.randn(128, 16), torch.randn(128, 16))


def output_rows(counts: tuple[int, ...] = (2, 10, 100, 1000), repeats: int = 3,
                methods: tuple[str, ...] = OUTPUT_METHODS,
                log: Callable[[str], None] = print) -> list[dict]:
    """Forward NFE and forward+backward time with ``n`` output times on ``[0, 5]``
    (dopri5, rtol 1e-5, atol 1e-6), each with its ratios to torchdiffeq's odeint."""
    problem, rows = outputs_problem(), []
    for n in counts:
        started = time.perf_counter()
        block = measure(problem, Setting(1e-5, 1e-6, outputs=n, t1=5.0), methods, repeats, None,
                        profile_memory=False)
        base = _row(block, problem.name, block[0]["setting"], "torchdiffeq")
        for row in block:
            row["outputs"] = n
            row["nfe_vs_torchdiffeq"] = row["nfe_forward"] / base["nfe_forward"] if base else None
            row["time_vs_torchdiffeq"] = row["fwd_bwd_ms"] / base["fwd_bwd_ms"] if base else None
        rows += block
        log(f"{n} outputs: {time.perf_counter() - started:.1f} s")
    return rows


def dropin_rows(config: Config, repeats: int,
                log: Callable[[str], None] = print) -> list[dict]:
    """aca.torchdiffeq against torchdiffeq at torchdiffeq's defaults (dopri5, rtol 1e-7,
    atol 1e-9), forward+backward, with each pair's time ratio."""
    rows = []
    for problem in (mlp_problem(**config.mlp, gain=1.0), conv_problem(**DROPIN_CONV, gain=1.0)):
        started = time.perf_counter()
        block = measure(problem, Setting(1e-7, 1e-9), tuple(m for pair in DROPIN_PAIRS
                                                             for m in pair), repeats, None,
                        profile_memory=False)
        for ours, theirs in DROPIN_PAIRS:
            mine, base = (_row(block, problem.name, block[0]["setting"], m)
                          for m in (ours, theirs))
            mine["time_vs_torchdiffeq"] = mine["fwd_bwd_ms"] / base["fwd_bwd_ms"]
            base["time_vs_torchdiffeq"] = None
        rows += block
        log(f"{problem.name}: {time.perf_counter() - started:.1f} s")
    return rows


def dropin_markdown(rows: list[dict], config: Config) -> str:
    columns = ("problem", "method", "nfe_forward", "nfe_backward", "attempted", "forward_ms",
               "fwd_bwd_ms", "time_vs_torchdiffeq")
    lines = ["# aca.torchdiffeq against torchdiffeq at torchdiffeq's defaults", "",
             f"dopri5, rtol 1e-7, atol 1e-9, t in [0, 1]; MLP {config.mlp}, conv block "
             f"{DROPIN_CONV}, both with default initialisation (gain 1); loss = sum(w * y(1)); "
             f"{torch.get_num_threads()} thread(s), float32, medians of interleaved repeats. "
             "time_vs_torchdiffeq: forward+backward time over torchdiffeq's same entry point "
             "(odeint, odeint_adjoint).", "",
             *_table(rows, columns), ""]
    for row in rows:
        if row["time_vs_torchdiffeq"] is not None:
            ok = row["time_vs_torchdiffeq"] <= 0.7
            lines.append(f"- {row['problem']}: {METHOD_LABELS[row['method']]} / torchdiffeq = "
                         f"{row['time_vs_torchdiffeq']:.2f} (target <= 0.7: "
                         f"{'pass' if ok else 'FAIL'})")
    return "\n".join(lines) + "\n"


def output_markdown(rows: list[dict]) -> str:
    """The outputs table and issue 14's two targets."""
    columns = ("outputs", "method", "nfe_forward", "nfe_backward", "accepted", "forward_ms",
               "fwd_bwd_ms", "nfe_vs_torchdiffeq", "time_vs_torchdiffeq")
    lines = ["# Dense output: cost against the number of output times", "",
             f"MLP 16-64-16, batch 128, dopri5, rtol 1e-5, atol 1e-6, outputs evenly spaced on "
             f"[0, 5], loss = sum over outputs; {torch.get_num_threads()} thread(s), float32, "
             "medians of interleaved repeats. Ratios are to torchdiffeq odeint at the same "
             "outputs (forward NFE; forward+backward time).", "", *_table(rows, columns), ""]
    for row in rows:
        if row["method"] == "aca" and row["nfe_vs_torchdiffeq"] is not None:
            nfe_ok = row["nfe_vs_torchdiffeq"] <= 1
            lines.append(f"- {row['outputs']} outputs: aca forward NFE / torchdiffeq's = "
                         f"{row['nfe_vs_torchdiffeq']:.2f} (target <= 1: "
                         f"{'pass' if nfe_ok else 'FAIL'})" + (
                             f"; aca fwd+bwd / torchdiffeq odeint's = "
                             f"{row['time_vs_torchdiffeq']:.2f} (target <= 0.8: "
                             f"{'pass' if row['time_vs_torchdiffeq'] <= 0.8 else 'FAIL'})"
                             if row["outputs"] == 100 else ""))
    return "\n".join(lines) + "\n"


def _row(rows: list[dict], problem: str, setting: str, method: str) -> dict | None:
    return next((r for r in rows if (r["problem"], r["setting"], r["method"])
                 == (problem, setting, method)), None)


def ratios(rows: list[dict], hundred: list[dict]) -> list[dict]:
    """The issue's targets as measured ratios (``value <= target`` passes)."""
    out = []

    def add(name: str, problem: str, setting: str, value: float | None, target: float) -> None:
        if value is not None:
            out.append({"ratio": name, "problem": problem, "setting": setting, "value": value,
                        "target": target, "pass": value <= target})

    def per_step(row: dict) -> float | None:
        return row["forward_ms"] / row["attempted"] if row and row["attempted"] else None

    for problem, setting in dict.fromkeys((r["problem"], r["setting"]) for r in rows):
        a = _row(rows, problem, setting, "aca")
        if a is None:
            continue
        for other, name, target in (
                ("torchdiffeq_adjoint", "aca fwd+bwd / torchdiffeq odeint_adjoint fwd+bwd", 0.5),
                ("tdep_aca", "aca fwd+bwd / TorchDiffEqPack ACA fwd+bwd", 2 / 3)):
            b = _row(rows, problem, setting, other)
            if b is not None:
                add(name, problem, setting, a["fwd_bwd_ms"] / b["fwd_bwd_ms"], target)
        b = _row(rows, problem, setting, "torchdiffeq")
        if b is not None and per_step(a) and per_step(b):
            add("aca forward ms per attempted step / torchdiffeq odeint's", problem, setting,
                per_step(a) / per_step(b), 1.0)
    for problem, setting in dict.fromkeys((r["problem"], r["setting"]) for r in hundred):
        a, n = (_row(hundred, problem, setting, m) for m in ("aca", "naive"))
        if a is not None and n is not None:
            add("aca peak memory / naive peak memory", problem, setting,
                a["peak_mib"] / n["peak_mib"], 1 / 3)
        b = _row(hundred, problem, setting, "torchdiffeq")
        if a is not None and b is not None:
            add("aca forward ms per step / torchdiffeq odeint's", problem, setting,
                a["forward_ms"] / b["forward_ms"], 1.0)
    return out


def run_benchmark(config: Config, log: Callable[[str], None] = print) -> dict:
    """Every measurement of the benchmark, as plain data (see ``to_markdown``)."""
    torch.set_num_threads(config.threads)
    problems = [mlp_problem(**config.mlp), conv_problem(**config.conv)]
    rows, hundred, reference_tols = [], [], {}
    for problem in problems:
        tolerances = config.tolerances[problem.name]
        reference_tols[problem.name] = config.reference_factor * min(r for r, _ in tolerances)
        started = time.perf_counter()
        reference = reference_gradient(problem, reference_tols[problem.name])
        log(f"{problem.name}: float64 reference in {time.perf_counter() - started:.1f} s")
        for rtol, atol in tolerances:
            started = time.perf_counter()
            rows += measure(problem, Setting(rtol, atol), config.methods, config.repeats,
                            reference)
            log(f"{problem.name} rtol={rtol:g}: {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        hundred += measure(problem, Setting(step_size=config.hundred_step_size),
                           config.hundred_step_methods[problem.name], 1, None)
        log(f"{problem.name} 100 steps: {time.perf_counter() - started:.1f} s")
    return {
        "config": asdict(config),
        "environment": {"torch": torch.__version__, "torchdiffeq": torchdiffeq.__version__,
                        "python": platform.python_version(), "cpu": provenance.cpu_name(),
                        "threads": torch.get_num_threads()},
        "provenance": provenance.stamp(),
        "reference_tol": reference_tols, "rows": rows, "hundred_step": hundred,
        "ratios": ratios(rows, hundred),
    }


def _fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.2e}" if value != 0 and (abs(value) < 1e-2) else f"{value:.{digits}g}"
    return str(value)


def _table(rows: list[dict], columns: tuple[str, ...]) -> list[str]:
    cells = [[METHOD_LABELS[row[c]] if c == "method" else _fmt(row[c]) for c in columns]
             for row in rows]
    return markdown_table(columns, cells).splitlines()


def to_markdown(result: dict) -> str:
    """The tables, the target ratios and how each number was measured."""
    config, env = result["config"], result["environment"]
    lines = ["# Gradient benchmark: aca vs torchdiffeq vs TorchDiffEqPack", "",
             f"CPU `{env['cpu']}`, torch {env['torch']}, torchdiffeq "
             f"{env['torchdiffeq']}, {env['threads']} thread(s), float32; times are medians of "
             f"{config['repeats']} interleaved repeats after one profiled warm-up run "
             "(100-step table: one timed run).", "",
             "## Adaptive dopri5, loss = sum(w * y(1)), t in [0, 1]", ""]
    lines += _table(result["rows"], COLUMNS)
    lines += ["", f"## {round(1 / config['hundred_step_size'])}-step solve (rk4, fixed grid): "
              "peak memory", ""]
    lines += _table(result["hundred_step"], COLUMNS[:-1])
    lines += ["", "## Targets (issue 2)", "",
              "| ratio | problem | setting | value | target | pass |", "|---|---|---|---|---|---|"]
    for r in result["ratios"]:
        lines.append(f"| {r['ratio']} | {r['problem']} | {r['setting']} | {r['value']:.3f} | "
                     f"≤ {r['target']:.3f} | {'yes' if r['pass'] else 'NO'} |")
    mlp, conv = config["mlp"], config["conv"]
    lines += [
        "", "## Notes", "",
        f"- Problems: mlp = Linear({mlp['dim']},{mlp['dim']})-tanh-Linear, batch {mlp['batch']}; "
        f"conv = conv3x3-GroupNorm-ReLU-conv3x3, {conv['channels']} channels, "
        f"{conv['size']}x{conv['size']}, batch {conv['batch']}; initial weights of the last layer "
        f"(both layers for mlp) scaled by {GAIN:g} so that the solves take several steps. "
        "Autonomous f, no time input.",
        "- forward_ms: the forward call with grad enabled (as in training); fwd_bwd_ms: forward "
        "plus `loss.backward()` of the same run.",
        "- peak_mib: peak bytes held by torch's CPU allocator during one forward+backward, above "
        "the level before it (PyTorch profiler with profile_memory=True: every allocation and "
        "free, summed in order). It counts the autograd graph, checkpoints, the backward's "
        "temporaries and the new .grad tensors; not Python objects. Profiled runs are not timed.",
        "- nfe_*: calls of f counted by a wrapper around it, the same for every library; backward "
        "NFE is 0 for methods that back-propagate through the forward graph (naive, torchdiffeq "
        "odeint). TorchDiffEqPack's ACA evaluates every accepted step twice in forward "
        "(trial, then again) and recomputes the whole trajectory again in backward.",
        "- accepted/attempted: from aca's SolveStats; TorchDiffEqPack reports its accepted steps "
        "only; for torchdiffeq (which reports none) attempted = (NFE forward - 2) / 6.",
        "- grad_rel_error: ‖g - g_ref‖ / ‖g_ref‖ over the gradient w.r.t. y0 and all parameters; "
        "g_ref is float64 backpropagation through torchdiffeq's dopri5 at rtol = atol = "
        + ", ".join(f"{tol:g} ({name})" for name, tol in result["reference_tol"].items()) + ".",
        "- The conv block is measured at rtol 1e-3 only: at 1e-5 the continuous adjoint's "
        "reverse solve (aca's and torchdiffeq's alike) needs so many more evaluations than the "
        "forward that one run takes minutes.",
        "- Per-step ratio: forward ms divided by attempted steps (dopri5), or by the fixed "
        "steps (rk4).",
        "- At these tolerances the error of aca (= naive: the exact gradient of the discrete "
        "forward solve) is the forward solve's own discretization error; the continuous "
        "adjoint's reverse solve takes many more steps than the forward here (see nfe_backward), "
        "so it can land closer to the continuous gradient. ACA's accuracy advantage is about "
        "reverse-time reconstruction error on dissipative/stiff dynamics (tests cover that); "
        "here the point is cost and memory.",
        "- The machine is shared with other jobs: treat differences below ~20 % as noise.",
    ]
    return "\n".join(lines) + "\n"


def write_outputs(result: dict, out_dir: Path, command: str) -> None:
    """``bench.md``, ``bench.json``, ``bench.csv`` (both tables' rows) and ``COMMAND.txt``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench.md").write_text(to_markdown(result))
    (out_dir / "bench.json").write_text(json.dumps(result, indent=1))
    with open(out_dir / "bench.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(result["rows"] + result["hundred_step"])
    (out_dir / "COMMAND.txt").write_text(
        f"{command}\n# run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{result['wall_s']:.0f} s, torch {torch.__version__}, "
        f"{result['environment']['threads']} thread(s)\n"
        f"# code: {provenance.describe(result['provenance'])}\n")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small run (~30 s)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write bench.md, bench.json, bench.csv and COMMAND.txt here")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per method")
    parser.add_argument("--outputs", action="store_true",
                        help="only the dense-output table: 2, 10, 100, 1000 output times "
                             "(writes outputs.md, outputs.json with --out)")
    parser.add_argument("--torchdiffeq", action="store_true",
                        help="only aca.torchdiffeq against torchdiffeq at torchdiffeq's "
                             "defaults (writes torchdiffeq.md, torchdiffeq.json with --out)")
    parser.add_argument("--checkpoints", action="store_true",
                        help="only the max_checkpoints=K memory table (writes checkpoints.md, "
                             "checkpoints.json with --out)")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.outputs:
        torch.set_num_threads(args.threads)
        counts = (2, 10, 100) if args.quick else (2, 10, 100, 1000)
        rows = output_rows(counts, args.repeats or 3,
                           log=lambda msg: print(msg, file=sys.stderr, flush=True))
        markdown = output_markdown(rows)
        print(markdown)
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            stamp = provenance.stamp()
            (args.out / "outputs.md").write_text(
                markdown + f"\nCommand: `python scripts/bench_gradients.py {' '.join(argv)}`\n"
                f"Code: {provenance.describe(stamp)}\n")
            (args.out / "outputs.json").write_text(
                json.dumps({"provenance": stamp, "rows": rows}, indent=1))
        return
    if args.torchdiffeq:
        torch.set_num_threads(args.threads)
        config = Config.quick() if args.quick else Config()
        rows = dropin_rows(config, args.repeats or 3,
                           log=lambda msg: print(msg, file=sys.stderr, flush=True))
        markdown = dropin_markdown(rows, config)
        print(markdown)
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            stamp = provenance.stamp()
            (args.out / "torchdiffeq.md").write_text(
                markdown + f"\nCommand: `python scripts/bench_gradients.py {' '.join(argv)}`\n"
                f"Code: {provenance.describe(stamp)}\n")
            (args.out / "torchdiffeq.json").write_text(
                json.dumps({"provenance": stamp, "rows": rows}, indent=1))
        return
    if args.checkpoints:
        torch.set_num_threads(args.threads)
        size, n_steps = (100_000, 50) if args.quick else (1_000_000, 200)
        rows = checkpoint_budget_rows(size, n_steps)
        markdown = checkpoint_budget_markdown(rows, n_steps)
        print(markdown)
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "checkpoints.md").write_text(
                markdown + f"\nCommand: `python scripts/bench_gradients.py {' '.join(argv)}`\n")
            (args.out / "checkpoints.json").write_text(json.dumps(rows, indent=1))
        return
    config = Config.quick() if args.quick else Config()
    config.threads = args.threads
    config.repeats = args.repeats or config.repeats
    started = time.perf_counter()
    result = run_benchmark(config, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    result["wall_s"] = time.perf_counter() - started
    print(to_markdown(result))
    if args.out is not None:
        write_outputs(result, args.out, " ".join(["python", "scripts/bench_gradients.py", *argv]))


if __name__ == "__main__":
    main()
