"""ReferenceEmbeddings: store vs live encoding, gather vs index_select, budget/LRU, buffer reuse."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vcfbert_fast.errors import InputError
from vcfbert_fast.io import Panel
from vcfbert_fast.model import HaplotypeEmbedding, ModelConfig
from vcfbert_fast.store import ReferenceEmbeddings
from vcfbert_fast.windows import frame_features, frame_tokens, make_windows, scaled_positions


def make_setup(rng, n_hap=None, max_sites=None):
    n_hap = n_hap or int(rng.integers(20, 60)) * 2 + 2
    max_sites = max_sites or int(rng.integers(20, 100))
    n_sites = int(max_sites * rng.uniform(2.2, 3.5))
    af = rng.beta(0.4, 0.6, size=n_sites)
    haps = (rng.random((n_hap, n_sites)) < af).astype(np.uint8)
    m = n_sites
    panel = Panel(
        path="mem.vcf",
        contig="1",
        positions=np.sort(rng.choice(10 * m, size=m, replace=False)).astype(np.int64) + 1,
        ref=np.array(["A"] * m, dtype=object),
        alt=np.array(["C"] * m, dtype=object),
        ids=np.array(["."] * m, dtype=object),
        samples=[f"s{i}" for i in range(n_hap // 2)],
        haplotypes=haps,
    )
    layout = make_windows(n_sites, max_sites=max_sites)
    return panel, haps.mean(0).astype(np.float32), layout


def feats(panel, af, layout, w, b=None):
    sl = layout.sites(w)
    pos = torch.from_numpy(frame_features(scaled_positions(panel.positions[sl])))
    a = torch.from_numpy(frame_features(af[sl]))
    if b is None:
        return pos, a
    return pos[None].repeat(b, 1), a[None].repeat(b, 1)


def close(got, exp, rtol, atol):
    """np.testing (torch.testing.assert_close imports torch.distributed on first use: seconds)."""
    np.testing.assert_allclose(
        got.detach().float().numpy(), exp.detach().float().numpy(), rtol=rtol, atol=atol
    )


def embedding(dims=16):
    return HaplotypeEmbedding(ModelConfig(dims=dims, n_layers=1, attn_heads=2, dropout=0.2))


def independent_live(panel, layout, w, rows, emb, pos, af):
    """Expected reference embeddings computed here: frame the complete rows, run the layer."""
    sl = layout.sites(w)
    b, k = rows.shape
    tok = torch.from_numpy(frame_tokens(panel.haplotypes[rows.reshape(-1).numpy(), sl]))
    with torch.no_grad():
        out = emb(tok, pos[None].expand(b * k, -1), af[None].expand(b * k, -1))
    return out.reshape(b, k, tok.shape[1], -1)


@pytest.mark.parametrize("per_site", [True, False])
def test_store_equals_live_in_eval(per_site, rng):
    panel, af, layout = make_setup(rng)
    emb = embedding().eval()
    refs = np.sort(rng.choice(panel.n_haplotypes, size=panel.n_haplotypes - 5, replace=False))
    live = ReferenceEmbeddings(
        panel, layout, mode="live", device="cpu", reference_rows=refs, per_site=per_site
    )
    store = ReferenceEmbeddings(
        panel, layout, mode="store", device="cpu", reference_rows=refs, per_site=per_site, chunk_rows=7
    )
    store.refresh(emb)
    for w in rng.choice(len(layout), size=2, replace=False):
        w = int(w)
        b, k = int(rng.integers(1, 6)), int(rng.integers(1, 9))
        rows = torch.from_numpy(rng.choice(refs, size=(b, k)))
        pos, a = feats(panel, af, layout, w)
        expected = independent_live(panel, layout, w, rows, emb, pos, a)
        with torch.no_grad():
            got_live = live.encode(w, rows, emb, pos, a)
        close(got_live, expected, rtol=1e-5, atol=1e-5)
        pos_b, a_b = feats(panel, af, layout, w, b)  # [B, L] features give the same answer
        got = store.encode(w, rows, emb, pos_b, a_b)
        assert got.dtype == torch.bfloat16 and got.shape == expected.shape and not got.requires_grad
        # bf16 keeps 8 significant bits: relative error <= 2**-8 (plus float32 noise near 0).
        close(got.float(), expected, rtol=2**-8, atol=1e-4)


def test_gather_equals_index_select_and_buffer_reused(rng):
    panel, af, layout = make_setup(rng)
    emb = embedding()
    store = ReferenceEmbeddings(panel, layout, mode="store", device="cpu", max_rows=64)
    store.refresh(emb)
    ptrs, kept = [], []
    for step in range(6):
        w = int(rng.integers(len(layout)))
        b, k = int(rng.integers(1, 8)), int(rng.integers(1, 9))
        rows = torch.from_numpy(rng.integers(0, panel.n_haplotypes, size=(b, k)))
        pos, a = feats(panel, af, layout, w)
        got = store.encode(w, rows, emb, pos, a)
        src = store.window_store(w, pos, a)
        exp = src.index_select(0, rows.reshape(-1)).reshape(b, k, *src.shape[1:])
        assert torch.equal(got, exp)
        ptrs.append(got.data_ptr())
        kept.append((got, exp))
        if step >= 1:  # the previous call's result (h1 while h2 is gathered) is still intact
            assert torch.equal(*kept[-2])
            assert ptrs[-1] != ptrs[-2]
        if step >= 2:
            assert ptrs[-1] == ptrs[-3], "output buffers must be reused in turn, not reallocated"


def test_live_gradients_flow_store_frozen_until_refresh(rng):
    panel, af, layout = make_setup(rng)
    emb = embedding().eval()
    live = ReferenceEmbeddings(panel, layout, mode="live", device="cpu")
    store = ReferenceEmbeddings(panel, layout, mode="store", device="cpu")
    rows = torch.from_numpy(rng.integers(0, panel.n_haplotypes, size=(3, 2)))
    pos, a = feats(panel, af, layout, 0)
    live.encode(0, rows, emb, pos, a).square().sum().backward()
    assert emb.token.weight.grad is not None and emb.token.weight.grad.abs().sum() > 0
    before = store.encode(0, rows, emb, pos, a).clone()  # first use snapshots the layer
    with torch.no_grad():
        emb.token.weight.add_(torch.randn_like(emb.token.weight))
    assert torch.equal(store.encode(0, rows, emb, pos, a), before), "store must stay frozen until refresh"
    store.refresh(emb)
    after = store.encode(0, rows, emb, pos, a)
    assert not torch.equal(after, before)
    close(after.float(), independent_live(panel, layout, 0, rows, emb, pos, a), rtol=2**-8, atol=1e-4)


def test_budget_lru_eviction_and_too_large_window(rng):
    panel, af, layout = make_setup(rng, n_hap=30, max_sites=30)
    dims = 8
    emb = embedding(dims)
    probe = ReferenceEmbeddings(panel, layout, mode="store", device="cpu")
    sizes = [probe.window_nbytes(w, dims) for w in range(3)]
    assert sizes[0] == 30 * (layout.sizes[0] + 2) * dims * 2  # bf16
    budget = sorted(sizes)[1] + sorted(sizes)[2] + min(sizes) - 1  # any two windows, never three
    store = ReferenceEmbeddings(panel, layout, mode="store", device="cpu", max_bytes=budget)
    store.refresh(emb)
    rows = torch.zeros(1, 1, dtype=torch.int64)

    def enc(w):
        pos, a = feats(panel, af, layout, w)
        store.encode(w, rows, emb, pos, a)
        assert store.nbytes <= budget

    enc(0)
    enc(1)
    enc(0)  # hit; window 1 is now the least recently used
    assert (store.n_built, store.n_evicted) == (2, 0)
    enc(2)
    assert (store.n_built, store.n_evicted) == (3, 1)
    enc(0)
    assert store.n_built == 3
    enc(1)
    assert (store.n_built, store.n_evicted) == (4, 2)
    store.refresh(emb)
    assert store.nbytes == 0
    tiny = ReferenceEmbeddings(panel, layout, mode="store", device="cpu", max_bytes=sizes[0] - 1)
    tiny.refresh(emb)
    with pytest.raises(InputError, match="max_bytes") as err:
        enc_pos, enc_af = feats(panel, af, layout, 0)
        tiny.encode(0, rows, emb, enc_pos, enc_af)
    assert f"{sizes[0]:,}" in str(err.value) and "live" in str(err.value)


def test_bad_rows_and_lengths(rng):
    panel, af, layout = make_setup(rng)
    emb = embedding()
    store = ReferenceEmbeddings(panel, layout, mode="store", device="cpu", reference_rows=[0, 1, 2, 3])
    pos, a = feats(panel, af, layout, 0)
    with pytest.raises(ValueError, match="not one of"):
        store.encode(0, torch.tensor([[5]]), emb, pos, a)
    with pytest.raises(ValueError, match="mixed-window"):
        store.encode(0, torch.tensor([[1]]), emb, torch.nn.functional.pad(pos, (0, 3)), a)
    for per_site in (True, False):  # live pads with PAD beyond n + 2 (mixed-window batches)
        live = ReferenceEmbeddings(panel, layout, mode="live", device="cpu", per_site=per_site)
        rows = torch.tensor([[1, 2]])
        pp, ap = torch.nn.functional.pad(pos, (0, 3)), torch.nn.functional.pad(a, (0, 3))
        got = live.encode(0, rows, emb.eval(), pp, ap)
        tok = torch.nn.functional.pad(
            torch.from_numpy(frame_tokens(panel.haplotypes[[1, 2], layout.sites(0)])), (0, 3), value=0
        )
        with torch.no_grad():
            exp = emb(tok, pp[None].expand(2, -1), ap[None].expand(2, -1))
        close(got[0].detach(), exp, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="mode"):
        ReferenceEmbeddings(panel, layout, mode="frozen")


@pytest.mark.parametrize("per_site", [True, False])
def test_unchecked_rows_match_checked(per_site, rng):
    """check=False (device-side row map, allele bits, unchecked gather): same output as check=True."""
    panel, af, layout = make_setup(rng)
    emb = embedding().eval()
    refs = np.sort(rng.choice(panel.n_haplotypes, size=panel.n_haplotypes - 3, replace=False))
    for mode in ("live", "store"):
        enc = ReferenceEmbeddings(
            panel, layout, mode=mode, device="cpu", reference_rows=refs, per_site=per_site
        )
        for _ in range(3):
            w = int(rng.integers(len(layout)))
            b, k = int(rng.integers(1, 6)), int(rng.integers(1, 9))
            rows = torch.from_numpy(rng.choice(refs, size=(b, k)))
            pos, a = feats(panel, af, layout, w, b)
            with torch.no_grad():
                checked = enc.encode(w, rows, emb, pos, a).clone()
                unchecked = enc.encode(w, rows, emb, pos, a, check=False)
            assert torch.equal(checked, unchecked), mode
            close(checked.float(), independent_live(panel, layout, w, rows, emb, pos[0], a[0]), 2**-8, 1e-4)


def test_store_without_host_store_is_frozen_snapshot(rng):
    """host_store=False (the trainer's --reference store): live select with the frozen snapshot, bf16,
    no grad, no host bytes; frozen until refresh."""
    panel, af, layout = make_setup(rng)
    emb = embedding().eval()
    snap = ReferenceEmbeddings(panel, layout, mode="store", device="cpu", host_store=False)
    w = int(rng.integers(len(layout)))
    rows = torch.from_numpy(rng.integers(0, panel.n_haplotypes, size=(4, 3)))
    pos, a = feats(panel, af, layout, w, 4)
    snap.refresh(emb)
    first = snap.encode(w, rows, emb, pos, a, check=False)
    assert first.dtype == torch.bfloat16 and not first.requires_grad and snap.nbytes == 0
    exp = independent_live(panel, layout, w, rows, emb, pos[0], a[0])
    close(first.float(), exp, rtol=2**-8, atol=1e-4)
    with torch.no_grad():
        emb.token.weight.add_(torch.randn_like(emb.token.weight))
    assert torch.equal(snap.encode(w, rows, emb, pos, a), first), "frozen until refresh"
    snap.refresh(emb)
    close(
        snap.encode(w, rows, emb, pos, a).float(),
        independent_live(panel, layout, w, rows, emb, pos[0], a[0]),
        2**-8,
        1e-4,
    )


@pytest.mark.gpu
def test_pinned_store_gathers_to_cuda(rng):
    panel, af, layout = make_setup(rng)
    emb = embedding().eval()
    store = ReferenceEmbeddings(panel, layout, mode="store", device="cuda")
    store.refresh(emb)
    rows = torch.from_numpy(rng.integers(0, panel.n_haplotypes, size=(4, 8)))
    pos, a = feats(panel, af, layout, 0)
    got = store.encode(0, rows, emb, pos, a)
    src = store.window_store(0, pos, a)
    assert src.is_pinned() and got.is_cuda
    assert torch.equal(got.cpu(), src.index_select(0, rows.reshape(-1)).reshape(got.shape))
    # the training hot path: rows on the device, unchecked gather, no host sync
    got2 = store.encode(0, rows.cuda(), emb, pos, a, check=False)
    assert torch.equal(got2.cpu(), src.index_select(0, rows.reshape(-1)).reshape(got.shape))
    live = ReferenceEmbeddings(panel, layout, mode="live", device="cuda")
    emb_cuda = emb.cuda()
    a_live = live.encode(0, rows, emb_cuda, pos.cuda(), a.cuda())
    b_live = live.encode(0, rows.cuda(), emb_cuda, pos.cuda(), a.cuda(), check=False)
    assert torch.equal(a_live, b_live)
