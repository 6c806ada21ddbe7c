"""Model tests: drop-in shapes, per-site embedding (exact retrieval), key padding mask, RAG paths,
gradients, heads, parameter counts. Small configs, eval mode where outputs are compared.

Random inputs and weight inits come from torch's global RNG, seeded per test by the root conftest
(the seed is printed; VCFBERT_TEST_SEED replays it)."""

from __future__ import annotations

import copy
import inspect
import math

import pytest
import torch

from vcfbert_fast.loss import imputation_loss
from vcfbert_fast.matching import site_table
from vcfbert_fast.model import (
    BERTFoundationModel,
    BERTWithEmbeddingRAG,
    BERTWithRAG,
    HaplotypeEmbedding,
    ModelConfig,
    OpenSites,
    TransformerEncoder,
    count_parameters,
    lookup_references,
    sinusoidal_table,
)
from vcfbert_fast.vocab import ALLELE_0, ALLELE_1, EOS, MASK, PAD, SOS, VOCAB_SIZE

D, LAYERS, HEADS = 32, 2, 4
FEATURES = ("pos", "af", "af_p", "ref", "het", "hom")


def small_config(**kw) -> ModelConfig:
    return ModelConfig(dims=D, n_layers=LAYERS, attn_heads=HEADS, **kw)


def make_batch(b: int, length: int, k: int | None = None, rag: str | None = None) -> dict:
    """Random framed haplotypes with MASK at some sites, features in [0, 1], optional RAG inputs."""

    def haps():
        h = torch.randint(ALLELE_0, ALLELE_1 + 1, (b, length))
        h[torch.rand(b, length) < 0.3] = MASK
        h[:, 0], h[:, -1] = SOS, EOS
        return h

    x = {"hap_1": haps(), "hap_2": haps()}
    for name in FEATURES:
        x[name] = torch.rand(b, length)
    if rag == "emb":
        x["rag_emb_h1"] = torch.randn(b, k, length, D)
        x["rag_emb_h2"] = torch.randn(b, k, length, D)
    elif rag == "seg":
        x["rag_seg_h1"] = torch.randint(ALLELE_0, ALLELE_1 + 1, (b, k, length))
        x["rag_seg_h2"] = torch.randint(ALLELE_0, ALLELE_1 + 1, (b, k, length))
    return x


def donor_inputs(b: int, k: int, length: int) -> dict:
    """Per-donor match features and alleles (0 at SOS/EOS) for the attention and copy paths."""
    out = {}
    for h in ("h1", "h2"):
        f = torch.rand(b, k, length, 6)
        a = torch.randint(0, 2, (b, k, length))
        f[:, :, 0] = f[:, :, -1] = 0
        a[:, :, 0] = a[:, :, -1] = 0
        out[f"rag_feat_{h}"], out[f"rag_allele_{h}"] = f, a
    return out


def with_labels(x: dict) -> dict:
    b, length = x["hap_1"].shape
    y = dict(x)
    l1, l2 = torch.randint(0, 2, (b, length)), torch.randint(0, 2, (b, length))
    y["hap_1_label"], y["hap_2_label"], y["gt_label"] = l1, l2, 2 * l1 + l2
    y["mask"] = torch.rand(b, length) < 0.5
    return y


# ---------------------------------------------------------------------------------------------
# config and drop-in signatures
# ---------------------------------------------------------------------------------------------


def test_config_roundtrip_plain_types(tmp_path):
    cfg = small_config(dropout=0.05, k_pool="max")
    d = cfg.to_dict()
    assert all(isinstance(v, (int, float, str)) for v in d.values())
    torch.save({"config": d}, tmp_path / "c.pt")
    loaded = torch.load(tmp_path / "c.pt", weights_only=True)["config"]
    assert ModelConfig.from_dict(loaded) == cfg
    with pytest.raises(ValueError):
        ModelConfig.from_dict({**d, "bogus": 1})
    with pytest.raises(ValueError):
        ModelConfig(dims=30, attn_heads=4)
    with pytest.raises(ValueError):
        ModelConfig(k_pool="sum")


@pytest.mark.parametrize("cls", [BERTWithEmbeddingRAG, BERTWithRAG])
def test_drop_in_signature(cls):
    params = list(inspect.signature(cls.__init__).parameters.values())[1:6]
    assert [(p.name, p.default) for p in params] == [
        ("vocab_size", inspect.Parameter.empty),
        ("dims", 512),
        ("n_layers", 12),
        ("attn_heads", 16),
        ("dropout", 0.1),
    ]
    m = cls(VOCAB_SIZE, 16, 1, 2, 0.0)
    assert (m.config.dims, m.config.n_layers, m.config.attn_heads) == (16, 1, 2)
    assert isinstance(m.embedding, HaplotypeEmbedding)
    assert hasattr(m, "fusion") and hasattr(m, "encoder")
    with pytest.raises(ValueError):
        cls(5, config=small_config())
    m2 = cls.from_config(small_config().to_dict())
    assert m2.config == small_config()


