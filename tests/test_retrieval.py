"""Retrieval engines against independently computed nearest neighbours (fresh random inputs each run,
from the root conftest's printed per-test seed: ``rng`` and torch's global RNG for the embedding).

Expected distances are computed here by materialising the real ``HaplotypeEmbedding`` outputs of
the query and of every (identically masked) reference and taking ``||q - r||^2`` in float64:
nothing from vcfbert_fast.retrieval is used to compute them.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vcfbert_fast.errors import InputError
from vcfbert_fast.io import Panel
from vcfbert_fast.model import HaplotypeEmbedding, ModelConfig
from vcfbert_fast.ops import pack_bits, unpack_bits
from vcfbert_fast.ops.hamming import WEIGHT_BITS
from vcfbert_fast.retrieval import FaissRetriever, HammingRetriever, make_retriever
from vcfbert_fast.vocab import MASK, UNK
from vcfbert_fast.windows import frame_features, frame_tokens, make_windows, scaled_positions

RTOL = 1e-4  # the kernel quantises weights; re-ranking is float64 but the two engines round differently


def make_panel(rng, n_hap: int, n_sites: int, n_dup: int = 0) -> Panel:
    """Random panel with varied allele frequencies; ``n_dup`` rows copied from others (exact ties)."""
    af = rng.beta(0.4, 0.6, size=n_sites)
    haps = (rng.random((n_hap, n_sites)) < af).astype(np.uint8)
    for _ in range(n_dup):
        haps[rng.integers(n_hap)] = haps[rng.integers(n_hap)]
    positions = np.sort(rng.choice(10 * n_sites, size=n_sites, replace=False)).astype(np.int64) + 1
    m = n_sites
    return Panel(
        path="mem.vcf",
        contig="1",
        positions=positions,
        ref=np.array(["A"] * m, dtype=object),
        alt=np.array(["G"] * m, dtype=object),
        ids=np.array(["."] * m, dtype=object),
        samples=[f"s{i}" for i in range(n_hap // 2)],
        haplotypes=haps,
    )


def setup(rng, n_hap=None, n_dup=0):
    n_hap = n_hap or int(rng.integers(20, 100)) * 2
    if n_hap % 64 == 0:
        n_hap += 2
    max_sites = int(rng.integers(20, 131))
    n_sites = int(max_sites * rng.uniform(1.3, 2.5))
    panel = make_panel(rng, n_hap, n_sites, n_dup)
    freqs = SimpleNamespace(af=panel.haplotypes.mean(0).astype(np.float32))
    layout = make_windows(n_sites, max_sites=max_sites)
    return panel, freqs, layout


def embedding(dims=16, scale_tokens=False):
    emb = HaplotypeEmbedding(ModelConfig(dims=dims, n_layers=1, attn_heads=2, dropout=0.1))
    if scale_tokens:
        with torch.no_grad():
            emb.token.weight.mul_(3.0)
    return emb.eval()


def window_feats(panel, freqs, layout, w):
    sl = layout.sites(w)
    return (
        torch.from_numpy(frame_features(scaled_positions(panel.positions[sl]))),
        torch.from_numpy(frame_features(freqs.af[sl])),
    )


def exact_distances(emb, panel, freqs, layout, w, query_tokens, ref_rows) -> np.ndarray:
    """float64 ``||f(q_b) - f(r)||^2`` for every query and reference, each reference masked like the query."""
    sl = layout.sites(w)
    pos, af = window_feats(panel, freqs, layout, w)
    length = pos.shape[0]
    with torch.no_grad():
        q = emb(query_tokens, pos.expand(len(query_tokens), length), af.expand(len(query_tokens), length))
        out = np.empty((len(query_tokens), len(ref_rows)))
        views = {}  # reference view per distinct mask (one in training: the mask is shared)
        for b in range(len(query_tokens)):
            mask = (query_tokens[b, 1:-1] == MASK).numpy()
            if mask.tobytes() not in views:
                rt = torch.from_numpy(frame_tokens(panel.haplotypes[ref_rows, sl], mask))
                r = emb(rt, pos.expand(len(ref_rows), length), af.expand(len(ref_rows), length))
                views[mask.tobytes()] = r.double()
            r = views[mask.tobytes()]
            out[b] = ((r - q[b].double()) ** 2).sum((-1, -2)).numpy()
    return out


def check_topk(exact, dist, index, ref_rows, k, excluded=None, rtol=RTOL):
    """Tie-aware: returned distances are the k smallest, correct, sorted; every strictly closer row returned."""
    col = {int(r): j for j, r in enumerate(ref_rows)}
    dist, index = dist.numpy().astype(np.float64), index.numpy()
    assert dist.shape == index.shape == (exact.shape[0], k)
    for b in range(exact.shape[0]):
        e = exact[b].copy()
        if excluded is not None:
            for r in excluded[b]:
                if r >= 0 and int(r) in col:
                    e[col[int(r)]] = np.inf
        assert len(set(index[b].tolist())) == k, "duplicate neighbours"
        got = np.array([e[col[int(r)]] for r in index[b]])
        assert np.all(np.isfinite(got)), "an excluded or foreign row was returned"
        scale = rtol * max(1.0, float(np.sort(e)[k - 1]))
        np.testing.assert_allclose(dist[b], got, rtol=rtol, atol=scale)
        assert np.all(np.diff(got) >= -scale), "not nearest first"
        kth = np.sort(e)[k - 1]
        np.testing.assert_allclose(np.sort(got), np.sort(e)[:k], rtol=rtol, atol=scale)
        must = {int(ref_rows[j]) for j in np.nonzero(e < kth - scale)[0]}
        assert must <= set(index[b].tolist()), "a strictly closer reference was missed"


def queries_from_panel(rng, panel, layout, w, n_q, mask, unk_frac=0.0):
    sl = layout.sites(w)
    rows = rng.choice(panel.n_haplotypes, size=n_q, replace=False)
    alle = panel.haplotypes[rows, sl].astype(np.int64)
    if unk_frac:
        alle = np.where(rng.random(alle.shape) < unk_frac, -1, alle)
    tok = torch.from_numpy(frame_tokens(alle, mask))
    own = np.stack([rows - rows % 2, rows - rows % 2 + 1], axis=1)
    return tok, torch.from_numpy(own), rows


@pytest.mark.parametrize("k", [1, 8])
def test_engines_agree_with_real_embedding(k, rng):
    """The issue's acceptance test: Hamming and FAISS engines return the same neighbours, tie-aware."""
    for _ in range(2):
        panel, freqs, layout = setup(rng, n_dup=int(rng.integers(0, 6)))
        refs = np.sort(rng.choice(panel.n_haplotypes, size=int(panel.n_haplotypes * 0.8), replace=False))
        emb = embedding(dims=int(rng.choice([8, 16])))
        ham = make_retriever("hamming", panel, freqs, layout, refs, k=k)
        fai = make_retriever("faiss", panel, freqs, layout, refs, k=k)
        ham.refresh_embeddings(emb)
        fai.refresh_embeddings(emb)
        for w in rng.choice(len(layout), size=1):
            n = layout.sizes[w]
            mask = rng.random(n) < rng.uniform(0.1, 0.8)
            tok, own, _ = queries_from_panel(rng, panel, layout, int(w), 6, mask)
            exact = exact_distances(emb, panel, freqs, layout, int(w), tok, refs)
            dh, ih = ham.search(int(w), tok, exclude=own)
            df, i_f = fai.search(int(w), tok, exclude=own)
            check_topk(exact, dh, ih, refs, k, own.numpy())
            check_topk(exact, df, i_f, refs, k, own.numpy())
            np.testing.assert_allclose(dh.numpy(), df.numpy(), rtol=RTOL, atol=RTOL * max(1.0, float(dh.max())))  # all-zero: exact duplicates


