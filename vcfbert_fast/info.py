"""``vcfbert-fast info``: what this install can do and which path each op takes.

Everything optional is probed inside try blocks, so ``info`` works (and says what is missing) on a
machine without cyvcf2/msprime/faiss (the GPU box) or without a GPU.
"""

from __future__ import annotations

import argparse
import importlib
import json

SEED_CONFIG = {"vocab_size": 7, "dims": 192, "n_layers": 10, "attn_heads": 6}


def _version(module: str) -> str | None:
    try:
        mod = importlib.import_module(module)
    except Exception:  # noqa: BLE001 - absent or broken: reported as missing
        return None
    return str(getattr(mod, "__version__", "unknown version"))


def _faiss() -> dict:
    try:
        import faiss
    except Exception as exc:  # noqa: BLE001
        return {"version": None, "gpu": False, "error": f"{type(exc).__name__}: {exc}"}
    n_gpus = 0
    if hasattr(faiss, "get_num_gpus"):
        try:
            n_gpus = int(faiss.get_num_gpus())
        except Exception:  # noqa: BLE001
            n_gpus = 0
    return {
        "version": getattr(faiss, "__version__", "unknown"),
        "gpu": hasattr(faiss, "StandardGpuResources"),
        "gpus": n_gpus,
    }


def _sdpa_backends() -> dict:
    import torch

    out = {}
    cuda = torch.backends.cuda
    for name in ("flash", "mem_efficient", "math", "cudnn"):
        fn = getattr(cuda, f"{name}_sdp_enabled", None)
        if fn is not None:
            out[name] = bool(fn()) and (name == "math" or torch.cuda.is_available())
    return out


def info() -> dict:
    """Versions, devices, extension status and the live backend of every op, as a plain dict."""
    import torch

    from . import _ext
    from .ops import _cupy_gather, embed_flatten_backend, gather_backend, hamming_backend, pbwt_backend
    from .ops.triton import HAMMING_MAX_K

    cuda_ok = torch.cuda.is_available()
    d: dict = {
        "vcfbert_fast": importlib.import_module("vcfbert_fast").__version__,
        "torch": torch.__version__,
        "cuda_available": cuda_ok,
        "cuda_version": torch.version.cuda,
        "device_name": torch.cuda.get_device_name(0) if cuda_ok else None,
        "triton": _version("triton"),
        "faiss": _faiss(),
        "cyvcf2": _version("cyvcf2"),
        "msprime": _version("msprime"),
        "numpy": _version("numpy"),
        "extension": {"cpu_ops": _ext.HAS_EXT, "cuda_ops": _ext.HAS_CUDA_EXT, "error": _ext.EXT_ERROR},
        "cupy": {"version": _version("cupy"), "gather_usable": _cupy_gather.available()},
        "sdpa_backends": _sdpa_backends(),
    }
    device = "cuda" if cuda_ok else "cpu"
    hamming = hamming_backend(device)
    if hamming == "triton":
        hamming = f"triton (k <= {HAMMING_MAX_K}; torch-reference above)"
    d["op_paths"] = {
        "device": device,
        "gather_rows": gather_backend(device),
        "hamming_topk": hamming,
        "embed_flatten": embed_flatten_backend(device),
    }
    # pbwt_donors and match_runs share one registration and always run on the CPU
    pbwt = pbwt_backend() if device == "cpu" else f"{pbwt_backend()} (on the CPU)"
    d["op_paths"]["pbwt_donors"] = pbwt
    d["op_paths"]["match_runs"] = pbwt
    from .devices import cpu_has_bf16_matmul, inference_dtype

    amx = " (AMX bf16 tiles: bf16 for encode=all models)" if device == "cpu" and cpu_has_bf16_matmul() else ""
    d["op_paths"]["inference_precision"] = (
        "bf16" if inference_dtype(torch.device(device), "auto") is not None else "fp32"
    ) + amx
    return d


def model_parameter_counts() -> dict:
    """Parameter counts of the drop-in models at the seed configuration (dims 192, 10 layers, 6 heads)."""
    try:
        from . import model
    except Exception as exc:  # noqa: BLE001
        return {"error": f"vcfbert_fast.model could not be imported ({type(exc).__name__}: {exc})"}
    counts: dict = {"config": dict(SEED_CONFIG)}
    for name in ("BERTWithEmbeddingRAG", "BERTWithRAG"):
        cls = getattr(model, name, None)
        if cls is None:
            counts[name] = "missing from vcfbert_fast.model"
            continue
        net = cls(
            SEED_CONFIG["vocab_size"],
            dims=SEED_CONFIG["dims"],
            n_layers=SEED_CONFIG["n_layers"],
            attn_heads=SEED_CONFIG["attn_heads"],
            dropout=0.0,
        )
        counts[name] = sum(p.numel() for p in net.parameters())
    return counts


def _print(d: dict, indent: int = 0) -> None:
    for key, value in d.items():
        if isinstance(value, dict):
            print(" " * indent + f"{key}:")
            _print(value, indent + 2)
        else:
            shown = ("none" if key == "error" else "absent") if value is None else value
            print(" " * indent + f"{key}: {shown}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="store_true", help="also print the seed models' parameter counts")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def run(args: argparse.Namespace) -> int:
    d = info()
    if args.model:
        d["model_parameters"] = model_parameter_counts()
    if args.json:
        print(json.dumps(d, indent=2, default=str))
    else:
        _print(d)
    return 0
