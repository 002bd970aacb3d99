"""``SolveOptions``: how to solve and differentiate, with its defaults and checks in
one place. ``odeint``'s keywords, ``ODEBlock``'s options and a run config's
``solver`` and ``method`` groups all become one ``SolveOptions``."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from aca.errors import InvalidOptionError, StepSizeRequiredError, UnknownSolverError
from aca.solvers import SOLVERS, AdaptiveSteps, ButcherTableau


def _choices(names) -> str:
    return ", ".join(sorted(names))


def is_number(value: object) -> bool:
    """A real number: ``True`` and ``"1e-3"`` are not."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require(name: str, value: object, valid: bool, what: str,
             error: type[InvalidOptionError | StepSizeRequiredError] = InvalidOptionError) -> None:
    if not valid:
        raise error(f"{name} must be {what}, got {value!r}")


@dataclass(frozen=True)
class SolveOptions:
    """``solver``: a name in ``aca.SOLVERS`` (fixed-step methods need ``step_size``;
    any method given ``step_size`` runs on that grid). ``gradient``: a name in
    ``aca.GRADIENTS`` or a method object (``aca.ACA(...)``; checked where the method is
    built: ``aca.gradients.method_for``). ``rtol``/``atol``: the adaptive controller's tolerances.
    ``interpolate``: the steps land only on the last output time and the others are
    read off the continuous extension of the step that holds them (dense output,
    torchdiffeq's behaviour), so output times never shorten a step; ``False`` lands
    a step on every output time (a grid restarts at each). ``max_steps``: the most
    steps a solve may take. ``max_checkpoints``: ACA keeps at most this many states
    (None: all). ``safety``, ``ifactor``, ``dfactor``, ``pi_beta``: the step-size
    controller's settings (``AdaptiveSteps``). ``per_sample``: each sample (row of
    ``y0``) gets its own step sizes, error norm and accept/reject decisions, so its
    solution does not depend on the rest of its batch. ``adjoint_seminorm``: the
    adjoint's reverse solve judges its error on the state and adjoint only, not on the
    parameter gradients it accumulates (Kidger et al. 2021: fewer backward steps;
    those integrals never feed back into the dynamics). ``newton_tol``,
    ``newton_iterations``: an implicit solver's Newton iteration for a stage stops when
    its update, scaled by ``atol + rtol·|z|``, is below ``newton_tol``, and fails (the
    step is rejected) when it has not after ``newton_iterations``. Invalid values raise an
    ``aca.ODEError`` naming the value and what is valid."""

    solver: str = "dopri5"
    gradient: Any = "aca"
    rtol: float = 1e-3
    atol: float = 1e-6
    step_size: float | None = None
    interpolate: bool = True
    max_steps: int = 10_000
    max_checkpoints: int | None = None
    safety: float = AdaptiveSteps.safety
    ifactor: float = AdaptiveSteps.ifactor
    dfactor: float = AdaptiveSteps.dfactor
    pi_beta: float = AdaptiveSteps.pi_beta
    per_sample: bool = False
    adjoint_seminorm: bool = False
    newton_tol: float = 1e-3
    newton_iterations: int = 10

    def __post_init__(self) -> None:
        solver, step_size = self.solver, self.step_size
        if not isinstance(solver, str) or solver not in SOLVERS:
            raise UnknownSolverError(
                f"unknown solver {solver!r}; choose one of: {_choices(SOLVERS)}")
        tableau = SOLVERS[solver]
        if step_size is None and not tableau.adaptive:
            raise StepSizeRequiredError(
                f"solver {solver!r} is fixed-step and needs step_size=<h>; adaptive solvers are: "
                f"{_choices(n for n, t in SOLVERS.items() if t.adaptive)}")
        if step_size is not None:
            _require("step_size", step_size, is_number(step_size) and 0 < step_size < math.inf,
                     "a positive number (or None for adaptive steps)", StepSizeRequiredError)
        for name in ("interpolate", "adjoint_seminorm"):
            _require(name, getattr(self, name), isinstance(getattr(self, name), bool),
                     "True or False")
        for name, value in (("rtol", self.rtol), ("atol", self.atol)):
            _require(name, value, is_number(value) and 0 <= value < math.inf,
                     "a non-negative number")
        if step_size is None and self.rtol == 0 and self.atol == 0:
            raise InvalidOptionError("rtol and atol cannot both be 0 for an adaptive solver")
        _require("max_steps", self.max_steps, _is_int(self.max_steps) and self.max_steps > 0,
                 "a positive integer")
        _require("max_checkpoints", self.max_checkpoints, self.max_checkpoints is None or (
            _is_int(self.max_checkpoints) and self.max_checkpoints >= 2),
            "an integer >= 2 (or None for all)")
        _require("safety", self.safety, is_number(self.safety) and 0 < self.safety <= 1,
                 "in (0, 1]")
        _require("ifactor", self.ifactor, is_number(self.ifactor) and 1 <= self.ifactor < math.inf,
                 "a number >= 1 (the largest growth of the step size)")
        _require("dfactor", self.dfactor, is_number(self.dfactor) and 0 < self.dfactor <= 1,
                 "in (0, 1] (the largest shrinking of the step size)")
        beta_max = 4 / (3 * tableau.order)  # beyond it the error exponent 1/order - 0.75 beta <= 0
        _require("pi_beta", self.pi_beta, is_number(self.pi_beta) and 0 <= self.pi_beta < beta_max,
                 f"in [0, {beta_max:.3g}) for {solver!r} (order {tableau.order})")

        _require("newton_tol", self.newton_tol,
                 is_number(self.newton_tol) and 0 < self.newton_tol < math.inf,
                 "a positive number")
        _require("newton_iterations", self.newton_iterations,
                 _is_int(self.newton_iterations) and self.newton_iterations > 0,
                 "a positive integer")
        _require("per_sample", self.per_sample, isinstance(self.per_sample, bool), "True or False")
        if self.per_sample:
            self._check_per_sample()

    def _check_per_sample(self) -> None:
        if not self.interpolate:
            raise InvalidOptionError("per_sample=True reads output times off each sample's "
                                     "steps and needs interpolate=True, got interpolate=False")

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> SolveOptions:
        """From a mapping of option names (a run config's groups); an unknown name is an
        ``InvalidOptionError`` listing the valid ones."""
        unknown = sorted(set(options) - set(cls.names()))
        if unknown:
            raise InvalidOptionError(f"unknown solve option(s) {unknown}; valid: "
                                     f"{', '.join(cls.names())}")
        return cls(**options)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @property
    def tableau(self) -> ButcherTableau:
        return SOLVERS[self.solver]

    @property
    def controller_settings(self) -> dict[str, float]:
        """The adaptive controller's settings, as ``AdaptiveSteps`` takes them."""
        return {"safety": self.safety, "ifactor": self.ifactor, "dfactor": self.dfactor,
                "pi_beta": self.pi_beta}

    def as_dict(self) -> dict[str, Any]:
        """The keyword arguments of ``aca.odeint`` that these options are."""
        return asdict(self)
