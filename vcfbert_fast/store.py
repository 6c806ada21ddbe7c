"""Reference embeddings ``rag_emb [B, K, L, D]`` for retrieved panel rows: encoded live, or gathered from a store.

Two sources behind one call, ``encode(window_idx, ref_rows [B, K], embedding_layer, pos, af)``:

* ``"live"`` (default): embed the retrieved rows' COMPLETE (unmasked) alleles with the live
  embedding layer. Gradients flow into the embedding and nothing goes stale: right for
  training with small K. For a per-site layer the layer runs on two rows (all ALLELE_0, all
  ALLELE_1) and each reference is a per-site select (``O(L*D)`` layer work, exactly what running
  the layer on every row gives, values and gradients); otherwise on the batch's DISTINCT rows
  once (queries of a batch often retrieve the same references).
* ``"store"`` with the host store (``host_store=True``; today only the benchmarks build one, neither
  ``train`` nor ``impute`` does): every reference row of a window pre-encoded once (bf16, in host memory, pinned
  when CUDA is available) with a frozen snapshot of the embedding taken at ``refresh()``; a
  call is one ``ops.gather_rows`` into a preallocated device buffer (zero-copy UVA kernel on
  CUDA). No gradient reaches the embedding from the references and entries are as old as the
  last refresh: right for inference/imputation (the embedding is frozen anyway) and for large
  K, where live encoding costs ``B*K`` embedding rows per step. ``host_store=False``: the same
  frozen snapshot without a host store: the live encoding above run with the snapshot, no grad,
  cast to ``dtype`` (the trainer's ``--reference store``: no ``[N, L, D]`` memory at all).

``encode(..., check=False)`` is for hot paths whose rows are valid by construction (a
retriever's output): no host round trip at all. The rows' alleles come from a per-window
bit-packed copy of the panel on the layer's device (``N_panel * ceil(n/64) * 8`` bytes per window,
94 MB for a whole 5008-haplotype x 150k-site panel), the store's row map is a device tensor, and
``ops.gather_rows(check=False)`` skips its range-check read-back. ``check=True`` (default)
validates the rows on the host and raises on a bad one.

Memory truth (DESIGN.md): one window of 2008 references x 1030 tokens x 192 dims is 0.79 GB in
bf16, so the store has an explicit byte budget (``max_bytes``): windows are encoded on first
use and the least recently used ones are evicted when a new one would exceed it; a window
larger than the whole budget raises ``InputError`` naming both sizes and the fix.

The store's output is a VIEW of one of ``n_buffers`` (default 2) preallocated device buffers
used in turn (no allocation per step): a step's ``rag_emb_h1`` and ``rag_emb_h2`` calls get
different buffers, and a result stays valid until ``n_buffers`` further calls.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from .errors import InputError
from .vocab import ALLELE_0, ALLELE_1, EOS, PAD, SOS, VOCAB_SIZE
from .windows import frame_tokens

__all__ = ["ReferenceEmbeddings"]


def _layer_device(layer: torch.nn.Module) -> torch.device:
    for p in layer.parameters():
        return p.device
    return torch.device("cpu")


def _is_per_site(layer: torch.nn.Module) -> bool:
    """True for layers whose site ``l`` output depends only on (token, pos, af) at ``l`` and ``l``."""
    if getattr(layer, "per_site", None) is not None:
        return bool(layer.per_site)
    from .model import HaplotypeEmbedding

    return isinstance(layer, HaplotypeEmbedding)


class ReferenceEmbeddings:
    """How retrieved reference rows become ``rag_emb_h1/h2 [B, K, L, D]``.

    ``mode``: ``"live"`` or ``"store"`` (module doc). ``reference_rows``: panel rows the store
    holds (all rows when None); ``encode`` accepts only those. ``device``: where the output
    lives (default: CUDA when available). ``max_bytes``: store budget (all windows together).
    ``pin``: pin the host store (default: when CUDA is available; the zero-copy gather needs
    it). ``per_site``: encode the store through a per-site table and ``ops.embed_flatten``
    (``O(L * V * D)`` embedding work per window instead of ``O(N * L * D)``); default: True for
    ``HaplotypeEmbedding``. ``max_rows``: ``B*K`` to preallocate the output buffers for;
    ``n_buffers``: output buffers used in turn (module doc). ``host_store``: store mode keeps the
    host store (default) or only the frozen snapshot (module doc).
    """

    def __init__(
        self,
        panel,
        layout,
        mode: str = "live",
        device: Any = None,
        reference_rows=None,
        max_bytes: int = 8 << 30,
        dtype: torch.dtype = torch.bfloat16,
        pin: bool | None = None,
        per_site: bool | None = None,
        chunk_rows: int = 256,
        max_rows: int = 0,
        n_buffers: int = 2,
        host_store: bool = True,
    ):
        if mode not in ("live", "store"):
            raise ValueError(f"mode must be 'live' or 'store', not {mode!r}")
        self.panel, self.layout, self.mode = panel, layout, mode
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        n_hap = int(panel.haplotypes.shape[0])
        rows = np.arange(n_hap) if reference_rows is None else np.asarray(reference_rows, dtype=np.int64)
        rows = np.sort(rows.reshape(-1))
        if rows.size == 0 or rows[0] < 0 or rows[-1] >= n_hap or np.any(np.diff(rows) == 0):
            raise ValueError(f"reference_rows must be distinct panel rows in [0, {n_hap})")
        self.reference_rows = rows
        self._row_to_ref = np.full(n_hap, -1, dtype=np.int64)
        self._row_to_ref[rows] = np.arange(rows.size)
        self.max_bytes = int(max_bytes)
        self.dtype = dtype
        self.pin = torch.cuda.is_available() if pin is None else bool(pin)
        self.per_site = per_site
        self.chunk_rows = int(chunk_rows)
        self.max_rows = int(max_rows)
        self._snapshot: torch.nn.Module | None = None
        self._store: OrderedDict[int, torch.Tensor] = OrderedDict()
        self.n_buffers = int(n_buffers)
        self._bufs: list[torch.Tensor | None] = [None] * self.n_buffers
        self._next_buf = 0
        self.n_built = 0
        self.n_evicted = 0
        self.host_store = bool(host_store)
        self._row_to_ref_dev: torch.Tensor | None = None  # _row_to_ref on self.device (check=False)
        self._bits: dict[int, torch.Tensor] = {}  # window -> packed alleles of every panel row (check=False)

    # ------------------------------------------------------------------ shared
    @property
    def nbytes(self) -> int:
        """Bytes the host store holds now."""
        return sum(t.numel() * t.element_size() for t in self._store.values())

    def window_nbytes(self, window_idx: int, dims: int) -> int:
        """Store bytes of one window: ``N * (n + 2) * D * itemsize``."""
        sl = self.layout.sites(window_idx)
        item = torch.empty((), dtype=self.dtype).element_size()
        return self.reference_rows.size * (sl.stop - sl.start + 2) * dims * item

    def _internal(self, ref_rows: torch.Tensor) -> np.ndarray:
        rows = ref_rows.reshape(-1).cpu().numpy().astype(np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self._row_to_ref.size):
            raise IndexError(f"reference row out of range [0, {self._row_to_ref.size})")
        idx = self._row_to_ref[rows]
        if np.any(idx < 0):
            raise ValueError(f"panel row {int(rows[idx < 0][0])} is not one of this store's reference_rows")
        return idx

    def _window_bits(self, window_idx: int, dev: torch.device) -> torch.Tensor:
        """Packed alleles of every panel row in a window, int64 ``[N_panel, ceil(n/64)]`` on ``dev``."""
        bits = self._bits.get(window_idx)
        if bits is None or bits.device != dev:
            from .ops.hamming import pack_bits

            sl = self.layout.sites(window_idx)
            bits = pack_bits(torch.from_numpy(np.ascontiguousarray(self.panel.haplotypes[:, sl]))).to(dev)
            self._bits[window_idx] = bits
        return bits

    def encode(
        self,
        window_idx: int,
        ref_rows: torch.Tensor,
        embedding_layer: torch.nn.Module,
        pos: torch.Tensor | None,
        af: torch.Tensor | None,
        check: bool = True,
    ) -> torch.Tensor:
        """Embeddings of the retrieved complete reference haplotypes, ``[B, K, L, D]``.

        ``pos``/``af``: ``[L]`` or ``[B, L]`` framed window features (``L >= n + 2``; the live
        path pads tokens with PAD beyond ``n + 2``), shared by the batch's items (a window's
        features; the first item's are used). Live: the layer's dtype, with autograd.
        Store: ``dtype`` (bf16), no autograd, a view of a reused buffer, ``L == n + 2``.
        ``check=False``: ``ref_rows`` are trusted (panel rows; in store mode rows of
        ``reference_rows``), no host synchronisation (module doc).
        """
        if ref_rows.dim() != 2:
            raise ValueError(f"ref_rows must be [B, K], got shape {tuple(ref_rows.shape)}")
        if self.mode == "live":
            return self._encode_live(window_idx, ref_rows, embedding_layer, pos, af, check)
        if not self.host_store:
            if self._snapshot is None:
                self.refresh(embedding_layer)  # as with the host store: first use freezes the layer
            with torch.no_grad():
                out = self._encode_live(window_idx, ref_rows, self._snapshot, pos, af, check)
            return out.to(self.dtype)
        return self._encode_store(window_idx, ref_rows, embedding_layer, pos, af, check)

    # ------------------------------------------------------------------ live
    def _encode_live(self, window_idx, ref_rows, layer, pos, af, check=True):
        b, k = ref_rows.shape
        sl = self.layout.sites(window_idx)
        n = sl.stop - sl.start
        length = pos.shape[-1]
        if length < n + 2:
            raise ValueError(f"pos/af have L={length} but window {window_idx} frames to {n + 2} tokens")
        dev = _layer_device(layer)
        p0 = (pos if pos.dim() == 1 else pos[0]).to(dev)
        a0 = (af if af.dim() == 1 else af[0]).to(dev)
        r = b * k
        per_site = _is_per_site(layer) if self.per_site is None else self.per_site
        if per_site:
            # A complete reference holds only ALLELE_0/ALLELE_1 at its sites and the window's
            # pos/af are shared by its items, so the layer runs on the two constant sequences
            # [2, L] and each row is a per-site select: O(L*D) layer work, gradients intact.
            toks = torch.full((2, length), PAD, dtype=torch.int64)
            toks[0, 1 : n + 1], toks[1, 1 : n + 1] = ALLELE_0, ALLELE_1
            toks[:, 0], toks[:, n + 1] = SOS, EOS
            table = layer(toks.to(dev), p0[None].expand(2, length), a0[None].expand(2, length))
            if check:
                rows = ref_rows.reshape(-1).cpu().numpy().astype(np.int64)
                alt = torch.zeros(r, length, dtype=torch.bool)
                alt[:, 1 : n + 1] = torch.from_numpy(
                    np.ascontiguousarray(self.panel.haplotypes[rows, sl])
                ).bool()
                alt = alt.to(dev, non_blocking=True)
            else:  # rows stay on the device: alleles unpacked from the window's bits there
                from .ops.hamming import unpack_bits

                words = self._window_bits(window_idx, dev)[ref_rows.reshape(-1).to(dev)]
                alt = torch.zeros(r, length, dtype=torch.bool, device=dev)
                alt[:, 1 : n + 1] = unpack_bits(words, n).bool()
            out = torch.where(alt[..., None], table[1], table[0])
        else:
            # Any layer: embed each distinct row once, then expand (gradients accumulate per use).
            rows = ref_rows.reshape(-1).cpu().numpy().astype(np.int64)
            uniq, inv = np.unique(rows, return_inverse=True)
            tokens = torch.from_numpy(frame_tokens(self.panel.haplotypes[uniq, sl]))
            if length > n + 2:
                tokens = torch.nn.functional.pad(tokens, (0, length - n - 2), value=PAD)
            u = tokens.shape[0]
            emb = layer(
                tokens.to(dev, non_blocking=True), p0[None].expand(u, length), a0[None].expand(u, length)
            )
            out = emb[torch.from_numpy(inv.reshape(-1)).to(dev)]
        return out.reshape(b, k, length, out.shape[-1]).to(self.device)

    # ------------------------------------------------------------------ store
    def refresh(self, embedding_layer: torch.nn.Module) -> None:
        """Freeze a snapshot of the embedding and drop every encoded window (re-encoded lazily).

        Called every ``refresh_every`` epochs by the trainer; in live mode there is nothing to
        refresh (the live layer is used at each call).
        """
        self._snapshot = copy.deepcopy(embedding_layer).eval().requires_grad_(False)
        self._store.clear()

    def window_store(self, window_idx: int, pos: torch.Tensor, af: torch.Tensor) -> torch.Tensor:
        """Host store of a window, ``[N, n + 2, D]`` (encoded on first use, LRU-tracked)."""
        t = self._store.get(window_idx)
        if t is not None:
            self._store.move_to_end(window_idx)
            return t
        if self._snapshot is None:
            raise RuntimeError(
                "ReferenceEmbeddings(mode='store') has no embedding: call refresh(layer) first"
            )
        t = self._build(window_idx, pos, af)
        self._store[window_idx] = t
        self.n_built += 1
        return t

    @torch.no_grad()
    def _build(self, window_idx: int, pos: torch.Tensor, af: torch.Tensor) -> torch.Tensor:
        layer = self._snapshot
        dev = _layer_device(layer)
        sl = self.layout.sites(window_idx)
        length = sl.stop - sl.start + 2
        pos = (pos if pos.dim() == 1 else pos[0])[:length].to(dev, torch.float32)
        af = (af if af.dim() == 1 else af[0])[:length].to(dev, torch.float32)
        per_site = _is_per_site(layer) if self.per_site is None else self.per_site
        table = None
        if per_site:
            # f_l(t) for every token t at every site: [V, L, D] -> [L, V, D] (the embed_flatten table).
            toks = torch.arange(VOCAB_SIZE, device=dev)[:, None].expand(VOCAB_SIZE, length)
            table = self._embed(layer, toks, pos, af).transpose(0, 1).contiguous()
            dims = table.shape[-1]
        else:
            dims = self._embed(layer, torch.full((1, length), PAD, device=dev), pos, af).shape[-1]
        need = self.window_nbytes(window_idx, dims)
        if need > self.max_bytes:
            raise InputError(
                None,
                f"window {window_idx}: {self.reference_rows.size} references x {length} tokens x {dims} dims"
                f" in {self.dtype} need {need:,} bytes, over the store budget max_bytes={self.max_bytes:,}",
                f"raise max_bytes to at least {need:,}, use fewer references or shorter windows, or use"
                " mode='live' (encodes only the retrieved rows)",
            )
        while self._store and self.nbytes + need > self.max_bytes:
            self._store.popitem(last=False)
            self.n_evicted += 1
        store = torch.empty((self.reference_rows.size, length, dims), dtype=self.dtype, pin_memory=self.pin)
        alleles = self.panel.haplotypes[self.reference_rows, sl]
        for s in range(0, alleles.shape[0], self.chunk_rows):
            tokens = torch.from_numpy(frame_tokens(alleles[s : s + self.chunk_rows])).to(dev)
            if table is not None:
                # CUDA: the fused Triton lookup. CPU: the op's own torch path, called directly
                # (same result, without the custom-op dispatch that costs seconds on first use).
                from .ops.embed_flatten import embed_flatten, embed_flatten_reference

                fn = embed_flatten if tokens.is_cuda else embed_flatten_reference
                x = fn(tokens, site_table=table, out_dtype=self.dtype)
            else:
                x = self._embed(layer, tokens, pos, af).to(self.dtype)
            store[s : s + x.shape[0]].copy_(x)
        return store

    @staticmethod
    def _embed(layer, tokens, pos, af):
        n, length = tokens.shape
        with torch.autocast(device_type=tokens.device.type, enabled=False):
            return layer(tokens, pos[None].expand(n, length), af[None].expand(n, length))

    def _out_buffer(self, r: int, length: int, dims: int) -> torch.Tensor:
        """A contiguous ``[r, length, D]`` view of the next buffer in turn (grown only when too small)."""
        need = r * length * dims
        slot = self._next_buf
        self._next_buf = (slot + 1) % self.n_buffers
        buf = self._bufs[slot]
        if buf is None or buf.numel() < need:
            max_len = int(self.layout.lengths.max())
            size = max(need, max(self.max_rows, r) * max_len * dims)
            buf = self._bufs[slot] = torch.empty(size, dtype=self.dtype, device=self.device)
        return buf[:need].view(r, length, dims)

    def _encode_store(self, window_idx, ref_rows, layer, pos, af, check=True):
        if self._snapshot is None:
            self.refresh(layer)  # first use without an explicit refresh: freeze the layer as it is now
        b, k = ref_rows.shape
        sl = self.layout.sites(window_idx)
        length = sl.stop - sl.start + 2
        if pos is not None and pos.shape[-1] != length:
            raise ValueError(
                f"the store holds window {window_idx} at its own length {length}, but L={pos.shape[-1]} was"
                " asked (mixed-window batch); use window-grouped batches or mode='live'"
            )
        src = self.window_store(window_idx, pos, af)
        from .ops.gather import gather_rows

        if check:
            idx = torch.from_numpy(self._internal(ref_rows)).to(self.device)
        else:  # trusted rows: mapped on the device, gathered without the range-check read-back
            if self._row_to_ref_dev is None:
                self._row_to_ref_dev = torch.from_numpy(self._row_to_ref).to(self.device)
            idx = self._row_to_ref_dev[ref_rows.reshape(-1).to(self.device)]
        out = self._out_buffer(b * k, length, src.shape[-1])
        gather_rows(src, idx, out=out, check=check)
        return out.view(b, k, length, src.shape[-1])
