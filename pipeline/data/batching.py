"""Duration-bucketed batches that shard across processes and resume mid-epoch.

An epoch is a fixed list of *global* batches, a pure function of (seed, epoch, durations, budget):
utterances are shuffled, sorted by duration inside large pools (so neighbours have similar lengths
and padding stays low), packed greedily while the padded cost `n * longest` stays within the
budget (`batch_seconds * world_size`) and the padding share stays under `max_padding`, and the
batch order is shuffled. Each global batch is then dealt to the processes (sorted items dealt
round-robin), so every process runs the same number of steps, no utterance is dropped or repeated
within an epoch, and N processes see exactly the batches one process would see with N times the
budget. The position (epoch, batches consumed) is all that resume needs.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence


def pack_batches(
    order: Sequence[int],
    durations: Sequence[float],
    budget_seconds: float,
    max_size: int,
    max_padding: float = 1.0,
) -> list[list[int]]:
    """Greedy packing of `order` (already sorted by duration inside pools) into batches."""
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0.0
    total = 0.0
    for idx in order:
        d = float(durations[idx])
        new_longest = max(longest, d)
        n = len(current) + 1
        padded = n * new_longest
        too_big = padded > budget_seconds or n > max_size
        too_padded = padded > 0 and 1.0 - (total + d) / padded > max_padding
        if current and (too_big or too_padded):
            batches.append(current)
            current, longest, total = [], 0.0, 0.0
            new_longest = d
        current.append(idx)
        longest = max(longest, d) if current[:-1] else d
        total += d
    if current:
        batches.append(current)
    return batches


class DurationBatchSampler:
    """Yields this process's share of each global batch; resumable at any batch boundary."""

    def __init__(
        self,
        durations: Sequence[float],
        batch_seconds: float,
        max_batch_size: int = 64,
        max_padding: float = 0.25,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        pool_batches: int = 50,
        sorted_epochs: int = 0,
    ) -> None:
        """`sorted_epochs`: the first epochs run their batches shortest first (SortaGrad, Amodei et al.,
        2016: CTC learns to align on short utterances before long ones); later epochs are shuffled."""
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside 0..{num_replicas - 1}")
        self.durations = [float(d) for d in durations]
        self.budget = float(batch_seconds) * num_replicas
        self.max_size = int(max_batch_size) * num_replicas
        self.max_padding = float(max_padding)
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.shuffle = shuffle
        self.pool_batches = pool_batches
        self.sorted_epochs = int(sorted_epochs)
        self.epoch = 0
        self.start = 0  # global batches of the current epoch already consumed
        longest = max(self.durations, default=0.0)
        if longest > self.budget:
            # A single utterance longer than the budget still forms its own batch: say so once.
            import logging

            logging.getLogger(__name__).warning(
                "the longest utterance (%.1f s) exceeds the batch budget (%.1f s): it gets a batch of its own",
                longest, self.budget,
            )
        self._cache: tuple[int, list[list[int]]] | None = None

    def global_batches(self, epoch: int | None = None) -> list[list[int]]:
        epoch = self.epoch if epoch is None else epoch
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        n = len(self.durations)
        order = list(range(n))
        if self.shuffle:
            rng = random.Random(self.seed * 1_000_003 + epoch)
            rng.shuffle(order)
            mean = sum(self.durations) / max(n, 1)
            per_batch = max(1, min(self.max_size, int(self.budget / max(mean, 1e-6))))
            pool = max(1, per_batch * self.pool_batches)
            chunks = [sorted(order[i : i + pool], key=lambda j: self.durations[j]) for i in range(0, n, pool)]
            order = [j for c in chunks for j in c]
        else:
            order.sort(key=lambda j: self.durations[j])
        batches = pack_batches(order, self.durations, self.budget, self.max_size, self.max_padding)
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + epoch + 7919).shuffle(batches)
            if epoch < self.sorted_epochs:  # stable: batches of equal length keep their shuffled order
                batches.sort(key=lambda b: max(self.durations[j] for j in b))
        self._cache = (epoch, batches)
        return batches

    def shard(self, batch: list[int]) -> list[int]:
        """This process's part of a global batch (may be empty when the batch is tiny)."""
        if self.num_replicas == 1:
            return list(batch)
        ordered = sorted(batch, key=lambda j: (self.durations[j], j))
        return ordered[self.rank :: self.num_replicas]

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return len(self.global_batches())

    def __iter__(self) -> Iterator[list[int]]:
        for _, _, share in self.keyed():
            yield share

    def keyed(self) -> Iterator[tuple[int, int, list[int]]]:
        """(epoch, the global batch's position in it, this process's share): which batch it is, the same in a
        resumed run and in any worker process, so the batch's random draws can be keyed to it."""
        batches = self.global_batches()
        for position in range(self.start, len(batches)):
            yield self.epoch, position, self.shard(batches[position])

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "start": self.start}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.set_epoch(int(state["epoch"]), int(state["start"]))


def sorted_shards(durations: Sequence[float], num_replicas: int, rank: int) -> list[int]:
    """Evaluation order: indices sorted by duration (longest first), dealt round-robin to processes."""
    order = sorted(range(len(durations)), key=lambda j: (-durations[j], j))
    return order[rank::num_replicas]


def eval_batches(indices: Sequence[int], durations: Sequence[float], batch_seconds: float, max_size: int) -> list[list[int]]:
    """Batches for inference over indices already sorted by length (padding stays minimal)."""
    return pack_batches(indices, durations, batch_seconds, max_size, max_padding=1.0)