def brute_costs(panel, layout, w, refs, tok, table):
    """sum_l ||f_l(q_l) - f_l(r_l)||^2 over sites where the query is not MASK, with math.fsum
    (correctly rounded: equal mismatch patterns give equal sums, so ties are real ties).
    ``table[t][a]``: per-site cost ``[n]`` of query token t against reference allele a."""
    sl = layout.sites(w)
    sites = tok[:, 1:-1].numpy()
    r = panel.haplotypes[refs, sl].astype(np.int64)
    out = np.empty((len(sites), len(refs)))
    cols = np.arange(r.shape[1])
    for b in range(len(sites)):
        per = np.zeros((2, r.shape[1]))
        for t in (5, 6, UNK):
            sel = sites[b] == t
            per[0, sel], per[1, sel] = table[t][0][sel], table[t][1][sel]
        for j in range(len(refs)):
            out[b, j] = math.fsum(per[r[j], cols])
    return out


def brute_weighted_hamming(panel, layout, w, refs, tok, weights):
    zero = np.zeros_like(weights)
    table = {5: (zero, weights), 6: (weights, zero), UNK: (zero, zero)}
    return brute_costs(panel, layout, w, refs, tok, table)


def expected_order(dist_matrix, refs, k, excluded=None):
    out = []
    for b, d in enumerate(dist_matrix):
        d = d.copy()
        if excluded is not None:
            d[np.isin(refs, excluded[b])] = np.inf
        order = np.lexsort((refs, d))[:k]
        out.append(refs[order])
    return np.array(out)


