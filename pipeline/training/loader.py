"""The training batches as a DataLoader: duration batches fetched whole, collated with draws keyed to the batch.

Which batch it is (epoch, position in the epoch, process rank) seeds whatever collation draws (speed, noise,
rooms, masks), so a batch comes out the same in the training process or in a `train.num_workers` worker, and in
a resumed run: resume stays exact without saving any worker's random state.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from pipeline.data.batching import DurationBatchSampler
from pipeline.tasks.base import Task

BatchKey = tuple[int, int, list[int]]  # (epoch, position of the global batch in it, this process's rows)


class _Batches(torch.utils.data.Dataset):
    """Items are whole batches, fetched by their key, so that collation knows which batch it collates."""

    def __init__(self, task: Task) -> None:
        self.task = task

    def __getitem__(self, key: BatchKey) -> tuple[BatchKey, list[dict[str, Any]]]:
        return key, [self.task.train_example(i) for i in key[2]]


class _BatchKeys(torch.utils.data.Sampler):
    def __init__(self, sampler: DurationBatchSampler) -> None:
        self.sampler = sampler

    def __iter__(self) -> Iterator[BatchKey]:
        return self.sampler.keyed()

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.sampler.start)


class _SeededCollate:
    """Collates a batch with torch's CPU generator seeded by the batch's key and the process rank, then restores
    the generator. What collation draws (speed, noise, rooms, masks) thus depends on which batch it is, not on
    which process collates it or what that process collated before: the same with any `train.num_workers`, and
    after a resume. What the training step draws (dropout, the vocoder's noise) stays on the training process's
    global generator, which checkpoints save."""

    def __init__(self, task: Task, seed: int, rank: int) -> None:
        self.task, self.seed, self.rank = task, seed, rank

    def __call__(self, item: tuple[BatchKey, list[dict[str, Any]]]) -> dict[str, Any] | None:
        (epoch, position, _), rows = item
        entropy = [self.seed % 2**63, epoch, position, self.rank]
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]))
            return self.task.collate(rows)


def batch_loader(task: Task, sampler: DurationBatchSampler, seed: int, rank: int, num_workers: int) -> DataLoader:
    """The loader of `sampler`'s batches from its current position. Its worker seed is drawn from a generator of
    its own at each `iter()`, never from the global one: a resumed run continues exactly the checkpointed stream."""
    return DataLoader(_Batches(task), batch_size=None, sampler=_BatchKeys(sampler),
                      collate_fn=_SeededCollate(task, seed, rank), num_workers=num_workers, persistent_workers=False,
                      generator=torch.Generator().manual_seed(seed))
