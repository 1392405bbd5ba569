"""Checks for the exercises of notebooks/03_anchors.ipynb (anchors on the pyramid).

Each check calls the student's function on inputs of our choosing and compares it with the
library: AnchorGenerator (itself proven equal to torchvision's) for the anchors of one level and
for anchor counts, and box_iou on a real anchor grid for the worst-case IoU.
"""

from __future__ import annotations

import torch

from ..anchors import AnchorGenerator
from ..boxes import box_iou
from . import close, need_function, run_check, tiny_backbone


def check_level_anchors(answer) -> bool:
    """answer(size, aspect_ratios, stride, h, w) -> (h*w*k, 4) x1y1x2y2: the anchors of one level, in the
    library's order (row y, then column x, then the k ratios) and with its rounding."""

    def compare():
        need_function(answer)
        cases = [(8, (0.5, 1.0, 2.0), 4, 3, 5), (32, (0.5, 1.0, 2.0), 16, 4, 3),
                 (100, (0.25, 1.0, 3.0), 10, 2, 4), (64, (1.0,), 32, 3, 3)]
        for size, ratios, stride, h, w in cases:
            generator = AnchorGenerator(((size,),), (ratios,))
            expected = generator((h * stride, w * stride), [(h, w)])  # (h*w*k, 4)
            got = answer(size, tuple(ratios), stride, h, w)
            what = f"size {size}, ratios {ratios}, stride {stride}, {h}x{w} grid"
            assert isinstance(got, torch.Tensor), f"return a tensor, got {type(got).__name__}"
            assert tuple(got.shape) == tuple(expected.shape), (
                f"{what}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}")
            if not close(got, expected, atol=1e-4):
                first = int((got.double() - expected.double()).abs().sum(1).argmax())
                assert False, (f"{what}: row {first} should be {expected[first].tolist()}, got {got[first].tolist()} "
                               "(centres at (x * stride, y * stride)? corners rounded? order y, x, ratio?)")

    return run_check("anchors of one level", compare)


def check_count_anchors(answer) -> bool:
    """answer(H, W, k) -> the number of anchors over P2..P6 for a padded batch of H x W pixels, k per position."""

    def compare():
        need_function(answer)
        backbone = tiny_backbone()  # P2..P6 as the library computes them
        for (H, W), k in [((128, 128), 3), ((96, 160), 3), ((224, 96), 9), ((320, 288), 1), ((64, 64), 3)]:
            with torch.no_grad():
                levels = backbone(torch.zeros(1, 3, H, W))  # [P2..P6]
            sizes = [tuple(P.shape[-2:]) for P in levels]
            ratios = tuple(float(r) for r in torch.logspace(-1, 1, k, base=2).tolist()) if k > 1 else (1.0,)
            generator = AnchorGenerator(((32,),) * 5, (ratios,) * 5)
            expected = generator((H, W), sizes).shape[0]
            got = answer(H, W, k)
            assert got is not None, "return a number"
            assert int(got) == expected, f"H x W = {H} x {W}, k = {k}: expected {expected:,} anchors, got {int(got):,}"

    return run_check("number of anchors", compare)


def check_worst_case_iou(answer) -> bool:
    """answer(size, stride) -> the IoU between a size x size box placed as far from every anchor centre
    as the grid allows and its best square anchor of the same size (stride <= size)."""

    def compare():
        need_function(answer)
        for size, stride in [(8, 4), (32, 4), (64, 16), (20, 8), (16, 16), (40, 10)]:
            generator = AnchorGenerator(((size,),), ((1.0,),))
            cells = 8
            anchors = generator((cells * stride, cells * stride), [(cells, cells)])  # (64, 4)
            centre = 3.5 * stride  # midway between four anchor centres, away from the border
            box = torch.tensor([[centre - size / 2, centre - size / 2, centre + size / 2, centre + size / 2]])
            expected = box_iou(box, anchors).max().item()
            got = answer(size, stride)
            assert got is not None, "return a number"
            assert close(float(got), expected, atol=1e-4), (
                f"size {size}, stride {stride}: expected {expected:.4f}, got {float(got):.4f}")

    return run_check("worst-case IoU of a grid", compare)
