"""Masked-site imputation metrics, accumulated over batches, with an AF-only baseline beside them.

Counts stay on the batch's device until :meth:`ImputationMetrics.compute` (one
host sync per validation pass, not per batch). Only masked sites with a real
label (not -100) are scored: the model saw every other allele in its input.
"""

from __future__ import annotations

import itertools
import math

import torch

RARE_AF = 0.05  # AF < 0.05 is "rare", as in the masking rule

# counter slots
_N, _CORRECT, _TP, _FP, _FN = 0, 1, 2, 3, 4
_RARE_N, _RARE_CORRECT, _COMMON_N, _COMMON_CORRECT = 5, 6, 7, 8
_GT_N, _GT_CORRECT = 9, 10
_B_CORRECT, _B_TP, _B_FP, _B_FN, _B_RARE_CORRECT, _B_COMMON_CORRECT = 11, 12, 13, 14, 15, 16
_LOSS_SUM, _LOSS_N = 17, 18
# dosage r^2 by MAF bin (the accuracy-against-Beagle bins): per bin n, sum x, sum y, sum xy, sum x^2,
# sum y^2 of (predicted ALT dosage, true ALT dosage) over masked genotypes; additive, so ranks sum them
MAF_BINS = (0.001, 0.005, 0.01, 0.05, 0.2, 0.5)
_R2_BASE, _R2_SLOTS = 19, 6
_N_SLOTS = _R2_BASE + _R2_SLOTS * (len(MAF_BINS) - 1)


def _f1(tp: float, fp: float, fn: float) -> float:
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom > 0 else float("nan")


