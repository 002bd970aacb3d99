"""Table 1 measured as slopes: peak memory and forward+backward time of aca, adjoint and
naive against the number of steps N_t (a fixed rk4 grid) and against the size of f's
graph N_f (the MLP's width), one gradient of ``sum(w * y(1))``.

    python scripts/bench_cost_scaling.py --out results/bench [--quick]

Table 1 predicts memory: adjoint flat in N_t, ACA one state per step, naive one graph of
f per trial step; compute: ACA N_f·N_t·(m+1), naive 2·N_f·N_t·m, adjoint N_f·(N_t+N_r)·m
(on a fixed grid m = 1 and N_r = N_t). Timings are ``--repeats`` interleaved runs per
point; the claims table compares them at the largest N_t beyond their spread. Uses the
public API only (``aca.odeint``, ``aca.SolveStats``). Writes ``cost_scaling.json`` (the
record aca/report/claims.py reads), ``cost_scaling.md`` and ``cost_scaling.png``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch import Tensor, nn

import aca
from aca import provenance
from aca.report.format import markdown_table, pyplot, save_figure, write_json
from aca.report.measure import MIB, peak_mib

METHODS = ("aca", "adjoint", "naive")
STEPS = (25, 50, 100, 200, 400, 800, 1600)
WIDTHS = (16, 32, 64, 128, 256)


class MLPField(nn.Module):
    """f(t, y) = W2 tanh(W1 y), fixed random weights."""

    def __init__(self, width: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.net = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, width))
        with torch.no_grad():
            for parameter in self.net.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator)
                                / parameter.shape[-1] ** 0.5)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.net(y)


def one_gradient(method: str, width: int, batch: int, steps: int) -> aca.SolveStats:
    """One forward+backward on an rk4 grid of ``steps`` steps; the solve's statistics."""
    func = MLPField(width)
    y0 = torch.randn(batch, width, generator=torch.Generator().manual_seed(1),
                     requires_grad=True)
    stats = aca.SolveStats()
    ys = aca.odeint(func, y0, torch.tensor([0.0, 1.0]), solver="rk4", gradient=method,
                    step_size=1.0 / steps, stats=stats)
    ys[-1].square().sum().backward()
    return stats


def timed(method: str, width: int, batch: int, steps: int) -> float:
    began = time.perf_counter()
    one_gradient(method, width, batch, steps)
    return time.perf_counter() - began


def scaling(steps: tuple[int, ...], widths: tuple[int, ...], width: int, batch: int,
            repeats: int) -> dict:
    """Peak memory and repeated timings of every method against ``steps`` (at ``width``)
    and peak memory against ``widths`` (at the middle of ``steps``)."""
    memory = {m: [peak_mib(lambda m=m, n=n: one_gradient(m, width, batch, n)) for n in steps]
              for m in METHODS}
    seconds: dict[str, list[list[float]]] = {m: [] for m in METHODS}
    for n in steps:
        runs: dict[str, list[float]] = {m: [] for m in METHODS}
        for _ in range(repeats):
            for m in METHODS:  # interleaved: the machine is shared
                runs[m].append(timed(m, width, batch, n))
        for m in METHODS:
            seconds[m].append(runs[m])
    middle = steps[len(steps) // 2]
    width_memory = {m: [peak_mib(lambda m=m, w=w: one_gradient(m, w, batch, middle))
                        for w in widths] for m in METHODS}
    nfe = {m: one_gradient(m, width, batch, steps[-1]).as_dict() for m in METHODS}
    return {"steps": list(steps), "width": width, "batch": batch, "repeats": repeats,
            "state_mib": batch * width * 4 / MIB, "memory": memory,
            "seconds": seconds, "fwd_bwd_s": {m: seconds[m][-1] for m in METHODS},
            "largest_steps": steps[-1], "nfe_at_largest": nfe,
            "widths": list(widths), "width_steps": middle, "width_memory": width_memory}


def slope(xs: list[float], ys: list[float]) -> float:
    return statistics.linear_regression(xs, ys).slope


def figure(record: dict, path: Path) -> Path:
    """Peak memory against N_t and against width, and time against N_t."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for m in METHODS:
        axes[0].plot(record["steps"], record["memory"][m], marker="o", label=m)
        axes[1].plot(record["widths"], record["width_memory"][m], marker="o", label=m)
        axes[2].plot(record["steps"], [statistics.median(r) for r in record["seconds"][m]],
                     marker="o", label=m)
    for axis, (x, y) in zip(axes, (("N_t (rk4 steps)", "peak MiB"), ("width (N_f)", "peak MiB"),
                                   ("N_t (rk4 steps)", "fwd+bwd s (median)")), strict=True):
        axis.set_xlabel(x)
        axis.set_ylabel(y)
    axes[0].legend()
    return save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where the record goes")
    parser.add_argument("--quick", action="store_true", help="a few small points (a check)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per point")
    args = parser.parse_args()
    if args.repeats < 2:
        parser.error("--repeats must be >= 2 (the timings' spread is the noise margin)")
    torch.set_num_threads(1)
    steps, widths, width, batch = ((4, 8, 16), (8, 16), 16, 8) if args.quick else (
        STEPS, WIDTHS, 64, 256)
    record = scaling(steps, widths, width, batch, args.repeats)
    record["command"] = (f"python scripts/bench_cost_scaling.py --out {args.out} --repeats "
                         f"{args.repeats}" + (" --quick" if args.quick else ""))
    record["provenance"] = provenance.stamp()
    write_json(args.out / "cost_scaling.json", record)
    rows = [[m, slope(record["steps"], record["memory"][m]),
             slope(record["widths"], record["width_memory"][m]),
             slope(record["steps"], [statistics.median(r) for r in record["seconds"][m]]),
             f"{statistics.fmean(record['fwd_bwd_s'][m]):.4g} ± "
             f"{statistics.stdev(record['fwd_bwd_s'][m]):.2g}"] for m in METHODS]
    (args.out / "cost_scaling.md").write_text(
        f"Written by `{record['command']}`: MLP width {width}, batch {batch}, rk4 on [0, 1]; "
        f"one state = {record['state_mib']:.4g} MiB.\n\n" + markdown_table(
            ["method", "peak MiB per step", "peak MiB per unit of width",
             "seconds per step (median fit)",
             f"fwd+bwd s at N_t = {steps[-1]} (mean ± std)"], rows))
    figure(record, args.out / "cost_scaling.png")
    print(f"wrote {args.out / 'cost_scaling.json'}")


if __name__ == "__main__":
    main()
