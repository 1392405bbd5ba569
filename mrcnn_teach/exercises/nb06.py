"""Checks for the exercises of notebooks/06_heads.ipynb (box and mask heads)."""

from __future__ import annotations

import torch

from . import close, need_function, refuse_names, run_check

# Exercise 1: square boxes of these sides (pixels), pooled with FPN Eq. 1 at canonical_scale = 32.
LEVEL_SIDES = (8.0, 16.0, 23.0, 31.0, 45.0, 64.0, 90.0)
LOW_CANONICAL_SCALE = 32


def check_levels_at_low_scale(answer) -> bool:
    """answer() -> the level k (2..5) of each side of LEVEL_SIDES with canonical_scale = 32, k0 = 4."""
    from ..poolers import assign_levels

    def compare():
        need_function(answer)
        refuse_names(answer, {"assign_levels"},
                     "work the levels out by hand and return them (the point is to predict what it does)")
        sides = torch.tensor(LEVEL_SIDES)  # (7,)
        boxes = torch.stack([torch.zeros(7), torch.zeros(7), sides, sides], dim=1)  # (7, 4)
        expected = (assign_levels(boxes, canonical_scale=LOW_CANONICAL_SCALE) + 2).tolist()  # levels 2..5
        got = answer()
        assert got is not None, "your function returned None"
        got = [int(k) for k in got]
        assert len(got) == len(expected), f"expected {len(expected)} levels, one per side, got {len(got)}"
        if all(0 <= k <= 3 for k in got) and not all(k >= 2 for k in got):
            raise AssertionError("give the level k itself (2..5), not an index 0..3")
        wrong = [f"side {s:g} px: P{k}, not P{g}" for s, k, g in zip(LEVEL_SIDES, expected, got) if k != g]
        assert not wrong, f"{len(wrong)} of {len(expected)} wrong, e.g. " + "; ".join(wrong[:2])

    return run_check("levels at canonical_scale 32", compare)


def check_sample_counts(my_sample_counts) -> bool:
    """my_sample_counts(num_positive, num_negative, batch_size, positive_fraction) -> (num_pos, num_neg),
    compared with what BalancedSampler actually keeps."""
    from ..matcher import BalancedSampler

    def compare():
        need_function(my_sample_counts)
        refuse_names(my_sample_counts, {"BalancedSampler"},
                     "count the positives and negatives yourself (the point is to predict what it does)")
        cases = [(40, 500, 512, 0.25), (3, 500, 512, 0.25), (200, 20, 64, 0.25), (10, 10, 64, 0.25),
                 (16, 300, 64, 0.25), (0, 100, 256, 0.5), (300, 0, 256, 0.5)]
        for num_positive, num_negative, batch_size, fraction in cases:
            labels = torch.cat([torch.ones(num_positive, dtype=torch.int64),
                                torch.zeros(num_negative, dtype=torch.int64)])  # (n,)
            pos, neg = BalancedSampler(batch_size, fraction)([labels])
            expected = (int(pos[0].sum()), int(neg[0].sum()))
            got = my_sample_counts(num_positive, num_negative, batch_size, fraction)
            assert got is not None, "your function returned None"
            got = tuple(int(v) for v in got)
            assert got == expected, (f"{num_positive} positives, {num_negative} negatives, batch {batch_size}, "
                                     f"fraction {fraction}: expected {expected}, got {got}")

    return run_check("sample counts", compare)


def _box_loss_cases():
    """(box_deltas (N, (K+1)*4), labels (N,), regression_targets (N, 4)): errors both inside and beyond beta."""
    g = torch.Generator().manual_seed(606)
    cases = []
    for num_rois, num_classes, scale in ((8, 4, 1.0), (20, 4, 0.05), (30, 91, 0.3)):
        labels = torch.randint(0, num_classes, (num_rois,), generator=g)  # (N,)
        labels[:3] = torch.tensor([0, num_classes - 1, 1])  # background, the last class and class 1 present
        targets = torch.randn(num_rois, 4, generator=g)  # (N, 4)
        deltas = torch.randn(num_rois, num_classes * 4, generator=g) * scale  # (N, (K+1)*4)
        deltas.reshape(num_rois, num_classes, 4)[torch.arange(num_rois), labels] += targets  # errors ~ scale
        cases.append((deltas, labels, targets))
    return cases


def check_box_loss_gradient(my_box_loss_gradient) -> bool:
    """my_box_loss_gradient(box_deltas, labels, regression_targets) -> (N, (K+1)*4) d L_box / d box_deltas,
    compared with autograd through roi_heads.box_loss (smooth-L1, beta = 1/9, summed, divided by N)."""
    from ..roi_heads import box_loss

    def compare():
        need_function(my_box_loss_gradient)
        for deltas, labels, targets in _box_loss_cases():
            leaf = deltas.clone().requires_grad_(True)  # (N, (K+1)*4)
            logits = torch.zeros(len(labels), deltas.shape[1] // 4)  # (N, K+1) the class loss plays no part
            _, loss = box_loss(logits, leaf, [labels], [targets])
            (expected,) = torch.autograd.grad(loss, leaf)  # (N, (K+1)*4)
            got = my_box_loss_gradient(deltas.clone(), labels.clone(), targets.clone())
            assert got is not None, "your function returned None"
            got = torch.as_tensor(got)
            K1 = deltas.shape[1] // 4
            assert got.shape == expected.shape, (f"with N = {len(labels)}, K+1 = {K1}: expected shape "
                                                 f"{tuple(expected.shape)}, got {tuple(got.shape)}")
            if not close(got, expected, atol=1e-6):
                bad = torch.nonzero((got - expected).abs() > 1e-6)[0].tolist()
                n, col = bad
                raise AssertionError(
                    f"with N = {len(labels)}, K+1 = {K1}: wrong at RoI {n} (label {int(labels[n])}), column "
                    f"{col} (class {col // 4}): expected {float(expected[n, col]):.5f}, got {float(got[n, col]):.5f}")

    return run_check("gradient of the box loss", compare)
