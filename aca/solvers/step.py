"""One explicit Runge–Kutta step: the only place that evaluates stages.

The forward solve, ACA's step rebuild and the adjoint's reverse solve all call
``rk_step``, so a step rebuilt in backward repeats the forward arithmetic exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from aca.solvers.tableau import ButcherTableau

Func = Callable[[float, Tensor], Tensor]
Scalar = float | Tensor  # a Python float, or a 0-dim tensor when step sizes are differentiated


class Step(NamedTuple):
    """The result of one step: the new state, the embedded error estimate (only with
    ``with_error``), the FSAL stage ``func(t_next, y)`` (when evaluated), the
    evaluations made and every stage evaluated (for the continuous extension)."""

    y: Tensor
    error: Tensor | None
    k_last: Tensor | None
    nfe: int
    stages: list[Tensor]


def weighted_sum(weights: Sequence[float], ks: Sequence[Tensor]) -> Tensor:
    """``Σ w_j k_j`` over the non-zero weights, accumulated in one buffer."""
    terms = [(w, k) for w, k in zip(weights, ks) if w != 0.0] or [(0.0, ks[0])]
    acc = torch.mul(terms[0][1], terms[0][0])
    for w, k in terms[1:]:
        acc.add_(k, alpha=w)
    return acc


def advance(y: Tensor, h: Scalar, weights: Sequence[float], ks: Sequence[Tensor]) -> Tensor:
    """``y + h Σ w_j k_j``."""
    acc = weighted_sum(weights, ks)
    if isinstance(h, Tensor):
        return y + h * acc
    return torch.add(y, acc, alpha=h)


def rk_step(
    func: Func,
    t: Scalar,
    y: Tensor,
    h: Scalar,
    tableau: ButcherTableau,
    k1: Tensor | None = None,
    t_next: Scalar | None = None,
    with_error: bool = False,
    dense: bool = False,
) -> Step:
    """Advance ``y`` from ``t`` by ``h``.

    ``t`` and ``h`` are floats, or 0-dim tensors when the step sizes are part of
    the autograd graph (naive); ``func`` receives stage times of the same kind.
    ``k1`` is ``func(t, y)`` when the caller already has it (FSAL); ``t_next`` is the
    time the step lands on, exactly (default ``t + h``).
    The last stage of an FSAL method is evaluated only with ``with_error`` (the
    error estimate uses it) or ``dense`` (the continuous extension does).
    """
    nfe = 0
    if k1 is None:
        k1 = func(t, y)
        nfe += 1
    ks = [k1]
    for i in range(1, tableau.solution_stages):
        stage = advance(y, h, tableau.a[i], ks)
        ks.append(func(t + tableau.c[i] * h, stage))
        nfe += 1
    y_new = advance(y, h, tableau.b, ks)
    k_last = None
    if tableau.fsal and (with_error or dense):
        k_last = func(t + h if t_next is None else t_next, y_new)
        ks.append(k_last)
        nfe += 1
    error = h * weighted_sum(tableau.b_error, ks) if with_error else None
    return Step(y_new, error, k_last, nfe, ks)


def dense_output(y: Tensor, h: Scalar, stages: Sequence[Tensor], tableau: ButcherTableau,
                theta: Scalar) -> Tensor:
    """The continuous extension of a step from ``y`` of size ``h`` with these stages
    (all of them: ``rk_step(..., dense=True)``), at ``t + θh``: ``y + h Σ_j b_j(θ) k_j``.
    ``θ`` is a float, or a 0-dim tensor in the autograd graph (then so are the weights).
    (Per-sample steps: ``aca.solvers.integrate.interpolate_rows``.)"""
    if len(stages) != len(tableau.dense):
        raise ValueError(f"{tableau.name}'s interpolant needs {len(tableau.dense)} stages, "
                         f"got {len(stages)}: take the step with dense=True")
    if isinstance(theta, Tensor):  # the weights as one small tensor expression in θ
        coefficients = theta.new_tensor(tableau.dense)
        powers = theta ** torch.arange(1, coefficients.shape[1] + 1, device=theta.device)
        weights = (coefficients @ powers).to(y.dtype)
        return y + h * torch.tensordot(weights, torch.stack(list(stages)), 1)
    return advance(y, h, [_horner(row, theta) for row in tableau.dense], stages)


def _horner(row: Sequence[float], theta: Scalar) -> Scalar:
    """``b_j(θ) = Σ_m row[m] θ^(m+1)`` by Horner's rule."""
    weight = 0.0
    for coefficient in reversed(row):
        weight = (weight + coefficient) * theta
    return weight
