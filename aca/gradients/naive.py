"""Naive: autograd through every operation of the forward solve, trial steps and
the step-size controller included. Exact for the computed trajectory; memory and
graph depth grow with every evaluation."""

from __future__ import annotations

import torch
from torch import Tensor

from aca.gradients.base import Problem


def naive_solve(problem: Problem, y0: Tensor) -> Tensor:
    outputs, counts = problem.solve(y0, differentiable=True)
    problem.report_forward(counts)
    return torch.stack(outputs)
