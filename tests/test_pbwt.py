"""The PBWT donor op and match_runs against their brute-force numpy references (the oracle).

Random panels built to be hard: few founder haplotypes copied many times (long tied runs), a
few mutations, odd sizes, k larger than the panel, excluded rows, missing query calls (the op's
brute-force path), points at both ends. Plus independent checks of the definition itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vcfbert_fast.ops.pbwt import (
    match_runs,
    match_runs_reference,
    pack_markers,
    pbwt_backend,
    pbwt_donors,
    pbwt_donors_reference,
    tie_hash,
)


def _panel(rng, n: int, t: int, founders: int, noise: float) -> np.ndarray:
    base = rng.integers(0, 2, (max(1, founders), t))
    ref = base[rng.integers(0, base.shape[0], n)]
    return (ref ^ (rng.random((n, t)) < noise)).astype(np.uint8)


def _case(rng, missing: bool = False):
    n, t = int(rng.integers(1, 70)), int(rng.integers(1, 200))
    ref = _panel(rng, n, t, int(rng.integers(1, 8)), float(rng.choice([0.0, 0.01, 0.1])))
    n_q = int(rng.integers(1, 6))
    q = (ref[rng.integers(0, n, n_q)] ^ (rng.random((n_q, t)) < 0.03)).astype(np.int8)
    if missing:
        q[rng.random(q.shape) < 0.05] = -1
    n_pts = int(rng.integers(1, t + 2))
    pts = np.sort(rng.choice(t + 1, n_pts, replace=False)).astype(np.int64)
    k = int(rng.integers(1, n + 6))  # sometimes more than the panel holds
    ex = rng.integers(-1, n, (n_q, int(rng.integers(0, 3)))).astype(np.int64)
    ids = rng.integers(0, 10_000, n_q).astype(np.int64)
    return pack_markers(ref), ref, q, pts, k, ex, ids


def _assert_oracle(bits, q, pts, k, ex=None, ids=None, seed=0):
    """The op's (rows, left, right) equal the oracle's; returns them."""
    n_q = q.shape[0]
    ex = np.full((n_q, 0), -1, dtype=np.int64) if ex is None else np.asarray(ex, dtype=np.int64).reshape(n_q, -1)
    ids = np.arange(n_q, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    pts = np.asarray(pts, dtype=np.int64)
    got = pbwt_donors(bits, q, pts, k, exclude=ex, query_ids=ids, seed=seed)
    want = pbwt_donors_reference(
        bits, torch.from_numpy(q), torch.from_numpy(ex), torch.from_numpy(ids), torch.from_numpy(pts), k, seed
    )
    for g, w, name in zip(got, want, ("rows", "left", "right")):
        assert g.shape == (n_q, pts.shape[0], k), f"{name} shape {tuple(g.shape)}"
        assert torch.equal(g, w), f"{name} differ from the oracle"
    return got


@pytest.mark.parametrize("missing", [False, True], ids=["pbwt-path", "brute-path"])
def test_op_equals_oracle(rng, missing):
    for _ in range(25):
        bits, _, q, pts, k, ex, ids = _case(rng, missing)
        _assert_oracle(bits, q, pts, k, ex, ids, seed=int(rng.integers(0, 2**31)))


@pytest.mark.parametrize("t", [1, 7, 63, 64, 65, 127, 128, 129, 200])
def test_word_boundary_sizes(rng, t):
    """T around the 64-bit word edges (padding bits, runs crossing words), N not a multiple of 64,
    k above the panel: the tail is -1 in rows, left and right alike."""
    for n in (1, 5, 63, 65, 130):
        ref = _panel(rng, n, t, int(rng.integers(1, 4)), 0.02)
        q = (ref[rng.integers(0, n, 3)] ^ (rng.random((3, t)) < 0.02)).astype(np.int8)
        q[2] = rng.integers(0, 2, t)  # one unrelated query: short runs
        k = n + 3
        pts = np.unique(np.r_[0, rng.integers(0, t + 1, 6), t])
        rows, left, right = _assert_oracle(bits := pack_markers(ref), q, pts, k, seed=int(rng.integers(0, 2**31)))
        assert bits.shape == (n, (t + 63) // 64)
        assert (rows[..., n:] == -1).all() and (left[..., n:] == -1).all() and (right[..., n:] == -1).all()
        assert (rows[..., :n] >= 0).all()
        assert ((left + right)[..., :n] <= t).all()


def test_many_identical_haplotypes(rng):
    """A panel of 3 haplotypes copied ~60 times each, no mutations: every score ties in blocks."""
    n, t = 190, 150
    ref = _panel(rng, n, t, 3, 0.0)
    q = np.concatenate([ref[:2], (ref[2:4] ^ (rng.random((2, t)) < 0.05))]).astype(np.int8)
    for k in (1, 16, 70, n):
        _assert_oracle(pack_markers(ref), q, np.arange(0, t + 1, 5), k, ids=rng.integers(0, 99, 4), seed=k)


def test_missing_calls_mixed_batch(rng):
    """Queries with and without missing calls in one call (two paths), an all-missing query (every
    row scores T: a pure draw), a missing stretch across a word edge."""
    n, t = 80, 140
    ref = _panel(rng, n, t, 4, 0.02)
    q = ref[rng.integers(0, n, 5)].astype(np.int8)
    q[1, rng.random(t) < 0.1] = -1
    q[2] = -1
    q[3, 50:90] = -1
    q[4, 0] = q[4, t - 1] = -1  # missing at both ends
    _, left, right = _assert_oracle(pack_markers(ref), q, np.arange(0, t + 1, 7), 12, seed=int(rng.integers(0, 99)))
    assert ((left[2] + right[2]) == t).all()  # all-missing: every row matches everywhere


def test_points_dense_sparse_and_ends(rng):
    """Points at every boundary (a stretch of untyped sites maps to adjacent boundaries), only the
    two ends, a single point, no point at all."""
    n, t = 50, 100
    ref = _panel(rng, n, t, 3, 0.03)
    q = (ref[:3] ^ (rng.random((3, t)) < 0.03)).astype(np.int8)
    bits = pack_markers(ref)
    for pts in (np.arange(t + 1), np.array([0, t]), np.array([0]), np.array([t]), np.arange(40, 46)):
        rows, left, right = _assert_oracle(bits, q, pts, 6, seed=1)
        if pts[0] == 0:
            assert (left[:, 0] == 0).all()
        if pts[-1] == t:
            assert (right[:, -1] == 0).all()
    # dense points with k = N (every row at every boundary): match_runs gives the same runs
    rows, left, right = pbwt_donors(bits, q, np.arange(t + 1), n)
    lr = match_runs(bits, q, rows.reshape(3, -1), torch.arange(t + 1).repeat_interleave(n).expand(3, -1))
    assert torch.equal(lr[0], left.reshape(3, -1)) and torch.equal(lr[1], right.reshape(3, -1))
    rows, left, right = pbwt_donors(bits, q, np.array([], dtype=np.int64), 4)
    assert rows.shape == left.shape == right.shape == (3, 0, 4)


def test_exclusion_against_oracle(rng):
    """Excluded rows: duplicates, -1 padding, all of one founder's copies, and every row."""
    n, t = 40, 90
    ref = _panel(rng, n, t, 2, 0.0)
    q = ref[[0, 1, 2]].astype(np.int8)
    same = np.flatnonzero((ref == ref[0]).all(1))  # the exact copies of query 0
    ex = np.full((3, n), -1, dtype=np.int64)
    ex[0, : same.shape[0]] = same
    ex[1, :4] = [1, 1, -1, 1]
    ex[2] = np.arange(n)
    rows, left, right = _assert_oracle(pack_markers(ref), q, np.arange(0, t + 1, 9), 10, ex, seed=7)
    assert not np.isin(rows[0].numpy(), same).any()
    assert not (rows[1] == 1).any()
    assert (rows[2] == -1).all() and (left[2] == -1).all() and (right[2] == -1).all()


