"""Inference forward time of candidate model sizes at imputation's shape, random weights and inputs.

    python benchmarks/model_sizes.py [--threads 1] [--batch 32] [--k 32] [--sites 256] \\
        DIMS/LAYERS/HEADS/FFN[/PRIOR_HIDDEN[/SHARED]] ...

e.g. ``64/4/4/4/16/0`` (the dims 64 model, two priors of width 16) and ``32/2/2/4/8/1`` (the
default since the scale issue). Prints the best of 5 ``forward_logits`` calls per spec, fp32,
factored donor references (the CPU path of ``matching.donor_inputs``). Not a test: a measurement
(BENCHMARKS.md "Small default model").
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("specs", nargs="+", help="DIMS/LAYERS/HEADS/FFN[/PRIOR_HIDDEN[/SHARED 0|1]]")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=32, help="target samples per forward")
    p.add_argument("--k", type=int, default=32, help="donors per haplotype")
    p.add_argument("--sites", type=int, default=256, help="sites per window (tokens = sites + 2)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import torch

    from vcfbert_fast.matching import MATCH_FEATURES
    from vcfbert_fast.model import BERTFoundationModel, BERTWithEmbeddingRAG, ModelConfig
    from vcfbert_fast.vocab import VOCAB_SIZE

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    b, k, length = args.batch, args.k, args.sites + 2
    for spec in args.specs:
        try:
            d, layers, heads, ffn, hidden, shared = (list(map(int, spec.split("/"))) + [16, 0])[:6]
        except ValueError:
            p.error(f"bad spec {spec!r}: want DIMS/LAYERS/HEADS/FFN[/PRIOR_HIDDEN[/SHARED]], e.g. 32/2/2/4/8/1")
        cfg = ModelConfig(dims=d, n_layers=layers, attn_heads=heads, ffn_mult=ffn, dropout=0.0, max_len=length,
                          prior_hidden=hidden, shared_prior=bool(shared))  # fmt: skip
        model = BERTFoundationModel(BERTWithEmbeddingRAG.from_config(cfg)).eval()
        x = {f: torch.rand(b, length) for f in ("pos", "af", "af_p", "ref", "het", "hom")}
        x["hap_1"], x["hap_2"] = (torch.randint(0, VOCAB_SIZE, (b, length)) for _ in range(2))
        x["rag_table"] = torch.randn(length, VOCAB_SIZE, d)
        for h in ("h1", "h2"):
            x[f"rag_tok_{h}"] = torch.randint(0, VOCAB_SIZE, (b, k, length))
            x[f"rag_feat_{h}"] = torch.randn(b, k, length, len(MATCH_FEATURES))
            x[f"rag_allele_{h}"] = torch.randint(0, 2, (b, k, length))
        times = []
        with torch.no_grad():
            model.forward_logits(x)  # warm-up
            for _ in range(5):
                t = time.perf_counter()
                model.forward_logits(x)
                times.append(time.perf_counter() - t)
        n_par = sum(p.numel() for p in model.parameters())
        print(f"{spec:16s} {n_par:>9,} parameters  {min(times) * 1e3:8.1f} ms per forward", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
