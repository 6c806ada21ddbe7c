"""Training items, their collate function and window-grouped (distributed) batch samplers.

Stale masks are impossible by construction: a mask is a pure function of
``(seed, epoch, window)`` and the *epoch travels inside each index*. The samplers
yield batches of ``(epoch, item)`` pairs read from the main process's epoch at the
moment a loader iterator starts, so a persistent DataLoader worker, whose copy of the
dataset never sees ``set_epoch``, still builds the current epoch's mask. A plain int
index uses ``dataset.epoch`` and is refused inside DataLoader workers for that reason.

Item ``i`` (window-major) is window ``i // n_samples`` of sample ``sample_indices[i % n_samples]``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from .errors import InputError, VcfBertError
from .frequencies import population_af_rows
from .masking import MaskSchedule
from .vocab import PAD
from .windows import SITE_FEATURES, WindowLayout, frame_features, frame_labels, frame_tokens, window_features

FEATURE_KEYS = ("pos", "af", "af_p", "ref", "het", "hom")


def _site_array(freqs: Any, name: str, n_sites: int) -> np.ndarray:
    v = getattr(freqs, name, None)
    if v is None:
        raise InputError(
            None, f"site frequencies lack '{name}'", "build them with compute_frequencies(panel)"
        )
    v = np.asarray(v, dtype=np.float32).reshape(-1)
    if v.shape[0] != n_sites:
        raise InputError(
            None,
            f"site frequencies '{name}' cover {v.shape[0]} sites but the panel has {n_sites}",
            "recompute frequencies from this panel",
        )
    return v


class EmbeddingRAGDataset(torch.utils.data.Dataset):
    """One item per (window, sample): both haplotypes, masked, with labels and per-site features.

    ``freqs`` needs ``af, ref, het, hom`` (float [M]) and optionally ``pop_af`` [P, M] with
    ``populations`` [P] names matched against ``panel.populations``; ``pop_af`` overrides it
    with one row per entry of ``sample_indices``. Samples whose population has no row get the
    global AF as ``af_p`` (counted in ``n_af_p_fallback``). ``seed`` is used only when no
    ``mask_schedule`` is given.
    """

    def __init__(
        self,
        panel: Any,
        freqs: Any,
        layout: WindowLayout,
        sample_indices: Sequence[int] | np.ndarray | None = None,
        *,
        seed: int = 0,
        epoch: int = 0,
        mask_schedule: MaskSchedule | None = None,
        pop_af: np.ndarray | None = None,
    ):
        haps = np.asarray(panel.haplotypes)
        n_hap, n_sites = haps.shape
        if n_hap % 2 or n_hap == 0:
            raise InputError(
                panel.path, f"{n_hap} haplotype rows (need two per sample)", "pass a diploid panel"
            )
        if layout.n_sites != n_sites:
            raise InputError(
                panel.path,
                f"window layout covers {layout.n_sites} sites but the panel has {n_sites}",
                "rebuild the windows with make_windows(panel.n_sites, ...)",
            )
        n_panel_samples = n_hap // 2
        if sample_indices is None:
            sample_indices = np.arange(n_panel_samples)
        idx = np.asarray(sample_indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            raise InputError(
                panel.path, "no samples selected for the dataset", "pass at least one sample index"
            )
        if idx.min() < 0 or idx.max() >= n_panel_samples:
            raise InputError(
                panel.path,
                f"sample indices out of range [0, {n_panel_samples})",
                "index samples of this panel",
            )
        if np.unique(idx).size != idx.size:
            raise InputError(panel.path, "duplicate sample indices", "list each sample once")

        self.panel = panel
        self.haplotypes = haps
        self.layout = layout
        self.sample_indices = idx
        self.n_windows = len(layout)
        self.n_samples = int(idx.size)
        self.mask_schedule = mask_schedule if mask_schedule is not None else MaskSchedule(seed=int(seed))
        self.seed = int(self.mask_schedule.seed)
        self.epoch = int(epoch)
        self.retriever = None

        self.af = _site_array(freqs, "af", n_sites)
        for name in SITE_FEATURES:
            _site_array(freqs, name, n_sites)  # clear errors before any window is framed
        # Per-window framed features, computed once (they do not depend on the sample).
        self._features: list[dict[str, torch.Tensor]] = [
            {
                k: torch.from_numpy(v)
                for k, v in window_features(panel.positions, freqs, layout.sites(w)).items()
            }
            for w in range(self.n_windows)
        ]
        self._af_p_table, self._af_p_row, self.n_af_p_fallback = self._population_af(panel, freqs, pop_af)

    # ----------------------------------------------------------------- set-up helpers
    def _population_af(self, panel: Any, freqs: Any, pop_af: np.ndarray | None):
        """(table [R, M] float32, row per dataset sample [S'], number of samples on global AF)."""
        n_sites = self.af.shape[0]
        if pop_af is not None:
            table = np.asarray(pop_af, dtype=np.float32)
            if table.shape != (self.n_samples, n_sites):
                raise InputError(
                    None,
                    f"pop_af has shape {table.shape}, expected ({self.n_samples}, {n_sites})",
                    "pass one population-AF row per selected sample",
                )
            return table, np.arange(self.n_samples, dtype=np.int64), 0
        fp = getattr(freqs, "pop_af", None)
        names = getattr(freqs, "populations", None)
        if fp is not None and names is not None and np.shape(fp) != (len(names), n_sites):
            raise InputError(
                None,
                f"pop_af has shape {np.shape(fp)}, expected ({len(names)}, {n_sites})",
                "recompute frequencies from this panel",
            )
        labels = getattr(panel, "populations", None)
        labels = [""] * self.n_samples if labels is None else np.asarray(labels)[self.sample_indices]
        return population_af_rows(freqs, labels)

    # ----------------------------------------------------------------- epochs and masks
    def set_epoch(self, epoch: int) -> None:
        """Set the epoch used by plain int indices and by samplers bound to this dataset."""
        if int(epoch) < 0:
            raise InputError(None, f"epoch={epoch} must be >= 0", "count epochs from 0")
        self.epoch = int(epoch)

    def site_mask(self, window_idx: int, epoch: int | None = None) -> np.ndarray:
        """The window's training mask over its sites, bool [n] (read-only, cached)."""
        e = self.epoch if epoch is None else int(epoch)
        sl = self.layout.sites(window_idx)
        if self.mask_schedule.mode == "chromosome":
            return self.mask_schedule.chromosome_mask(e, self.af)[sl]
        return self.mask_schedule.mask(e, int(window_idx), self.af[sl])

    def typed_sites(self, epoch: int | None = None) -> np.ndarray:
        """Chromosome mode: indices of the epoch's typed (unmasked) sites over the whole panel."""
        e = self.epoch if epoch is None else int(epoch)
        return np.flatnonzero(~self.mask_schedule.chromosome_mask(e, self.af))

    def token_mask(self, window_idx: int, epoch: int | None = None) -> torch.Tensor:
        """The mask framed like the tokens, bool [n + 2] (False at SOS/EOS)."""
        m = self.site_mask(window_idx, epoch)
        out = torch.zeros(m.shape[0] + 2, dtype=torch.bool)
        out[1:-1] = torch.from_numpy(m.copy())
        return out

    def window_features(self, window_idx: int) -> dict[str, torch.Tensor]:
        """Framed ``pos, af, ref, het, hom`` of a window, float32 [n + 2] each (copies)."""
        return {k: v.clone() for k, v in self._features[window_idx].items()}

    # ----------------------------------------------------------------- panel views for retrieval
    def window_tokens(
        self,
        window_idx: int,
        haplotype_rows: Sequence[int] | np.ndarray | None = None,
        masked: bool = True,
        epoch: int | None = None,
    ) -> torch.Tensor:
        """The panel's search view of a window: framed tokens int64 [N, n + 2].

        Rows are panel haplotype rows (all ``2S`` by default). ``masked`` applies the same
        (epoch, window) mask the queries carry.
        """
        sl = self.layout.sites(window_idx)
        rows = slice(None) if haplotype_rows is None else np.asarray(haplotype_rows, dtype=np.int64)
        alleles = self.haplotypes[rows, sl]
        mask = self.site_mask(window_idx, epoch) if masked else None
        return torch.from_numpy(frame_tokens(alleles, mask))

    def reference_tokens(self, window_idx: int, rows: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Complete (unmasked) framed tokens of panel haplotype ``rows``, int64 [R, n + 2]."""
        return self.window_tokens(window_idx, rows, masked=False)

    def refresh_embeddings(self, embedding_layer: torch.nn.Module, device: Any = None) -> Any:
        """Drop-in name from the original code: delegates to ``self.retriever``."""
        if self.retriever is None:
            raise VcfBertError(
                "EmbeddingRAGDataset.refresh_embeddings: no retriever attached; "
                "set dataset.retriever = make_retriever(...) first"
            )
        return self.retriever.refresh_embeddings(embedding_layer, device=device)

    # ----------------------------------------------------------------- items
    def __len__(self) -> int:
        return self.n_windows * self.n_samples

    def _resolve(self, index: Any) -> tuple[int, int]:
        if isinstance(index, (tuple, list)):
            if len(index) != 2:
                raise IndexError(f"index {index!r}: expected an int or an (epoch, item) pair")
            epoch, item = int(index[0]), int(index[1])
        else:
            if torch.utils.data.get_worker_info() is not None:
                raise VcfBertError(
                    "EmbeddingRAGDataset got a plain int index inside a DataLoader worker, whose "
                    "dataset.epoch may be stale; use WindowGroupedBatchSampler(dataset, ...) as the "
                    "loader's batch_sampler (shuffle=False for evaluation): it passes (epoch, item) pairs"
                )
            epoch, item = self.epoch, int(index)
        if not 0 <= item < len(self):
            raise IndexError(f"item {item} out of range for a dataset of {len(self)}")
        if epoch < 0:
            raise IndexError(f"epoch {epoch} must be >= 0")
        return epoch, item

    def __getitem__(self, index: Any) -> dict[str, torch.Tensor]:
        epoch, item = self._resolve(index)
        w, j = divmod(item, self.n_samples)
        return _unbind(self._build_batch(epoch, w, np.array([j], dtype=np.int64)))[0]

    def __getitems__(self, indices: Sequence[Any]) -> list[dict[str, torch.Tensor]]:
        """Batched fetch used by DataLoader: items of one (epoch, window) are built together.

        A single-window batch comes back as a lazy sequence holding the stacked tensors, so
        ``embedding_rag_collate_fn`` returns them without building items or copying.
        """
        resolved = [self._resolve(i) for i in indices]
        groups: dict[tuple[int, int], list[int]] = {}
        for pos, (epoch, item) in enumerate(resolved):
            groups.setdefault((epoch, item // self.n_samples), []).append(pos)
        if len(groups) == 1:
            (epoch, w), _ = groups.popitem()
            js = np.array([item % self.n_samples for _, item in resolved], dtype=np.int64)
            return _BatchItems(self._build_batch(epoch, w, js), len(js))  # type: ignore[return-value]
        out: list[dict[str, torch.Tensor] | None] = [None] * len(resolved)
        for (epoch, w), positions in groups.items():
            js = np.array([resolved[p][1] % self.n_samples for p in positions], dtype=np.int64)
            for p, it in zip(positions, _unbind(self._build_batch(epoch, w, js))):
                out[p] = it
        return out  # type: ignore[return-value]

    def _build_batch(self, epoch: int, w: int, js: np.ndarray) -> dict[str, torch.Tensor]:
        """Stacked, contiguous item tensors ``[B, ...]`` of window ``w`` for dataset-local samples ``js``."""
        sl = self.layout.sites(w)
        samples = self.sample_indices[js]
        b = len(js)
        # [2, B, n]: haplotype-major so that hap_1 / hap_2 (and their labels) are contiguous blocks.
        rows = np.stack([2 * samples, 2 * samples + 1], axis=0).reshape(-1)
        alleles = self.haplotypes[rows, sl].reshape(2, b, -1)
        site_mask = self.site_mask(w, epoch)
        tokens = torch.from_numpy(frame_tokens(alleles, site_mask))  # [2, B, L]
        labels = frame_labels(alleles)  # [2, B, L]
        h1, h2 = labels[0], labels[1]
        gt = np.where((h1 >= 0) & (h2 >= 0), 2 * h1 + h2, -100)
        length = tokens.shape[-1]
        mask = torch.zeros(length, dtype=torch.bool)
        mask[1:-1] = torch.from_numpy(site_mask.copy())
        batch = {
            "hap_1": tokens[0],
            "hap_2": tokens[1],
            "hap_1_label": torch.from_numpy(h1),
            "hap_2_label": torch.from_numpy(h2),
            "gt_label": torch.from_numpy(gt),
        }
        for k in FEATURE_KEYS:
            if k == "af_p":
                batch[k] = torch.from_numpy(frame_features(self._af_p_table[self._af_p_row[js], sl]))
            else:
                batch[k] = self._features[w][k].expand(b, length).clone()
        batch["mask"] = mask.expand(b, length).clone()
        batch["window_idx"] = torch.full((b,), w, dtype=torch.int64)
        batch["sample_idx"] = torch.from_numpy(samples.astype(np.int64))
        return batch

    def __getstate__(self) -> dict[str, Any]:
        # Workers never retrieve; do not ship a retriever (maybe holding CUDA tensors) to them.
        state = self.__dict__.copy()
        state["retriever"] = None
        return state


def _unbind(batch: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """Per-item dicts of row views (``unbind``: one C++ call per key)."""
    rows = [t.unbind(0) for t in batch.values()]
    return [dict(zip(batch.keys(), vals)) for vals in zip(*rows)]


class _BatchItems(Sequence):
    """Items of one window-grouped fetch, kept as the stacked tensors they would be views of.

    Items are materialised (as row views) only if someone indexes or iterates; until then
    ``embedding_rag_collate_fn`` hands the stacked tensors over without any copy.
    """

    def __init__(self, batch: dict[str, torch.Tensor], n: int):
        self.batch = batch
        self._n = n
        self._items: list[dict[str, torch.Tensor]] | None = None

    @property
    def materialised(self) -> bool:
        return self._items is not None

    def _all(self) -> list[dict[str, torch.Tensor]]:
        if self._items is None:
            self._items = _unbind(self.batch)
        return self._items

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        return self._all()[i]

    def __iter__(self):
        return iter(self._all())


# --------------------------------------------------------------------------- collate
_PAD_VALUES = {"hap_1": PAD, "hap_2": PAD, "hap_1_label": -100, "hap_2_label": -100, "gt_label": -100}


def _pad_value(key: str, t: torch.Tensor) -> float | int | bool:
    if key in _PAD_VALUES:
        return _PAD_VALUES[key]
    if key.endswith("_label"):
        return -100
    if t.dtype == torch.bool:
        return False
    return 0


def embedding_rag_collate_fn(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack items into ``[B, ...]``.

    Items of one window share their length and are just stacked (no ``attention_mask``
    key: no key padding mask is needed). Items of different lengths are padded at the end
    (tokens PAD, labels -100, features 0, mask False) and ``attention_mask`` bool [B, L]
    (True = real token) is added.
    """
    if len(items) == 0:
        raise VcfBertError("embedding_rag_collate_fn: empty batch")
    if isinstance(items, _BatchItems) and not items.materialised:
        return dict(items.batch)  # stacked by the dataset and untouched since: zero-copy
    keys = list(items[0].keys())
    lengths = [int(it["hap_1"].shape[-1]) for it in items] if "hap_1" in items[0] else None
    ragged = lengths is not None and len(set(lengths)) > 1
    out: dict[str, Any] = {}
    for k in keys:
        vals = [it[k] for it in items]
        if not isinstance(vals[0], torch.Tensor):
            out[k] = torch.utils.data.default_collate(vals)
            continue
        if not ragged or vals[0].dim() == 0:
            out[k] = torch.stack(vals)
            continue
        if vals[0].dim() != 1:
            raise VcfBertError(
                f"embedding_rag_collate_fn: cannot pad key '{k}' of shape {tuple(vals[0].shape)}"
            )
        width = max(lengths)  # type: ignore[arg-type]
        batch = torch.full((len(vals), width), _pad_value(k, vals[0]), dtype=vals[0].dtype)
        for i, v in enumerate(vals):
            batch[i, : v.shape[0]] = v
        out[k] = batch
    if ragged:
        lens = torch.tensor(lengths)
        out["attention_mask"] = torch.arange(max(lengths))[None, :] < lens[:, None]
    return out


# --------------------------------------------------------------------------- samplers
class WindowGroupedBatchSampler(torch.utils.data.Sampler):
    """Batches that never mix windows, so every batch has one length and needs no padding.

    ``data`` is an ``EmbeddingRAGDataset`` (or anything with ``n_windows``/``n_samples``) or
    a pair ``(n_windows, n_samples)``. Per epoch, deterministically from ``(seed, epoch)``:
    the window order and each window's sample order are shuffled (``shuffle=True``); a
    window's batches are consecutive unless ``interleave=True`` shuffles all batches.
    ``drop_last`` drops each window's final short batch.

    Bound to a dataset (with ``set_epoch``), the dataset's epoch is the single source of
    truth: ``sampler.set_epoch(e)`` and ``dataset.set_epoch(e)`` are the same thing. Batches
    hold ``(epoch, item)`` pairs (``with_epoch=False``: plain item ints).
    """

    def __init__(
        self,
        data: Any,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        *,
        interleave: bool = False,
        with_epoch: bool = True,
    ):
        if isinstance(data, (tuple, list)):
            n_windows, n_samples = (int(x) for x in data)
            self._dataset = None
        else:
            n_windows, n_samples = int(data.n_windows), int(data.n_samples)
            self._dataset = data if hasattr(data, "set_epoch") and hasattr(data, "epoch") else None
        if batch_size < 1:
            raise InputError(None, f"batch_size={batch_size} must be >= 1", "pass a positive batch size")
        if n_windows < 1 or n_samples < 1:
            raise InputError(None, f"{n_windows} windows x {n_samples} samples: nothing to sample", "")
        self.n_windows, self.n_samples = n_windows, n_samples
        self.batch_size = int(batch_size)
        self.shuffle, self.seed, self.drop_last = bool(shuffle), int(seed), bool(drop_last)
        self.interleave, self.with_epoch = bool(interleave), bool(with_epoch)
        self._epoch = 0
        self.num_replicas, self.rank, self.pad = 1, 0, True

    @property
    def epoch(self) -> int:
        return int(self._dataset.epoch) if self._dataset is not None else self._epoch

    def set_epoch(self, epoch: int) -> None:
        if int(epoch) < 0:
            raise InputError(None, f"epoch={epoch} must be >= 0", "count epochs from 0")
        if self._dataset is not None:
            self._dataset.set_epoch(int(epoch))
        else:
            self._epoch = int(epoch)

    def _per_rank(self) -> int:
        r = self.num_replicas
        return -(-self.n_samples // r) if self.pad else self.n_samples // r

    def __len__(self) -> int:
        per = self._per_rank()
        per_window = per // self.batch_size if self.drop_last else -(-per // self.batch_size)
        return self.n_windows * per_window

    def batches(self, epoch: int) -> list[tuple[int, np.ndarray]]:
        """This rank's batches for ``epoch`` as (window, dataset-local sample indices)."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        order = rng.permutation(self.n_windows) if self.shuffle else np.arange(self.n_windows)
        r, per = self.num_replicas, self._per_rank()
        out: list[tuple[int, np.ndarray]] = []
        for w in order:
            perm = rng.permutation(self.n_samples) if self.shuffle else np.arange(self.n_samples)
            # Pad by repeating the permutation's head (or drop its tail) to per * r samples.
            mine = np.resize(perm, per * r)[self.rank :: r]
            for b in range(0, per, self.batch_size):
                chunk = mine[b : b + self.batch_size]
                if self.drop_last and chunk.size < self.batch_size:
                    break
                out.append((int(w), chunk))
        if self.interleave and self.shuffle:
            out = [out[i] for i in rng.permutation(len(out))]
        return out

    def __iter__(self) -> Iterator[list]:
        epoch = self.epoch  # read now, in the main process, when the loader iterator starts
        batches = self.batches(epoch)
        return self._emit(epoch, batches)

    def _emit(self, epoch: int, batches: list[tuple[int, np.ndarray]]) -> Iterator[list]:
        for w, chunk in batches:
            items = (w * self.n_samples + chunk).tolist()
            yield [(epoch, i) for i in items] if self.with_epoch else items


class DistributedWindowGroupedBatchSampler(WindowGroupedBatchSampler):
    """``WindowGroupedBatchSampler`` sharded over ranks.

    All ranks draw the same window and sample orders from ``(seed, epoch)``; rank ``r`` takes
    every ``num_replicas``-th sample of each window's permutation, so ranks see disjoint
    samples and process the same window at the same step. Every rank gets the same number of
    batches: with ``pad=True`` (default, like ``DistributedSampler``) a window's permutation is
    extended by repeating its head to a multiple of ``num_replicas`` (at most
    ``num_replicas - 1`` samples per window are seen twice; nothing is skipped); with
    ``pad=False`` its tail is dropped instead (fewer than ``num_replicas`` samples per window
    are skipped this epoch; shards strictly disjoint). Defaults come from
    ``torch.distributed`` when initialised, else a single replica.
    """

    def __init__(
        self,
        data: Any,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        *,
        num_replicas: int | None = None,
        rank: int | None = None,
        pad: bool = True,
        interleave: bool = False,
        with_epoch: bool = True,
    ):
        super().__init__(
            data, batch_size, shuffle, seed, drop_last, interleave=interleave, with_epoch=with_epoch
        )
        dist = torch.distributed
        initialised = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if initialised else 1
        if rank is None:
            rank = dist.get_rank() if initialised else 0
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise InputError(
                None, f"rank={rank} with num_replicas={num_replicas}", "need 0 <= rank < num_replicas"
            )
        self.num_replicas, self.rank, self.pad = int(num_replicas), int(rank), bool(pad)


def items_per_epoch(sampler: WindowGroupedBatchSampler) -> int:
    """Items one rank sees per epoch (for progress bars / learning-rate schedules)."""
    per = sampler._per_rank()
    if sampler.drop_last:
        per = (per // sampler.batch_size) * sampler.batch_size
    return sampler.n_windows * per


__all__ = [
    "FEATURE_KEYS",
    "DistributedWindowGroupedBatchSampler",
    "EmbeddingRAGDataset",
    "WindowGroupedBatchSampler",
    "embedding_rag_collate_fn",
    "items_per_epoch",
]
