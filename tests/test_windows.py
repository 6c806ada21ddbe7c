"""Windows and token framing: coverage, sizes, overlaps, central window, exact vocab."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vcfbert_fast import vocab
from vcfbert_fast.errors import InputError
from vcfbert_fast.windows import (
    WindowLayout,
    frame_features,
    frame_labels,
    frame_tokens,
    make_windows,
    scaled_positions,
)

rng = np.random.default_rng()  # reseeded from the test seed by _reseed


@pytest.fixture(autouse=True)
def _reseed(seed):
    """The module's generator draws from this test's printed seed (root conftest), so failures replay."""
    global rng
    rng = np.random.default_rng(seed)


def _random_cases(k: int):
    cases = [(1, 1028, 0), (1028, 1028, 0), (1029, 1028, 0), (1029, 1028, 5), (10, 3, 2), (7, 2, 1)]
    for _ in range(k):
        max_sites = int(rng.integers(1, 60))
        overlap = int(rng.integers(0, max_sites))
        n = int(rng.integers(1, 600))
        cases.append((n, max_sites, overlap))
    return cases


@pytest.mark.parametrize("n,max_sites,overlap", _random_cases(40))
def test_make_windows_cover_sizes_overlap(n, max_sites, overlap):
    lay = make_windows(n, max_sites=max_sites, overlap=overlap)
    w = len(lay)
    sizes = lay.ends - lay.starts
    assert lay.starts.dtype == np.int64 and lay.ends.dtype == np.int64
    assert lay.starts[0] == 0 and lay.ends[-1] == n
    assert np.all(sizes >= 1) and np.all(sizes <= max_sites)
    # Every site covered; consecutive windows share exactly `overlap` sites.
    cover = np.zeros(n, dtype=int)
    for i in range(w):
        cover[lay.sites(i)] += 1
    assert np.all(cover >= 1)
    if w > 1:
        assert np.all(lay.ends[:-1] - lay.starts[1:] == overlap)
        # Windows advance strictly.
        assert np.all(np.diff(lay.starts) > 0)
    # Fewest windows: one fewer could not cover n sites.
    assert max_sites + (w - 1) * (max_sites - overlap) >= n
    if w > 1:
        assert max_sites + (w - 2) * (max_sites - overlap) < n
    # Balanced.
    assert sizes.max() - sizes.min() <= 1
    assert np.array_equal(lay.lengths, sizes + 2)


def test_make_windows_errors():
    with pytest.raises(InputError):
        make_windows(0)
    with pytest.raises(InputError):
        make_windows(100, max_sites=10, overlap=10)
    with pytest.raises(InputError):
        make_windows(100, max_sites=10, overlap=-1)
    with pytest.raises(InputError):
        make_windows(100, max_sites=0)


def test_layout_roundtrip_plain_types(tmp_path):
    lay = make_windows(int(rng.integers(2000, 5000)), max_sites=1028, overlap=int(rng.integers(0, 200)))
    d = lay.to_dict()

    def plain(x):
        if isinstance(x, dict):
            return all(isinstance(k, str) and plain(v) for k, v in x.items())
        if isinstance(x, list):
            return all(plain(v) for v in x)
        return type(x) is int

    assert plain(d)
    torch.save(d, tmp_path / "l.pt")
    back = WindowLayout.from_dict(torch.load(tmp_path / "l.pt", weights_only=True))
    assert back == lay and np.array_equal(back.starts, lay.starts) and back.overlap == lay.overlap


def test_layout_validation():
    with pytest.raises(InputError):
        WindowLayout(starts=[0, 6], ends=[5, 10], max_sites=10, overlap=0, n_sites=10)  # gap at 5
    with pytest.raises(InputError):
        WindowLayout(starts=[0], ends=[11], max_sites=10, overlap=0, n_sites=11)  # too long
    with pytest.raises(InputError):
        WindowLayout(starts=[0], ends=[9], max_sites=10, overlap=0, n_sites=10)  # last site missing
    with pytest.raises(InputError):
        WindowLayout.from_dict({"starts": [0]})


@pytest.mark.parametrize("trial", range(15))
def test_central_window_brute_force(trial):
    n = int(rng.integers(1, 300))
    max_sites = int(rng.integers(2, 50))
    lay = make_windows(n, max_sites=max_sites, overlap=int(rng.integers(0, max_sites)))
    got = lay.central_window_of_site()
    assert got.shape == (n,) and got.dtype == np.int64
    for i in range(n):
        best, best_score = -1, -1
        for w in range(len(lay)):
            s, e = int(lay.starts[w]), int(lay.ends[w])
            if s <= i < e:
                score = min(i - s, e - 1 - i)
                if score > best_score:
                    best, best_score = w, score
        assert got[i] == best


def test_central_window_hand_example():
    lay = WindowLayout(starts=[0, 6], ends=[10, 16], max_sites=10, overlap=4, n_sites=16)
    # Sites 6..9 are in both: distances in w0 (to end 9): 3,2,1,0; in w1 (from start 6): 0,1,2,3.
    assert lay.central_window_of_site().tolist() == [0] * 6 + [0, 0, 1, 1] + [1] * 6


def test_frame_tokens_vocab_exact():
    assert (vocab.PAD, vocab.UNK, vocab.SOS, vocab.EOS, vocab.MASK, vocab.ALLELE_0, vocab.ALLELE_1) == (
        0,
        1,
        2,
        3,
        4,
        5,
        6,
    )
    a = np.array([0, 1, -1, 1, 0])
    m = np.array([False, False, False, True, True])
    assert frame_tokens(a).tolist() == [2, 5, 6, 1, 6, 5, 3]
    assert frame_tokens(a, m).tolist() == [2, 5, 6, 1, 4, 4, 3]


@pytest.mark.parametrize("as_torch", [False, True])
def test_frame_tokens_random_matches_loop(as_torch):
    b, n = int(rng.integers(1, 5)), int(rng.integers(1, 40))
    a = rng.integers(-1, 2, size=(b, 2, n))
    m = rng.random((b, 2, n)) < 0.4
    shared = rng.random(n) < 0.4
    for mask in (None, shared, m):
        x = torch.from_numpy(a) if as_torch else a
        mm = None if mask is None else (torch.from_numpy(mask) if as_torch else mask)
        got = frame_tokens(x, mm)
        got = got.numpy() if as_torch else got
        assert got.dtype == np.int64 and got.shape == (b, 2, n + 2)
        for i in range(b):
            for h in range(2):
                row = [vocab.SOS]
                for j in range(n):
                    mj = False if mask is None else (mask[j] if mask.ndim == 1 else mask[i, h, j])
                    if mj:
                        row.append(vocab.MASK)
                    else:
                        row.append({-1: vocab.UNK, 0: vocab.ALLELE_0, 1: vocab.ALLELE_1}[int(a[i, h, j])])
                row.append(vocab.EOS)
                assert got[i, h].tolist() == row


def test_frame_tokens_uint8_and_bad_values():
    a = rng.integers(0, 2, size=(3, 17)).astype(np.uint8)
    assert np.array_equal(frame_tokens(a)[:, 1:-1], a.astype(np.int64) + 5)
    with pytest.raises(InputError):
        frame_tokens(np.array([0, 2, 1]))
    with pytest.raises(InputError):
        frame_tokens(torch.tensor([0, -2]))


def test_frame_features_and_labels():
    v = rng.random((3, 11)).astype(np.float64)
    f = frame_features(v)
    assert f.dtype == np.float32 and f.shape == (3, 13)
    assert np.all(f[:, 0] == 0) and np.all(f[:, -1] == 0)
    assert np.array_equal(f[:, 1:-1], v.astype(np.float32))
    ft = frame_features(torch.from_numpy(v))
    assert ft.dtype == torch.float32 and torch.equal(ft, torch.from_numpy(f))
    a = rng.integers(-1, 2, size=(2, 9))
    lab = frame_labels(a)
    exp = np.full((2, 11), -100)
    exp[:, 1:-1] = np.where(a < 0, -100, a)
    assert np.array_equal(lab, exp)
    assert torch.equal(frame_labels(torch.from_numpy(a)), torch.from_numpy(exp))


def test_scaled_positions():
    p = np.sort(rng.choice(10**7, size=50, replace=False))
    s = scaled_positions(p)
    assert s.dtype == np.float32
    np.testing.assert_allclose(s, (p - p.min()) / (p.max() - p.min()), rtol=1e-6)
    assert s[0] == 0 and s[-1] == 1
    assert scaled_positions([12345]).tolist() == [0.0]
