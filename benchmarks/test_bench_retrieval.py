"""Retrieval benchmarks (issues 5 and 6): per-batch search of both engines, refresh of a window,
and retrieval + gather + reference embedding together per training batch.

The panel is synthetic (numpy only: no VCF, msprime or cyvcf2), so the GPU machine runs it too;
the FAISS engine is skipped where faiss is not installed. Two sizes:

* ``cpu-small`` (400 references x one window of 256 sites, 8 queries, D = 32): runs anywhere
  in seconds; asserts correctness and only same-process ratios, never absolute times.
* ``seed`` (32 queries x 2008 references x 1028 sites, D = 192): GPU only (``-m gpu``); asserts
  the targets (Hamming refresh < 1 ms, FAISS re-encode of 2008 references < 20 ms, retrieval +
  gather + embedding <= 1 ms per batch) and prints each measured value beside its target.

Every search result is checked against a brute-force weighted Hamming distance computed here in
float64 from the embedding's own per-site weights (tie-aware: distances compared, plus the
index of each returned row's distance), so a fast wrong answer cannot pass as a fast one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from step_setup import median_ms, sync

from vcfbert_fast.frequencies import compute_frequencies
from vcfbert_fast.io import Panel
from vcfbert_fast.model import HaplotypeEmbedding, ModelConfig
from vcfbert_fast.retrieval import make_retriever
from vcfbert_fast.windows import frame_features, frame_tokens, make_windows, scaled_positions

CPU = torch.device("cpu")


@dataclass(frozen=True)
class RetrievalConfig:
    name: str
    refs: int  # panel haplotypes (every one may be retrieved, except a query's own two)
    sites: int  # sites of the one window (framed length sites + 2)
    queries: int  # haplotypes searched per call (one haplotype of each sample of the batch)
    dims: int
    heads: int
    k: int = 1


CPU_SMALL = RetrievalConfig("cpu-small", refs=400, sites=256, queries=8, dims=32, heads=4)
SEED = RetrievalConfig("seed", refs=2008, sites=1028, queries=32, dims=192, heads=6)

TARGET_REFRESH_HAMMING_MS = 1.0  # issue 5
TARGET_REENCODE_FAISS_MS = 20.0  # issue 5 (the original took 6.4 s per window)
TARGET_BATCH_MS = 1.0  # issue 6: retrieval + gather + embedding per batch


def synthetic_panel(rng: np.random.Generator, n_hap: int, n_sites: int, n_founders: int = 48) -> Panel:
    """Haplotypes as mosaics of founders (blocks of 32 sites) with 1% mutations, AFs mostly rare.

    A mosaic panel has real near neighbours and many near-ties, like a human panel, unlike
    independent random rows (all at distance ~n/2 from each other).
    """
    af = rng.beta(0.2, 0.8, size=n_sites)
    founders = rng.random((n_founders, n_sites)) < af
    block = 32
    pick = rng.integers(0, n_founders, size=(n_hap, -(-n_sites // block)))
    rows = np.repeat(pick, block, axis=1)[:, :n_sites]
    haps = founders[rows, np.arange(n_sites)[None, :]]
    haps ^= rng.random((n_hap, n_sites)) < 0.01
    positions = np.sort(rng.choice(20 * n_sites, size=n_sites, replace=False)).astype(np.int64) + 1
    return Panel(
        path="synthetic",
        contig="1",
        positions=positions,
        ref=np.array(["A"] * n_sites, dtype=object),
        alt=np.array(["G"] * n_sites, dtype=object),
        ids=np.array(["."] * n_sites, dtype=object),
        samples=[f"s{i}" for i in range(n_hap // 2)],
        haplotypes=haps.astype(np.uint8),
    )


@dataclass
class Setup:
    cfg: RetrievalConfig
    panel: Panel
    freqs: object
    layout: object
    layer: HaplotypeEmbedding
    rows: np.ndarray  # [2, B] panel rows of the queries (hap_1 rows, hap_2 rows)
    tokens: list[torch.Tensor]  # [hap_1 tokens [B, L], hap_2 tokens [B, L]] (masked, on device)
    exclude: torch.Tensor  # [B, 2] a query's own sample's rows (leave-one-out, as in training)
    mask: np.ndarray  # bool [n], shared by queries and reference view
    pos: torch.Tensor  # [L] framed
    af: torch.Tensor  # [L] framed
    device: torch.device


def make_setup(cfg: RetrievalConfig, device: torch.device, rng: np.random.Generator) -> Setup:
    panel = synthetic_panel(rng, cfg.refs, cfg.sites)
    freqs = compute_frequencies(panel)
    layout = make_windows(cfg.sites, max_sites=cfg.sites)
    layer = HaplotypeEmbedding(
        ModelConfig(dims=cfg.dims, n_layers=1, attn_heads=cfg.heads, dropout=0.0, max_len=cfg.sites + 2)
    )
    layer = layer.to(device).eval()
    samples = rng.choice(cfg.refs // 2, size=cfg.queries, replace=False)
    rows = np.stack([2 * samples, 2 * samples + 1])
    mask = rng.random(cfg.sites) < 0.5  # one training mask shared by queries and references
    tokens = [torch.from_numpy(frame_tokens(panel.haplotypes[r], mask)).to(device) for r in rows]
    exclude = torch.from_numpy(rows.T.copy()).to(device)
    pos = torch.from_numpy(frame_features(scaled_positions(panel.positions))).to(device)
    af = torch.from_numpy(frame_features(freqs.af)).to(device)
    return Setup(cfg, panel, freqs, layout, layer, rows, tokens, exclude, mask, pos, af, device)


def brute_force_dist(s: Setup, hap: int) -> np.ndarray:
    """float64 ``[B, N]`` weighted Hamming distances over unmasked sites, own rows at +inf.

    Weights ``w_l = ||f_l(ALLELE_1) - f_l(ALLELE_0)||^2`` from the model's ``site_weights``
    (not from the retriever).
    """
    w = s.layer.site_weights(s.pos, s.af, dtype=torch.float64)[1:-1].cpu().numpy()
    w = np.where(s.mask, 0.0, w)
    h = s.panel.haplotypes.astype(np.float64)
    q = h[s.rows[hap]]
    # sum_l w_l [q_l != r_l] = sum_l w_l (q_l + r_l - 2 q_l r_l)
    dist = (q * w).sum(1, keepdims=True) + ((1 - 2 * q) * w) @ h.T
    dist[np.arange(len(q))[:, None], s.rows.T] = np.inf
    return dist


def check_search(s: Setup, hap: int, dist: torch.Tensor, index: torch.Tensor, rtol: float) -> None:
    """Returned distances equal the brute-force K smallest; each returned row has its reported distance."""
    expect = brute_force_dist(s, hap)
    k = index.shape[1]
    got_i = index.cpu().numpy()
    got_d = dist.cpu().double().numpy()
    kth = np.sort(expect, axis=1)[:, :k]
    np.testing.assert_allclose(got_d, kth, rtol=rtol, atol=1e-6)
    np.testing.assert_allclose(np.take_along_axis(expect, got_i, 1), kth, rtol=rtol, atol=1e-6)
    assert not (got_i[:, :, None] == s.rows.T[:, None, :]).any(), "a query retrieved its own haplotype"


def _retriever(s: Setup, kind: str):
    kw = {"device": s.device} if kind == "hamming" else {}
    r = make_retriever(kind, s.panel, s.freqs, s.layout, None, k=s.cfg.k, **kw)
    r.refresh_embeddings(s.layer, device=s.device)
    return r


def _search_fn(s: Setup, retriever, hap: int = 0):
    return lambda: retriever.search(0, s.tokens[hap], exclude=s.exclude)


def _faiss_or_skip():
    return pytest.importorskip("faiss", reason="faiss not installed (the GPU machine lacks it)")


def timed_ms(benchmark, fn, device: torch.device, rounds: int) -> float:
    """Time ``fn`` (synchronised: wall time per call, what a training loop sees) with pytest-benchmark
    and return its median in ms; falls back to our own median when benchmarking is disabled."""

    def run():
        out = fn()
        sync(device)
        return out

    benchmark.pedantic(run, rounds=rounds, warmup_rounds=1)
    stats = getattr(benchmark, "stats", None)
    if getattr(benchmark, "disabled", False) or stats is None:
        return median_ms(fn, device, reps=rounds, warmup=0)
    return stats.stats.median * 1e3


# ---------------------------------------------------------------------------- search per batch


def _bench_search(
    benchmark, rng: np.random.Generator, cfg: RetrievalConfig, device: torch.device, kind: str, reps: int
) -> dict:
    if kind == "faiss":
        _faiss_or_skip()
    s = make_setup(cfg, device, rng)
    retriever = _retriever(s, kind)
    search = _search_fn(s, retriever)
    sync(device)
    t0 = time.perf_counter()
    dist, index = search()  # FAISS: builds the (window, mask) index here, once per epoch in training
    sync(device)
    first_ms = (time.perf_counter() - t0) * 1e3
    check_search(s, 0, dist, index, rtol=1e-6 if kind == "hamming" else 1e-3)
    ms = timed_ms(benchmark, search, device, reps)
    info = {
        "config": cfg.name,
        "engine": kind,
        "queries": cfg.queries,
        "refs": cfg.refs,
        "sites": cfg.sites,
        "dims": cfg.dims,
        "k": cfg.k,
        "search_ms": ms,
        "first_search_ms": first_ms,
    }
    if kind == "faiss":
        info["index_build_ms"] = first_ms - ms  # first search minus a steady one
    else:
        from vcfbert_fast.ops import hamming_backend

        info["backend"] = hamming_backend(device)
    benchmark.extra_info.update(info)
    print(f"\n{cfg.name} {kind} search, {cfg.queries} x {cfg.refs} x {cfg.sites}: {ms:.3f} ms per call")
    return info


@pytest.mark.parametrize("kind", ["hamming", "faiss"])
def test_search_cpu_small(benchmark, kind, rng):
    _bench_search(benchmark, rng, CPU_SMALL, CPU, kind, reps=5)


def test_hamming_faster_than_faiss_cpu_small(benchmark, rng):
    """Same panel, same queries, same process, interleaved: the Hamming engine wins per batch (fastest calls)."""
    _faiss_or_skip()
    s = make_setup(CPU_SMALL, CPU, rng)
    ham, fai = _retriever(s, "hamming"), _retriever(s, "faiss")
    d_h, i_h = ham.search(0, s.tokens[0], exclude=s.exclude)
    d_f, i_f = fai.search(0, s.tokens[0], exclude=s.exclude)  # builds the FAISS index (not timed)
    check_search(s, 0, d_h, i_h, rtol=1e-6)
    check_search(s, 0, d_f, i_f, rtol=1e-3)
    # One thread for both engines (torch intra-op and faiss OpenMP): on a shared, loaded box,
    # spinning thread pools waiting for a descheduled thread cost 10-100x and would decide the
    # comparison instead of the work each engine does.
    import faiss

    torch_threads, omp_threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    t_h, t_f = [], []
    try:
        for _ in range(7):  # single calls interleaved, fastest of each
            for fn, times in ((_search_fn(s, ham), t_h), (_search_fn(s, fai), t_f)):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
    finally:
        torch.set_num_threads(torch_threads)
        faiss.omp_set_num_threads(omp_threads)
    ratio = min(t_f) / min(t_h)
    benchmark.extra_info.update(
        config=CPU_SMALL.name, threads=1, hamming_ms=min(t_h), faiss_ms=min(t_f), faiss_over_hamming=ratio
    )
    print(f"\ncpu-small search, 1 thread: Hamming {min(t_h):.2f} ms, FAISS {min(t_f):.2f} ms ({ratio:.1f}x)")
    benchmark.pedantic(_search_fn(s, ham), rounds=1)
    assert ratio > 1.0, f"Hamming {min(t_h):.2f} ms per batch is not faster than FAISS {min(t_f):.2f} ms"


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["hamming", "faiss"])
def test_search_seed_gpu(benchmark, kind, rng):
    _bench_search(benchmark, rng, SEED, torch.device("cuda"), kind, reps=20)


# ---------------------------------------------------------------------------- refresh of a window


def _bench_refresh_hamming(
    benchmark, rng: np.random.Generator, cfg: RetrievalConfig, device: torch.device, reps: int
) -> float:
    s = make_setup(cfg, device, rng)
    retriever = _retriever(s, "hamming")
    refresh = lambda: retriever.refresh_embeddings(s.layer, device=device)
    ms = timed_ms(benchmark, refresh, device, reps)
    w_model = s.layer.site_weights(s.pos, s.af, dtype=torch.float64)[1:-1]
    torch.testing.assert_close(retriever.site_weights(0).cpu(), w_model.cpu(), rtol=1e-6, atol=1e-9)
    benchmark.extra_info.update(
        config=cfg.name, engine="hamming", refs=cfg.refs, sites=cfg.sites, dims=cfg.dims, refresh_ms=ms
    )
    return ms


def _reencode_paths(s: Setup, chunk_rows: int = 256):
    """The FAISS engine's re-encode of every reference of the window, flattened float32 ``[N, L*D]``.

    ``layer``: the embedding layer in chunks of 256 rows, as ``FaissRetriever`` builds an index.
    ``table``: per-site table ``f_l(t)`` for every token (``O(L*V*D)``), then one
    ``ops.embed_flatten`` lookup into float32 (exact for a per-site embedding).
    """
    from vcfbert_fast.ops import embed_flatten
    from vcfbert_fast.vocab import VOCAB_SIZE

    n, length = s.cfg.refs, s.cfg.sites + 2
    tokens = torch.from_numpy(frame_tokens(s.panel.haplotypes, s.mask)).to(s.device)
    out = torch.empty(n, length * s.cfg.dims, dtype=torch.float32, device=s.device)

    @torch.no_grad()
    def layer_path():
        for a in range(0, n, chunk_rows):
            t = tokens[a : a + chunk_rows]
            x = s.layer(t, s.pos[None].expand(t.shape[0], -1), s.af[None].expand(t.shape[0], -1))
            out[a : a + t.shape[0]] = x.reshape(t.shape[0], -1)
        return out

    @torch.no_grad()
    def table_path():
        toks = torch.arange(VOCAB_SIZE, device=s.device)[:, None].expand(VOCAB_SIZE, length)
        v = VOCAB_SIZE
        table = (
            s.layer(toks, s.pos[None].expand(v, -1), s.af[None].expand(v, -1)).transpose(0, 1).contiguous()
        )
        return embed_flatten(tokens, site_table=table, out_dtype=torch.float32).view(n, -1)

    return layer_path, table_path


def _bench_reencode_faiss(
    benchmark, rng: np.random.Generator, cfg: RetrievalConfig, device: torch.device, reps: int
) -> dict:
    """``reencode_ms``: the path ``FaissRetriever`` takes today (the embedding layer in chunks);
    ``table_ms``: the per-site table + ``embed_flatten`` path, reported beside it."""
    s = make_setup(cfg, device, rng)
    layer_path, table_path = _reencode_paths(s)
    expect = layer_path().clone()
    torch.testing.assert_close(table_path(), expect, rtol=1e-4, atol=1e-4)
    info = {"config": cfg.name, "engine": "faiss", "refs": cfg.refs, "sites": cfg.sites, "dims": cfg.dims}
    info["table_ms"] = median_ms(table_path, device, reps=reps, warmup=1)
    info["reencode_ms"] = timed_ms(benchmark, layer_path, device, reps)
    try:  # the index build (host copy + IndexFlatL2.add), reported apart from the re-encode
        import faiss

        def build():
            x = expect.cpu().numpy()
            faiss.IndexFlatL2(x.shape[1]).add(x)

        info["index_build_ms"] = median_ms(build, CPU, reps=2, warmup=0)
    except ImportError:
        info["index_build_ms"] = None  # faiss absent: the build cannot be timed here
    benchmark.extra_info.update(info)
    return info


def test_refresh_hamming_cpu_small(benchmark, rng):
    _bench_refresh_hamming(benchmark, rng, CPU_SMALL, CPU, reps=5)


def test_reencode_faiss_cpu_small(benchmark, rng):
    info = _bench_reencode_faiss(benchmark, rng, CPU_SMALL, CPU, reps=2)
    print(
        f"\ncpu-small FAISS re-encode: engine path {info['reencode_ms']:.1f} ms, "
        f"table path {info['table_ms']:.1f} ms, index build {info['index_build_ms']} ms"
    )


@pytest.mark.gpu
def test_refresh_hamming_seed_gpu(benchmark, rng):
    ms = _bench_refresh_hamming(benchmark, rng, SEED, torch.device("cuda"), reps=20)
    benchmark.extra_info["target_refresh_ms"] = TARGET_REFRESH_HAMMING_MS
    print(f"\nseed Hamming refresh of one window: {ms:.3f} ms (target < {TARGET_REFRESH_HAMMING_MS} ms)")
    assert ms < TARGET_REFRESH_HAMMING_MS


@pytest.mark.gpu
def test_reencode_faiss_seed_gpu(benchmark, rng):
    info = _bench_reencode_faiss(benchmark, rng, SEED, torch.device("cuda"), reps=10)
    benchmark.extra_info["target_reencode_ms"] = TARGET_REENCODE_FAISS_MS
    print(
        f"\nseed FAISS re-encode of {SEED.refs} references: {info['reencode_ms']:.2f} ms "
        f"(target < {TARGET_REENCODE_FAISS_MS} ms; per-site table + embed_flatten path "
        f"{info['table_ms']:.2f} ms); index build {info['index_build_ms']} ms"
    )
    assert info["reencode_ms"] < TARGET_REENCODE_FAISS_MS


# ------------------------------------------------------- retrieval + gather + embedding per batch


def _batch_fns(s: Setup):
    """One training batch's reference side: search hap_1 and hap_2, then ``rag_emb`` for both.

    Returns ``{mode: fn}`` for the store (pinned bf16 store + ``gather_rows``) and live modes, and
    the two ReferenceEmbeddings. Both haplotypes' rows go through one ``encode`` call (one gather
    of ``2*B*K`` rows), since the store returns a view of a reused buffer.
    """
    from vcfbert_fast.store import ReferenceEmbeddings

    retriever = _retriever(s, "hamming")
    b, k = s.cfg.queries, s.cfg.k
    stores = {
        "store": ReferenceEmbeddings(s.panel, s.layout, mode="store", device=s.device, max_rows=2 * b * k),
        "live": ReferenceEmbeddings(s.panel, s.layout, mode="live", device=s.device),
    }
    stores["store"].refresh(s.layer)

    def make(ref):
        def fn():
            _, i1 = retriever.search(0, s.tokens[0], exclude=s.exclude)
            _, i2 = retriever.search(0, s.tokens[1], exclude=s.exclude)
            # rows from the retriever: the trainer's unchecked hot path (no host sync)
            emb = ref.encode(0, torch.cat([i1, i2]), s.layer, s.pos, s.af, check=False)  # [2B, K, L, D]
            return emb[:b], emb[b:], i1, i2

        return fn

    return {mode: make(ref) for mode, ref in stores.items()}, stores, retriever


def _bench_batch(
    benchmark, rng: np.random.Generator, cfg: RetrievalConfig, device: torch.device, reps: int
) -> dict:
    s = make_setup(cfg, device, rng)
    fns, stores, retriever = _batch_fns(s)
    sync(device)
    t0 = time.perf_counter()
    h1, h2, i1, _ = fns["store"]()  # first call encodes the window into the store (refresh cost)
    sync(device)
    store_build_ms = (time.perf_counter() - t0) * 1e3
    # Correctness: the retrieved rows are the exact nearest, store == live (to bf16 rounding).
    d1, _ = retriever.search(0, s.tokens[0], exclude=s.exclude)
    check_search(s, 0, d1, i1, rtol=1e-6)
    with torch.no_grad():
        l1, l2, _, _ = fns["live"]()
        torch.testing.assert_close(h1.float(), l1.float(), rtol=2e-2, atol=2e-2)
        torch.testing.assert_close(h2.float(), l2.float(), rtol=2e-2, atol=2e-2)
    searches = lambda: (
        retriever.search(0, s.tokens[0], exclude=s.exclude),
        retriever.search(0, s.tokens[1], exclude=s.exclude),
    )
    info = {
        "config": cfg.name,
        "queries": cfg.queries,
        "refs": cfg.refs,
        "sites": cfg.sites,
        "dims": cfg.dims,
        "k": cfg.k,
        "search_ms": median_ms(searches, device, reps=reps),  # both haplotypes
        "store_ms": median_ms(fns["store"], device, reps=reps),
        "live_ms": median_ms(fns["live"], device, reps=reps),
        "store_build_ms": store_build_ms,
        "store_bytes": stores["store"].nbytes,
    }
    from vcfbert_fast.ops import gather_backend

    info["gather_backend"] = gather_backend(device, src_pinned=stores["store"].pin)
    best = min(("store", "live"), key=lambda m: info[f"{m}_ms"])
    info.update(total_ms=info[f"{best}_ms"], best_mode=best)
    benchmark.extra_info.update(info)
    timed_ms(benchmark, fns[best], device, reps)  # pytest-benchmark's own table: the best mode
    return info


def test_batch_retrieval_gather_embedding_cpu_small(benchmark, rng):
    info = _bench_batch(benchmark, rng, CPU_SMALL, CPU, reps=3)
    print(
        f"\ncpu-small retrieval + reference embedding per batch: store {info['store_ms']:.2f} ms, "
        f"live {info['live_ms']:.2f} ms (search of both haplotypes {info['search_ms']:.2f} ms)"
    )


@pytest.mark.gpu
def test_batch_retrieval_gather_embedding_seed_gpu(benchmark, rng):
    info = _bench_batch(benchmark, rng, SEED, torch.device("cuda"), reps=20)
    benchmark.extra_info["target_total_ms"] = TARGET_BATCH_MS
    print(
        f"\nseed retrieval + gather + embedding per batch: store {info['store_ms']:.3f} ms "
        f"(gather via {info['gather_backend']}), live {info['live_ms']:.3f} ms, search alone "
        f"{info['search_ms']:.3f} ms; best {info['total_ms']:.3f} ms (target <= {TARGET_BATCH_MS} ms)"
    )
    assert info["total_ms"] <= TARGET_BATCH_MS
