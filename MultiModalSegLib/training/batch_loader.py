"""The training batches of a run's remaining steps, made in the main process or ahead in workers.

Every batch is a function of the seed and the step alone (the samplers are stateless, see
:mod:`..data.sampling`), so worker processes can make the batches of the next steps while the
current step trains, and the run trains on exactly the batches it would train on without them:
the number of workers is not part of a recipe and a run resumes under another count. Workers pay
where the network step is fast (a GPU) and the images are synthesised on the CPU.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch.utils.data import DataLoader, Dataset

Batches = dict[str, dict[str, torch.Tensor]]


class _StepBatches(Dataset):
    """Item ``i``: the batches of step ``start + i`` (a map-style dataset over steps)."""

    def __init__(self, make: Callable[[int], Batches], start: int, stop: int) -> None:
        self.make, self.start, self.stop = make, start, stop

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)

    def __getitem__(self, index: int) -> Batches:
        return self.make(self.start + index)


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # the workers share the cores; one torch thread each


def workers_available() -> bool:
    """Worker processes are forked (the batch makers hold the run's prepared cases); where the
    platform cannot fork (Windows, macOS' default), batches are made in the main process."""
    return sys.platform.startswith("linux")


@contextmanager
def step_batches(make: Callable[[int], Batches], start: int, stop: int, workers: int = 0,
                 ahead: int = 4) -> Iterator[Iterator[Batches]]:
    """An iterator over the batches of steps ``start`` to ``stop - 1``, in order: made on demand
    in this process (``workers`` 0, or no fork on this platform), or by ``workers`` forked
    processes that each keep ``ahead`` steps ready. The workers end when the block ends."""
    if workers <= 0 or not workers_available() or stop <= start:
        yield (make(step) for step in range(start, stop))
        return
    loader = DataLoader(
        _StepBatches(make, start, stop), batch_size=None, shuffle=False, num_workers=workers,
        prefetch_factor=ahead, worker_init_fn=_one_thread, multiprocessing_context="fork",
    )  # fmt: skip
    iterator = iter(loader)
    try:
        yield iterator
    finally:
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
