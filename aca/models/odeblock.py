"""``ODEBlock``: an ODE solve as a network layer, ``y -> y(t1)``."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from aca.odeint import check_options, odeint
from aca.stats import SolveStats

_DEFAULTS = {"solver": "dopri5", "gradient": "aca", "rtol": 1e-3, "atol": 1e-6,
             "step_size": None, "max_steps": 10_000, "max_checkpoints": None}
_CONTROLLER = ("safety", "ifactor", "dfactor", "pi_beta")


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
    arguments are those of ``aca.odeint`` and are checked here, at construction
    (``params``: tensors besides ``func``'s parameters that gradients must reach).
    Batch norm inside ``func`` is fine: evaluations made in backward (ACA rebuilds,
    adjoint) leave the running statistics untouched. ``stats`` holds the counts of
    the last forward call, its backward added when that runs.
    """

    def __init__(self, func: nn.Module, t0: float = 0.0, t1: float = 1.0,
                 time_dependent: bool = False, **options: Any) -> None:
        super().__init__()
        unknown = set(options) - set(_DEFAULTS) - set(_CONTROLLER) - {"params"}
        if unknown:
            raise TypeError(f"unknown ODEBlock option(s) {sorted(unknown)}; "
                            f"valid: {sorted(_DEFAULTS)}, params and controller settings "
                            f"{list(_CONTROLLER)}")
        self.params = options.pop("params", None)
        self.options = {**_DEFAULTS, **options}
        check_options(**self.options)
        self.func = func if time_dependent else _Autonomous(func)
        self.t0, self.t1 = float(t0), float(t1)
        self.stats = SolveStats()

    def forward(self, y: Tensor) -> Tensor:
        self.stats = SolveStats()
        return odeint(self.func, y, [self.t0, self.t1], stats=self.stats, params=self.params,
                      **self.options)[-1]

    def extra_repr(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items() if v is not None)
        return f"t0={self.t0}, t1={self.t1}, {opts}"