@pytest.mark.parametrize("refreshed", [False, True])
def test_hamming_vs_numpy_brute_force_exact_tiebreak(refreshed, rng):
    """Exact index equality (ties to the lowest row) against a numpy weighted Hamming with duplicated rows."""
    panel, freqs, layout = setup(rng, n_dup=int(rng.integers(10, 30)))
    refs = np.sort(rng.choice(panel.n_haplotypes, size=panel.n_haplotypes - 7, replace=False))
    k = int(rng.integers(1, 12))
    ret = HammingRetriever(panel, freqs, layout, refs, k=k, slack=int(rng.integers(0, 3)))
    emb = embedding()
    if refreshed:
        ret.refresh_embeddings(emb)
    w = int(rng.integers(len(layout)))
    pos, af = window_feats(panel, freqs, layout, w)
    model_w = emb.site_weights(pos, af, dtype=torch.float64)[1:-1].numpy() if refreshed else None
    if model_w is None:
        model_w = np.ones(layout.sizes[w])
    np.testing.assert_allclose(ret.site_weights(w).numpy(), model_w, rtol=1e-6)
    # Rank with the retriever's own weights (float32-noise-free), checked just above.
    weights = ret.site_weights(w).numpy()
    mask = rng.random(layout.sizes[w]) < 0.5
    tok, own, _ = queries_from_panel(rng, panel, layout, w, 10, mask)
    d, i = ret.search(w, tok, exclude=own)
    brute = brute_weighted_hamming(panel, layout, w, refs, tok, weights)
    exp = expected_order(brute, refs, k, own.numpy())
    np.testing.assert_array_equal(i.numpy(), exp)
    exp_d = np.take_along_axis(brute, np.searchsorted(refs, exp), 1)
    np.testing.assert_allclose(d.numpy(), exp_d, rtol=1e-6)
    for b in range(len(tok)):
        assert not set(own[b].tolist()) & set(i[b].tolist())


def test_all_identical_references_ties_to_lowest_rows(rng):
    panel, freqs, layout = setup(rng)
    panel.haplotypes[:] = panel.haplotypes[0]
    ret = HammingRetriever(panel, freqs, layout, k=5, slack=0)
    ret.refresh_embeddings(embedding())
    mask = rng.random(layout.sizes[0]) < 0.3
    tok, own, _ = queries_from_panel(rng, panel, layout, 0, 4, mask)
    _, i = ret.search(0, tok, exclude=own)
    for b in range(4):
        exp = [r for r in range(panel.n_haplotypes) if r not in own[b].tolist()][:5]
        assert i[b].tolist() == exp


