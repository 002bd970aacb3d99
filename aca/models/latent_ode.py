"""Latent ODE (Rubanova et al. 2019): an ODE-RNN recognition network read
backwards in time gives q(z0); z0 follows a latent ODE solved to every output
time in one ``aca.odeint`` call and is decoded to observations."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

import aca
from aca.models.ode_rnn import ODERNN, ODEFunc


class LatentODE(nn.Module):
    """``ode_options`` drive the decoder's solve (the method under study);
    ``encoder_options`` the recognition ODE-RNN (fixed-step euler in the paper). With
    ``per_sample=True`` in both, a series' prediction depends on its own data alone."""

    def __init__(
        self,
        input_dim: int,
        latent_dim: int,
        rec_dims: int,
        units: int,
        gru_units: int,
        gen_layers: int,
        rec_layers: int,
        ode_options: dict[str, Any],
        encoder_options: dict[str, Any],
    ) -> None:
        super().__init__()
        self.encoder = ODERNN(input_dim, rec_dims, units, gru_units, rec_layers, encoder_options)
        self.to_posterior = nn.Sequential(
            nn.Linear(rec_dims, 100), nn.Tanh(), nn.Linear(100, 2 * latent_dim)
        )
        self.dynamics = ODEFunc(latent_dim, units, gen_layers)
        self.decoder = nn.Linear(latent_dim, input_dim)
        self.ode_options = dict(ode_options)

    def posterior(
        self, times: torch.Tensor, values: torch.Tensor, observed_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of q(z0 | observations), each ``(B, latent)``.
        The recognition network only visits times at which some series is observed;
        with a per-sample encoder (``encoder_options["per_sample"]``) each series only
        its own, and its state is carried back to ``times[0]``, where z0 is."""
        if self.encoder.ode_options.get("per_sample", False):
            state = self.encoder.encode_per_sample(times, values, observed_mask, times[0])
        else:
            seen = observed_mask.amax(dim=(0, 2)) > 0
            _, state = self.encoder(
                times[seen], values[:, seen], observed_mask[:, seen], backwards=True
            )
        mean, raw_std = self.to_posterior(state).chunk(2, dim=-1)
        return mean, F.softplus(raw_std) + 1e-6

    def forward(
        self, times: torch.Tensor, values: torch.Tensor, observed_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions ``(B, T, D)`` at all ``times`` and KL(q(z0) || N(0, I)) per
        series ``(B,)``, averaged over latent dimensions as Rubanova's code does.
        Samples z0 in training mode and uses the posterior mean in eval mode."""
        mean, std = self.posterior(times, values, observed_mask)
        z0 = mean + std * torch.randn_like(std) if self.training else mean
        latent = aca.odeint(self.dynamics, z0, times.to(values.dtype), **self.ode_options)
        kl = (0.5 * (mean**2 + std**2 - 1) - std.log()).mean(dim=-1)
        return self.decoder(latent).transpose(0, 1), kl
