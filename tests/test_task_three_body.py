"""Three-body: the gravity field, gradients with respect to the masses, and a smoke fit."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import compose_config

import aca
from aca.errors import ConfigError
from aca.report import summaries
from aca.tasks.three_body import (
    K1,
    K2,
    TRUE_MASSES,
    NeuralVectorField,
    ThreeBodyGravity,
    initial_state,
)
from aca.train import run
from aca.train.config import build_task

MASSES = torch.tensor(TRUE_MASSES, dtype=torch.float64)


def test_gravity_field_matches_newton_pairwise_sum() -> None:
    state = initial_state()
    derivative = ThreeBodyGravity(MASSES)(0.0, state)
    positions = state[:9].reshape(3, 3)
    expected = []
    for i in range(3):
        acceleration = torch.zeros(3, dtype=torch.float64)
        for j in range(3):
            if j != i:
                offset = positions[j] - positions[i]
                acceleration += K1 * MASSES[j] * offset / offset.norm() ** 3
        expected.append(acceleration)
    torch.testing.assert_close(derivative[:9], K2 * state[9:])
    torch.testing.assert_close(derivative[9:], torch.cat(expected))
    momentum_change = (MASSES[:, None] * derivative[9:].reshape(3, 3)).sum(0)
    torch.testing.assert_close(momentum_change, torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("method", ["adjoint", "naive"])
def test_mass_gradients_agree_with_aca_at_tight_tolerance(method: str) -> None:
    times = torch.linspace(0.0, 0.3, 4, dtype=torch.float64)
    gradients = []
    for gradient in ("aca", method):
        model = ThreeBodyGravity(torch.tensor([1.0, 1.05, 0.95]))
        states = aca.odeint(model, initial_state(), times, solver="dopri5", gradient=gradient,
                            rtol=1e-8, atol=1e-8)
        states[:, :9].pow(2).sum().backward()
        gradients.append(model.masses.grad)
    # |gradient| ~ 2; ACA holds the step sizes fixed, naive also differentiates the
    # controller, so they agree to the solve's accuracy, not to round-off.
    torch.testing.assert_close(gradients[1], gradients[0], rtol=1e-6, atol=1e-5)


def test_unknown_model_is_named() -> None:
    with pytest.raises(ConfigError, match="'mlp'.*choose one of: physics, neural"):
        build_task(compose_config("task=three_body", "task.model=mlp"))


def test_neural_baseline_maps_the_18_dim_state() -> None:
    field = NeuralVectorField(8, torch.Generator().manual_seed(0))
    assert field(0.0, initial_state()[None]).shape == (1, 18)


def test_smoke_fit_recovers_the_masses(tmp_path) -> None:
    results = tmp_path / "results"
    cfg = compose_config("task=three_body", "trainer=smoke", "trainer.max_epochs=null",
                         "trainer.eval_every=100",
                         "task.n_train=30", "task.n_test=40", "task.epochs=20",
                         "task.scheduler.gamma=0.8", "solver.rtol=1e-5", "solver.atol=1e-5")
    report = run(cfg, tmp_path / "run")["report"]
    assert (tmp_path / "run" / "three_body_physics_aca.png").is_file()
    summaries.three_body([tmp_path / "run"], results)  # what reproduce.py's summarize does
    initial = build_task(cfg).model().masses.detach()
    initial_error = (initial - MASSES).abs().max().item()
    assert report["mass_error"] < 1e-2 < initial_error
    assert report["extrap_rmse"] < 0.1
    assert report["total_nfe_backward"] > 0
    record = json.loads((results / "runs" / "physics_aca.json").read_text())
    assert record["m1"] == pytest.approx(report["m1"])
    assert (results / "three_body_trajectories.png").is_file()
    assert "physics" in (results / "three_body.md").read_text()
