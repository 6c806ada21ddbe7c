"""vcfbert-fast: genotype imputation with a retrieval-augmented BERT (Embedding RAG, V18).

Public names are imported lazily so that ``import vcfbert_fast`` stays cheap and
works where optional dependencies (cyvcf2, faiss, msprime, triton) are absent.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"  # the one version source (pyproject.toml reads it; `vcfbert-fast --version`)

_LAZY = {
    # model (drop-in names)
    "BERTWithEmbeddingRAG": "vcfbert_fast.model",
    "BERTWithRAG": "vcfbert_fast.model",
    "BERTFoundationModel": "vcfbert_fast.model",
    "HaplotypeEmbedding": "vcfbert_fast.model",
    "ModelConfig": "vcfbert_fast.model",
    # data
    "Panel": "vcfbert_fast.io",
    "Target": "vcfbert_fast.io",
    "read_panel": "vcfbert_fast.io",
    "read_target": "vcfbert_fast.io",
    "align_target": "vcfbert_fast.io",
    "compute_frequencies": "vcfbert_fast.frequencies",
    "make_windows": "vcfbert_fast.windows",
    "WindowLayout": "vcfbert_fast.windows",
    "window_mask": "vcfbert_fast.masking",
    "EmbeddingRAGDataset": "vcfbert_fast.dataset",
    "embedding_rag_collate_fn": "vcfbert_fast.dataset",
    "WindowGroupedBatchSampler": "vcfbert_fast.dataset",
    "DistributedWindowGroupedBatchSampler": "vcfbert_fast.dataset",
    # retrieval and ops
    "make_retriever": "vcfbert_fast.retrieval",
    "HammingRetriever": "vcfbert_fast.retrieval",
    "FaissRetriever": "vcfbert_fast.retrieval",
    "gather_rows": "vcfbert_fast.ops",
    "hamming_topk": "vcfbert_fast.ops",
    "embed_flatten": "vcfbert_fast.ops",
    # misc
    "info": "vcfbert_fast.info",
    "InputError": "vcfbert_fast.errors",
    "VcfBertError": "vcfbert_fast.errors",
}

__all__ = [
    "BERTFoundationModel",
    "BERTWithEmbeddingRAG",
    "BERTWithRAG",
    "DistributedWindowGroupedBatchSampler",
    "EmbeddingRAGDataset",
    "FaissRetriever",
    "HammingRetriever",
    "HaplotypeEmbedding",
    "InputError",
    "ModelConfig",
    "Panel",
    "Target",
    "VcfBertError",
    "WindowGroupedBatchSampler",
    "WindowLayout",
    "__version__",
    "align_target",
    "compute_frequencies",
    "embed_flatten",
    "embedding_rag_collate_fn",
    "gather_rows",
    "hamming_topk",
    "info",
    "make_retriever",
    "make_windows",
    "read_panel",
    "read_target",
    "window_mask",
]


assert set(__all__) == {*_LAZY, "__version__"}  # one list to read, kept in step with _LAZY


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vcfbert_fast' has no attribute {name!r}")


def __dir__():
    return __all__
