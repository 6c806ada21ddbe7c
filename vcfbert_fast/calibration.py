"""Calibrated haplotype ALT probabilities, so that DR2 means what Beagle's means.

DR2 (minimac's Rsq, ``vcf_writer.estimated_r2``) equals the true r^2 only when the posteriors
are calibrated: among haplotypes given ALT probability p, a fraction p carries ALT. A model
trained for a few minutes is far from that, so at the end of every validation pass the trainer
fits, per MAF class of the site, a temperature of the ALT logit ``z = logit(p)``:

    p' = sigmoid(z / temperature + bias)

by minimising the negative log-likelihood of the validation masks' true alleles, with ``bias = 0``
(:data:`FIT_BIAS`). Fitting the bias too (Platt scaling) was measured worse on the demo
(BENCHMARKS.md, "DR2 calibration"): validation queries retrieve donors from the training
haplotypes only, a target from the whole panel, so at the rarest sites a validation carrier often
has no donor, and the bias learnt from that pushes the targets' well-imputed carriers down. The fit reads a histogram of the masked sites'
logits (:class:`LogitHistogram`: fixed size, summed across DDP ranks like the metrics), not the
logits themselves, so a whole validation pass costs a few kB. The result is plain data in the
checkpoint (``state["calibration"]``, bounds-checked on load by :func:`check_calibration`);
``impute`` applies it (:func:`calibrate`) between inference and the final calls. A checkpoint
without it, and ``--model vote``, are left as they are.
"""

from __future__ import annotations

import itertools
import math
import numbers
from typing import Any

import numpy as np
import torch

from .errors import CheckpointError

# MAF classes (training-sample MAF of the site): metrics.MAF_BINS, with the sites below 0.001
# (and monomorphic ones) in a class of their own
MAF_EDGES = (0.0, 0.001, 0.005, 0.01, 0.05, 0.2, 0.5)
LOGIT_MAX = 20.0  # logits are clipped to +-LOGIT_MAX, in the fit and when applied
N_LOGIT_BINS = 2000  # histogram bins over [-LOGIT_MAX, LOGIT_MAX]: 0.02 wide
MIN_ALLELES = 20  # a class with fewer REF or ALT alleles in the validation masks takes the pooled fit
TEMPERATURE_BOUNDS = (0.05, 20.0)
BIAS_BOUNDS = (-10.0, 10.0)
MAX_CLASSES = 64
FIT_BIAS = False  # temperature only; the entry keeps a bias (0) so that a Platt fit stays loadable
VERSION = 1

IDENTITY = {"temperature": 1.0, "bias": 0.0}


def maf_class(af: np.ndarray | torch.Tensor, edges) -> np.ndarray | torch.Tensor:
    """The class of each site's ALT frequency ``af`` (MAF = min(af, 1 - af)): index ``i`` when
    ``edges[i] <= MAF < edges[i + 1]``; the last class is closed at 0.5."""
    n = len(edges) - 1
    if isinstance(af, torch.Tensor):
        maf = torch.minimum(af, 1.0 - af)
        inner = torch.tensor(list(edges[1:-1]), dtype=maf.dtype, device=maf.device)
        return torch.bucketize(maf, inner, right=True).clamp_(0, n - 1)
    maf = np.minimum(af, 1.0 - af)
    return np.clip(np.searchsorted(np.asarray(edges[1:-1], dtype=np.float64), maf, side="right"), 0, n - 1)


