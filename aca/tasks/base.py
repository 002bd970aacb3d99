"""Helpers shared by the task modules: checked name lists and training-history totals.
The contract with the trainer (``Task``, ``Analysis``) is aca.task."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from aca.errors import ConfigError


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
