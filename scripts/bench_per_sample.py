"""Benchmark per-sample adaptive steps (issue 16) against torchode 1.0.1.

B van der Pol oscillators with μ spread log-uniformly over [0.1, 5] (a learnable
parameter per sample), 20 outputs on [0, 10], dopri5 with rtol 1e-5 and atol 1e-6 in
float32: forward and backward of a loss on every output, for B = 64, 256, 1024. Methods,
interleaved within each repeat (the machine is shared; medians of interleaved runs are
the fair comparison): aca with ``per_sample=True`` (gradient aca, naive and adjoint), aca with
one step size for the batch (aca and adjoint), and torchode's ``AutoDiffAdjoint``
(its ``BacksolveAdjoint`` vmaps ``f`` over single samples, which a parameter with one
entry per sample does not fit). Columns: forward+backward time, the forward alone (the
loss included), the ratio of forward+backward to torchode's AutoDiffAdjoint, batched
evaluations forward and backward (``nfe``), evaluations per
sample summed over the batch (``sample_nfe``: per-sample solves count a sample only
until it arrives; a shared-step solve counts every sample at every evaluation), and the
relative error of dL/dμ against a float64 per-sample aca solve at rtol 1e-10.

    python scripts/bench_per_sample.py [--batches 64 256 1024] [--repeats 3] [--out DIR]

writes ``per_sample.md`` and ``per_sample.json`` (with the provenance stamp) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

import aca
from aca import provenance
from aca.report.format import markdown_table

METHODS = ("aca_per_sample", "naive_per_sample", "adjoint_per_sample", "aca_shared",
           "adjoint_shared", "torchode_autodiff")
RTOL, ATOL, T_END, N_OUT = 1e-5, 1e-6, 10.0, 20


class VanDerPol(nn.Module):
    """x'' = μ (1 - x²) x' - x, one learnable μ per sample; ``t`` unused."""

    def __init__(self, mu: Tensor) -> None:
        super().__init__()
        self.mu = nn.Parameter(mu)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        x, v = y[:, 0], y[:, 1]
        return torch.stack([v, self.mu * (1 - x * x) * v - x], dim=1)


def oscillators(batch: int, dtype: torch.dtype = torch.float32, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    mu = torch.exp(torch.empty(batch, dtype=torch.float64).uniform_(
        float(torch.log(torch.tensor(0.1))), float(torch.log(torch.tensor(5.0))),
        generator=generator))
    y0 = torch.empty(batch, 2, dtype=torch.float64).uniform_(-2, 2, generator=generator)
    return mu.to(dtype), y0.to(dtype), torch.linspace(0, T_END, N_OUT, dtype=dtype)


def loss_of(ys: Tensor) -> Tensor:
    return (ys**2).mean()


def run(method: str, mu: Tensor, y0: Tensor, t: Tensor) -> dict:
    """One forward+backward; returns time, counts and dL/dμ."""
    func = VanDerPol(mu.clone())
    y0 = y0.clone().requires_grad_()
    started = time.perf_counter()
    if method == "torchode_autodiff":
        import torchode

        term = torchode.ODETerm(func)
        step = torchode.Dopri5(term=term)
        control = torchode.IntegralController(atol=ATOL, rtol=RTOL, term=term)
        solver = torchode.AutoDiffAdjoint(step, control)
        problem = torchode.InitialValueProblem(y0=y0, t_eval=t.expand(len(y0), -1))
        solution = solver.solve(problem)
        loss = loss_of(solution.ys)
        forward_s = time.perf_counter() - started
        loss.backward()
        stats = solution.stats
        steps = stats["n_steps"]
        counts = {"nfe": int(stats["n_f_evals"].max()), "nfe_backward": None,
                  "accepted": int(stats["n_accepted"].sum()),
                  "sample_nfe": int(6 * steps.sum() + 2 * len(steps))}
    else:
        gradient, _, mode = method.partition("_")
        stats = aca.SolveStats()
        ys = aca.odeint(func, y0, t, solver="dopri5", gradient=gradient, rtol=RTOL, atol=ATOL,
                        per_sample=mode == "per_sample", stats=stats)
        loss = loss_of(ys.transpose(0, 1))
        forward_s = time.perf_counter() - started
        loss.backward()
        counts = {"nfe": stats.nfe_forward, "nfe_backward": stats.nfe_backward,
                  "accepted": stats.accepted if mode == "per_sample" else stats.accepted * len(y0),
                  "sample_nfe": (stats.sample_nfe_forward if mode == "per_sample"
                                 else stats.nfe_forward * len(y0))}
    return {"time_s": time.perf_counter() - started, "forward_s": forward_s, **counts,
            "grad": func.mu.grad.detach()}


def reference(mu: Tensor, y0: Tensor, t: Tensor) -> Tensor:
    func = VanDerPol(mu.double())
    ys = aca.odeint(func, y0.double(), t.double(), rtol=1e-10, atol=1e-10, per_sample=True,
                    max_steps=100_000)
    loss_of(ys.transpose(0, 1)).backward()
    return func.mu.grad


def measure(batch: int, repeats: int, log) -> list[dict]:
    mu, y0, t = oscillators(batch)
    want = reference(mu, y0, t)
    runs: dict[str, list[dict]] = {m: [] for m in METHODS}
    for repeat in range(repeats):
        for method in METHODS[repeat % len(METHODS):] + METHODS[:repeat % len(METHODS)]:
            runs[method].append(run(method, mu, y0, t))
            log(f"B={batch} {method}: {runs[method][-1]['time_s']:.2f} s")
    base = statistics.median(r["time_s"] for r in runs["torchode_autodiff"])
    rows = []
    for method, results in runs.items():
        seconds = statistics.median(r["time_s"] for r in results)
        forward = statistics.median(r["forward_s"] for r in results)
        last = results[-1]
        error = ((last["grad"].double() - want).norm() / want.norm()).item()
        rows.append({"batch": batch, "method": method, "fwd_bwd_s": round(seconds, 3),
                     "fwd_s": round(forward, 3),
                     "vs_torchode_autodiff": round(seconds / base, 3), "nfe": last["nfe"],
                     "nfe_backward": last["nfe_backward"], "accepted": last["accepted"],
                     "sample_nfe": last["sample_nfe"], "grad_rel_error": float(f"{error:.2e}")})
    return rows


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    rows = [row for batch in args.batches
            for row in measure(batch, args.repeats, lambda m: print(m, file=sys.stderr))]
    columns = list(rows[0])
    markdown = ("# Per-sample steps: forward+backward, 20 outputs of B van der Pol oscillators\n\n"
                + markdown_table(columns, [[row[c] for c in columns] for row in rows])
                + f"\nCommand: `python scripts/bench_per_sample.py {' '.join(argv)}` "
                f"({time.perf_counter() - started:.0f} s, {args.threads} thread(s), "
                f"torch {torch.__version__})\n")
    print(markdown)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = provenance.stamp()
        (args.out / "per_sample.md").write_text(markdown + f"Code: {provenance.describe(stamp)}\n")
        (args.out / "per_sample.json").write_text(
            json.dumps({"provenance": stamp, "argv": argv, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
