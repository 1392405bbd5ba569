"""Checks for the exercises of notebooks/06_heads.ipynb (box and mask heads)."""

from __future__ import annotations

import torch

from . import close, run_check


def _level_test_boxes() -> torch.Tensor:
    """Boxes the student did not choose: exact level boundaries, tiny and huge boxes, random ones."""
    g = torch.Generator().manual_seed(606)
    sides = torch.tensor([4.0, 40.0, 111.5, 112.0, 150.0, 224.0, 300.0, 448.0, 900.0, 2000.0])  # (10,)
    squares = torch.stack([torch.full_like(sides, 5.0), torch.full_like(sides, 7.0), 5.0 + sides, 7.0 + sides], 1)
    wide = torch.tensor([[0.0, 0.0, 224.0, 56.0], [10.0, 10.0, 458.0, 122.0], [0.0, 0.0, 896.0, 224.0]])  # (3, 4)
    xy = torch.rand(40, 2, generator=g) * 200  # (40, 2)
    wh = torch.exp(torch.rand(40, 2, generator=g) * 6.5) + 1.0  # (40, 2) sizes from 2 to ~670 px
    random_boxes = torch.cat([xy, xy + wh], dim=1)  # (40, 4)
    return torch.cat([squares, wide, random_boxes])  # (53, 4)


def check_assign_levels(my_assign_levels) -> bool:
    """my_assign_levels(boxes (N, 4)) -> (N,) FPN level k in 2..5 (FPN Eq. 1, k0 = 4, clamped)."""
    from ..poolers import assign_levels

    def compare():
        boxes = _level_test_boxes()
        expected = assign_levels(boxes) + 2  # (N,) library index 0..3 -> level 2..5
        got = torch.as_tensor(my_assign_levels(boxes.clone()))
        assert got.shape == expected.shape, f"expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
        if bool((got >= 0).all()) and bool((got <= 3).all()) and not bool((got >= 2).all()):
            raise AssertionError("return the level k itself (2..5), not an index 0..3")
        wrong = torch.nonzero(got.to(torch.int64) != expected).flatten()
        if wrong.numel():
            j = int(wrong[0])
            b = boxes[j]
            side = float(torch.sqrt((b[2] - b[0]) * (b[3] - b[1])))
            raise AssertionError(f"{wrong.numel()} of {len(boxes)} boxes wrong, e.g. box {b.tolist()} "
                                 f"(sqrt(wh) = {side:.1f}): expected P{int(expected[j])}, got {int(got[j])}")

    return run_check("FPN level assignment", compare)


def check_gt_class_deltas(my_gt_class_deltas) -> bool:
    """my_gt_class_deltas(box_deltas (N, (K+1)*4), labels (N,)) -> (P, 4) deltas of the GT class of the positives."""

    def compare():
        g = torch.Generator().manual_seed(607)
        for num_rois, num_classes in ((12, 4), (30, 91)):
            deltas = torch.randn(num_rois, num_classes * 4, generator=g)  # (N, (K+1)*4)
            labels = torch.randint(0, num_classes, (num_rois,), generator=g)  # (N,)
            labels[:3] = torch.tensor([0, num_classes - 1, 1])  # background, last class and class 1 present
            positive = torch.nonzero(labels > 0).squeeze(1)  # (P,)
            expected = deltas.reshape(num_rois, num_classes, 4)[positive, labels[positive]]  # (P, 4)
            got = my_gt_class_deltas(deltas.clone(), labels.clone())
            assert got is not None, "your function returned None"
            got = torch.as_tensor(got)
            assert got.shape == expected.shape, (f"with K+1 = {num_classes}: expected shape {tuple(expected.shape)} "
                                                 f"(one row per positive RoI), got {tuple(got.shape)}")
            assert close(got, expected), (f"with K+1 = {num_classes}: wrong values; row i should be columns "
                                          f"4c..4c+3 of the i-th positive RoI, c its label")

    return run_check("deltas of the GT class", compare)


def check_sample_counts(my_sample_counts) -> bool:
    """my_sample_counts(num_positive, num_negative, batch_size, positive_fraction) -> (num_pos, num_neg),
    compared with what BalancedSampler actually keeps."""
    from ..matcher import BalancedSampler

    def compare():
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
