"""torchdiffeq's API on aca's core, for code written against torchdiffeq:
``import aca.torchdiffeq as torchdiffeq``.

``odeint`` back-propagates through the solver (aca's ``naive``, with torchdiffeq's step
sizes: constants after the first, so rejected attempts and the controller are not
differentiated), ``odeint_adjoint``
solves the continuous adjoint (``adjoint``), ``odeint_aca`` checkpoints the accepted
steps (``aca``, memory bounded by ``options={"max_checkpoints": K}``). Signatures,
defaults (``rtol=1e-7, atol=1e-9, method="dopri5"``), tuple states, ``options``,
``adjoint_*`` arguments, terminal events and func's step callbacks follow
torchdiffeq 0.2. Where aca is stricter, it says so with an ``ODEError``:

- an unknown method or option is refused, naming the valid ones (torchdiffeq warns
  about unused options and goes on);
- implicit, Adams and scipy methods are not available (aca has explicit
  Runge–Kutta methods only);
- a func using tensors that require grad but are not in ``adjoint_params`` (or
  func's parameters) is refused by ``odeint_adjoint``/``odeint_aca`` instead of
  giving them no gradient;
- the event time is differentiable in every entry point (the implicit function
  theorem, as torchdiffeq's ``odeint_event``), and so is the state returned with it.

Methods: torchdiffeq's ``rk4`` is Kutta's 3/8 rule (aca's ``rk4_38``; aca's own
``rk4`` is the classic one). torchdiffeq's ``adaptive_heun`` and ``fehlberg2``
reuse their last stage, evaluated at the embedded lower-order solution, as the
next step's first stage; here they are the textbook pairs (Heun–Euler 2(1),
Fehlberg 1(2) propagating the second-order solution), so their steps differ.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from aca.errors import (
    InvalidOptionError,
    StepSizeRequiredError,
    UnknownSolverError,
    UnseenTensorError,
)
from aca.gradients import Problem
from aca.gradients.base import _tensor_time
from aca.odeint import _output_times, solve_problem
from aca.options import SolveOptions
from aca.solvers import SOLVERS, AdaptiveSteps, ButcherTableau, ConstantSteps, integrate, rms_norm
from aca.solvers.control import Norm
from aca.solvers.step import Step, rk_step
from aca.stats import StatsSinks

__all__ = ["odeint", "odeint_aca", "odeint_adjoint", "odeint_event", "METHODS"]

#: torchdiffeq method name -> aca solver name
METHODS: dict[str, str] = {
    "euler": "euler", "midpoint": "midpoint", "heun2": "heun2", "heun3": "heun3", "rk4": "rk4_38",
    "adaptive_heun": "heun_euler", "fehlberg2": "fehlberg2", "bosh3": "bosh3",
    "dopri5": "dopri5", "tsit5": "tsit5", "dopri8": "dopri8",
}
_NOT_EXPLICIT_RK = ("explicit_adams", "implicit_adams", "fixed_adams", "scipy_solver")
_FIXED_OPTIONS = ("step_size", "grid_constructor", "interp", "perturb", "norm", "max_num_steps")
_ADAPTIVE_OPTIONS = ("first_step", "min_step", "max_step", "step_t", "jump_t", "norm",
                     "max_num_steps", "safety", "ifactor", "dfactor")
_ACA_OPTIONS = ("max_checkpoints",)
_CALLBACKS = ("callback_step", "callback_accept_step", "callback_reject_step")
_DEFAULT_MAX_STEPS = 2**31 - 1  # torchdiffeq's max_num_steps


# ----------------------------------------------------------------------------- state


@dataclass
class _State:
    """A tensor or a tuple of tensors as the one flat tensor aca solves."""

    shapes: list[torch.Size] | None  # None: a plain tensor state

    @classmethod
    def flatten(cls, y0: Tensor | tuple[Tensor, ...]) -> tuple[_State, Tensor]:
        if isinstance(y0, Tensor):
            return cls(None), y0
        if not isinstance(y0, tuple) or not y0 or not all(isinstance(y, Tensor) for y in y0):
            raise InvalidOptionError(
                f"y0 must be a tensor or a non-empty tuple of tensors, got {type(y0).__name__}")
        return cls([y.shape for y in y0]), torch.cat([y.reshape(-1) for y in y0])

    def unflatten(self, y: Tensor, lead: tuple[int, ...] = ()) -> Tensor | tuple[Tensor, ...]:
        if self.shapes is None:
            return y
        parts, start = [], 0
        for shape in self.shapes:
            end = start + shape.numel()
            parts.append(y[..., start:end].view((*lead, *shape)))
            start = end
        return tuple(parts)

    def flat(self, value: Tensor | Sequence[Tensor], what: str) -> Tensor:
        """func's (or a norm's) tuple output as one flat tensor."""
        if self.shapes is None:
            return value
        if not isinstance(value, (tuple, list)) or len(value) != len(self.shapes):
            raise InvalidOptionError(f"{what} must return a tuple of {len(self.shapes)} tensors "
                                     f"(one per part of y0), got {type(value).__name__}")
        return torch.cat([v.reshape(-1) for v in value])

    def parts(self, y: Tensor) -> list[Tensor]:
        return [y] if self.shapes is None else list(self.unflatten(y))


# ----------------------------------------------------------------------------- options


@dataclass
class _Settings:
    """How one direction of a solve (forward, or the adjoint's reverse solve) steps."""

    method: str
    rtol: float
    atol: float
    options: dict[str, Any]
    norm: Norm = rms_norm
    callbacks: dict[str, Callable] = field(default_factory=dict)

    @property
    def tableau(self) -> ButcherTableau:
        return SOLVERS[METHODS[self.method]]

    @property
    def fixed(self) -> bool:
        return not self.tableau.adaptive

    @property
    def max_steps(self) -> int:
        return self.options.get("max_num_steps", _DEFAULT_MAX_STEPS)


def _method(method: str | None, what: str = "method") -> str:
    method = "dopri5" if method is None else method
    if method in METHODS:
        return method
    known = ", ".join(METHODS)
    if method in _NOT_EXPLICIT_RK:
        raise UnknownSolverError(
            f"{what} {method!r} is not supported by aca.torchdiffeq (aca solves with explicit "
            f"Runge-Kutta methods only); choose one of: {known}")
    raise UnknownSolverError(f"unknown {what} {method!r}; choose one of: {known}")


def _number(name: str, value: object, low: float = 0.0, allow_inf: bool = False) -> float:
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if (not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value)
            or value < low or (math.isinf(value) and not allow_inf)):
        raise InvalidOptionError(f"{name} must be a number >= {low:g}, got {value!r}")
    return float(value)


