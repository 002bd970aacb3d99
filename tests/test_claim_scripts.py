"""The scripts behind the cost-scaling and central-claim lines of the claims table, at toy
size: their records have what the claim rules read, and the rules judge them."""

from __future__ import annotations

import importlib.util
import math
import statistics
import sys
from pathlib import Path
from types import ModuleType

import pytest

from aca.report import claims
from aca.report.format import write_json
from aca.report.tables import Records

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_cost_scaling_measures_table_1_s_memory_slopes(tmp_path: Path) -> None:
    bench = load("bench_cost_scaling")
    # a 2 KiB state (each step also keeps three 8-byte scalars: its start, size and
    # interval), from 4 steps on (at 2 the peak falls elsewhere: 8 states below 4's)
    record = bench.scaling((4, 8, 16), (4, 8), width=16, batch=32, repeats=2)
    memory = record["memory"]
    assert len(set(memory["adjoint"])) == 1  # flat in N_t
    aca_slope = statistics.linear_regression(record["steps"], memory["aca"]).slope
    assert aca_slope == pytest.approx(record["state_mib"], rel=0.05)  # one state per step
    assert statistics.linear_regression(record["steps"], memory["naive"]).slope > 2 * aca_slope
    assert all(len(runs) == 2 for runs in record["fwd_bwd_s"].values())
    assert record["nfe_at_largest"]["aca"]["nfe_backward"] == 4 * 16  # rk4: 4 per step
    write_json(tmp_path / claims.SCALING_RECORD, record)
    memory_row, time_row, width_row = claims.cost_scaling(Records(tmp_path))
    assert memory_row[3] == claims.REPRODUCED and "width" in width_row[2]
    assert time_row[3] in (claims.REPRODUCED, claims.PARTLY, claims.NOT_REPRODUCED,
                           claims.INCONCLUSIVE)


def test_gradient_map_measures_errors_against_a_checked_reference(tmp_path: Path) -> None:
    mapping = load("gradient_accuracy_map")
    chosen = {family.name: family for family in mapping.families(quick=True)
              if family.name.startswith(("linear", "MLP"))}
    found = {name: mapping.measure(family, (1e-3,), memory=True)
             for name, family in chosen.items()}
    for family in found.values():
        assert family["reference_check"] < 1e-9
        assert {row["method"] for row in family["rows"]} == set(mapping.METHODS)
        assert all(math.isfinite(row["rel_error"]) and row["peak_mib"] > 0
                   for row in family["rows"])
    linear = {row["method"]: row["rel_error"] for row in found["linear, eigenvalues -5..+1"]
              ["rows"]}
    # growing modes: the adjoint's reverse solve loses the decaying ones
    assert linear["aca"] < linear["adjoint"] / 100
    write_json(tmp_path / claims.MAP_RECORD, {"families": found})
    row = claims.central(Records(tmp_path))
    assert "linear, eigenvalues -5..+1 reproduced" in row[4]
