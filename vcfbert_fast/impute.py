"""``vcfbert-fast impute``: a trained checkpoint + a phased panel + a target VCF -> an imputed VCF.

Flow: read the panel and target, align the target's sites to the panel, load the checkpoint
(its model config, vocab and training-panel fingerprint; a different panel is refused), cut the
panel into overlapping windows, and for every window and batch of target samples: query tokens
from the target's alleles at typed sites (MASK at the panel sites the target lacks, UNK at
missing calls), retrieve each haplotype's K nearest panel haplotypes (exact Hamming engine, all
panel haplotypes are references), embed them, run the model once, and keep each site's
haplotype ALT probabilities from the window where the site is most central. The output keeps
typed genotypes as given and passes target records absent from the panel through untouched.
See docs/IMPUTATION.md for the conventions (GP from HDS, DR2, unphased input).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time

import numpy as np
import torch

from .devices import resolve_device
from .errors import InputError
from .frequencies import population_af_rows
from .progress import progress_bar

BEAGLE_JAR = "/usr/share/beagle/beagle.jar"


def unphased_hets(alleles: np.ndarray, phased: np.ndarray) -> np.ndarray:
    """bool [S, T]: heterozygous calls whose phase is unknown ('0/1')."""
    a0, a1 = alleles[:, 0], alleles[:, 1]
    return (a0 >= 0) & (a1 >= 0) & (a0 != a1) & ~phased


def prephase_with_beagle(
    ref_path: str, target_path: str, out_prefix: str, java_mem: str = "4g", nthreads: int | None = None
) -> str:
    """Phase the target against the panel with Beagle 5.4 (``impute=false``); returns the phased VCF path."""
    jar = os.environ.get("BEAGLE_JAR", BEAGLE_JAR)
    java = shutil.which("java")
    if java is None or not os.path.exists(jar):
        missing = "java" if java is None else jar
        raise InputError(
            target_path,
            f"--prephase beagle needs Java and Beagle 5.4 ({missing} not found)",
            "install them (Debian: apt install default-jre beagle) or set BEAGLE_JAR, or phase the target "
            "yourself (Beagle, SHAPEIT) and pass the phased VCF",
        )
    nthreads = nthreads or max(1, os.cpu_count() or 1)
    cmd = [
        java,
        f"-Xmx{java_mem}",
        "-jar",
        jar,
        f"ref={ref_path}",
        f"gt={target_path}",
        f"out={out_prefix}",
        "impute=false",
        f"nthreads={nthreads}",
    ]
    print("pre-phasing with Beagle: " + " ".join(shlex.quote(c) for c in cmd), file=sys.stderr)
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    out = out_prefix + ".vcf.gz"
    if proc.returncode != 0 or not os.path.exists(out):
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
        raise InputError(
            target_path,
            f"Beagle pre-phasing failed (exit {proc.returncode}): {' | '.join(tail)}",
            f"see {out_prefix}.log; check that target and panel share sites and build",
        )
    return out


def _target_population_af(freqs, panel_file: str | None, samples: list[str]):
    """``(table [P + 1, M], rows [S])`` of population AF per target sample, or None; and a note.

    The populations come from the panel file when it names the target samples; anyone else
    reads the global AF (``frequencies.population_af_rows``).
    """
    if panel_file is None or getattr(freqs, "pop_af", None) is None or not len(freqs.populations):
        return None, "global AF (no population AF in the model's panel)"
    from .io import read_panel_file

    try:
        pops, _ = read_panel_file(panel_file, samples)
    except InputError:
        return None, "global AF (target samples not in the panel file)"
    table, rows, n_fallback = population_af_rows(freqs, pops)
    return (table, rows), f"population AF of {len(samples) - n_fallback} samples"


def _passthrough_records(target_path: str, matched: set) -> tuple[list[tuple[int, str]], list[str]]:
    """Every target record not represented by a matched panel site, as (POS, original text); header lines."""
    import cyvcf2

    vcf = cyvcf2.VCF(target_path)
    header = [
        line
        for line in vcf.raw_header.splitlines()
        if line.startswith(("##INFO", "##FORMAT", "##FILTER", "##ALT", "##contig"))
    ]
    out = []
    for v in vcf:
        key = (int(v.POS), v.REF, ",".join(v.ALT))
        if key not in matched:
            out.append((int(v.POS), str(v).rstrip("\n")))
    vcf.close()
    return out, header


def encode_references(panel, layout, window_idx: int, rows: torch.Tensor, layer, pos, af) -> torch.Tensor:
    """Embeddings ``[B, K, L, D]`` of the complete (unmasked) panel rows ``rows [B, K]``, as in training.

    One call of :class:`vcfbert_fast.store.ReferenceEmbeddings` (live mode: a per-site select for
    the model's embedding; any other layer embeds the batch's distinct rows once).
    """
    from .store import ReferenceEmbeddings

    return ReferenceEmbeddings(panel, layout, mode="live", device=pos.device).encode(
        window_idx, rows, layer, pos, af
    )


def load_model(model_path: str, panel, device: torch.device):
    """(model in eval mode, checkpoint state); refuses a checkpoint of another panel layout."""
    from .checkpoint import load_checkpoint, read_checkpoint
    from .model import BERTFoundationModel, BERTWithEmbeddingRAG, ModelConfig

    state = read_checkpoint(model_path)
    config = ModelConfig.from_dict(dict(state["model_config"]))
    model = BERTFoundationModel(BERTWithEmbeddingRAG.from_config(config))
    state = load_checkpoint(model_path, model=model, panel=panel)
    return model.to(device).eval(), state


def impute(
    ref_path: str,
    target_path: str,
    model_path: str,
    out_path: str,
    panel_file: str | None = None,
    batch_size: int = 32,
    device: str = "auto",
    prephase: str | None = None,
    allow_unphased: bool = False,
    overlap: int | None = None,
    progress: bool = True,
    command: str | None = None,
    java_mem: str = "4g",
) -> dict:
    """Impute ``target_path`` against ``ref_path`` with the checkpoint ``model_path``; write ``out_path``.

    Returns a summary dict (sites, samples, timings, sites/s, output paths).
    """
    from .frequencies import compute_frequencies
    from .io import align_target, read_panel, read_target
    from .retrieval import make_retriever
    from .vcf_writer import ImputedSites, gp_from_hds, write_imputed_vcf
    from .windows import WindowLayout, frame_features, frame_tokens, make_windows, window_features

    t0 = time.perf_counter()
    dev = resolve_device(device)
    if prephase not in (None, "beagle"):
        raise InputError(None, f"--prephase {prephase!r} is not supported", "use --prephase beagle")
    panel = read_panel(ref_path, panel_file, progress=progress)
    model, state = load_model(model_path, panel, dev)
    original_target = str(target_path)
    target = read_target(original_target, progress=progress)

    n_unph = unphased_hets(target.alleles, target.phased)
    prephased_path = None
    if n_unph.any():
        n_g, n_s = int(n_unph.sum()), int(n_unph.any(axis=1).sum())
        if prephase == "beagle":
            prephased_path = prephase_with_beagle(
                str(ref_path), original_target, str(out_path) + ".prephased", java_mem=java_mem
            )
            target = read_target(prephased_path, progress=progress)
            n_unph = unphased_hets(target.alleles, target.phased)
        elif not allow_unphased:
            raise InputError(
                original_target,
                f"{n_g} heterozygous genotypes in {n_s} samples are unphased",
                "pre-phase with --prephase beagle (Java + Beagle 5.4), or phase with Beagle/SHAPEIT first; "
                "--allow-unphased instead feeds them to the model as missing calls",
            )
        else:
            print(
                f"note: {n_g} unphased heterozygous genotypes in {n_s} samples enter the model as missing "
                "calls (--allow-unphased); their output GT stays unphased. For better accuracy use "
                "--prephase beagle.",
                file=sys.stderr,
            )
    alignment = align_target(target, panel)
    print(f"alignment: {alignment.summary()}", file=sys.stderr)

    # ---------------------------------------------------------------- per-panel-site target calls
    m, n_samp = panel.n_sites, len(target.samples)
    matched_t = np.flatnonzero(alignment.panel_index >= 0)
    matched_p = alignment.panel_index[matched_t]
    typed = np.zeros(m, dtype=bool)
    typed[matched_p] = True
    calls = np.full((n_samp, 2, m), -1, dtype=np.int8)  # [S, 2, M] input alleles at typed sites
    calls[:, :, matched_p] = target.alleles[:, :, matched_t]
    phased_in = np.ones((n_samp, m), dtype=bool)
    phased_in[:, matched_p] = target.phased[:, matched_t]
    unph = np.zeros((n_samp, m), dtype=bool)
    unph[:, matched_p] = n_unph[:, matched_t]
    model_calls = calls.copy()
    model_calls[np.repeat(unph[:, None, :], 2, axis=1)] = -1  # unknown phase -> missing for the model

    # ---------------------------------------------------------------- model-side tables
    train_samples = state.get("train_samples")
    freqs = compute_frequencies(panel, np.asarray(train_samples) if train_samples else None)
    ck_layout = WindowLayout.from_dict(state["window_layout"])
    if overlap is None:
        overlap = ck_layout.overlap if ck_layout.overlap > 0 else ck_layout.max_sites // 4
    layout = make_windows(m, ck_layout.max_sites, min(overlap, ck_layout.max_sites - 1))
    central = layout.central_window_of_site()
    pop_af, af_p_note = _target_population_af(freqs, panel_file, target.samples)
    k = int(dict(state.get("train_config") or {}).get("k", 0))
    retriever = references = None
    if k > 0:
        from .store import ReferenceEmbeddings

        kw = {"device": dev}
        retriever = make_retriever("hamming", panel, freqs, layout, None, k=k, **kw)
        retriever.refresh_embeddings(model.bert.embedding, device=dev)
        references = ReferenceEmbeddings(panel, layout, mode="live", device=dev)
    print(
        f"model: {model_path} ({state['model_config']['dims']} dims, {state['model_config']['n_layers']} layers, "
        f"K={k}); {len(layout)} windows of <= {layout.max_sites} sites, overlap {layout.overlap}; "
        f"{n_samp} targets on {dev}; af_p = {af_p_note}",
        file=sys.stderr,
    )

    hds = np.zeros((m, n_samp, 2), dtype=np.float32)
    amp = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if dev.type == "cuda" else None
    bar = progress_bar(m, desc="imputing", unit=" sites", enabled=progress)
    t_inf = time.perf_counter()
    with torch.no_grad():
        for w in range(len(layout)):
            sl = layout.sites(w)
            n = sl.stop - sl.start
            keep = np.flatnonzero(central[sl] == w)
            if keep.size == 0:
                continue
            feats = window_features(panel.positions, freqs, sl)
            mask = ~typed[sl]
            for b0 in range(0, n_samp, batch_size):
                b1 = min(n_samp, b0 + batch_size)
                bsz = b1 - b0
                toks = torch.from_numpy(frame_tokens(model_calls[b0:b1, :, sl], mask)).to(dev)  # [B, 2, L]
                batch = {k_: torch.from_numpy(v).to(dev)[None].expand(bsz, n + 2) for k_, v in feats.items()}
                if pop_af is None:
                    batch["af_p"] = batch["af"]
                else:
                    table, rows = pop_af
                    batch["af_p"] = torch.from_numpy(frame_features(table[rows[b0:b1], sl])).to(dev)
                batch["hap_1"], batch["hap_2"] = toks[:, 0], toks[:, 1]
                if retriever is not None:
                    _, i1 = retriever.search(w, batch["hap_1"])
                    _, i2 = retriever.search(w, batch["hap_2"])
                    emb = model.bert.embedding
                    # retrieved panel rows: valid by construction, encoded without a host round trip
                    batch["rag_emb_h1"] = references.encode(
                        w, i1, emb, batch["pos"], batch["af"], check=False
                    )
                    batch["rag_emb_h2"] = references.encode(
                        w, i2, emb, batch["pos"], batch["af"], check=False
                    )
                if amp is not None:
                    with amp:
                        out = model.forward_logits(batch)
                else:
                    out = model.forward_logits(batch)
                p1 = torch.softmax(out["hap1_logits"].float(), -1)[:, 1:-1, 1].cpu().numpy()  # [B, n]
                p2 = torch.softmax(out["hap2_logits"].float(), -1)[:, 1:-1, 1].cpu().numpy()
                hds[sl.start + keep, b0:b1, 0] = p1[:, keep].T
                hds[sl.start + keep, b0:b1, 1] = p2[:, keep].T
            bar.update(int(keep.size))
    bar.close()
    t_inf = time.perf_counter() - t_inf

    # ---------------------------------------------------------------- typed sites keep their calls
    gt = (hds > 0.5).astype(np.int8)
    phased = np.ones((m, n_samp), dtype=bool)
    tc = calls[:, :, typed].transpose(2, 0, 1)  # [Mt, S, 2]
    called = tc >= 0
    t_gt, t_hds = gt[typed], hds[typed]
    t_gt[called] = tc[called]
    t_hds[called] = tc[called]
    t_unph = unph[:, typed].T  # [Mt, S]
    t_hds[t_unph] = 0.5
    t_ph = phased_in[:, typed].T.copy()
    t_ph[~called.all(-1)] = True  # a call (partly) filled by the model is written phased
    gt[typed], hds[typed], phased[typed] = t_gt, t_hds, t_ph
    gp = gp_from_hds(hds)
    gp_t = gp[typed]
    gp_t[t_unph] = [0.0, 1.0, 0.0]
    gp[typed] = gp_t

    matched_keys = {(int(target.positions[j]), str(target.ref[j]), str(target.alt[j])) for j in matched_t}
    passthrough, extra = _passthrough_records(original_target, matched_keys)
    sites = ImputedSites(
        contig=panel.contig,
        positions=panel.positions,
        ids=panel.ids,
        ref=panel.ref,
        alt=panel.alt,
        hds=hds,
        imputed=~typed,
        gt=gt,
        phased=phased,
        gp=gp,
    )
    if command is None:
        command = (
            "vcfbert_fast.impute.impute("
            + ", ".join(
                f"{a}={v!r}" for a, v in (("ref", ref_path), ("target", target_path), ("model", model_path))
            )
            + ")"
        )
    t_w = time.perf_counter()
    written = write_imputed_vcf(
        out_path,
        sites,
        target.samples,
        passthrough=passthrough,
        command=command,
        extra_header=[h for h in extra if not h.startswith("##contig")],
    )
    t_w = time.perf_counter() - t_w
    total = time.perf_counter() - t0
    summary = {
        **written,
        "alignment": alignment.summary(),
        "windows": len(layout),
        "overlap": layout.overlap,
        "k": k,
        "device": str(dev),
        "unphased_hets": int(unph.sum()),
        "prephased": prephased_path,
        "inference_s": round(t_inf, 3),
        "write_s": round(t_w, 3),
        "total_s": round(total, 3),
        "sites_per_s": round(m / max(t_inf, 1e-9), 1),
    }
    print(
        f"wrote {written['path']}: {written['imputed_sites']} imputed + {written['typed_sites']} typed panel sites, "
        f"{written['passthrough_records']} target records passed through, {n_samp} samples; inference "
        f"{t_inf:.1f} s ({summary['sites_per_s']} sites/s), total {total:.1f} s",
        file=sys.stderr,
    )
    return summary


def add_arguments(parser) -> None:
    parser.add_argument("--ref", required=True, help="the phased reference panel the model was trained on")
    parser.add_argument("--target", required=True, help="target VCF/BCF (phased; see --prephase)")
    parser.add_argument("--model", required=True, help="checkpoint from `vcfbert-fast train` (run/best.pt)")
    parser.add_argument(
        "--out", required=True, help="output VCF (bgzipped and tabix-indexed), e.g. imputed.vcf.gz"
    )
    parser.add_argument("--panel", default=None, help="sample -> population table (as given to train)")
    parser.add_argument("--batch-size", type=int, default=32, help="target samples per forward pass")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--prephase", choices=["beagle"], default=None, help="pre-phase the target with Beagle 5.4"
    )
    parser.add_argument(
        "--allow-unphased",
        action="store_true",
        help="impute an unphased target without pre-phasing: unphased hets enter the model as missing calls",
    )
    parser.add_argument(
        "--overlap", type=int, default=None, help="sites shared by neighbouring windows (default max_sites/4)"
    )
    parser.add_argument("--java-mem", default="4g", help="Java heap for --prephase beagle")
    parser.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    command = "vcfbert-fast " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else None
    impute(
        args.ref,
        args.target,
        args.model,
        args.out,
        panel_file=args.panel,
        batch_size=args.batch_size,
        device=args.device,
        prephase=args.prephase,
        allow_unphased=args.allow_unphased,
        overlap=args.overlap,
        progress=not args.no_progress,
        command=command,
        java_mem=args.java_mem,
    )
    return 0


__all__ = ["impute", "load_model", "prephase_with_beagle", "unphased_hets"]
