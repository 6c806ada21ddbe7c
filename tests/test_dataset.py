"""EmbeddingRAGDataset items against expectations built independently from raw panel arrays;
collate padding; and the stale-mask guard with persistent DataLoader workers."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vcfbert_fast.dataset import (
    EmbeddingRAGDataset,
    WindowGroupedBatchSampler,
    embedding_rag_collate_fn,
)
from vcfbert_fast.errors import InputError, VcfBertError
from vcfbert_fast.io import Panel
from vcfbert_fast.masking import MaskSchedule, window_mask
from vcfbert_fast.windows import make_windows

rng = np.random.default_rng()  # reseeded from the test seed by _reseed


@pytest.fixture(autouse=True)
def _reseed(seed):
    """The module's generator draws from this test's printed seed (root conftest), so failures replay."""
    global rng
    rng = np.random.default_rng(seed)
POPS = np.array(["AFR", "EUR", "EAS"], dtype=object)
KEYS = {
    "hap_1",
    "hap_2",
    "hap_1_label",
    "hap_2_label",
    "gt_label",
    "pos",
    "af",
    "af_p",
    "ref",
    "het",
    "hom",
    "mask",
    "window_idx",
    "sample_idx",
}


def random_panel(n_samples: int, n_sites: int) -> Panel:
    # Per-site ALT frequency skewed low so that both rare (< 0.05) and common sites occur.
    p = rng.beta(0.3, 1.5, size=n_sites)
    haps = (rng.random((2 * n_samples, n_sites)) < p).astype(np.uint8)
    positions = np.sort(rng.choice(10**6, size=n_sites, replace=False)).astype(np.int64) + 1
    return Panel(
        path="random.vcf",
        contig="1",
        positions=positions,
        ref=np.array(["A"] * n_sites, dtype=object),
        alt=np.array(["C"] * n_sites, dtype=object),
        ids=np.array(["."] * n_sites, dtype=object),
        samples=[f"s{i}" for i in range(n_samples)],
        haplotypes=haps,
        populations=rng.choice(POPS, size=n_samples),
    )


def frequencies(panel: Panel) -> SimpleNamespace:
    """Reference computation of the frequencies the dataset consumes (loops, float64)."""
    h = panel.haplotypes.astype(np.float64)
    g = h[0::2] + h[1::2]  # ALT count per sample
    names = sorted(set(panel.populations))
    pop_af = np.stack([h[np.repeat(panel.populations == n, 2)].mean(0) for n in names])
    return SimpleNamespace(
        af=h.mean(0).astype(np.float32),
        ref=(g == 0).mean(0).astype(np.float32),
        het=(g == 1).mean(0).astype(np.float32),
        hom=(g == 2).mean(0).astype(np.float32),
        pop_af=pop_af.astype(np.float32),
        populations=names,
    )


def expected_item(panel, freqs, layout, sample_indices, seed, epoch, i):
    n_s = len(sample_indices)
    w, j = i // n_s, i % n_s
    s = int(sample_indices[j])
    a, b = int(layout.starts[w]), int(layout.ends[w])
    n = b - a
    mask = window_mask(freqs.af[a:b], epoch, w, seed)
    out = {"window_idx": w, "sample_idx": s}
    for k, row in (("1", 2 * s), ("2", 2 * s + 1)):
        alle = [int(x) for x in panel.haplotypes[row, a:b]]
        out[f"hap_{k}"] = [2] + [4 if mask[t] else 5 + alle[t] for t in range(n)] + [3]
        out[f"hap_{k}_label"] = [-100] + alle + [-100]
    out["gt_label"] = [-100] + [2 * x + y for x, y in zip(out["hap_1_label"][1:-1], out["hap_2_label"][1:-1])]
    out["gt_label"].append(-100)
    pos = panel.positions[a:b].astype(np.float64)
    scaled = (pos - pos.min()) / (pos.max() - pos.min()) if n > 1 else np.zeros(1)
    pop_row = freqs.populations.index(panel.populations[s])
    for k, v in (
        ("pos", scaled),
        ("af", freqs.af[a:b]),
        ("af_p", freqs.pop_af[pop_row, a:b]),
        ("ref", freqs.ref[a:b]),
        ("het", freqs.het[a:b]),
        ("hom", freqs.hom[a:b]),
    ):
        out[k] = np.concatenate([[0.0], np.asarray(v, dtype=np.float32), [0.0]]).astype(np.float32)
    out["mask"] = [False] + mask.tolist() + [False]
    return out


def check_item(item, exp):
    assert set(item) == KEYS
    for k in ("hap_1", "hap_2", "hap_1_label", "hap_2_label", "gt_label"):
        assert item[k].dtype == torch.int64, k
        assert item[k].tolist() == exp[k], k
    for k in ("pos", "af", "af_p", "ref", "het", "hom"):
        assert item[k].dtype == torch.float32, k
        np.testing.assert_allclose(item[k].numpy(), exp[k], rtol=1e-6, atol=1e-7, err_msg=k)
    assert item["mask"].dtype == torch.bool and item["mask"].tolist() == exp["mask"]
    for k in ("window_idx", "sample_idx"):
        assert item[k].dtype == torch.int64 and item[k].dim() == 0 and int(item[k]) == exp[k]


@pytest.fixture
def setup():
    n_samples, n_sites = int(rng.integers(6, 15)), int(rng.integers(40, 200))
    panel = random_panel(n_samples, n_sites)
    freqs = frequencies(panel)
    max_sites = int(rng.integers(10, 60))
    layout = make_windows(n_sites, max_sites=max_sites, overlap=int(rng.integers(0, max_sites // 2)))
    idx = np.sort(rng.choice(n_samples, size=int(rng.integers(2, n_samples + 1)), replace=False))
    seed = int(rng.integers(0, 10**6))
    return panel, freqs, layout, idx, seed


def test_items_match_raw_panel(setup):
    panel, freqs, layout, idx, seed = setup
    epoch = int(rng.integers(0, 12))
    ds = EmbeddingRAGDataset(panel, freqs, layout, idx, seed=seed, epoch=epoch)
    assert len(ds) == len(layout) * len(idx)
    assert ds.n_af_p_fallback == 0
    picks = set(rng.choice(len(ds), size=min(len(ds), 25), replace=False).tolist()) | {0, len(ds) - 1}
    for i in sorted(picks):
        check_item(ds[i], expected_item(panel, freqs, layout, idx, seed, epoch, i))
    # (epoch, item) indices override the dataset's epoch.
    e2 = epoch + 1
    i = int(rng.integers(0, len(ds)))
    check_item(ds[(e2, i)], expected_item(panel, freqs, layout, idx, seed, e2, i))
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_masks_shared_and_loss_targets(setup):
    panel, freqs, layout, idx, seed = setup
    ds = EmbeddingRAGDataset(panel, freqs, layout, idx, seed=seed)
    w = int(rng.integers(0, len(layout)))
    items = [ds[w * len(idx) + j] for j in range(len(idx))]
    masks = torch.stack([it["mask"] for it in items])
    assert torch.equal(masks, masks[:1].expand_as(masks))  # one mask per window, every sample
    m = masks[0]
    for it in items:
        assert torch.equal(it["hap_1"] == 4, m) and torch.equal(it["hap_2"] == 4, m)
        # Labels exist everywhere but SOS/EOS; masked token positions are a subset of labelled ones.
        assert (it["hap_1_label"][m] >= 0).all()
    assert m.any()


def test_getitems_batched_equals_single(setup):
    panel, freqs, layout, idx, seed = setup
    ds = EmbeddingRAGDataset(panel, freqs, layout, idx, seed=seed)
    indices = [(int(rng.integers(0, 4)), int(rng.integers(0, len(ds)))) for _ in range(20)]
    batched = ds.__getitems__(indices)
    for ix, it in zip(indices, batched):
        single = ds[ix]
        assert set(single) == set(it)
        for k in single:
            assert torch.equal(single[k], it[k]), k


def test_set_epoch_changes_mask(setup):
    panel, freqs, layout, idx, seed = setup
    ds = EmbeddingRAGDataset(panel, freqs, layout, idx, seed=seed)
    w = len(layout) - 1
    item = w * len(idx)
    masks = []
    for e in range(4):
        ds.set_epoch(e)
        masks.append(ds[item]["mask"])
        exp = window_mask(freqs.af[layout.sites(w)], e, w, seed)
        assert ds[item]["mask"][1:-1].numpy().tolist() == exp.tolist()
    assert any(not torch.equal(masks[0], m) for m in masks[1:])


def test_mask_schedule_and_seed(setup):
    panel, freqs, layout, idx, seed = setup
    sched = MaskSchedule(seed=seed + 1, rare_p=0.95, start=0.1)
    ds = EmbeddingRAGDataset(panel, freqs, layout, idx, seed=seed, mask_schedule=sched)
    assert ds.seed == seed + 1
    w = 0
    exp = sched.mask(0, w, freqs.af[layout.sites(w)])
    assert ds.site_mask(w).tolist() == exp.tolist()
    assert ds.token_mask(w).tolist() == [False] + exp.tolist() + [False]


def test_window_and_reference_tokens(setup):
    panel, freqs, layout, idx, seed = setup
    ds = EmbeddingRAGDataset(panel, freqs, layout, idx, seed=seed, epoch=3)
    w = int(rng.integers(0, len(layout)))
    sl = layout.sites(w)
    m = window_mask(freqs.af[sl], 3, w, seed)
    tok = ds.window_tokens(w)
    h = panel.haplotypes[:, sl].astype(np.int64)
    assert tok.shape == (panel.n_haplotypes, sl.stop - sl.start + 2) and tok.dtype == torch.int64
    exp = np.concatenate([np.full((h.shape[0], 1), 2), np.where(m, 4, h + 5), np.full((h.shape[0], 1), 3)], 1)
    assert np.array_equal(tok.numpy(), exp)
    # Same mask as the query items of that window.
    q = ds[w * len(idx)]
    assert torch.equal(q["mask"], torch.from_numpy(exp[0] == 4))
    rows = rng.choice(panel.n_haplotypes, size=5, replace=False)
    assert np.array_equal(ds.window_tokens(w, rows).numpy(), exp[rows])
    ref = ds.reference_tokens(w, rows)
    exp_ref = np.concatenate([np.full((5, 1), 2), h[rows] + 5, np.full((5, 1), 3)], 1)
    assert np.array_equal(ref.numpy(), exp_ref)
    # Another epoch's view on request.
    m5 = window_mask(freqs.af[sl], 5, w, seed)
    assert np.array_equal(ds.window_tokens(w, epoch=5).numpy()[:, 1:-1] == 4, np.broadcast_to(m5, h.shape))


def test_window_features(setup):
    panel, freqs, layout, idx, seed = setup
    ds = EmbeddingRAGDataset(panel, freqs, layout, idx, seed=seed)
    w = int(rng.integers(0, len(layout)))
    f = ds.window_features(w)
    item = ds[w * len(idx)]
    assert set(f) == {"pos", "af", "ref", "het", "hom"}
    for k, v in f.items():
        assert torch.equal(v, item[k])
    f["af"].zero_()  # a copy: the dataset is not changed
    assert torch.equal(ds.window_features(w)["pos"], item["pos"]) and ds[w * len(idx)]["af"].abs().sum() > 0


def test_pop_af_override_and_fallback(setup):
    panel, freqs, layout, idx, seed = setup
    table = rng.random((len(idx), panel.n_sites)).astype(np.float32)
    ds = EmbeddingRAGDataset(panel, freqs, layout, idx, seed=seed, pop_af=table)
    j = int(rng.integers(0, len(idx)))
    w = int(rng.integers(0, len(layout)))
    np.testing.assert_array_equal(ds[w * len(idx) + j]["af_p"][1:-1].numpy(), table[j, layout.sites(w)])
    with pytest.raises(InputError):
        EmbeddingRAGDataset(panel, freqs, layout, idx, pop_af=table[:-1])
    # A population missing from the frequencies falls back to global AF, and is counted.
    f2 = SimpleNamespace(**vars(freqs))
    f2.populations = ["AFR"]
    f2.pop_af = freqs.pop_af[:1]
    ds2 = EmbeddingRAGDataset(panel, f2, layout, idx, seed=seed)
    not_afr = [j for j, s in enumerate(idx) if panel.populations[s] != "AFR"]
    assert ds2.n_af_p_fallback == len(not_afr)
    for j in range(len(idx)):
        got = ds2[j]["af_p"][1:-1].numpy()
        src = freqs.af if j in not_afr else freqs.pop_af[0]
        np.testing.assert_array_equal(got, src[layout.sites(0)])
    # No population data at all: af_p is the global AF.
    f3 = SimpleNamespace(af=freqs.af, ref=freqs.ref, het=freqs.het, hom=freqs.hom)
    ds3 = EmbeddingRAGDataset(panel, f3, layout, idx)
    assert torch.equal(ds3[0]["af_p"], ds3[0]["af"]) and ds3.n_af_p_fallback == len(idx)


def test_population_af_consistent_with_frequencies_module(setup):
    freqmod = pytest.importorskip("vcfbert_fast.frequencies")
    panel, _, layout, idx, seed = setup
    freqs = freqmod.compute_frequencies(panel)
    ds = EmbeddingRAGDataset(panel, freqs, layout, idx, seed=seed)
    per_sample = np.asarray(freqmod.population_af_for_samples(freqs, panel, idx))
    for j in range(len(idx)):
        w = int(rng.integers(0, len(layout)))
        np.testing.assert_allclose(
            ds[w * len(idx) + j]["af_p"][1:-1].numpy(), per_sample[j, layout.sites(w)], rtol=1e-6
        )


def test_bad_inputs(setup):
    panel, freqs, layout, idx, _ = setup
    with pytest.raises(InputError):
        EmbeddingRAGDataset(panel, freqs, make_windows(panel.n_sites + 1), idx)
    with pytest.raises(InputError):
        EmbeddingRAGDataset(panel, freqs, layout, [panel.n_samples])
    with pytest.raises(InputError):
        EmbeddingRAGDataset(panel, freqs, layout, [0, 0])
    with pytest.raises(InputError):
        EmbeddingRAGDataset(
            panel, SimpleNamespace(af=freqs.af[:-1], ref=freqs.ref, het=freqs.het, hom=freqs.hom), layout
        )


def test_refresh_embeddings_delegates(setup):
    panel, freqs, layout, idx, _ = setup
    ds = EmbeddingRAGDataset(panel, freqs, layout, idx)
    layer = torch.nn.Embedding(7, 4)
    with pytest.raises(VcfBertError, match="no retriever"):
        ds.refresh_embeddings(layer)
    calls = []

    class Recorder:
        def refresh_embeddings(self, embedding_layer, device=None):
            calls.append((embedding_layer, device))
            return "done"

    ds.retriever = Recorder()
    assert ds.refresh_embeddings(layer, device="cpu") == "done"
    assert calls == [(layer, "cpu")]
    # The retriever is not shipped to workers.
    assert pickle.loads(pickle.dumps(ds)).retriever is None


# ----------------------------------------------------------------------------- collate
def test_collate_same_window_stacks(setup):
    panel, freqs, layout, idx, seed = setup
    ds = EmbeddingRAGDataset(panel, freqs, layout, idx, seed=seed)
    w = int(rng.integers(0, len(layout)))
    items = [ds[w * len(idx) + j] for j in range(len(idx))]
    batch = embedding_rag_collate_fn(items)
    assert "attention_mask" not in batch
    L = layout.sites(w).stop - layout.sites(w).start + 2
    assert set(batch) == KEYS
    for k in KEYS - {"window_idx", "sample_idx"}:
        assert batch[k].shape == (len(idx), L), k
        assert batch[k].dtype == items[0][k].dtype
        for b, it in enumerate(items):
            assert torch.equal(batch[k][b], it[k])
    assert batch["window_idx"].tolist() == [w] * len(idx)
    assert batch["sample_idx"].tolist() == idx.tolist()


def test_batched_fetch_zero_copy_collate_equals_stacking(setup):
    panel, freqs, layout, idx, seed = setup
    ds = EmbeddingRAGDataset(panel, freqs, layout, idx, seed=seed)
    w = int(rng.integers(0, len(layout)))
    js = rng.permutation(len(idx))[: int(rng.integers(1, len(idx) + 1))]
    indices = [(2, w * len(idx) + int(j)) for j in js]
    fast = embedding_rag_collate_fn(ds.__getitems__(indices))
    slow = embedding_rag_collate_fn([ds[i] for i in indices])  # plain list: torch.stack path
    assert set(fast) == set(slow) == KEYS
    for k in KEYS:
        assert fast[k].is_contiguous() and fast[k].dtype == slow[k].dtype
        assert torch.equal(fast[k], slow[k]), k
    assert fast["sample_idx"].tolist() == idx[js].tolist()
    # Generic consumers see ordinary items; once items were handed out, collate stacks them
    # (so edits to an item are honoured, never silently replaced by the prebuilt batch).
    lazy = ds.__getitems__(indices)
    default = torch.utils.data.default_collate(lazy)
    for k in KEYS:
        assert torch.equal(default[k], slow[k]), k
    lazy2 = ds.__getitems__(indices)
    lazy2[0]["hap_1"] = torch.full_like(lazy2[0]["hap_1"], 5)
    assert (embedding_rag_collate_fn(lazy2)["hap_1"][0] == 5).all()


def test_collate_mixed_windows_pads():
    panel = random_panel(4, 90)
    freqs = frequencies(panel)
    # Two windows of different lengths (52 and 42 framed tokens).
    from vcfbert_fast.windows import WindowLayout

    lay = WindowLayout(starts=[0, 50], ends=[50, 90], max_sites=50, overlap=0, n_sites=90)
    ds = EmbeddingRAGDataset(panel, freqs, lay, seed=int(rng.integers(0, 1000)))
    items = [ds[0], ds[4], ds[5], ds[1]]  # windows 0, 1, 1, 0: lengths 52, 42, 42, 52
    batch = embedding_rag_collate_fn(items)
    lengths = [52, 42, 42, 52]
    assert batch["attention_mask"].dtype == torch.bool and batch["attention_mask"].shape == (4, 52)
    for b, (it, n) in enumerate(zip(items, lengths)):
        assert batch["attention_mask"][b].tolist() == [True] * n + [False] * (52 - n)
        for k in KEYS - {"window_idx", "sample_idx"}:
            assert torch.equal(batch[k][b, :n], it[k]), k
            tail = batch[k][b, n:]
            if k in ("hap_1", "hap_2"):
                assert (tail == 0).all()  # PAD
            elif k.endswith("_label"):
                assert (tail == -100).all()
            elif k == "mask":
                assert not tail.any()
            else:
                assert (tail == 0).all() and tail.dtype == torch.float32


# ----------------------------------------------------------------------------- workers
class _EpochProbe(EmbeddingRAGDataset):
    """Adds the worker copy's own dataset.epoch to each item, to show it is stale."""

    def _build_batch(self, epoch, w, js):
        batch = super()._build_batch(epoch, w, js)
        batch["worker_epoch"] = torch.full((len(js),), self.epoch)
        return batch