def test_hamming_unk_general_path_and_per_query_masks(rng):
    """UNK calls and per-query masks: exact against materialised embeddings (UNK included)."""
    panel, freqs, layout = setup(rng, n_hap=int(rng.integers(20, 50)) * 2, n_dup=3)
    emb = embedding()
    ret = HammingRetriever(panel, freqs, layout, k=4)
    ret.refresh_embeddings(emb)
    w = int(rng.integers(len(layout)))
    n = layout.sizes[w]
    masks = rng.random((6, n)) < rng.uniform(0.1, 0.7, size=(6, 1))
    masks[3] = masks[2]  # two queries share a mask (one group), others differ
    toks = []
    for b in range(6):
        t, _, _ = queries_from_panel(rng, panel, layout, w, 1, masks[b], unk_frac=0.1 if b % 2 else 0.0)
        toks.append(t)
    tok = torch.cat(toks)
    assert (tok == UNK).any()
    before, unc_before = ret.n_general_queries, ret.n_uncertified
    d, i = ret.search(w, tok)
    # the GEMM path answers the UNK queries plus any fast-path query whose certificate failed
    # (duplicated rows tied at the K-th distance, a few % of runs)
    uncertified = ret.n_uncertified - unc_before
    assert ret.n_general_queries - before == int((tok == UNK).any(1).sum()) + uncertified
    refs = np.arange(panel.n_haplotypes)
    exact = exact_distances(emb, panel, freqs, layout, w, tok, refs)
    check_topk(exact, d, i, refs, 4, rtol=1e-6)


def test_faiss_requires_shared_mask_and_embedding(rng):
    panel, freqs, layout = setup(rng)
    ret = FaissRetriever(panel, freqs, layout, k=2)
    mask = rng.random(layout.sizes[0]) < 0.5
    tok, _, _ = queries_from_panel(rng, panel, layout, 0, 3, mask)
    with pytest.raises(RuntimeError, match="refresh_embeddings"):
        ret.search(0, tok)
    ret.refresh_embeddings(embedding())
    tok[1, 1 + int(np.argmax(~mask))] = MASK
    with pytest.raises(ValueError, match="shared"):
        ret.search(0, tok)


def test_faiss_budget_lru_and_too_large_window(rng):
    panel, freqs, layout = setup(rng, n_hap=42)
    while len(layout) < 3:
        panel, freqs, layout = setup(rng, n_hap=42)
    dims = 8
    emb = embedding(dims=dims)
    probe = FaissRetriever(panel, freqs, layout)
    sizes = [probe.window_nbytes(w, dims) for w in range(3)]
    assert sizes[0] == panel.n_haplotypes * (layout.sizes[0] + 2) * dims * 4
    budget = sizes[0] + sizes[1] + sizes[2] - 1  # any two fit, not all three
    ret = FaissRetriever(panel, freqs, layout, k=1, max_bytes=budget)
    ret.refresh_embeddings(emb)

    def q(w, mask=None):
        m = np.zeros(layout.sizes[w], dtype=bool) if mask is None else mask
        return queries_from_panel(rng, panel, layout, w, 2, m)[0]

    ret.search(0, q(0))
    ret.search(1, q(1))
    assert (ret.n_built, ret.n_evicted) == (2, 0)
    ret.search(0, q(0))  # hit: 0 becomes most recent
    assert ret.n_built == 2
    ret.search(2, q(2))  # evicts 1 (least recent), keeps 0
    assert (ret.n_built, ret.n_evicted) == (3, 1)
    assert ret.nbytes <= budget
    ret.search(0, q(0))
    assert ret.n_built == 3
    ret.search(1, q(1))
    assert ret.n_built == 4
    # A new mask is a new (window, mask) index.
    m = rng.random(layout.sizes[1]) < 0.5
    ret.search(1, q(1, m))
    assert ret.n_built == 5
    ret.refresh_embeddings(emb)
    assert ret.nbytes == 0
    small = FaissRetriever(panel, freqs, layout, max_bytes=sizes[0] - 1)
    small.refresh_embeddings(emb)
    with pytest.raises(InputError, match="max_bytes") as err:
        small.search(0, q(0))
    assert f"{sizes[0]:,}" in str(err.value) and "hamming" in str(err.value)


