"""Robertson's kinetics (issue 30): the vector field, each method's gradient of the
learning loss (against central differences, or the error that stopped it), the settings
checked, and the learning task's run and summary."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import compose_config

from aca.report import summaries
from aca.tasks.robertson import Robertson
from aca.train import ConfigError, run


def test_vector_field_is_robertson_s_kinetics_and_conserves_the_total() -> None:
    state = torch.tensor([[0.9, 2e-5, 0.1], [0.5, 1e-5, 0.5]], dtype=torch.float64)
    derivative = Robertson([0.04, 3e7, 1e4])(0.0, state)
    y1, y2, y3 = state.unbind(-1)
    expected = torch.stack([-0.04 * y1 + 1e4 * y2 * y3,
                            0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2**2, 3e7 * y2**2], -1)
    torch.testing.assert_close(derivative, expected)
    torch.testing.assert_close(derivative.sum(-1), torch.zeros(2, dtype=torch.float64))


def test_gradient_analysis_against_differences_and_the_adjoint_s_failure(tmp_path) -> None:
    """Through kvaerno5 at rtol 1e-8 ACA's and naive's gradients (the discrete solution's)
    are within 1e-4 of central differences of tight solves (measured 1.2e-5); the
    adjoint's reverse solve of the stiff kinetics cannot advance (200 steps cover 0.012 of
    the 100 time units), and the row keeps its error and its work instead of a gradient."""
    cfg = compose_config("task=robertson_gradients", "task.solvers=[kvaerno5]",
                         "task.tolerances=[1e-8]", "task.methods=[aca,naive,adjoint]",
                         "task.n_train=1", "task.n_points=5", "task.log10_t=[-4,2]",
                         "task.max_steps=200")
    rows = {row["method"]: row for row in run(cfg, tmp_path)["result"]["rows"]}
    for method in ("aca", "naive"):
        assert rows[method]["grad_rel_error"] < 1e-4 and rows[method]["error"] == ""
    assert rows["aca"]["jacobians"] > rows["naive"]["jacobians"]  # rebuilt steps' stages
    assert rows["adjoint"]["grad_rel_error"] is None
    assert rows["adjoint"]["error"].split(":")[0] in ("NonFiniteStateError",
                                                      "MaxStepsExceededError")
    assert rows["adjoint"]["nfe_backward"] > 0  # the failed reverse solve's work
    table = (tmp_path / "robertson_gradients.md").read_text()
    assert "| kvaerno5 | 1.000e-08 | adjoint | failed |" in table
    saved = json.loads((tmp_path / "robertson_gradients.json").read_text())
    assert saved["provenance"]["code"] and len(saved["reference"]) == 3


@pytest.mark.parametrize(("override", "message"), [
    ("task.log10_t=[4,-4]", "task.log10_t=.* low < high"),
    ("task.rates_init=[0.04,3e7]", "task.rates_init=.*three positive rates"),
    ("task.y1_low=0", "task.y1_low=0 is invalid"),
    ("task.n_points=1", "task.n_points=1 is invalid"),
])
def test_bad_settings_are_config_errors(tmp_path, override, message) -> None:
    with pytest.raises(ConfigError, match=message):
        run(compose_config("task=robertson", "solver=kvaerno5", override), tmp_path)


def test_learning_runs_through_kvaerno5_and_is_summarized(tmp_path) -> None:
    """Two epochs with each of aca and naive: nearly the same gradient (naive differentiates
    the Newton iterations as they stopped, ACA the converged stages: 1.3e-4 apart after two
    Adam steps), so nearly the same rates; the summary collects both records and their fit
    figures."""
    runs = tmp_path / "runs"
    for method in ("aca", "naive"):
        cfg = compose_config("task=robertson", "solver=kvaerno5", f"method={method}",
                             "trainer=smoke", "task.epochs=2", "task.n_train=2",
                             "task.n_test=1", "task.batch_size=2", "task.n_points=7",
                             "task.log10_t=[-4,2]",
                             "solver.rtol=1e-6", "solver.atol=1e-10")
        run(cfg, runs / method)
    summary = summaries.SUMMARIES["robertson"]([runs], tmp_path)
    records = {path.stem: json.loads(path.read_text())
               for path in (tmp_path / "runs").glob("*.json")}
    aca_run, naive_run = (records[f"{m}_kvaerno5_rtol1e-06"] for m in ("aca", "naive"))
    assert aca_run["rates"] == pytest.approx(naive_run["rates"], rel=1e-3)
    assert aca_run["rates"] != pytest.approx([0.02, 6e7, 5e3], rel=1e-3)  # it moved
    assert (tmp_path / "robertson_fit_aca_kvaerno5_rtol1e-06.png").is_file()
    assert "| naive | kvaerno5 |" in summary.read_text()
