"""The three ways to differentiate through a solve, as interchangeable strategies."""

from collections.abc import Callable

from torch import Tensor

from aca.gradients.aca import aca_solve
from aca.gradients.adjoint import adjoint_solve
from aca.gradients.base import Problem
from aca.gradients.naive import naive_solve

#: Gradient method name -> solve strategy ``(problem, y0) -> ys``.
GRADIENTS: dict[str, Callable[[Problem, Tensor], Tensor]] = {
    "aca": aca_solve,
    "adjoint": adjoint_solve,
    "naive": naive_solve,
}

__all__ = ["GRADIENTS", "Problem"]
