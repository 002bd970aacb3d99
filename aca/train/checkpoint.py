"""Checkpoints: model, optimizer, scheduler, epoch, RNG states and history, so an
interrupted run continues exactly where it stopped."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, **content: Any) -> None:
    """Write atomically (a crash mid-write leaves the previous file intact)."""
    partial = path.with_suffix(path.suffix + ".partial")
    torch.save({**content, "rng": rng_state()}, partial)
    os.replace(partial, path)


def load(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by :func:`save`; a clear error when the file is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location="cpu", weights_only=False)
