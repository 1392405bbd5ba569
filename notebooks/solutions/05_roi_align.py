"""Worked solutions to the exercises of 05_roi_align.ipynb (for teachers; tests/test_exercises.py runs them).

CHECKS pairs every check the notebook calls with its solution; WRONG pairs each check with a
plausible mistake that the check must reject.
"""

import torch

from mrcnn_teach import roi_ops
from mrcnn_teach.exercises.nb05 import check_aligned_roi_align, check_bin_gradient_sums, check_shifted_roipool


# Exercise 1 -------------------------------------------------------------------------------------
def shifted_roipool():
    """RoIPool of the example after a 0.49-cell shift, worked on paper from the map of section 2.

    Along y nothing moves: rows 0..4, bins rows 0..2 and 2..4. Along x, in cells:
    - to the right, the box runs 0.8025..4.365: x1 crosses the 0.5 mark and snaps to 1, x2 stays 4;
      4 cells, so the bins are columns 1..2 and 3..4 (no overlap any more). The maxima do not move:
      rows 0..2 x cols 1..2 -> 1.6871, x cols 3..4 -> 0.4676; rows 2..4 x cols 1..2 -> 2.0242,
      x cols 3..4 -> 2.3571. The bins changed, the output did not (the winning cells stayed inside).
    - to the left, 0.3125 - 0.49 = -0.1775 snaps to 0 and 3.875 - 0.49 = 3.385 snaps to 3: columns
      0..1 and 2..3. Rows 0..2 x cols 0..1 -> 1.6871, x cols 2..3 -> 0.4676; rows 2..4 x cols 0..1
      -> 1.6871 (the 2.0242 at column 2 has left the bin), x cols 2..3 -> 2.0242 (2.3571 at column 4 left).
    So a shift under half a cell can change RoIPool's output, or change its bins and not its output.
    """
    right = [[1.6871, 0.4676], [2.0242, 2.3571]]
    left = [[1.6871, 0.4676], [1.6871, 2.0242]]
    return right, left


def shifted_roipool_unchanged():
    """Wrong: "less than half a cell never changes RoIPool" -- the unshifted output, twice."""
    same = [[1.6871, 0.4676], [2.0242, 2.3571]]
    return same, same


def shifted_roipool_outward():
    """Wrong: snaps the box outwards (floor for x1, ceil for x2) instead of to the nearest cell."""
    with torch.random.fork_rng():
        torch.manual_seed(1)
        feature = torch.randn(6, 6)  # the map of section 2
    outputs = []
    for x1, x2 in ((25.68, 139.68), (-5.68, 108.32)):
        first, stop = roi_ops._pool_bins(torch.tensor([int(torch.floor(torch.tensor(x1 / 32)))]),
                                         torch.tensor([int(torch.ceil(torch.tensor(x2 / 32)))]), 2, 6, torch.float32)
        cols = [(max(int(a), 0), int(b)) for a, b in zip(first[0], stop[0])]
        outputs.append([[feature[r0:r1, c0:c1].max().item() for c0, c1 in cols] for r0, r1 in ((0, 3), (2, 5))])
    return tuple(outputs)


def shifted_roipool_copied():
    """Wrong: copies section 3's torchvision.ops.roi_pool call with the shifted boxes (right numbers, no work)."""
    import torchvision

    with torch.random.fork_rng():
        torch.manual_seed(1)
        feature = torch.randn(1, 1, 6, 6)  # the map of section 2
    boxes = ((25.68, 10.0, 139.68, 124.0), (-5.68, 10.0, 108.32, 124.0))
    return tuple(torchvision.ops.roi_pool(feature, [torch.tensor([b])], 2, 1 / 32)[0, 0].tolist() for b in boxes)


# Exercise 2 -------------------------------------------------------------------------------------
def bin_gradient_sums(features, boxes, output_size, spatial_scale, sampling_ratio):
    """Sum over the map of each bin's gradient, by autograd: one backward pass per output bin.

    Why 1: a sample at (y, x) has weights (1-v)(1-u), (1-v)u, v(1-u), vu on its four cells, which sum
    to ((1-v) + v)((1-u) + u) = 1; a bin is the mean of its samples, so its gradient sums to 1 too --
    in section 6's terms, every row of A and of B sums to 1, and the bin's gradient is A[p, i] B[q, j].
    A sample more than one cell off the map reads 0 with weight 0, so a bin that hangs off the map
    sums to the fraction of its samples on the map, and its output is shrunk towards 0 by that much.
    RoIPool: 1 per bin (all of it on the winning cell), 0 for a bin clipped away entirely.
    """
    leaf = features.clone().requires_grad_()
    out = roi_ops.roi_align(leaf, boxes, output_size, spatial_scale, sampling_ratio)[:, 0]  # (K, ph, pw)
    sums = torch.zeros_like(out)
    for index in torch.cartesian_prod(*(torch.arange(n) for n in out.shape)).tolist():
        grad, = torch.autograd.grad(out[tuple(index)], leaf, retain_graph=True)  # (B, 1, H, W)
        sums[tuple(index)] = grad.sum()
    return sums  # (K, ph, pw)


