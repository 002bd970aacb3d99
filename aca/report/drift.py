"""Drift: the cheap deterministic targets, rerun in-process with the code under test, must
give the committed records (``python scripts/reproduce.py drift``; tests/test_drift.py)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aca.errors import ConfigError, DataError
from aca.report.plan import REPO_ROOT
from aca.report.records import shown, stamp_of

#: values that differ between identical runs: timings, where and when, the stamp
VOLATILE = frozenset({"provenance", "command", "out_dir", "date", "time_s", "total_time_s",
                      "wall_time_s", "train_time_s", "test_time_s"})


@dataclass(frozen=True)
class DriftCheck:
    """A cheap deterministic ``aca-run`` job whose records must equal the committed ones.

    ``overrides``: the job; ``record``: the committed record (under results/) whose stamp
    makes the check apply; ``files``: pairs (committed file under results/, new file in the
    job's run folder) compared value by value to relative tolerance ``rtol`` (integers such
    as NFE exactly, in effect), leaving out ``VOLATILE`` keys; ``columns``/``rows`` restrict
    a CSV to the values that do not depend on the CPU, and to the epochs of a shortened run."""

    target: str
    overrides: tuple[str, ...]
    record: str
    files: tuple[tuple[str, str], ...]
    rtol: float
    columns: tuple[str, ...] | None = None
    rows: int | None = None


# Tolerances, measured by rerunning each job with torch's scalar kernels
# (ATEN_CPU_CAPABILITY=default, ONEDNN_MAX_CPU_ISA=SSE41) against AVX-512 on one machine;
# AVX2 against AVX-512 gave bit-identical records for every job but digits.
# - toy: gradients of a linear ODE in float64; the largest change was 1.2e-11 (relative).
# - vdp_reconstruct: van der Pol's reverse-time solves amplify round-off, most in dopri8's
#   rows: up to 6.1e-4 (reverse error and gradient errors), so 1e-3; NFE stays exact.
# - digits: float32 training is chaotic across CPUs (test loss after one epoch moved by 20 %),
#   so only the solver's counts of the first epoch (identical on all three) and its mean
#   training loss (moved by 2.8e-4) are compared, to 1e-3: a changed step-size controller or
#   initial step changes the counts (the stale records of issue 19: 502 vs 552 forward NFE).
DRIFT_CHECKS: dict[str, DriftCheck] = {
    "toy": DriftCheck("toy", ("+experiment=toy",), "toy/toy.json",
                      tuple((f"toy/{name}", name) for name in
                            ("toy.json", "toy_error_vs_T.csv", "toy_error_vs_tol.csv")), 1e-6),
    "toy_decay": DriftCheck("toy", ("+experiment=toy_decay",), "toy/decay/toy.json",
                            tuple((f"toy/decay/{name}", name) for name in
                                  ("toy.json", "toy_error_vs_T.csv", "toy_error_vs_tol.csv")),
                            1e-6),
    # n_points shapes the figure only (its reverse curves' last point, x_rev(0), is the same
    # solve from T to 0 at any n_points), not the records compared
    "vdp_reconstruct": DriftCheck("vdp", ("+experiment=vdp_reconstruct", "task.n_points=2"),
                                  "vdp/vdp_reconstruction.json",
                                  (("vdp/vdp_reconstruction.json", "vdp_reconstruction.json"),),
                                  1e-3),
    # the first of the 15 epochs of digits' node18-aca run (its schedule steps at epoch 10)
    "digits": DriftCheck("digits", ("+experiment=digits_methods", "method=aca", "task.epochs=1",
                                    "trainer.checkpoint=false"),
                         "digits/runs/methods/node18-aca-seed0/result.json",
                         (("digits/runs/methods/node18-aca-seed0/metrics.csv", "metrics.csv"),),
                         1e-3, columns=("epoch", "train_loss", "nfe_forward", "nfe_backward",
                                        "accepted", "rejected", "test_nfe_per_batch"), rows=1),
}


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def differences(committed: Any, new: Any, rtol: float, where: str = "") -> list[str]:
    """Where two records differ: numbers beyond ``rtol`` (relative), anything else unequal;
    ``VOLATILE`` keys are left out."""
    if isinstance(committed, dict) and isinstance(new, dict):
        found = []
        for key in [k for k in {**committed, **new} if k not in VOLATILE]:
            if key not in committed or key not in new:
                side = "committed" if key in committed else "new"
                found.append(f"{where}.{key}: only in the {side} record")
            else:
                found += differences(committed[key], new[key], rtol, f"{where}.{key}")
        return found
    if isinstance(committed, list) and isinstance(new, list):
        if len(committed) != len(new):
            return [f"{where}: {len(committed)} entries committed, {len(new)} now"]
        return [line for i, (a, b) in enumerate(zip(committed, new))
                for line in differences(a, b, rtol, f"{where}[{i}]")]
    a, b = _number(committed), _number(new)
    if a is not None and b is not None:
        same = a == b or (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rtol)
    else:
        same = committed == new
    return [] if same else [f"{where}: committed {committed!r}, now {new!r}"]


def _load(path: Path, spec: DriftCheck) -> Any:
    if not path.is_file():
        raise DataError(f"{shown(path)} is missing: run `python scripts/reproduce.py run "
                        f"{spec.target}`")
    if path.suffix == ".json":
        return json.loads(path.read_text())
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))[:spec.rows]
    return [{k: v for k, v in row.items() if spec.columns is None or k in spec.columns}
            for row in rows]


def compose_job(overrides: Sequence[str]) -> Any:
    """The config ``aca-run OVERRIDES`` composes (one job, no sweep)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def drift(name: str, workdir: Path, results: Path = REPO_ROOT / "results") -> list[str]:
    """Rerun drift check ``name`` in this process, in run folder ``workdir``; return how its
    records
    differ from the committed ones under ``results`` (empty: they reproduce). A committed
    record without a stamp (or missing) is a DataError: which code made it is unknown, so
    it cannot vouch for the code under test."""
    from aca.train import run

    spec = DRIFT_CHECKS[name]
    if stamp_of(_load(results / spec.record, spec)) is None:
        raise DataError(f"{spec.record} has no provenance stamp: rerun it with `python "
                        f"scripts/reproduce.py run {spec.target}` and commit its records")
    run(compose_job(spec.overrides), workdir)
    found = []
    for committed, new in spec.files:
        found += differences(_load(results / committed, spec), _load(workdir / new, spec),
                             spec.rtol, committed)
    return found


