"""torchdiffeq's API on aca's core, for code written against torchdiffeq:
``import aca.torchdiffeq as torchdiffeq``. Translation only: arguments become one
``aca`` solve (tuple states flattened, func wrapped once, options as controller
wrappers, events as a stop status), as torchdiffeq's own ``_check_inputs`` does.

``odeint`` back-propagates through the solver (``aca.Naive``, with torchdiffeq's step
sizes: constants after the first), ``odeint_adjoint`` solves the continuous adjoint
(``aca.Adjoint``), ``odeint_aca`` checkpoints the accepted steps (``aca.ACA``, memory
bounded by ``options={"max_checkpoints": K}``). Signatures, defaults (``rtol=1e-7,
atol=1e-9, method="dopri5"``), tuple states, ``options``, ``adjoint_*`` arguments,
terminal events and func's step callbacks follow torchdiffeq 0.2. Where aca is
stricter it says so with an ``ODEError``: an unknown method or option is refused
(torchdiffeq warns and goes on); implicit and Adams methods are not available;
``method="scipy_solver"`` (scipy's ``solve_ivp``, ``options={"solver": "LSODA"}``)
gives gradients through ``odeint_adjoint`` only (its reverse solve scipy's too; ``odeint``
refuses inputs that require grad instead of returning none); a func using tensors
that require grad outside ``adjoint_params`` (or func's parameters) is refused instead
of giving them no gradient.

Methods: torchdiffeq's ``rk4`` is Kutta's 3/8 rule (aca's ``rk4_38``); its
``adaptive_heun`` and ``fehlberg2`` reuse their last stage, evaluated at the embedded
lower-order solution, as the next first stage; here they are the textbook pairs, so
their steps differ.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import replace

import torch
from torch import Tensor, nn

from aca.errors import (
    InvalidOptionError,
    ODEError,
    StepSizeRequiredError,
    UnknownSolverError,
    UnseenTensorError,
)
from aca.gradients import ACA, Adjoint, GradientMethod, Naive, Problem
from aca.odeint import _output_times, solve_problem, time_dtype
from aca.options import SolveOptions
from aca.solvers import SOLVERS, Status, rk_step, rms_norm
from aca.solvers.scipy_loop import SCIPY_METHODS, scipy_loop
from aca.solvers.wrappers import Callbacks, StepBounds, StepTo

__all__ = ["odeint", "odeint_aca", "odeint_adjoint", "odeint_event", "METHODS"]

#: torchdiffeq method name -> aca solver name
METHODS: dict[str, str] = {
    "euler": "euler", "midpoint": "midpoint", "heun2": "heun2", "heun3": "heun3", "rk4": "rk4_38",
    "adaptive_heun": "heun_euler", "fehlberg2": "fehlberg2", "bosh3": "bosh3",
    "dopri5": "dopri5", "tsit5": "tsit5", "dopri8": "dopri8",
}
#: scipy's solve_ivp in place of aca's loop (the tableau of ``METHODS`` is then unused)
SCIPY = "scipy_solver"
_NOT_EXPLICIT_RK = ("explicit_adams", "implicit_adams", "fixed_adams")
_FIXED = ("step_size", "grid_constructor", "interp", "perturb", "norm", "max_num_steps")
_ADAPTIVE = ("first_step", "min_step", "max_step", "step_t", "jump_t", "norm", "max_num_steps",
             "safety", "ifactor", "dfactor")
_CALLBACKS = ("callback_step", "callback_accept_step", "callback_reject_step")


class _Tuple:
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


def _method(method: str | None, what: str = "method") -> str:
    method = "dopri5" if method is None else method
    if method not in METHODS and method != SCIPY:
        why = " (aca solves with explicit Runge-Kutta methods only)" * (method in _NOT_EXPLICIT_RK)
        raise UnknownSolverError(f"{what} {method!r} is not supported by aca.torchdiffeq{why}; "
                                 f"choose one of: {', '.join(METHODS)}, {SCIPY}")
    return method


def _adaptive(method: str) -> bool:
    return method == SCIPY or SOLVERS[METHODS[method]].adaptive


def _number(name: str, value: object, allow_inf: bool = False) -> float:
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, (tuple, list)):
        raise InvalidOptionError(f"{name} must be one number (per-part tolerances of a tuple "
                                 f"state are not supported by aca.torchdiffeq), got {value!r}")
    if (not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value)
            or value < 0 or (math.isinf(value) and not allow_inf)):
        raise InvalidOptionError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


def _options(method: str, options: dict | None, extra: tuple[str, ...], what: str) -> dict:
    options = dict(options or {})
    valid = (("solver", "min_step", "max_step") if method == SCIPY else
             _ADAPTIVE if _adaptive(method) else _FIXED) + extra
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise InvalidOptionError(f"unknown {what} {unknown} for method {method!r}; valid: "
                                 f"{', '.join(valid)}")
    for name in ("first_step", "min_step", "max_step", "safety", "ifactor", "dfactor"):
        if name in options:
            options[name] = _number(f"{what}['{name}']", options[name], name == "max_step")
    if options.get("step_size") is not None:
        options["step_size"] = _number(f"{what}['step_size']", options["step_size"])
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


def _wrapped(method: str, options: dict, callbacks: dict[str, Callable],
             view: Callable) -> Callable:
    """torchdiffeq's options and func's callbacks as wrappers of aca's controller."""
    fixed = not _adaptive(method)
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