def test_definition_by_loops(rng):
    """The oracle itself, against plain loops over markers on a small case."""
    bits, ref, q, pts, k, ex, ids = _case(rng, missing=True)
    rows, left, right = pbwt_donors(bits, q, pts, k, exclude=ex, query_ids=ids, seed=3)
    t = ref.shape[1]

    def runs(r, qq, b):
        same = [qq[m] < 0 or ref[r, m] == qq[m] for m in range(t)]
        lft = 0
        while b - 1 - lft >= 0 and same[b - 1 - lft]:
            lft += 1
        rgt = 0
        while b + rgt < t and same[b + rgt]:
            rgt += 1
        return lft, rgt

    for qi in range(q.shape[0]):
        allowed = [r for r in range(ref.shape[0]) if r not in set(ex[qi].tolist())]
        for p, b in enumerate(pts):
            scores = {r: sum(runs(r, q[qi], b)) for r in allowed}
            got = [int(r) for r in rows[qi, p] if r >= 0]
            assert len(got) == min(k, len(allowed))
            got_scores = [scores[r] for r in got]
            assert got_scores == sorted(got_scores, reverse=True)
            # nothing left out beats (or, by score alone, ties above) the last one kept
            if got:
                assert all(scores[r] <= got_scores[-1] for r in allowed if r not in got)
            for j, r in enumerate(got):
                assert (int(left[qi, p, j]), int(right[qi, p, j])) == runs(r, q[qi], b)


