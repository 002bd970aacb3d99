"""One call of torchdiffeq's API, normalised for aca's core: the method and its options
checked, a tuple state flattened, func's callbacks and torchdiffeq's step options as
controller wrappers, and the solve piece by piece between breakpoints."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor, nn

from aca.errors import (
    InvalidOptionError,
    StepSizeRequiredError,
    UnknownSolverError,
    UnseenTensorError,
)
from aca.gradients import GradientMethod, Problem
from aca.odeint import _output_times, solve_problem, time_dtype
from aca.options import SolveOptions
from aca.solvers import SOLVERS, rms_norm
from aca.solvers.scipy_loop import SCIPY_METHODS, scipy_loop
from aca.solvers.wrappers import Callbacks, StepBounds, StepTo

#: torchdiffeq method name -> aca solver name
METHODS: dict[str, str] = {
    "euler": "euler", "midpoint": "midpoint", "heun2": "heun2", "heun3": "heun3", "rk4": "rk4_38",
    "adaptive_heun": "heun_euler", "fehlberg2": "fehlberg2", "bosh3": "bosh3",
    "dopri5": "dopri5", "tsit5": "tsit5", "dopri8": "dopri8",
    # aca's own (torchdiffeq has no implicit Runge-Kutta methods)
    "implicit_euler": "implicit_euler", "kvaerno3": "kvaerno3", "kvaerno5": "kvaerno5",
}
#: scipy's solve_ivp in place of aca's loop (the tableau of ``METHODS`` is then unused)
SCIPY = "scipy_solver"
_NOT_EXPLICIT_RK = ("explicit_adams", "implicit_adams", "fixed_adams")
_FIXED = ("step_size", "grid_constructor", "interp", "perturb", "norm", "max_num_steps")
_ADAPTIVE = ("first_step", "min_step", "max_step", "step_t", "jump_t", "norm", "max_num_steps",
             "safety", "ifactor", "dfactor")
_CALLBACKS = ("callback_step", "callback_accept_step", "callback_reject_step")


class TupleState:
    """A tensor or a tuple of tensors as the one flat tensor aca solves."""

    def __init__(self, y0: Tensor | tuple[Tensor, ...]) -> None:
        if not isinstance(y0, Tensor) and not (isinstance(y0, tuple) and y0 and all(
                isinstance(y, Tensor) for y in y0)):
            raise InvalidOptionError(f"y0 must be a tensor or a non-empty tuple of tensors, got "
                                     f"{type(y0).__name__}")
        self.shapes = None if isinstance(y0, Tensor) else [y.shape for y in y0]
        self.y0 = self.flat(y0, "y0")

    def flat(self, value: Tensor | tuple[Tensor, ...], what: str) -> Tensor:
        if self.shapes is None:
            return value
        if not isinstance(value, (tuple, list)) or len(value) != len(self.shapes):
            raise InvalidOptionError(f"{what} must return a tuple of {len(self.shapes)} tensors "
                                     f"(one per part of y0), got {type(value).__name__}")
        return torch.cat([v.reshape(-1) for v in value])

    def unflat(self, y: Tensor, lead: tuple[int, ...] = ()) -> Tensor | tuple[Tensor, ...]:
        if self.shapes is None:
            return y
        sizes = [shape.numel() for shape in self.shapes]
        return tuple(part.reshape((*lead, *shape))
                     for part, shape in zip(y.split(sizes, dim=-1), self.shapes))

    def parts(self, y: Tensor) -> list[Tensor]:
        return [y] if self.shapes is None else list(self.unflat(y))

    def norm(self, y: Tensor) -> Tensor:
        """torchdiffeq's default: RMS, the largest RMS of the parts for a tuple."""
        return torch.stack([rms_norm(part, 1)[0] for part in self.parts(y)]).max()


def check_method(method: str | None, what: str = "method") -> str:
    method = "dopri5" if method is None else method
    if method not in METHODS and method != SCIPY:
        why = " (aca solves with Runge-Kutta methods only)" * (method in _NOT_EXPLICIT_RK)
        raise UnknownSolverError(f"{what} {method!r} is not supported by aca.torchdiffeq{why}; "
                                 f"choose one of: {', '.join(METHODS)}, {SCIPY}")
    return method


def is_adaptive(method: str) -> bool:
    return method == SCIPY or SOLVERS[METHODS[method]].adaptive


