"""aca against diffrax (JAX, jit-compiled) on the same problem, side by side (issue 31).

The MLP ODE ``dy/dt = W2 tanh(W1 y + b1) + b2`` (32-128-32, batch 256, float32, one CPU
thread each) on ``[0, 1]`` with Dopri5 at rtol = atol in {1e-3, 1e-6}, loss
``sum(weight * y(1))``: torch builds the weights, y0 and the loss weight and hands them to
diffrax (``scripts/diffrax_peer.py``, in the JAX environment of
``scripts/make_jax_env.sh``), so both solve one problem. Pairs compared: aca's
``gradient="aca"`` with diffrax's ``RecursiveCheckpointAdjoint`` (both backpropagate
through the forward's own steps) and ``gradient="adjoint"`` with ``BacksolveAdjoint``
(both solve the adjoint ODE backwards). Runs are interleaved (one aca run, one diffrax
run, repeated), so both sides see the same machine; times are medians, per accepted step
of each side's own solve (their step-size controllers differ in detail), with diffrax's
jit compile time apart. Gradients (w.r.t. the parameters) against a float64 reference
(torchdiffeq's dopri5 at rtol = atol = 1e-10).

    scripts/make_jax_env.sh            # once: .venv-jax with jax and diffrax
    python scripts/bench_diffrax.py [--quick] [--out results/bench]

writes ``diffrax.md``, ``diffrax.json`` and ``diffrax_COMMAND.txt`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_gradients as bench  # noqa: E402  (scripts/ is not a package)

from aca import provenance  # noqa: E402
from aca.report.format import markdown_table  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
JAX_PYTHON = REPO_ROOT / ".venv-jax" / "bin" / "python"
PAIRS = (("aca", "recursive"), ("adjoint", "backsolve"))
LABELS = {"aca": "aca gradient=aca", "adjoint": "aca gradient=adjoint",
          "recursive": "diffrax RecursiveCheckpointAdjoint",
          "backsolve": "diffrax BacksolveAdjoint"}
TOLERANCES = (1e-3, 1e-6)


class Peer:
    """The diffrax worker process: one request in, one JSON answer out."""

    def __init__(self, python: Path, problem_file: Path) -> None:
        self.process = subprocess.Popen(
            [str(python), str(REPO_ROOT / "scripts" / "diffrax_peer.py"), str(problem_file)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, **request: object) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the diffrax worker stopped (exit {self.process.wait()}); "
                               "its error is printed above")
        return json.loads(line)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def export(problem: bench.Problem, path: Path) -> None:
    """The problem's weights, y0 and loss weight as float32 arrays for JAX."""
    first, _, second = problem.func.net
    arrays = {"w1": first.weight, "b1": first.bias, "w2": second.weight, "b2": second.bias,
              "y0": problem.y0, "weight": problem.weight}
    np.savez(path, **{name: value.detach().float().numpy() for name, value in arrays.items()})


def relative_error(gradient: np.ndarray | torch.Tensor, reference: torch.Tensor) -> float:
    gradient = torch.as_tensor(np.asarray(gradient), dtype=torch.float64).reshape(-1)
    return float((gradient - reference).norm() / reference.norm())


def measure_pair(problem: bench.Problem, peer: Peer, method: str, adjoint: str, tol: float,
                 repeats: int, reference: torch.Tensor, folder: Path) -> list[dict]:
    """Both sides of one pair at one tolerance: a warm-up each (diffrax: its compile),
    then ``repeats`` rounds of one aca run and one diffrax run."""
    setting = bench.Setting(rtol=tol, atol=tol)
    n_state = problem.y0.numel()
    first = bench.run_once(method, problem, setting)
    gradient_file = str(folder / f"{adjoint}.npz")
    warm = peer.ask(adjoint=adjoint, rtol=tol, atol=tol, repeats=1, gradient_out=gradient_file)
    ours, theirs = [], []
    for _ in range(repeats):
        ours.append(bench.run_once(method, problem, setting).fwd_bwd_s)
        theirs += peer.ask(adjoint=adjoint, rtol=tol, atol=tol, repeats=1,
                           gradient_out=gradient_file)["times_s"]
    with np.load(gradient_file) as grads:
        peer_gradient = np.concatenate([grads[f"arr_{i}"].reshape(-1) for i in range(4)])
    aca_steps = first.info["accepted"]
    rows = [{"rtol": tol, "method": method, "label": LABELS[method],
             "fwd_bwd_ms": 1e3 * statistics.median(ours), "accepted": aca_steps,
             "rejected": first.info["attempted"] - aca_steps,
             "nfe": first.nfe_forward + first.nfe_backward, "compile_s": None,
             "grad_rel_error": relative_error(first.gradient[n_state:], reference)},
            {"rtol": tol, "method": adjoint, "label": LABELS[adjoint],
             "fwd_bwd_ms": 1e3 * statistics.median(theirs), "accepted": warm["accepted"],
             "rejected": warm["rejected"], "nfe": None,
             "compile_s": warm["compile_and_first_s"] - statistics.median(theirs),
             "grad_rel_error": relative_error(peer_gradient, reference)}]
    for row in rows:
        row["ms_per_step"] = row["fwd_bwd_ms"] / row["accepted"]
    rows[0]["per_step_ratio"] = rows[0]["ms_per_step"] / rows[1]["ms_per_step"]
    rows[0]["total_ratio"] = rows[0]["fwd_bwd_ms"] / rows[1]["fwd_bwd_ms"]
    return rows


