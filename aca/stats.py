"""Counters of a solve: function evaluations forward and backward, accepted and
rejected steps. Readable after the call, and summed over a block of code."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass


@dataclass
class SolveStats:
    """``nfe_backward`` counts evaluations of ``func`` made during backward
    (ACA's step rebuilds, the adjoint's augmented dynamics); ``naive`` makes none,
    it back-propagates through the forward evaluations instead."""

    nfe_forward: int = 0
    nfe_backward: int = 0
    accepted: int = 0
    rejected: int = 0

    def add(self, nfe_forward: int = 0, nfe_backward: int = 0, accepted: int = 0,
            rejected: int = 0) -> None:
        self.nfe_forward += nfe_forward
        self.nfe_backward += nfe_backward
        self.accepted += accepted
        self.rejected += rejected

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


_local = threading.local()


def _active_trackers() -> list[SolveStats]:
    if not hasattr(_local, "trackers"):
        _local.trackers = []
    return _local.trackers


@contextlib.contextmanager
def track_stats() -> Iterator[SolveStats]:
    """Sum the statistics of every solve started inside the block; backward
    evaluations are added when backward runs, even after the block has closed."""
    stats = SolveStats()
    trackers = _active_trackers()
    trackers.append(stats)
    try:
        yield stats
    finally:
        trackers.remove(stats)


class StatsSinks:
    """Where one solve reports: the caller's ``stats`` and every active tracker."""

    def __init__(self, stats: SolveStats | None) -> None:
        self.sinks = ([stats] if stats is not None else []) + list(_active_trackers())

    def add(self, **counts: int) -> None:
        for sink in self.sinks:
            sink.add(**counts)
