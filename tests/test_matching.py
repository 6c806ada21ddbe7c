"""The pbwt engine: per-site donors against the brute-force oracle, the vote, and donor embeddings."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vcfbert_fast.matching import (
    MATCH_FEATURES,
    PbwtRetriever,
    SiteDonors,
    donor_embeddings,
    donor_inputs,
    split_haplotypes,
)
from vcfbert_fast.model import BERTFoundationModel, BERTWithEmbeddingRAG, ModelConfig
from vcfbert_fast.ops.pbwt import pack_markers, pbwt_donors_reference
from vcfbert_fast.vocab import ALLELE_0, EOS, SOS, VOCAB_SIZE
from vcfbert_fast.windows import make_windows


def mosaic_panel(rng, n_hap: int, n_sites: int, n_founders: int = 6):
    """Haplotypes copied from a few founders in chunks (long shared runs, many ties), some noise."""
    founders = rng.integers(0, 2, (n_founders, n_sites), dtype=np.uint8)
    haps = np.empty((n_hap, n_sites), dtype=np.uint8)
    for h in range(n_hap):
        cuts = np.sort(rng.choice(np.arange(1, n_sites), size=3, replace=False))
        src = rng.integers(0, n_founders, 4)
        for i, (a, b) in enumerate(zip(np.r_[0, cuts], np.r_[cuts, n_sites], strict=True)):
            haps[h, a:b] = founders[src[i], a:b]
    noise = rng.random(haps.shape) < 0.01
    haps[noise] ^= 1
    positions = np.cumsum(rng.integers(1, 500, n_sites)).astype(np.int64)
    return SimpleNamespace(haplotypes=haps, positions=positions, n_sites=n_sites)


def make_retriever(rng, n_hap=40, n_sites=300, k=5, group=3, rows=None):
    panel = mosaic_panel(rng, n_hap, n_sites)
    layout = make_windows(n_sites, 64, 0)
    af = panel.haplotypes.mean(0)
    r = PbwtRetriever(panel, af, layout, rows, k=k, group=group, seed=int(rng.integers(1 << 30)))
    typed = np.sort(rng.choice(n_sites, size=n_sites // 7, replace=False))
    r.set_markers(typed)
    return r, panel, typed


def runs_by_loops(ref_row: np.ndarray, q: np.ndarray, b: int) -> tuple[int, int]:
    left = 0
    while b - 1 - left >= 0 and (q[b - 1 - left] < 0 or q[b - 1 - left] == ref_row[b - 1 - left]):
        left += 1
    right = 0
    while b + right < q.size and (q[b + right] < 0 or q[b + right] == ref_row[b + right]):
        right += 1
    return left, right


def test_site_donors_are_the_oracles_segment_donors(rng):
    r, panel, typed = make_retriever(rng)
    n_hap = panel.haplotypes.shape[0]
    queries = panel.haplotypes[:, typed].astype(np.int8)
    queries[rng.random(queries.shape) < 0.02] = -1  # missing calls: wildcards
    r.set_queries(queries)
    ids = np.array([3, 8, 17])
    exclude = torch.tensor([[3, 2], [8, 9], [16, 17]])
    w = 2
    d = r.site_donors(w, ids, exclude=exclude)
    sl = r.layout.sites(w)
    b, k, n = d.shape
    assert (b, k, n) == (3, 5, sl.stop - sl.start)
    ref = pack_markers(panel.haplotypes[:, typed])
    for qi, q in enumerate(ids):
        for j, site in enumerate(range(sl.start, sl.stop)):
            bnd = int(np.searchsorted(typed, site))
            point = min(bnd // r.group * r.group + r.group // 2, typed.size)
            want, _, _ = pbwt_donors_reference(
                ref,
                torch.from_numpy(queries[q : q + 1]),
                exclude[qi : qi + 1],
                torch.tensor([q]),
                torch.tensor([point]),
                k,
                r.seed,
            )
            assert d.rows[qi, :, j].tolist() == want[0, 0].tolist()
            assert not set(d.rows[qi, :, j].tolist()) & set(exclude[qi].tolist())
            for kk in range(k):
                row = int(d.rows[qi, kk, j])
                left, right = runs_by_loops(panel.haplotypes[row, typed], queries[q], bnd)
                assert (int(d.left[qi, kk, j]), int(d.right[qi, kk, j])) == (left, right)
                assert int(d.alleles[qi, kk, j]) == panel.haplotypes[row, site]
                pos = panel.positions[site]
                lbp = pos - panel.positions[typed[bnd - left]] if left else 0
                rbp = panel.positions[typed[bnd + right - 1]] - pos if right else 0
                assert (int(d.left_bp[qi, kk, j]), int(d.right_bp[qi, kk, j])) == (lbp, rbp)
    assert n_hap == r.n_references


def test_runs_kept_per_boundary_read_as_the_per_site_tensors(rng):
    """``site_donors`` keeps match runs per boundary and builds per-site tensors when read:
    ``features_at`` from the boundary runs, ``select`` and ``cat`` of them must equal ``features()``
    and the per-site tensors of the same donors."""
    r, panel, typed = make_retriever(rng)
    r.set_queries(panel.haplotypes[:, typed].astype(np.int8))
    d = r.site_donors(1, np.arange(6))
    b, _, n = d.shape
    rows = torch.from_numpy(rng.integers(0, b, 40))
    sites = torch.from_numpy(rng.integers(0, n, 40))
    lazy = d.features_at(rows, sites)  # before any per-site tensor exists
    torch.testing.assert_close(lazy, d.features()[:, :, 1:-1][rows, :, sites])  # features() builds them
    halves = [d.select(slice(0, 2)), d.select(torch.tensor([2, 3, 4, 5]))]
    joined = SiteDonors.cat(halves)
    for name in ("rows", "alleles", "left", "right", "left_bp", "right_bp"):
        assert torch.equal(getattr(joined, name), getattr(d, name)), name
    torch.testing.assert_close(joined.features_at(rows, sites), lazy)
    with pytest.raises(ValueError, match="one window"):
        SiteDonors.cat([d, r.site_donors(2, np.arange(6))])


def test_precomputed_donors_equal_per_call_and_reference_rows_are_respected(rng):
    rows = np.sort(rng.choice(40, size=25, replace=False))
    r, panel, typed = make_retriever(rng, rows=rows)
    q = panel.haplotypes[:, typed]
    r.set_queries(q)
    per_call = r.site_donors(1, np.arange(10))
    r.set_queries(q, precompute=True)
    pre = r.site_donors(1, np.arange(10))
    assert torch.equal(per_call.rows, pre.rows) and torch.equal(per_call.left, pre.left)
    assert set(pre.rows.unique().tolist()) <= set(rows.tolist())  # only the given reference rows
    # found a few queries per call (as imputation does, 256 at a time) and kept in 16 bits: the same
    cache = r._cache["all"]
    assert cache.dtype == torch.int16
    for block in (1, 3, 7):
        r.set_queries(q, precompute=False)
        assert torch.equal(r._precompute(None, block=block).long(), cache.long())


def test_vote_features_and_tokens_by_hand(rng):
    b, k, n = 2, 4, 6
    left = torch.randint(0, 30, (b, k, n), dtype=torch.int32)
    right = torch.randint(0, 30, (b, k, n), dtype=torch.int32)
    d = SiteDonors(
        torch.randint(0, 9, (b, k, n)),
        torch.randint(0, 2, (b, k, n), dtype=torch.uint8),
        left,
        right,
        torch.randint(0, 90_000, (b, k, n)),
        torch.randint(0, 90_000, (b, k, n)),
    )
    v = d.vote(alpha=0.1)
    for i in range(b):
        for s in range(n):
            w = np.exp(0.1 * (left[i, :, s] + right[i, :, s]).double().numpy())
            want = (w * d.alleles[i, :, s].double().numpy()).sum() / w.sum()
            assert abs(float(v[i, s]) - want) < 1e-6
    f = d.features()
    assert f.shape == (b, k, n + 2, len(MATCH_FEATURES)) and float(f[:, :, [0, -1]].abs().sum()) == 0
    tot = (left + right).float()
    torch.testing.assert_close(f[:, :, 1:-1, 5], (tot - tot.amax(1, keepdim=True)) / 10)
    torch.testing.assert_close(f[:, :, 1:-1, 2], torch.log1p(d.left_bp.float() / 1e3))
    t = d.tokens()
    assert (t[..., 0] == SOS).all() and (t[..., -1] == EOS).all()
    assert torch.equal(t[..., 1:-1], d.alleles.long() + ALLELE_0)
    h1, h2 = split_haplotypes(d)
    assert torch.equal(h1.rows, d.rows[0::2]) and torch.equal(h2.left, d.left[1::2])


def test_donor_embeddings_equal_the_layer_on_each_donor(rng):
    model = BERTFoundationModel(BERTWithEmbeddingRAG(VOCAB_SIZE, config=ModelConfig(dims=16, n_layers=1, attn_heads=2)))
    emb = model.bert.embedding.eval()
    b, k, length = 2, 3, 9
    toks = torch.randint(ALLELE_0, ALLELE_0 + 2, (b, k, length))
    toks[..., 0], toks[..., -1] = SOS, EOS
    pos, af = torch.rand(length), torch.rand(length)
    got = donor_embeddings(emb, toks, pos, af)
    with torch.no_grad():
        want = emb(toks.view(b * k, length), pos.expand(b * k, length), af.expand(b * k, length)).view(b, k, length, -1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("train", [False, True])
def test_factored_references_equal_materialised(rng, train):
    """The CPU fast path (rag_table + rag_tok) gives the model what rag_emb gives it, grads too."""
    r, panel, typed = make_retriever(rng, k=4)
    r.set_queries(panel.haplotypes[:, typed])
    d1, d2 = split_haplotypes(r.site_donors(0, np.arange(6)))
    sl = r.layout.sites(0)
    length = sl.stop - sl.start + 2
    cfg = ModelConfig(dims=16, n_layers=1, attn_heads=2, dropout=0.0)
    model = BERTFoundationModel(BERTWithEmbeddingRAG(VOCAB_SIZE, config=cfg))
    model.train(train)
    batch = {
        "hap_1": d1.tokens()[:, 0],
        "hap_2": d2.tokens()[:, 0],
        # a window-grouped batch: every row shares the window's features (the factored contract)
        **{f: torch.rand(1, length).expand(3, length) for f in ("pos", "af", "af_p", "ref", "het", "hom")},
    }
    batch = {kk: v.contiguous() for kk, v in batch.items()}
    torch.manual_seed(0)
    out_f = model.forward_logits({**batch, **donor_inputs(d1, d2, model.bert.embedding, batch["pos"], batch["af"], True)})
    grads_f = torch.autograd.grad(out_f["hap1_logits"].sum(), model.bert.embedding.token.weight)[0]
    torch.manual_seed(0)
    inp = donor_inputs(d1, d2, model.bert.embedding, batch["pos"], batch["af"], False)
    assert inp["rag_emb_h1"].shape == (3, 4, length, 16)
    out_m = model.forward_logits({**batch, **inp})
    grads_m = torch.autograd.grad(out_m["hap1_logits"].sum(), model.bert.embedding.token.weight)[0]
    torch.testing.assert_close(out_f["hap1_logits"], out_m["hap1_logits"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads_f, grads_m, rtol=1e-4, atol=1e-5)


def test_search_needs_whole_chromosome_queries(rng):
    r, panel, typed = make_retriever(rng)
    with pytest.raises(ValueError, match="set_queries"):
        r.site_donors(0, [0])
    r.set_queries(panel.haplotypes[:, typed])
    with pytest.raises(ValueError, match="whole-chromosome"):
        r.search(0, torch.zeros(1, 66, dtype=torch.long))
    dist, rows = r.search(0, None, queries=[1, 2])
    assert rows.shape == (2, r.k) and bool((dist[:, 1:] >= dist[:, :-1]).all())
    with pytest.raises(ValueError, match="one per typed marker"):
        r.set_queries(panel.haplotypes[:, typed[:-1]])
