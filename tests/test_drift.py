"""Drift: the cheap deterministic targets, rerun with the code under test, must give the
committed records (to the tolerances of ``aca.report.drift.DRIFT_CHECKS``, which say why).
A failure means the code now computes other numbers than results/ shows: rerun the
target named in the message (and commit its records) if the change is intended."""

from __future__ import annotations

from pathlib import Path

import pytest

from aca.report import drift


@pytest.mark.parametrize("name", drift.DRIFT_CHECKS)
def test_committed_records_reproduce(name: str, tmp_path: Path) -> None:
    try:
        found = drift.drift(name, tmp_path)
    except drift.Unverifiable as reason:
        pytest.skip(str(reason))
    target = drift.DRIFT_CHECKS[name].target
    assert not found, (f"{len(found)} value(s) differ from the committed records; if the change "
                       f"is intended, rerun `python scripts/reproduce.py run {target}`:\n"
                       + "\n".join(found[:20]))