class LogitHistogram:
    """Counts of masked validation alleles by (MAF class, true allele, logit bin): ``counts``
    float64 ``[C, 2, N_LOGIT_BINS]``, on the batch's device until :meth:`fit`."""

    def __init__(self, edges=MAF_EDGES, n_bins: int = N_LOGIT_BINS):
        self.edges = tuple(float(e) for e in edges)
        self.n_bins = n_bins
        self.counts: torch.Tensor | None = None

    def totals(self, device: torch.device | str) -> torch.Tensor:
        """The raw counts (zeros before any update, so every DDP rank joins the all-reduce)."""
        if self.counts is None:
            self.counts = torch.zeros(len(self.edges) - 1, 2, self.n_bins, dtype=torch.float64, device=device)
        return self.counts

    @torch.no_grad()
    def update(self, logits: dict, batch: dict) -> None:
        """Add the masked, labelled alleles of both haplotypes (``hap{1,2}_logits`` ``[B, L, 2]``)."""
        mask = batch["mask"].bool()
        counts = self.totals(mask.device)
        cls = maf_class(batch["af"].float(), self.edges)
        n_cls = counts.shape[0]
        for h in ("1", "2"):
            label = batch[f"hap_{h}_label"].to(mask.device)
            valid = mask & (label >= 0)
            lg = logits[f"hap{h}_logits"].float()
            z = (lg[..., 1] - lg[..., 0])[valid].clamp(-LOGIT_MAX, LOGIT_MAX)
            k = ((z + LOGIT_MAX) * (self.n_bins / (2 * LOGIT_MAX))).long().clamp_(0, self.n_bins - 1)
            flat = (cls[valid] * 2 + label[valid].long()) * self.n_bins + k
            counts += torch.bincount(flat, minlength=n_cls * 2 * self.n_bins).view_as(counts).double()

    def centres(self) -> np.ndarray:
        w = 2 * LOGIT_MAX / self.n_bins
        return -LOGIT_MAX + w * (np.arange(self.n_bins) + 0.5)

    def fit(self) -> dict:
        """The checkpoint's ``calibration`` entry (see :func:`fit_calibration`)."""
        counts = (
            np.zeros((len(self.edges) - 1, 2, self.n_bins))
            if self.counts is None
            else self.counts.cpu().numpy()
        )
        return fit_calibration(self.centres(), counts, self.edges)