def _check_options(method: str, options: dict | None, extra: tuple[str, ...], what: str) -> dict:
    options = {} if options is None else dict(options)
    valid = (_FIXED_OPTIONS if not SOLVERS[METHODS[method]].adaptive else _ADAPTIVE_OPTIONS) + extra
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise InvalidOptionError(f"unknown {what} {unknown} for method {method!r}; valid: "
                                 f"{', '.join(valid)}")
    for name in ("first_step", "min_step", "safety", "ifactor", "dfactor"):
        if name in options:
            options[name] = _number(f"{what}['{name}']", options[name])
    if "max_step" in options:
        options["max_step"] = _number(f"{what}['max_step']", options["max_step"], allow_inf=True)
    if options.get("step_size") is not None:
        options["step_size"] = _number(f"{what}['step_size']", options["step_size"])
        if options["step_size"] == 0:
            raise StepSizeRequiredError(f"{what}['step_size'] must be positive, got 0")
        if options.get("grid_constructor") is not None:
            raise InvalidOptionError("step_size and grid_constructor are mutually exclusive")
    if options.get("interp", "linear") not in ("linear", "cubic"):
        raise InvalidOptionError(f"{what}['interp'] must be 'linear' or 'cubic', got "
                                 f"{options['interp']!r}")
    if "max_num_steps" in options:
        steps = options["max_num_steps"]
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise InvalidOptionError(f"{what}['max_num_steps'] must be a positive integer, got "
                                     f"{steps!r}")
    norm = options.get("norm")
    if norm is not None and not callable(norm) and not (norm == "seminorm" and what ==
                                                        "adjoint_options"):
        raise InvalidOptionError(f"{what}['norm'] must be a callable"
                                 + (" or 'seminorm'" if what == "adjoint_options" else "")
                                 + f", got {norm!r}")
    return options


def _tolerance(name: str, value: object) -> float:
    if isinstance(value, (tuple, list)):
        raise InvalidOptionError(f"{name} must be one number (per-part tolerances of a tuple state "
                                 "are not supported by aca.torchdiffeq), got {value!r}")
    return _number(name, value)


def _state_norm(state: _State, norm: Callable | None) -> Norm:
    """The forward error norm: torchdiffeq's default is RMS for a tensor state and the
    largest RMS of the parts for a tuple; a user's norm sees the state's own structure."""
    if norm is None:
        if state.shapes is None:
            return rms_norm
        return lambda x: torch.stack([rms_norm(p) for p in state.parts(x)]).max()
    if state.shapes is None:
        return lambda x: torch.as_tensor(norm(x))
    return lambda x: torch.as_tensor(norm(state.unflatten(x)))


def _callbacks(func: Callable, fixed: bool, suffix: str) -> dict[str, Callable]:
    found = {name: getattr(func, name + suffix) for name in _CALLBACKS
             if callable(getattr(func, name + suffix, None))}
    unsupported = [name for name in found if fixed and name != "callback_step"]
    if unsupported:
        warnings.warn(f"fixed-grid solvers call only callback_step; func's {unsupported} will "
                      "not be called", stacklevel=4)
    return {name: fn for name, fn in found.items() if name not in unsupported}