def check_number(name: str, value: object, allow_inf: bool = False) -> float:
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, (tuple, list)):
        raise InvalidOptionError(f"{name} must be one number (per-part tolerances of a tuple "
                                 f"state are not supported by aca.torchdiffeq), got {value!r}")
    if (not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value)
            or value < 0 or (math.isinf(value) and not allow_inf)):
        raise InvalidOptionError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


def check_options(method: str, options: dict | None, extra: tuple[str, ...], what: str) -> dict:
    options = dict(options or {})
    valid = (("solver", "min_step", "max_step") if method == SCIPY else
             _ADAPTIVE if is_adaptive(method) else _FIXED) + extra
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise InvalidOptionError(f"unknown {what} {unknown} for method {method!r}; valid: "
                                 f"{', '.join(valid)}")
    for name in ("first_step", "min_step", "max_step", "safety", "ifactor", "dfactor"):
        if name in options:
            options[name] = check_number(f"{what}['{name}']", options[name], name == "max_step")
    if options.get("step_size") is not None:
        options["step_size"] = check_number(f"{what}['step_size']", options["step_size"])
        if options["step_size"] == 0:
            raise StepSizeRequiredError(f"{what}['step_size'] must be positive, got 0")
        if options.get("grid_constructor") is not None:
            raise InvalidOptionError("step_size and grid_constructor are mutually exclusive")
    if options.get("solver", "LSODA") not in SCIPY_METHODS:
        raise InvalidOptionError(f"{what}['solver'] must be one of scipy's solve_ivp methods "
                                 f"{', '.join(SCIPY_METHODS)}, got {options['solver']!r}")
    if options.get("interp", "linear") not in ("linear", "cubic"):
        raise InvalidOptionError(f"{what}['interp'] must be 'linear' or 'cubic', got "
                                 f"{options['interp']!r}")
    steps = options.get("max_num_steps", 2**31 - 1)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise InvalidOptionError(f"{what}['max_num_steps'] must be a positive integer, got "
                                 f"{steps!r}")
    norm = options.get("norm")
    if norm is not None and not callable(norm) and not (norm == "seminorm"
                                                        and what == "adjoint_options"):
        raise InvalidOptionError(f"{what}['norm'] must be a callable" + " or 'seminorm'" * (
            what == "adjoint_options") + f", got {norm!r}")
    return options


def wrapped(method: str, options: dict, callbacks: dict[str, Callable],
             view: Callable) -> Callable:
    """torchdiffeq's options and func's callbacks as wrappers of aca's controller."""
    fixed = not is_adaptive(method)
    if fixed and set(callbacks) - {"callback_step"}:
        warnings.warn(f"fixed-grid solvers call only callback_step; func's "
                      f"{sorted(set(callbacks) - {'callback_step'})} will not be called",
                      stacklevel=5)
        callbacks = {"callback_step": callbacks["callback_step"]} if "callback_step" in \
            callbacks else {}

    def call(name: str) -> Callable | None:
        callback = callbacks.get(name)
        return None if callback is None else lambda t, y, h: callback(t, view(y), h)

    def wrap(controller):
        if not fixed:
            controller = StepBounds(controller, options.get("min_step", 0.0),
                                    options.get("max_step", math.inf))
            if options.get("step_t") is not None:
                controller = StepTo(controller, torch.as_tensor(
                    options["step_t"], dtype=torch.float64).reshape(-1))
        return Callbacks(controller, call("callback_step"), call("callback_accept_step"),
                         call("callback_reject_step")) if callbacks else controller
    return wrap


def func_callbacks(func: Callable, suffix: str) -> dict[str, Callable]:
    return {name: getattr(func, name + suffix) for name in _CALLBACKS
            if callable(getattr(func, name + suffix, None))}