def test_refresh_follows_the_embedding(rng):
    panel, freqs, layout = setup(rng)
    emb = embedding()
    ret = HammingRetriever(panel, freqs, layout, k=3)
    ret.refresh_embeddings(emb)
    w = int(rng.integers(len(layout)))
    w1 = ret.site_weights(w).clone()
    pos, af = window_feats(panel, freqs, layout, w)
    np.testing.assert_allclose(w1.numpy(), emb.site_weights(pos, af, torch.float64)[1:-1].numpy(), rtol=1e-6)
    with torch.no_grad():
        emb.token.weight[6] += torch.randn_like(emb.token.weight[6])
        emb.site_mlp[0].weight.add_(0.3 * torch.randn_like(emb.site_mlp[0].weight))
    assert torch.equal(ret.site_weights(w), w1)  # stale until refreshed
    ret.refresh_embeddings(emb)
    w2 = ret.site_weights(w)
    assert not torch.allclose(w1, w2)
    np.testing.assert_allclose(w2.numpy(), emb.site_weights(pos, af, torch.float64)[1:-1].numpy(), rtol=1e-6)
    tok, own, _ = queries_from_panel(rng, panel, layout, w, 5, rng.random(layout.sizes[w]) < 0.4)
    d, i = ret.search(w, tok, exclude=own)
    refs = np.arange(panel.n_haplotypes)
    check_topk(exact_distances(emb, panel, freqs, layout, w, tok, refs), d, i, refs, 3, own.numpy())


def test_weights_quantised_once_and_reused_per_mask(monkeypatch, rng):
    """Weights are quantised once per (window, mask): searches with one mask hand the kernel the SAME
    int32 tensor (so the Triton plane cache hits), equal to an independent masked quantisation."""
    import vcfbert_fast.retrieval as R

    panel, freqs, layout = setup(rng)
    emb = embedding()
    ret = HammingRetriever(panel, freqs, layout, k=2)
    ret.refresh_embeddings(emb)
    seen = []
    real = R.hamming_topk

    def spy(qb, rb, weights=None, k=1):
        seen.append(weights)
        return real(qb, rb, weights=weights, k=k)

    monkeypatch.setattr(R, "hamming_topk", spy)
    w = int(rng.integers(len(layout)))
    mask = rng.random(layout.sizes[w]) < 0.4
    refs = np.arange(panel.n_haplotypes)
    for _ in range(2):  # hap_1 then hap_2 of one step: same window and mask
        tok, own, _ = queries_from_panel(rng, panel, layout, w, 4, mask)
        d, i = ret.search(w, tok, exclude=own)
        check_topk(exact_distances(emb, panel, freqs, layout, w, tok, refs), d, i, refs, 2, own.numpy())
    assert len(seen) == 2 and seen[0] is seen[1] and seen[0].dtype == torch.int32
    fine = ret.site_weights(w).numpy() * ~mask
    expect = np.zeros(seen[0].shape[0], dtype=np.int64)
    expect[: fine.size] = np.rint(fine / fine.max() * 2**WEIGHT_BITS)
    assert np.array_equal(seen[0].numpy(), expect)
    tok, own, _ = queries_from_panel(rng, panel, layout, w, 3, ~mask)  # another mask: other weights
    ret.search(w, tok, exclude=own)
    assert seen[-1] is not seen[0]


