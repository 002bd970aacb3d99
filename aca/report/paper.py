"""The paper's numbers (Zhuang et al., ICML 2020), copied once from docs/paper.md,
which names their sources.

Values marked approximate were read off the paper's plots; tables show them with "≈".
"""

from __future__ import annotations

METHODS = ("aca", "adjoint", "naive")

# Experiment 1 (approximate): absolute gradient error of each method at T ≈ 19.5; the
# paper states neither alpha, z0, the tolerance nor which gradient it plots.
TOY_ABS_ERROR = {"aca": 0.48, "adjoint": 0.78, "naive": 0.96}
TOY_T = 19.5
# ACA's error of dL/dz0 read off the same figure at two more T (docs/paper.md, exp. 1).
TOY_ACA_ERROR_VS_T = {16.0: 0.09, 18.0: 0.23, 19.5: 0.48}

# Experiment 2 (approximate): the reverse-time solve ends near x ≈ 0.5 instead of x(0) = 2.
VDP_REVERSE_X = 0.5
VDP_X0 = 2

# Experiment 3 (approximate): NODE-18 trained 90 epochs with each method: test accuracy (%)
# and training time (hours).
CIFAR_METHODS = {"aca": (92.65, 10.0), "adjoint": (89.87, 17.6), "naive": (90.14, 33.9)}
# Experiment 3 (approximate): median test accuracy (%) over 10 runs.
CIFAR_MEDIANS = {"cifar10": {"node18": 94.16, "resnet18": 92.21},
                 "cifar100": {"node18": 73.95, "resnet18": 72.61}}

# Experiment 4: docs/paper.md gives no values, only the ordering.
TIMESERIES_CLAIM = "ACA < adjoint (no value)"

# Experiment 5: the masses recovered by the authors' ACA run (true: 1.1, 1.1, 0.9).
THREE_BODY_MASSES = (1.099986, 1.100022, 0.899978)

# Table 1: memory cost of each method (N_f: one f evaluation's graph, N_t: accepted steps,
# m: trials per step).
MEMORY = {"aca": "N_f + N_t", "adjoint": "N_f", "naive": "N_f·N_t·m"}


def approx(value: float) -> str:
    """A number read off the paper's plots, as the tables show it."""
    return f"≈{value}"


def masses(values: tuple[float, ...] = THREE_BODY_MASSES) -> str:
    """Masses to the authors' six decimals."""
    return ", ".join(f"{mass:.6f}" for mass in values)
