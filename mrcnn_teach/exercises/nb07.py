"""Checks for the exercises of notebooks/07_mask_loss.ipynb (the mask loss: per-class sigmoid vs softmax)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from . import close, run_check


def _example(seed: int, num_rois: int = 5, num_classes: int = 4, m: int = 8):
    """Random GT masks, RoIs and logits of one image, and the targets the library makes from them."""
    from ..masks import project_masks_on_boxes

    g = torch.Generator().manual_seed(seed)
    num_gt, size = 3, 32
    gt_masks = (torch.rand(num_gt, size, size, generator=g) > 0.5).to(torch.uint8)  # (G, H, W)
    gt_labels = torch.randint(1, num_classes, (num_gt,), generator=g)  # (G,) in 1..K
    xy = torch.rand(num_rois, 2, generator=g) * 16  # (P, 2)
    rois = torch.cat([xy, xy + 4 + torch.rand(num_rois, 2, generator=g) * 12], dim=1)  # (P, 4)
    matched = torch.randint(0, num_gt, (num_rois,), generator=g)  # (P,)
    logits = torch.randn(num_rois, num_classes, m, m, generator=g) * 2  # (P, K+1, m, m)
    targets = project_masks_on_boxes(gt_masks, rois, matched, m)  # (P, m, m) soft
    return logits, rois, gt_masks, gt_labels, matched, targets


def _softmax_mask_loss(mask_logits, labels, targets):
    """The library's softmax variant (roi_heads.softmax_mask_loss) in the notebook's argument order."""
    from ..roi_heads import softmax_mask_loss

    return softmax_mask_loss(mask_logits, targets, labels)  # ()


def _autograd(loss_fn, logits, labels, targets):
    x = logits.clone().requires_grad_(True)  # (P, C, m, m)
    loss_fn(x, labels, targets).backward()
    return x.grad  # (P, C, m, m)


def check_mask_loss(my_mask_loss) -> bool:
    """my_mask_loss(mask_logits (P, C, m, m), labels (P,), targets (P, m, m)) -> () equals the library's mask_loss,
    for per-class (C = K+1) and class-agnostic (C = 1) logits."""
    from ..roi_heads import mask_loss

    def compare():
        for seed, agnostic in ((701, False), (702, True)):
            logits, rois, gt_masks, gt_labels, matched, targets = _example(seed)
            if agnostic:
                logits = logits[:, :1]  # (P, 1, m, m)
            expected = mask_loss(logits, [rois], [gt_masks], [gt_labels], [matched])  # ()
            got = my_mask_loss(logits.clone(), gt_labels[matched].clone(), targets.clone())
            assert got is not None, "your function returned None"
            kind = "class-agnostic (C = 1)" if agnostic else "per-class (C = K+1)"
            assert torch.as_tensor(got).numel() == 1, f"{kind}: return one number (the mean), got shape " \
                                                      f"{tuple(torch.as_tensor(got).shape)}"
            assert close(torch.as_tensor(got).reshape(()), expected), \
                f"{kind}: expected {float(expected):.4f}, got {float(torch.as_tensor(got).reshape(())):.4f}"

    return run_check("mask loss", compare)


def _check_gradient(name, my_fn, loss_fn):
    def compare():
        for seed in (703, 704):
            logits, _, _, gt_labels, matched, targets = _example(seed)
            labels = gt_labels[matched]  # (P,)
            expected = _autograd(loss_fn, logits, labels, targets)  # (P, K+1, m, m)
            with torch.no_grad():
                got = my_fn(logits.clone(), labels.clone(), targets.clone())
            assert got is not None, "your function returned None"
            got = torch.as_tensor(got)
            assert got.shape == expected.shape, f"expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
            scale = float(expected.abs().max())
            wrong_channels = [c for c in range(expected.shape[1])
                              if not close(got[:, c] / scale, expected[:, c] / scale, atol=1e-4)]
            assert not wrong_channels, f"wrong in channel(s) {wrong_channels} (compared with autograd)"

    return run_check(name, compare)


def check_bce_gradient(my_bce_gradient) -> bool:
    """my_bce_gradient(mask_logits, labels, targets) -> d L_mask / d mask_logits, (P, K+1, m, m)."""

    def sigmoid_loss(x, labels, targets):
        return F.binary_cross_entropy_with_logits(x[torch.arange(len(labels)), labels], targets)

    return _check_gradient("BCE gradient", my_bce_gradient, sigmoid_loss)


def check_softmax_gradient(my_softmax_gradient) -> bool:
    """my_softmax_gradient(mask_logits, labels, targets) -> d softmax_mask_loss / d mask_logits, (P, K+1, m, m)."""
    return _check_gradient("softmax gradient", my_softmax_gradient, _softmax_mask_loss)