def test_errors_and_unpack_roundtrip(rng):
    panel, freqs, layout = setup(rng)
    ret = HammingRetriever(panel, freqs, layout, reference_rows=[0, 1, 2], k=1)
    tok, _, _ = queries_from_panel(rng, panel, layout, 0, 2, np.zeros(layout.sizes[0], dtype=bool))
    with pytest.raises(ValueError, match="k="):
        ret.search(0, tok, exclude=torch.tensor([[0, 1], [1, 2]]), k=2)
    with pytest.raises(ValueError, match="L >= n"):
        ret.search(0, tok[:, :5])
    with pytest.raises(ValueError, match="duplicate"):
        HammingRetriever(panel, freqs, layout, reference_rows=[0, 0])
    with pytest.raises(ValueError, match="unknown retriever"):
        make_retriever("annoy", panel, freqs, layout)
    a = torch.from_numpy((rng.random((5, 131)) < 0.5).astype(np.uint8))
    assert torch.equal(unpack_bits(pack_bits(a), 131), a)


def test_unk_general_path_exact_tiebreak_with_duplicates(rng):
    """The float64 GEMM path (UNK calls) breaks ties by lowest row exactly, duplicates included."""
    panel, freqs, layout = setup(rng, n_hap=int(rng.integers(20, 60)) * 2, n_dup=int(rng.integers(10, 30)))
    emb = embedding()
    k = int(rng.integers(1, 10))
    ret = HammingRetriever(panel, freqs, layout, k=k)
    ret.refresh_embeddings(emb)
    w = int(rng.integers(len(layout)))
    pos, af = window_feats(panel, freqs, layout, w)
    length = pos.shape[0]
    with torch.no_grad():
        f = emb(
            torch.tensor([UNK, 5, 6])[:, None].expand(3, length), pos.expand(3, length), af.expand(3, length)
        )
    f = f[:, 1:-1].double()
    cost = {(a, b): ((f[a] - f[b]) ** 2).sum(-1).numpy() for a in range(3) for b in range(3)}
    table = {UNK: (cost[0, 1], cost[0, 2]), 5: (cost[1, 1], cost[1, 2]), 6: (cost[2, 1], cost[2, 2])}
    mask = rng.random(layout.sizes[w]) < 0.4
    tok, own, _ = queries_from_panel(rng, panel, layout, w, 6, mask, unk_frac=0.15)
    tok[0, 1:-1][tok[0, 1:-1] != MASK] = UNK  # one query with nothing but UNK and MASK
    d, i = ret.search(w, tok, exclude=own)
    refs = np.arange(panel.n_haplotypes)
    brute = brute_costs(panel, layout, w, refs, tok, table)
    exp = expected_order(brute, refs, k, own.numpy())
    np.testing.assert_array_equal(i.numpy(), exp)
    np.testing.assert_allclose(d.numpy(), np.take_along_axis(brute, exp, 1), rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
def test_hamming_on_cuda_matches_cpu(rng):
    """The Triton kernel path (bits on the GPU) returns what the CPU engine returns."""
    panel, freqs, layout = setup(rng, n_dup=8)
    emb = embedding()
    cpu = HammingRetriever(panel, freqs, layout, k=8)
    gpu = HammingRetriever(panel, freqs, layout, k=8, device="cuda")
    cpu.refresh_embeddings(emb)
    gpu.refresh_embeddings(emb, device="cuda")  # same costs: only the kernel differs
    w = int(rng.integers(len(layout)))
    tok, own, _ = queries_from_panel(rng, panel, layout, w, 16, rng.random(layout.sizes[w]) < 0.5)
    dc, ic = cpu.search(w, tok, exclude=own)
    dg, ig = gpu.search(w, tok.cuda(), exclude=own.cuda())
    assert torch.equal(ic, ig.cpu())
    np.testing.assert_allclose(dc.numpy(), dg.cpu().numpy(), rtol=1e-5)
