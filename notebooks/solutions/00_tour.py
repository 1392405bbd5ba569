"""Worked solutions of the exercises of 00_tour.ipynb (for teachers; tests/test_exercises.py runs them)."""

import math

from mrcnn_teach.exercises.nb00 import check_anchor_count, check_feature_sizes, check_fpn_level


def feature_sizes(H, W):
    """(h, w) of P2..P6 for a padded H x W batch (H, W multiples of 32)."""
    sizes = [(H // 2**level, W // 2**level) for level in (2, 3, 4, 5)]  # P2..P5: exact strides 4..32
    h5, w5 = sizes[-1]
    sizes.append((math.ceil(h5 / 2), math.ceil(w5 / 2)))  # P6: kernel 1, stride 2 keeps ceil(n / 2)
    return sizes


def count_anchors(H, W, anchors_per_location=3):
    """shapes_tiny: 3 anchors (one size, three aspect ratios) at every position of P2..P6."""
    return sum(h * w * anchors_per_location for h, w in feature_sizes(H, W))


def fpn_level(w, h):
    """FPN Eq. 1: k = floor(4 + log2(sqrt(w h) / 224)), clamped to 2..5.

    The small epsilon keeps exact boundaries (e.g. 112x112 -> exactly 3) from being floored one level
    down by float round-off, as the library does.
    """
    k = math.floor(4 + math.log2(math.sqrt(w * h) / 224) + 1e-6)
    return min(max(k, 2), 5)


CHECKS = [
    (check_feature_sizes, feature_sizes),
    (check_anchor_count, count_anchors),
    (check_fpn_level, fpn_level),
]


def _p6_like_p5(H, W):  # forgets the ceil: a 96-px side gives a 3-px P5 and a 2-px (not 1-px) P6
    return [(H // 2**level, W // 2**level) for level in (2, 3, 4, 5, 6)]


def _anchors_without_p6(H, W):  # forgets the P6 level
    return sum(h * w * 3 for h, w in feature_sizes(H, W)[:4])


def _level_unclamped(w, h):  # forgets to clamp to 2..5
    return math.floor(4 + math.log2(math.sqrt(w * h) / 224) + 1e-6)


WRONG = [
    (check_feature_sizes, _p6_like_p5),
    (check_anchor_count, _anchors_without_p6),
    (check_fpn_level, _level_unclamped),
]
