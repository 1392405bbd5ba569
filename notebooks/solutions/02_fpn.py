"""Worked solutions to the exercises of 02_fpn.ipynb (for teachers; tests/test_exercises.py runs them).

CHECKS pairs every check the notebook calls with its solution; WRONG holds plausible mistakes that
the checks must reject.
"""

import math

import torch.nn.functional as F

from mrcnn_teach.exercises.nb02 import check_fpn_num_params, check_pyramid_sizes, check_top_down_merge


# Exercise 1 -------------------------------------------------------------------------------------
def pyramid_sizes(H, W):
    """Every stride-2 layer of ResNet (conv1, the max pool, the first conv of res3/res4/res5) maps a
    side n to ceil(n / 2), and P6's max pool (kernel 1, stride 2) does the same to P5. Nested ceilings
    of halvings equal one ceiling: ceil(ceil(n / 2) / 2) = ceil(n / 4). So P_l has side ceil(n / 2^l)."""
    return [(math.ceil(H / 2**level), math.ceil(W / 2**level)) for level in range(2, 7)]


# Exercise 2 -------------------------------------------------------------------------------------
def top_down_merge(coarse, lateral):
    """Upsample the coarser merged map to the lateral's exact size (nearest neighbour), then add.
    size= instead of scale_factor=2: when the finer side is odd, 2 x the coarse side is one too many."""
    return lateral + F.interpolate(coarse, size=lateral.shape[-2:], mode="nearest")  # (B, d, h, w)


# Exercise 3 -------------------------------------------------------------------------------------
def fpn_num_params(in_channels, d):
    """Per level: a 1x1 lateral conv (c_l * d weights + d biases) and a 3x3 output conv (9 * d * d + d).
    P6 is a max pool: no parameters."""
    laterals = sum(c * d + d for c in in_channels)
    outputs = len(in_channels) * (9 * d * d + d)
    return laterals + outputs


CHECKS = [
    (check_pyramid_sizes, pyramid_sizes),
    (check_top_down_merge, top_down_merge),
    (check_fpn_num_params, fpn_num_params),
]


# Plausible mistakes ----------------------------------------------------------------------------
def sizes_by_floor(H, W):  # "H // 4": right only when H and W are multiples of 64
    return [(H // 2**level, W // 2**level) for level in range(2, 7)]


def merge_times_two(coarse, lateral):  # the seed's scale_factor=2: breaks on odd sizes
    return lateral + F.interpolate(coarse, scale_factor=2, mode="nearest")


def merge_bilinear(coarse, lateral):  # right shape, but FPN (and the trained weights) use nearest
    return lateral + F.interpolate(coarse, size=lateral.shape[-2:], mode="bilinear", align_corners=False)


def params_seed_style(in_channels, d):  # the seed's FPN: 3x3 convs on two middle levels only
    return sum(c * d + d for c in in_channels) + 2 * (9 * d * d + d)


WRONG = [
    (check_pyramid_sizes, sizes_by_floor),
    (check_top_down_merge, merge_times_two),
    (check_top_down_merge, merge_bilinear),
    (check_fpn_num_params, params_seed_style),
    (check_pyramid_sizes, None),
]
