"""diffrax's side of ``scripts/bench_stiff.py --diffrax``: runs in the JAX environment that
``scripts/make_jax_env.sh`` builds (no torch there), never in the project's own.

    .venv-jax/bin/python scripts/stiff_diffrax_peer.py PROBLEM RTOL ATOL REPEATS [PI]

solves PROBLEM (``robertson`` or ``vdp_mu1000``, the same vector fields, start, end time
and loss as bench_stiff's) with ``Kvaerno5``, a ``PIDController`` at RTOL/ATOL (its
Newton solver takes the controller's tolerances, diffrax's default; the controller is
diffrax's default I controller, or with ``PI`` the PI controller ``pcoeff = icoeff = 0.3``
that its documentation suggests for mildly stiff problems) and
``RecursiveCheckpointAdjoint``, float64, one CPU thread, and prints one JSON line: the jit
compile time of forward+backward (with its first run), the times of REPEATS forward-only
and forward+backward runs after compiling, the step counts, the end state, the loss and
its gradient with respect to the parameters (as
``p·dL/dp``) and y0.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                      "intra_op_parallelism_threads=1")

import json  # noqa: E402  (XLA reads its flags when jax is imported)
import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402


def robertson(t, y, k):
    y1, y2, y3 = y
    return jnp.stack([-k[0] * y1 + k[2] * y2 * y3, k[0] * y1 - k[2] * y2 * y3 - k[1] * y2**2,
                      k[1] * y2**2])


def van_der_pol(t, y, mu):
    x, v = y
    return jnp.stack([v, mu[0] * (1 - x**2) * v - x])


# name: (vector field, parameters, y0, end time, loss weight on y(T)); bench_stiff's PROBLEMS
PROBLEMS = {
    "robertson": (robertson, (0.04, 3e7, 1e4), (1.0, 0.0, 0.0), 1e5, (1.0, 1e4, 0.0)),
    "vdp_mu1000": (van_der_pol, (1000.0,), (2.0, 0.0), 3000.0, (1.0, 0.0)),
}


def make_loss(name: str, rtol: float, atol: float, pi: bool):
    field, _, _, t1, weight = PROBLEMS[name]
    coefficients = {"pcoeff": 0.3, "icoeff": 0.3} if pi else {}

    def loss(params, y0):
        solution = diffrax.diffeqsolve(
            diffrax.ODETerm(field), diffrax.Kvaerno5(), t0=0.0, t1=t1, dt0=None, y0=y0,
            args=params, stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol,
                                                              **coefficients),
            adjoint=diffrax.RecursiveCheckpointAdjoint(), saveat=diffrax.SaveAt(t1=True),
            max_steps=20_000)
        return jnp.dot(jnp.asarray(weight), solution.ys[-1]), (solution.stats, solution.ys[-1])

    return (jax.jit(lambda params, y0: loss(params, y0)[1][1]),
            jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)))


def timed(function, *args, repeats: int) -> tuple[float, list[float], object]:
    """The first call's time (the jit compile with it), the next ``repeats`` calls' times
    and the last result."""
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        result = jax.block_until_ready(function(*args))
        times.append(time.perf_counter() - started)
    return times[0], times[1:], result


def main() -> None:
    name, rtol, atol, repeats = sys.argv[1], *map(float, sys.argv[2:4]), int(sys.argv[4])
    params, y0 = (jnp.asarray(value, dtype=jnp.float64) for value in PROBLEMS[name][1:3])
    forward, forward_backward = make_loss(name, rtol, atol, pi=sys.argv[5:] == ["PI"])
    _, forward_s, _ = timed(forward, params, y0, repeats=repeats)
    first_s, times, answer = timed(forward_backward, params, y0, repeats=repeats)
    (value, (stats, end)), (d_params, d_y0) = answer
    gradient = [float(v) for v in jnp.concatenate([d_params * params, d_y0])]
    print(json.dumps({"compile_and_first_s": first_s, "forward_s": forward_s, "times_s": times,
                      "loss": float(value), "gradient": gradient,
                      "end": [float(v) for v in end],
                      "accepted": int(stats["num_accepted_steps"]),
                      "rejected": int(stats["num_rejected_steps"]),
                      "jax": jax.__version__, "diffrax": diffrax.__version__}))


if __name__ == "__main__":
    main()
