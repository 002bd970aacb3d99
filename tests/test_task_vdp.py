"""Van der Pol: the vector field, reverse-time reconstruction, gradients, and learning mu."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import compose_config

from aca.report import summaries
from aca.tasks.vdp import VanDerPol, end_state_gradient, reconstruction
from aca.train import run

Y0 = torch.tensor([2.0, 0.0], dtype=torch.float64)


def test_vector_field_is_the_van_der_pol_equation() -> None:
    state = torch.tensor([[1.5, -0.5], [0.0, 2.0]], dtype=torch.float64)
    derivative = VanDerPol(0.7)(0.0, state)
    expected = torch.tensor([[-0.5, 0.7 * (1 - 1.5**2) * -0.5 - 1.5], [2.0, 0.7 * 2.0]],
                            dtype=torch.float64)
    torch.testing.assert_close(derivative, expected)


def test_reverse_time_error_grows_as_the_tolerance_loosens() -> None:
    errors = [reconstruction(0.2, Y0, 20.0, 2, {"solver": "dopri5", "rtol": tol, "atol": tol})
              ["error"] for tol in (1e-7, 1e-5, 1e-3)]
    assert errors[0] < errors[1] < errors[2]
    assert errors[0] < 3e-4 and errors[2] > 1e-2  # measured 3.1e-5 and 1.1


def test_aca_gradient_matches_finite_differences_of_the_discrete_forward() -> None:
    """ACA differentiates the accepted steps; with a fixed grid that is the exact
    derivative of the computed end state, which central differences reproduce."""
    ode = {"solver": "rk4", "step_size": 0.05}
    gradient, _ = end_state_gradient("aca", 1.0, Y0, 5.0, ode)
    times = torch.tensor([0.0, 5.0], dtype=torch.float64)

    def end_loss(y0: torch.Tensor, mu: float) -> float:
        import aca
        with torch.no_grad():
            return float((aca.odeint(VanDerPol(mu), y0, times, **ode)[-1] ** 2).sum())

    eps = 1e-6
    numeric = [(end_loss(Y0 + eps * torch.eye(2, dtype=torch.float64)[i], 1.0)
                - end_loss(Y0 - eps * torch.eye(2, dtype=torch.float64)[i], 1.0)) / (2 * eps)
               for i in range(2)]
    numeric.append((end_loss(Y0, 1.0 + eps) - end_loss(Y0, 1.0 - eps)) / (2 * eps))
    torch.testing.assert_close(gradient, torch.tensor(numeric, dtype=torch.float64), rtol=1e-6,
                               atol=1e-6)


@pytest.mark.parametrize("method", ["adjoint", "naive"])
def test_methods_agree_with_aca_at_tight_tolerance(method: str) -> None:
    ode = {"solver": "dopri5", "rtol": 1e-9, "atol": 1e-9}
    reference, _ = end_state_gradient("aca", 1.0, Y0, 5.0, ode)
    gradient, info = end_state_gradient(method, 1.0, Y0, 5.0, ode)
    torch.testing.assert_close(gradient, reference, rtol=1e-5, atol=1e-6)
    assert info["nfe_forward"] > 0


def test_reconstruction_analysis_writes_its_table(tmp_path, capsys) -> None:
    cfg = compose_config("task=vdp_reconstruct", "task.solvers=[dopri5]",
                         "task.tolerances=[1e-3,1e-6]", "task.figure_tolerances=[[1e-3,1e-3]]",
                         "task.n_points=50", "task.T=6", "trainer.progress=true")
    rows = run(cfg, tmp_path)["result"]["rows"]
    bars = capsys.readouterr().err  # the same tqdm bars as training's
    assert "vdp solvers x tolerances" in bars and "/2 " in bars and "vdp figure curves" in bars
    assert [row["tol"] for row in rows] == [1e-3, 1e-6]
    assert rows[1]["reverse_error"] < rows[0]["reverse_error"]
    for name in ("vdp_reconstruction.md", "vdp_reconstruction.png",
                 "vdp_reconstruction_errors.png"):
        assert (tmp_path / name).is_file()


def test_learning_recovers_mu(tmp_path) -> None:
    results = tmp_path / "results"
    cfg = compose_config("task=vdp", "trainer=smoke", "trainer.max_epochs=null",
                         "trainer.eval_every=100", "task.epochs=30",
                         "task.n_train=8", "task.batch_size=8", "task.n_test=4",
                         "task.n_points=20", "task.T=6", "task.noise=0.0",
                         "task.scheduler.gamma=0.85")
    report = run(cfg, tmp_path / "run")["report"]
    summaries.vdp([tmp_path / "run"], results)  # what reproduce.py's summarize does
    assert report["mu_error"] < 5e-3 < abs(cfg.task.mu_init - cfg.task.mu)
    assert report["total_nfe_backward"] > 0
    record = json.loads((results / "runs" / "aca_dopri5_rtol0.001.json").read_text())
    assert record["mu"] == pytest.approx(report["mu"])
    assert "aca" in (results / "vdp_learning.md").read_text()
