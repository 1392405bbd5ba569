"""Checks for the exercises of notebooks/00_tour.ipynb (a tour of the whole model).

Each check compares the student's answer with the library itself on sizes and boxes the student
did not choose: the feature sizes with a `shapes_tiny` backbone run on a zero batch, the anchor
count with its AnchorGenerator, the FPN level with `poolers.assign_levels`.
"""

from __future__ import annotations

import torch

from . import run_check

# Padded batch sizes (multiples of 32), some with an odd P5 side so that P6 needs a ceil.
SIZES = [(128, 128), (96, 160), (224, 64), (32, 320)]
# (w, h) of boxes in image pixels: FPN Eq. 1 at, below and above each level boundary, and clamped.
BOXES = [(64, 64), (224, 224), (112, 112), (111, 113), (10, 10), (500, 700), (300, 150), (448, 448),
         (447, 447), (1, 1), (56, 56), (40, 200)]


def _shapes_tiny():
    from ..configs import build_maskrcnn

    torch.manual_seed(0)
    return build_maskrcnn("shapes_tiny", num_classes=4).eval()


def check_feature_sizes(feature_sizes) -> bool:
    """feature_sizes(H, W) -> [(h, w)] of P2..P6 for a padded H x W batch."""

    def compare():
        if feature_sizes is None:
            raise NotImplementedError
        model = _shapes_tiny()
        for H, W in SIZES:
            with torch.no_grad():
                features = model.backbone(torch.zeros(1, 3, H, W))
            expected = [tuple(P.shape[-2:]) for P in features]
            got = [tuple(int(v) for v in hw) for hw in feature_sizes(H, W)]
            assert got == expected, f"for a {H}x{W} batch expected {expected}, got {got}"

    return run_check("feature sizes of P2..P6", compare)


def check_anchor_count(count_anchors) -> bool:
    """count_anchors(H, W) -> the number of anchors shapes_tiny puts on a padded H x W batch."""

    def compare():
        if count_anchors is None:
            raise NotImplementedError
        model = _shapes_tiny()
        for H, W in SIZES:
            with torch.no_grad():
                features = model.backbone(torch.zeros(1, 3, H, W))
            anchors = model.rpn.anchor_generator((H, W), [tuple(P.shape[-2:]) for P in features])
            got = count_anchors(H, W)
            assert int(got) == anchors.shape[0], f"for a {H}x{W} batch expected {anchors.shape[0]}, got {got}"

    return run_check("anchor count", compare)


def check_fpn_level(fpn_level) -> bool:
    """fpn_level(w, h) -> the pyramid level 2..5 that RoIAlign reads a w x h box from (FPN Eq. 1)."""

    def compare():
        if fpn_level is None:
            raise NotImplementedError
        from ..poolers import assign_levels

        boxes = torch.tensor([[0.0, 0.0, w, h] for w, h in BOXES])  # (N, 4)
        expected = (assign_levels(boxes) + 2).tolist()
        for (w, h), level in zip(BOXES, expected):
            got = fpn_level(w, h)
            assert int(got) == level, f"a {w}x{h} box goes to P{level}, you said {got}"

    return run_check("FPN level of a box", compare)
