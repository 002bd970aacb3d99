"""The toy analytic-gradient task: gradients against the closed form, and the analysis run."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from conftest import compose_config

from aca.errors import ConfigError
from aca.tasks.toy import (
    PAPER_STACK,
    exact_gradients,
    measure_gradient,
    ordering_sentence,
    paper_stack_gradient,
    paper_stack_sentence,
)
from aca.train import run
from aca.train.config import build_task


def test_closed_form_matches_autograd_of_the_exact_solution() -> None:
    alpha = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    z0 = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    loss = (z0 * torch.exp(alpha * 4.0)) ** 2
    loss.backward()
    assert exact_gradients(0.3, 0.7, 4.0) == pytest.approx((z0.grad.item(), alpha.grad.item()),
                                                           rel=1e-12)


@pytest.mark.parametrize("method", ["aca", "adjoint", "naive"])
def test_every_method_is_accurate_at_tight_tolerance(method: str) -> None:
    ode = {"solver": "dopri5", "rtol": 1e-10, "atol": 1e-10, "step_size": None}
    row = measure_gradient(method, 12.0, 0.2, 1.0, ode)
    # measured at most 5.7e-10 (aca, alpha); about 10x that
    assert row["rel_err_z0"] < 5e-9 and row["rel_err_alpha"] < 5e-9
    assert row["nfe_forward"] > 0
    assert (row["nfe_backward"] > 0) == (method != "naive")


def test_aca_error_shrinks_with_tolerance() -> None:
    errors = [measure_gradient("aca", 15.0, 0.2, 1.0, {"solver": "dopri5", "rtol": tol,
                                                       "atol": tol, "step_size": None})
              ["rel_err_alpha"] for tol in (1e-3, 1e-6, 1e-9)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[0] > 1e-6 and errors[2] < 1e-7


def test_analysis_writes_tables_and_figures(tmp_path) -> None:
    results = tmp_path / "results"
    cfg = compose_config("task=toy", "task.methods=[aca,adjoint,naive]", "task.T_num=3",
                         "task.solvers=[bosh3,dopri5]", "task.tolerances=[1e-3,1e-6]")
    result = run(cfg, results)["result"]
    rows = json.loads((results / "toy.json").read_text())["at_T_report"]
    assert result["ordering"] == ordering_sentence(rows, 19.5)
    for key in ("abs_err_z0", "abs_err_alpha"):  # the sentence names the measured ordering
        ours = " < ".join(row["method"] for row in sorted(rows, key=lambda row: row[key]))
        assert f"is {ours}, which" in result["ordering"]
    for name in ("toy.md", "toy_error_vs_T.png", "toy_error_vs_tol.png", "toy.json"):
        assert (results / name).is_file()
    with (results / "toy_error_vs_tol.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 2 * 3  # solvers x tolerances x methods
    assert all(math.isfinite(float(row["rel_err_z0"])) for row in rows)
    with (results / "toy_error_vs_T.csv").open() as handle:
        assert {float(row["T"]) for row in csv.DictReader(handle)} == {10.0, 15.0, 19.5, 20.0}


def test_ordering_sentence_says_whether_the_paper_s_ordering_holds() -> None:
    def rows(z0_errors: list[float], alpha_errors: list[float]) -> list[dict]:
        return [{"method": method, "abs_err_z0": z0, "abs_err_alpha": alpha}
                for method, z0, alpha in zip(("aca", "adjoint", "naive"), z0_errors,
                                             alpha_errors)]

    matching = ordering_sentence(rows([0.1, 0.2, 0.3], [1.0, 2.0, 3.0]), 19.5)
    assert matching.count("is aca < adjoint < naive, which matches the paper's") == 2
    assert "does not match" not in matching
    mixed = ordering_sentence(rows([0.3, 0.2, 0.1], [1.0, 2.0, 3.0]), 19.5)
    assert ("for dL/dz0 our ordering at T=19.5 is naive < adjoint < aca, which does not match "
            "the paper's aca < adjoint < naive") in mixed
    assert "for dL/dalpha our ordering at T=19.5 is aca < adjoint < naive, which matches" in mixed


def test_unknown_method_in_the_comparison_is_named() -> None:
    cfg = compose_config("task=toy", "task.methods=[aca,backprop]")
    with pytest.raises(ConfigError, match="backprop.*choose one of: aca, adjoint, naive"):
        build_task(cfg).analyze(None)


def test_method_selects_what_the_analysis_runs(tmp_path, capsys) -> None:
    """task=toy measures the run's method= (a sweep over method= runs each once); the toy
    presets compare all three."""
    assert compose_config("+experiment=toy").task.methods == ["aca", "adjoint", "naive"]
    cfg = compose_config("task=toy", "method=adjoint", "task.T_num=2", "task.solvers=[dopri5]",
                         "task.tolerances=[1e-3]", "trainer.progress=true")
    result = run(cfg, tmp_path)["result"]
    assert [key for key in result if key.startswith("abs_err_z0")] == ["abs_err_z0.adjoint"]
    assert result["ordering"].startswith("One gradient method ran")
    table = (tmp_path / "toy.md").read_text()
    assert "| adjoint (selected) |" in table and "| aca" not in table
    with (tmp_path / "toy_error_vs_tol.csv").open() as handle:
        assert {row["method"] for row in csv.DictReader(handle)} == {"adjoint"}
    bars = capsys.readouterr().err  # the same tqdm bar as training's, over 3 T values + 1 tolerance
    assert "toy gradients" in bars and "/4 " in bars


def test_paper_stack_reproduces_the_authors_aca_and_the_paper_s_ordering() -> None:
    """In the setting fitted to the paper's figure (docs/paper.md, exp. 1) our ACA on
    dopri5_classic gives the authors' TorchDiffEqPack ACA gradient to 2 %, and the paper's
    ordering ACA < adjoint < naive (torchdiffeq) appears, as the authors' stack gives it."""
    pytest.importorskip("TorchDiffEqPack")
    rows = [paper_stack_gradient(stack, 19.5, 0.25, 1.0, 1e-5, 1e-6) for stack in PAPER_STACK]
    error = {row["stack"]: row["abs_err_z0"] for row in rows}
    ours, authors = error["aca (dopri5_classic)"], error["authors' ACA (TorchDiffEqPack)"]
    assert ours == pytest.approx(authors, rel=0.02)
    assert ours < error["torchdiffeq odeint_adjoint"] < error["torchdiffeq odeint"]
    assert "appears" in paper_stack_sentence(rows, 19.5)


def test_dopri5_classic_changes_only_the_error_estimate() -> None:
    """Same stages, solution and dense output as dopri5; another embedded estimate, so
    other steps: the toy's forward error with dopri5_classic differs from dopri5's."""
    from aca.solvers import SOLVERS

    classic, dopri5 = SOLVERS["dopri5_classic"], SOLVERS["dopri5"]
    assert (classic.a, classic.b, classic.c, classic.dense) == (dopri5.a, dopri5.b, dopri5.c,
                                                               dopri5.dense)
    assert classic.b_error != dopri5.b_error
    assert sum(classic.b_error) == pytest.approx(0.0, abs=1e-15)
    ode = {"solver": "dopri5", "rtol": 1e-5, "atol": 1e-6, "step_size": None}
    plain = measure_gradient("aca", 19.5, 0.25, 1.0, ode)
    other = measure_gradient("aca", 19.5, 0.25, 1.0, {**ode, "solver": "dopri5_classic"})
    assert other["abs_err_z0"] != pytest.approx(plain["abs_err_z0"], rel=0.05)
