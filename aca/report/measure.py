"""Measurements shared by the benchmark scripts: peak memory of torch's CPU allocator."""

from __future__ import annotations

from collections.abc import Callable

from torch.profiler import ProfilerActivity, profile

MIB = 2.0**20


def allocation_levels(prof: profile) -> list[tuple[int, int]]:
    """``(time_ns, bytes held)`` after every allocation and free of torch's CPU allocator
    seen by the profiler (``profile_memory=True``), counted from 0 at its start."""
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    levels, level = [], 0
    for event in events:
        level += event.nbytes()
        levels.append((event.start_ns(), level))
    return levels


def peak_memory_bytes(action: Callable[[], object]) -> int:
    """Peak of the bytes allocated by torch's CPU allocator while ``action`` runs, above
    the level at its start (allocation events of the PyTorch profiler, summed in order)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        action()
    return max((level for _, level in allocation_levels(prof)), default=0)


def peak_mib(action: Callable[[], object]) -> float:
    """``peak_memory_bytes`` in MiB."""
    return peak_memory_bytes(action) / MIB