class Call:
    """One call of odeint/odeint_adjoint/odeint_aca, normalised: func on the flat
    state, the forward options, the gradient method."""

    def __init__(self, func: Callable, y0: Tensor | tuple[Tensor, ...], t: Tensor, rtol: float,
                 atol: float, method: str | None, options: dict | None,
                 gradient: GradientMethod, params: list[Tensor], extra: tuple[str, ...] = ()):
        self.method = check_method(method)
        self.options = check_options(self.method, options, extra, "options")
        self.state = TupleState(y0)
        self.y0 = self.state.y0
        if not isinstance(t, Tensor):
            t = torch.as_tensor(t, dtype=self.y0.dtype if self.y0.is_floating_point() else None)
        _output_times(t)  # 1-D, finite, strictly monotone: a clear error otherwise
        self.func, self.t, self.gradient, self.params = func, t, gradient, params
        self.rtol, self.atol = check_number("rtol", rtol), check_number("atol", atol)
        self.fixed = not is_adaptive(self.method)
        norm = self.options.get("norm")
        self.norm = self.state.norm if norm is None else (
            lambda y: torch.as_tensor(norm(self.state.unflat(y))))
        self.wrap = wrapped(self.method, self.options, func_callbacks(func, ""), self.state.unflat)

    def rhs(self, t: Tensor, y: Tensor) -> Tensor:
        return self.state.flat(self.func(t, self.state.unflat(y)), "func")

    def problem(self, times: Tensor, rhs: Callable) -> Problem:
        values = _output_times(times)
        step = max(abs(b - a) for a, b in zip(values, values[1:])) if self.fixed else None
        options = SolveOptions(
            solver=METHODS.get(self.method, "dopri5"), gradient=self.gradient.name, rtol=self.rtol,
            atol=self.atol, step_size=self.options.get("step_size", step) if self.fixed else None,
            interpolate=not self.fixed, max_steps=self.options.get("max_num_steps", 2**31 - 1),
            **{k: self.options[k] for k in ("safety", "ifactor", "dfactor") if k in self.options})
        first = self.options.get("first_step")
        return Problem(
            func=rhs, options=options, method=self.gradient, t=times, extra_params=self.params,
            times=torch.tensor([values], dtype=time_dtype(self.y0), device=self.y0.device),
            module=self.func if isinstance(self.func, nn.Module) else None,
            norm=lambda x, groups: self.norm(x).reshape(1), loop=scipy_loop(
                self.options.get("solver", "LSODA"), self.options.get("min_step", 0.0),
                self.options.get("max_step", math.inf)) if self.method == SCIPY else None,
            wrap=lambda c: self.wrap(c if first is None else with_first_step(c, first)))

    def solve(self, times: Tensor, y0: Tensor, breaks: list[tuple[float, bool]] = (),
              clamp_ends: bool = False) -> Tensor:
        """The state at every time in ``times``, solved piece by piece between the
        breakpoints (``(time, clamped)``, inside the span: func sees the one-sided limits
        at a clamped one, torchdiffeq's ``jump_t`` and ``perturb``)."""
        values = times.detach().tolist()
        direction = 1.0 if values[-1] > values[0] else -1.0
        outputs, y, start, clamp_a, k = [y0], y0, times[:1], clamp_ends, 1
        for point, clamp in [*breaks, (values[-1], clamp_ends)]:
            inner = []
            while k < len(values) and (point - values[k]) * direction > 0:
                inner.append(k)
                k += 1
            on_point = k < len(values) and values[k] == point
            end = times[k:k + 1] if on_point else times.new_tensor([point])
            piece = torch.cat([start, times[inner], end])
            rhs = clamped(self.rhs, start.item(), point, clamp_a, clamp)
            try:
                ys = solve_problem(self.problem(piece, rhs), y)
            except UnseenTensorError as error:
                raise UnseenTensorError(
                    f"{error}. With aca.torchdiffeq: pass every tensor func uses that requires "
                    "grad in adjoint_params= (odeint_adjoint) or params= (odeint_aca), or set "
                    "requires_grad=False on those that should get no gradient") from None
            outputs.extend(ys[1:-1].unbind())
            y, start, clamp_a = ys[-1], end, clamp
            if on_point:
                outputs.append(y)
                k += 1
        return torch.stack(outputs)


def with_first_step(controller, first_step: float):
    """The adaptive controller starting with ``first_step`` (torchdiffeq's option)."""
    return replace(controller, first_step=first_step)


def clamped(rhs: Callable, a: float, b: float, clamp_a: bool, clamp_b: bool) -> Callable:
    """func on ``[a, b]`` seeing the clamped ends moved one ulp inside (the one-sided
    limits at a jump or grid point); the time's derivative is kept."""
    if not (clamp_a or clamp_b):
        return rhs

    def clamped(t: Tensor, y: Tensor) -> Tensor:
        start, end = t.new_tensor(a), t.new_tensor(b)
        inside = t
        if clamp_a:
            start = torch.nextafter(start, end)
            inside = torch.maximum(inside, start) if b > a else torch.minimum(inside, start)
        if clamp_b:
            end = torch.nextafter(end, t.new_tensor(a))
            inside = torch.minimum(inside, end) if b > a else torch.maximum(inside, end)
        return rhs(t + (inside - t).detach(), y)  # the value moves, not the gradient
    return clamped


