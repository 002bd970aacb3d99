"""ODE-RNN (Rubanova et al. 2019): a hidden state that follows an ODE between
observation times and is updated by a GRU at them.

Batches use the union of their series' time points: ``times (T,)`` shared by
the batch, ``values (B, T, D)`` and ``observed_mask (B, T, D)``; a series is only
updated at the times where it has an observation. Every ODE solve goes through
``aca.odeint`` with the gradient method under study.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import aca


def mlp(n_inputs: int, n_outputs: int, units: int, n_layers: int) -> nn.Sequential:
    """Tanh network with ``n_layers`` hidden layers of ``units`` (Rubanova's ``create_net``)."""
    layers: list[nn.Module] = [nn.Linear(n_inputs, units)]
    for _ in range(n_layers - 1):
        layers += [nn.Tanh(), nn.Linear(units, units)]
    layers += [nn.Tanh(), nn.Linear(units, n_outputs)]
    return nn.Sequential(*layers)


class ODEFunc(nn.Module):
    """Autonomous dynamics ``dh/dt = net(h)`` in the ``func(t, y)`` convention."""

    def __init__(self, dim: int, units: int, n_layers: int) -> None:
        super().__init__()
        self.net = mlp(dim, dim, units, n_layers)

    def forward(self, t: float, state: torch.Tensor) -> torch.Tensor:
        return self.net(state)


class GRUUpdate(nn.Module):
    """GRU cell whose gates are small networks (Rubanova's ``GRU_unit``); the input
    is the observation with its mask, so partly observed points are understood."""

    def __init__(self, hidden_dim: int, input_dim: int, units: int) -> None:
        super().__init__()
        joint = hidden_dim + 2 * input_dim
        self.update_gate = nn.Sequential(mlp(joint, hidden_dim, units, 1), nn.Sigmoid())
        self.reset_gate = nn.Sequential(mlp(joint, hidden_dim, units, 1), nn.Sigmoid())
        self.candidate = mlp(joint, hidden_dim, units, 1)

    def forward(self, hidden: torch.Tensor, observation: torch.Tensor) -> torch.Tensor:
        joint = torch.cat([hidden, observation], dim=-1)
        update, reset = self.update_gate(joint), self.reset_gate(joint)
        candidate = self.candidate(torch.cat([hidden * reset, observation], dim=-1))
        return (1 - update) * candidate + update * hidden


class ODERNN(nn.Module):
    """Run an ODE-RNN over a batch of irregularly observed series.

    ``ode_options`` are ``aca.odeint`` keyword arguments (solver, gradient, tolerances)
    used for the evolution between consecutive times.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        units: int,
        gru_units: int,
        n_layers: int,
        ode_options: dict[str, Any],
    ) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.dynamics = ODEFunc(hidden_dim, units, n_layers)
        self.update = GRUUpdate(hidden_dim, input_dim, gru_units)
        self.ode_options = dict(ode_options)

    def forward(
        self,
        times: torch.Tensor,
        values: torch.Tensor,
        observed_mask: torch.Tensor,
        backwards: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the state at every time *before* its observation is read
        ``(B, T, H)`` (a prediction from the other side of the sequence only) and
        the final state after the last update ``(B, H)``. ``backwards`` runs from
        the last time to the first (the latent ODE's recognition network)."""
        batch, n_times, _ = values.shape
        hidden = values.new_zeros(batch, self.hidden_dim)
        order = range(n_times - 1, -1, -1) if backwards else range(n_times)
        before_update: list[torch.Tensor] = [hidden] * n_times
        previous: int | None = None
        for index in order:
            if previous is not None:
                span = torch.stack([times[previous], times[index]]).to(values.dtype)
                hidden = aca.odeint(self.dynamics, hidden, span, **self.ode_options)[-1]
            before_update[index] = hidden
            mask = observed_mask[:, index]
            seen = mask.amax(dim=-1, keepdim=True) > 0
            if bool(seen.any()):
                observation = torch.cat([values[:, index] * mask, mask], dim=-1)
                hidden = torch.where(seen, self.update(hidden, observation), hidden)
            previous = index
        return torch.stack(before_update, dim=1), hidden

    def encode_per_sample(self, times: torch.Tensor, values: torch.Tensor,
                          observed_mask: torch.Tensor, until: torch.Tensor) -> torch.Tensor:
        """The state ``(B, H)`` at time ``until`` (at most the first time) after reading
        each series backwards over its own observation times only, each evolution a
        per-sample solve (``ode_options`` with ``per_sample=True``): a series' state
        depends on its own observations alone, not on the times the others in its batch
        were observed at (``forward`` stops at the batch's union of times, and a fixed
        grid restarts at each of them)."""
        batch, n_times, _ = values.shape
        seen = observed_mask.amax(dim=-1) > 0
        counts = seen.sum(dim=1)
        positions = torch.arange(n_times, device=values.device).expand(batch, -1)
        # each series' observation indices, last first (then -1s)
        order = torch.where(seen, positions, -1).sort(dim=1, descending=True).values
        rows = torch.arange(batch, device=values.device)
        hidden = values.new_zeros(batch, self.hidden_dim)
        at = times[order[:, 0].clamp_min(0)]  # each series' time, its last observation first
        for rank in range(int(counts.max())):
            index = order[:, rank].clamp_min(0)
            reading = rank < counts
            hidden = self._evolve(hidden, at, times[index], reading & (rank > 0))
            at = torch.where(reading, times[index], at)
            mask = observed_mask[rows, index]
            observation = torch.cat([values[rows, index] * mask, mask], dim=-1)
            hidden = torch.where(reading.unsqueeze(1), self.update(hidden, observation), hidden)
        return self._evolve(hidden, at, until.expand(batch), at > until)

    def _evolve(self, hidden: torch.Tensor, start: torch.Tensor, end: torch.Tensor,
                moving: torch.Tensor) -> torch.Tensor:
        """The states of the ``moving`` series solved from ``start`` to ``end`` (each its
        own span), the others as they are."""
        chosen = moving.nonzero().squeeze(1)
        if not len(chosen):
            return hidden
        spans = torch.stack([start[chosen], end[chosen]], dim=1).to(hidden.dtype)
        solved = aca.odeint(self.dynamics, hidden[chosen], spans, **self.ode_options)[-1]
        return hidden.index_put((chosen,), solved)


class ODERNNModel(nn.Module):
    """ODE-RNN as a model of its own: the value at each time is decoded from the
    state evolved from the earlier observations (Rubanova's ``ODE_RNN``)."""

    def __init__(
        self,
        input_dim: int,
        latent_dim: int,
        units: int,
        gru_units: int,
        n_layers: int,
        ode_options: dict[str, Any],
    ) -> None:
        super().__init__()
        self.rnn = ODERNN(input_dim, latent_dim, units, gru_units, n_layers, ode_options)
        self.decoder = nn.Sequential(nn.Linear(latent_dim, units), nn.Tanh(),
                                     nn.Linear(units, input_dim))

    def forward(
        self, times: torch.Tensor, values: torch.Tensor, observed_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions ``(B, T, D)`` at every time and a zero KL term ``(B,)`` (the
        model has no latent distribution; the shape matches :class:`LatentODE`)."""
        states, _ = self.rnn(times, values, observed_mask)
        return self.decoder(states), values.new_zeros(values.shape[0])