# ----------------------------------------------------------------------------- controllers


class _EventFound(Exception):
    """Raised from the controller to stop the event-detection solve."""

    def __init__(self, t: float, h: float, y: Tensor, y_next: Tensor) -> None:
        super().__init__()
        self.t, self.h, self.y, self.y_next = t, h, y, y_next


class _Hooks:
    """What torchdiffeq's solvers do around each step: func's callbacks and the
    terminal event check, on the state the controller has seen last."""

    def __init__(self, callbacks: dict[str, Callable], view: Callable,
                 event: Callable[[float, Tensor], bool] | None) -> None:
        self.callbacks, self.view, self.event = callbacks, view, event
        self.y: Tensor | None = None

    def call(self, name: str, t: float, h: float) -> None:
        callback = self.callbacks.get(name)
        if callback is not None:
            y = self.y
            callback(y.new_tensor(t), self.view(y), y.new_tensor(abs(h)))

    def result(self, accepted: bool, step: Step, t: float, h: float) -> None:
        self.call("callback_accept_step" if accepted else "callback_reject_step", t, h)
        if accepted:
            previous, self.y = self.y, step.y
            if self.event is not None and self.event(t + h, step.y):
                raise _EventFound(t, h, previous, step.y)


class _FixedSteps(ConstantSteps):
    def __init__(self, step_size: float, hooks: _Hooks, until_event: bool) -> None:
        super().__init__(step_size)
        self.hooks, self.until_event = hooks, until_event

    def start(self, func, times, t_arg, y, max_steps):
        self.hooks.y = y
        return (None, 0) if self.until_event else super().start(func, times, t_arg, y, max_steps)

    def propose(self, t, t_arg, target, target_arg):
        proposal = super().propose(t, t_arg, target, target_arg)
        self.hooks.call("callback_step", t, proposal[0])
        return proposal

    def accept(self, y, step, h, h_arg, t, target):
        super().accept(y, step, h, h_arg, t, target)
        self.hooks.result(True, step, t, h)
        return True


@dataclass
class _AdaptiveSteps(AdaptiveSteps):
    """torchdiffeq's adaptive controller options on top of aca's: a given first step,
    step sizes clipped to ``[min_step, max_step]`` (a step at ``min_step`` is
    accepted whatever its error), callbacks and the event check. ``frozen``: with
    ``differentiable``, only the first step size is in the autograd graph (as in
    torchdiffeq's odeint, whose controller runs without grad after it)."""

    first_step: float | None = None
    frozen: bool = False
    min_step: float = 0.0
    max_step: float = math.inf
    hooks: _Hooks | None = None
    until_event: bool = False

    def start(self, func, times, t_arg, y, max_steps):
        self.hooks.y = y
        if self.first_step is None:
            k1, nfe = super().start(func, times, t_arg, y, max_steps)
        else:
            k1, nfe = func(t_arg, y), 1
            self.h = self.h_arg = math.copysign(self.first_step, times[-1] - times[0])
        self._clip()
        return k1, nfe

    def _clip(self) -> None:
        size = min(max(abs(self.h), self.min_step), self.max_step)
        if size != abs(self.h):
            self.h = self.h_arg = math.copysign(size, self.h)

    def propose(self, t, t_arg, target, target_arg):
        proposal = super().propose(t, t_arg, target, target_arg)
        self.hooks.call("callback_step", t, proposal[0])
        return proposal

    def accept(self, y, step, h, h_arg, t, target):
        # an event solve's target is only a far bound: the step size underflows relative to t
        accepted = super().accept(y, step, h, h_arg, t, t if self.until_event else target)
        accepted = (accepted or abs(h) <= self.min_step) and abs(h) <= self.max_step
        if self.frozen:
            self.h_arg = self.h
        self._clip()
        self.hooks.result(accepted, step, t, h)
        return accepted


# ----------------------------------------------------------------------------- problem


