"""Focal loss against a hand formula on fresh random logits; the 3/3/4 imputation loss on masked sites.

The logits come from torch's global RNG, seeded per test by the root conftest (printed; replay
with VCFBERT_TEST_SEED)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vcfbert_fast.loss import focal_loss, imputation_loss


def hand_focal(logits, target, gamma, valid):
    """-(1 - p_t)^gamma * log p_t from an explicit softmax, averaged over valid sites (float64)."""
    p = torch.softmax(logits.double(), dim=-1)
    rows = []
    for pr, t, ok in zip(p.reshape(-1, p.shape[-1]), target.reshape(-1), valid.reshape(-1)):
        if ok:
            pt = pr[int(t)]
            rows.append(-((1 - pt) ** gamma) * torch.log(pt))
    return torch.stack(rows) if rows else torch.zeros(0, dtype=torch.float64)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 3.5])
@pytest.mark.parametrize("classes", [2, 4])
def test_focal_matches_hand_formula(gamma, classes):
    shape = (3, 17)
    logits = torch.randn(*shape, classes) * 3
    target = torch.randint(0, classes, shape)
    target[torch.rand(shape) < 0.2] = -100
    mask = torch.rand(shape) < 0.6
    valid = (target != -100) & mask
    per_site = hand_focal(logits, target, gamma, valid)
    got = focal_loss(logits, target, gamma=gamma, mask=mask)
    torch.testing.assert_close(got.double(), per_site.mean(), rtol=1e-5, atol=1e-6)
    got_sum = focal_loss(logits, target, gamma=gamma, mask=mask, reduction="sum")
    torch.testing.assert_close(got_sum.double(), per_site.sum(), rtol=1e-5, atol=1e-5)
    none = focal_loss(logits, target, gamma=gamma, mask=mask, reduction="none")
    assert none.shape == shape
    assert (none[~valid] == 0).all()
    torch.testing.assert_close(none[valid].double(), per_site, rtol=1e-5, atol=1e-6)


def test_gamma_zero_is_cross_entropy():
    logits = torch.randn(5, 11, 4)
    target = torch.randint(0, 4, (5, 11))
    target[torch.rand(5, 11) < 0.3] = -100
    expected = F.cross_entropy(logits.reshape(-1, 4), target.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(focal_loss(logits, target, gamma=0.0), expected)


def test_focal_down_weights_easy_sites():
    logits = torch.randn(64, 2)
    target = torch.randint(0, 2, (64,))
    ce = focal_loss(logits, target, gamma=0.0, reduction="none")
    fl = focal_loss(logits, target, gamma=2.0, reduction="none")
    assert (fl <= ce + 1e-7).all() and (fl < ce).any()


def test_no_valid_sites_and_extreme_logits():
    logits = torch.randn(2, 5, 2, requires_grad=True)
    target = torch.full((2, 5), -100)
    loss = focal_loss(logits, target)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))
    # p_t -> 1 exactly in float32: gradients stay finite for every gamma
    for gamma in (0.5, 2.0):
        big = torch.tensor([[60.0, -60.0], [-60.0, 60.0]], requires_grad=True)
        focal_loss(big, torch.tensor([0, 1]), gamma=gamma).backward()
        assert torch.isfinite(big.grad).all()


def test_low_precision_logits_and_bad_arguments():
    logits = torch.randn(4, 9, 4)
    target = torch.randint(0, 4, (4, 9))
    got = focal_loss(logits.bfloat16(), target)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, focal_loss(logits.bfloat16().float(), target))
    with pytest.raises(ValueError):
        focal_loss(logits, target, reduction="max")
    with pytest.raises(ValueError):
        focal_loss(logits, target[:, :5])


def test_imputation_loss_weights_and_mask():
    b, length = 3, 12
    out = {
        "hap1_logits": torch.randn(b, length, 2, requires_grad=True),
        "hap2_logits": torch.randn(b, length, 2),
        "gt_logits": torch.randn(b, length, 4),
    }
    l1, l2 = torch.randint(0, 2, (b, length)), torch.randint(0, 2, (b, length))
    gt = 2 * l1 + l2
    for lab in (l1, l2, gt):
        lab[:, 0] = lab[:, -1] = -100  # SOS/EOS
    mask = torch.rand(b, length) < 0.5
    mask[0, 3] = True
    batch = {"hap_1_label": l1, "hap_2_label": l2, "gt_label": gt, "mask": mask}
    total, parts = imputation_loss(out, batch)

    def by_hand(logits, lab):
        return hand_focal(logits, lab, 2.0, (lab != -100) & mask).mean()

    e1, e2, eg = (
        by_hand(out["hap1_logits"], l1),
        by_hand(out["hap2_logits"], l2),
        by_hand(out["gt_logits"], gt),
    )
    torch.testing.assert_close(total.double(), 3 * e1 + 3 * e2 + 4 * eg, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(parts["hap1"].double(), e1, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(parts["gt"].double(), eg, rtol=1e-5, atol=1e-6)
    assert not parts["total"].requires_grad and total.requires_grad
    # unmasked sites carry real labels here: they must not move the loss
    total.backward()
    grad = out["hap1_logits"].grad
    assert torch.equal(grad[~mask], torch.zeros_like(grad[~mask]))
    assert grad[mask & (l1 != -100)].abs().sum() > 0