def _callbacks(func: Callable, suffix: str) -> dict[str, Callable]:
    return {name: getattr(func, name + suffix) for name in _CALLBACKS
            if callable(getattr(func, name + suffix, None))}


class _Call:
    """One call of odeint/odeint_adjoint/odeint_aca, normalised: func on the flat
    state, the forward options, the gradient method."""

    def __init__(self, func: Callable, y0: Tensor | tuple[Tensor, ...], t: Tensor, rtol: float,
                 atol: float, method: str | None, options: dict | None,
                 gradient: GradientMethod, params: list[Tensor], extra: tuple[str, ...] = ()):
        self.method = _method(method)
        self.options = _options(self.method, options, extra, "options")
        self.state = _Tuple(y0)
        self.y0 = self.state.y0
        if not isinstance(t, Tensor):
            t = torch.as_tensor(t, dtype=self.y0.dtype if self.y0.is_floating_point() else None)
        _output_times(t)  # 1-D, finite, strictly monotone: a clear error otherwise
        self.func, self.t, self.gradient, self.params = func, t, gradient, params
        self.rtol, self.atol = _number("rtol", rtol), _number("atol", atol)
        self.fixed = not _adaptive(self.method)
        norm = self.options.get("norm")
        self.norm = self.state.norm if norm is None else (
            lambda y: torch.as_tensor(norm(self.state.unflat(y))))
        self.wrap = _wrapped(self.method, self.options, _callbacks(func, ""), self.state.unflat)

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
            wrap=lambda c: self.wrap(c if first is None else _first(c, first)))

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
            rhs = _clamped(self.rhs, start.item(), point, clamp_a, clamp)
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


def _first(controller, first_step: float):
    """The adaptive controller starting with ``first_step`` (torchdiffeq's option)."""
    return replace(controller, first_step=first_step)


def _clamped(rhs: Callable, a: float, b: float, clamp_a: bool, clamp_b: bool) -> Callable:
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


def _outputs(call: _Call, y0: Tensor) -> Tensor:
    """The states at ``call.t``: on an adaptive solve's steps, or torchdiffeq's fixed grid
    (``t``, ``step_size`` or ``grid_constructor``) and its interpolation to ``t``."""
    t, options = call.t, call.options
    if not call.fixed:
        points = [(float(p), clamp) for name, clamp in (("step_t", None), ("jump_t", True))
                  for p in torch.as_tensor(options.get(name, [])).reshape(-1).tolist()
                  if clamp and (p - t[0].item()) * (t[-1].item() - p) > 0]
        return call.solve(t, y0, sorted(points, key=lambda p: p[0] * math.copysign(
            1.0, t[-1].item() - t[0].item())))
    adjoint = isinstance(call.gradient, Adjoint) and t.requires_grad
    base = t.detach() if adjoint else t  # the adjoint's time gradients are its own
    grid = _grid(call, base)
    perturb = bool(options.get("perturb", False))
    if adjoint:  # dL/dt_0 = -<a(t_0), f(t_0, y_0)>
        y0 = y0 - (t[0] - t[0].detach()) * call.rhs(t[0].detach(), y0.detach())
    ys = call.solve(grid, y0, [(p, True) for p in grid.detach().tolist()[1:-1]] * perturb,
                    clamp_ends=perturb)
    ys = _interpolate(call, base, grid, ys, options.get("interp", "linear"))
    ys = torch.cat([call.y0.unsqueeze(0) if adjoint else ys[:1], ys[1:]])
    if adjoint:  # dL/dt_k = <dL/dy_k, f(t_k, y_k)>
        slopes = torch.stack([call.rhs(tk, yk) for tk, yk in zip(t[1:].detach(), ys[1:].detach())])
        ys = torch.cat([ys[:1], ys[1:] + (t[1:] - t[1:].detach()).view(-1, 1) * slopes])
    return ys


