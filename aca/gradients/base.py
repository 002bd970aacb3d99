"""What every gradient method receives: one solve problem over the shared core,
and the checks made on the first evaluation of ``func``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from aca.errors import FuncOutputError, NonFiniteStateError, RandomStateError, UnseenTensorError
from aca.gradients.replay import RandomLog, RandomStates
from aca.solvers import AdaptiveSteps, Checkpoints, ConstantSteps, Counts, integrate, rms_norm
from aca.solvers.control import Norm
from aca.solvers.step import Func, Scalar
from aca.solvers.tableau import ButcherTableau
from aca.stats import StatsSinks


@dataclass
class Problem:
    """A solve request: the function, output times, method and controller
    settings, and where statistics go. Gradient methods call ``solve``.

    ``t`` is the output times as the caller gave them when that is a tensor
    (gradients flow to it); ``extra_params`` the tensors passed as ``params=``."""

    func: Func
    times: list[float]
    tableau: ButcherTableau
    step_size: float | None
    max_steps: int
    rtol: float
    atol: float
    controller_options: dict = field(default_factory=dict)
    max_checkpoints: int | None = None
    sinks: StatsSinks = field(default_factory=lambda: StatsSinks(None))
    t: Tensor | None = None
    extra_params: list[Tensor] = field(default_factory=list)

    def __post_init__(self) -> None:
        ignores_time = getattr(self.func, "ignores_time", False)
        self.rhs = self.func if ignores_time else _tensor_time(self.func)
        module = self.func if isinstance(self.func, nn.Module) else nn.Module()
        #: the tensors gradients flow to besides y0 and t: func's parameters, params=
        self.params = list({id(p): p for p in [*module.parameters(), *self.extra_params]
                            if p.requires_grad}.values())
        self.buffers = list(module.buffers())

    @property
    def t_requires_grad(self) -> bool:
        return self.t is not None and self.t.requires_grad

    def controller(self, norm: Norm = rms_norm,
                   differentiable: bool = False) -> ConstantSteps | AdaptiveSteps:
        if self.step_size is not None:
            return ConstantSteps(self.step_size)
        return AdaptiveSteps(self.rtol, self.atol, self.tableau.order, norm=norm,
                             differentiable=differentiable, **self.controller_options)

    def solve(self, y0: Tensor, *, func: Func | None = None, times: list[float] | None = None,
              norm: Norm = rms_norm, differentiable: bool = False,
              checkpoints: Checkpoints | None = None) -> tuple[list[Tensor], Counts]:
        """Integrate ``func`` (default: the problem's) over ``times`` (default: the
        output times). ``differentiable`` (naive) puts step sizes and times in the
        graph: the output times themselves when ``t`` requires grad."""
        times = times or self.times
        time_args: list[Scalar] | None = None
        if differentiable and self.t_requires_grad:
            time_args = list(self.t.to(y0).unbind())
        elif differentiable and self.step_size is None:
            time_args = [y0.new_tensor(t) for t in times]
        controller = self.controller(norm, differentiable and self.step_size is None)
        return integrate(func or self.rhs, y0, times, self.tableau, controller, self.max_steps,
                         time_args=time_args, checkpoints=checkpoints)

    def report_forward(self, counts: Counts) -> None:
        self.sinks.add(nfe_forward=counts.nfe, accepted=counts.accepted, rejected=counts.rejected)

    def watched(self, y0: Tensor, *, unseen: bool, random: str | None) -> Watched:
        """``rhs`` for the forward solve, its first evaluation checked (see ``Watched``)."""
        return Watched(self, y0, unseen=unseen, random=random)


class Watched:
    """``func`` as the forward solve calls it. The first evaluation is checked:
    its output must have the state's shape, dtype and device and be finite; with
    ``unseen`` it is made with grad enabled, and any tensor requiring grad that it
    depends on besides the problem's ``params`` is refused (ACA and the adjoint
    could not reach it); with ``random``, whether it drew random numbers is
    noted: ``"replay"`` then logs the generators' state before every evaluation
    (ACA), ``"refuse"`` raises (the adjoint cannot replay them)."""

    def __init__(self, problem: Problem, y0: Tensor, *, unseen: bool, random: str | None) -> None:
        self.problem, self.unseen, self.random_policy = problem, unseen, random
        self.shape, self.dtype, self.device = y0.shape, y0.dtype, y0.device
        self.first = True
        self.generators = RandomStates.used_by([y0, *problem.params]) if random else None
        self.log: RandomLog | None = None

    def __call__(self, t: Scalar, y: Tensor) -> Tensor:
        if self.first:
            return self._first_evaluation(t, y)
        if self.log is not None:
            self.log.record()
        return self.problem.rhs(t, y)

    def _first_evaluation(self, t: Scalar, y: Tensor) -> Tensor:
        self.first = False
        before = self.generators.get() if self.generators else None
        if self.unseen:
            with torch.enable_grad():
                out = self.problem.rhs(t, y.detach())
            hidden = unseen_tensors(out, self.problem.params) if isinstance(out, Tensor) else []
            if hidden:
                shapes = ", ".join(str(tuple(h.shape)) for h in hidden[:4])
                raise UnseenTensorError(
                    f"func uses {len(hidden)} tensor(s) that require grad (shapes {shapes}) but "
                    "are not parameters of func as an nn.Module: gradients could not reach "
                    "them. Pass them as odeint(..., params=[...]) (for a lambda or bound "
                    "method of a module m: params=list(m.parameters())), or use "
                    "gradient='naive'")
            out = out.detach() if isinstance(out, Tensor) else out
        else:
            out = self.problem.rhs(t, y)
        if not (isinstance(out, Tensor) and out.shape == self.shape and out.dtype == self.dtype
                and out.device == self.device):
            got = (f"shape {tuple(out.shape)}, {out.dtype} on {out.device}"
                   if isinstance(out, Tensor) else type(out).__name__)
            raise FuncOutputError(
                f"func(t, y) must return dy/dt with the state's shape {tuple(self.shape)}, "
                f"dtype {self.dtype} and device {self.device}; got {got}")
        if not bool(torch.isfinite(out).all()):
            raise NonFiniteStateError(
                f"func(t, y) is non-finite (nan/inf) at its first evaluation (t={float(t):g})")
        if before is not None:
            self.start = before
            drawn = self.generators.moved(before)
            if drawn and self.random_policy == "refuse":
                raise unreplayable_random(adjoint=True)
            if drawn:
                self.log = RandomLog(drawn, {g: before[g] for g in drawn.generators})
        return out

    @property
    def replayed(self) -> RandomStates | None:
        """The generators func draws from, replayed in backward (None: it draws none)."""
        return self.log.states if self.log is not None else None

    def annotate(self, evaluations: int, first_stage_given: bool) -> object:
        """Per accepted step (``Checkpoints.annotate``): the random states to replay."""
        return self.log.take(evaluations, first_stage_given) if self.log is not None else None

    def unreplayed(self) -> RandomStates:
        """After the forward solve, the generators that are not replayed: they must not
        have moved since the first evaluation (func drew random numbers only later)."""
        if self.generators is None:
            return RandomStates([])
        others = self.generators.without(self.replayed or RandomStates([]))
        if others.moved(self.start):
            raise unreplayable_random(self.random_policy == "refuse")
        return others


def unreplayable_random(adjoint: bool) -> RandomStateError:
    """func drew random numbers the gradient cannot replay: any, for the adjoint;
    for ACA, ones not drawn at its first evaluation (or drawn only in backward)."""
    if adjoint:
        return RandomStateError(
            "func draws random numbers (dropout?): the adjoint's reverse solve cannot "
            "replay them, so its gradient would be wrong; use gradient='aca' or 'naive', "
            "or call model.eval()")
    return RandomStateError("func drew random numbers that aca could not replay (not at its first "
                    "evaluation, or only in backward); aca replays random numbers that func "
                    "draws at every evaluation (dropout): draw them there, call model.eval(), "
                    "or use gradient='naive'")


def unseen_tensors(output: Tensor, known: list[Tensor]) -> list[Tensor]:
    """The leaf tensors requiring grad that ``output`` depends on, other than through
    the ``known`` tensors (walks the autograd graph of one evaluation)."""
    if output.grad_fn is None:
        return []
    known_ids = {id(t) for t in known}
    stops = {t.grad_fn for t in known if t.grad_fn is not None}
    seen, stack, found = set(), [output.grad_fn], []
    while stack:
        node = stack.pop()
        if node is None or node in seen or node in stops:
            continue
        seen.add(node)
        leaf = getattr(node, "variable", None)  # AccumulateGrad: a leaf tensor
        if leaf is not None and id(leaf) not in known_ids:
            found.append(leaf)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return found


def _tensor_time(func: Func) -> Func:
    """Call ``func`` with ``t`` as a 0-dim tensor on ``y``'s dtype and device, as
    torchdiffeq does; the solver itself keeps times as Python floats."""
    def rhs(t: float | Tensor, y: Tensor) -> Tensor:
        if not isinstance(t, Tensor):
            t = torch.full((), t, dtype=y.dtype, device=y.device)
        return func(t, y)
    return rhs


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
