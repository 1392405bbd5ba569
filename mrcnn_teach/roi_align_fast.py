"""RoIAlign made fast: the same numbers as ``roi_ops.roi_align``, as two small matrix products per RoI.

Read ``roi_ops.roi_align`` first: sample points -> bilinear taps -> mean per bin. This file
regroups exactly those sums; the ``mixed`` kernel set uses it to train on a CPU (forward +
backward several times faster than torchvision's CPU kernel, benchmarks/README.md).

**RoIAlign is separable.** The sample points of one RoI lie on an axis-aligned grid: a sample's y
depends only on its bin row and sample row, its x only on its bin column and sample column.
Bilinear interpolation gives cell (y, x) the weight (weight of row y) x (weight of column x), and
torchvision's border rules factor the same way: a sample reads 0 when y < -1 or y > H, or x < -1
or x > W -- a product valid_y * valid_x -- while clamping at 0 and the last-cell rule act on one
coordinate at a time. Last, a bin's mean over grid_h x grid_w samples is the mean over its sample
rows times the mean over its sample columns. So for RoI n and channel c::

    pooled[n, c] = A_n @ F[b_n, c][rows_n][:, cols_n] @ B_n^T      # (ph, Sh) @ (Sh, Sw) @ (Sw, pw)

rows_n are the Sh rows of the map that the RoI's samples read (its *support* along y), and row p of
A_n holds, for each of them, the mean bilinear weight that the samples of bin row p put on it;
cols_n and B_n are the same along x. The windows F[b_n][rows_n][:, cols_n] of all RoIs are gathered
by one index operation, the rest is two batched matrix products, and autograd turns the gather
into a scatter-add for the backward pass.

Why bother: sample by sample, a 7x7 output with 2x2 samples per bin reads 4 cells per sample, 784
C-vectors per RoI, even when the RoI covers 5x5 cells. The support holds each cell once -- at most
2 * ph * grid_h rows, and never more than the rows the RoI spans -- and the weighting becomes dense
matrix products.
"""

import torch
from torch import Tensor

from .roi_ops import (_as_rois, _bilinear_taps, _channels_last_table, _pair, _roi_geometry,
                      _sample_positions, _sampling_grid)

# RoIAlign gathers its windows in runs of at most this many values (8 M floats = 32 MB): a memory
# guard. Much smaller runs make the backward pass slower (every run costs one zero-filled copy of
# the feature map there); larger ones gain nothing.
_GATHER_ELEMENTS = 2**23


def _interpolation_matrix(start: Tensor, length: Tensor, pooled: int, grid: Tensor, size: int):
    """One axis of RoIAlign as a small matrix per RoI: (K,) geometry, K >= 1 -> cells (K, S), count (K,), matrix (K, pooled, S).

    cells[n, :count[n]] lists, in increasing order, the cells of this axis (rows or columns) that
    RoI n's samples read with a non-zero weight: the RoI's *support* (the rest of the row is
    padding). matrix[n, p, s] is the weight with which bin p reads cell cells[n, s]: the bilinear
    weights of the bin's samples on that cell, summed and divided by the samples per bin on this axis.
    """
    k = start.shape[0]
    pos, exists = _sample_positions(start, length, pooled, grid, max(1, int(grid.max())))  # (K, P, G), (K, 1, G)
    index, weight = _bilinear_taps(pos, exists, size)  # (K, P, G, 2) x2
    index, weight = index.view(k, -1), weight.view(k, -1)  # (K, T)  T = P*G*2 taps per RoI

    # The support: mark the cells that some tap reads with a non-zero weight, then number them.
    # (Taps that read nothing -- padding samples, samples off the map, frac = 0 -- mark a spare cell.)
    used = torch.zeros(k, size + 1, dtype=torch.bool, device=index.device)  # (K, size + 1)
    used = used.scatter_(1, torch.where(weight != 0, index, size), True)[:, :size]  # (K, size)
    count = used.sum(dim=1)  # (K,)  cells in the support
    support = max(1, int(count.max()))  # S: every RoI's list is padded to the longest
    position = torch.arange(size, device=index.device).expand(k, size)  # (K, size)
    cells = torch.where(used, position, size).sort(dim=1).values[:, :support].clamp(max=size - 1)  # (K, S)
    column = (used.cumsum(dim=1) - 1).gather(1, index).clamp(min=0)  # (K, T)  each tap's cell's place in the list

    # Each tap adds its weight to its bin's row, in its cell's column (a padding column gets 0).
    # torchvision divides a bin's sum by count = grid_h * grid_w; the count factorises, so each
    # axis divides by its own grid (at least 1: a RoI with no samples pools to 0, not 0/0).
    share = (weight / grid.clamp(min=1)[:, None].to(weight.dtype)).view(k, pooled, -1)  # (K, P, 2G)
    matrix = weight.new_zeros(k, pooled, support).scatter_add_(2, column.view(k, pooled, -1), share)  # (K, P, S)
    return cells, count, matrix


