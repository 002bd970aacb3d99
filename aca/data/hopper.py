"""Mujoco Hopper trajectories (Rubanova et al. 2019), generated locally with dm_control.

The generator follows the latent-ODE authors' ``mujoco_physics.py``: the
``hopper/stand`` environment, numpy seed 123, each trajectory started from
qpos[:2] ~ U(0, 0.5), qpos[2:] ~ U(-2, 2), qvel ~ U(-5, 5) and recorded for 200
physics steps as 14 numbers (7 qpos + 7 qvel). Generated sets are cached under
``<data_dir>/hopper/``. dm_control is an optional extra (``mujoco``); without it a
MissingExtraError says how to install it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from aca import provenance
from aca.errors import ConfigError, MissingExtraError

HOPPER_SEED = 123
HOPPER_STEPS = 200
HOPPER_DIMS = 14


def _load_suite():
    """dm_control's suite, or a MissingExtraError naming the ``mujoco`` extra."""
    os.environ.setdefault("MUJOCO_GL", "disable")  # no rendering: skip OpenGL probing
    try:
        from dm_control import suite
    except ImportError as error:
        raise MissingExtraError("the Hopper data set (generated with dm_control)", "mujoco",
                                error) from error
    return suite


def generate_hopper(
    n_trajectories: int, n_steps: int = HOPPER_STEPS, seed: int = HOPPER_SEED
) -> torch.Tensor:
    """``(n_trajectories, n_steps, 14)`` float32 Hopper states (7 qpos + 7 qvel).

    Uses its own ``numpy.random.RandomState(seed)``, drawn in the authors' order,
    so the first k trajectories of any set are the same for a given seed.
    """
    physics = _load_suite().load("hopper", "stand").physics
    rng = np.random.RandomState(seed)
    data = np.zeros((n_trajectories, n_steps, HOPPER_DIMS))
    half = HOPPER_DIMS // 2
    for i in range(n_trajectories):
        with physics.reset_context():
            physics.data.qpos[:2] = rng.uniform(0, 0.5, size=2)
            physics.data.qpos[2:] = rng.uniform(-2, 2, size=physics.data.qpos[2:].shape)
            physics.data.qvel[:] = rng.uniform(-5, 5, size=physics.data.qvel.shape)
        for step in range(n_steps):
            data[i, step, :half] = physics.data.qpos
            data[i, step, half:] = physics.data.qvel
            physics.step()
    return torch.from_numpy(data).float()


def load_hopper(
    data_dir: str | Path, n_trajectories: int, n_steps: int = HOPPER_STEPS, seed: int = HOPPER_SEED
) -> torch.Tensor:
    """The cached trajectories of :func:`generate_hopper`, generated on first use; their
    checksum goes into the run's provenance stamp (``aca.provenance.note_data``)."""
    path = Path(data_dir) / "hopper" / f"hopper_n{n_trajectories}_T{n_steps}_seed{seed}.pt"
    if path.exists():
        data = torch.load(path)
    else:
        data = generate_hopper(n_trajectories, n_steps, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(data, path)
    provenance.note_data(path.stem, data)
    return data


def random_windows(
    data: torch.Tensor, window: int, generator: torch.Generator
) -> torch.Tensor:
    """One random window of ``window`` consecutive points per trajectory
    (the authors' interpolation set-up): ``(N, T, D) -> (N, window, D)``."""
    n_trajectories, n_steps, _ = data.shape
    if not 1 <= window <= n_steps:
        raise ConfigError(f"window={window} is invalid: choose 1..{n_steps} "
                          "(the trajectory length)")
    starts = torch.randint(0, n_steps - window + 1, (n_trajectories,), generator=generator)
    index = starts.unsqueeze(1) + torch.arange(window)
    return torch.gather(data, 1, index.unsqueeze(-1).expand(-1, -1, data.shape[-1]))


def hopper_times(window: int, n_steps: int = HOPPER_STEPS) -> torch.Tensor:
    """Observation times of a window: the first ``window`` of ``arange(n_steps) / n_steps``."""
    return torch.arange(n_steps, dtype=torch.float32)[:window] / n_steps


def min_max_scale(
    data: torch.Tensor, reference: torch.Tensor
) -> torch.Tensor:
    """Scale every dimension to [0, 1] with the minimum and maximum of ``reference``
    (the training set), so test data is scaled the same way."""
    flat = reference.reshape(-1, reference.shape[-1])
    low, high = flat.amin(dim=0), flat.amax(dim=0)
    span = torch.where(high > low, high - low, torch.ones_like(high))
    return (data - low) / span
