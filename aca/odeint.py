"""``odeint``: the one entry point that composes a solver, a step-size policy and
a gradient method (torchdiffeq's call signature)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor
from torch.autograd import forward_ad

from aca.errors import InvalidOptionError, NonFiniteStateError, NonMonotoneTimeError
from aca.gradients import GradientMethod, Problem, method_for
from aca.gradients.watch import Watched
from aca.options import SolveOptions, is_number
from aca.solvers.step import Func
from aca.stats import SolveStats, StatsSinks


def _output_times(t: Tensor | Sequence[float]) -> list[float]:
    if isinstance(t, Tensor):
        times = t.detach().reshape(-1).tolist()
    else:
        items = list(t) if isinstance(t, Iterable) and not isinstance(t, str) else [None]
        if not all(is_number(x) for x in items):
            raise NonMonotoneTimeError(
                f"t must be a 1-D tensor or sequence of numbers, got {t!r}")
        times = [float(x) for x in items]
    if isinstance(t, Tensor) and (t.dim() != 1 or t.is_complex()) or not times:
        raise NonMonotoneTimeError(f"t must be a non-empty 1-D sequence of times, got shape "
                                   f"{tuple(t.shape) if isinstance(t, Tensor) else len(times)}")
    if not all(math.isfinite(x) for x in times):
        raise NonMonotoneTimeError(f"t must be finite, got {times}")
    steps = [b - a for a, b in zip(times, times[1:])]
    if not (all(s > 0 for s in steps) or all(s < 0 for s in steps)):
        raise NonMonotoneTimeError(
            f"t must be strictly increasing or strictly decreasing, got {times[:8]}"
            + (" ..." if len(times) > 8 else ""))
    return times


def time_dtype(y0: Tensor) -> torch.dtype:
    """Times and step sizes are kept in float64 (or the state's dtype if wider), whatever
    the state's: in float32 a time near 1e4 would resolve only 1e-3."""
    return torch.promote_types(torch.float64, y0.dtype)


def _sample_times(t: Tensor | Sequence[float], y0: Tensor) -> Tensor:
    """``per_sample=True``: the output times of every sample, ``(B, T)`` in the time dtype
    (detached), from a shared ``(T,)`` or a per-sample ``(B, T)`` ``t``."""
    if y0.dim() == 0:
        raise InvalidOptionError("per_sample=True needs y0 with a batch dimension (B, ...), "
                                 "got a 0-dim y0")
    if not isinstance(t, Tensor):
        _output_times(t)
        t = torch.tensor([float(x) for x in t], dtype=time_dtype(y0), device=y0.device)
    if t.dim() == 1:
        _output_times(t)
        return t.detach().to(y0.device, time_dtype(y0)).expand(len(y0), -1)
    if t.dim() != 2 or len(t) != len(y0):
        raise NonMonotoneTimeError(
            f"per_sample=True takes t of shape (T,) or (B, T) = (B={len(y0)}, T), got shape "
            f"{tuple(t.shape)}")
    steps = t.detach().diff(dim=1)
    if not (bool(torch.isfinite(t).all()) and t.shape[1] > 0 and not t.is_complex()
            and (bool((steps > 0).all()) or bool((steps < 0).all()))):
        raise NonMonotoneTimeError(
            "per_sample=True: every row of t must be finite and strictly increasing (or every "
            f"row strictly decreasing), got {t.detach()[:2].tolist()} ...")
    return t.detach().to(y0.device, time_dtype(y0))


def _params(params: object) -> list[Tensor]:
    if params is None:
        return []
    if isinstance(params, Tensor) or not isinstance(params, Iterable):
        raise InvalidOptionError(f"params must be a list of tensors, got {params!r}")
    params = list(params)
    if not all(isinstance(p, Tensor) for p in params):
        raise InvalidOptionError("params must be a list of tensors, got "
                                 f"{[type(p).__name__ for p in params]}")
    return params


def odeint(
    func: Func,
    y0: Tensor,
    t: Tensor | Sequence[float],
    *,
    solver: str = SolveOptions.solver,
    gradient: str | GradientMethod = SolveOptions.gradient,
    rtol: float = SolveOptions.rtol,
    atol: float = SolveOptions.atol,
    step_size: float | None = SolveOptions.step_size,
    interpolate: bool = SolveOptions.interpolate,
    max_steps: int = SolveOptions.max_steps,
    max_checkpoints: int | None = SolveOptions.max_checkpoints,
    safety: float = SolveOptions.safety,
    ifactor: float = SolveOptions.ifactor,
    dfactor: float = SolveOptions.dfactor,
    pi_beta: float = SolveOptions.pi_beta,
    per_sample: bool = SolveOptions.per_sample,
    adjoint_seminorm: bool = SolveOptions.adjoint_seminorm,
    newton_tol: float = SolveOptions.newton_tol,
    newton_iterations: int = SolveOptions.newton_iterations,
    params: Iterable[Tensor] | None = None,
    stats: SolveStats | None = None,
) -> Tensor:
    """Solve ``dy/dt = func(t, y)`` from ``y(t[0]) = y0``; return ``y`` at every time
    in ``t``, shape ``(len(t), *y0.shape)``.

    ``solver``: a name in ``aca.SOLVERS``; fixed-step methods need ``step_size``,
    and any method given ``step_size`` runs on that grid (from ``t[0]``).
    ``interpolate`` (default): output times are read off the continuous extension of
    the accepted step that holds them and never shorten a step; only ``t[-1]`` is
    landed on (a fixed grid runs from ``t[0]``, its last step shortened to ``t[-1]``).
    ``False``: a step lands on every output time (a fixed grid restarts at each).
    Each tableau carries its extension (``dense``, of order ``dense_order``).
    ``gradient``: ``"aca"``, ``"adjoint"`` or ``"naive"`` (``aca.GRADIENTS``), or a method
    object that owns its options: ``aca.ACA(max_checkpoints=K)``,
    ``aca.Adjoint(rtol=..., atol=..., seminorm=True)``, ``aca.Naive()``.
    ``func`` receives ``t`` as a 0-dim tensor (``y0``'s dtype and device) and must
    return a tensor of ``y``'s shape, dtype and device.
    Gradients reach ``y0``, ``t`` (when a tensor requiring grad) and, with ``aca``
    and ``adjoint``, the parameters of ``func`` if it is an ``nn.Module`` and the
    tensors in ``params``; a func using other tensors that require grad (a lambda
    or bound method over a module, a closure) is refused with ``UnseenTensorError``
    (``naive`` reaches every tensor by autograd).
    ``max_checkpoints`` bounds ACA's stored states, forward and backward
    (recomputing the rest). Random numbers ``func`` draws (dropout) are replayed
    by ``aca`` and refused by ``adjoint``.
    ``safety``, ``ifactor``, ``dfactor``, ``pi_beta`` tune the step-size controller.
    ``per_sample=True``: the first dimension of ``y0`` is the batch, and each sample has
    its own step sizes, error norm and accept/reject decisions (adaptive solvers), so a
    sample's solution and gradient do not depend on the rest of its batch (the
    per-sample adjoint's error norm leaves the parameter gradients out). ``t`` is
    ``(T,)`` (shared) or ``(B, T)`` (each sample's own times, all in one direction) and
    ``func`` receives ``t`` as a ``(B,)`` tensor, each sample's time. ``func`` must
    treat the samples independently: a func that mixes them (batch norm, attention
    across the batch) makes a sample's result depend on the others' steps.
    ``adjoint_seminorm``: the adjoint's reverse solve leaves the parameter gradients out
    of its error norm (fewer backward steps, Kidger et al. 2021).
    Implicit solvers (``implicit_euler``, ``kvaerno3``, ``kvaerno5``: stiff problems)
    solve each stage by Newton's method with a dense Jacobian of ``func`` per group
    (``newton_tol``, ``newton_iterations``); ``aca`` differentiates each converged step
    by the implicit function theorem, ``naive`` through the Newton iterations, and
    ``adjoint`` refuses them.
    Every option but ``params`` and ``stats`` is a field of ``aca.SolveOptions``
    (defaults and checks). ``stats`` (a ``SolveStats``) receives this solve's counts,
    backward included.
    """
    options = SolveOptions(
        solver=solver, gradient=gradient, rtol=rtol, atol=atol, step_size=step_size,
        interpolate=interpolate, max_steps=max_steps, max_checkpoints=max_checkpoints,
        safety=safety, ifactor=ifactor, dfactor=dfactor, pi_beta=pi_beta,
        per_sample=per_sample, adjoint_seminorm=adjoint_seminorm, newton_tol=newton_tol,
        newton_iterations=newton_iterations)
    method = method_for(options)
    if stats is not None and not isinstance(stats, SolveStats):
        raise InvalidOptionError(f"stats must be an aca.SolveStats or None, got {stats!r}")
    extra_params = _params(params)
    _refuse_vmap([y0, t, *extra_params])
    if not isinstance(y0, Tensor) or not torch.is_floating_point(y0):
        raise InvalidOptionError(f"y0 must be a floating-point tensor, got {type(y0).__name__}"
                                 + (f" of dtype {y0.dtype}" if isinstance(y0, Tensor) else ""))
    if y0.numel() == 0:
        raise InvalidOptionError(f"y0 is empty (shape {tuple(y0.shape)}): there is nothing to "
                                 "solve")
    if per_sample:
        times = _sample_times(t, y0)
    else:
        times = torch.tensor([_output_times(t)], dtype=time_dtype(y0), device=y0.device)
    if not bool(torch.isfinite(y0).all()):
        raise NonFiniteStateError("y0 contains nan or inf")
    if times.shape[1] == 1:
        return y0.unsqueeze(0)
    problem = Problem(func=func, times=times, options=options, method=method,
                      sinks=StatsSinks(stats), t=t if isinstance(t, Tensor) else None,
                      extra_params=extra_params)
    return solve_problem(problem, y0)


def _refuse_vmap(tensors: list[Tensor]) -> None:
    if any(torch._C._functorch.is_batchedtensor(x) for x in tensors
           if isinstance(x, Tensor)):
        raise InvalidOptionError(
            "torch.func.vmap over aca.odeint is not supported (its step-size control reads "
            "values on the host); give y0 a batch dimension instead (per_sample=True for "
            "each sample's own steps)")


def _refuse_transforms(problem: Problem, y0: Tensor) -> None:
    """torch.func's transforms and forward-mode AD would go through the solver's own
    autograd Functions (whose tangents and vmap rules they do not know): refused, naming
    the transform, instead of a wrong tangent or torch's internal error."""
    tensors = [y0, *problem.params, *([problem.t] if problem.t is not None else [])]
    functorch = torch._C._functorch
    _refuse_vmap(tensors)
    if problem.method.name == "naive":
        return
    if any(functorch.is_functorch_wrapped_tensor(x) for x in tensors):
        raise InvalidOptionError(
            f"torch.func transforms (grad, jacrev, jvp, ...) are not supported with "
            f"gradient='{problem.method.name}'; use torch.autograd.grad, or gradient='naive'")
    if any(forward_ad.unpack_dual(x).tangent is not None for x in tensors):
        raise InvalidOptionError(
            f"forward-mode AD (torch.autograd.forward_ad, jvp) is not supported with "
            f"gradient='{problem.method.name}': its tangent would not be the method's; use "
            "gradient='naive' (forward mode through the solver's operations)")


def solve_problem(problem: Problem, y0: Tensor) -> Tensor:
    """Solve with the gradient method, or without a graph when there is nothing to
    differentiate (evaluation): no checkpoints, no graph, but with grad enabled a
    func over tensors aca cannot see is refused rather than run."""
    _refuse_transforms(problem, y0)
    grad_enabled = torch.is_grad_enabled()
    if grad_enabled and (problem.method.name == "naive" or y0.requires_grad or problem.params
                         or problem.t_requires_grad):
        return problem.method.solve(problem, y0)
    func = Watched(problem, y0, unseen=grad_enabled, random=None)
    with torch.no_grad():
        solution = problem.solve(y0, func=func)
    problem.report_forward(solution)
    return solution.ys
