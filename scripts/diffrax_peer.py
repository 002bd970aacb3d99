"""diffrax's side of ``scripts/bench_diffrax.py``: runs in the JAX environment that
``scripts/make_jax_env.sh`` builds (no torch there), never in the project's own.

    .venv-jax/bin/python scripts/diffrax_peer.py PROBLEM.npz

solves the MLP ODE whose weights, y0 and loss weight torch exported to ``PROBLEM.npz``
(``dy/dt = W2 tanh(W1 y + b1) + b2`` on ``[0, 1]``, loss ``sum(weight * y(1))``), float32,
one CPU thread. It reads one JSON request per line on stdin (``{"adjoint": "recursive" |
"backsolve", "rtol": ..., "atol": ..., "repeats": n, "gradient_out": path}``) and answers
each with one JSON line: the jit compile time, the times of ``repeats`` forward+backward
runs after it, and the solve's step counts; the gradient goes to ``gradient_out``. The
torch side interleaves these requests with its own runs, so both see the same machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                      "intra_op_parallelism_threads=1")

import json  # noqa: E402  (XLA reads its flags when jax is imported)
import sys  # noqa: E402
import time  # noqa: E402

import diffrax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

ADJOINTS = {"recursive": diffrax.RecursiveCheckpointAdjoint, "backsolve": diffrax.BacksolveAdjoint}


def vector_field(t, y, params):
    w1, b1, w2, b2 = params
    return jnp.tanh(y @ w1.T + b1) @ w2.T + b2


def make_loss(adjoint: str, rtol: float, atol: float, y0, weight):
    """The loss as a function of the parameters, and the solve's statistics."""
    def solve(params):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(vector_field), diffrax.Dopri5(), t0=0.0, t1=1.0, dt0=None, y0=y0,
            args=params, stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            adjoint=ADJOINTS[adjoint](), saveat=diffrax.SaveAt(t1=True), max_steps=100_000)

    def loss(params):
        solution = solve(params)
        return jnp.sum(weight * solution.ys[-1]), solution.stats

    return jax.jit(jax.value_and_grad(loss, has_aux=True))


def answer(request: dict, params, y0, weight, compiled: dict) -> dict:
    key = (request["adjoint"], request["rtol"], request["atol"])
    compile_s = None
    if key not in compiled:
        compiled[key] = make_loss(*key, y0, weight)
        started = time.perf_counter()
        jax.block_until_ready(compiled[key](params))
        compile_s = time.perf_counter() - started
    times = []
    for _ in range(request["repeats"]):
        started = time.perf_counter()
        (value, stats), grads = jax.block_until_ready(compiled[key](params))
        times.append(time.perf_counter() - started)
    np.savez(request["gradient_out"], *[np.asarray(g) for g in grads])
    return {"compile_and_first_s": compile_s, "times_s": times, "loss": float(value),
            "accepted": int(stats["num_accepted_steps"]),
            "rejected": int(stats["num_rejected_steps"]),
            "jax": jax.__version__, "diffrax": diffrax.__version__}


def main() -> None:
    data = np.load(sys.argv[1])
    params = tuple(jnp.asarray(data[name]) for name in ("w1", "b1", "w2", "b2"))
    y0, weight = jnp.asarray(data["y0"]), jnp.asarray(data["weight"])
    compiled: dict = {}
    for line in sys.stdin:
        print(json.dumps(answer(json.loads(line), params, y0, weight, compiled)), flush=True)


if __name__ == "__main__":
    main()
