"""Trivial predictors of the time-series tables, computed from the data without training:
a model's test error can rank gradient methods only where it beats them."""

from __future__ import annotations

import torch

#: the trivial predictors, each from a series' own observed points
BASELINES = ("series_mean", "nearest", "linear")


def baseline_predictions(times: torch.Tensor, values: torch.Tensor,
                         observed: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each trivial baseline's prediction ``(N, T, D)`` of every time point from a series'
    observed points alone (``observed`` ``(N, T, D)``, whole time points):
    ``series_mean`` the mean of the observed points, ``nearest`` the observed point nearest
    in time (the earlier one on a tie), ``linear`` linear interpolation between the
    neighbouring observed points (the nearest end one outside them)."""
    seen = observed.amax(dim=-1) > 0  # (N, T)
    count = observed.sum(dim=1, keepdim=True).clamp(min=1)
    series_mean = ((values * observed).sum(dim=1, keepdim=True) / count).expand_as(values)
    gap = (times.view(1, -1, 1) - times.view(1, 1, -1)).abs()  # (1, T target, T source)
    gap = gap.masked_fill(~seen.unsqueeze(1), float("inf"))
    nearest = _take(values, gap.argmin(dim=2))
    steps = torch.arange(len(times)).expand_as(seen)
    before = torch.where(seen, steps, -1).cummax(dim=1).values
    after = torch.where(seen, steps, len(times)).flip(1).cummin(dim=1).values.flip(1)
    before = torch.where(before < 0, after, before)
    after = torch.where(after >= len(times), before, after)
    t_before, t_after = times[before], times[after]
    span = t_after - t_before
    weight = torch.where(span > 0, (times - t_before) / torch.where(span > 0, span, 1.0), 0.0)
    linear = torch.lerp(_take(values, before), _take(values, after), weight.unsqueeze(-1))
    return {"series_mean": series_mean, "nearest": nearest, "linear": linear}


def _take(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values[n, index[n, t], :]`` for every ``(n, t)``."""
    return torch.gather(values, 1, index.unsqueeze(-1).expand(-1, -1, values.shape[-1]))


def masked_mse(predictions: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean squared error over the existing points (``mask``), as the tasks' test MSE."""
    return float(((predictions - values) ** 2 * mask).sum() / mask.sum().clamp(min=1))
