"""Counters of a solve: function evaluations forward and backward, accepted and
rejected steps. Readable after the call, and summed over a block of code."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field


@dataclass
class SolveStats:
    """``nfe_backward`` counts evaluations of ``func`` made during backward
    (ACA's step rebuilds, the adjoint's augmented dynamics); ``naive`` makes none,
    it back-propagates through the forward evaluations instead. An evaluation is one
    call of ``func`` on the whole batch. ``jacobians`` counts the dense Jacobians of
    ``func`` that implicit solvers form, forward and backward (each costs one
    evaluation, counted in the nfe, and one vector-Jacobian product per value of a
    group: the cost that dominates on large states): one per step for Newton, and
    under ``aca`` one per implicit stage of each rebuilt step.

    Per-sample solves (``per_sample=True``) count ``accepted`` and ``rejected`` over
    samples (a step of each of B samples counts B), add to ``sample_nfe_forward`` the
    evaluations each sample was part of before it arrived (summed over samples: what a
    solve of each sample alone would cost) and append each sample's counts to
    ``per_sample`` (one dict of lists ``accepted``, ``rejected``, ``nfe`` per solve)."""

    nfe_forward: int = 0
    nfe_backward: int = 0
    accepted: int = 0
    rejected: int = 0
    sample_nfe_forward: int = 0
    jacobians: int = 0
    per_sample: list[dict[str, list[int]]] = field(default_factory=list)

    def add(self, nfe_forward: int = 0, nfe_backward: int = 0, accepted: int = 0,
            rejected: int = 0, sample_nfe_forward: int = 0, jacobians: int = 0,
            per_sample: dict[str, list[int]] | None = None) -> None:
        self.nfe_forward += nfe_forward
        self.nfe_backward += nfe_backward
        self.accepted += accepted
        self.rejected += rejected
        self.sample_nfe_forward += sample_nfe_forward
        self.jacobians += jacobians
        if per_sample is not None:
            self.per_sample.append(per_sample)

    def as_dict(self) -> dict[str, int]:
        """The totals (``per_sample`` left out)."""
        return {name: value for name, value in asdict(self).items() if name != "per_sample"}


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