@pytest.mark.parametrize("via", ["dataset", "sampler"])
def test_no_stale_masks_with_persistent_workers(via):
    panel = random_panel(6, 120)
    freqs = frequencies(panel)
    layout = make_windows(120, max_sites=40)
    seed = int(rng.integers(0, 10**6))
    ds = _EpochProbe(panel, freqs, layout, seed=seed)
    sampler = WindowGroupedBatchSampler(ds, batch_size=4, seed=seed)
    loader = torch.utils.data.DataLoader(
        ds,
        batch_sampler=sampler,
        num_workers=2,
        persistent_workers=True,
        collate_fn=embedding_rag_collate_fn,
    )
    seen_masks = {}
    for epoch in range(2):
        (ds if via == "dataset" else sampler).set_epoch(epoch)
        n = 0
        for batch in loader:
            w = int(batch["window_idx"][0])
            exp = window_mask(freqs.af[layout.sites(w)], epoch, w, seed)
            assert (batch["window_idx"] == w).all()
            for b in range(batch["mask"].shape[0]):
                assert batch["mask"][b, 1:-1].tolist() == exp.tolist()
                assert ((batch["hap_1"][b, 1:-1] == 4).numpy() == exp).all()
            seen_masks[(epoch, w)] = exp
            n += batch["mask"].shape[0]
            if epoch == 1:
                # The workers' own dataset copies still say epoch 0: without the epoch in the index
                # they would have built stale masks.
                assert (batch["worker_epoch"] == 0).all()
        assert n == len(ds)
    assert any(not np.array_equal(seen_masks[(0, w)], seen_masks[(1, w)]) for w in range(len(layout)))
    del loader


def test_plain_int_index_refused_in_workers():
    panel = random_panel(3, 30)
    ds = EmbeddingRAGDataset(panel, frequencies(panel), make_windows(30, max_sites=10))
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1, collate_fn=embedding_rag_collate_fn)
    with pytest.raises(Exception, match="stale"):
        next(iter(loader))
    # In the main process a plain index is fine (uses dataset.epoch).
    assert set(ds[0]) == KEYS
