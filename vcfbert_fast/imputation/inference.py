"""Windows x target batches -> haplotype ALT dosages: query tokens, retrieval, references, one forward."""

from __future__ import annotations

import numpy as np
import torch

from ..progress import progress_bar
from ..windows import frame_features, frame_tokens, window_features
from .calls import TargetCalls
from .model_io import ModelTables


class _References:
    """Retrieval + reference embeddings of one imputation run (exact Hamming, every panel row)."""

    def __init__(self, model, panel, tables: ModelTables, device: torch.device):
        from ..retrieval import make_retriever
        from ..store import ReferenceEmbeddings

        self.embedding = model.bert.embedding
        self.retriever = make_retriever(
            "hamming", panel, tables.freqs, tables.layout, None, k=tables.k, device=device
        )
        self.retriever.refresh_embeddings(self.embedding, device=device)
        self.store = ReferenceEmbeddings(panel, tables.layout, mode="live", device=device)

    def add_to(self, batch: dict, w: int) -> None:
        """``rag_emb_h1/h2``: the retrieved rows are valid by construction, so no host round trip."""
        for hap, key in (("hap_1", "rag_emb_h1"), ("hap_2", "rag_emb_h2")):
            _, rows = self.retriever.search(w, batch[hap])
            batch[key] = self.store.encode(w, rows, self.embedding, batch["pos"], batch["af"], check=False)


class _Donors:
    """PBWT donors of every target haplotype: one index over the panel at the target's typed sites,
    every haplotype's donors at every selection point found in one call, sliced per window."""

    def __init__(self, panel, tables: ModelTables, tc: TargetCalls):
        import sys
        import time

        from ..matching import PbwtRetriever

        t0 = time.perf_counter()
        self.retriever = PbwtRetriever(
            panel, tables.freqs, tables.layout, None, k=tables.k, group=tables.group, seed=tables.seed
        )
        typed = tc.typed_sites
        self.retriever.set_markers(typed)
        t1 = time.perf_counter()
        q = tc.model_calls(typed).reshape(2 * tc.n_samples, typed.size)  # rows 2s, 2s + 1
        self.retriever.set_queries(q, precompute=True)
        self.build_s, self.query_s = t1 - t0, time.perf_counter() - t1
        self._table: tuple[int, torch.Tensor | None] = (-1, None)  # (window, its site_table)
        n_pts = len(self.retriever.points)
        print(
            f"pbwt: index of {self.retriever.n_references} haplotypes x {typed.size} typed markers built in "
            f"{self.build_s:.2f} s; donors of {q.shape[0]} haplotypes at {n_pts} points (K={self.retriever.k}) "
            f"found in {self.query_s:.2f} s",
            file=sys.stderr,
        )

    def window(self, w: int, b0: int, b1: int):
        """``(donors of hap_1, donors of hap_2)`` of target samples ``[b0, b1)`` at window ``w``."""
        from ..matching import split_haplotypes

        return split_haplotypes(self.retriever.site_donors(w, np.arange(2 * b0, 2 * b1)))

    def add_to(self, batch: dict, w: int, b0: int, b1: int, embedding) -> None:
        from ..matching import donor_inputs, site_table

        d1, d2 = self.window(w, b0, b1)
        if self._table[0] != w:  # one per-site table per window, shared by its batches
            self._table = (w, site_table(embedding, batch["pos"][0], batch["af"][0]))
        batch.update(donor_inputs(d1, d2, embedding, batch["pos"], batch["af"], table=self._table[1]))


def _site_inputs(panel, tables: ModelTables, sl: slice, samples, n_rows: int, dev) -> dict:
    """The per-site keys of ``n_rows`` batch rows over sites ``sl``, and ``af_p``: one row per target
    sample in ``samples`` (the global AF, ``n_rows`` rows, when the run has no population table)."""
    feats = window_features(panel.positions, tables.freqs, sl)
    batch = {k: torch.from_numpy(v).to(dev)[None].expand(n_rows, sl.stop - sl.start + 2) for k, v in feats.items()}
    if tables.pop_af is None:
        batch["af_p"] = batch["af"]
    else:
        table, rows = tables.pop_af
        batch["af_p"] = torch.from_numpy(frame_features(table[rows[samples], sl])).to(dev)
    return batch


