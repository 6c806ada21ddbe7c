"""Atomic, ``weights_only``-safe checkpoints that refuse to load into the wrong model, vocab or panel.

A checkpoint is a plain dict of tensors and Python scalars/containers, so
``torch.load(path, weights_only=True)`` reads it and no pickled code ever runs.
The seed code's checkpoints could "load" into a mismatched model and silently
keep random weights; :func:`load_checkpoint` names every mismatch instead.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .calibration import check_calibration
from .errors import CheckpointError, shown_names

FORMAT = "vcfbert-fast-checkpoint"
FORMAT_VERSION = 1
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP and torch.compile wrappers


# ----------------------------------------------------------------------------- plain-state helpers


def _check_plain(obj: Any, where: str = "state") -> None:
    """Raise TypeError unless ``obj`` is tensors / plain Python types all the way down."""
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} is {type(k).__name__}, not str/int")
            _check_plain(v, f"{where}[{k!r}]")
        return
    raise TypeError(
        f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}; checkpoints hold only "
        "tensors and plain Python types (convert it, e.g. .tolist() or .to_dict())"
    )


def panel_fingerprint(panel) -> dict:
    """What a model's site layout depends on: site count, ends, contig and a hash of sites + alleles."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(panel.positions, dtype=np.int64).tobytes())
    h.update("\x00".join(map(str, panel.ref)).encode())
    h.update(b"\x01")
    h.update("\x00".join(map(str, panel.alt)).encode())
    n = int(panel.positions.shape[0])
    return {
        "contig": str(panel.contig),
        "n_sites": n,
        "first_position": int(panel.positions[0]) if n else -1,
        "last_position": int(panel.positions[-1]) if n else -1,
        "sites_sha256": h.hexdigest(),
    }


def capture_rng_state() -> dict:
    """torch / CUDA / numpy legacy / python ``random`` RNG states as plain values."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states restored only when the device count matches)."""
    torch.set_rng_state(state["torch"].cpu())
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The bare module under DistributedDataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, torch.nn.Module):
            model = model._orig_mod
        else:
            return model