def run(repeats: int, tolerances: tuple[float, ...], python: Path,
        log=print) -> dict:
    torch.set_num_threads(1)
    problem = bench.mlp_problem(dim=32, hidden=128, batch=256)
    reference = bench.reference_gradient(problem, 1e-10)[problem.y0.numel():]
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        problem_file = Path(folder) / "problem.npz"
        export(problem, problem_file)
        peer = Peer(python, problem_file)
        try:
            for tol in tolerances:
                for method, adjoint in PAIRS:
                    log(f"rtol {tol:g}: {LABELS[method]} / {LABELS[adjoint]}")
                    rows += measure_pair(problem, peer, method, adjoint, tol, repeats,
                                         reference, Path(folder))
        finally:
            peer.close()
    versions = peer_versions(python)
    return {"provenance": provenance.stamp(), "rows": rows, "repeats": repeats,
            "wall_s": time.perf_counter() - started, "torch": torch.__version__, **versions}


def peer_versions(python: Path) -> dict:
    done = subprocess.run([str(python), "-c", "import jax, diffrax; "
                           "print(jax.__version__, diffrax.__version__)"],
                          capture_output=True, text=True, check=True)
    jax_version, diffrax_version = done.stdout.split()
    return {"jax": jax_version, "diffrax": diffrax_version}


def _fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def to_markdown(result: dict) -> str:
    columns = ("rtol", "label", "fwd_bwd_ms", "accepted", "rejected", "ms_per_step",
               "per_step_ratio", "total_ratio", "nfe", "compile_s", "grad_rel_error")
    lines = [f"# aca against diffrax (JAX {result['jax']}, diffrax {result['diffrax']}, "
             f"torch {result['torch']})", "",
             "MLP ODE 32-128-32, batch 256, float32, Dopri5 on [0, 1], rtol = atol, one CPU "
             "thread each; forward+backward, median of "
             f"{result['repeats']} interleaved runs. `per_step_ratio`: aca's time per accepted "
             "step over diffrax's in the pair (below 1: aca faster); `total_ratio`: the same "
             "for the whole solve. `compile_s`: diffrax's jit compile, paid once per shape, "
             "not in its times. Gradient errors against a float64 reference (torchdiffeq "
             "dopri5, rtol = atol = 1e-10).", ""]
    table = markdown_table(columns, [[_fmt(row.get(c)) for c in columns]
                                     for row in result["rows"]])
    return "\n".join(lines) + "\n" + table


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats at rtol 1e-3 only")
    parser.add_argument("--repeats", type=int, default=15, help="interleaved timed rounds")
    parser.add_argument("--out", type=Path, default=None,
                        help="write diffrax.md, diffrax.json and diffrax_COMMAND.txt here")
    parser.add_argument("--jax-python", type=Path, default=JAX_PYTHON,
                        help="the JAX environment's python (scripts/make_jax_env.sh)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if not args.jax_python.is_file():
        parser.error(f"no JAX environment at {args.jax_python}: build it with "
                     "scripts/make_jax_env.sh, or pass --jax-python")
    result = run(3 if args.quick else args.repeats, TOLERANCES[:1] if args.quick else TOLERANCES,
                 args.jax_python, log=lambda message: print(message, file=sys.stderr, flush=True))
    markdown = to_markdown(result)
    print(markdown)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "diffrax.md").write_text(markdown)
        (args.out / "diffrax.json").write_text(json.dumps(result, indent=1))
        (args.out / "diffrax_COMMAND.txt").write_text(
            f"python scripts/bench_diffrax.py {' '.join(argv)}\n# run "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {result['wall_s']:.0f} s\n"
            f"# code: {provenance.describe(result['provenance'])}\n")


if __name__ == "__main__":
    main()