# ---------------------------------------------------------------------------------------------
# shapes and return types
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls,rag",
    [(BERTWithEmbeddingRAG, None), (BERTWithEmbeddingRAG, "emb"), (BERTWithRAG, None), (BERTWithRAG, "seg")],
)
def test_shapes_and_types(cls, rag):
    b, length, k = 3, 13, 2
    bert = cls(VOCAB_SIZE, config=small_config())
    x = make_batch(b, length, k, rag)
    out = bert(x)
    assert isinstance(out, tuple) and len(out) == 4
    for t in out:
        assert t.shape == (b, length, D) and t.dtype == torch.float32
    model = BERTFoundationModel(bert)
    probs = model(x)
    assert isinstance(probs, list) and len(probs) == 7
    assert [tuple(t.shape) for t in probs] == [(b, length, 2), (b, length, 2), (b, length, 4)] + [
        (b, length, D)
    ] * 4
    logits = model.forward_logits(x)
    assert set(logits) == {"hap1_logits", "hap2_logits", "gt_logits", "h1", "h2", "h1_ori", "h2_ori"}


def test_rag_keys_both_or_neither():
    bert = BERTWithEmbeddingRAG(VOCAB_SIZE, config=small_config())
    x = make_batch(2, 7, 2, "emb")
    del x["rag_emb_h2"]
    with pytest.raises(ValueError):
        bert(x)


# ---------------------------------------------------------------------------------------------
# the embedding: per-site, site weights, weighted Hamming
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("what", ["token", "pos", "af"])
def test_embedding_is_per_site(what):
    emb = HaplotypeEmbedding(small_config()).eval()
    n, length = 4, 17
    tokens = torch.randint(0, VOCAB_SIZE, (n, length))
    pos, af = torch.rand(n, length), torch.rand(n, length)
    base = emb(tokens, pos, af)
    j = int(torch.randint(0, length, ()))
    tokens2, pos2, af2 = tokens.clone(), pos.clone(), af.clone()
    if what == "token":
        tokens2[:, j] = (tokens[:, j] + 1 + torch.randint(0, VOCAB_SIZE - 1, (n,))) % VOCAB_SIZE
    elif what == "pos":
        pos2[:, j] = (pos[:, j] + 0.5) % 1.0
    else:
        af2[:, j] = (af[:, j] + 0.5) % 1.0
    out = emb(tokens2, pos2, af2)
    others = torch.arange(length) != j
    torch.testing.assert_close(out[:, others], base[:, others], rtol=0, atol=1e-6)
    assert (out[:, j] - base[:, j]).abs().amax(-1).min() > 1e-3  # every row's site j changed


def test_embedding_depends_on_index_not_neighbours():
    """Site l of a long sequence equals site l of any other sequence with the same (token, pos, af) at l."""
    emb = HaplotypeEmbedding(small_config()).eval()
    length = 9
    t, p, a = torch.randint(0, VOCAB_SIZE, (1, length)), torch.rand(1, length), torch.rand(1, length)
    t2, p2, a2 = torch.randint(0, VOCAB_SIZE, (1, length)), torch.rand(1, length), torch.rand(1, length)
    keep = torch.rand(length) < 0.5
    t2[:, keep], p2[:, keep], a2[:, keep] = t[:, keep], p[:, keep], a[:, keep]
    torch.testing.assert_close(emb(t2, p2, a2)[:, keep], emb(t, p, a)[:, keep], rtol=0, atol=1e-6)


def test_site_weights_brute_force():
    emb = HaplotypeEmbedding(small_config(dropout=0.3)).double()
    emb.train()  # site_weights must switch dropout off itself and restore the mode
    length = 12
    pos, af = torch.rand(length, dtype=torch.float64), torch.rand(length, dtype=torch.float64)
    w = emb.site_weights(pos, af, dtype=torch.float64)
    assert emb.training
    assert w.shape == (length,) and w.dtype == torch.float64
    torch.testing.assert_close(emb.site_weights(pos, af, dtype=torch.float64), w)  # no dropout noise

    ref = copy.deepcopy(emb).eval()
    background = torch.randint(0, VOCAB_SIZE, (length,))
    expected = torch.empty(length, dtype=torch.float64)
    with torch.no_grad():
        for l in range(length):
            a, b = background.clone(), background.clone()
            a[l], b[l] = ALLELE_0, ALLELE_1
            ea = ref(a[None], pos[None], af[None])
            eb = ref(b[None], pos[None], af[None])
            expected[l] = ((eb - ea) ** 2).sum()  # whole sequence: only site l may differ
    torch.testing.assert_close(w, expected, rtol=1e-9, atol=1e-12)
    assert (w > 0).all()


def test_weighted_hamming_equals_embedding_distance():
    """The retrieval claim: with a shared mask, ||f(q) - f(r)||^2 = sum of w_l over mismatches."""
    emb = HaplotypeEmbedding(small_config()).double().eval()
    length, n_refs = 20, 6
    pos, af = torch.rand(length, dtype=torch.float64), torch.rand(length, dtype=torch.float64)
    framed = torch.ones(length, dtype=torch.bool)
    framed[0] = framed[-1] = False
    masked = (torch.rand(length) < 0.3) & framed

    def frame(alleles):
        t = torch.where(alleles.bool(), ALLELE_1, ALLELE_0)
        t[..., 0], t[..., -1] = SOS, EOS
        return torch.where(masked, MASK, t)

    q_bits = torch.randint(0, 2, (length,))
    r_bits = torch.randint(0, 2, (n_refs, length))
    q, r = frame(q_bits), frame(r_bits)
    with torch.no_grad():
        eq = emb(q[None], pos[None], af[None])
        er = emb(r, pos[None].expand(n_refs, -1), af[None].expand(n_refs, -1))
    dist = ((er - eq) ** 2).sum((-1, -2))
    w = emb.site_weights(pos, af, dtype=torch.float64)
    mismatch = (r_bits != q_bits) & framed & ~masked
    torch.testing.assert_close(dist, (mismatch.double() * w).sum(-1), rtol=1e-9, atol=1e-9)