def test_ties_are_a_seeded_draw_not_the_lowest_row(rng):
    """Identical rows tie; which of them come back follows the hash and changes with the seed."""
    t, n = 40, 30
    ref = np.tile(rng.integers(0, 2, (1, t)).astype(np.uint8), (n, 1))  # 30 identical haplotypes
    q = ref[:1].astype(np.int8)
    bits = pack_markers(ref)
    picks = set()
    for seed in range(6):
        rows, left, right = pbwt_donors(bits, q, [t // 2], 4, seed=seed)
        got = rows[0, 0].tolist()
        assert (left[0, 0] + right[0, 0] == t).all()
        want = np.lexsort((np.arange(n), tie_hash(seed, 0, t // 2, np.arange(n))))[:4]
        assert got == want.tolist()
        picks.add(tuple(got))
    assert len(picks) > 1, "the seed must change the draw among tied rows"
    assert any(p != (0, 1, 2, 3) for p in picks), "ties must not go to the lowest rows"


def test_excluded_rows_never_come_back(rng):
    ref = _panel(rng, 20, 64, 2, 0.0)
    q = ref[[3, 4]].astype(np.int8)
    ex = np.array([[2, 3], [4, 5]])
    rows, _, _ = pbwt_donors(pack_markers(ref), q, np.arange(0, 65, 8), 19, exclude=ex)
    for qi in range(2):
        kept = rows[qi][rows[qi] >= 0]
        assert not np.isin(kept.numpy(), ex[qi]).any()
        assert (rows[qi] >= 0).sum(-1).eq(18).all()  # 20 rows - 2 excluded, k = 19: one -1 each


def test_no_typed_markers_on_one_side(rng):
    ref = _panel(rng, 9, 5, 3, 0.1)
    q = ref[:2].astype(np.int8)
    rows, left, right = pbwt_donors(pack_markers(ref), q, [0, 5], 3)
    assert (left[:, 0][rows[:, 0] >= 0] == 0).all()  # nothing left of boundary 0
    assert (right[:, 1][rows[:, 1] >= 0] == 0).all()  # nothing right of boundary T


def test_match_runs_equals_reference(rng):
    for _ in range(10):
        bits, ref, q, _, _, _, _ = _case(rng, missing=bool(rng.integers(0, 2)))
        n, t = ref.shape
        r = int(rng.integers(1, 40))
        rows = rng.integers(-1, n, (q.shape[0], r)).astype(np.int64)
        bounds = rng.integers(0, t + 1, (q.shape[0], r)).astype(np.int64)
        got = match_runs(bits, q, rows, bounds)
        want = match_runs_reference(bits, torch.from_numpy(q), torch.from_numpy(rows), torch.from_numpy(bounds))
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        assert (got[0][torch.from_numpy(rows) < 0] == -1).all()


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"points": [3, 2]}, "strictly increasing"),
        ({"points": [99]}, "boundaries"),
        ({"k": 0}, "k must be"),
        ({"query": np.full((1, 10), 2)}, "0, 1 or -1"),
        ({"query": np.zeros((1, 70), np.int8)}, "words per row"),
    ],
)
def test_bad_arguments_are_value_errors(kw, match):
    ref = np.zeros((4, 10), np.uint8)
    args = {"query": np.zeros((1, 10), np.int8), "points": [0, 5], "k": 2} | kw
    with pytest.raises(ValueError, match=match):
        pbwt_donors(pack_markers(ref), args["query"], args["points"], args["k"])


def test_backend_named():
    assert pbwt_backend() in ("cpp", "numpy-reference")
