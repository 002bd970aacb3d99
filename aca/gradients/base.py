"""What every gradient method receives: one solve problem over the shared core."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from aca.solvers import (
    AdaptiveSteps,
    Checkpoints,
    ConstantSteps,
    Counts,
    PerSampleConstantSteps,
    PerSampleSteps,
    SampleCheckpoints,
    integrate,
    integrate_per_sample,
    rms_norm,
)
from aca.solvers.control import Norm, sample_rms_norm
from aca.solvers.step import Func, Scalar
from aca.stats import StatsSinks

if TYPE_CHECKING:
    from aca.options import SolveOptions


@dataclass
class Problem:
    """A solve request: the function, output times, the options (method, controller
    settings), and where statistics go. Gradient methods call ``solve``.

    ``t`` is the output times as the caller gave them when that is a tensor
    (gradients flow to it); ``extra_params`` the tensors passed as ``params=``."""

    func: Func
    times: list[float]
    options: SolveOptions
    sinks: StatsSinks = field(default_factory=lambda: StatsSinks(None))
    t: Tensor | None = None
    extra_params: list[Tensor] = field(default_factory=list)
    #: per_sample=True: every sample's output times, ``(B, T)``
    sample_times: Tensor | None = None

    def __post_init__(self) -> None:
        self.tableau, self.step_size = self.options.tableau, self.options.step_size
        self.max_checkpoints = self.options.max_checkpoints
        ignores_time = getattr(self.func, "ignores_time", False)
        self.per_sample = self.options.per_sample
        self.rhs = (_sample_time(self.func) if self.per_sample else
                    self.func if ignores_time else _tensor_time(self.func))
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
        options = self.options
        return AdaptiveSteps(options.rtol, options.atol, self.tableau.order, norm=norm,
                             differentiable=differentiable, **options.controller_settings)

    def solve(self, y0: Tensor, *, func: Func | None = None, times: list[float] | None = None,
              norm: Norm = rms_norm, differentiable: bool = False,
              checkpoints: Checkpoints | None = None) -> tuple[list[Tensor], Counts]:
        """Integrate ``func`` (default: the problem's) over ``times`` (default: the
        output times). ``differentiable`` (naive) puts step sizes and times in the
        graph: the output times themselves when ``t`` requires grad."""
        if self.per_sample:
            return self.solve_per_sample(y0, func=func, differentiable=differentiable,
                                         checkpoints=checkpoints)
        times = times or self.times
        time_args: list[Scalar] | None = None
        if differentiable and self.t_requires_grad:
            time_args = list(self.t.to(y0).unbind())
        elif differentiable and self.step_size is None:
            time_args = [y0.new_tensor(t) for t in times]
        controller = self.controller(norm, differentiable and self.step_size is None)
        return integrate(func or self.rhs, y0, times, self.tableau, controller,
                         self.options.max_steps, time_args=time_args, checkpoints=checkpoints,
                         interpolate=self.options.interpolate)

    def solve_per_sample(self, y0: Tensor, *, func: Func | None = None,
                         differentiable: bool = False,
                         checkpoints: SampleCheckpoints | None = None,
                         ) -> tuple[list[Tensor], Counts]:
        """``per_sample=True``: each sample its own steps (``integrate_per_sample``);
        ``differentiable`` puts the output times in the graph when ``t`` requires grad."""
        times = self.sample_times
        if differentiable and self.t_requires_grad:
            times = self.t.to(y0).expand_as(times)
        return integrate_per_sample(func or self.rhs, y0, times, self.tableau,
                                    self.sample_controller(), self.options.max_steps,
                                    checkpoints=checkpoints)

    def sample_controller(self, norm: Norm = sample_rms_norm
                          ) -> PerSampleSteps | PerSampleConstantSteps:
        """Each sample's own grid (``step_size``) or adaptive steps (under ``norm``)."""
        if self.step_size is not None:
            return PerSampleConstantSteps(self.step_size)
        options = self.options
        return PerSampleSteps(options.rtol, options.atol, self.tableau.order, norm=norm,
                              **options.controller_settings)

    def report_forward(self, counts: Counts) -> None:
        if counts.per_sample is None:
            self.sinks.add(nfe_forward=counts.nfe, accepted=counts.accepted,
                           rejected=counts.rejected)
            return
        accepted, rejected, nfe = counts.per_sample.tolist()
        self.sinks.add(nfe_forward=counts.nfe, accepted=counts.accepted,
                       rejected=counts.rejected, sample_nfe_forward=sum(nfe),
                       per_sample={"accepted": accepted, "rejected": rejected, "nfe": nfe})


def _tensor_time(func: Func) -> Func:
    """Call ``func`` with ``t`` as a 0-dim tensor on ``y``'s dtype and device, as
    torchdiffeq does; the solver itself keeps times as Python floats."""
    def rhs(t: float | Tensor, y: Tensor) -> Tensor:
        if not isinstance(t, Tensor):
            t = torch.full((), t, dtype=y.dtype, device=y.device)
        return func(t, y)
    return rhs


def _sample_time(func: Func) -> Func:
    """``per_sample=True``: call ``func`` with ``t`` as a ``(B,)`` tensor, each sample's
    time (the solver keeps them as ``(B, 1, ..., 1)`` tensors that broadcast on ``y``)."""
    def rhs(t: Tensor, y: Tensor) -> Tensor:
        return func(t.reshape(len(y)), y)
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
