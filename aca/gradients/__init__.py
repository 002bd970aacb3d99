"""The three ways to differentiate through a solve, as interchangeable strategies:
objects that own their options (``ACA(max_checkpoints=K)``, ``Adjoint(seminorm=True)``,
``Naive()``), or their names."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aca.errors import InvalidOptionError, UnknownGradientError
from aca.gradients.aca import ACA
from aca.gradients.adjoint import Adjoint
from aca.gradients.base import GradientMethod, Problem
from aca.gradients.naive import Naive

if TYPE_CHECKING:
    from aca.options import SolveOptions

#: Gradient method name -> its class (built from a ``SolveOptions`` by ``method_for``).
GRADIENTS: dict[str, type[GradientMethod]] = {"aca": ACA, "adjoint": Adjoint, "naive": Naive}


def method_for(options: SolveOptions) -> GradientMethod:
    """The gradient method ``options.gradient`` names (with the options it takes from
    ``options``), or the method object it is."""
    gradient = options.gradient
    if isinstance(gradient, GradientMethod):
        if options.max_checkpoints is not None or options.adjoint_seminorm:
            raise InvalidOptionError(
                f"gradient={gradient!r} is a method object: give it its own options (e.g. "
                "ACA(max_checkpoints=K), Adjoint(seminorm=True)) instead of max_checkpoints= "
                "or adjoint_seminorm=")
        return gradient
    if not isinstance(gradient, str) or gradient not in GRADIENTS:
        raise UnknownGradientError(f"unknown gradient method {gradient!r}; choose one of: "
                                   f"{', '.join(sorted(GRADIENTS))} (or a method object)")
    return GRADIENTS[gradient].from_options(options)


__all__ = ["ACA", "GRADIENTS", "Adjoint", "GradientMethod", "Naive", "Problem", "method_for"]