def model_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict of the unwrapped model, on CPU, without wrapper prefixes."""
    return {_strip(k): v.detach().cpu() for k, v in unwrap_model(model).state_dict().items()}


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _WRAPPER_PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p) :], True
    return key


def model_config_dict(model: torch.nn.Module) -> dict | None:
    """``ModelConfig.to_dict()`` of a model (looked up on the model or its wrapped ``bert``)."""
    m = unwrap_model(model)
    for obj in (m, getattr(m, "bert", None)):
        cfg = getattr(obj, "config", None)
        if cfg is not None and hasattr(cfg, "to_dict"):
            return dict(cfg.to_dict())
    return None


# ----------------------------------------------------------------------------- model config bounds

# What a checkpoint's ``model_config`` may ask for, checked before any model is built, so that a
# shared checkpoint cannot make ``impute`` allocate without bound. ``key: (lowest, highest)``.
MODEL_CONFIG_BOUNDS: dict[str, tuple[int, int]] = {
    "vocab_size": (1, 1024),
    "dims": (2, 4096),
    "n_layers": (1, 64),
    "attn_heads": (1, 4096),
    "ffn_mult": (1, 16),
    "n_af_freqs": (1, 1024),
    "max_len": (1, 1 << 20),
    "n_match_features": (1, 64),
    "prior_hidden": (1, 1024),
}
MAX_MODEL_BYTES = 2 << 30  # parameters and buffers of the model a checkpoint describes


def estimated_model_bytes(cfg: dict) -> int | None:
    """Bytes of the parameters and buffers ``BERTFoundationModel(BERTWithEmbeddingRAG)`` of ``cfg``
    holds (float32; ``model.stored_floats``, counted from the config, nothing built). None when
    ``ModelConfig`` refuses ``cfg`` (not our model)."""
    from .model import ModelConfig, stored_floats

    try:
        config = ModelConfig.from_dict(dict(cfg))
    except (TypeError, ValueError):
        return None
    return 4 * stored_floats(config)


def _with_defaults(cfg: dict) -> dict:
    """A saved ``model_config`` with the keys added since it was written at their defaults (as
    ``ModelConfig.from_dict`` builds it), so an older checkpoint compares equal to its model."""
    from .model import ModelConfig

    try:
        return ModelConfig.from_dict(cfg).to_dict()
    except (TypeError, ValueError):
        return cfg


def check_model_config(path: str, cfg: Any) -> None:
    """Refuse a ``model_config`` out of bounds (:data:`MODEL_CONFIG_BOUNDS`, :data:`MAX_MODEL_BYTES`),
    before anything is allocated; the error names the file and the key. What else ``ModelConfig``
    refuses (e.g. an unknown ``k_pool``) is left to it: ``load_model`` reports that as one line too."""
    from dataclasses import fields

    from .model import ModelConfig

    fix = "this is not a model vcfbert-fast trains; use a checkpoint written by `vcfbert-fast train`"
    if not isinstance(cfg, dict):
        raise CheckpointError(path, f"model_config is a {type(cfg).__name__}, not a dict", fix)
    known = {fl.name for fl in fields(ModelConfig)}
    unknown = sorted(str(k) for k in cfg if k not in known)
    if unknown:
        raise CheckpointError(path, f"model_config has unknown key(s) {shown_names(unknown)}", fix)
    for key, (lo, hi) in MODEL_CONFIG_BOUNDS.items():
        if key not in cfg:
            continue
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, int):
            raise CheckpointError(path, f"model_config {key}={v!r} is not a whole number", fix)
        if not lo <= v <= hi:
            raise CheckpointError(path, f"model_config {key}={v} is out of bounds [{lo}, {hi}]", fix)
    dims, heads = cfg.get("dims"), cfg.get("attn_heads")  # absent: ModelConfig's defaults, checked there
    if (dims is not None and dims % 2) or (dims is not None and heads is not None and dims % heads):
        raise CheckpointError(
            path, f"model_config dims={dims} must be even and divisible by attn_heads={heads}", fix
        )
    size = estimated_model_bytes(cfg)
    if size is not None and size > MAX_MODEL_BYTES:
        raise CheckpointError(
            path,
            f"model_config describes a model of {size / 2**30:.1f} GiB (dims={cfg.get('dims', 512)}, "
            f"n_layers={cfg.get('n_layers', 12)}), above the {MAX_MODEL_BYTES / 2**30:.0f} GiB limit",
            fix,
        )


# ----------------------------------------------------------------------------- save / load


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` atomically: temp file in the same directory, fsync, ``os.replace``.

    A crash mid-write leaves the previous checkpoint intact. ``state`` must hold
    only tensors and plain Python types (checked before anything is written).
    """
    path = Path(path)
    state = dict(state)
    state.setdefault("format", FORMAT)
    state.setdefault("format_version", FORMAT_VERSION)
    _check_plain(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load and sanity-check the dict with ``weights_only=True`` (no code runs); no model needed."""
    path = str(path)
    fix = "pass a checkpoint written by `vcfbert-fast train` (best.pt / last.pt)"
    if not os.path.exists(path):
        raise CheckpointError(path, "no such checkpoint file", fix)
    if not zipfile.is_zipfile(path):  # torch.save has written zip archives since torch 1.6
        raise CheckpointError(path, "not a readable torch checkpoint (not a torch.save zip archive)", fix)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        glob = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        what = glob.group(1) if glob else "a non-tensor object"
        raise CheckpointError(
            path,
            f"refused: holds pickled Python objects ({what}), not only tensors",
            "only load checkpoints from sources you trust; re-save with save_checkpoint",
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(path, f"not a readable torch checkpoint ({type(exc).__name__})", fix) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(path, "not a vcfbert-fast checkpoint (no 'format' marker)", fix)
    if int(state.get("format_version", -1)) > FORMAT_VERSION:
        raise CheckpointError(
            path,
            f"checkpoint format {state['format_version']} is newer than this package's {FORMAT_VERSION}",
            "upgrade vcfbert-fast",
        )
    for key in ("model_state", "model_config", "vocab"):
        if key not in state:
            raise CheckpointError(path, f"not a vcfbert-fast checkpoint (missing '{key}')", fix)
    check_model_config(path, state["model_config"])
    check_calibration(path, state.get("calibration"))  # absent (older checkpoints): the identity
    return state


def load_checkpoint(
    path: str | os.PathLike, model: torch.nn.Module | None = None, panel=None, strict: bool = True
) -> dict:
    """Read a checkpoint, check it against ``model``/``panel``/the vocab, and load the weights.

    Returns the state dict. Raises :class:`CheckpointError` (one line) for: a file
    that is not a vcfbert-fast checkpoint or holds pickled objects, a model config
    that differs from ``model``'s (differing keys named), missing or unexpected
    weight names or shape mismatches (never loads nothing silently), a different
    token vocabulary, and a panel whose site layout or samples (names, order) differ from the training panel.
    With ``strict=False`` only the weight-name check is relaxed, and only if at
    least one tensor loads.
    """
    from .vocab import VOCAB

    state = read_checkpoint(path)
    path = str(path)

    saved_vocab = dict(state["vocab"])
    if saved_vocab != VOCAB:
        diff = sorted(k for k in set(saved_vocab) | set(VOCAB) if saved_vocab.get(k) != VOCAB.get(k))
        raise CheckpointError(
            path,
            f"token vocabulary differs from this package's (tokens {diff})",
            "use the vcfbert-fast version that wrote the checkpoint",
        )

    if panel is not None:
        saved_fp = state.get("panel_fingerprint")
        if saved_fp is None:
            raise CheckpointError(
                path, "checkpoint records no panel fingerprint", "retrain with vcfbert-fast train"
            )
        fp = panel_fingerprint(panel)
        if fp != saved_fp:
            diff = [k for k in fp if fp[k] != saved_fp.get(k)]
            raise CheckpointError(
                path,
                f"trained on a different panel layout (differs in {', '.join(diff)}: "
                f"checkpoint {saved_fp['contig']}:{saved_fp['first_position']}-"
                f"{saved_fp['last_position']} {saved_fp['n_sites']} sites, panel "
                f"{fp['contig']}:{fp['first_position']}-{fp['last_position']} {fp['n_sites']} sites)",
                "use the reference panel the model was trained on, or retrain",
            )
        _check_panel_samples(path, state, panel)

    if model is not None:
        cfg = model_config_dict(model)
        saved_cfg = _with_defaults(dict(state["model_config"]))
        if cfg is not None and cfg != saved_cfg:
            diff = sorted(
                k for k in set(cfg) | set(saved_cfg) if cfg.get(k, "<absent>") != saved_cfg.get(k, "<absent>")
            )
            shown = ", ".join(
                f"{k}={saved_cfg.get(k, '<absent>')!r} vs {cfg.get(k, '<absent>')!r}" for k in diff
            )
            raise CheckpointError(
                path,
                f"model config mismatch (checkpoint vs model): {shown}",
                "build the model with ModelConfig.from_dict(checkpoint['model_config'])",
            )
        _load_weights(path, unwrap_model(model), state["model_state"], strict)
    return state


def _check_panel_samples(path: str, state: dict, panel) -> None:
    """Refuse a panel whose samples are not the checkpoint's, in the same order.

    The training split (``train_samples``) and the retrieval rows are sample indices: the same
    sites with samples reordered would silently use other samples, fewer samples would index
    past the end. A checkpoint without ``sample_names`` (not written by ``train``) has its
    indices bounds-checked at least.
    """
    fix = "use the reference panel the model was trained on (the same samples in the same order), or retrain"
    names = [str(s) for s in panel.samples]
    saved = state.get("sample_names")
    if saved is not None:
        saved = [str(s) for s in saved]
        if saved == names:
            return
        if len(saved) != len(names):
            problem = f"panel has {len(names)} samples, the checkpoint's panel {len(saved)}"
        elif set(saved) == set(names):
            i = next(i for i, (a, b) in enumerate(zip(saved, names)) if a != b)
            problem = f"panel samples are reordered (sample {i + 1} is {names[i]}, the checkpoint's {saved[i]})"
        else:
            other = [n for n in names if n not in set(saved)]
            problem = f"panel samples differ from the checkpoint's (not in it: {shown_names(other)})"
        raise CheckpointError(path, problem, fix)
    indices = [int(i) for key in ("train_samples", "val_samples") for i in state.get(key) or []]
    if indices and not 0 <= min(indices) <= max(indices) < len(names):
        raise CheckpointError(
            path, f"checkpoint uses sample index {max(indices)}, the panel has {len(names)} samples", fix
        )


def _load_weights(path: str, model: torch.nn.Module, saved: dict, strict: bool) -> None:
    saved = {_strip(k): v for k, v in saved.items()}
    own = model.state_dict()
    missing = sorted(set(own) - set(saved))
    unexpected = sorted(set(saved) - set(own))
    shape_bad = sorted(k for k in set(own) & set(saved) if tuple(own[k].shape) != tuple(saved[k].shape))

    fix = "build the model from the checkpoint's model_config"
    if shape_bad:
        k = shape_bad[0]
        raise CheckpointError(
            path,
            f"{len(shape_bad)} weight shape mismatch(es), e.g. {k}: checkpoint "
            f"{tuple(saved[k].shape)} vs model {tuple(own[k].shape)}",
            fix,
        )
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} weight(s): {shown_names(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} weight(s): {shown_names(unexpected)}")
        raise CheckpointError(path, "; ".join(parts), fix)
    common = set(own) & set(saved)
    if not common:
        raise CheckpointError(path, "no weight in the checkpoint matches the model (would load nothing)", fix)
    model.load_state_dict({k: saved[k] for k in common}, strict=False)
