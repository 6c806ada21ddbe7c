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
        typed = np.flatnonzero(tc.typed)
        self.retriever.set_markers(typed)
        t1 = time.perf_counter()
        q = tc.model_calls[:, :, typed].reshape(2 * tc.n_samples, typed.size)  # rows 2s, 2s + 1
        self.retriever.set_queries(q, precompute=True)
        self.build_s, self.query_s = t1 - t0, time.perf_counter() - t1
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
        from ..matching import donor_inputs

        d1, d2 = self.window(w, b0, b1)
        batch.update(donor_inputs(d1, d2, embedding, batch["pos"], batch["af"]))


def _window_batch(panel, tables: ModelTables, tc: TargetCalls, w: int, b0: int, b1: int, dev) -> dict:
    """The model's input for window ``w`` and target samples ``[b0, b1)``."""
    sl = tables.layout.sites(w)
    n, bsz = sl.stop - sl.start, b1 - b0
    feats = window_features(panel.positions, tables.freqs, sl)
    toks = torch.from_numpy(frame_tokens(tc.model_calls[b0:b1, :, sl], ~tc.typed[sl])).to(dev)  # [B, 2, L]
    batch = {k: torch.from_numpy(v).to(dev)[None].expand(bsz, n + 2) for k, v in feats.items()}
    if tables.pop_af is None:
        batch["af_p"] = batch["af"]
    else:
        table, rows = tables.pop_af
        batch["af_p"] = torch.from_numpy(frame_features(table[rows[b0:b1], sl])).to(dev)
    batch["hap_1"], batch["hap_2"] = toks[:, 0], toks[:, 1]
    return batch


def _sites_bar(panel, desc: str, progress: bool, bar):
    """The caller's bar (a chunked run shares one over its chunks), else a new one over the panel."""
    if bar is not None:
        return bar, False
    return progress_bar(panel.n_sites, desc=desc, unit=" sites", enabled=progress), True


@torch.no_grad()
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
) -> np.ndarray:
    """Haplotype ALT probabilities ``[M, S, 2]`` float32, each site from its most central window.

    ``autocast_dtype``: run the forward under ``torch.autocast`` in that dtype (bf16), None: fp32
    (``devices.inference_dtype`` picks it). ``bar``: a progress bar to advance by the sites done.
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
    for w in range(len(layout)):
        sl = layout.sites(w)
        keep = np.flatnonzero(tables.central[sl] == w)
        if keep.size == 0:
            continue
        for b0 in range(0, n_samp, batch_size):
            b1 = min(n_samp, b0 + batch_size)
            batch = _window_batch(panel, tables, tc, w, b0, b1, dev)
            if refs is not None:
                refs.add_to(batch, w)
            if donors is not None:
                donors.add_to(batch, w, b0, b1, model.bert.embedding)
            if amp is not None:
                with amp:
                    out = model.forward_logits(batch)
            else:
                out = model.forward_logits(batch)
            for j, key in enumerate(("hap1_logits", "hap2_logits")):
                p = torch.softmax(out[key].float(), -1)[:, 1:-1, 1].cpu().numpy()  # [B, n]
                hds[sl.start + keep, b0:b1, j] = p[:, keep].T
        bar.update(int(keep.size))
    if own_bar:
        bar.close()
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
