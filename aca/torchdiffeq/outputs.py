"""The outputs of a call: on an adaptive solve's steps, or on torchdiffeq's fixed grid and
its interpolation to ``t``; and a terminal event's time and state."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from aca.errors import (
    InvalidOptionError,
    StepSizeRequiredError,
)
from aca.gradients import Adjoint, Problem
from aca.solvers import Status, rk_step
from aca.torchdiffeq.call import Call


def outputs(call: Call, y0: Tensor) -> Tensor:
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
    grid = fixed_grid(call, base)
    perturb = bool(options.get("perturb", False))
    if adjoint:  # dL/dt_0 = -<a(t_0), f(t_0, y_0)>
        y0 = y0 - (t[0] - t[0].detach()) * call.rhs(t[0].detach(), y0.detach())
    ys = call.solve(grid, y0, [(p, True) for p in grid.detach().tolist()[1:-1]] * perturb,
                    clamp_ends=perturb)
    ys = interpolate_grid(call, base, grid, ys, options.get("interp", "linear"))
    ys = torch.cat([call.y0.unsqueeze(0) if adjoint else ys[:1], ys[1:]])
    if adjoint:  # dL/dt_k = <dL/dy_k, f(t_k, y_k)>
        slopes = torch.stack([call.rhs(tk, yk) for tk, yk in zip(t[1:].detach(), ys[1:].detach())])
        ys = torch.cat([ys[:1], ys[1:] + (t[1:] - t[1:].detach()).view(-1, 1) * slopes])
    return ys


def fixed_grid(call: Call, t: Tensor) -> Tensor:
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


def interpolate_grid(call: Call, t: Tensor, grid: Tensor, ys: Tensor, interp: str) -> Tensor:
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


def event_outputs(call: Call, event_fn: Callable) -> tuple[Tensor, Tensor]:
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
        t_event = event_root(problem, event, start, y_start, h.item(), call.atol)
    event_call = Call.__new__(Call)
    event_call.__dict__.update(call.__dict__, t=torch.cat([t[:1], t.new_tensor([t_event])]),
                               options={k: v for k, v in call.options.items() if k != "jump_t"})
    y_event = outputs(event_call, call.y0)[-1]
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


def event_root(problem: Problem, event: Callable, start: Tensor, y: Tensor, h: float,
          tol: float) -> float:
    """The time in the step from ``(start, y)`` of size ``h`` where ``event`` crosses zero:
    regula falsi (Illinois) on steps of the method from the step's start."""
    def phi(tau: float) -> float:
        step = torch.full_like(start, tau)
        return float(event(start.reshape(()) + tau, rk_step(problem.rhs, start, y, step,
                                                            problem.tableau,
                                                            newton=problem.newton).y))
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


