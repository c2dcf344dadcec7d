"""Where this process sits in a ``torchrun`` launch, read from its environment (no process group).

Batch inference uses this to split the cases between workers without importing the training code;
:mod:`MultiModalSegLib.training.distributed` builds DDP training on it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class LaunchInfo:
    """Where this process sits in a ``torchrun`` launch."""

    rank: int
    world_size: int
    local_rank: int


def launch_info() -> LaunchInfo | None:
    """The ``torchrun`` environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), or ``None`` when the
    process was not started by a launcher (or by one with a single worker)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise ConfigError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers ({exc}); launch with torchrun.") from exc
    if world <= 1:
        return None
    if not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} is outside 0..WORLD_SIZE-1={world - 1}; launch with torchrun.")
    return LaunchInfo(rank, world, local)


def worker_device(device: torch.device) -> torch.device:
    """This worker's device: ``cuda:LOCAL_RANK`` for a CUDA run under ``torchrun``, else ``device``."""
    import torch

    info = launch_info()
    if info is None or device.type != "cuda":
        return device
    if info.local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"LOCAL_RANK {info.local_rank} has no GPU (this node has {torch.cuda.device_count()}); "
            "start at most that many processes per node (torchrun --nproc_per_node)."
        )
    return torch.device("cuda", info.local_rank)


def shard_index(n: int, rank_: int | None = None, world: int | None = None) -> list[int]:
    """The indices ``rank::world`` of ``n`` items (for inference: each rank's share of the cases).
    Read from the ``torchrun`` environment when not given, so no process group is needed."""
    info = launch_info()
    r = rank_ if rank_ is not None else (info.rank if info else 0)
    w = world if world is not None else (info.world_size if info else 1)
    return list(range(r, n, w))
