"""Process-group setup for DistributedDataParallel under torchrun, and the few
collectives the trainer needs (all outside the ODE function: adaptive solvers take
a different number of steps on each rank, so no collective may run inside a solve)."""

from __future__ import annotations

import atexit
import logging
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from aca.errors import ConfigError


@dataclass
class DistInfo:
    """Where this process sits: ``world_size == 1`` means no process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def pick_device(name: str, info: DistInfo) -> torch.device:
    """``auto`` is CUDA when available; under DDP each rank takes GPU ``LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.device={name!r} but CUDA is not available; use cpu or auto")
        if device.index is None:
            device = torch.device("cuda", info.local_rank if info.enabled else 0)
        torch.cuda.set_device(device)
    return device


def setup(ddp: str | bool, device_name: str) -> DistInfo:
    """Join the process group when launched by torchrun (``ddp`` auto or true), gloo on
    CPU and nccl on CUDA; ``ddp: true`` without torchrun is an error."""
    if ddp is False or not launched_by_torchrun():
        if ddp is True:
            raise ConfigError("trainer.ddp=true needs torchrun, e.g. "
                              "`torchrun --nproc_per_node=2 -m aca.cli trainer=ddp ...`")
        info = DistInfo()
        info.device = pick_device(device_name, info)
        return info
    info = DistInfo(rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]),
                    local_rank=int(os.environ.get("LOCAL_RANK", 0)))
    info.device = pick_device(device_name, info)
    if info.enabled and not dist.is_initialized():
        # One process group for the life of the process: the jobs of a sweep (`-m`) run one
        # after another in the same processes, and joining a second group would hang.
        dist.init_process_group("nccl" if info.device.type == "cuda" else "gloo")
        atexit.register(_leave)  # an exit by error: finish() was not reached
    return info


def finish() -> None:
    """Leave the process group at the normal end of a rank's work: a barrier first, so
    that no rank closes its connections while another still reads from them (gloo then
    aborts the reading process: "terminate called without an active exception", about
    one exit in seven on a 2-core machine)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def end_rank() -> None:
    """The normal end of a process: ``finish``, then a torchrun rank exits at once,
    without the interpreter's teardown. There torch's gloo aborted a rank whose work was
    done and written ("terminate called without an active exception" with no Python frame
    left: a C++ destructor at exit), about one launch in 50 on a loaded 2-core machine,
    and torchrun failed the whole run."""
    ranked = dist.is_initialized()
    finish()
    if ranked:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _leave() -> None:
    """The process group's fallback teardown at interpreter exit (no barrier: after an
    error the other ranks may never reach one, and torchrun stops them)."""
    if dist.is_initialized():
        dist.destroy_process_group()


class DataParallel(DistributedDataParallel):
    """DistributedDataParallel that a task cannot tell from its own model: attributes the
    wrapper lacks (``model.mu``, ``model.masses``) come from the wrapped module, as they do
    through ``torch.compile``'s wrapper."""

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "module":
                raise
            return getattr(self.module, name)


def wrap(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """``model`` for training: data-parallel when this process is one of several ranks."""
    if not info.enabled:
        return model
    return DataParallel(model, device_ids=[info.device] if info.device.type == "cuda" else None)


def broadcast_object(value: object, info: DistInfo) -> object:
    """Rank 0's ``value`` on every rank (e.g. the run directory, whose timestamp
    may differ between ranks)."""
    if not info.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sum_across_ranks(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Element-wise sum of a dict of floats over ranks (same keys on every rank)."""
    if not info.enabled or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[key] for key in keys], dtype=torch.float64, device=info.device)
    dist.all_reduce(tensor)
    return dict(zip(keys, tensor.tolist(), strict=True))


def replica_divergence(model: torch.nn.Module, info: DistInfo) -> float:
    """Largest absolute difference between this rank's parameters and rank 0's,
    maximised over ranks: 0.0 when DDP kept the replicas in sync."""
    if not info.enabled:
        return 0.0
    flat = torch.cat([p.detach().reshape(-1).double().to(info.device)
                      for p in model.parameters()])
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    largest = (flat - reference).abs().max().reshape(1)
    dist.all_reduce(largest, op=dist.ReduceOp.MAX)
    return float(largest)