def test_positions_beyond_table():
    cfg = small_config(max_len=8)
    emb = HaplotypeEmbedding(cfg).eval()
    length = 15
    assert torch.equal(emb.positions(length, torch.device("cpu")), sinusoidal_table(length, D))
    assert emb(
        torch.randint(0, VOCAB_SIZE, (2, length)), torch.rand(2, length), torch.rand(2, length)
    ).shape == (
        2,
        length,
        D,
    )
    # independent formula for one entry
    p, i = 11, 3  # dim 2*i -> sin(p / 10000^(2i/D))
    assert math.isclose(
        float(sinusoidal_table(length, D)[p, 2 * i]), math.sin(p / 10000 ** (2 * i / D)), abs_tol=1e-6
    )


# ---------------------------------------------------------------------------------------------
# attention mask, RAG paths
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls,rag", [(BERTWithEmbeddingRAG, "emb"), (BERTWithEmbeddingRAG, None), (BERTWithRAG, "seg")]
)
def test_padding_does_not_leak(cls, rag):
    """A short item padded into a longer batch (with attention_mask) equals the item run alone."""
    model = BERTFoundationModel(cls(VOCAB_SIZE, config=small_config())).eval()
    long_len, short_len, k = 14, 9, 2
    batch = make_batch(2, long_len, k, rag)
    batch["hap_1"][1, short_len:] = PAD
    batch["hap_2"][1, short_len:] = PAD
    attention_mask = torch.ones(2, long_len, dtype=torch.bool)
    attention_mask[1, short_len:] = False
    # item 1 alone, unpadded (rag tensors are [B, K, L, ...], the rest [B, L])
    alone = {
        key: v[1:2, :, :short_len] if key.startswith("rag_") else v[1:2, :short_len]
        for key, v in batch.items()
    }
    with torch.no_grad():
        padded = model.forward_logits({**batch, "attention_mask": attention_mask})
        single = model.forward_logits(alone)
        unmasked = model.forward_logits(batch)
    for key in ("h1", "h2", "hap1_logits", "gt_logits"):
        torch.testing.assert_close(padded[key][1:2, :short_len], single[key], rtol=1e-5, atol=1e-5)
    # without the mask the padding does leak (so the comparison above can fail)
    assert (unmasked["h1"][1:2, :short_len] - single["h1"]).abs().max() > 1e-4
    # the full-length item is unaffected by the mask
    torch.testing.assert_close(padded["h1"][0], unmasked["h1"][0], rtol=1e-5, atol=1e-5)


