"""Measurements shared by the benchmark scripts: peak memory of torch's CPU allocator."""

from __future__ import annotations

from collections.abc import Callable

from torch.profiler import ProfilerActivity, profile

MIB = 2.0**20


def peak_mib(action: Callable[[], object]) -> float:
    """Peak MiB held by torch's CPU allocator while ``action`` runs, above the level at its
    start (the PyTorch profiler's allocation events, summed in order)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        action()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    level, peak = 0, 0
    for event in events:
        level += event.nbytes()
        peak = max(peak, level)
    return peak / MIB
