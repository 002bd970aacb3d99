"""The claims table: each verdict is decided from the records by a rule that can go either
way, each threshold is pinned by values just inside and just outside it, and a claim
without enough records says which command makes them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from aca.report import claims
from aca.report.baselines import baseline_predictions, masked_mse
from aca.report.tables import Records


def write(path: Path, payload: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))


def write_csv(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------ shared rules


def test_compare_needs_a_lead_beyond_the_larger_spread_either_way() -> None:
    ours, theirs = [10.0, 12.0], [8.0, 8.0]  # lead 3, stdev 1.414
    assert claims.compare(ours, theirs, higher_is_better=True) == claims.REPRODUCED
    assert claims.compare(ours, theirs, higher_is_better=False) == claims.NOT_REPRODUCED
    # a lead of 0.9 std is inside the margin, 1.1 std outside
    assert claims.compare([10.0, 12.0], [11.0 - 0.9 * 2**0.5] * 2, True) == claims.INCONCLUSIVE
    assert claims.compare([10.0, 12.0], [11.0 - 1.1 * 2**0.5] * 2, True) == claims.REPRODUCED


def test_combine_says_partly_only_when_part_holds() -> None:
    yes, no, unsure = claims.REPRODUCED, claims.NOT_REPRODUCED, claims.INCONCLUSIVE
    assert claims.combine([yes, yes]) == yes
    assert claims.combine([yes, unsure]) == claims.PARTLY
    assert claims.combine([yes, no]) == claims.PARTLY
    assert claims.combine([no, unsure]) == no
    assert claims.combine([unsure, unsure]) == unsure


# ------------------------------------------------------------------ toy


def toy_records(root: Path, stack: dict[float, dict[str, float]],
                shared: dict[float, dict[str, float]]) -> None:
    write(root / "toy/paper/toy.json", {"alpha": 0.25})
    lines = ["stack,as_method,rtol,atol,T,abs_err_z0"]
    lines += [f"{claims.TOY_STACK[m]},{m},1e-05,1e-06,{t},{e}"
              for t, errors in stack.items() for m, e in errors.items()]
    write_csv(root / "toy/paper/toy_paper_stack.csv", lines)
    lines = ["method,solver,rtol,atol,T,abs_err_z0"]
    lines += [f"{m},dopri5,1e-05,1e-06,{t},{e}" for t, errors in shared.items()
              for m, e in errors.items()]
    write_csv(root / "toy/paper/toy_error_vs_T.csv", lines)


def lowest_at(count: int, total: int) -> dict[float, dict[str, float]]:
    """Errors at ``total`` T with ACA lowest at the first ``count``."""
    return {9.5 + t / 2: {"aca": 0.1 if t < count else 0.3, "adjoint": 0.2, "naive": 0.25}
            for t in range(total)}


def test_toy_judges_every_t_in_each_stack(tmp_path: Path) -> None:
    toy_records(tmp_path, lowest_at(21, 21), lowest_at(0, 21))
    records = Records(tmp_path)
    stack, shared = claims.toy_paper_stack(records), claims.toy_shared(records)
    assert stack[3] == claims.REPRODUCED and "21 of 21" in stack[2]
    assert shared[3] == claims.NOT_REPRODUCED and "0 of 21" in shared[2]
    toy_records(tmp_path, lowest_at(20, 21), lowest_at(21, 21))
    stack = claims.toy_paper_stack(Records(tmp_path))
    assert stack[3] == claims.PARTLY and "not at T = 19.5" in stack[2]
    assert claims.toy_shared(Records(tmp_path))[3] == claims.REPRODUCED


@pytest.mark.parametrize(("lowest", "total", "verdict"), [
    (11, 21, claims.PARTLY), (10, 21, claims.NOT_REPRODUCED),  # just above / at half
    (3, 4, claims.PARTLY), (2, 4, claims.NOT_REPRODUCED), (4, 4, claims.REPRODUCED)])
def test_toy_threshold_is_more_than_half_of_the_t(tmp_path: Path, lowest: int, total: int,
                                                   verdict: str) -> None:
    toy_records(tmp_path, lowest_at(lowest, total), lowest_at(lowest, total))
    assert claims.toy_paper_stack(Records(tmp_path))[3] == verdict


def test_toy_tie_is_not_lowest(tmp_path: Path) -> None:
    tie = {9.5: {"aca": 0.2, "adjoint": 0.2, "naive": 0.3}}
    toy_records(tmp_path, tie, tie)
    assert claims.toy_paper_stack(Records(tmp_path))[3] == claims.NOT_REPRODUCED


# ------------------------------------------------------------------ van der Pol, three-body


def test_vdp_drift_is_judged_at_the_paper_s_tolerances(tmp_path: Path) -> None:
    starts = [{"rtol": 1e-3, "atol": 1e-6, "x_rev0": 1.54}, {"rtol": 1e-3, "atol": 1e-3,
                                                             "x_rev0": 0.89}]
    write(tmp_path / "vdp/vdp_reconstruction.json", {"mu": 0.2, "reverse_starts": starts})
    assert claims.vdp(Records(tmp_path))[3] == claims.REPRODUCED
    starts[0]["x_rev0"] = starts[1]["x_rev0"] = 1.95  # within 0.1 of x(0) = 2
    write(tmp_path / "vdp/vdp_reconstruction.json", {"mu": 0.2, "reverse_starts": starts})
    assert claims.vdp(Records(tmp_path))[3] == claims.NOT_REPRODUCED
    starts[1]["x_rev0"] = 1.85
    write(tmp_path / "vdp/vdp_reconstruction.json", {"mu": 0.2, "reverse_starts": starts})
    assert claims.vdp(Records(tmp_path))[3] == claims.PARTLY


def three_body_records(root: Path, errors: dict[str, float]) -> None:
    for method, error in errors.items():
        write(root / f"three_body/paper/runs/physics_{method}.json",
              {"best_mass_error": error, "best_m1": 1.1, "best_m2": 1.1, "best_m3": 0.9})


@pytest.mark.parametrize(("error", "verdict"), [
    (0.9e-4, claims.REPRODUCED), (1.5e-4, claims.NOT_REPRODUCED),
    (5e-4, claims.NOT_REPRODUCED)])
def test_three_body_tolerance_is_1e_4(tmp_path: Path, error: float, verdict: str) -> None:
    three_body_records(tmp_path, {"aca": error, "adjoint": 1e-2, "naive": 1e-2})
    row = claims.three_body(Records(tmp_path))
    assert row[3] == verdict and "do not get as close" in row[4]


def test_three_body_says_when_the_masses_do_not_separate_the_methods(tmp_path: Path) -> None:
    three_body_records(tmp_path, {"aca": 1e-5, "adjoint": 2e-5, "naive": 1e-2})
    assert "adjoint get as close" in claims.three_body(Records(tmp_path))[4]


# ------------------------------------------------------------------ Hopper


def hopper_records(root: Path, aca: float, adjoint: float, baseline: float | None,
                   spread: float = 0.0001) -> None:
    lines = ["model,observed_fraction,method,seed,test_mse"]
    for model in ("latent_ode", "ode_rnn"):
        for fraction in (0.1, 0.2, 0.5):
            for seed in range(3):
                lines.append(f"{model},{fraction},aca,{seed},{aca + spread * seed}")
                lines.append(f"{model},{fraction},adjoint,{seed},{adjoint + spread * seed}")
    write_csv(root / "mujoco/table.csv", lines)
    path = root / "mujoco/baselines.csv"
    if baseline is None:
        path.unlink(missing_ok=True)
        return
    lines = ["observed_fraction,seed,baseline,test_mse"]
    lines += [f"{fraction},{seed},{name},{baseline * (1 + index)}"
              for fraction in (0.1, 0.2, 0.5) for seed in range(3)
              for index, name in enumerate(("linear", "nearest", "series_mean"))]
    write_csv(path, lines)


def test_hopper_is_judged_only_where_the_models_beat_the_baselines(tmp_path: Path) -> None:
    hopper_records(tmp_path, 0.010, 0.020, baseline=0.05)
    row = claims.hopper(Records(tmp_path))
    assert row[3] == claims.REPRODUCED and "6 of 6" in row[2]
    hopper_records(tmp_path, 0.020, 0.010, baseline=0.05)
    assert claims.hopper(Records(tmp_path))[3] == claims.NOT_REPRODUCED
    hopper_records(tmp_path, 0.010, 0.0101, baseline=0.05)  # inside the seeds' spread
    assert claims.hopper(Records(tmp_path))[3] == claims.INCONCLUSIVE
    hopper_records(tmp_path, 0.010, 0.020, baseline=0.001)  # linear interpolation wins
    row = claims.hopper(Records(tmp_path))
    assert row[3] == claims.INCONCLUSIVE and "0 of 6" in row[2] and "linear" in row[2]
    hopper_records(tmp_path, 0.010, 0.020, baseline=None)
    row = claims.hopper(Records(tmp_path))
    assert row[3] == claims.INCONCLUSIVE and "no baselines record" in row[4]


@pytest.mark.parametrize(("baseline", "verdict"), [
    (0.0202, claims.REPRODUCED), (0.0200, claims.INCONCLUSIVE)])
def test_hopper_models_must_beat_the_best_baseline(tmp_path: Path, baseline: float,
                                                   verdict: str) -> None:
    # the worse model's mean is 0.0201; the best baseline just above or below it
    hopper_records(tmp_path, 0.010, 0.020, baseline=baseline)
    assert claims.hopper(Records(tmp_path))[3] == verdict


@pytest.mark.parametrize(("gap", "verdict"), [
    (0.9, claims.INCONCLUSIVE), (1.1, claims.REPRODUCED)])
def test_hopper_difference_must_exceed_the_seeds_spread(tmp_path: Path, gap: float,
                                                        verdict: str) -> None:
    # three seeds 0.0001 apart: sample std 0.0001; the adjoint behind by gap std
    hopper_records(tmp_path, 0.010, 0.010 + gap * 0.0001, baseline=0.05)
    assert claims.hopper(Records(tmp_path))[3] == verdict


def test_baselines_predict_from_the_observed_points_alone() -> None:
    times = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])
    values = torch.tensor([[[0.0], [10.0], [20.0], [30.0], [40.0]]])
    observed = torch.tensor([[[0.0], [1.0], [0.0], [1.0], [0.0]]])
    found = {name: p.flatten().tolist()
             for name, p in baseline_predictions(times, values, observed).items()}
    assert found == {"series_mean": [20.0] * 5, "nearest": [10.0, 10.0, 10.0, 30.0, 30.0],
                     "linear": [10.0, 10.0, 20.0, 30.0, 30.0]}
    assert masked_mse(torch.zeros(1, 5, 1), values, torch.ones(1, 5, 1)) == 600.0


def test_baselines_script_on_sines_runs(tmp_path: Path) -> None:
    """scripts/timeseries_baselines.py rebuilds a run's test set from its config.yaml (the
    sines task here: the Hopper data needs the mujoco extra) and scores the baselines."""
    import importlib.util

    from omegaconf import OmegaConf

    config = Path(__file__).resolve().parents[1] / "configs"
    cfg = OmegaConf.merge(OmegaConf.load(config / "task/sines.yaml"), {"n_series": 20})
    run = {"seed": 0, "data_dir": str(tmp_path), "task": cfg,
           "method": {"name": "aca"}, "solver": {"name": "dopri5", "rtol": 1e-3, "atol": 1e-4},
           "trainer": {"progress": "false"}}
    (tmp_path / "runs/a").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(run), tmp_path / "runs/a/config.yaml")
    spec = importlib.util.spec_from_file_location(
        "timeseries_baselines", config.parent / "scripts/timeseries_baselines.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.baseline_rows(tmp_path / "runs")
    assert [row["baseline"] for row in rows] == ["series_mean", "nearest", "linear"]
    assert all(0 < row["test_mse"] for row in rows)
    mse = {row["baseline"]: row["test_mse"] for row in rows}
    assert mse["linear"] < mse["series_mean"]  # smooth sines: interpolation beats the mean


# ------------------------------------------------------------------ NODE-18 (digits)


def digits_runs(root: Path, accuracy: dict[str, list[float]],
                seconds: dict[str, list[float]] | None = None) -> None:
    for method, values in accuracy.items():
        for seed, value in enumerate(values):
            time = (seconds or {}).get(method, [10.0 + seed] * len(values))[seed]
            write(root / f"digits/runs/methods/node18-{method}-seed{seed}/result.json",
                  {"final": {"test_acc": value}, "wall_time_s": time})


def verdicts(rows: list[list[str]]) -> dict[str, str]:
    return {row[0].split(": ACA ")[1]: row[3] for row in rows}


def test_digits_needs_three_seeds(tmp_path: Path) -> None:
    digits_runs(tmp_path, {"aca": [0.99, 0.98], "adjoint": [0.9, 0.91], "naive": [0.9, 0.9]})
    rows = claims.digits(Records(tmp_path))
    assert len(rows) == 4 and all(row[3] == "missing" and "3 seeds" in row[4] for row in rows)


def test_digits_judges_each_sub_claim_on_its_own_and_names_the_stand_in(tmp_path: Path) -> None:
    digits_runs(tmp_path, {"aca": [0.99, 0.98, 0.99], "adjoint": [0.90, 0.91, 0.90],
                           "naive": [0.985, 0.98, 0.99]},
                {"aca": [10.0, 10.5, 11.0], "adjoint": [20.0, 21.0, 20.5],
                 "naive": [5.0, 5.5, 6.0]})
    rows = claims.digits(Records(tmp_path))
    assert verdicts(rows) == {"more accurate than adjoint": claims.REPRODUCED,
                              "faster than adjoint": claims.REPRODUCED,
                              "more accurate than naive": claims.INCONCLUSIVE,
                              "faster than naive": claims.NOT_REPRODUCED}
    assert all("stand-in" in row[0] and "CIFAR" in row[1] for row in rows)


def test_digits_time_needs_a_lead_beyond_the_timings_spread(tmp_path: Path) -> None:
    accuracy = {m: [0.98, 0.98, 0.98] for m in ("aca", "adjoint", "naive")}
    digits_runs(tmp_path, accuracy, {"aca": [10.0, 11.0, 12.0], "adjoint": [11.5] * 3,
                                     "naive": [12.1] * 3})  # std 1: leads 0.5 and 1.1
    found = verdicts(claims.digits(Records(tmp_path)))
    assert found["faster than adjoint"] == claims.INCONCLUSIVE
    assert found["faster than naive"] == claims.REPRODUCED


def test_digits_time_is_judged_seed_by_seed(tmp_path: Path) -> None:
    """A machine that slows down across the sweep (seed 2 three times slower than seed 0)
    hides a steady 10 % lead from a comparison of means; pairs by seed see it, both ways."""
    accuracy = {m: [0.98, 0.98, 0.98] for m in ("aca", "adjoint", "naive")}
    digits_runs(tmp_path, accuracy, {"aca": [10.0, 20.0, 30.0], "adjoint": [11.0, 22.0, 33.0],
                                     "naive": [9.0, 18.2, 27.0]})
    rows = claims.digits(Records(tmp_path))
    found = verdicts(rows)
    assert claims.compare([10.0, 20.0, 30.0], [11.0, 22.0, 33.0], False) == claims.INCONCLUSIVE
    assert found["faster than adjoint"] == claims.REPRODUCED
    assert found["faster than naive"] == claims.NOT_REPRODUCED
    assert "per seed" in rows[1][2] and "0.909" in rows[1][2]


def test_digits_time_pairs_only_seeds_run_with_both_methods(tmp_path: Path) -> None:
    digits_runs(tmp_path, {"aca": [0.98] * 3, "adjoint": [0.98] * 3, "naive": [0.98] * 3},
                {"aca": [10.0, 10.0, 10.0], "adjoint": [20.0] * 3, "naive": [5.0] * 3})
    write(tmp_path / "digits/runs/methods/node18-aca-seed7/result.json",
          {"final": {"test_acc": 0.98}, "wall_time_s": 1.0})  # no adjoint or naive partner
    found = verdicts(claims.digits(Records(tmp_path)))
    assert found["faster than adjoint"] == claims.REPRODUCED
    assert found["faster than naive"] == claims.NOT_REPRODUCED


def test_headline_shows_the_stand_in_against_the_paper(tmp_path: Path) -> None:
    for model, values in (("node18", [0.97, 0.98, 0.975]), ("resnet18", [0.99, 0.995, 0.99])):
        for seed, value in enumerate(values):
            write(tmp_path / f"digits/runs/seeds/{model}-seed{seed}/result.json",
                  {"final": {"test_acc": value}})
    row = claims.headline_digits(Records(tmp_path))
    assert row[3] == claims.NOT_REPRODUCED and "stand-in" in row[0] and "97.5" in row[2]


# ------------------------------------------------------------------ cost


def bench_record(root: Path, peaks: dict[str, dict[str, float]]) -> None:
    rows = [{"problem": "mlp", "setting": setting, "method": method, "peak_mib": peak}
            for setting, by_method in peaks.items() for method, peak in by_method.items()]
    write(root / "bench/bench.json", {"rows": rows})


def test_cost_rule_needs_every_setting_and_says_partly_for_some(tmp_path: Path) -> None:
    bench_record(tmp_path, {"a": {"aca": 1.0, "naive": 3.0, "adjoint": 2.0},
                            "b": {"aca": 1.0, "naive": 1.5, "adjoint": 0.5}})
    records = Records(tmp_path)
    assert claims.cost(records)[3] == claims.REPRODUCED
    adjoint = claims.cost_adjoint(records)
    assert adjoint[3] == claims.PARTLY and "only in mlp b;" in adjoint[4]
    bench_record(tmp_path, {"a": {"aca": 1.0, "naive": 3.0}, "b": {"aca": 1.0, "naive": 0.9}})
    row = claims.cost(Records(tmp_path))  # min ratio 0.9, max 3: part of it
    assert row[3] == claims.PARTLY and "only in mlp a" in row[4]
    bench_record(tmp_path, {"a": {"aca": 1.0, "naive": 0.8, "adjoint": 2.0}})
    assert claims.cost(Records(tmp_path))[3] == claims.NOT_REPRODUCED
    assert claims.cost_adjoint(Records(tmp_path))[3] == claims.NOT_REPRODUCED


def scaling_record(root: Path, memory: dict[str, list[float]],
                   times: dict[str, list[float]],
                   width_memory: dict[str, list[float]] | None = None) -> None:
    width_memory = width_memory or {"adjoint": [1.0, 2.0], "aca": [2.0, 4.0],
                                    "naive": [5.0, 15.0]}
    write(root / claims.SCALING_RECORD, {"steps": [25, 50, 100], "state_mib": 0.25,
                                         "memory": memory, "fwd_bwd_s": times,
                                         "largest_steps": 100, "widths": [16, 32],
                                         "width_steps": 50, "width_memory": width_memory})


def test_cost_scaling_is_judged_from_the_slopes_and_repeated_timings(tmp_path: Path) -> None:
    memory = {"adjoint": [2.0, 2.0, 2.01], "aca": [3.0, 9.25, 21.75],
              "naive": [10.0, 60.0, 160.0]}
    times = {"aca": [1.0, 1.1, 1.2], "naive": [2.0, 2.1, 2.2], "adjoint": [3.0, 3.1, 3.2]}
    scaling_record(tmp_path, memory, times)
    rows = claims.cost_scaling(Records(tmp_path))
    assert [row[3] for row in rows] == [claims.REPRODUCED] * 3
    assert "0.25" in rows[0][2]
    memory["adjoint"] = [2.0, 8.0, 20.0]  # grows by 0.24 MiB a step: not flat
    times["naive"] = [1.1, 1.2, 1.0]  # inside the repeats' spread
    scaling_record(tmp_path, memory, times)
    rows = claims.cost_scaling(Records(tmp_path))
    assert [row[3] for row in rows[:2]] == [claims.PARTLY, claims.PARTLY]
    memory["naive"] = [3.0, 3.1, 3.2]
    times["adjoint"] = [0.5, 0.5, 0.5]
    scaling_record(tmp_path, memory, times)
    rows = claims.cost_scaling(Records(tmp_path))
    assert [row[3] for row in rows[:2]] == [claims.NOT_REPRODUCED, claims.NOT_REPRODUCED]


def test_width_scaling_is_judged_from_the_width_slopes(tmp_path: Path) -> None:
    memory = {"adjoint": [2.0, 2.0, 2.0], "aca": [3.0, 9.0, 21.0], "naive": [10, 60, 160]}
    times = {"aca": [1.0, 1.1], "naive": [2.0, 2.1], "adjoint": [3.0, 3.1]}
    for width_memory, verdict in (
            ({"adjoint": [1.0, 2.0], "aca": [2.0, 4.0], "naive": [5.0, 9.0]}, claims.REPRODUCED),
            ({"adjoint": [1.0, 2.0], "aca": [2.0, 4.0], "naive": [5.0, 8.9]}, claims.PARTLY),
            ({"adjoint": [1.0, 3.0], "aca": [2.0, 3.9], "naive": [5.0, 15.0]},
             claims.NOT_REPRODUCED)):
        scaling_record(tmp_path, memory, times, width_memory)
        row = claims.cost_scaling(Records(tmp_path))[2]
        assert row[3] == verdict and "N_t = 50" in row[2]


# ------------------------------------------------------------------ the central claim


def map_rows(aca: list[tuple[int, float]], adjoint: list[tuple[int, float]]) -> list[dict]:
    return ([{"method": "aca", "nfe": n, "rel_error": e} for n, e in aca]
            + [{"method": "adjoint", "nfe": n, "rel_error": e} for n, e in adjoint])


def test_central_claim_compares_errors_at_equal_or_lower_cost(tmp_path: Path) -> None:
    stiff = map_rows([(100, 1e-8), (200, 1e-10)], [(150, 3.7), (300, 1e-3)])
    mlp = map_rows([(100, 1e-3), (200, 1e-5)], [(150, 1e-4), (300, 1e-6)])
    mixed = map_rows([(100, 1e-3)], [(90, 1e-6), (150, 1e-2)])  # adjoint cheaper in one
    write(tmp_path / claims.MAP_RECORD, {"families": {"stiff": {"rows": stiff},
                                                     "mlp": {"rows": mlp},
                                                     "mixed": {"rows": mixed}}})
    row = claims.central(Records(tmp_path))
    assert row[3] == claims.PARTLY
    assert "stiff reproduced" in row[4] and "mlp not reproduced" in row[4]
    assert "mixed partly" in row[4]
    write(tmp_path / claims.MAP_RECORD, {"families": {"stiff": {"rows": stiff}}})
    assert claims.central(Records(tmp_path))[3] == claims.REPRODUCED


# ------------------------------------------------------------------ no records


def test_every_claim_without_records_names_its_command(tmp_path: Path) -> None:
    table = claims.claims_table(Records(tmp_path))
    assert len(table.rows) == 17  # the width-scaling line of Table 1 included
    for row in table.rows:
        assert row[3] in ("missing", claims.NOT_RUN), row
        assert "python scripts/reproduce.py run" in row[4] or "scripts/download_cifar" in row[4]