def test_v18_matches_manual_composition():
    bert = BERTWithEmbeddingRAG(VOCAB_SIZE, config=small_config(k_pool="mean")).eval()
    x = make_batch(2, 10, 3, "emb")
    with torch.no_grad():
        h1, h2, e1, e2 = bert(x)
        for hap, rag, h, e in (("hap_1", "rag_emb_h1", h1, e1), ("hap_2", "rag_emb_h2", h2, e2)):
            emb = bert.embedding(x[hap], x["pos"], x["af"])
            torch.testing.assert_close(e, emb)
            fused = bert.fusion(emb, x[rag].mean(1), x["af"])
            torch.testing.assert_close(h, bert.encoder(fused), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(
                bert({k: v for k, v in x.items() if "rag" not in k})[0 if hap == "hap_1" else 1],
                bert.encoder(emb),
                rtol=1e-5,
                atol=1e-5,
            )


def test_v17_encodes_references_fully():
    bert = BERTWithRAG(VOCAB_SIZE, config=small_config(k_pool="mean")).eval()
    k, length = 3, 10
    x = make_batch(2, length, k, "seg")
    with torch.no_grad():
        h1, h2, _, _ = bert(x)
        for hap, seg, h in (("hap_1", "rag_seg_h1", h1), ("hap_2", "rag_seg_h2", h2)):
            enc = torch.stack(
                [bert.encoder(bert.embedding(x[seg][:, i], x["pos"], x["af"])) for i in range(k)], dim=1
            )
            fused = bert.fusion(bert.embedding(x[hap], x["pos"], x["af"]), enc.mean(1), x["af"])
            torch.testing.assert_close(h, bert.encoder(fused), rtol=1e-5, atol=1e-5)


def test_rag_changes_output_and_max_pool():
    for pool in ("mean", "max"):
        bert = BERTWithEmbeddingRAG(VOCAB_SIZE, config=small_config(k_pool=pool)).eval()
        x = make_batch(2, 10, 4, "emb")
        plain = {k: v for k, v in x.items() if "rag" not in k}
        other = {**x, "rag_emb_h1": torch.randn_like(x["rag_emb_h1"])}
        with torch.no_grad():
            h_rag, h_plain, h_other = bert(x)[0], bert(plain)[0], bert(other)[0]
            assert (h_rag - h_plain).abs().max() > 1e-3
            assert (h_rag - h_other).abs().max() > 1e-3
            # order of the K references does not matter (pooling is symmetric)
            perm = {**x, "rag_emb_h1": x["rag_emb_h1"][:, torch.randperm(4)]}
            torch.testing.assert_close(bert(perm)[0], h_rag, rtol=1e-5, atol=1e-5)
            # the embedding outputs (h_ori) do not see the references
            torch.testing.assert_close(bert(x)[2], bert(plain)[2])


def test_rag_gate_prefers_rare_sites_at_init():
    bert = BERTWithEmbeddingRAG(VOCAB_SIZE, config=small_config()).eval()
    n, length = 2, 6
    x = torch.randn(n, length, D)
    pooled = torch.randn(n, length, D)
    with torch.no_grad():
        upd = bert.fusion.update(torch.cat([x, pooled], -1))
        rare = bert.fusion(x, pooled, torch.full((n, length), 0.001))
        common = bert.fusion(x, pooled, torch.full((n, length), 0.5))
    gate_rare = ((rare - x) / upd).median()
    gate_common = ((common - x) / upd).median()
    assert 0 < gate_common < gate_rare < 1


def test_bf16_rag_store_is_cast():
    bert = BERTWithEmbeddingRAG(VOCAB_SIZE, config=small_config()).eval()
    x = make_batch(2, 8, 3, "emb")
    x16 = {**x, "rag_emb_h1": x["rag_emb_h1"].bfloat16(), "rag_emb_h2": x["rag_emb_h2"].bfloat16()}
    x32 = {**x, "rag_emb_h1": x16["rag_emb_h1"].float(), "rag_emb_h2": x16["rag_emb_h2"].float()}
    with torch.no_grad():
        out16, out32 = bert(x16), bert(x32)
    for a, b in zip(out16, out32):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # a bf16 model reads an fp32 store too
    with torch.no_grad():
        out = bert.to(torch.bfloat16)(x32)
    assert out[0].dtype == torch.bfloat16 and torch.isfinite(out[0].float()).all()


# ---------------------------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls,rag", [(BERTWithEmbeddingRAG, "emb"), (BERTWithRAG, "seg")])
def test_gradients_reach_everything(cls, rag):
    # V17 takes no donor features: its seed fusion (mean, no copy head) has every parameter in use
    cfg = small_config() if rag == "emb" else small_config(k_pool="mean", copy_head=False)
    model = BERTFoundationModel(cls(VOCAB_SIZE, config=cfg))
    model.train()
    batch = with_labels(make_batch(3, 11, 2, rag))
    if rag == "emb":  # the donor inputs: every parameter (prior MLPs, copy gate) then gets a gradient
        batch.update(donor_inputs(3, 2, 11))
    if rag == "emb":
        batch["rag_emb_h1"].requires_grad_(True)
        batch["rag_emb_h2"].requires_grad_(True)
    total, parts = imputation_loss(model.forward_logits(batch), batch)
    total.backward()
    assert set(parts) == {"hap1", "hap2", "gt", "total"}
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    if rag == "emb":
        for key in ("rag_emb_h1", "rag_emb_h2"):
            g = batch[key].grad
            assert g is not None and g.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# heads
# ---------------------------------------------------------------------------------------------


def test_probabilities_are_softmax_of_logits():
    model = BERTFoundationModel(BERTWithEmbeddingRAG(VOCAB_SIZE, config=small_config())).eval()
    x = make_batch(2, 9, 2, "emb")
    with torch.no_grad():
        probs = model(x)
        logits = model.forward_logits(x)
    names = ("hap1_logits", "hap2_logits", "gt_logits")
    for p, name in zip(probs[:3], names):
        torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:-1]))
        torch.testing.assert_close(p, torch.softmax(logits[name].float(), -1))
    for p, name in zip(probs[3:], ("h1_ori", "h2_ori", "h1", "h2")):
        torch.testing.assert_close(p, logits[name])


def test_genotype_head_base_is_product_of_haplotypes():
    """With the correction MLP silenced, P(gt = 2a + b) = P1(a) * P2(b)."""
    model = BERTFoundationModel(BERTWithEmbeddingRAG(VOCAB_SIZE, config=small_config())).eval()
    with torch.no_grad():
        model.gt_head[2].weight.zero_()
        model.gt_head[2].bias.zero_()
        p1, p2, gt = model(make_batch(2, 9))[:3]
    expected = torch.stack(
        [p1[..., 0] * p2[..., 0], p1[..., 0] * p2[..., 1], p1[..., 1] * p2[..., 0], p1[..., 1] * p2[..., 1]],
        dim=-1,
    )
    torch.testing.assert_close(gt, expected, rtol=1e-5, atol=1e-6)


def test_heads_use_their_features():
    model = BERTFoundationModel(BERTWithEmbeddingRAG(VOCAB_SIZE, config=small_config())).eval()
    x = make_batch(2, 9)
    with torch.no_grad():
        base = model.forward_logits(x)
        afp = model.forward_logits({**x, "af_p": torch.rand_like(x["af_p"])})
        het = model.forward_logits({**x, "het": torch.rand_like(x["het"])})
    assert (afp["hap1_logits"] - base["hap1_logits"]).abs().max() > 0
    torch.testing.assert_close(afp["h1"], base["h1"])  # af_p only feeds the head
    torch.testing.assert_close(het["hap1_logits"], base["hap1_logits"])
    assert (het["gt_logits"] - base["gt_logits"]).abs().max() > 0


# ---------------------------------------------------------------------------------------------
# parameter counts
# ---------------------------------------------------------------------------------------------