def _ladder(size: Tensor) -> Tensor:
    """Round support sizes up to 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, ... (steps of at most 1.5x): (K,) -> (K,)."""
    exponent = torch.frexp(size.clamp(min=1).float()).exponent  # (K,)  size = mantissa * 2**exponent, mantissa in [0.5, 1)
    step = 2 ** (exponent - 2).clamp(min=0)  # (K,)  half the largest power of two <= size (at least 1)
    return (size + step - 1) // step * step  # (K,)


def _support_groups(count_h: Tensor, count_w: Tensor, max_cells: int) -> tuple[Tensor, list[tuple[int, int, int, int]]]:
    """Sort the RoIs into groups with supports of about the same size: -> order (K,), [(start, stop, Sh, Sw), ...].

    Group i is the RoIs order[start:stop]; Sh, Sw are the largest supports among them. A batched
    matrix product needs one window shape for the whole batch, and padding every RoI to the
    largest support would gather mostly padding for the small ones, so RoIs are bucketed by their
    support rounded up on a ladder of sizes. No group holds more than max_cells window cells.
    """
    height_key, width_key = _ladder(count_h), _ladder(count_w)  # (K,), (K,)
    bucket, order = (height_key * (int(width_key.max()) + 1) + width_key).sort()  # (K,), (K,)
    _, which, sizes = torch.unique_consecutive(bucket, return_inverse=True, return_counts=True)  # (K,), (n,)
    largest_h = count_h.new_ones(len(sizes)).scatter_reduce_(0, which, count_h[order], "amax")  # (n,)
    largest_w = count_w.new_ones(len(sizes)).scatter_reduce_(0, which, count_w[order], "amax")  # (n,)
    groups, start = [], 0
    for size, support_h, support_w in zip(sizes.tolist(), largest_h.tolist(), largest_w.tolist()):
        step = max(1, max_cells // (support_h * support_w))
        groups += [(first, min(first + step, start + size), support_h, support_w)
                   for first in range(start, start + size, step)]
        start += size
    return order, groups


def _runs(groups: list, max_cells: int):
    """Consecutive groups, cut into runs of at most max_cells window cells (at least one group each)."""
    run, cells = [], 0
    for group in groups:
        start, stop, support_h, support_w = group
        group_cells = (stop - start) * support_h * support_w
        if run and cells + group_cells > max_cells:
            yield run
            run, cells = [], 0
        run.append(group)
        cells += group_cells
    if run:
        yield run


def _separable_pool(window: Tensor, row_matrix: Tensor, col_matrix: Tensor) -> Tensor:
    """The heart of RoIAlign, pooled = row_matrix @ window @ col_matrix^T for every RoI and channel.

    window (k, Sh, Sw, C) the features on each RoI's support; row_matrix (k, ph, Sh);
    col_matrix (k, pw, Sw) -> (k, C, ph, pw). Two batched matrix products, one per axis.
    """
    k, support_h, support_w, channels = window.shape
    pooled_h, pooled_w = row_matrix.shape[1], col_matrix.shape[1]
    along_y = torch.bmm(row_matrix, window.view(k, support_h, support_w * channels))  # (k, ph, Sw*C)  rows summed
    along_y = along_y.view(k, pooled_h, support_w, channels).permute(0, 3, 1, 2)  # (k, C, ph, Sw)
    along_y = along_y.reshape(k, channels * pooled_h, support_w)  # (k, C*ph, Sw)  a copy: C moves to the front
    pooled = torch.bmm(along_y, col_matrix.transpose(1, 2))  # (k, C*ph, pw)  columns summed
    return pooled.view(k, channels, pooled_h, pooled_w)  # (k, C, ph, pw)


def roi_align(input: Tensor, boxes, output_size, spatial_scale: float = 1.0, sampling_ratio: int = -1, aligned: bool = False) -> Tensor:
    """RoIAlign, fast: same arguments and result as roi_ops.roi_align (and torchvision.ops.roi_align).

    Computed in the separable form explained at the top of this file: per RoI, an interpolation
    matrix for each axis, one gather of the RoI's window, two batched matrix products.
    """
    pooled_h, pooled_w = _pair(output_size)
    rois = _as_rois(input, boxes, "roi_align")  # (K, 5)
    _, channels, height, width = input.shape
    if rois.shape[0] == 0:  # still a function of input, like torchvision's, so that backward() works
        return input.reshape(-1)[:0].view(0, channels, pooled_h, pooled_w)  # (0, C, ph, pw)

    batch, start_x, start_y, width_roi, height_roi = _roi_geometry(rois, spatial_scale, aligned)  # (K,) x5
    grid_h, grid_w = _sampling_grid(height_roi, width_roi, pooled_h, pooled_w, sampling_ratio)  # (K,), (K,)

    rows, count_h, row_matrix = _interpolation_matrix(start_y, height_roi, pooled_h, grid_h, height)  # (K, Sh), (K,), (K, ph, Sh)
    cols, count_w, col_matrix = _interpolation_matrix(start_x, width_roi, pooled_w, grid_w, width)  # (K, Sw), (K,), (K, pw, Sw)

    table = _channels_last_table(input)  # (B*H*W, C)
    max_cells = max(1, _GATHER_ELEMENTS // channels)
    order, groups = _support_groups(count_h, count_w, max_cells)  # (K,), [(start, stop, Sh, Sw), ...]
    # Put the RoIs in group order once, so that every group below is a slice.
    row_matrix, col_matrix, cols = row_matrix[order], col_matrix[order], cols[order]  # (K, ph, Sh), (K, pw, Sw), (K, Sw)
    # Cell (rows[n, s], cols[n, t]) of image batch[n] is row row_start[n, s] + cols[n, t] of the table.
    row_start = (batch[order, None] * height + rows[order]) * width  # (K, Sh)

    pooled = []
    # One index_select gathers the windows of a whole run of groups, so that the backward pass
    # (index_add into a zero table) costs one table per run, not one per group. In a run, (a, b, h, w)
    # is a group: the RoIs a..b-1 in group order, with windows of h x w cells.
    for run in _runs(groups, max_cells):
        flat = torch.cat([
            (row_start[a:b, :h, None] + cols[a:b, None, :w]).flatten() for a, b, h, w in run
        ])  # (cells,)  the table row of every window cell, group after group
        values = table.index_select(0, flat)  # (cells, C)
        # (A run of one group skips split(): its backward would copy the whole gradient once more.)
        windows = values.split([(b - a) * h * w for a, b, h, w in run]) if len(run) > 1 else [values]
        pooled += [
            _separable_pool(window.view(b - a, h, w, channels), row_matrix[a:b, :, :h], col_matrix[a:b, :, :w])
            for (a, b, h, w), window in zip(run, windows)
        ]  # (k, C, ph, pw) per group
    return torch.cat(pooled).index_select(0, torch.argsort(order))  # (K, C, ph, pw)  back in input order
