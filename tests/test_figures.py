"""Every generator of a committed figure draws its titles, axis labels and legends inside
the figure, and no title or label over another, at the size it saves
(``aca.report.format.layout_problems``, a FigureLayoutWarning here turned into an error).
Drawn again from the committed records where they hold what the figure needs; the
figures a run draws from tensors it does not keep get small made-up data with the titles
and labels a run gives them."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT

from aca.report import figures
from aca.report.format import FigureLayoutWarning, layout_problems, pyplot
from aca.report.summaries import SUMMARIES
from aca.tasks.toy import PAPER_STACK

pytest.importorskip("matplotlib")

RESULTS = REPO_ROOT / "results"


@pytest.fixture(autouse=True)
def layout_is_an_error():
    with warnings.catch_warnings():
        warnings.simplefilter("error", FigureLayoutWarning)
        yield


def _rows(path: Path) -> list[dict]:
    """A committed CSV table, its numbers as floats."""
    def value(text: str) -> float | str:
        try:
            return float(text)
        except ValueError:
            return text
    with path.open() as handle:
        return [{key: value(text) for key, text in row.items()} for row in csv.DictReader(handle)]


def _in_order(rows: list[dict], key: str) -> list[str]:
    return list(dict.fromkeys(row[key] for row in rows))


def test_the_check_finds_overlapping_and_cut_off_titles() -> None:
    figure, axes = pyplot().subplots(1, 2, figsize=(6, 3))
    for axis in axes:
        axis.set_title("a title much too long for half of a figure six inches wide")
    figure.tight_layout()
    problems = layout_problems(figure)
    pyplot().close(figure)
    assert any("overlaps" in problem for problem in problems)
    assert any("cut off" in problem for problem in problems)


@pytest.mark.parametrize(("kind", "runs", "options"), [
    ("methods", "digits/runs/methods", {"title": "digits (8x8), heun_euler rtol=atol=1e-2"}),
    ("seeds", "digits/runs/seeds", {"title": "digits (8x8)"}),
    ("three_body", "three_body/runs", {}),
    ("three_body", "three_body/paper/runs", {}),
])
def test_cross_run_figures_from_the_committed_runs(kind, runs, options, tmp_path) -> None:
    SUMMARIES[kind]([RESULTS / runs], tmp_path, **options)


@pytest.mark.parametrize("folder", ["toy", "toy/decay", "toy/paper"])
def test_toy_figures_from_the_committed_tables(folder, tmp_path) -> None:
    record = json.loads((RESULTS / folder / "toy.json").read_text())
    t_rows = _rows(RESULTS / folder / "toy_error_vs_T.csv")
    tol_rows = _rows(RESULTS / folder / "toy_error_vs_tol.csv")
    methods = _in_order(t_rows, "method")
    figures.toy_error_vs_T(t_rows, methods, tmp_path / "t.png", record["alpha"], record["z0"])
    figures.toy_error_vs_tol(tol_rows, methods, _in_order(tol_rows, "solver"),
                             tmp_path / "tol.png", record["T_report"])
    stack = RESULTS / folder / "toy_paper_stack.csv"
    if stack.is_file():
        figures.toy_paper_stack(_rows(stack), list(PAPER_STACK), t_rows, tmp_path / "stack.png",
                                record["alpha"], record["z0"])


def test_vdp_error_figure_from_the_committed_table(tmp_path) -> None:
    rows = _rows(RESULTS / "vdp" / "vdp_reconstruction.csv")
    figures.vdp_errors(rows, _in_order(rows, "solver"), ["aca", "adjoint", "naive"],
                       tmp_path / "errors.png")


def test_figures_a_run_draws(tmp_path) -> None:
    """Van der Pol's reconstruction and fit, a Robertson fit (log time, three panels) and
    the time series' predictions, whose data a run does not keep: made-up curves with a
    run's titles and labels."""
    times = torch.linspace(0.0, 10.0, 21)
    curve = torch.stack([2 * torch.cos(times), -2 * torch.sin(times)], dim=-1)
    runs = {(tol, tol * 1e-3): {"times": times.flip(0), "reverse": curve.flip(0), "error": 0.5}
            for tol in (1e-3, 1e-5)}
    figures.vdp_reconstruction(runs, curve, times, tmp_path / "recon.png", 0.2, "dopri5")
    figures.trajectory_fit(times, curve.expand(3, -1, -1), curve.expand(3, -1, -1),
                           "Van der Pol fit (adjoint): μ = 0.3081, true 1", tmp_path / "fit.png")
    kinetics = torch.rand(3, 21, 3, generator=torch.Generator().manual_seed(0))
    figures.trajectory_fit(torch.logspace(-3, 3, 21), kinetics, kinetics,
                           "Robertson fit (aca): k = (0.04, 3e+07, 1e+04)",
                           tmp_path / "robertson.png", log_time=True,
                           components=((0, "y1"), (1, "1e4 · y2"), (2, "y3")))
    series, steps, dims = 4, 30, 3
    values = torch.rand(series, steps, dims, generator=torch.Generator().manual_seed(0))
    arrays = {"times": torch.linspace(0.0, 1.0, steps), "values": values,
              "mask": torch.ones_like(values), "observed": (values > 0.7).float(),
              "predictions": values + 0.1}
    for task in ("mujoco", "sines"):
        figures.series_prediction(arrays, 0, list(range(dims)),
                                  f"{task}: latent_ode, adjoint, 20% observed", task,
                                  tmp_path / f"{task}.png")
        runs = [(method, 0.0123, arrays) for method in ("aca", "adjoint", "naive")]
        figures.series_methods({"latent_ode": runs, "ode_rnn": runs}, "20% observed, seed 0",
                               task, [0, 1], [0, 1, 2], tmp_path / f"{task}_methods.png")
