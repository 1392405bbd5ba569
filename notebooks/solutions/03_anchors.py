"""Worked solutions to the exercises of 03_anchors.ipynb (for teachers; tests/test_exercises.py runs them).

CHECKS pairs every check the notebook calls with its solution; WRONG holds plausible mistakes that
the checks must reject.
"""

import math

import torch

from mrcnn_teach.exercises.nb03 import check_count_anchors, check_level_anchors, check_worst_case_iou


# Exercise 1 -------------------------------------------------------------------------------------
def level_anchors(size, aspect_ratios, stride, h, w):
    """The k = len(aspect_ratios) anchors of one size, tiled over an h x w grid with the given stride."""
    ratios = torch.tensor(aspect_ratios, dtype=torch.float32)  # (k,) r = height / width
    heights = size * ratios.sqrt()  # (k,) w * h = size^2 and h / w = r
    widths = size / ratios.sqrt()  # (k,)
    cell = (torch.stack([-widths, -heights, widths, heights], dim=1) / 2).round()  # (k, 4) whole pixels
    xs = torch.arange(w, dtype=torch.float32) * stride  # (w,) centres on the cell's top-left pixel
    ys = torch.arange(h, dtype=torch.float32) * stride  # (h,)
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")  # (h, w) each: row y outer, column x inner
    centres = torch.stack([cx, cy, cx, cy], dim=-1).reshape(-1, 1, 4)  # (h*w, 1, 4)
    return (centres + cell[None]).reshape(-1, 4)  # (h*w*k, 4)


# Exercise 2 -------------------------------------------------------------------------------------
def count_anchors(H, W, k=3):
    """P_l has ceil(H / 2^l) x ceil(W / 2^l) positions (l = 2..6), each with k anchors. For a batch
    padded to a multiple of 32 the ceiling only matters for P6."""
    return sum(math.ceil(H / 2**level) * math.ceil(W / 2**level) * k for level in range(2, 7))


# Exercise 3 -------------------------------------------------------------------------------------
def worst_case_iou(size, stride):
    """The farthest a box centre can be from every anchor centre is half a stride in x and in y. Two
    s x s squares shifted by (o, o) overlap in an (s - o) x (s - o) square."""
    overlap = max(size - stride / 2, 0.0) ** 2
    return overlap / (2 * size**2 - overlap)


CHECKS = [
    (check_level_anchors, level_anchors),
    (check_count_anchors, count_anchors),
    (check_worst_case_iou, worst_case_iou),
]


# Plausible mistakes ----------------------------------------------------------------------------
def anchors_cell_centred(size, aspect_ratios, stride, h, w):  # centres at (x + 0.5) * stride
    return level_anchors(size, aspect_ratios, stride, h, w) + stride / 2


def anchors_unrounded(size, aspect_ratios, stride, h, w):  # exact corners: torchvision rounds them
    ratios = torch.tensor(aspect_ratios, dtype=torch.float32)
    widths, heights = size / ratios.sqrt(), size * ratios.sqrt()
    cell = torch.stack([-widths, -heights, widths, heights], dim=1) / 2  # (k, 4), not rounded
    xs, ys = torch.arange(w) * stride, torch.arange(h) * stride
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")
    centres = torch.stack([cx, cy, cx, cy], dim=-1).reshape(-1, 1, 4)
    return (centres + cell[None]).reshape(-1, 4)


def count_without_p6(H, W, k=3):  # forgets the RPN's fifth level
    return sum(math.ceil(H / 2**level) * math.ceil(W / 2**level) * k for level in range(2, 6))


def count_with_floor(H, W, k=3):  # H // 64 for P6: wrong when H / 32 is odd
    return sum((H // 2**level) * (W // 2**level) * k for level in range(2, 7))


def iou_offset_one_axis(size, stride):  # forgets that the box is off-centre in y as well
    overlap = (size - stride / 2) * size
    return overlap / (2 * size**2 - overlap)


WRONG = [
    (check_level_anchors, anchors_cell_centred),
    (check_level_anchors, anchors_unrounded),
    (check_count_anchors, count_without_p6),
    (check_count_anchors, count_with_floor),
    (check_worst_case_iou, iou_offset_one_axis),
    (check_count_anchors, 217413),
]
