"""The claims table: each verdict is decided from the records by a rule that can go either
way, and a claim without enough records says which command makes them."""

from __future__ import annotations

import json
from pathlib import Path

from aca.report import claims
from aca.report.tables import Records


def write(path: Path, payload: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))


def toy_record(root: Path, controlled: dict[str, float], stack: dict[str, float]) -> None:
    write(root / "toy/paper/toy.json", {
        "at_T_report": [{"method": m, "abs_err_z0": e} for m, e in controlled.items()],
        "paper_stack_at_T_report": [{"stack": s, "abs_err_z0": e} for s, e in stack.items()]})


STACK = {"aca (dopri5_classic)": 0.53, "torchdiffeq odeint_adjoint": 0.63,
         "torchdiffeq odeint": 0.94}


def test_toy_is_partly_reproduced_when_only_the_paper_s_stack_orders_like_the_paper(
        tmp_path: Path) -> None:
    toy_record(tmp_path, {"aca": 0.76, "adjoint": 0.50, "naive": 0.74}, STACK)
    row = claims.toy(Records(tmp_path))
    assert row[3] == claims.PARTLY and "0.53" in row[2]
    toy_record(tmp_path, {"aca": 0.1, "adjoint": 0.5, "naive": 0.7}, STACK)
    assert claims.toy(Records(tmp_path))[3] == claims.REPRODUCED


def test_vdp_drift_is_judged_at_the_paper_s_tolerances(tmp_path: Path) -> None:
    starts = [{"rtol": 1e-3, "atol": 1e-6, "x_rev0": 1.54}, {"rtol": 1e-3, "atol": 1e-3,
                                                             "x_rev0": 0.89}]
    write(tmp_path / "vdp/vdp_reconstruction.json", {"mu": 0.2, "reverse_starts": starts})
    assert claims.vdp(Records(tmp_path))[3] == claims.REPRODUCED
    starts[0]["x_rev0"] = starts[1]["x_rev0"] = 1.99
    write(tmp_path / "vdp/vdp_reconstruction.json", {"mu": 0.2, "reverse_starts": starts})
    assert claims.vdp(Records(tmp_path))[3] == claims.NOT_REPRODUCED


def digits_runs(root: Path, accuracy: dict[str, list[float]]) -> None:
    for method, values in accuracy.items():
        for seed, value in enumerate(values):
            write(root / f"digits/runs/methods/node18-{method}-seed{seed}/result.json",
                  {"final": {"test_acc": value}, "wall_time_s": 10.0 + seed})


def test_digits_needs_three_seeds_and_a_lead_beyond_their_spread(tmp_path: Path) -> None:
    digits_runs(tmp_path, {"aca": [0.99, 0.98], "adjoint": [0.9, 0.91], "naive": [0.9, 0.9]})
    row = claims.digits(Records(tmp_path))
    assert row[3] == "missing" and "3 seeds" in row[4]
    digits_runs(tmp_path, {"aca": [0.99, 0.98, 0.99], "adjoint": [0.98, 0.99, 0.985],
                           "naive": [0.985, 0.98, 0.99]})
    assert claims.digits(Records(tmp_path))[3] == claims.NOT_REPRODUCED  # equal times, no lead


def test_hopper_counts_cells_where_aca_is_lower_beyond_the_seeds_spread(tmp_path: Path) -> None:
    lines = ["model,observed_fraction,method,seed,test_mse"]
    for model in ("latent_ode", "ode_rnn"):
        for fraction in (0.1, 0.2, 0.5):
            for seed in range(3):
                lines.append(f"{model},{fraction},aca,{seed},{0.010 + 0.0001 * seed}")
                lines.append(f"{model},{fraction},adjoint,{seed},{0.020 + 0.0001 * seed}")
    (tmp_path / "mujoco").mkdir()
    (tmp_path / "mujoco/table.csv").write_text("\n".join(lines) + "\n")
    row = claims.hopper(Records(tmp_path))
    assert row[3] == claims.REPRODUCED and "6 of 6" in row[2]


def test_every_claim_without_records_names_its_command(tmp_path: Path) -> None:
    table = claims.claims_table(Records(tmp_path))
    for row in table.rows:
        assert row[3] in ("missing", claims.NOT_RUN), row
        assert "python scripts/reproduce.py run" in row[4] or "scripts/download_cifar" in row[4]
