"""DurationBatchSampler: complete epochs, budgets, determinism, sharding across ranks and resume."""

from __future__ import annotations

import random

import pytest

from pipeline.data.batching import DurationBatchSampler, eval_batches, pack_batches, sorted_shards


def durations(n: int = 300, seed: int = 1, lo: float = 0.3, hi: float = 12.0) -> list[float]:
    rng = random.Random(seed)
    return [round(rng.uniform(lo, hi), 3) for _ in range(n)]


def epoch(sampler: DurationBatchSampler, e: int) -> list[list[int]]:
    sampler.set_epoch(e)
    return list(sampler)


CASES = [  # (batch_seconds, max_batch_size, max_padding, seed)
    (30.0, 64, 0.25, 0),
    (60.0, 8, 0.25, 3),
    (20.0, 64, 1.0, 5),
    (45.0, 64, 0.0, 7),
    (5.0, 64, 0.25, 11),  # smaller than many utterances: those get batches of their own
]


@pytest.mark.parametrize("batch_seconds, max_size, max_padding, seed", CASES)
def test_every_index_once_per_epoch_within_budget(batch_seconds: float, max_size: int, max_padding: float,
                                                  seed: int) -> None:
    d = durations()
    s = DurationBatchSampler(d, batch_seconds=batch_seconds, max_batch_size=max_size, max_padding=max_padding, seed=seed)
    for e in range(3):
        batches = epoch(s, e)
        assert len(batches) == len(s)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(len(d)))  # each index exactly once
        for b in batches:
            assert b, "empty batch"
            longest = max(d[i] for i in b)
            assert len(b) <= max_size
            if len(b) > 1:
                assert len(b) * longest <= batch_seconds + 1e-9
                padding = 1 - sum(d[i] for i in b) / (len(b) * longest)
                assert padding <= max_padding + 1e-9


def test_batches_are_reasonably_full() -> None:
    """Greedy packing should not degenerate into one utterance per batch."""
    d = durations(400, seed=2, lo=1.0, hi=3.0)
    s = DurationBatchSampler(d, batch_seconds=60.0, max_batch_size=64, max_padding=0.5, seed=0)
    batches = epoch(s, 0)
    padded = sum(len(b) * max(d[i] for i in b) for b in batches)
    assert len(batches) < 2 * sum(d) / 60.0
    assert sum(d) / padded > 0.8


def test_deterministic_per_seed_and_epoch_and_different_across_epochs() -> None:
    d = durations()
    a = DurationBatchSampler(d, batch_seconds=30.0, seed=4)
    b = DurationBatchSampler(d, batch_seconds=30.0, seed=4)
    assert epoch(a, 0) == epoch(b, 0)
    assert epoch(a, 5) == epoch(b, 5)
    assert epoch(a, 0) != epoch(a, 1)
    assert epoch(a, 0) != epoch(DurationBatchSampler(d, batch_seconds=30.0, seed=5), 0)
    # going back to an epoch gives it again (cached or not)
    first = epoch(a, 0)
    epoch(a, 3)
    assert epoch(a, 0) == first
    assert a.global_batches(2) == b.global_batches(2)


def test_unshuffled_order_is_sorted_by_duration() -> None:
    d = durations(50)
    s = DurationBatchSampler(d, batch_seconds=30.0, shuffle=False)
    flat = [i for b in epoch(s, 0) for i in b]
    assert [d[i] for i in flat] == sorted(d)
    assert epoch(s, 0) == epoch(s, 1)


def test_sortagrad_epochs_run_shortest_first_then_shuffle() -> None:
    d = durations()
    plain = DurationBatchSampler(d, batch_seconds=30.0, seed=4)
    sorted_first = DurationBatchSampler(d, batch_seconds=30.0, seed=4, sorted_epochs=2)
    for e in (0, 1):
        batches = epoch(sorted_first, e)
        longest = [max(d[i] for i in b) for b in batches]
        assert longest == sorted(longest), "a SortaGrad epoch takes its batches shortest first"
        assert sorted(map(sorted, batches)) == sorted(map(sorted, epoch(plain, e))), "the same batches, reordered"
    longest = [max(d[i] for i in b) for b in epoch(sorted_first, 2)]
    assert longest != sorted(longest), "after the sorted epochs, batches are shuffled again"
    assert epoch(sorted_first, 2) == epoch(plain, 2)
    sorted_first.set_epoch(0, start=3)  # resume mid-epoch: the rest of the same sorted order
    assert list(sorted_first) == sorted_first.global_batches(0)[3:]