def fit_platt(z: np.ndarray, n_ref: np.ndarray, n_alt: np.ndarray, fit_bias: bool = True) -> dict:
    """``{temperature, bias}`` minimising the NLL of ``n_alt`` ALT and ``n_ref`` REF alleles at each
    logit ``z`` under ``sigmoid(z / temperature + bias)``: Newton steps on (1/temperature, bias), a
    convex problem, with step halving; the result is kept inside the bounds."""
    z, n0, n1 = (np.asarray(a, dtype=np.float64) for a in (z, n_ref, n_alt))
    n = n0 + n1

    def nll(a: float, b: float) -> float:
        u = a * z + b
        return float((n1 * np.logaddexp(0.0, -u) + n0 * np.logaddexp(0.0, u)).sum())

    a, b = 1.0, 0.0
    best = nll(a, b)
    for _ in range(100):
        u = a * z + b
        p = 0.5 * (1.0 + np.tanh(0.5 * u))  # sigmoid without overflow
        r = n * p - n1  # d nll / d u
        w = n * p * (1.0 - p)
        g = np.array([(r * z).sum(), r.sum()])
        h = np.array([[(w * z * z).sum(), (w * z).sum()], [(w * z).sum(), w.sum()]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(h, g) if fit_bias else np.array([g[0] / h[0, 0], 0.0])
        t = 1.0
        while t > 1e-6:
            a2, b2 = a - t * step[0], b - t * step[1]
            if a2 > 0 and (v := nll(a2, b2)) <= best:
                break
            t *= 0.5
        else:
            break
        a, b, improvement = a2, b2, best - v
        best = v
        if improvement < 1e-10 * max(best, 1.0):
            break
    temperature = float(np.clip(1.0 / a, *TEMPERATURE_BOUNDS))
    return {"temperature": temperature, "bias": float(np.clip(b, *BIAS_BOUNDS))}


def fit_calibration(z: np.ndarray, counts: np.ndarray, edges=MAF_EDGES, fit_bias: bool = FIT_BIAS) -> dict:
    """Per-class temperature (and with ``fit_bias`` a bias) from a logit histogram (``counts
    [C, 2, bins]`` at logits ``z``).

    A class with fewer than :data:`MIN_ALLELES` REF or ALT alleles takes the fit of all classes
    pooled (identity when even that is too thin); ``pooled`` in the entry says which did.
    """
    counts = np.asarray(counts, dtype=np.float64)
    tot = counts.sum(axis=0)
    enough = bool(min(tot[0].sum(), tot[1].sum()) >= MIN_ALLELES)
    pooled = fit_platt(z, tot[0], tot[1], fit_bias) if enough else dict(IDENTITY)
    classes = []
    for c in counts:
        n_ref, n_alt = float(c[0].sum()), float(c[1].sum())
        own = min(n_ref, n_alt) >= MIN_ALLELES
        fit = fit_platt(z, c[0], c[1], fit_bias) if own else dict(pooled)
        classes.append({**fit, "n_ref": int(n_ref), "n_alt": int(n_alt), "pooled": not own})
    return {"version": VERSION, "maf_edges": [float(e) for e in edges], "classes": classes}


def check_calibration(path: str, calib: Any) -> None:
    """Refuse a checkpoint's ``calibration`` entry that is not what :func:`fit_calibration` writes:
    edges rising from 0 to 0.5, one class per interval (at most :data:`MAX_CLASSES`), finite
    temperature and bias inside their bounds. None (an older checkpoint) is the identity."""
    if calib is None:
        return
    fix = "use a checkpoint written by `vcfbert-fast train`"

    def bad(problem: str) -> CheckpointError:
        return CheckpointError(path, f"calibration: {problem}", fix)

    if not isinstance(calib, dict) or not isinstance(calib.get("classes"), list):
        raise bad("not a dict with a 'classes' list")
    if calib.get("version") != VERSION:
        raise bad(f"version {calib.get('version')!r} is not {VERSION}")
    edges, classes = calib.get("maf_edges"), calib["classes"]
    if not isinstance(edges, list) or not 2 <= len(edges) <= MAX_CLASSES + 1:
        raise bad(f"maf_edges must be a list of 2 to {MAX_CLASSES + 1} numbers")
    if not all(_real(e) for e in edges):
        raise bad("maf_edges must be numbers")
    if edges[0] != 0.0 or edges[-1] != 0.5 or any(b <= a for a, b in itertools.pairwise(edges)):
        raise bad(f"maf_edges {edges[:4]}... must rise from 0 to 0.5")
    if len(classes) != len(edges) - 1:
        raise bad(f"{len(classes)} classes for {len(edges) - 1} MAF intervals")
    for i, c in enumerate(classes):
        if not isinstance(c, dict):
            raise bad(f"class {i} is not a dict")
        for key, (lo, hi) in (("temperature", TEMPERATURE_BOUNDS), ("bias", BIAS_BOUNDS)):
            v = c.get(key)
            if not _real(v) or not lo <= v <= hi:
                raise bad(f"class {i} {key}={v!r} is not a number in [{lo:g}, {hi:g}]")


def _real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def is_identity(calib: dict | None) -> bool:
    return calib is None or all(c["temperature"] == 1.0 and c["bias"] == 0.0 for c in calib["classes"])


def calibrate(
    hds: np.ndarray, af: np.ndarray, calib: dict | None, chunk: int = 1 << 20, out: np.ndarray | None = None
) -> np.ndarray:
    """Haplotype ALT probabilities ``hds [M, S, 2]`` float32 -> calibrated ones, each site by the
    class of its ALT frequency ``af [M]`` (the model's: training samples). ``calib`` None or the
    identity: ``hds`` itself, unchanged. Works through ``chunk`` values at a time in float64;
    ``out``: where to write (``out=hds`` calibrates in place, no second array), else a new array."""
    if is_identity(calib):
        return hds
    edges = calib["maf_edges"]
    inv_t = np.array([1.0 / c["temperature"] for c in calib["classes"]])
    bias = np.array([c["bias"] for c in calib["classes"]])
    cls = maf_class(np.asarray(af, dtype=np.float64), edges)
    if out is None:
        out = np.empty_like(hds, dtype=np.float32)
    eps = 1.0 / (1.0 + math.exp(LOGIT_MAX))
    rows = max(1, chunk // max(1, hds[0].size))
    for m0 in range(0, hds.shape[0], rows):
        sl = slice(m0, m0 + rows)
        p = np.clip(hds[sl].astype(np.float64), eps, 1.0 - eps)
        u = (np.log(p) - np.log1p(-p)) * inv_t[cls[sl], None, None] + bias[cls[sl], None, None]
        out[sl] = 0.5 * (1.0 + np.tanh(0.5 * u))
    return out
