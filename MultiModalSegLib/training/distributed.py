"""Data-parallel training and inference under ``torchrun`` (PyTorch DDP).

A ``torchrun`` launch sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in every worker's
environment; :func:`launch_info` reads them and :func:`setup` joins the process group (``nccl``
when the workers use CUDA GPUs, ``gloo`` on CPUs) and picks the worker's device (``cuda:LOCAL_RANK``).
Without those variables everything here is a no-op for a single process, so the same code runs
with and without ``torchrun``.

Choices:

- The config's ``batch_size`` is the *global* batch. Rank ``r`` trains items ``r::world`` of each
  step's batch: the samplers are stateless, so every rank makes the random choices of the whole
  batch (cheap) and extracts and augments only its own items (see ``ModalitySampler.items``). The
  batch size must be a multiple of the number of ranks. DDP averages the gradients of the
  ranks, so for losses that are means over batch items the update equals the single-process one.
  The Dice part of ``dice_ce_loss`` is computed over the whole batch (``batch=True``), so with
  DDP it is the mean of per-rank Dice losses: close to, not equal to, the single-process loss.
- BatchNorm: on CUDA the layers are converted to ``SyncBatchNorm``, so their statistics are those
  of the global batch, as in one process. ``SyncBatchNorm`` does not run on CPUs: with ``gloo``
  every rank normalises with its own shard's statistics (instance and layer norms are unaffected).
- ``find_unused_parameters`` is turned on only when the first step leaves a trainable parameter
  without a gradient (as modality-specific modules or alternating steps may); the engine finds
  out with one probing forward/backward whose effects it undoes.
- Logged losses are averaged over the ranks.
"""

from __future__ import annotations

import atexit
import datetime
from collections.abc import Mapping

import torch
import torch.distributed as dist
from torch import nn

from ..errors import ConfigError
from ..launch import LaunchInfo, launch_info, shard_index, worker_device  # noqa: F401  (part of this module's API)

TIMEOUT = datetime.timedelta(minutes=60)  # rank 0 validates and exports while the others wait


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that writes files."""
    return rank() == 0


def setup(device: torch.device) -> torch.device:
    """Join the ``torchrun`` process group, if launched by it and not yet joined, and return this
    worker's device. ``nccl`` for CUDA, ``gloo`` otherwise. Idempotent."""
    device = worker_device(device)
    if launch_info() is None or is_initialized():
        return device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, timeout=TIMEOUT)
    atexit.register(teardown)
    return device


def teardown() -> None:
    """Leave the process group (safe to call twice or without one)."""
    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on at least one (e.g. a stop request)."""
    if not is_initialized():
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=_comm_device(device))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_int(value: int, device: torch.device) -> int:
    """Rank 0's ``value`` on every rank."""
    if not is_initialized():
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.long, device=_comm_device(device))
    dist.broadcast(t, src=0)
    return int(t.item())


def mean_over_ranks(values: Mapping[str, float], device: torch.device) -> dict[str, float]:
    """The mean of each named value over the ranks (every rank must pass the same names)."""
    if not is_initialized() or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_comm_device(device))
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return {k: float(v) for k, v in zip(keys, t.tolist(), strict=True)}


def shard(batch: Mapping[str, torch.Tensor], rank_: int, world: int) -> dict[str, torch.Tensor]:
    """Items ``rank_::world`` of a batch (every tensor's first dimension)."""
    return {k: v[rank_::world] for k, v in batch.items()}


def check_batch_size(batch_size: int, world: int) -> None:
    if batch_size % world:
        raise ConfigError(
            f"batch_size {batch_size} is the global batch and must be a multiple of the {world} processes; "
            f"set batch_size to a multiple of {world} or start a number of processes that divides {batch_size}."
        )


class TrainingStep(nn.Module):
    """Makes ``method.training_step(batches)`` the ``forward`` that DDP wraps."""

    def __init__(self, method: nn.Module) -> None:
        super().__init__()
        self.method = method

    def forward(self, batches):  # noqa: D401 - the method's losses
        return self.method.training_step(batches)


def wrap(method: nn.Module, device: torch.device, find_unused_parameters: bool) -> nn.Module:
    """``method`` behind DDP (its ``training_step`` as ``forward``); BatchNorm layers become
    ``SyncBatchNorm`` on CUDA (converted in place, so ``method`` keeps training the same tensors)."""
    if device.type == "cuda":
        sync_batchnorm(method)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        TrainingStep(method), device_ids=ids, output_device=ids[0] if ids else None, find_unused_parameters=find_unused_parameters
    )


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm layer under ``module`` (a container, not itself a BatchNorm) by a
    ``SyncBatchNorm`` holding the same parameter and buffer tensors: the optimiser keeps working and
    the state dict keeps its keys, so a bundle loads into the plain network. Returns ``module``."""
    for name, child in module.named_children():
        module.add_module(name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
    return module


def _comm_device(device: torch.device) -> torch.device:
    """Tensors for collectives live on the GPU with nccl, on the CPU with gloo."""
    return device if dist.get_backend() == "nccl" else torch.device("cpu")
