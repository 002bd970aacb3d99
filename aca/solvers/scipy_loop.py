"""scipy's ``solve_ivp`` in place of the loop (torchdiffeq's ``scipy_solver``): the
same signature as ``aca.solvers.integrate.integrate``, for one group, no checkpoints,
events or per-attempt hooks (its steps are scipy's and not seen). Tolerances come from
the controller it is given (the forward's, or the adjoint's reverse solve's)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from aca.errors import InvalidOptionError, ODEError
from aca.solvers.control import Controller, Status
from aca.solvers.integrate import Counts, Solution, column_shape
from aca.solvers.step import Func
from aca.solvers.tableau import ButcherTableau

#: the methods of scipy.integrate.solve_ivp
SCIPY_METHODS = ("RK23", "RK45", "DOP853", "Radau", "BDF", "LSODA")


def scipy_loop(method: str = "LSODA", min_step: float = 0.0, max_step: float = math.inf
               ) -> Callable[..., Solution]:
    """The loop as ``scipy.integrate.solve_ivp(method=method)`` (``min_step`` is LSODA's)."""
    from scipy.integrate import solve_ivp

    def loop(func: Func, y0: Tensor, times: Tensor, tableau: ButcherTableau,
             controller: Controller, max_steps: int, *, interpolate_outputs: bool = True,
             checkpoints: object = None, on_attempt: object = None, event: object = None
             ) -> Solution:
        if checkpoints is not None or on_attempt is not None or event is not None:
            raise InvalidOptionError(
                "scipy_solver solves out of aca's sight: it cannot checkpoint steps (odeint_aca), "
                "find events or take per-sample steps; choose one of aca's methods for these")
        while not hasattr(controller, "rtol"):  # the policy inside the wrappers
            controller = controller.inner
        values = times.detach().reshape(-1).tolist()
        column, evaluations = column_shape(y0, 1), 0

        def rhs(t: float, y) -> object:
            nonlocal evaluations
            evaluations += 1
            state = torch.from_numpy(y).to(y0).view_as(y0)
            return func(times.new_tensor(t).view(column), state).detach().reshape(-1).double(
                ).cpu().numpy()
        ys = y0.unsqueeze(0)
        if len(values) > 1:
            bounds = {"max_step": max_step, **({"min_step": min_step} if min_step else {})}
            solution = solve_ivp(rhs, (values[0], values[-1]),
                                 y0.detach().reshape(-1).double().cpu().numpy(), method=method,
                                 t_eval=values, rtol=controller.rtol, atol=controller.atol,
                                 **bounds)
            if not solution.success:
                raise ODEError(f"scipy's solve_ivp ({method}) failed: {solution.message}")
            outputs = torch.from_numpy(solution.y.T.copy()).to(y0)
            ys = torch.cat([ys, outputs[1:].view(len(values) - 1, *y0.shape)])
        per_group = torch.tensor([[0], [0], [evaluations]], device=y0.device)
        return Solution(ys, torch.full((1,), int(Status.DONE), device=y0.device),
                        times[:, -1], Counts(evaluations, per_group))
    return loop