def _window_batch(panel, tables: ModelTables, tc: TargetCalls, w: int, b0: int, b1: int, dev) -> dict:
    """The model's input for window ``w`` and target samples ``[b0, b1)``."""
    sl = tables.layout.sites(w)
    calls = tc.model_calls(sl)[b0:b1]  # [B, 2, L]
    toks = torch.from_numpy(frame_tokens(calls, ~tc.typed[sl])).to(dev)
    batch = _site_inputs(panel, tables, sl, slice(b0, b1), b1 - b0, dev)
    batch["hap_1"], batch["hap_2"] = toks[:, 0], toks[:, 1]
    return batch


def _haplotype_batch(panel, tables: ModelTables, tc: TargetCalls, w: int, rows: np.ndarray, d, embedding, dev):
    """The model's input for single target haplotypes ``rows`` (``2 s + j``) of window ``w``, whose
    donors are ``d`` (same order). The encoder treats every haplotype on its own, so the rows are
    packed as two halves, ``hap_1`` then ``hap_2`` (the last row repeated to fill them),
    each half with its own samples' ``af_p``. Each half is padded to a multiple of 8 rows: a few
    batch shapes, not one per call (oneDNN caches its kernels per shape; under bf16 on a CPU, a
    new shape per forward grew the RSS by ~0.5 GB over a 5 Mb run)."""
    from ..matching import donor_inputs

    sl = tables.layout.sites(w)
    half = -(-rows.size // 16) * 8
    idx = np.minimum(np.arange(2 * half), rows.size - 1)
    rows = rows[idx]
    calls = tc.model_calls(sl).reshape(2 * tc.n_samples, -1)[rows]  # [S, 2, n] -> row 2 s + j
    toks = torch.from_numpy(frame_tokens(calls, ~tc.typed[sl])).to(dev)  # [2 half, L]
    batch = _site_inputs(panel, tables, sl, rows // 2, half, dev)
    if tables.pop_af is not None:  # one af_p row per haplotype: the halves' own samples
        batch["af_p"], batch["af_p_h2"] = batch["af_p"][:half], batch["af_p"][half:]
    batch["hap_1"], batch["hap_2"] = toks[:half], toks[half:]
    d = d.select(torch.from_numpy(idx))
    batch.update(donor_inputs(d.select(slice(0, half)), d.select(slice(half, None)), embedding, batch["pos"], batch["af"]))
    return batch


def _forward(model, batch: dict, amp) -> dict:
    if amp is None:
        return model.forward_logits(batch, hidden=False)
    with amp:
        return model.forward_logits(batch, hidden=False)


def _settled_window(model, panel, tables, tc, donors, w, keep, hds, dev, batch_size, amp, settle) -> int:
    """Window ``w`` with the vote's shortcut: a target haplotype whose donor vote is at least
    ``settle`` sure (``max(v, 1 - v)``) at every site it needs (central, not an input call) takes the
    vote there; the others are packed into forwards of up to ``2 * batch_size`` haplotypes.
    Returns the number of haplotypes the model ran on."""
    from ..matching import SiteDonors

    sl = tables.layout.sites(w)
    sites = sl.start + keep
    n_samp = tc.n_samples
    flat = hds.reshape(hds.shape[0], 2 * n_samp)  # a view: column 2 s + j
    need = torch.from_numpy(tc.calls(sites).reshape(2 * n_samp, -1) < 0)  # [2S, c]
    open_rows: list[np.ndarray] = []
    open_donors: list = []
    n_model = 0

    def run_open() -> None:
        rows, d = np.concatenate(open_rows), SiteDonors.cat(open_donors)
        open_rows.clear()
        open_donors.clear()
        for r0 in range(0, rows.size, 2 * batch_size):
            r = rows[r0 : r0 + 2 * batch_size]
            batch = _haplotype_batch(
                panel, tables, tc, w, r, d.select(slice(r0, r0 + r.size)), model.bert.embedding, dev
            )
            out = _forward(model, batch, amp)
            logits = torch.cat([out["hap1_logits"], out["hap2_logits"]], dim=0)[: r.size]
            p = torch.softmax(logits.float(), -1)[:, 1:-1, 1].cpu().numpy()  # [R, n]
            flat[sites[:, None], r[None, :]] = p[:, keep].T

    for b0 in range(0, n_samp, batch_size):
        b1 = min(n_samp, b0 + batch_size)
        rows = np.arange(2 * b0, 2 * b1)
        d = donors.retriever.site_donors(w, rows)  # [2B, K, n], rows 2 s + j
        v = d.vote()[:, keep]
        sure = ((torch.maximum(v, 1.0 - v) >= settle) | ~need[2 * b0 : 2 * b1]).all(1)
        flat[sites[:, None], rows[sure.numpy()][None, :]] = v[sure].numpy().T
        left = torch.nonzero(~sure).flatten()
        if left.numel():
            open_rows.append(rows[left.numpy()])
            open_donors.append(d.select(left))
            n_model += left.numel()
        if sum(r.size for r in open_rows) >= 2 * batch_size:
            run_open()
    if open_rows:
        run_open()
    return n_model


def _sites_bar(panel, desc: str, progress: bool, bar):
    """The caller's bar (a chunked run shares one over its chunks), else a new one over the panel."""
    if bar is not None:
        return bar, False
    return progress_bar(panel.n_sites, desc=desc, unit=" sites", enabled=progress), True


@torch.inference_mode()  # no autograd bookkeeping (version counters, view tracking) per op
def infer_dosages(
    model,
    panel,
    tables: ModelTables,
    tc: TargetCalls,
    dev: torch.device,
    batch_size: int,
    progress: bool,
    autocast_dtype: torch.dtype | None = None,
    bar=None,
    settle: float | None = None,
    stats: dict | None = None,
) -> np.ndarray:
    """Haplotype ALT probabilities ``[M, S, 2]`` float32, each site from its most central window.

    ``autocast_dtype``: run the forward under ``torch.autocast`` in that dtype (bf16), None: fp32
    (``devices.inference_dtype`` picks it). ``bar``: a progress bar to advance by the sites done.
    ``settle``: with PBWT donors, a haplotype whose donor vote is at least this sure at every site
    a window imputes for it takes the vote there, and the model runs on the rest
    (``_settled_window``); None: the model everywhere. ``stats``: receives ``haplotype_windows`` and
    ``model_haplotype_windows`` (how many of them the model ran on).
    """
    layout, n_samp = tables.layout, tc.n_samples
    hds = np.zeros((panel.n_sites, n_samp, 2), dtype=np.float32)
    refs = donors = None
    if tables.k > 0 and tables.engine == "pbwt":
        donors = _Donors(panel, tables, tc)
    elif tables.k > 0:
        refs = _References(model, panel, tables, dev)
    amp = None if autocast_dtype is None else torch.autocast(device_type=dev.type, dtype=autocast_dtype)
    bar, own_bar = _sites_bar(panel, "imputing", progress, bar)
    n_windows = n_model = 0
    for w in range(len(layout)):
        sl = layout.sites(w)
        keep = np.flatnonzero(tables.central[sl] == w)
        if keep.size == 0:
            continue
        n_windows += 1
        if settle is not None and donors is not None:
            n_model += _settled_window(model, panel, tables, tc, donors, w, keep, hds, dev, batch_size, amp, settle)
            bar.update(int(keep.size))
            continue
        for b0 in range(0, n_samp, batch_size):
            b1 = min(n_samp, b0 + batch_size)
            batch = _window_batch(panel, tables, tc, w, b0, b1, dev)
            if refs is not None:
                refs.add_to(batch, w)
            if donors is not None:
                donors.add_to(batch, w, b0, b1, model.bert.embedding)
            out = _forward(model, batch, amp)
            for j, key in enumerate(("hap1_logits", "hap2_logits")):
                p = torch.softmax(out[key].float(), -1)[:, 1:-1, 1].cpu().numpy()  # [B, n]
                hds[sl.start + keep, b0:b1, j] = p[:, keep].T
        n_model += 2 * n_samp
        bar.update(int(keep.size))
    if own_bar:
        bar.close()
    if stats is not None:
        stats["haplotype_windows"] = stats.get("haplotype_windows", 0) + 2 * n_samp * n_windows
        stats["model_haplotype_windows"] = stats.get("model_haplotype_windows", 0) + n_model
    return hds


def vote_dosages(
    panel, tables: ModelTables, tc: TargetCalls, batch_size: int, progress: bool, bar=None
) -> np.ndarray:
    """``impute --model vote``: each site's ALT probability is the donors' vote (``SiteDonors.vote``)."""
    donors = _Donors(panel, tables, tc)
    layout, n_samp = tables.layout, tc.n_samples
    hds = np.zeros((panel.n_sites, n_samp, 2), dtype=np.float32)
    bar, own_bar = _sites_bar(panel, "voting", progress, bar)
    for w in range(len(layout)):
        sl = layout.sites(w)
        keep = np.flatnonzero(tables.central[sl] == w)
        for b0 in range(0, n_samp, batch_size):
            b1 = min(n_samp, b0 + batch_size)
            for j, d in enumerate(donors.window(w, b0, b1)):
                hds[sl.start + keep, b0:b1, j] = d.vote().numpy()[:, keep].T
        bar.update(int(keep.size))
    if own_bar:
        bar.close()
    return hds
