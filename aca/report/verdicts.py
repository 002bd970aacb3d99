"""Verdicts on the paper's claims and the helpers every claim rule uses: reproduced;
partly (the line says which part holds); not reproduced (the records show the opposite,
beyond their noise); inconclusive (the setting cannot separate the methods); not run here;
and "missing" while a record is absent."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from aca.report.records import STALE_MARK
from aca.report.tables import MISSING, Records

REPRODUCED, PARTLY, NOT_REPRODUCED = "reproduced", "partly", "not reproduced"
INCONCLUSIVE, NOT_RUN = "inconclusive", "not run here"
# A difference between two sets of runs (seeds, or repeated timings) counts only when it
# exceeds this many times the larger of their sample standard deviations.
NOISE_MARGIN = 1.0
LABELS = {"aca": "ACA", "adjoint": "the adjoint", "naive": "naive"}

Row = list[str]


def marked(text: str, records: Records, *made_by: Any) -> str:
    """``text`` marked when a record it comes from is stale."""
    return text + (f" {STALE_MARK}" if records.stale(*made_by) else "")


def missing(claim: str, published: str, target: str) -> Row:
    return [claim, published, MISSING, MISSING,
            f"no record: `python scripts/reproduce.py run {target}`"]


def compare(ours: Sequence[float], theirs: Sequence[float], higher_is_better: bool,
            center: Callable[[Sequence[float]], float] = statistics.fmean) -> str:
    """REPRODUCED when ``ours`` is ahead of ``theirs`` (``center`` of each) by more than
    NOISE_MARGIN times the larger sample standard deviation, NOT_REPRODUCED when behind by
    more, INCONCLUSIVE inside that margin."""
    noise = max(statistics.stdev(values) if len(values) > 1 else 0.0 for values in (ours, theirs))
    return _judge((center(ours) - center(theirs)) * (1 if higher_is_better else -1), noise)


def compare_paired(ours: Sequence[float], theirs: Sequence[float]) -> str:
    """For timings run side by side (``ours[i]`` and ``theirs[i]`` back to back, so a slow
    spell of a shared machine slows both): REPRODUCED when the mean log ratio
    ``log(ours/theirs)`` is below 0 by more than NOISE_MARGIN times the log ratios' standard
    deviation, NOT_REPRODUCED when above by more, INCONCLUSIVE inside. Lower is better
    (times)."""
    logs = [math.log(a / b) for a, b in zip(ours, theirs, strict=True)]
    return _judge(-statistics.fmean(logs), statistics.stdev(logs) if len(logs) > 1 else 0.0)


def _judge(lead: float, spread: float) -> str:
    """REPRODUCED when ``lead`` exceeds NOISE_MARGIN times ``spread``, NOT_REPRODUCED when
    it falls below minus that, INCONCLUSIVE inside."""
    noise = NOISE_MARGIN * spread
    return REPRODUCED if lead > noise else NOT_REPRODUCED if -lead > noise else INCONCLUSIVE


def combine(verdicts: Sequence[str]) -> str:
    """One verdict from the verdicts of a claim's cells: all alike, that one; some
    reproduced, partly; none reproduced and some against, not reproduced; else
    inconclusive."""
    if verdicts and len(set(verdicts)) == 1:
        return verdicts[0]
    if REPRODUCED in verdicts:
        return PARTLY
    return NOT_REPRODUCED if NOT_REPRODUCED in verdicts else INCONCLUSIVE
