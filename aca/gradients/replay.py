"""Random numbers drawn by ``func`` (dropout): found at its first evaluation and
replayed when ACA evaluates a step again, as ``torch.utils.checkpoint`` does."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import Tensor

#: the state of some generators
RandomSnapshot = dict[torch.Generator, Tensor]


class RandomStates:
    """A set of random number generators, read and written together."""

    def __init__(self, generators: Iterable[torch.Generator]) -> None:
        self.generators = list(generators)

    @classmethod
    def used_by(cls, tensors: Sequence[Tensor]) -> RandomStates:
        """The CPU generator and those of the CUDA devices the tensors live on."""
        devices = sorted({t.device.index for t in tensors if t.is_cuda})
        if devices:
            torch.cuda.init()
        return cls([torch.default_generator,
                    *(torch.cuda.default_generators[d] for d in devices)])

    def __bool__(self) -> bool:
        return bool(self.generators)

    def get(self) -> RandomSnapshot:
        return {g: g.get_state() for g in self.generators}

    def digest(self, snapshot: RandomSnapshot | None = None) -> int:
        """A hash of the generators' states (by default: now), to compare cheaply."""
        snapshot = self.get() if snapshot is None else snapshot
        return hash(b"".join(snapshot[g].numpy().tobytes() for g in self.generators))

    @staticmethod
    def set(states: RandomSnapshot) -> None:
        for generator, state in states.items():
            generator.set_state(state)

    def moved(self, before: RandomSnapshot, after: RandomSnapshot | None = None) -> RandomStates:
        """Those of these generators whose state differs between two snapshots
        (by default: between ``before`` and now)."""
        after = self.get() if after is None else after
        return RandomStates(g for g in self.generators
                            if before[g].numpy().tobytes() != after[g].numpy().tobytes())

    def without(self, other: RandomStates) -> RandomStates:
        return RandomStates(g for g in self.generators if g not in other.generators)

    @contextlib.contextmanager
    def preserved(self) -> Iterator[None]:
        """Restore the generators' states on exit (the caller's random stream goes on
        as if the replays had not happened)."""
        states = self.get()
        try:
            yield
        finally:
            self.set(states)


class RandomLog:
    """The state of the replayed generators before each evaluation of the forward
    solve; on every accepted step, ``take`` keeps what its rebuild needs: the
    state before its first stage, and before its other stages when the first came
    from elsewhere (the previous step's last stage, FSAL), and the digests of the
    states before each of its evaluations and after the last (``Replay.check``)."""

    def __init__(self, states: RandomStates, first: RandomSnapshot) -> None:
        self.states = states
        self.log = [first]
        self.first_stage = first  # state before the evaluation of the next step's k1

    def record(self) -> None:
        self.log.append(self.states.get())

    def take(self, evaluations: int, first_stage_given: bool
             ) -> tuple[RandomSnapshot, RandomSnapshot | None, list[int]]:
        attempt = self.log[-evaluations]
        digests = [self.states.digest(s) for s in self.log[-evaluations:]]
        digests.append(self.states.digest())
        kept = ((self.first_stage, attempt, digests) if first_stage_given
                else (attempt, None, digests))
        self.first_stage = self.log[-1]  # an FSAL method's next k1 is this attempt's last stage
        self.log.clear()
        return kept


def pack(notes: list[tuple[RandomSnapshot, RandomSnapshot | None, list[int]]],
         states: RandomStates) -> tuple[list[Tensor], list[tuple[int, int, list[int]]]]:
    """The snapshots kept per accepted step, as one stacked tensor per generator (so
    that ``save_for_backward`` holds and frees them) and, per step, the rows of its
    first-stage and other-stages snapshots (-1: none) and its digests."""
    snapshots: list[RandomSnapshot] = []
    rows = []
    for first, rest, digests in notes:
        snapshots.append(first)
        if rest is not None:
            snapshots.append(rest)
        rows.append((len(snapshots) - (2 if rest is not None else 1),
                     len(snapshots) - 1 if rest is not None else -1, digests))
    return [torch.stack([s[g] for s in snapshots]) for g in states.generators], rows


def unpack(stacked: list[Tensor], states: RandomStates, row: int) -> RandomSnapshot:
    # a copy: Generator.set_state misreads a row view of the stacked tensor (offset != 0)
    return {g: tensor[row].clone() for g, tensor in zip(states.generators, stacked)}