def hand_count(
    d: int, layers: int, ffn: int = 4, nf: int = 32, vocab: int = VOCAB_SIZE, attention=True, copy=True, mf=6
) -> dict:
    lin = lambda i, o, bias=True: i * o + (o if bias else 0)
    embedding = vocab * d + nf + lin(2 * nf, d) + lin(d, d) + lin(d + 2, d) + lin(d, d) + 2 * d
    donor_attention = lin(d, d) + lin(d, d) + lin(mf, 16) + 16 + mf  # q, v, prior MLP (no output bias), vote weight
    fusion = lin(2 * d, d) + lin(d, d) + lin(3, 32) + lin(32, 1) + 1 + (donor_attention if attention else 0)
    block = 2 * d + lin(d, 3 * d) + lin(d, d) + 2 * d + lin(d, ffn * d) + lin(ffn * d, d)
    encoder = layers * block + 2 * d
    heads = lin(d + 2, d) + lin(d, 2) + lin(7, 32) + lin(32, 4)
    if copy:
        heads += donor_attention - lin(d, d) + lin(d + 2, 32) + lin(32, 1)  # no value map
    return {
        "total": embedding + fusion + encoder + heads,
        "embedding": embedding,
        "encoder": encoder,
        "fusion": fusion,
        "heads": heads,
    }


def test_parameter_counts_seed_config():
    bert = BERTWithEmbeddingRAG(VOCAB_SIZE, 192, 10, 6, 0.1, k_pool="mean", copy_head=False)
    counts = count_parameters(BERTFoundationModel(bert))
    print("seed config (dims 192, 10 layers, 6 heads):", counts)
    assert counts == hand_count(192, 10, attention=False, copy=False)
    default = count_parameters(BERTFoundationModel(BERTWithEmbeddingRAG(VOCAB_SIZE, 192, 10, 6, 0.1)))
    assert default == hand_count(192, 10)  # donor attention and the copy head
    assert counts["encoder"] == 10 * (12 * 192**2 + 13 * 192) + 2 * 192  # 12 D^2 + 13 D per pre-LN block
    bare = count_parameters(bert)
    assert bare["heads"] == 0 and bare["total"] == counts["total"] - counts["heads"]


def test_parameter_counts_see_through_wrappers():
    model = BERTFoundationModel(BERTWithRAG(VOCAB_SIZE, config=small_config()))
    expected = hand_count(D, LAYERS)
    assert count_parameters(model) == expected

    class DDPLike(torch.nn.Module):  # DistributedDataParallel keeps the model as .module
        def __init__(self, module):
            super().__init__()
            self.module = module

    class CompiledLike(torch.nn.Module):  # torch.compile's OptimizedModule keeps it as ._orig_mod
        def __init__(self, module):
            super().__init__()
            self._orig_mod = module

    assert count_parameters(DDPLike(model)) == expected
    assert count_parameters(CompiledLike(DDPLike(model))) == expected


# ---------------------------------------------------------------------------------------------
# GPU: bf16 autocast, flash attention without a mask, torch.compile (skipped without CUDA)
# ---------------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_gpu_bf16_flash_and_compile():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dev = torch.device("cuda")
    cfg = ModelConfig(dims=64, n_layers=2, attn_heads=4, dropout=0.0)
    model = BERTFoundationModel(BERTWithEmbeddingRAG(VOCAB_SIZE, config=cfg)).to(dev)
    x = {k: v.to(dev) for k, v in with_labels(make_batch(4, 130, 3)).items()}
    x["rag_emb_h1"] = torch.randn(4, 3, 130, 64, device=dev, dtype=torch.bfloat16)
    x["rag_emb_h2"] = torch.randn(4, 3, 130, 64, device=dev, dtype=torch.bfloat16)
    with torch.no_grad():
        ref = model.forward_logits(x)
    # no attention_mask: the flash kernel alone must be able to run the whole model
    with torch.autocast("cuda", dtype=torch.bfloat16), sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        out = model.forward_logits(x)
        total, _ = imputation_loss(out, x)
    total.backward()
    for key in ("hap1_logits", "gt_logits"):
        torch.testing.assert_close(out[key].float(), ref[key].float(), rtol=0.05, atol=0.05)
    compiled = torch.compile(model.forward_logits)
    with torch.no_grad():
        got = compiled(x)
    torch.testing.assert_close(got["gt_logits"], ref["gt_logits"], rtol=1e-3, atol=1e-3)


