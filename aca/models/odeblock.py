"""``ODEBlock``: an ODE solve as a network layer, ``y -> y(t1)``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor, nn

from aca.odeint import odeint
from aca.options import SolveOptions
from aca.stats import SolveStats


class _Autonomous(nn.Module):
    """Calls ``net(y)``, ignoring ``t``."""

    ignores_time = True

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, t: float, y: Tensor) -> Tensor:
        return self.net(y)


class ODEBlock(nn.Module):
    """Integrates ``func`` from ``t0`` to ``t1`` and returns the final state.

    With ``time_dependent=False`` (a plain layer stack such as conv-BN-ReLU),
    ``func(y)`` is called; with ``True``, ``func(t, y)``. Remaining keyword
    arguments are the fields of ``aca.SolveOptions`` (``aca.odeint``'s options),
    checked here, at construction; ``params``: tensors besides ``func``'s
    parameters that gradients must reach.
    Batch norm inside ``func`` is fine: evaluations made in backward (ACA rebuilds,
    adjoint) leave the running statistics untouched; but not with ``per_sample=True``
    (batch norm mixes the samples, each of which then sees the others' steps). ``stats``
    holds the counts of the last forward call, its backward added when that runs.
    """

    def __init__(self, func: nn.Module, t0: float = 0.0, t1: float = 1.0,
                 time_dependent: bool = False, params: Iterable[Tensor] | None = None,
                 **options: Any) -> None:
        super().__init__()
        unknown = sorted(set(options) - set(SolveOptions.names()))
        if unknown:
            raise TypeError(f"unknown ODEBlock option(s) {unknown}; valid: "
                            f"{', '.join(SolveOptions.names())} and params")
        self.options = SolveOptions(**options)
        self.params = params
        self.func = func if time_dependent else _Autonomous(func)
        self.t0, self.t1 = float(t0), float(t1)
        self.stats = SolveStats()

    def forward(self, y: Tensor) -> Tensor:
        self.stats = SolveStats()
        return odeint(self.func, y, [self.t0, self.t1], stats=self.stats, params=self.params,
                      **self.options.as_dict())[-1]

    def extra_repr(self) -> str:
        defaults = SolveOptions()
        changed = ", ".join(f"{name}={value}" for name, value in self.options.as_dict().items()
                            if value != getattr(defaults, name) or name in ("solver", "gradient"))
        return f"t0={self.t0}, t1={self.t1}, {changed}"
