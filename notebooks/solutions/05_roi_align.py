"""Worked solutions to the exercises of 05_roi_align.ipynb (for teachers; tests/test_exercises.py runs them).

CHECKS pairs every check the notebook calls with its solution; WRONG pairs each check with a
plausible mistake that the check must reject.
"""

import math

import torch

from mrcnn_teach.exercises.nb05 import check_bilinear, check_sample_positions, check_snap


# Exercise 1 -------------------------------------------------------------------------------------
def bilinear(feature: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """Value of feature (H, W) at row y, column x, where cell (i, j) sits at the point (i, j)."""
    height, width = feature.shape
    # The cell above-left of the point; on the last row (column) both neighbours are that row (column).
    y0, x0 = min(int(math.floor(y)), height - 1), min(int(math.floor(x)), width - 1)
    y1, x1 = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
    v, u = y - y0, x - x0  # fractions along y and x, in [0, 1)  (0 on the last row / column)
    top = (1 - u) * feature[y0, x0] + u * feature[y0, x1]  # interpolate along x on row y0
    bottom = (1 - u) * feature[y1, x0] + u * feature[y1, x1]  # ... and on row y1
    return (1 - v) * top + v * bottom  # then along y


def bilinear_transposed(feature, y, x):
    """Wrong: the fraction along x weights the rows and the fraction along y the columns."""
    height, width = feature.shape
    y0, x0 = min(int(math.floor(y)), height - 1), min(int(math.floor(x)), width - 1)
    y1, x1 = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
    v, u = y - y0, x - x0
    return (1 - v) * (1 - u) * feature[y0, x0] + v * (1 - u) * feature[y0, x1] + (1 - v) * u * feature[y1, x0] + v * u * feature[y1, x1]


# Exercise 2 -------------------------------------------------------------------------------------
def snap(boxes: torch.Tensor, spatial_scale: float) -> torch.Tensor:
    """RoIPool's first quantisation: (K, 4) image pixels -> (K, 4) whole cells, halves rounded away from 0 (C's round)."""
    scaled = boxes * spatial_scale  # (K, 4)  in feature cells, not yet rounded
    return (torch.sign(scaled) * torch.floor(scaled.abs() + 0.5)).long()  # (K, 4)


def snap_round_half_even(boxes, spatial_scale):
    """Wrong: torch.round sends halves to the even neighbour (2.5 -> 2), torchvision's kernel sends them up (2.5 -> 3)."""
    return torch.round(boxes * spatial_scale).long()


# Exercise 3 -------------------------------------------------------------------------------------
def sample_positions(x1: float, x2: float, spatial_scale: float, pooled: int, sampling_ratio: int) -> torch.Tensor:
    """x of RoIAlign's samples (aligned=False): (pooled, sampling_ratio), row p = the samples of bin p."""
    start = x1 * spatial_scale  # in feature cells, not rounded
    length = max(x2 * spatial_scale - start, 1.0)  # aligned=False: a RoI is at least one cell wide
    bin_size = length / pooled
    p = torch.arange(pooled, dtype=torch.float32)[:, None]  # (P, 1)
    g = torch.arange(sampling_ratio, dtype=torch.float32)[None, :]  # (1, G)
    # Sample g sits at the centre of the g-th of sampling_ratio equal slices of bin p.
    return start + p * bin_size + (g + 0.5) * bin_size / sampling_ratio  # (P, G)


def sample_positions_at_slice_starts(x1, x2, spatial_scale, pooled, sampling_ratio):
    """Wrong: samples at the start of each slice instead of its centre."""
    start = x1 * spatial_scale
    bin_size = max(x2 * spatial_scale - start, 1.0) / pooled
    p = torch.arange(pooled, dtype=torch.float32)[:, None]
    g = torch.arange(sampling_ratio, dtype=torch.float32)[None, :]
    return start + p * bin_size + g * bin_size / sampling_ratio


def sample_positions_no_min_width(x1, x2, spatial_scale, pooled, sampling_ratio):
    """Wrong: forgets that aligned=False widens a RoI narrower than one cell to one cell."""
    start = x1 * spatial_scale
    bin_size = (x2 * spatial_scale - start) / pooled
    p = torch.arange(pooled, dtype=torch.float32)[:, None]
    g = torch.arange(sampling_ratio, dtype=torch.float32)[None, :]
    return start + p * bin_size + (g + 0.5) * bin_size / sampling_ratio


CHECKS = [
    (check_bilinear, bilinear),
    (check_snap, snap),
    (check_sample_positions, sample_positions),
]

WRONG = [
    (check_bilinear, bilinear_transposed),
    (check_snap, snap_round_half_even),
    (check_sample_positions, sample_positions_at_slice_starts),
    (check_sample_positions, sample_positions_no_min_width),
]
