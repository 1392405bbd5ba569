"""Checks for the exercises of notebooks/12_ablations.ipynb (the paper's ablations, in miniature)."""

from __future__ import annotations

import math

import torch

from . import close, run_check


def _seeds_needed(difference: float, std: float, k: float = 2.0) -> int:
    """The smallest n with |difference| > k * std * sqrt(2 / n) (n seeds per variant, same std)."""
    return math.floor(2 * k**2 * std**2 / difference**2) + 1


def check_seeds_needed(my_seeds_needed) -> bool:
    """my_seeds_needed(difference, std, k) -> the smallest number of seeds per variant n such that
    |difference| > k * (standard error of the difference of two means of n runs each)."""

    def compare():
        # (difference, std, k): none of them on a boundary, where float round-off could decide
        cases = [(0.6, 1.0, 2.0), (-3.4, 1.2, 2.0), (5.5, 0.8, 2.0), (1.1, 1.0, 3.0), (0.3, 0.05, 2.0),
                 (0.02, 0.011, 2.5)]
        for difference, std, k in cases:
            expected = _seeds_needed(difference, std, k)
            got = my_seeds_needed(difference, std, k)
            assert got is not None, "your function returned None"
            assert float(got) == int(got), f"the number of seeds is a whole number, got {got!r}"
            assert int(got) == expected, (f"difference {difference}, std {std}, k {k}: expected {expected} seeds, "
                                          f"got {got}")

    return run_check("seeds needed", compare)


def _library_mask_logit_shape(overrides: dict, num_rois: int, num_classes: int) -> tuple:
    """Build the shapes_tiny model with `overrides` and run its mask predictor on num_rois dummy RoIs."""
    from .. import build_maskrcnn

    model = build_maskrcnn("shapes_tiny", num_classes=num_classes, **overrides).eval()
    channels = model.config["mask_head_channels"][-1]  # the width of the mask trunk's last conv
    roi_size = model.config["mask_roi_size"]
    with torch.no_grad():
        logits = model.roi_heads.mask_predictor(torch.zeros(num_rois, channels, roi_size, roi_size))
    return tuple(logits.shape)


def check_mask_logit_shape(my_mask_logit_shape) -> bool:
    """my_mask_logit_shape(overrides, num_rois, num_classes) -> the shape of the mask logits, as a tuple."""

    def compare():
        variants = [{}, {"mask_loss": "softmax"}, {"roi_layer": "pool"}, {"class_agnostic_masks": True}]
        for num_rois, num_classes in ((7, 4), (3, 91)):
            for overrides in variants:
                expected = _library_mask_logit_shape(overrides, num_rois, num_classes)
                got = my_mask_logit_shape(dict(overrides), num_rois, num_classes)
                assert got is not None, "your function returned None"
                assert tuple(got) == expected, (f"overrides {overrides}, {num_rois} RoIs, num_classes={num_classes}: "
                                                f"expected {expected}, got {tuple(got)}")

    return run_check("mask logit shapes", compare)


def _snap_error(boxes: torch.Tensor, stride: float) -> torch.Tensor:
    from ..roi_ops import _round_half_away

    snapped = _round_half_away(boxes / stride) * stride  # (K, 4) corners on the grid of cell positions
    return (snapped - boxes).abs().amax(dim=1)  # (K,)


def check_snap_error(my_snap_error) -> bool:
    """my_snap_error(boxes (K, 4) in image pixels, stride) -> (K,) the largest distance, in image pixels,
    that RoIPool's first rounding moves any of the box's four coordinates."""

    def compare():
        g = torch.Generator().manual_seed(1201)
        corner = torch.rand(50, 2, generator=g) * 90  # (50, 2)
        boxes = torch.cat([corner, corner + 8 + torch.rand(50, 2, generator=g) * 60], dim=1)  # (50, 4)
        boxes[0] = torch.tensor([6.0, 10.0, 38.0, 42.0])  # exact halves of a stride-4 cell: 1.5, 2.5, 9.5, 10.5
        for stride in (4, 16, 32):
            expected = _snap_error(boxes, stride)  # (50,)
            got = my_snap_error(boxes.clone(), stride)
            assert got is not None, "your function returned None"
            got = torch.as_tensor(got)
            assert got.shape == expected.shape, f"stride {stride}: expected shape {tuple(expected.shape)}, " \
                                                f"got {tuple(got.shape)}"
            assert close(got, expected), (f"stride {stride}: box {boxes[1].tolist()} moves by "
                                          f"{float(expected[1]):.4f} px, you give {float(got[1]):.4f}")

    return run_check("RoIPool snapping error", compare)