def _div(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def _pooled_r2(n: float, sx: float, sy: float, sxy: float, sxx: float, syy: float) -> float:
    """Squared Pearson correlation from moment sums (NaN when either side is constant)."""
    if n < 2:
        return float("nan")
    cov = sxy - sx * sy / n
    vx, vy = sxx - sx * sx / n, syy - sy * sy / n
    return cov * cov / (vx * vy) if vx > 0 and vy > 0 else float("nan")


def bin_label(lo: float, hi: float) -> str:
    """``[lo,hi)``, or ``[lo,hi]`` for the last bin (MAF 0.5 belongs to it): the evaluate report's names."""
    return f"[{lo:g},{hi:g}{']' if hi == MAF_BINS[-1] else ')'}"


class ImputationMetrics:
    """Accumulates masked-site metrics of haplotype and genotype predictions.

    ``update(logits, batch)`` takes the model's ``hap1_logits``/``hap2_logits``
    ``[B, L, 2]`` and ``gt_logits`` ``[B, L, 4]`` (logits or log-probs: only the
    argmax is used) and the batch's labels, ``mask`` and ``af``.
    ``compute()`` returns:

    - ``accuracy``: allele accuracy over both haplotypes at masked sites;
    - ``alt_f1``: F1 with ALT (allele 1) as the positive class;
    - ``rare_accuracy`` / ``common_accuracy``: accuracy at sites with AF < 0.05 / >= 0.05;
    - ``gt_accuracy``: 4-class phased genotype accuracy at masked sites;
    - ``af_baseline_*``: the same for the predictor "ALT iff af > 0.5" (what any
      model must beat; on rare sites it is nearly always right);
    - ``r2 [lo,hi)``: aggregate dosage r^2 (predicted ALT dosage p1 + p2 against the truth, pooled
      over the masked genotypes of sites whose panel MAF is in the bin), the figure the benchmark
      against Beagle reports; ``r2``: their mean over the bins that have data, so every MAF class
      counts alike (accuracy is ~0.999 on any decent model and cannot rank them);
    - ``n_sites``: scored haplotype-sites; ``loss`` if losses were passed.
    """

    N_SLOTS = _N_SLOTS  # length of ``counts``

    def __init__(self, rare_af: float = RARE_AF):
        self.rare_af = rare_af
        self.counts: torch.Tensor | None = None

    def reset(self) -> None:
        self.counts = None

    @torch.no_grad()
    def update(self, logits: dict, batch: dict, loss: torch.Tensor | float | None = None) -> None:
        mask = batch["mask"].bool()
        af = batch["af"].float()
        device = mask.device
        self.totals(device)
        c = torch.zeros(_N_SLOTS, dtype=torch.float64, device=device)
        base_pred = (af > 0.5).long()
        for h in ("1", "2"):
            label = batch[f"hap_{h}_label"].to(device)
            valid = mask & (label >= 0)
            pred = logits[f"hap{h}_logits"].argmax(-1).to(device)
            rare = valid & (af < self.rare_af)
            common = valid & (af >= self.rare_af)
            ok = pred == label
            bok = base_pred == label
            pos, bpos, true_pos = pred == 1, base_pred == 1, label == 1
            parts = {
                _N: valid.sum(),
                _CORRECT: (ok & valid).sum(),
                _TP: (pos & true_pos & valid).sum(),
                _FP: (pos & ~true_pos & valid).sum(),
                _FN: (~pos & true_pos & valid).sum(),
                _RARE_N: rare.sum(),
                _RARE_CORRECT: (ok & rare).sum(),
                _COMMON_N: common.sum(),
                _COMMON_CORRECT: (ok & common).sum(),
                _B_CORRECT: (bok & valid).sum(),
                _B_TP: (bpos & true_pos & valid).sum(),
                _B_FP: (bpos & ~true_pos & valid).sum(),
                _B_FN: (~bpos & true_pos & valid).sum(),
                _B_RARE_CORRECT: (bok & rare).sum(),
                _B_COMMON_CORRECT: (bok & common).sum(),
            }
            for slot, v in parts.items():
                c[slot] += v
        self._update_r2(c, logits, batch, mask, af)
        gt = batch["gt_label"].to(device)
        gvalid = mask & (gt >= 0)
        c[_GT_N] += gvalid.sum()
        c[_GT_CORRECT] += ((logits["gt_logits"].argmax(-1).to(device) == gt) & gvalid).sum()
        if loss is not None:
            c[_LOSS_SUM] += torch.as_tensor(loss, dtype=torch.float64, device=device).detach()
            c[_LOSS_N] += 1
        self.counts += c

    @staticmethod
    def _update_r2(c: torch.Tensor, logits: dict, batch: dict, mask: torch.Tensor, af: torch.Tensor) -> None:
        l1, l2 = batch["hap_1_label"].to(mask.device), batch["hap_2_label"].to(mask.device)
        valid = mask & (l1 >= 0) & (l2 >= 0)
        x = sum(torch.softmax(logits[f"hap{h}_logits"].double(), dim=-1)[..., 1] for h in ("1", "2"))
        y = (l1.clamp_min(0) + l2.clamp_min(0)).double()
        maf = torch.minimum(af, 1.0 - af)
        for i, (lo, hi) in enumerate(itertools.pairwise(MAF_BINS)):
            upper = maf <= hi if hi == MAF_BINS[-1] else maf < hi
            sel = valid & (maf >= lo) & upper
            xs, ys = x[sel], y[sel]
            base = _R2_BASE + _R2_SLOTS * i
            c[base : base + _R2_SLOTS] += torch.stack(
                [sel.sum().double(), xs.sum(), ys.sum(), (xs * ys).sum(), (xs * xs).sum(), (ys * ys).sum()]
            )

    def totals(self, device: torch.device | str) -> torch.Tensor:
        """The raw counters, float64 ``[N_SLOTS]``; zeros on ``device`` before any update, so a
        rank that scored no batch still joins an all-reduce with a tensor of the right size."""
        if self.counts is None:
            self.counts = torch.zeros(self.N_SLOTS, dtype=torch.float64, device=device)
        return self.counts

    def compute(self) -> dict[str, float]:
        c = [0.0] * _N_SLOTS if self.counts is None else self.counts.tolist()
        out = {
            "accuracy": _div(c[_CORRECT], c[_N]),
            "alt_f1": _f1(c[_TP], c[_FP], c[_FN]),
            "rare_accuracy": _div(c[_RARE_CORRECT], c[_RARE_N]),
            "common_accuracy": _div(c[_COMMON_CORRECT], c[_COMMON_N]),
            "gt_accuracy": _div(c[_GT_CORRECT], c[_GT_N]),
            "af_baseline_accuracy": _div(c[_B_CORRECT], c[_N]),
            "af_baseline_alt_f1": _f1(c[_B_TP], c[_B_FP], c[_B_FN]),
            "af_baseline_rare_accuracy": _div(c[_B_RARE_CORRECT], c[_RARE_N]),
            "af_baseline_common_accuracy": _div(c[_B_COMMON_CORRECT], c[_COMMON_N]),
            "n_sites": int(c[_N]),
            "n_rare_sites": int(c[_RARE_N]),
            "n_common_sites": int(c[_COMMON_N]),
        }
        r2s = []
        for i, (lo, hi) in enumerate(itertools.pairwise(MAF_BINS)):
            base = _R2_BASE + _R2_SLOTS * i
            r2 = _pooled_r2(*c[base : base + _R2_SLOTS])
            out[f"r2 {bin_label(lo, hi)}"] = r2
            if not math.isnan(r2):
                r2s.append(r2)
        out["r2"] = sum(r2s) / len(r2s) if r2s else float("nan")
        if c[_LOSS_N] > 0:
            out["loss"] = c[_LOSS_SUM] / c[_LOSS_N]
        return out