@dataclass
class _Problem(Problem):
    """aca's solve request with torchdiffeq's stepping: its first solve is the
    forward one; any later one is the adjoint's reverse solve (``backward``)."""

    state: _State = field(default_factory=lambda: _State(None))
    forward_settings: _Settings | None = None
    backward_settings: _Settings | None = None
    backward_norm: str | Callable | None = None  # None (mixed), "seminorm" or a callable
    buffers_of: nn.Module | None = None
    until_event: Callable[[float, Tensor], bool] | None = None
    shape: torch.Size = torch.Size()
    solves: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.buffers_of is not None:
            self.buffers = list(self.buffers_of.buffers())

    def solve(self, y0, *, func=None, times=None, norm=rms_norm, differentiable=False,
              checkpoints=None):
        backward = self.solves > 0
        self.solves += 1
        settings = self.backward_settings if backward else self.forward_settings
        times = times or self.times
        detecting = self.until_event is not None and not backward  # callbacks: not twice
        hooks = _Hooks({} if detecting else settings.callbacks,
                       self._augmented if backward else self.state.unflatten,
                       self.until_event if detecting else None)
        if settings.fixed:
            # forward: one step between consecutive times (they are the grid); backward
            # too, unless the adjoint method is fixed-step with a step size of its own
            step = self.step_size
            if backward and settings.options.get("step_size") not in (
                    None, self.forward_settings.options.get("step_size")):
                step = settings.options["step_size"]
            elif backward and not self.forward_settings.fixed:
                step = math.inf  # a fixed adjoint method without step_size: t is its grid
            controller = _FixedSteps(math.inf if step is None else step, hooks, detecting)
        else:
            controller = _AdaptiveSteps(
                settings.rtol, settings.atol, settings.tableau.order,
                norm=self._adjoint_norm() if backward else settings.norm,
                differentiable=differentiable, frozen=differentiable, hooks=hooks,
                until_event=detecting,
                **{k: settings.options[k] for k in ("first_step", "min_step", "max_step",
                                                    "safety", "ifactor", "dfactor")
                   if k in settings.options})
        time_args = None
        if differentiable and self.t_requires_grad:
            time_args = list(self.t.to(y0).unbind())
        elif differentiable and controller.adaptive:
            time_args = [y0.new_tensor(t) for t in times]
        return integrate(func or self.rhs, y0, times, settings.tableau, controller,
                         settings.max_steps, time_args=time_args, checkpoints=checkpoints,
                         interpolate=self.options.interpolate and not backward)

    def _split(self, z: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        """The adjoint's augmented state ``[y, adjoint, parameter gradients]``."""
        size, params = self.shape.numel(), self.params
        y, adjoint = z[:size].view(self.shape), z[size:2 * size].view(self.shape)
        grads = z[2 * size:].split([p.numel() for p in params]) if params else []
        return y, adjoint, [g.view_as(p) for g, p in zip(grads, params)]

    def _augmented(self, z: Tensor) -> tuple[Tensor, ...]:
        """The augmented state as torchdiffeq shows it: ``(t, *y, *adjoint, *grads)``
        (t: a zero, aca accumulates time gradients outside the solve)."""
        y, adjoint, grads = self._split(z)
        return (z.new_zeros(()), *self.state.parts(y), *self.state.parts(adjoint), *grads)

    def _adjoint_norm(self) -> Norm:
        """The reverse solve's error norm over ``[y, adjoint, parameter gradients]``:
        torchdiffeq's default (the largest of the state norm of y and of the adjoint and
        the RMS of each parameter's gradient), its seminorm (without the parameters),
        or the user's callable, given ``(t, *y, *adjoint, *params)`` (t: a zero here,
        aca accumulates time gradients outside the solve)."""
        state_norm, choice = self.forward_settings.norm, self.backward_norm
        if callable(choice):
            return lambda z: torch.as_tensor(choice(self._augmented(z)))

        def norm(z: Tensor) -> Tensor:
            y, adjoint, grads = self._split(z)
            norms = [state_norm(y), state_norm(adjoint)]
            if choice != "seminorm":
                norms += [rms_norm(g) for g in grads if g.numel()]
            return torch.stack([torch.as_tensor(v).to(z.dtype) for v in norms]).max()
        return norm


# ----------------------------------------------------------------------------- the solve


@dataclass
class _Call:
    """One call of odeint/odeint_adjoint/odeint_aca, normalised."""

    func: Callable
    state: _State
    y0: Tensor
    t: Tensor
    gradient: str
    forward: _Settings
    backward: _Settings
    backward_norm: str | Callable | None
    params: list[Tensor]
    module: nn.Module | None
    max_checkpoints: int | None = None

    def rhs(self, t: Tensor, y: Tensor) -> Tensor:
        out = self.func(t, self.state.unflatten(y))
        return self.state.flat(out, "func")

    def segment_rhs(self, a: float, b: float, clamp_a: bool, clamp_b: bool) -> Callable:
        """func on ``[a, b]`` seeing times strictly inside it at the clamped ends
        (torchdiffeq's ``perturb``: the one-sided limits at a jump or grid point)."""
        if not (clamp_a or clamp_b):
            return self.rhs

        def rhs(t: Tensor, y: Tensor) -> Tensor:
            inside = t
            if clamp_a:
                start = torch.nextafter(t.new_tensor(a), t.new_tensor(b))
                inside = torch.maximum(inside, start) if b > a else torch.minimum(inside, start)
            if clamp_b:
                end = torch.nextafter(t.new_tensor(b), t.new_tensor(a))
                inside = torch.minimum(inside, end) if b > a else torch.maximum(inside, end)
            return self.rhs(t + (inside - t).detach(), y)  # the value moves, not the gradient
        return rhs

    def problem(self, times: Tensor, rhs: Callable, until_event=None) -> _Problem:
        values = _output_times(times)
        forward = self.forward
        step = None
        if forward.fixed:  # one step between consecutive times: they are the grid
            step = max(abs(b - a) for a, b in zip(values, values[1:])) if len(values) > 1 else 1.0
        options = SolveOptions(
            solver=METHODS[forward.method], gradient=self.gradient, rtol=forward.rtol,
            atol=forward.atol, step_size=step, interpolate=not forward.fixed,
            max_steps=forward.max_steps, max_checkpoints=self.max_checkpoints,
            **{k: forward.options[k] for k in ("safety", "ifactor", "dfactor")
               if k in forward.options})
        return _Problem(
            func=rhs, times=values, options=options, sinks=StatsSinks(None), t=times,
            extra_params=self.params, state=self.state, forward_settings=forward,
            backward_settings=self.backward, backward_norm=self.backward_norm,
            buffers_of=self.module, until_event=until_event, shape=self.y0.shape)

    def solve_segment(self, times: Tensor, y0: Tensor, clamp_a: bool, clamp_b: bool) -> Tensor:
        values = times.detach().tolist()
        problem = self.problem(times, self.segment_rhs(values[0], values[-1], clamp_a, clamp_b))
        try:
            return solve_problem(problem, y0, self.gradient)
        except UnseenTensorError as error:
            raise UnseenTensorError(
                f"{error}. With aca.torchdiffeq: pass every tensor func uses that requires grad "
                "in adjoint_params= (odeint_adjoint) or params= (odeint_aca), or set "
                "requires_grad=False on those that should get no gradient") from None

    def solve(self, times: Tensor, y0: Tensor, breaks: list[tuple[float, bool]],
              clamp_ends: bool = False) -> Tensor:
        """The state at every time in ``times``, solving piece by piece between the
        breakpoints (``(time, clamp)``, strictly inside, in the direction of ``times``)."""
        if not breaks:
            return self.solve_segment(times, y0, clamp_ends, clamp_ends)
        direction = 1.0 if times[-1] > times[0] else -1.0
        values = times.detach().tolist()
        outputs, y, start, clamp_a, k = [y0], y0, times[:1], clamp_ends, 1
        for point, clamp in breaks:
            inner = []
            while k < len(values) and (point - values[k]) * direction > 0:
                inner.append(k)
                k += 1
            on_point = k < len(values) and values[k] == point
            end = times[k:k + 1] if on_point else times.new_tensor([point])
            ys = self.solve_segment(torch.cat([start, times[inner], end]), y, clamp_a, clamp)
            outputs.extend(ys[1:-1].unbind())
            y, start, clamp_a = ys[-1], end, clamp
            if on_point:
                outputs.append(y)
                k += 1
        if k < len(values):
            ys = self.solve_segment(torch.cat([start, times[k:]]), y, clamp_a, clamp_ends)
            outputs.extend(ys[1:].unbind())
        return torch.stack(outputs)


def _fixed_grid(call: _Call, options: dict) -> Tensor:
    t = call.t
    constructor = options.get("grid_constructor")
    if options.get("step_size") is not None:
        step = options["step_size"]
        span = (t[-1] - t[0]).item()
        count = math.ceil(abs(span) / step + 1)
        inner = t[0] + math.copysign(step, span) * torch.arange(1, count - 1, dtype=t.dtype)
        inner = inner[(t[-1] - inner) * math.copysign(1.0, span) > 0]
        return torch.cat([t[:1], inner, t[-1:]])
    if constructor is None:
        return t
    grid = constructor(call.rhs, call.y0, t)
    if not isinstance(grid, Tensor) or grid.dim() != 1 or len(grid) < 2 or not (
            grid[0] == t[0] and grid[-1] == t[-1]):
        raise InvalidOptionError("grid_constructor(func, y0, t) must return a 1-D tensor from "
                                 f"t[0] to t[-1]; got {grid!r}")
    return grid.to(t)


def _interpolate(call: _Call, grid: Tensor, ys: Tensor, interp: str) -> Tensor:
    """The outputs at ``call.t`` from the states at the grid (torchdiffeq's fixed-grid
    output: linear, or cubic Hermite with func at both ends of the grid step)."""
    t = call.t
    if len(grid) == len(t) and bool((grid == t).all()):
        return ys
    direction = 1.0 if grid[-1] > grid[0] else -1.0
    grid_values, out, i = grid.detach().tolist(), [ys[0]], 0
    for j, time in enumerate(t.detach().tolist()[1:], start=1):
        while (grid_values[i + 1] - time) * direction < 0:
            i += 1
        t0, t1, y0, y1 = grid[i], grid[i + 1], ys[i], ys[i + 1]
        if time == grid_values[i + 1]:
            out.append(y1)
            continue
        s = (t[j] - t0) / (t1 - t0)
        if interp == "linear":
            out.append(y0 + s * (y1 - y0))
            continue
        dt = t1 - t0
        f0, f1 = call.rhs(t0.to(y0), y0), call.rhs(t1.to(y1), y1)
        out.append((1 + 2 * s) * (1 - s) ** 2 * y0 + s * (1 - s) ** 2 * dt * f0
                   + s**2 * (3 - 2 * s) * y1 + s**2 * (s - 1) * dt * f1)
    return torch.stack(out)


def _breakpoints(call: _Call, options: dict) -> list[tuple[float, bool]]:
    """jump_t (func evaluated on either side, not at it) and step_t, inside the span."""
    t0, t1 = call.t[0].item(), call.t[-1].item()
    points: dict[float, bool] = {}
    for name, clamp in (("step_t", False), ("jump_t", True)):
        values = options.get(name)
        if values is None:
            continue
        values = torch.as_tensor(values).reshape(-1).tolist()
        for value in values:
            if (value - t0) * (t1 - value) > 0:
                if value in points:
                    raise InvalidOptionError(f"step_t and jump_t share the time {value}")
                points[value] = clamp
    return sorted(points.items(), key=lambda item: item[0] * (1 if t1 > t0 else -1))


def _solve_outputs(call: _Call, options: dict) -> Tensor:
    if call.forward.fixed:
        grid = _fixed_grid(call, options)
        perturb = bool(options.get("perturb", False))
        breaks = [(value, True) for value in grid.detach().tolist()[1:-1]] if perturb else []
        ys = call.solve(grid, call.y0, breaks, clamp_ends=perturb)
        return _interpolate(call, grid, ys, options.get("interp", "linear"))
    return call.solve(call.t, call.y0, _breakpoints(call, options))


# ----------------------------------------------------------------------------- events


def _combined_event(call: _Call, event_fn: Callable) -> Callable[[Tensor, Tensor], Tensor]:
    """torchdiffeq's terminal event: every event function made positive at the start,
    the event is when the smallest reaches zero."""
    state = call.state
    with torch.no_grad():
        signs = torch.sign(torch.as_tensor(event_fn(call.t[0], state.unflatten(call.y0))))

    def event(t: Tensor, y: Tensor) -> Tensor:
        return torch.min(torch.as_tensor(event_fn(t, state.unflatten(y))) * signs)
    return event


def _hermite(t0: float, y0: Tensor, f0: Tensor, t1: float, y1: Tensor, f1: Tensor,
             t: float) -> Tensor:
    h, s = t1 - t0, (t - t0) / (t1 - t0)
    return ((1 + 2 * s) * (1 - s) ** 2 * y0 + s * (1 - s) ** 2 * h * f0
            + s**2 * (3 - 2 * s) * y1 + s**2 * (s - 1) * h * f1)


def _event_time(call: _Call, event: Callable, options: dict) -> float:
    """Solve without a graph until the event changes sign; bisect on the cubic Hermite
    interpolant of the step where it did, to ``atol`` in time (torchdiffeq's tolerance)."""
    t0 = call.t[0].item()
    direction = 1.0 if call.t[-1].item() > t0 else -1.0
    if call.forward.fixed and options.get("step_size") is None:
        raise StepSizeRequiredError("event handling with a fixed-grid method needs "
                                    "options['step_size']")
    span = max(1.0, abs(call.t[-1].item() - t0))
    far = call.t.new_tensor([t0, t0 + direction * span * 2.0**40])

    def check(t: float, y: Tensor) -> bool:
        return bool(event(y.new_tensor(t), y) <= 0)

    with torch.no_grad():
        if check(t0, call.y0):
            return t0
        problem = call.problem(far, call.rhs, until_event=check)
        if call.forward.fixed:
            problem.step_size = options["step_size"]
        try:
            problem.solve(call.y0)
        except _EventFound as found:
            a, b = found.t, found.t + found.h
            ya, yb = found.y, found.y_next
            fa, fb = call.rhs(ya.new_tensor(a), ya), call.rhs(yb.new_tensor(b), yb)
            tol = max(call.forward.atol, 4 * math.ulp(max(abs(a), abs(b))))
            for _ in range(max(0, min(60, math.ceil(math.log2(abs(b - a) / tol))))):
                mid = 0.5 * (a + b)
                if check(mid, _hermite(found.t, ya, fa, found.t + found.h, yb, fb, mid)):
                    b = mid
                else:
                    a = mid
            return _newton(call, event, found, 0.5 * (a + b), tol)
    raise AssertionError("unreachable: the event solve ends at an event or raises")


def _newton(call: _Call, event: Callable, found: _EventFound, guess: float, tol: float) -> float:
    """Refine the interpolant's root with Newton's method on ``event(t, y(t))``, ``y(t)``
    one step of the method from the start of the event's step (as accurate as the
    solve; the interpolant is only third order)."""
    start, end = sorted((found.t, found.t + found.h))
    t = guess
    for _ in range(8):
        with torch.enable_grad():
            time = found.y.new_tensor(t, requires_grad=True)
            y = rk_step(_tensor_time(call.rhs), found.t, found.y, t - found.t,
                        call.forward.tableau).y
            y = y.detach().requires_grad_()
            g = event(time, y)
            g_t, g_y = torch.autograd.grad(g, (time, y), allow_unused=True)
        slope = (0.0 if g_t is None else g_t.item()) + (
            0.0 if g_y is None else (g_y * call.rhs(time.detach(), y.detach())).sum().item())
        if slope == 0.0 or not math.isfinite(slope):
            return t
        step = g.item() / slope
        t = min(max(t - step, start), end)
        if abs(step) <= tol:
            break
    return t


def _with_event(call: _Call, event_fn: Callable, options: dict) -> tuple[Tensor, Tensor]:
    """(event time, [y0, y(event time)]), both differentiable: the event time by the
    implicit function theorem on ``event(t_e, y(t_e)) = 0``, the state as ``y(t_e)``."""
    if len(call.t) != 2:
        raise InvalidOptionError(f"with event_fn, t must be [t0, t1] (t1 gives the direction), "
                                 f"got {len(call.t)} times")
    event = _combined_event(call, event_fn)
    t_event = _event_time(call, event, options)
    t = call.t
    times = torch.cat([t[:1], t.new_tensor([t_event])])
    if t_event == t[0].item():
        return t[0] + 0 * t[0], torch.stack([call.y0, call.y0])
    event_call = _Call(**{**call.__dict__, "t": times})
    y_event = _solve_outputs(event_call, {k: v for k, v in options.items()
                                          if k not in ("step_t", "jump_t")})[-1]
    with torch.enable_grad():
        te = y_event.new_tensor(t_event, requires_grad=True)
        y_leaf = y_event.detach().requires_grad_()
        f_event = call.rhs(te.detach(), y_leaf.detach())
        g = event(te, y_leaf)
        g_t, g_y = torch.autograd.grad(g, (te, y_leaf), allow_unused=True)
    slope = (0.0 if g_t is None else g_t) + (0.0 if g_y is None else (g_y * f_event).sum())
    g_graph = event(y_event.new_tensor(t_event), y_event)
    event_t = y_event.new_tensor(t_event)
    if g_graph.requires_grad:
        event_t = event_t - (g_graph - g_graph.detach()) / slope
    y_total = y_event + (event_t - event_t.detach()) * f_event.detach()
    return event_t.to(t.dtype), torch.stack([call.y0, y_total])


# ----------------------------------------------------------------------------- the API


def _params(func: Callable, params: Iterable[Tensor] | None, what: str) -> list[Tensor]:
    if params is None:
        return list(func.parameters()) if isinstance(func, nn.Module) else []
    if isinstance(params, Tensor):
        raise InvalidOptionError(f"{what} must be an iterable of tensors, got a tensor")
    params = list(params)
    if not all(isinstance(p, Tensor) for p in params):
        raise InvalidOptionError(f"{what} must be tensors, got "
                                 f"{[type(p).__name__ for p in params]}")
    return [p for p in params if p.requires_grad]


def _odeint(func, y0, t, rtol, atol, method, options, event_fn, gradient, *,
            extra: tuple[str, ...] = (), adjoint: dict | None = None,
            params: list[Tensor] | None = None):
    method = _method(method)
    options = _check_options(method, options, extra, "options")
    state, flat_y0 = _State.flatten(y0)
    if not isinstance(t, Tensor):
        t = torch.as_tensor(t, dtype=flat_y0.dtype if flat_y0.is_floating_point() else None)
    _output_times(t)  # 1-D, finite, strictly monotone: a clear error otherwise
    rtol, atol = _tolerance("rtol", rtol), _tolerance("atol", atol)
    forward = _Settings(method, rtol, atol, options, _state_norm(state, options.get("norm")),
                        _callbacks(func, not SOLVERS[METHODS[method]].adaptive, ""))
    adjoint = adjoint or {}
    backward_method = _method(adjoint.get("method", method), "adjoint_method")
    backward_options = _check_options(backward_method, adjoint.get("options", {}), (),
                                      "adjoint_options")
    backward_norm = backward_options.pop("norm", None)
    backward = _Settings(
        backward_method, _tolerance("adjoint_rtol", adjoint.get("rtol", rtol)),
        _tolerance("adjoint_atol", adjoint.get("atol", atol)), backward_options,
        callbacks=_callbacks(func, not SOLVERS[METHODS[backward_method]].adaptive, "_adjoint")
        if gradient == "adjoint" else {})
    call = _Call(func=func, state=state, y0=flat_y0, t=t, gradient=gradient, forward=forward,
                 backward=backward, backward_norm=backward_norm, params=params or [],
                 module=func if isinstance(func, nn.Module) else None,
                 max_checkpoints=options.pop("max_checkpoints", None))
    if event_fn is not None:
        event_t, ys = _with_event(call, event_fn, options)
        return event_t, state.unflatten(ys, (len(ys),))
    ys = _solve_outputs(call, options)
    return state.unflatten(ys, (len(t),))


def odeint(func: Callable, y0: Tensor | tuple[Tensor, ...], t: Tensor, *, rtol: float = 1e-7,
           atol: float = 1e-9, method: str | None = None, options: dict | None = None,
           event_fn: Callable | None = None):
    """torchdiffeq's ``odeint``: solve ``dy/dt = func(t, y)``, ``y(t[0]) = y0``, and
    back-propagate through the solver's operations (aca's ``naive``). Returns the
    solution at ``t`` (a tuple for a tuple ``y0``), or ``(event_t, solution)`` with
    ``event_fn``."""
    return _odeint(func, y0, t, rtol, atol, method, options, event_fn, "naive")


def odeint_aca(func: Callable, y0: Tensor | tuple[Tensor, ...], t: Tensor, *, rtol: float = 1e-7,
               atol: float = 1e-9, method: str | None = None, options: dict | None = None,
               event_fn: Callable | None = None, params: Iterable[Tensor] | None = None):
    """``odeint`` with the adaptive checkpoint adjoint: gradients of the same accepted
    steps as the forward solve, memory of the checkpoints plus one step
    (``options={"max_checkpoints": K}`` bounds it). Gradients reach func's parameters
    (an ``nn.Module``) or ``params``."""
    return _odeint(func, y0, t, rtol, atol, method, options, event_fn, "aca",
                   extra=_ACA_OPTIONS, params=_params(func, params, "params"))


def odeint_adjoint(func: Callable, y0: Tensor | tuple[Tensor, ...], t: Tensor, *,
                   rtol: float = 1e-7, atol: float = 1e-9, method: str | None = None,
                   options: dict | None = None, event_fn: Callable | None = None,
                   adjoint_rtol: float | None = None, adjoint_atol: float | None = None,
                   adjoint_method: str | None = None, adjoint_options: dict | None = None,
                   adjoint_params: Iterable[Tensor] | None = None):
    """torchdiffeq's ``odeint_adjoint``: the continuous adjoint, solved backwards with
    ``adjoint_method``/``adjoint_rtol``/``adjoint_atol``/``adjoint_options`` (by
    default the forward ones; ``adjoint_options={"norm": "seminorm"}`` leaves the
    parameter gradients out of the error norm). Gradients reach ``adjoint_params``
    (default: func's parameters; func must then be an ``nn.Module``)."""
    if adjoint_params is None and not isinstance(func, nn.Module):
        raise InvalidOptionError(
            "func must be an nn.Module for odeint_adjoint to find its parameters; otherwise "
            "pass them as adjoint_params=(...) (adjoint_params=() if there are none)")
    method = _method(method)
    adjoint_method = method if adjoint_method is None else adjoint_method
    if adjoint_method != method and options is not None and adjoint_options is None:
        raise InvalidOptionError("adjoint_method differs from method and options are given: "
                                 "pass adjoint_options too (they cannot be inferred)")
    if adjoint_options is None:
        adjoint_options = {k: v for k, v in (options or {}).items() if k != "norm"}
    for name in ("grid_constructor", "interp", "perturb", "step_t", "jump_t"):
        mine, theirs = (adjoint_options or {}).get(name), (options or {}).get(name)
        if mine is not theirs and not (mine is not None and theirs is not None and torch.equal(
                torch.as_tensor(mine), torch.as_tensor(theirs))):
            raise InvalidOptionError(
                f"adjoint_options['{name}'] differs from options['{name}']: the reverse solve "
                "follows the forward's grid and breakpoints here; leave it out or pass the same")
    adjoint = {"method": adjoint_method, "options": adjoint_options}
    if adjoint_rtol is not None:
        adjoint["rtol"] = adjoint_rtol
    if adjoint_atol is not None:
        adjoint["atol"] = adjoint_atol
    return _odeint(func, y0, t, rtol, atol, method, options, event_fn, "adjoint",
                   adjoint=adjoint, params=_params(func, adjoint_params, "adjoint_params"))


def odeint_event(func: Callable, y0: Tensor | tuple[Tensor, ...], t0: Tensor, *,
                 event_fn: Callable, reverse_time: bool = False,
                 odeint_interface: Callable = odeint, **kwargs):
    """torchdiffeq's ``odeint_event``: solve from ``t0`` (forwards, or backwards with
    ``reverse_time``) until ``event_fn(t, y)`` crosses zero; returns ``(event_t,
    solution)``, the event time differentiable (it is in every entry point here)."""
    t0 = torch.as_tensor(t0).reshape(-1)
    t = torch.cat([t0, t0.detach() + (-1.0 if reverse_time else 1.0)])
    return odeint_interface(func, y0, t, event_fn=event_fn, **kwargs)