def drift_command(names: Sequence[str]) -> int:
    """``drift``: rerun each check (one torch thread), print how it went; 1 on any drift or
    on a committed record that is missing or unstamped."""
    import tempfile

    import torch

    unknown = [name for name in names if name not in DRIFT_CHECKS]
    if unknown:
        raise ConfigError(f"unknown drift check {unknown[0]!r}; choose one of: "
                          f"{', '.join(DRIFT_CHECKS)}")
    torch.set_num_threads(1)
    drifted = False
    for name in names or DRIFT_CHECKS:
        began = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory() as workdir, \
                    contextlib.redirect_stdout(io.StringIO()):  # the runs' own tables
                found = drift(name, Path(workdir))
        except DataError as reason:
            drifted = True
            print(f"FAILED  {name}: {reason}")
            continue
        seconds = time.perf_counter() - began
        if not found:
            print(f"ok      {name}: reproduces the committed records ({seconds:.1f} s)")
            continue
        drifted = True
        print(f"DRIFT   {name}: {len(found)} value(s) differ from the committed records "
              f"({seconds:.1f} s); rerun `python scripts/reproduce.py run "
              f"{DRIFT_CHECKS[name].target}` if the change is intended")
        print("\n".join(f"    {line}" for line in found[:20]))
    return 1 if drifted else 0
