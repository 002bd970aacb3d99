"""Naive: autograd through every operation of the forward solve, trial steps and
the step-size controller included (and the output times, when they require
grad). Exact for the computed trajectory; memory and graph depth grow with every
evaluation."""

from __future__ import annotations

import torch
from torch import Tensor

from aca.gradients.base import Problem
from aca.gradients.watch import Watched


def naive_solve(problem: Problem, y0: Tensor) -> Tensor:
    func = Watched(problem, y0, unseen=False, random=None)
    outputs, counts = problem.solve(y0, func=func, differentiable=True)
    problem.report_forward(counts)
    return torch.stack(outputs)
