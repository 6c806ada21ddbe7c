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


@pytest.mark.parametrize("missing", [False, True], ids=["pbwt-path", "brute-path"])
def test_op_equals_oracle(rng, missing):
    for _ in range(25):
        bits, _, q, pts, k, ex, ids = _case(rng, missing)
        seed = int(rng.integers(0, 2**31))
        got = pbwt_donors(bits, q, pts, k, exclude=ex, query_ids=ids, seed=seed)
        want = pbwt_donors_reference(
            bits, torch.from_numpy(q), torch.from_numpy(ex), torch.from_numpy(ids), torch.from_numpy(pts), k, seed
        )
        for g, w, name in zip(got, want, ("rows", "left", "right")):
            assert torch.equal(g, w), f"{name} differ from the oracle"


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