def bin_gradient_sums_ones(features, boxes, output_size, spatial_scale, sampling_ratio):
    """Wrong: "it is always 1" -- forgets the samples that fall off the map."""
    out = roi_ops.roi_align(features, boxes, output_size, spatial_scale, sampling_ratio)[:, 0]  # (K, ph, pw)
    return torch.ones_like(out)


def bin_gradient_sums_inside_box(features, boxes, output_size, spatial_scale, sampling_ratio):
    """Wrong: sums each bin's gradient only over the cells whose centres lie inside the box (misses the rim)."""
    leaf = features.clone().requires_grad_()
    out = roi_ops.roi_align(leaf, boxes, output_size, spatial_scale, sampling_ratio)[:, 0]  # (K, ph, pw)
    height, width = features.shape[-2:]
    ys, xs = torch.arange(height)[:, None], torch.arange(width)[None, :]
    sums = torch.zeros_like(out)
    for index in torch.cartesian_prod(*(torch.arange(n) for n in out.shape)).tolist():
        grad, = torch.autograd.grad(out[tuple(index)], leaf, retain_graph=True)
        x1, y1, x2, y2 = (boxes[index[0], 1:] * spatial_scale).tolist()
        inside = (xs >= x1) & (xs <= x2) & (ys >= y1) & (ys <= y2)  # (H, W)
        sums[tuple(index)] = grad[int(boxes[index[0], 0]), 0][inside].sum()
    return sums


# Exercise 3 -------------------------------------------------------------------------------------
def roi_align_aligned(features, boxes, output_size, spatial_scale, sampling_ratio):
    """buggy_roi_align_aligned, fixed: aligned=True moves the box by half a *cell*, x * scale - 0.5.

    The bug subtracted half a *pixel* before scaling, (x - 0.5) * scale, which is the same only at
    spatial_scale 1. At stride 32 it reads 16 - 0.5 = 15.5 pixels too far right and down.
    """
    _, height, width = features.shape
    P, G = output_size, sampling_ratio
    x1, y1, x2, y2 = (boxes * spatial_scale - 0.5).unbind(dim=1)  # (K,) x4  the box in feature cells
    steps = (torch.arange(P * G) + 0.5) / (P * G)  # (P*G,)

    def weights(low, high, size):  # -> (K, P*G, size)
        pos = low[:, None] + steps * (high - low)[:, None]  # (K, P*G)
        on_map = ((pos >= -1) & (pos <= size))[..., None]  # (K, P*G, 1)
        pos = pos.clamp(0, size - 1)[..., None]  # (K, P*G, 1)
        return (1 - (pos - torch.arange(size)).abs()).clamp(min=0) * on_map  # (K, P*G, size)

    samples = torch.einsum("kah,chw,kbw->kcab", weights(y1, y2, height), features, weights(x1, x2, width))  # (K, C, PG, PG)
    return samples.unflatten(3, (P, G)).unflatten(2, (P, G)).mean(dim=(3, 5))  # (K, C, P, P)


def roi_align_half_pixel(features, boxes, output_size, spatial_scale, sampling_ratio):
    """Wrong: the notebook's buggy copy, half a pixel instead of half a cell: (x - 0.5) * s = x * s - 0.5 + 0.5 * (1 - s)."""
    return roi_align_aligned(features, boxes + 0.5 * (1 - spatial_scale) / spatial_scale, output_size, spatial_scale,
                             sampling_ratio)


def roi_align_no_offset(features, boxes, output_size, spatial_scale, sampling_ratio):
    """Wrong: "fixed" by dropping the offset altogether -- that is aligned=False (without its 1-cell minimum)."""
    return roi_align_aligned(features, boxes + 0.5 / spatial_scale, output_size, spatial_scale, sampling_ratio)


CHECKS = [
    (check_shifted_roipool, shifted_roipool),
    (check_bin_gradient_sums, bin_gradient_sums),
    (check_aligned_roi_align, roi_align_aligned),
]

WRONG = [
    (check_shifted_roipool, shifted_roipool_unchanged),
    (check_shifted_roipool, shifted_roipool_outward),
    (check_shifted_roipool, shifted_roipool_copied),
    (check_bin_gradient_sums, bin_gradient_sums_ones),
    (check_bin_gradient_sums, bin_gradient_sums_inside_box),
    (check_aligned_roi_align, roi_align_half_pixel),
    (check_aligned_roi_align, roi_align_no_offset),
]
