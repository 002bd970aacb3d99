"""Irregularly sampled time series: a synthetic data set and the masking logic.

A batch of time series lives on the union of its time points (Rubanova et al.
2019): one shared, sorted 1-D time grid, values ``(B, T, D)`` and a mask
``(B, T, D)`` that says which values exist. Hiding part of the existing points
from the encoder ("observing a fraction") is a second mask of the same shape.
"""

from __future__ import annotations

import math

import torch

from aca.errors import ConfigError


def check_fraction(fraction: float) -> float:
    """``fraction`` if it is a valid observed fraction (0 < f <= 1), else a clear error."""
    if not 0.0 < float(fraction) <= 1.0:
        raise ConfigError(
            f"observed_fraction={fraction!r} is invalid: choose a fraction in (0, 1], "
            "e.g. 0.1, 0.2 or 0.5"
        )
    return float(fraction)


def sample_observed_mask(
    mask: torch.Tensor, fraction: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Keep ``int(n * fraction)`` (at least one) of each series' ``n`` existing time
    points, chosen uniformly without replacement, and hide the others.

    ``mask`` is ``(B, T, D)``; a time point exists when any of its dimensions does.
    All dimensions of a kept time point stay as they are (Rubanova's
    ``subsample_timepoints``). Returns a float mask of the same shape.
    """
    fraction = check_fraction(fraction)
    counts = (mask.amax(dim=-1) > 0).sum(dim=1)
    keep = torch.clamp((counts.double() * fraction + 1e-9).floor().long(), min=1)
    return keep_random_times(mask, torch.minimum(keep, counts), generator)


def keep_random_times(
    mask: torch.Tensor, keep: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Keep ``keep[b]`` existing time points of series ``b`` (uniformly at random)
    and zero the rest of ``mask`` ``(B, T, D)``."""
    exists = mask.amax(dim=-1) > 0
    device = generator.device if generator is not None else mask.device
    scores = torch.rand(exists.shape, generator=generator, device=device).to(mask.device)
    scores = scores.masked_fill(~exists, 2.0)  # missing points sort last, never kept
    ranks = scores.argsort(dim=1).argsort(dim=1)
    kept_times = ranks < keep.to(mask.device).unsqueeze(1)
    return mask * kept_times.unsqueeze(-1).to(mask.dtype)


def union_times(
    times: torch.Tensor, *per_point: torch.Tensor
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Drop the grid times at which no series of the batch has a value.

    ``per_point[0]`` is the existence mask ``(B, T, D)``; every tensor in
    ``per_point`` is cut along dim 1 the same way.
    """
    used = per_point[0].amax(dim=(0, 2)) > 0
    return times[used], tuple(tensor[:, used] for tensor in per_point)


def make_sines(
    n_series: int,
    n_times: int = 100,
    points_per_series: int = 50,
    t_end: float = 5.0,
    noise_std: float = 0.02,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noisy 2-D sinusoids observed at random, series-specific times.

    A grid of ``n_times`` times is drawn uniformly in ``[0, t_end]`` (sorted,
    shared); each series exists at ``points_per_series`` of them, chosen at
    random, and follows ``(a sin(w t + p), a cos(w t + p))`` plus Gaussian noise,
    with amplitude ``a ~ U(0.5, 1)``, frequency ``w ~ U(1, 2)`` rad per unit time
    and phase ``p ~ U(0, 2 pi)``. Returns ``times (T,)``, ``values (N, T, 2)``
    (zero where missing) and ``mask (N, T, 2)``.
    """
    if not 1 <= points_per_series <= n_times:
        raise ConfigError(
            f"points_per_series={points_per_series} is invalid: choose 1..n_times={n_times}"
        )
    generator = torch.Generator().manual_seed(seed)
    times = torch.sort(torch.rand(n_times, generator=generator) * t_end).values
    amplitude = 0.5 + 0.5 * torch.rand(n_series, 1, generator=generator)
    frequency = 1.0 + torch.rand(n_series, 1, generator=generator)
    phase = 2 * math.pi * torch.rand(n_series, 1, generator=generator)
    angle = frequency * times + phase
    clean = amplitude.unsqueeze(-1) * torch.stack([angle.sin(), angle.cos()], dim=-1)
    noisy = clean + noise_std * torch.randn(clean.shape, generator=generator)
    keep = torch.full((n_series,), points_per_series)
    mask = keep_random_times(torch.ones(n_series, n_times, 2), keep, generator)
    return times, noisy * mask, mask
