"""Window-grouped batch samplers: no mixed windows, full coverage, per-epoch shuffles, sharding."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from vcfbert_fast.dataset import (
    DistributedWindowGroupedBatchSampler,
    WindowGroupedBatchSampler,
    items_per_epoch,
)
from vcfbert_fast.errors import InputError

rng = np.random.default_rng()  # reseeded from the test seed by _reseed


@pytest.fixture(autouse=True)
def _reseed(seed):
    """The module's generator draws from this test's printed seed (root conftest), so failures replay."""
    global rng
    rng = np.random.default_rng(seed)


def shape():
    return int(rng.integers(1, 12)), int(rng.integers(1, 40))


def _items(batch):
    return [i for _, i in batch]


@pytest.mark.parametrize("trial", range(6))
def test_every_pair_once_and_no_mixed_windows(trial):
    n_w, n_s = shape()
    bs = int(rng.integers(1, 10))
    s = WindowGroupedBatchSampler((n_w, n_s), bs, seed=int(rng.integers(0, 1000)), interleave=bool(trial % 2))
    epoch = int(rng.integers(0, 5))
    s.set_epoch(epoch)
    batches = list(s)
    assert len(batches) == len(s)
    seen = []
    for b in batches:
        assert all(e == epoch for e, _ in b)
        assert 1 <= len(b) <= bs
        assert len({i // n_s for i in _items(b)}) == 1  # one window per batch
        seen += _items(b)
    assert sorted(seen) == list(range(n_w * n_s))
    assert items_per_epoch(s) == n_w * n_s


def test_windows_consecutive_unless_interleaved():
    n_w, n_s, bs = 6, 20, 3
    s = WindowGroupedBatchSampler((n_w, n_s), bs, seed=1)
    wins = [_items(b)[0] // n_s for b in s]
    # Without interleaving each window's batches form one run.
    runs = [w for k, w in enumerate(wins) if k == 0 or wins[k - 1] != w]
    assert sorted(runs) == list(range(n_w))


def test_drop_last_and_len():
    n_w, n_s = shape()
    bs = int(rng.integers(1, 8))
    s = WindowGroupedBatchSampler((n_w, n_s), bs, drop_last=True)
    batches = list(s)
    assert len(batches) == len(s) == n_w * (n_s // bs)
    assert all(len(b) == bs for b in batches)
    assert len({i for b in batches for i in _items(b)}) == n_w * (n_s // bs) * bs


def test_shuffle_deterministic_and_differs_by_epoch():
    n_w, n_s = 8, 30
    seed = int(rng.integers(0, 1000))
    a = WindowGroupedBatchSampler((n_w, n_s), 4, seed=seed)
    b = WindowGroupedBatchSampler((n_w, n_s), 4, seed=seed)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    e2 = [_items(x) for x in a]
    a.set_epoch(3)
    e3 = [_items(x) for x in a]
    assert e2 != e3

    # Window order changes (8! orders) and so does the sample order inside a window (30! orders).
    def window_runs(batches):
        w = [x[0] // n_s for x in batches]
        return [v for k, v in enumerate(w) if k == 0 or w[k - 1] != v]

    assert window_runs(e2) != window_runs(e3)

    def order_in_window0(batches):
        return [i for x in batches for i in x if i // n_s == 0]

    assert order_in_window0(e2) != order_in_window0(e3)
    assert sorted(order_in_window0(e2)) == list(range(n_s)) != order_in_window0(e2)
    c = WindowGroupedBatchSampler((n_w, n_s), 4, seed=seed + 1)
    c.set_epoch(2)
    assert [_items(x) for x in c] != e2


def test_no_shuffle_is_in_order_and_plain_ints():
    n_w, n_s = shape()
    s = WindowGroupedBatchSampler((n_w, n_s), 5, shuffle=False, with_epoch=False)
    flat = [i for b in s for i in b]
    assert flat == list(range(n_w * n_s))


def test_bound_to_dataset_epoch():
    class FakeDS:
        n_windows, n_samples, epoch = 3, 5, 0

        def set_epoch(self, e):
            self.epoch = e

    ds = FakeDS()
    s = WindowGroupedBatchSampler(ds, 2)
    ds.set_epoch(4)
    assert s.epoch == 4 and all(e == 4 for b in s for e, _ in b)
    s.set_epoch(6)
    assert ds.epoch == 6
    with pytest.raises(InputError):
        WindowGroupedBatchSampler((3, 5), 0)


@pytest.mark.parametrize("pad", [True, False])
@pytest.mark.parametrize("trial", range(4))
def test_distributed_disjoint_cover_equal_length(pad, trial):
    n_w, n_s = shape()
    reps = int(rng.integers(1, 6))
    bs = int(rng.integers(1, 7))
    drop_last = bool(rng.integers(0, 2))
    seed, epoch = int(rng.integers(0, 1000)), int(rng.integers(0, 5))
    per_rank = []
    lens = []
    for r in range(reps):
        s = DistributedWindowGroupedBatchSampler(
            (n_w, n_s),
            bs,
            seed=seed,
            drop_last=drop_last,
            num_replicas=reps,
            rank=r,
            pad=pad,
            interleave=bool(trial % 2),
        )
        s.set_epoch(epoch)
        batches = list(s)
        assert len(batches) == len(s)
        lens.append(len(batches))
        for b in batches:
            assert len({i // n_s for i in _items(b)}) == 1
        per_rank.append(batches)
    assert len(set(lens)) == 1  # same number of batches on every rank (no DDP hang)
    # Step k: all ranks are on the same window (also with interleaved batches).
    for k in range(lens[0]):
        assert len({_items(per_rank[r][k])[0] // n_s for r in range(reps)}) == 1
    counts = Counter(i for batches in per_rank for b in batches for i in _items(b))
    for w in range(n_w):
        in_w = {i: c for i, c in counts.items() if i // n_s == w}
        if pad and not drop_last:
            # Everything seen; only padding repeats (at most reps - 1 extra per window).
            assert set(in_w) == set(range(w * n_s, (w + 1) * n_s))
            extra = sum(in_w.values()) - n_s
            assert extra == -(-n_s // reps) * reps - n_s
            assert extra <= reps - 1
        elif not pad:
            assert all(c == 1 for c in in_w.values())  # strictly disjoint
            if not drop_last:
                assert len(in_w) == (n_s // reps) * reps
    if not pad:
        # Pairwise disjoint shards.
        sets = [{i for b in batches for i in _items(b)} for batches in per_rank]
        for a in range(reps):
            for c in range(a + 1, reps):
                assert not sets[a] & sets[c]


def test_distributed_single_replica_equals_plain():
    n_w, n_s = shape()
    seed = int(rng.integers(0, 1000))
    a = WindowGroupedBatchSampler((n_w, n_s), 3, seed=seed)
    b = DistributedWindowGroupedBatchSampler((n_w, n_s), 3, seed=seed)  # torch.distributed not initialised
    assert (b.num_replicas, b.rank) == (1, 0)
    assert list(a) == list(b)
    with pytest.raises(InputError):
        DistributedWindowGroupedBatchSampler((n_w, n_s), 3, num_replicas=2, rank=2)
