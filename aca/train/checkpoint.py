"""Checkpoints: model, optimizer, scheduler, epoch, global step, RNG states and history, so an
interrupted run continues exactly where it stopped."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aca.errors import ConfigError

ZIP_MAGIC = b"PK\x03\x04"  # the first bytes of every file torch.save writes


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
    """A checkpoint written by :func:`save`; a one-line ConfigError when the file is
    missing or is not one (a text file, random bytes, a bare state dict)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"checkpoint {path} is a directory; give its last.pt or best.pt")
    if not path.is_file():
        raise ConfigError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # unpickling arbitrary bytes fails in many different ways
        with path.open("rb") as file:
            archive = file.read(len(ZIP_MAGIC)) == ZIP_MAGIC
        if archive:  # torch's own format, cut short or corrupted (torch says "Errno 22")
            raise ConfigError(f"{path} is a damaged checkpoint: torch cannot read it "
                              f"({path.stat().st_size} bytes, truncated or corrupted); copy "
                              "it again, or start over (without ckpt=, or with "
                              "trainer.resume=false for a run folder's last.pt)") from error
        raise ConfigError(f"{path} is not a checkpoint written by aca-run (a last.pt or "
                          f"best.pt): {type(error).__name__}: {error}") from error
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise ConfigError(f"{path} is not a checkpoint written by aca-run (a last.pt or "
                          "best.pt): it holds no model weights")
    return state
