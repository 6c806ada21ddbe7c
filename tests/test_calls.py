"""The calls written out (imputation/calls.py): ``final_calls`` against a per-genotype loop, and
``TypedOverlay`` (GT and phase stored at typed sites only) against the dense array it stands for."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from vcfbert_fast.imputation.calls import TargetCalls, TypedOverlay, final_calls


def _random_calls(rng, n_sites=70, n_samp=5):
    """TargetCalls over ``n_sites`` with ~1 site in 4 typed, missing alleles and unphased hets."""
    n_rec = n_sites // 4
    panel_index = np.sort(rng.choice(n_sites, size=n_rec, replace=False)).astype(np.int64)
    alleles = rng.integers(-1, 2, size=(n_samp, 2, n_rec)).astype(np.int8)
    phased = rng.random((n_samp, n_rec)) < 0.6
    target = SimpleNamespace(samples=[f"s{i}" for i in range(n_samp)], alleles=alleles, phased=phased)
    alignment = SimpleNamespace(panel_index=panel_index, swap=np.zeros(n_rec, dtype=bool))
    unph = (~phased) & (alleles[:, 0] != alleles[:, 1]) & (alleles.min(1) >= 0)
    return TargetCalls.from_alignment(target, alignment, n_sites, unph)


def test_final_calls_per_genotype(rng):
    """Imputed sites: GT = HDS > 0.5, phased. Typed sites: the input alleles, the model's where one
    is missing (then phased); unphased hets keep 0/1, HDS 0.5 and their unphased state."""
    tc = _random_calls(rng)
    n_sites, n_samp = tc.typed.size, tc.n_samples
    calls, unphased = tc.calls(slice(None)), tc.unphased(slice(None))
    phased_in = np.ones((n_samp, n_sites), dtype=bool)
    phased_in[:, tc.typed_sites] = tc.typed_phased
    hds = rng.random((n_sites, n_samp, 2)).astype(np.float32)
    model = hds.copy()
    fc = final_calls(hds, tc)
    gt, phased = fc.gt.dense(), fc.phased.dense()
    assert gt.shape == (n_sites, n_samp, 2) and phased.shape == (n_sites, n_samp)
    for m in range(n_sites):
        for s in range(n_samp):
            call = calls[s, :, m]
            if not tc.typed[m]:
                want_gt, want_hds, want_ph = (model[m, s] > 0.5).astype(int), model[m, s], True
            elif unphased[s, m]:
                want_gt, want_hds, want_ph = call, [0.5, 0.5], False
            else:
                want_gt = [int(c) if c >= 0 else int(model[m, s, j] > 0.5) for j, c in enumerate(call)]
                want_hds = [float(c) if c >= 0 else model[m, s, j] for j, c in enumerate(call)]
                want_ph = bool(phased_in[s, m]) or bool((call < 0).any())
            assert list(gt[m, s]) == list(want_gt), (m, s)
            np.testing.assert_allclose(fc.hds[m, s], want_hds, err_msg=f"{(m, s)}")
            assert bool(phased[m, s]) == want_ph, (m, s)
            assert bool(fc.unphased_het.dense()[m, s]) == bool(tc.typed[m] and unphased[s, m])
        assert fc.filled[m] == (int((calls[:, :, m] < 0).any(1).sum()) if tc.typed[m] else 0)


def test_typed_overlay_indexes_like_the_dense_array(rng):
    n, width = int(rng.integers(1, 90)), 3
    dense = rng.integers(0, 100, size=(n, width))
    rows = np.sort(rng.choice(n, size=int(rng.integers(0, n + 1)), replace=False)).astype(np.int64)
    base_values = dense.copy()
    dense[rows] = rng.integers(100, 200, size=(rows.size, width))
    ov = TypedOverlay(n, lambda r: base_values[r].copy(), rows, dense[rows])
    assert ov.shape == dense.shape and len(ov) == n
    np.testing.assert_array_equal(ov.dense(), dense)
    for _ in range(20):
        idx = np.sort(rng.choice(n, size=int(rng.integers(1, n + 1)), replace=False))
        np.testing.assert_array_equal(ov[idx], dense[idx])
        a = int(rng.integers(0, n))
        b = int(rng.integers(a, n + 1))
        part = ov[a:b]  # slices of slices keep their place in the base
        np.testing.assert_array_equal(part.dense(), dense[a:b])
        if b - a > 1:
            c = int(rng.integers(0, b - a))
            np.testing.assert_array_equal(part[c:].dense(), dense[a + c : b])
