"""The forward solve's view of ``func``: its first evaluation is checked, and the
random numbers it draws are found (and logged for ACA to replay)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from aca.errors import FuncOutputError, NonFiniteStateError, RandomStateError, UnseenTensorError
from aca.gradients.replay import RandomLog, RandomStates

if TYPE_CHECKING:
    from aca.gradients.base import Problem


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
        self.start: dict = {}  # the generators' state before the first evaluation
        self.log: RandomLog | None = None

    def __call__(self, t: Tensor, y: Tensor) -> Tensor:
        if self.first:
            return self._first_evaluation(t, y)
        if self.log is not None:
            self.log.record()
        return self.problem.rhs(t, y)

    def _first_evaluation(self, t: Tensor, y: Tensor) -> Tensor:
        self.first = False
        before = self.generators.get() if self.generators else None
        version = y._version
        try:
            out = self._evaluate(t, y)
        except RuntimeError as error:  # torch's own, for a leaf that requires grad
            if "in-place operation" not in str(error):
                raise
            raise changed_in_place() from error
        if y._version != version:
            raise changed_in_place()
        if not (isinstance(out, Tensor) and out.shape == self.shape and out.dtype == self.dtype
                and out.device == self.device):
            got = (f"shape {tuple(out.shape)}, {out.dtype} on {out.device}"
                   if isinstance(out, Tensor) else type(out).__name__)
            raise FuncOutputError(
                f"func(t, y) must return dy/dt with the state's shape {tuple(self.shape)}, "
                f"dtype {self.dtype} and device {self.device}; got {got}")
        if not bool(torch.isfinite(out).all()):
            raise NonFiniteStateError(
                "func(t, y) is non-finite (nan/inf) at its first evaluation (t="
                f"{float(t) if not isinstance(t, Tensor) or t.numel() == 1 else 't_0'})")
        if before is not None:
            self.start = before
            drawn = self.generators.moved(before)
            if drawn and self.random_policy == "refuse":
                raise self.refused()
            if drawn:
                self.log = RandomLog(drawn, {g: before[g] for g in drawn.generators})
        return out

    def _evaluate(self, t: Tensor, y: Tensor) -> Tensor:
        """The first evaluation; with ``unseen``, made with grad enabled and checked for
        tensors that require grad outside the problem's parameters."""
        if not self.unseen:
            return self.problem.rhs(t, y)
        state = y.detach()
        with torch.enable_grad():
            out = self.problem.rhs(t, state)
        if isinstance(out, Tensor):
            refuse_unseen([out], self.problem.params, state)
        return out.detach() if isinstance(out, Tensor) else out

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
            raise self.refused()
        return others

    def refused(self) -> RandomStateError:
        """The error for random numbers this problem's gradient cannot replay."""
        if self.problem.tableau.implicit and self.problem.method.name == "aca":
            return RandomStateError(
                "func draws random numbers (dropout?) inside the implicit "
                f"{self.problem.tableau.name}: each Newton iteration would draw other ones, "
                "so the stage equations are not defined; call model.eval(), or use "
                "gradient='naive' or an explicit solver")
        return unreplayable_random(self.problem.method.name == "adjoint",
                                   self.problem.per_sample)


def changed_in_place() -> FuncOutputError:
    return FuncOutputError(
        "func(t, y) changed its input y in place (e.g. y.mul_(-1)): the solver's state must "
        "not change under it; return a new tensor instead (y * -1, torch.neg(y))")


def concurrent_random() -> RandomStateError:
    return RandomStateError(
        "func's random numbers (dropout) could not be replayed: the global generator moved "
        "between its draws, in the forward solve or in the rebuild (another thread drawing "
        "random numbers while aca solves or back-propagates?), so the rebuilt steps would use "
        "other masks than the forward's; give other threads a torch.Generator of their own, "
        "call model.eval(), or use gradient='naive'")


def unreplayable_random(adjoint: bool, per_sample: bool = False) -> RandomStateError:
    """func drew random numbers the gradient cannot replay: any, for the adjoint and
    per-sample ACA; for ACA, ones not drawn at its first evaluation (or drawn only in
    backward)."""
    if adjoint:
        return RandomStateError(
            "func draws random numbers (dropout?): the adjoint's reverse solve cannot "
            "replay them, so its gradient would be wrong; use gradient="
            + ("'naive'" if per_sample else "'aca' or 'naive'") + ", or call model.eval()")
    if per_sample:
        return RandomStateError(
            "func draws random numbers (dropout?): per-sample aca rebuilds the steps in other "
            "batches than the forward solve took them, so it cannot replay them and its "
            "gradient would be wrong; use gradient='naive', per_sample=False or model.eval()")
    return RandomStateError(
        "func drew random numbers that aca could not replay (not at its first evaluation, or "
        "only in backward); aca replays random numbers that func draws at every evaluation "
        "(dropout): draw them there, call model.eval(), or use gradient='naive'")


def refuse_unseen(outputs: list[Tensor], known: list[Tensor], state: Tensor) -> None:
    """Refuse outputs of func that depend on tensors requiring grad besides ``known`` (the
    parameters) and the ``state`` func was given: the methods could not reach them."""
    hidden = unseen_tensors(outputs, known, state)
    if hidden:
        shapes = ", ".join(str(tuple(h.shape)) for h in hidden[:4])
        raise UnseenTensorError(
            f"func uses {len(hidden)} tensor(s) that require grad (shapes {shapes}) but "
            "are not parameters of func as an nn.Module: gradients could not reach "
            "them. Pass them as odeint(..., params=[...]) (for a lambda or bound "
            "method of a module m: params=list(m.parameters())), or use "
            "gradient='naive'")


def unseen_tensors(outputs: list[Tensor], known: list[Tensor], state: Tensor) -> list[Tensor]:
    """The leaf tensors requiring grad that ``outputs`` depend on, other than through
    the ``known`` tensors and the ``state`` func was given (or a view of it that func set
    to require grad, as torchdiffeq's CNF example does): walks their graph once."""
    known_ids = {id(t) for t in known}
    seen = {None, *(t.grad_fn for t in known if t.grad_fn is not None)}
    stack, found = [output.grad_fn for output in outputs], []
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        inputs = node.next_functions
        if inputs:
            stack.extend(next_node for next_node, _ in inputs if next_node not in seen)
            continue
        leaf = getattr(node, "variable", None)  # AccumulateGrad (no inputs): a leaf tensor
        if (leaf is not None and id(leaf) not in known_ids and leaf is not state
                and leaf._base is not state):
            found.append(leaf)
    return found
