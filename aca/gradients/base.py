"""What every gradient method receives: one solve problem over the shared core, and
the strategy interface the methods implement."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from aca.errors import (
    InvalidOptionError,
    MaxStepsExceededError,
    NonFiniteStateError,
    StatefulFuncError,
    StepSizeUnderflowError,
)
from aca.solvers import (
    SOLVERS,
    AdaptiveSteps,
    ButcherTableau,
    Checkpoints,
    ConstantSteps,
    Controller,
    Newton,
    Norm,
    Solution,
    Status,
    integrate,
    rms_norm,
)
from aca.solvers.newton import check_size
from aca.solvers.step import Func, Step
from aca.stats import StatsSinks

if TYPE_CHECKING:
    from aca.options import SolveOptions


class GradientMethod:
    """A way to differentiate through a solve (diffrax's adjoints as objects): it owns its
    options and its policy for random numbers ``func`` draws. ``solve(problem, y0)``
    returns the states at the output times, differentiable by this method."""

    name = ""

    @classmethod
    def from_options(cls, options: SolveOptions) -> GradientMethod:
        """The method with the options a ``SolveOptions`` gives it."""
        return cls()

    def solve(self, problem: Problem, y0: Tensor) -> Tensor:
        raise NotImplementedError


@dataclass
class Problem:
    """A solve request: the function, the output times (``(S, T)`` values in the time
    dtype, one row per group of steps), the options, the gradient method and where
    statistics go. ``t`` is the output times as the caller gave them when that is a
    tensor (gradients flow to it); ``extra_params`` the tensors passed as ``params=``."""

    func: Func
    times: Tensor
    options: SolveOptions
    method: GradientMethod
    sinks: StatsSinks = field(default_factory=lambda: StatsSinks(None))
    t: Tensor | None = None
    extra_params: list[Tensor] = field(default_factory=list)
    #: the module behind ``func`` when ``func`` is a function of it (aca.torchdiffeq): its
    #: buffers are ``func``'s
    module: nn.Module | None = None
    #: the forward solve's error norm, and what wraps its controller (step bounds, step
    #: times, callbacks: ``aca.solvers.wrappers``)
    norm: Norm = rms_norm
    wrap: Callable[[Controller], Controller] | None = None
    #: what steps instead of ``aca.solvers.integrate`` (same signature): scipy's
    #: ``solve_ivp`` for aca.torchdiffeq's ``scipy_solver``
    loop: Callable[..., Solution] | None = None

    def __post_init__(self) -> None:
        self.tableau: ButcherTableau = SOLVERS[self.options.solver]
        #: how an implicit method's stages are solved (naive: differentiated through)
        self.newton = Newton(self.options.rtol, self.options.atol, self.options.newton_tol,
                             self.options.newton_iterations,
                             unrolled=self.method.name == "naive")
        self.groups = self.times.shape[0]
        self.per_sample = self.options.per_sample
        ignores_time = getattr(self.func, "ignores_time", False)
        self.rhs = self.func if ignores_time else _user_time(self.func, self.per_sample)
        device = self.times.device.type
        #: the caller's autocast, under which backward evaluates func again (as the forward)
        self.autocast = ({"device_type": device, "dtype": torch.get_autocast_dtype(device)}
                         if torch.is_autocast_enabled(device) else None)
        if self.autocast is not None:  # a field autocast made half precision: the state's
            self.rhs = _in_state_dtype(self.rhs)
        module = self.func if isinstance(self.func, nn.Module) else self.module or nn.Module()
        #: the tensors gradients flow to besides y0 and t: func's parameters, params=
        self.params = list({id(p): p for p in [*module.parameters(), *self.extra_params]
                            if p.requires_grad}.values())
        #: func is a closure: it may reach tensors after its first evaluation that the
        #: first-evaluation check did not see (backward looks at every rebuilt step)
        self.closure = not isinstance(self.func, nn.Module) and self.module is None
        self.named_buffers = list(module.named_buffers())
        self.buffers = [buffer for _, buffer in self.named_buffers]
        #: running statistics (batch norm): func changes them, but its output in training
        #: mode does not depend on them
        self.statistics = {id(b) for m in module.modules()
                           if isinstance(m, nn.modules.batchnorm._NormBase)
                           for b in m.buffers(recurse=False)}

    def refuse_changed_buffers(self, versions: list[int]) -> None:
        """func changed buffers in place while the forward solve ran (spectral_norm's power
        iteration in training mode): aca's rebuild and the adjoint's reverse solve would see
        other values than the forward did."""
        changed = [name for (name, buffer), version in zip(self.named_buffers, versions)
                   if buffer._version != version and id(buffer) not in self.statistics]
        if changed:
            raise StatefulFuncError(
                f"func changed its buffer(s) {', '.join(changed[:4])} in place during the solve "
                f"(a power iteration such as spectral_norm's, in training mode): "
                f"gradient='{self.method.name}' evaluates func again and would see other "
                "values than the forward did; solve with the module in eval mode, or use "
                "gradient='naive'")

    @property
    def t_requires_grad(self) -> bool:
        return self.t is not None and self.t.requires_grad

    def time_args(self) -> Tensor:
        """The output times as the steps see them: in the autograd graph when ``t``
        requires grad (naive differentiates through them)."""
        if self.t_requires_grad and torch.is_grad_enabled():
            return self.t.to(self.times.dtype).expand_as(self.times)
        return self.times

    def controller(self, norm: Norm | None = None, frozen: bool = False,
                   rtol: float | None = None, atol: float | None = None,
                   step_size: float | None = None, tableau: ButcherTableau | None = None,
                   wrap: Callable[[Controller], Controller] | None = None) -> Controller:
        """The forward solve's controller, or (any argument given) another one: the reverse
        solve's step size, tolerances, method, norm and wrappers."""
        options, tableau = self.options, tableau or self.tableau
        step_size = options.step_size if step_size is None else step_size
        if norm is None:
            norm, wrap = self.norm, self.wrap
        if step_size is not None or not tableau.adaptive:
            controller = ConstantSteps(step_size)
        else:
            controller = AdaptiveSteps(options.rtol if rtol is None else rtol,
                                       options.atol if atol is None else atol, tableau.order,
                                       norm=norm, frozen=frozen, **options.controller_settings)
        return controller if wrap is None else wrap(controller)

    def solve(self, y0: Tensor, *, func: Func | None = None, times: Tensor | None = None,
              controller: Controller | None = None, tableau: ButcherTableau | None = None,
              checkpoints: Checkpoints | None = None, event: Callable | None = None,
              on_attempt: Callable[[Tensor, Tensor, Tensor, Step, Tensor], None] | None = None,
              interpolate: bool | None = None, newton: Newton | None = None) -> Solution:
        """Integrate ``func`` (default: the problem's) over ``times`` (default: the output
        times) with the problem's controller (and an implicit method's stages solved by
        the problem's ``newton``, or the one given); a failed solve raises its
        ``ODEError``."""
        times = self.time_args() if times is None else times
        controller = controller or self.controller()
        self.check_grid(times, controller)
        tableau = tableau or self.tableau
        newton = newton or self.newton
        implicit = {"newton": newton} if tableau.implicit else {}
        if tableau.implicit:
            check_size(y0, self.groups, newton)
        solution = (self.loop or integrate)(
            func or self.rhs, y0, times, tableau, controller,
            self.options.max_steps, checkpoints=checkpoints, on_attempt=on_attempt, event=event,
            interpolate_outputs=self.options.interpolate if interpolate is None else interpolate,
            **implicit)
        raise_for(solution, self.options, controller)
        return solution

    def check_grid(self, times: Tensor, controller: Controller) -> None:
        """Refuse a fixed grid longer than ``max_steps`` before stepping."""
        if not isinstance(controller, ConstantSteps):
            return
        rows = times.detach().tolist()
        stops = (lambda row: [row[0], row[-1]]) if self.options.interpolate else list
        total = max(sum(controller.fixed_steps(a, b) for a, b in zip(stops(r), stops(r)[1:]))
                    for r in rows)
        if total > self.options.max_steps:
            raise MaxStepsExceededError(
                f"fixed-step solve needs {total} steps of {controller.step_size:g}, more than "
                f"max_steps={self.options.max_steps}; raise max_steps or the step size")

    def report_forward(self, solution: Solution) -> None:
        counts = solution.counts
        if not self.per_sample:
            self.sinks.add(nfe_forward=counts.nfe, accepted=counts.accepted,
                           rejected=counts.rejected, jacobians=counts.jacobians)
            return
        accepted, rejected, nfe = counts.per_group.tolist()
        self.sinks.add(nfe_forward=counts.nfe, accepted=counts.accepted,
                       rejected=counts.rejected, sample_nfe_forward=sum(nfe),
                       jacobians=counts.jacobians,
                       per_sample={"accepted": accepted, "rejected": rejected, "nfe": nfe})


def raise_for(solution: Solution, options: SolveOptions, controller: Controller) -> None:
    """The ``ODEError`` of the first group that failed (a stop is a status in the loop)."""
    failed = solution.status >= Status.UNDERFLOW
    if not bool(failed.any()):
        return
    group = int(failed.nonzero()[0])
    code = Status(int(solution.status[group]))
    t = float(solution.t.detach().reshape(-1)[group])
    which = "some sample" if options.per_sample else "the solve"
    if code == Status.NON_FINITE:
        newton = (" or the implicit solver's Newton iteration failed at every step size "
                  "allowed" if SOLVERS[options.solver].implicit else "")
        raise NonFiniteStateError(f"the state or its derivative became non-finite "
                                  f"(nan/inf){newton} in {which} near t={t:g}")
    if code == Status.ZERO_SCALE:
        raise InvalidOptionError(
            f"atol=0 and a state component is exactly 0 near t={t:g} ({which}): the error scale "
            "atol + rtol*|y| is 0 there, so no step can be judged; set atol > 0")
    if code == Status.UNDERFLOW:
        raise StepSizeUnderflowError(
            f"step size underflowed at t={t:g} ({which}): steps below the resolution of t "
            f"(spacing {math.ulp(t):.3g}) do not move it; the problem may be stiff or singular "
            "there, or its times too large for their spacing; loosen rtol/atol, use another "
            "solver or shift t")
    kind = "adaptive" if controller.adaptive else "fixed-step"
    raise MaxStepsExceededError(
        f"{kind} solve took max_steps={options.max_steps} steps and reached t={t:g} ({which}) "
        "short of its last time; raise max_steps or loosen rtol/atol")


def _user_time(func: Func, per_sample: bool) -> Func:
    """Call ``func`` with ``t`` as torchdiffeq does: a 0-dim tensor of ``y``'s dtype
    (per-sample: a ``(B,)`` tensor, each sample's time); the loop keeps times as
    group-shaped tensors of the time dtype."""
    def rhs(t: Tensor, y: Tensor) -> Tensor:
        t = t.reshape(len(y) if per_sample else ())
        return func(t if t.dtype == y.dtype else t.to(y.dtype), y)
    return rhs


def _in_state_dtype(func: Func) -> Func:
    def rhs(t: Tensor, y: Tensor) -> Tensor:
        out = func(t, y)
        return out.to(y.dtype) if isinstance(out, Tensor) and out.is_floating_point() else out
    return rhs


@contextlib.contextmanager
def autocast_as(problem: Problem) -> Iterator[None]:
    """The forward's autocast, for the evaluations backward makes."""
    if problem.autocast is None:
        yield
        return
    with torch.autocast(**problem.autocast):
        yield


@contextlib.contextmanager
def preserved_buffers(buffers: list[Tensor]) -> Iterator[None]:
    """Evaluations made in backward must not move running statistics (batch norm):
    restore the buffers of ``func`` afterwards."""
    saved = [buffer.clone() for buffer in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, copy in zip(buffers, saved):
                buffer.copy_(copy)


def accumulate(total: list[Tensor | None], grads: tuple[Tensor | None, ...]) -> None:
    """``total[i] += grads[i]``, treating None as zero."""
    for i, grad in enumerate(grads):
        if grad is None:
            continue
        if total[i] is None:
            total[i] = grad.clone()  # owned, so later steps can add into it in place
        else:
            total[i].add_(grad)