def test_cpu_bf16_autocast_train_step():
    """The autocast path (what the GPU trainer runs) mixes dtypes without errors and stays close."""
    model = BERTFoundationModel(BERTWithEmbeddingRAG(VOCAB_SIZE, config=small_config(dropout=0.0)))
    x = with_labels(make_batch(2, 10, 2, "emb"))
    x["rag_emb_h1"] = x["rag_emb_h1"].bfloat16()
    with torch.no_grad():
        ref = model.forward_logits(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.forward_logits(x)
        total, _ = imputation_loss(out, x)
    total.backward()
    assert torch.isfinite(total)
    for key in ("hap1_logits", "gt_logits", "h1"):
        torch.testing.assert_close(out[key].float(), ref[key], rtol=0.05, atol=0.05)


def test_donor_attention_matches_manual_softmax():
    bert = BERTWithEmbeddingRAG(VOCAB_SIZE, config=small_config()).eval()
    b, k, length = 2, 5, 9
    x = {**make_batch(b, length, k, "emb"), **donor_inputs(b, k, length)}
    att = bert.fusion.attention
    with torch.no_grad():
        att.prior[2].weight.normal_()  # at init the prior is near 0: make the features count
        h1 = bert(x)[0]
        emb = bert.embedding(x["hap_1"], x["pos"], x["af"])
        refs, feats = x["rag_emb_h1"], x["rag_feat_h1"]
        pooled = torch.zeros_like(emb)
        for i in range(b):  # loops: score each donor at each site, softmax over donors
            for site in range(length):
                q = att.q(emb[i, site])
                score = torch.stack(
                    [
                        q @ refs[i, j, site] / D**0.5
                        + att.prior(feats[i, j, site]).squeeze()
                        + feats[i, j, site] @ att.vote_weight
                        for j in range(k)
                    ]
                )
                w = torch.softmax(score, 0)
                pooled[i, site] = att.v((w[:, None] * refs[i, :, site]).sum(0))
        fused = bert.fusion(emb, pooled, x["af"])
        torch.testing.assert_close(h1, bert.encoder(fused), rtol=1e-4, atol=1e-4)
        # the features matter: other features, other donor weights
        w_other = att.weights(emb, refs, torch.rand_like(feats))
        assert (w_other - att.weights(emb, refs, feats)).abs().max() > 1e-3


def test_copy_head_mixes_donor_alleles():
    model = BERTFoundationModel(BERTWithEmbeddingRAG(VOCAB_SIZE, config=small_config())).eval()
    b, k, length = 2, 4, 8
    x = {**make_batch(b, length, k, "emb"), **donor_inputs(b, k, length)}
    with torch.no_grad():
        out = model.forward_logits(x)
        p = torch.softmax(out["hap1_logits"].float(), -1)
        torch.testing.assert_close(p.sum(-1), torch.ones(b, length))
        # by hand: gate * (donor weights . alleles) + (1 - gate) * the transformer's own head
        h = out["h1"]
        feat = torch.cat([h, torch.stack([x["af"], x["af_p"]], -1)], -1)
        w = model.copy.attention.weights(h, x["rag_emb_h1"], x["rag_feat_h1"])
        g = torch.sigmoid(model.copy.gate(feat).squeeze(-1))
        own = torch.softmax(model.hap_head(feat), -1)[..., 1]
        want = g * (w * x["rag_allele_h1"].float()).sum(1) + (1 - g) * own
        torch.testing.assert_close(p[..., 1], want.clamp(1e-5, 1 - 1e-5), rtol=1e-4, atol=1e-5)
        # every donor carrying ALT pushes p up; none pushes it down
        ones = {**x, "rag_allele_h1": torch.ones_like(x["rag_allele_h1"])}
        zeros = {**x, "rag_allele_h1": torch.zeros_like(x["rag_allele_h1"])}
        p1 = torch.softmax(model.forward_logits(ones)["hap1_logits"], -1)[..., 1]
        p0 = torch.softmax(model.forward_logits(zeros)["hap1_logits"], -1)[..., 1]
        assert bool((p1 >= p[..., 1] - 1e-6).all() and (p0 <= p[..., 1] + 1e-6).all())
        # without donor alleles the drop-in call still works (no copy)
        plain = {kk: v for kk, v in x.items() if not kk.startswith(("rag_allele", "rag_feat"))}
        assert model(plain)[0].shape == (b, length, 2)


def test_old_checkpoint_config_keeps_its_fusion():
    d = small_config(k_pool="mean").to_dict()
    del d["copy_head"], d["n_match_features"]
    old = ModelConfig.from_dict(d)
    assert old.copy_head is False and old.k_pool == "mean"


def test_copy_head_starts_as_the_donor_vote():
    """At initialisation the copy weights are the vote's: softmax(0.1 * (left + right)) via the last feature."""
    model = BERTFoundationModel(BERTWithEmbeddingRAG(VOCAB_SIZE, config=small_config())).eval()
    b, k, length = 2, 5, 7
    x = {**make_batch(b, length, k, "emb"), **donor_inputs(b, k, length)}
    tot = torch.randint(0, 60, (b, k, length)).float()
    x["rag_feat_h1"][..., 5] = (tot - tot.amax(1, keepdim=True)) / 10
    with torch.no_grad():
        model.copy.attention.prior[2].weight.zero_()  # isolate the vote term from the (small) MLP prior
        h = model.forward_logits(x)["h1"]
        w = model.copy.attention.weights(h, x["rag_emb_h1"], x["rag_feat_h1"])
    torch.testing.assert_close(w, torch.softmax(0.1 * tot, dim=1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rag", ["emb", "factored"])
def test_shared_prior_equals_separate_priors_with_the_same_weights(rag):
    """``shared_prior``: one prior MLP scores the donors once for the fusion and the copy head; that
    must equal two separate priors holding the same weights (and no copy-head prior is left to train)."""
    b, k, length = 3, 5, 9
    sep = BERTFoundationModel(BERTWithEmbeddingRAG(VOCAB_SIZE, config=small_config(prior_hidden=6))).eval()
    shared = BERTFoundationModel(
        BERTWithEmbeddingRAG(VOCAB_SIZE, config=small_config(prior_hidden=6, shared_prior=True))
    ).eval()
    assert shared.copy.attention.prior is None
    with torch.no_grad():
        for p in sep.parameters():
            p.normal_(0.0, 0.3)  # at init the prior's output layer is ~0: give every weight a say
        sep.copy.attention.prior.load_state_dict(sep.bert.fusion.attention.prior.state_dict())
    missing, unexpected = shared.load_state_dict(sep.state_dict(), strict=False)
    assert missing == [] and all(key.startswith("copy.attention.prior.") for key in unexpected) and unexpected
    x = {**make_batch(b, length, k, "emb"), **donor_inputs(b, k, length)}
    if rag == "factored":  # the CPU path: per-site table + donor tokens instead of rag_emb
        table = torch.randn(length, VOCAB_SIZE, D)
        x.pop("rag_emb_h1"), x.pop("rag_emb_h2")
        x["rag_table"] = table
        for h in ("h1", "h2"):
            x[f"rag_tok_{h}"] = torch.randint(0, VOCAB_SIZE, (b, k, length))
    with torch.no_grad():
        a, c = sep.forward_logits(x), shared.forward_logits(x)
    for key in ("hap1_logits", "hap2_logits", "gt_logits"):
        torch.testing.assert_close(c[key], a[key], rtol=1e-5, atol=1e-5)
    # and the shared prior matters to the copy head: other weights there, other output
    with torch.no_grad():
        shared.bert.fusion.attention.prior[2].weight.mul_(-3.0)
        moved = shared.forward_logits(x)["hap1_logits"]
    assert (moved - c["hap1_logits"]).abs().max() > 1e-3


def factored_donors(b: int, k: int, length: int, agree: float) -> dict:
    """Factored references (``rag_table`` + donor tokens) with features and alleles, where a share
    ``agree`` of the (row, site) pairs has every donor carrying one allele (as PBWT donors mostly do)."""
    x = donor_inputs(b, k, length)
    x["rag_table"] = torch.randn(length, VOCAB_SIZE, D)
    for h in ("h1", "h2"):
        a = x[f"rag_allele_{h}"]
        same = torch.rand(b, 1, length) < agree
        a[:] = torch.where(same, a[:, :1], a)
        tok = a + ALLELE_0
        tok[..., 0], tok[..., -1] = SOS, EOS
        x[f"rag_tok_{h}"] = tok
    return x


def assert_same_outputs_and_grads(outs, grads, n_params: int, keys) -> None:
    """Two paths' outputs ``keys`` and parameter gradients agree, and the gradients are not all zero."""
    for key in keys:
        torch.testing.assert_close(outs[0][key], outs[1][key], rtol=1e-4, atol=1e-5)
    moved = 0
    for g_fast, g_ref in zip(*grads):
        if g_ref is None:
            assert g_fast is None or not g_fast.abs().any()
            continue
        # a gradient that is zero in one path (donors that agree) is zero only up to rounding of large terms
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-3, atol=1e-4 * max(1.0, float(g_ref.abs().max())))
        moved += int(g_ref.abs().sum() > 0)
    assert moved > n_params // 2  # the gradients compared are not all zero


def test_open_sites_are_where_donors_disagree():
    b, k, length = 3, 5, 11
    x = factored_donors(b, k, length, agree=0.6)
    tok = torch.cat([x["rag_tok_h1"], x["rag_tok_h2"]])
    alleles = torch.cat([x["rag_allele_h1"], x["rag_allele_h2"]])
    alleles[0, 1, 1] = 1 - alleles[0, 0, 1]  # an allele that disagrees where the tokens agree: open too
    tok[0, :, 1] = tok[0, 0, 1]
    o = OpenSites(tok, alleles)
    want = [
        (n, site)
        for n in range(2 * b)
        for site in range(length)
        if len(set(tok[n, :, site].tolist())) > 1 or len(set(alleles[n, :, site].tolist())) > 1
    ]
    p = o.size
    assert list(zip(o.n[:p].tolist(), o.l[:p].tolist())) == want and (0, 1) in want
    assert o.n.numel() == 64 and bool((o.n[p:] == 2 * b - 1).all())  # padded to a bucket, rows sorted
    assert torch.equal(o.tok[:p], torch.stack([tok[n, :, site] for n, site in want]))
    feats = (x["rag_feat_h1"], x["rag_feat_h2"])
    f = torch.cat(feats)
    assert torch.equal(o.take(feats)[:p], torch.stack([f[n, :, site] for n, site in want]))


def test_open_pairs_are_padded_to_few_sizes():
    from vcfbert_fast.model import _bucket

    sizes = [_bucket(p) for p in range(1, 20_000)]
    assert all(s >= p for p, s in zip(range(1, 20_000), sizes)) and sizes[0] == 64
    assert all(s <= max(64, 1.125 * p) for p, s in zip(range(1, 20_000), sizes))
    assert len(set(sizes)) <= 8 * 9  # 8 per power of two


@pytest.mark.parametrize("encode", ["all", "informative"])
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("train", [False, True])
def test_open_path_equals_materialised_references(shared, train, encode):
    """Factored references score donors only where they disagree (``OpenSites``); that must give the
    outputs and gradients of the same references materialised as ``rag_emb`` (dense attention)."""
    b, k, length = 3, 6, 13
    cfg = small_config(dropout=0.0, shared_prior=shared, prior_hidden=5, encode=encode)
    model = BERTFoundationModel(BERTWithEmbeddingRAG(VOCAB_SIZE, config=cfg)).train(train)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.15)  # every weight, the copy head's scores included, gets a say
    x = {**make_batch(b, length), **factored_donors(b, k, length, agree=0.7)}
    for key in ("pos", "af"):  # a window-grouped batch: every row shares the window's sites
        x[key] = x[key][:1].expand(b, length)
    params = [p for p in model.parameters() if p.requires_grad]
    outs, grads = [], []
    for materialised in (False, True):
        # the layer's own table (at eval the queries' embeddings are looked up from it), new per pass
        table = site_table(model.bert.embedding, x["pos"][0], x["af"][0])
        inp = {**x, "rag_table": table}
        if materialised:
            for h in ("h1", "h2"):
                inp[f"rag_emb_{h}"] = lookup_references((table, inp.pop(f"rag_tok_{h}")))
            del inp["rag_table"]
        o = model.forward_logits(inp)
        loss = sum(o[key].float().pow(2).sum() for key in ("hap1_logits", "hap2_logits", "gt_logits"))
        grads.append(torch.autograd.grad(loss, params, allow_unused=True))
        outs.append(o)
    assert_same_outputs_and_grads(outs, grads, len(params), ("hap1_logits", "hap2_logits", "gt_logits", "h1", "h2"))


def test_encoder_over_kept_tokens_is_the_encoder_of_each_rows_subsequence():
    """``forward_kept``: at the kept tokens, the encoder run on that row's kept tokens alone (in site
    order); elsewhere the final norm of the input. Rows keep different numbers of tokens, so the
    padding and its key mask are exercised."""
    n, length = 6, 29
    enc = TransformerEncoder(small_config(dropout=0.0)).eval()
    x = torch.randn(n, length, D)
    keep = torch.rand(n, length) < torch.rand(n, 1)
    keep[:, 0] = True
    keep[2] = True  # one row keeps everything
    with torch.no_grad():
        out = enc.forward_kept(x, keep)
        for r in range(n):
            idx = keep[r].nonzero()[:, 0]
            torch.testing.assert_close(out[r, idx], enc(x[r : r + 1, idx])[0], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(out[r, ~keep[r]], enc.norm(x[r, ~keep[r]]))
        torch.testing.assert_close(enc.forward_kept(x, torch.ones_like(keep)), enc(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("encode", ["all", "informative"])
def test_informative_encoder_does_not_see_settled_sites(encode):
    """With ``encode="informative"``, an untyped site where all donors carry one allele is settled:
    switching every donor there to the other allele changes that site's output only. With
    ``encode="all"`` the encoder carries the change to other sites (so the check can fail)."""
    b, k, length = 2, 5, 17
    model = BERTFoundationModel(BERTWithEmbeddingRAG(VOCAB_SIZE, config=small_config(dropout=0.0, encode=encode)))
    model.eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.15)  # init's small residual weights would carry the change below rounding
    x = {**make_batch(b, length), **factored_donors(b, k, length, agree=0.6)}
    for key in ("pos", "af"):
        x[key] = x[key][:1].expand(b, length)
    x["rag_table"] = site_table(model.bert.embedding, x["pos"][0], x["af"][0]).detach()
    alleles = x["rag_allele_h1"]
    settled = [
        site for site in range(1, length - 1)
        if x["hap_1"][0, site] == MASK and bool((alleles[0, :, site] == alleles[0, 0, site]).all())
    ]  # fmt: skip
    if not settled:  # draw one: row 0's site 1 masked, its donors agreeing
        x["hap_1"][0, 1] = MASK
        alleles[0, :, 1] = alleles[0, 0, 1]
        x["rag_tok_h1"][0, :, 1] = alleles[0, 0, 1] + ALLELE_0
        settled = [1]
    site = settled[0]
    y = {key: v.clone() for key, v in x.items()}
    y["rag_allele_h1"][0, :, site] = 1 - alleles[0, 0, site]
    y["rag_tok_h1"][0, :, site] = 1 - alleles[0, 0, site] + ALLELE_0
    with torch.no_grad():
        a, c = model.forward_logits(x)["h1"][0], model.forward_logits(y)["h1"][0]  # encoder outputs
    others = torch.ones(length, dtype=torch.bool)
    others[site] = False
    assert not torch.allclose(a[site], c[site])
    if encode == "informative":  # the same kept tokens, the same shapes: bitwise the same
        assert torch.equal(a[others], c[others])
    else:
        assert (a[others] - c[others]).abs().max() > 1e-7


@pytest.mark.parametrize("pops", [1, 3])
@pytest.mark.parametrize("train", [False, True])
def test_settled_table_path_equals_the_kept_encoder_path(train, pops, monkeypatch):
    """An informative model with factored donors computes settled pairs from a per-site table
    (``_SettledByTable``); its logits, hidden outputs and gradients must be those of the path
    through ``forward_cat``, ``forward_kept`` and the dense heads."""
    import vcfbert_fast.model as model_mod

    b, k, length = 4, 6, 23
    cfg = small_config(dropout=0.0, shared_prior=True, prior_hidden=5, encode="informative")
    model = BERTFoundationModel(BERTWithEmbeddingRAG(VOCAB_SIZE, config=cfg)).train(train)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.15)
    x = {**make_batch(b, length), **factored_donors(b, k, length, agree=0.8)}
    for key in ("pos", "af", "ref", "het", "hom"):
        x[key] = x[key][:1].expand(b, length)
    x["af_p"] = torch.rand(pops, length)[torch.randint(0, pops, (b,))]  # rows of a few populations
    for h in ("hap_1", "hap_2"):  # mostly untyped, as at imputation
        x[h][:, 1:-1][torch.rand(b, length - 2) < 0.6] = MASK
    params = [p for p in model.parameters() if p.requires_grad]
    outs, grads = [], []
    for by_table in (True, False):
        if not by_table:
            monkeypatch.setattr(model_mod, "_settled_by_table", lambda *a: None)
        else:
            assert model_mod._settled_by_table(model, {**x, "rag_table": torch.zeros(length, VOCAB_SIZE, D)})
        table = site_table(model.bert.embedding, x["pos"][0], x["af"][0])
        o = model.forward_logits({**x, "rag_table": table})
        loss = sum(o[key].float().pow(2).sum() for key in ("hap1_logits", "hap2_logits", "gt_logits"))
        grads.append(torch.autograd.grad(loss, params, allow_unused=True))
        outs.append(o)
    assert_same_outputs_and_grads(outs, grads, len(params), ("hap1_logits", "hap2_logits", "gt_logits", "h1", "h2", "h1_ori", "h2_ori"))
