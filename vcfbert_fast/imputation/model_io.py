"""The checkpoint's model and the tables it was trained with: frequencies, windows, population AF."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, InputError
from ..frequencies import population_af_rows


def load_model(model_path: str, panel, device: torch.device):
    """(model in eval mode, checkpoint state); refuses a checkpoint of another panel layout."""
    from ..checkpoint import load_checkpoint, read_checkpoint
    from ..model import BERTFoundationModel, BERTWithEmbeddingRAG, ModelConfig

    state = read_checkpoint(model_path)
    try:  # read_checkpoint bounded the config; what ModelConfig still refuses is a one-line error too
        config = ModelConfig.from_dict(dict(state["model_config"]))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            model_path, f"model_config: {exc}", "use a checkpoint written by `vcfbert-fast train`"
        ) from None
    model = BERTFoundationModel(BERTWithEmbeddingRAG.from_config(config))
    state = load_checkpoint(model_path, model=model, panel=panel)
    return model.to(device).eval(), state


@dataclass
class ModelTables:
    """Per-site tables the model reads at imputation, as at training.

    ``freqs``: frequencies of the checkpoint's training samples. ``layout``: its windows, with
    ``overlap``; ``central[m]`` the window whose prediction site ``m`` keeps. ``pop_af``:
    ``(table [P + 1, M], rows [S])`` per target sample, or None (global AF); ``af_p_note`` says
    which. ``k``: references per haplotype (0: plain BERT).
    """

    freqs: Any
    layout: Any
    central: np.ndarray
    pop_af: tuple[np.ndarray, np.ndarray] | None
    af_p_note: str
    k: int
    engine: str = "hamming"
    group: int = 4
    seed: int = 0


def _target_population_af(freqs, panel_file: str | None, samples: list[str]):
    """``(table, rows)`` of population AF per target sample, or None; and a note saying which.

    The populations come from the panel file when it names the target samples; anyone else
    reads the global AF (``frequencies.population_af_rows``).
    """
    if panel_file is None or getattr(freqs, "pop_af", None) is None or not len(freqs.populations):
        return None, "global AF (no population AF in the model's panel)"
    from ..io import read_panel_file

    try:
        pops, _ = read_panel_file(panel_file, samples)
    except InputError:
        return None, "global AF (target samples not in the panel file)"
    table, rows, n_fallback = population_af_rows(freqs, pops)
    return (table, rows), f"population AF of {len(samples) - n_fallback} samples"


def model_tables(
    panel, state: dict, samples: list[str], panel_file: str | None, overlap: int | None
) -> ModelTables:
    """Frequencies, windows (``overlap`` default: the checkpoint's, else a quarter window) and af_p."""
    from ..frequencies import compute_frequencies
    from ..windows import WindowLayout, make_windows

    train_samples = state.get("train_samples")
    freqs = compute_frequencies(panel, np.asarray(train_samples) if train_samples else None)
    ck_layout = WindowLayout.from_dict(state["window_layout"])
    if overlap is None:
        overlap = ck_layout.overlap if ck_layout.overlap > 0 else ck_layout.max_sites // 4
    layout = make_windows(panel.n_sites, ck_layout.max_sites, overlap)  # too large: refused, never clipped
    pop_af, note = _target_population_af(freqs, panel_file, samples)
    tc = dict(state.get("train_config") or {})
    k = int(tc.get("k", 0))
    return ModelTables(
        freqs,
        layout,
        layout.central_window_of_site(),
        pop_af,
        note,
        k,
        engine=str(tc.get("engine", "hamming")),
        group=int(tc.get("pbwt_group", 4)),
        seed=int(tc.get("seed", 0)),
    )


def vote_tables(panel, k: int = 32, group: int = 4, max_sites: int = 256) -> ModelTables:
    """``impute --model vote``: no checkpoint; frequencies of the whole panel, windows without overlap
    (the vote is per site, so windows only bound the work in flight)."""
    from ..frequencies import compute_frequencies
    from ..windows import make_windows

    layout = make_windows(panel.n_sites, max_sites, 0)
    freqs = compute_frequencies(panel)
    return ModelTables(freqs, layout, layout.central_window_of_site(), None, "unused (vote)", k, "pbwt", group, 0)
