"""Focal loss on log-probabilities, and the imputation loss ``3*hap1 + 3*hap2 + 4*gt`` on masked sites.

The original applied softmax in the model and again inside the loss (focal loss on
probabilities); here the heads return logits and the loss takes one ``log_softmax``.
"""

from __future__ import annotations

import torch

__all__ = ["LOSS_WEIGHTS", "focal_loss", "imputation_loss"]

LOSS_WEIGHTS = {"hap1": 3.0, "hap2": 3.0, "gt": 4.0}


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
    ignore_index: int = -100,
) -> torch.Tensor:
    """``-(1 - p_t)^gamma * log p_t`` from ``log_softmax(logits)`` (float32), over ``[..., C]``.

    Sites count when ``target != ignore_index`` and (if given) ``mask`` is True. ``"mean"``
    divides by the number of counted sites (0 when there are none, still differentiable),
    ``"sum"`` sums them, ``"none"`` returns the per-site loss with zeros where not counted.
    ``gamma = 0`` is cross-entropy.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', not {reduction!r}")
    if logits.shape[:-1] != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} disagree")
    valid = target != ignore_index
    if mask is not None:
        valid = valid & mask.bool()
    logp = torch.log_softmax(logits.float(), dim=-1)
    logpt = logp.gather(-1, torch.where(valid, target, 0).long()[..., None]).squeeze(-1)
    if gamma == 0:
        loss = -logpt
    else:
        # 1 - p_t via expm1 (accurate near p_t = 1); a floor keeps the gradient finite for gamma < 1
        one_minus = (-torch.expm1(logpt)).clamp_min(1e-12 if gamma < 1 else 0.0)
        loss = -(one_minus**gamma) * logpt
    loss = torch.where(valid, loss, torch.zeros((), dtype=loss.dtype, device=loss.device))
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / valid.sum().clamp_min(1)


def imputation_loss(
    out: dict[str, torch.Tensor],
    batch: dict[str, torch.Tensor],
    gamma: float = 2.0,
    weights: dict[str, float] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``3*hap1 + 3*hap2 + 4*gt`` focal losses over masked sites (``batch["mask"]``).

    ``out`` is ``BERTFoundationModel.forward_logits``'s dict; ``batch`` holds ``hap_1_label,
    hap_2_label, gt_label`` (-100 at SOS/EOS/PAD) and ``mask``. Returns ``(total, parts)`` with
    ``parts`` detached: ``hap1, hap2, gt, total``.
    """
    w = LOSS_WEIGHTS if weights is None else weights
    mask = batch["mask"]
    parts = {
        "hap1": focal_loss(out["hap1_logits"], batch["hap_1_label"], gamma, mask),
        "hap2": focal_loss(out["hap2_logits"], batch["hap_2_label"], gamma, mask),
        "gt": focal_loss(out["gt_logits"], batch["gt_label"], gamma, mask),
    }
    total = w["hap1"] * parts["hap1"] + w["hap2"] * parts["hap2"] + w["gt"] * parts["gt"]
    detached = {k: v.detach() for k, v in parts.items()}
    detached["total"] = total.detach()
    return total, detached