def _grid(call: _Call, t: Tensor) -> Tensor:
    step, constructor = call.options.get("step_size"), call.options.get("grid_constructor")
    if step is not None:
        span = (t[-1] - t[0]).item()
        inner = t[0] + math.copysign(step, span) * torch.arange(
            1, math.ceil(abs(span) / step + 1) - 1, dtype=t.dtype)
        return torch.cat([t[:1], inner[(t[-1] - inner) * math.copysign(1.0, span) > 0], t[-1:]])
    if constructor is None:
        return t
    grid = constructor(call.rhs, call.y0, t)
    if not isinstance(grid, Tensor) or grid.dim() != 1 or len(grid) < 2 or not (
            grid[0] == t[0] and grid[-1] == t[-1]):
        raise InvalidOptionError("grid_constructor(func, y0, t) must return a 1-D tensor from "
                                 f"t[0] to t[-1]; got {grid!r}")
    return grid.to(t)


def _interpolate(call: _Call, t: Tensor, grid: Tensor, ys: Tensor, interp: str) -> Tensor:
    """The states at ``t`` from those at the grid: linear, or cubic Hermite with func at
    both ends of the grid step (torchdiffeq's fixed-grid output)."""
    if len(grid) == len(t) and bool((grid == t).all()):
        return ys
    direction = 1.0 if grid[-1] > grid[0] else -1.0
    points, out, i = grid.detach().tolist(), [ys[0]], 0
    for j, time in enumerate(t.detach().tolist()[1:], start=1):
        while (points[i + 1] - time) * direction < 0:
            i += 1
        t0, t1, y0, y1 = grid[i], grid[i + 1], ys[i], ys[i + 1]
        s = (t[j] - t0) / (t1 - t0)
        if time == points[i + 1]:
            out.append(y1)
        elif interp == "linear":
            out.append(y0 + s * (y1 - y0))
        else:
            f0, f1, dt = call.rhs(t0.to(y0), y0), call.rhs(t1.to(y1), y1), t1 - t0
            out.append((1 + 2 * s) * (1 - s) ** 2 * y0 + s * (1 - s) ** 2 * dt * f0
                       + s**2 * (3 - 2 * s) * y1 + s**2 * (s - 1) * dt * f1)
    return torch.stack(out)


def _event(call: _Call, event_fn: Callable) -> tuple[Tensor, Tensor]:
    """torchdiffeq's terminal event: every event function made positive at the start, the
    event is when the smallest reaches zero. The solve stops at the accepted step where it
    does (a stop status); the root inside that step is found on steps of the method from
    its start (regula falsi); event time and state are differentiable by the implicit
    function theorem on ``event(t_e, y(t_e)) = 0``."""
    t, state = call.t, call.state
    if len(t) != 2:
        raise InvalidOptionError(f"with event_fn, t must be [t0, t1] (t1 gives the direction), "
                                 f"got {len(t)} times")
    if call.fixed and call.options.get("step_size") is None:
        raise StepSizeRequiredError("event handling with a fixed-grid method needs "
                                    "options['step_size']")
    with torch.no_grad():
        signs = torch.sign(torch.as_tensor(event_fn(t[0], state.unflat(call.y0))))

    def event(time: Tensor, y: Tensor) -> Tensor:
        return (torch.as_tensor(event_fn(time, state.unflat(y))) * signs).min()
    t0 = t[0].item()
    if event(t[0], call.y0) <= 0:
        return t[0] + 0 * t[0], torch.stack([call.y0, call.y0])
    far = t0 + math.copysign(max(1.0, abs(t[-1].item() - t0)) * 2.0**20, t[-1].item() - t0)
    with torch.no_grad():
        problem = call.problem(t.new_tensor([t0, far]), call.rhs)
        solution = problem.solve(call.y0, event=lambda s, y: event(s.reshape(()).to(y), y))
        if int(solution.status[0]) != Status.EVENT:
            raise InvalidOptionError(f"event_fn never crossed zero up to t={far:g}")
        start, h, y_start, _ = solution.last
        t_event = _root(problem, event, start, y_start, h.item(), call.atol)
    event_call = _Call.__new__(_Call)
    event_call.__dict__.update(call.__dict__, t=torch.cat([t[:1], t.new_tensor([t_event])]),
                               options={k: v for k, v in call.options.items() if k != "jump_t"})
    y_event = _outputs(event_call, call.y0)[-1]
    te = y_event.new_tensor(t_event)
    with torch.enable_grad():
        y_leaf = y_event.detach().requires_grad_()
        time = te.clone().requires_grad_()
        g = event(time, y_leaf)
        f_event = call.rhs(te, y_event.detach())
        if g.requires_grad:
            g_t, g_y = torch.autograd.grad(g, (time, y_leaf), allow_unused=True)
            slope = (0.0 if g_t is None else g_t) + (0.0 if g_y is None else (g_y * f_event).sum())
            g = event(te, y_event)
            te = te - (g - g.detach()) / slope
    y_total = y_event + (te - te.detach()) * f_event
    return te.to(t.dtype), torch.stack([call.y0, y_total])


