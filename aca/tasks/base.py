"""Helpers shared by the task modules: checked settings and name lists, and
training-history totals. The contract with the trainer (``Task``, ``Analysis``) is aca.task."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from omegaconf import DictConfig

from aca.errors import ConfigError


def is_count(value: Any, low: int) -> bool:
    """An integer (not a bool) >= ``low``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def check_setting(settings: DictConfig, key: str, valid: Callable[[Any], bool],
                  expected: str) -> None:
    """A ConfigError naming ``task.<key>``, its value and what is valid, unless
    ``valid(value)``; called from a task's constructor, so a bad value fails before any
    data is made or loaded."""
    value = settings.get(key)
    if not valid(value):
        raise ConfigError(f"task.{key}={value!r} is invalid; expected {expected}")


def check_names(names: Sequence[str], valid: Iterable[str], key: str) -> list[str]:
    """``names`` as a list, or a ConfigError naming the first unknown one and the choices."""
    valid = list(valid)
    for name in names:
        if name not in valid:
            raise ConfigError(f"{key}: unknown name {name!r}; choose one of: {', '.join(valid)}")
    return list(names)


def history_totals(history: list[dict[str, float]]) -> dict[str, float]:
    """Totals over the trainer's per-epoch history: NFE and wall time, plus the
    last epoch's losses."""
    totals: dict[str, float] = {"epochs": len(history)}
    for key in ("nfe_forward", "nfe_backward", "time_s"):
        values = [entry[key] for entry in history if key in entry]
        if values:
            totals[f"total_{key}"] = float(sum(values))
    if history:
        for key, value in history[-1].items():
            if key.startswith(("train_", "test_")):
                totals[f"final_{key}"] = value
    return totals
