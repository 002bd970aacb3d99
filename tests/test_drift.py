"""Drift: the cheap deterministic targets, rerun with the code under test, must give the
committed records (to the tolerances of ``aca.report.drift.DRIFT_CHECKS``, which say why).
A failure means the code now computes other numbers than results/ shows: rerun the
target named in the message (and commit its records) if the change is intended."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aca.errors import DataError
from aca.report import drift


@pytest.mark.parametrize("name", drift.DRIFT_CHECKS)
def test_committed_records_reproduce(name: str, tmp_path: Path) -> None:
    found = drift.drift(name, tmp_path)  # a DataError when the record is missing or unstamped
    target = drift.DRIFT_CHECKS[name].target
    assert not found, (f"{len(found)} value(s) differ from the committed records; if the change "
                       f"is intended, rerun `python scripts/reproduce.py run {target}`:\n"
                       + "\n".join(found[:20]))


def test_an_unstamped_committed_record_fails_instead_of_skipping(tmp_path: Path) -> None:
    """A record without a stamp was made by unknown code: it cannot pass for the code now."""
    spec = drift.DRIFT_CHECKS["toy"]
    record = tmp_path / spec.record
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"rows": []}))
    with pytest.raises(DataError, match="no provenance stamp"):
        drift.drift("toy", tmp_path / "run", results=tmp_path)
