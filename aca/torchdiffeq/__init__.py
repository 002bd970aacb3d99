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
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from aca.errors import InvalidOptionError, ODEError
from aca.gradients import ACA, Adjoint, Naive
from aca.solvers import rms_norm
from aca.torchdiffeq.call import (
    METHODS,
    SCIPY,
    Call,
    check_method,
    check_number,
    check_options,
    func_callbacks,
    is_adaptive,
    wrapped,
)
from aca.torchdiffeq.outputs import event_outputs, outputs

__all__ = ["odeint", "odeint_aca", "odeint_adjoint", "odeint_event", "METHODS"]


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


def _odeint(call: Call, event_fn: Callable | None):
    if event_fn is not None:
        event_t, ys = event_outputs(call, event_fn)
        return event_t, call.state.unflat(ys, (len(ys),))
    return call.state.unflat(outputs(call, call.y0), (len(call.t),))


def odeint(func: Callable, y0: Tensor | tuple[Tensor, ...], t: Tensor, *, rtol: float = 1e-7,
           atol: float = 1e-9, method: str | None = None, options: dict | None = None,
           event_fn: Callable | None = None):
    """torchdiffeq's ``odeint``: the solution at ``t`` (a tuple for a tuple ``y0``), or
    ``(event_t, solution)`` with ``event_fn``; back-propagates through the solver."""
    call = Call(func, y0, t, rtol, atol, method, options, Naive(frozen_steps=True),
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
    call = Call(func, y0, t, rtol, atol, method, options, ACA(budget),
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
    method = check_method(method)
    adjoint_method = check_method(adjoint_method or method, "adjoint_method")
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
    reverse = check_options(adjoint_method, adjoint_options, (), "adjoint_options")
    params = _params(func, adjoint_params, "adjoint_params")
    call = Call(func, y0, t, rtol, atol, method, options, Naive(), params)
    fixed = not is_adaptive(adjoint_method)
    call.gradient = Adjoint(
        rtol=call.rtol if adjoint_rtol is None else check_number("adjoint_rtol", adjoint_rtol),
        atol=call.atol if adjoint_atol is None else check_number("adjoint_atol", adjoint_atol),
        solver=METHODS.get(adjoint_method, "dopri5"), seminorm=reverse.get("norm") == "seminorm",
        step_size=reverse.get("step_size", None if call.fixed else math.inf) if fixed else None,
        norm=_adjoint_norm(call, reverse.get("norm")),
        wrap=wrapped(adjoint_method, reverse, func_callbacks(func, "_adjoint"),
                      lambda z: _augmented(call, z)))
    return _odeint(call, event_fn)


def _augmented(call: Call, z: Tensor) -> tuple[Tensor, ...]:
    """The reverse solve's state as torchdiffeq shows it: ``(t, *y, *adjoint, *grads)``
    (t a zero: aca accumulates time gradients outside the solve)."""
    n = call.y0.numel()
    y, adjoint, *grads = z.split([n, n, *(p.numel() for p in call.params)])
    grads = [g.view_as(p) for g, p in zip(grads, call.params)]
    return (z.new_zeros(()), *call.state.parts(y), *call.state.parts(adjoint), *grads)


def _adjoint_norm(call: Call, choice: str | Callable | None) -> Callable:
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