@pytest.mark.parametrize("n, batch_seconds, seed", [(300, 30.0, 0), (37, 4.0, 2), (120, 15.0, 9)])
def test_two_replicas_share_the_one_replica_epoch_with_double_budget(n: int, batch_seconds: float, seed: int) -> None:
    d = durations(n, seed=seed)
    single = DurationBatchSampler(d, batch_seconds=2 * batch_seconds, max_batch_size=2 * 16, seed=seed)
    ranks = [DurationBatchSampler(d, batch_seconds=batch_seconds, max_batch_size=16, num_replicas=2, rank=r, seed=seed)
             for r in (0, 1)]
    for e in (0, 1):
        one = epoch(single, e)
        shards = [epoch(r, e) for r in ranks]
        assert len(shards[0]) == len(shards[1]) == len(one)  # same number of steps on every rank
        assert len(ranks[0]) == len(ranks[1]) == len(single)
        for g, b0, b1 in zip(one, *shards, strict=True):
            assert not set(b0) & set(b1)
            assert sorted(b0 + b1) == sorted(g)  # the same global batch
            assert abs(len(b0) - len(b1)) <= 1
        assert sorted(i for b in shards[0] + shards[1] for i in b) == list(range(n))


def test_tiny_global_batches_leave_a_rank_empty_but_keep_step_counts() -> None:
    d = [1.0, 50.0, 2.0, 60.0, 1.5]
    ranks = [DurationBatchSampler(d, batch_seconds=10.0, num_replicas=2, rank=r, seed=0) for r in (0, 1)]
    s0, s1 = epoch(ranks[0], 0), epoch(ranks[1], 0)
    assert len(s0) == len(s1)
    assert [] in s1  # a single long utterance goes to rank 0 only
    assert sorted(i for b in s0 + s1 for i in b) == list(range(5))


def test_resume_from_state_dict_mid_epoch() -> None:
    d = durations()
    s = DurationBatchSampler(d, batch_seconds=30.0, seed=1)
    s.set_epoch(2)
    full = list(s)
    k = len(full) // 3
    consumed = []
    for b in s:  # the training loop advances `start` as it consumes batches
        consumed.append(b)
        s.start += 1
        if len(consumed) == k:
            break
    state = s.state_dict()
    assert state == {"epoch": 2, "start": k}
    resumed = DurationBatchSampler(d, batch_seconds=30.0, seed=1)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert consumed + rest == full
    assert rest == full[k:]


def test_resume_is_exact_for_each_rank() -> None:
    d = durations(200, seed=5)
    ranks = [DurationBatchSampler(d, batch_seconds=20.0, num_replicas=2, rank=r, seed=3) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(1)
    full = [list(r) for r in ranks]
    for r, f in zip(ranks, full, strict=True):
        again = DurationBatchSampler(d, batch_seconds=20.0, num_replicas=2, rank=r.rank, seed=3)
        again.load_state_dict({"epoch": 1, "start": 5})
        assert list(again) == f[5:]


def test_bad_rank_is_rejected() -> None:
    with pytest.raises(ValueError):
        DurationBatchSampler([1.0], batch_seconds=1.0, num_replicas=2, rank=2)


def test_pack_batches_and_eval_helpers() -> None:
    d = [1.0, 1.0, 1.0, 4.0, 4.0]
    assert pack_batches(range(5), d, budget_seconds=3.0, max_size=10) == [[0, 1, 2], [3], [4]]
    assert pack_batches(range(5), d, budget_seconds=100.0, max_size=2) == [[0, 1], [2, 3], [4]]
    # padding: adding a 4 s utterance to three 1 s ones would pad 7 of 16 seconds
    assert pack_batches(range(5), d, budget_seconds=100.0, max_size=10, max_padding=0.25) == [[0, 1, 2], [3, 4]]
    order = sorted_shards(d, 1, 0)
    assert [d[i] for i in order] == sorted(d, reverse=True)
    assert sorted(sorted_shards(d, 2, 0) + sorted_shards(d, 2, 1)) == list(range(5))
    assert [i for b in eval_batches(order, d, 8.0, 64) for i in b] == order
