"""Naive: autograd through every operation of the forward solve, trial steps and
the step-size controller included (and the output times, when they require
grad). Exact for the computed trajectory; memory and graph depth grow with every
evaluation."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from aca.gradients.base import GradientMethod, Problem
from aca.gradients.watch import Watched


@dataclass(frozen=True)
class Naive(GradientMethod):
    """Backpropagation through the solver. ``frozen_steps``: only the first step size
    is differentiated, the later ones are constants (torchdiffeq's odeint)."""

    frozen_steps: bool = False
    name = "naive"

    def solve(self, problem: Problem, y0: Tensor) -> Tensor:
        func = Watched(problem, y0, unseen=False, random=None)
        solution = problem.solve(y0, func=func, controller=problem.controller(
            frozen=self.frozen_steps))
        problem.report_forward(solution)
        return solution.ys