def _root(problem: Problem, event: Callable, start: Tensor, y: Tensor, h: float,
          tol: float) -> float:
    """The time in the step from ``(start, y)`` of size ``h`` where ``event`` crosses zero:
    regula falsi (Illinois) on steps of the method from the step's start."""
    def phi(tau: float) -> float:
        step = torch.full_like(start, tau)
        return float(event(start.reshape(()) + tau, rk_step(problem.rhs, start, y, step,
                                                            problem.tableau).y))
    a, b, fa, fb = 0.0, h, phi(0.0), phi(h)
    tol = max(tol, 4 * math.ulp(abs(start.item()) + abs(h)))
    for _ in range(100):
        if abs(b - a) <= tol or fb == 0:
            break
        c = b - fb * (b - a) / (fb - fa)
        fc = phi(c)
        if fc * fb <= 0:
            a, fa = b, fb
        else:
            fa /= 2
        b, fb = c, fc
    return start.item() + b


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


def _odeint(call: _Call, event_fn: Callable | None):
    if event_fn is not None:
        event_t, ys = _event(call, event_fn)
        return event_t, call.state.unflat(ys, (len(ys),))
    return call.state.unflat(_outputs(call, call.y0), (len(call.t),))


def odeint(func: Callable, y0: Tensor | tuple[Tensor, ...], t: Tensor, *, rtol: float = 1e-7,
           atol: float = 1e-9, method: str | None = None, options: dict | None = None,
           event_fn: Callable | None = None):
    """torchdiffeq's ``odeint``: the solution at ``t`` (a tuple for a tuple ``y0``), or
    ``(event_t, solution)`` with ``event_fn``; back-propagates through the solver."""
    call = _Call(func, y0, t, rtol, atol, method, options, Naive(frozen_steps=True),
                 _params(func, None, "params"))
    if call.method == SCIPY and torch.is_grad_enabled() and (
            call.y0.requires_grad or call.t.requires_grad or call.params):
        raise ODEError("odeint does not differentiate through scipy_solver (torchdiffeq "
                       "returns no gradient): use odeint_adjoint, or solve under "
                       "torch.no_grad() or with inputs that do not require grad")
    return _odeint(call, event_fn)


def odeint_aca(func: Callable, y0: Tensor | tuple[Tensor, ...], t: Tensor, *, rtol: float = 1e-7,
               atol: float = 1e-9, method: str | None = None, options: dict | None = None,
               event_fn: Callable | None = None, params: Iterable[Tensor] | None = None):
    """``odeint`` with the adaptive checkpoint adjoint (``options={"max_checkpoints": K}``
    bounds its memory); gradients reach func's parameters (an ``nn.Module``) or ``params``."""
    if method == SCIPY:
        raise InvalidOptionError("odeint_aca checkpoints the solver's steps, which scipy_solver "
                                 "does not show: choose one of aca's methods, or odeint_adjoint")
    budget = (options or {}).get("max_checkpoints")
    call = _Call(func, y0, t, rtol, atol, method, options, ACA(budget),
                 _params(func, params, "params"), extra=("max_checkpoints",))
    call.options.pop("max_checkpoints", None)
    return _odeint(call, event_fn)


def odeint_adjoint(func: Callable, y0: Tensor | tuple[Tensor, ...], t: Tensor, *,
                   rtol: float = 1e-7, atol: float = 1e-9, method: str | None = None,
                   options: dict | None = None, event_fn: Callable | None = None,
                   adjoint_rtol: float | None = None, adjoint_atol: float | None = None,
                   adjoint_method: str | None = None, adjoint_options: dict | None = None,
                   adjoint_params: Iterable[Tensor] | None = None):
    """torchdiffeq's ``odeint_adjoint``: the continuous adjoint, solved backwards with
    ``adjoint_method``/``adjoint_rtol``/``adjoint_atol``/``adjoint_options`` (by default
    the forward ones; ``adjoint_options={"norm": "seminorm"}`` leaves the parameter
    gradients out of its error norm). Gradients reach ``adjoint_params`` (default:
    func's parameters; func must then be an ``nn.Module``)."""
    if adjoint_params is None and not isinstance(func, nn.Module):
        raise InvalidOptionError(
            "func must be an nn.Module for odeint_adjoint to find its parameters; otherwise "
            "pass them as adjoint_params=(...) (adjoint_params=() if there are none)")
    method = _method(method)
    adjoint_method = _method(adjoint_method or method, "adjoint_method")
    if (method == SCIPY) != (adjoint_method == SCIPY):
        raise InvalidOptionError(f"method {method!r} with adjoint_method {adjoint_method!r}: "
                                 f"with {SCIPY} both solves are scipy's; pass it for both")
    if adjoint_method != method and options is not None and adjoint_options is None:
        raise InvalidOptionError("adjoint_method differs from method and options are given: "
                                 "pass adjoint_options too (they cannot be inferred)")
    if adjoint_options is None:
        adjoint_options = {k: v for k, v in (options or {}).items() if k != "norm"}
    for name in ("grid_constructor", "interp", "perturb", "step_t", "jump_t"):
        mine, theirs = adjoint_options.get(name), (options or {}).get(name)
        if mine is not theirs and not (mine is not None and theirs is not None and torch.equal(
                torch.as_tensor(mine), torch.as_tensor(theirs))):
            raise InvalidOptionError(
                f"adjoint_options['{name}'] differs from options['{name}']: the reverse solve "
                "follows the forward's grid and breakpoints here; leave it out or pass the same")
    reverse = _options(adjoint_method, adjoint_options, (), "adjoint_options")
    params = _params(func, adjoint_params, "adjoint_params")
    call = _Call(func, y0, t, rtol, atol, method, options, Naive(), params)
    fixed = not _adaptive(adjoint_method)
    call.gradient = Adjoint(
        rtol=call.rtol if adjoint_rtol is None else _number("adjoint_rtol", adjoint_rtol),
        atol=call.atol if adjoint_atol is None else _number("adjoint_atol", adjoint_atol),
        solver=METHODS.get(adjoint_method, "dopri5"), seminorm=reverse.get("norm") == "seminorm",
        step_size=reverse.get("step_size", None if call.fixed else math.inf) if fixed else None,
        norm=_adjoint_norm(call, reverse.get("norm")),
        wrap=_wrapped(adjoint_method, reverse, _callbacks(func, "_adjoint"),
                      lambda z: _augmented(call, z)))
    return _odeint(call, event_fn)


def _augmented(call: _Call, z: Tensor) -> tuple[Tensor, ...]:
    """The reverse solve's state as torchdiffeq shows it: ``(t, *y, *adjoint, *grads)``
    (t a zero: aca accumulates time gradients outside the solve)."""
    n = call.y0.numel()
    y, adjoint, *grads = z.split([n, n, *(p.numel() for p in call.params)])
    grads = [g.view_as(p) for g, p in zip(grads, call.params)]
    return (z.new_zeros(()), *call.state.parts(y), *call.state.parts(adjoint), *grads)


def _adjoint_norm(call: _Call, choice: str | Callable | None) -> Callable:
    """torchdiffeq's reverse error norm: the largest of the state norms of y and the
    adjoint and the RMS of each parameter's gradient (the seminorm: without them), or
    the user's, given ``(t, *y, *adjoint, *grads)``."""
    if callable(choice):
        return lambda y, adjoint, grads: choice(_augmented(call, torch.cat(
            [y.reshape(-1), adjoint.reshape(-1), *(g.reshape(-1) for g in grads)])))

    def norm(y: Tensor, adjoint: Tensor, grads: list[Tensor]) -> Tensor:
        norms = [call.norm(y.to(call.y0.dtype)), call.norm(adjoint.to(call.y0.dtype))]
        norms += [] if choice == "seminorm" else [rms_norm(g, 1)[0] for g in grads if g.numel()]
        return torch.stack([torch.as_tensor(v).to(y.dtype) for v in norms]).max()
    return norm


def odeint_event(func: Callable, y0: Tensor | tuple[Tensor, ...], t0: Tensor, *,
                 event_fn: Callable, reverse_time: bool = False,
                 odeint_interface: Callable = odeint, **kwargs):
    """torchdiffeq's ``odeint_event``: solve from ``t0`` (backwards with ``reverse_time``)
    until ``event_fn(t, y)`` crosses zero; returns ``(event_t, solution)``."""
    t0 = torch.as_tensor(t0).reshape(-1)
    t = torch.cat([t0, t0.detach() + (-1.0 if reverse_time else 1.0)])
    return odeint_interface(func, y0, t, event_fn=event_fn, **kwargs)
