"""RoIPool (Fast R-CNN, Girshick 2015) and RoIAlign (Mask R-CNN, He et al. 2017, Sec. 3), from scratch.

Both cut a box of any size out of a feature map and return a fixed ``(ph, pw)`` grid of feature
vectors, so that the box head and the mask head can be ordinary fixed-size networks.

**RoIPool quantises twice.** With a stride-32 feature map:

1. the box is snapped to whole cells: ``round(x1 / 32)`` etc. An image box (10, 10, 124, 124)
   becomes cells 0..4 -- it moved and grew by up to half a cell, i.e. 16 image pixels;
2. the snapped box is split into ``ph x pw`` bins whose edges are snapped again (``floor`` for a
   bin's start, ``ceil`` for its end), so 5 cells split into 2 bins give bins of 3 and 3 cells that
   overlap. Each bin is then max-pooled.

Classification barely notices; a 28x28 mask does, because the features it is built from are
misaligned with the box by a large fraction of a cell.

**RoIAlign removes both quantisations** (Mask R-CNN Sec. 3, "RoIAlign"): the box is scaled but not
rounded, the bins are exact fractions of it, and inside each bin a regular grid of sample points
(``sampling_ratio`` per side) reads the feature map by bilinear interpolation from the four nearest
cells. A bin's value is the average of its samples. The paper reports that this alone improves
mask accuracy by 10% to 50% relative, more under stricter IoU and on coarser maps (Sec. 3,
Table 2c and 2d).

Both functions reproduce torchvision's CPU kernels exactly (same positions, same border rules)
and are vectorised: there is no Python loop over RoIs, bins or samples. The feature map is read in
channels-last layout, so one index fetches a whole C-vector.

**RoIPool** is a masked gather: every output value is the max over a fixed-size, padded list of
cells (flat index into the feature map, validity).

**RoIAlign is separable**, and that is how it is computed here. The sample points of one RoI lie on
an axis-aligned grid: a sample's y depends only on its bin row and sample row, its x only on its bin
column and sample column. Bilinear interpolation gives cell (y, x) the weight (weight of row y) x
(weight of column x), and torchvision's border rules factor the same way: a sample reads 0 when
y < -1 or y > H, or x < -1 or x > W -- a product valid_y * valid_x -- while clamping at 0 and the
last-cell rule act on one coordinate at a time. Last, a bin's mean over grid_h x grid_w samples is
the mean over its sample rows times the mean over its sample columns. So for RoI n and channel c::

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

# Upper bound on the number of feature values RoIPool gathers at once (64 M floats = 256 MB). RoIs
# are processed in chunks that respect it: a memory guard, not a per-RoI loop.
_CHUNK_ELEMENTS = 2**26
# RoIAlign gathers its windows in runs of at most this many values (8 M floats = 32 MB): a memory
# guard. Much smaller runs make the backward pass slower (every run costs one zero-filled copy of
# the feature map there); larger ones gain nothing.
_GATHER_ELEMENTS = 2**23


# ---------------------------------------------------------------------------------------------
# Input handling shared by both ops
# ---------------------------------------------------------------------------------------------


def _pair(output_size) -> tuple[int, int]:
    if isinstance(output_size, int):
        return output_size, output_size
    output_size = tuple(int(s) for s in output_size)
    if len(output_size) != 2:
        raise ValueError(f"output_size must be an int or (height, width), got {output_size}")
    return output_size


def _as_rois(input: Tensor, boxes, fn: str) -> Tensor:
    """boxes as Tensor (K, 5) [batch_index, x1, y1, x2, y2] or list of (K_i, 4) -> rois (K, 5), checked."""
    if input.dim() != 4:
        raise ValueError(f"{fn}: input must be (B, C, H, W), got {tuple(input.shape)}")
    if isinstance(boxes, (list, tuple)):
        for i, b in enumerate(boxes):
            if not isinstance(b, Tensor) or b.dim() != 2 or b.shape[1] != 4:
                shape = tuple(b.shape) if isinstance(b, Tensor) else type(b).__name__
                raise ValueError(f"{fn}: boxes[{i}] (image {i}) must be (K_i, 4) as (x1, y1, x2, y2), got {shape}")
        if len(boxes) == 0:
            return input.new_zeros((0, 5))  # (0, 5)
        batch_index = torch.cat(
            [torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)], dim=0
        )  # (K, 1)  image i for the boxes of boxes[i]
        rois = torch.cat([batch_index, torch.cat(list(boxes), dim=0)], dim=1)  # (K, 5)
    elif isinstance(boxes, Tensor):
        if boxes.dim() != 2 or boxes.shape[1] != 5:
            raise ValueError(f"{fn}: a boxes tensor must be (K, 5) as [batch_index, x1, y1, x2, y2], got {tuple(boxes.shape)}")
        rois = boxes  # (K, 5)
    else:
        raise ValueError(f"{fn}: boxes must be a Tensor (K, 5) or a list of (K_i, 4) tensors, got {type(boxes).__name__}")
    # No gradient flows to the box coordinates, as in torchvision: the sampling positions are
    # treated as constants (proposals are detached in Mask R-CNN anyway).
    rois = rois.detach().to(input.dtype)  # (K, 5)
    if rois.shape[0] > 0:
        batch_index = rois[:, 0]  # (K,)
        bad = (batch_index < 0) | (batch_index >= input.shape[0]) | (batch_index != batch_index.floor())
        if bad.any():
            k = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"{fn}: RoI {k} has batch index {batch_index[k].item()}, but the input holds "
                f"{input.shape[0]} image(s) (index must be an integer in 0..{input.shape[0] - 1})"
            )
    return rois


def _channels_last_table(input: Tensor) -> Tensor:
    """(B, C, H, W) -> (B*H*W, C): row b*H*W + y*W + x is the feature vector of cell (y, x) of image b.

    contiguous(): for a single image, permute + reshape would be a strided view, slow to gather from.
    """
    return input.permute(0, 2, 3, 1).contiguous().view(-1, input.shape[1])  # (B*H*W, C)


def _chunks(num_rois: int, elements_per_roi: int) -> list[slice]:
    """Slices of RoIs that each gather at most _CHUNK_ELEMENTS values (at least one slice, even for 0 RoIs)."""
    per_chunk = max(1, _CHUNK_ELEMENTS // max(elements_per_roi, 1))
    return [slice(s, s + per_chunk) for s in range(0, max(num_rois, 1), per_chunk)]


def _flat_index(batch: Tensor, rows: Tensor, cols: Tensor, height: int, width: int) -> Tensor:
    """Row of the channels-last table for image batch (K,), rows (K, ph, 1, a, 1), cols (K, 1, pw, 1, b)."""
    return (batch.view(-1, 1, 1, 1, 1) * height + rows) * width + cols  # (K, ph, pw, a, b)


# ---------------------------------------------------------------------------------------------
# RoIAlign
# ---------------------------------------------------------------------------------------------


def _bilinear_taps(start: Tensor, length: Tensor, pooled: int, grid: Tensor, grid_max: int, size: int):
    """The bilinear taps along one axis (rows or columns) for every RoI, bin and sample point.

    start, length: (K,) the RoI's first coordinate and extent on this axis, in feature cells.
    grid: (K,) samples per bin on this axis (differs per RoI when adaptive); grid_max: pad to this.
    size: the feature map's extent on this axis (H or W).

    Returns index (K, pooled, grid_max, 2) int64 -- the lower and upper neighbour cell -- and
    weight (K, pooled, grid_max, 2) -- (1 - frac, frac) -- which is 0 for padding samples
    (beyond the RoI's own grid) and for samples that fall off the map.
    """
    dtype, device = start.dtype, start.device
    bin_size = length / pooled  # (K,)
    p = torch.arange(pooled, device=device).to(dtype)  # (P,)
    g = torch.arange(grid_max, device=device).to(dtype)  # (G,)
    # Sample g of bin p sits at the centre of the g-th of `grid` equal slices of the bin. The
    # float operations are done in torchvision's order, so positions are bit-identical to its.
    bin_start = start[:, None, None] + p[None, :, None] * bin_size[:, None, None]  # (K, P, 1)
    in_bin = (g[None, None, :] + 0.5) * bin_size[:, None, None] / grid.clamp(min=1)[:, None, None].to(dtype)  # (K, 1, G)
    pos = bin_start + in_bin  # (K, P, G)

    exists = g[None, None, :] < grid[:, None, None]  # (K, 1, G)  False for padding samples
    # torchvision's border rule: a sample more than one cell outside the map reads 0 ...
    on_map = (pos >= -1.0) & (pos <= size)  # (K, P, G)
    # ... one within a cell of the border reads the border cell: clamp below at 0, and at or
    # beyond the last cell both neighbours are the last cell.
    pos = pos.clamp(min=0)  # (K, P, G)
    low = pos.floor().long()  # (K, P, G)
    at_end = low >= size - 1  # (K, P, G)
    low = low.clamp(max=size - 1)  # (K, P, G)
    high = torch.where(at_end, low, low + 1)  # (K, P, G)
    frac = torch.where(at_end, torch.zeros_like(pos), pos - low.to(dtype))  # (K, P, G)

    index = torch.stack((low, high), dim=-1)  # (K, P, G, 2)
    weight = torch.stack((1.0 - frac, frac), dim=-1) * (exists & on_map)[..., None]  # (K, P, G, 2)
    return index, weight


def _sampling_grid(height_roi: Tensor, width_roi: Tensor, pooled_h: int, pooled_w: int, sampling_ratio: int):
    """Sample points per bin and axis: sampling_ratio if > 0, else adaptive ceil(roi_size / pooled) (about one per cell)."""
    if sampling_ratio > 0:
        grid_h = torch.full_like(height_roi, sampling_ratio, dtype=torch.long)  # (K,)
        grid_w = torch.full_like(width_roi, sampling_ratio, dtype=torch.long)  # (K,)
    else:
        # A degenerate aligned box (size <= 0) gets no samples and pools to 0, like torchvision.
        grid_h = torch.ceil(height_roi / pooled_h).long().clamp(min=0)  # (K,)
        grid_w = torch.ceil(width_roi / pooled_w).long().clamp(min=0)  # (K,)
    return grid_h, grid_w


def _interpolation_matrix(start: Tensor, length: Tensor, pooled: int, grid: Tensor, size: int):
    """One axis of RoIAlign as a small matrix per RoI: (K,) geometry, K >= 1 -> cells (K, S), count (K,), matrix (K, pooled, S).

    cells[n, :count[n]] lists, in increasing order, the cells of this axis (rows or columns) that
    RoI n's samples read with a non-zero weight: the RoI's *support* (the rest of the row is
    padding). matrix[n, p, s] is the weight with which bin p reads cell cells[n, s]: the bilinear
    weights of the bin's samples on that cell, summed and divided by the samples per bin on this axis.
    """
    k = start.shape[0]
    grid_max = max(1, int(grid.max()))
    index, weight = _bilinear_taps(start, length, pooled, grid, grid_max, size)  # (K, P, G, 2) x2
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
    """RoIAlign (Mask R-CNN Sec. 3): (B, C, H, W), boxes -> (K, C, ph, pw). Same as torchvision.ops.roi_align.

    boxes: Tensor (K, 5) as [batch_index, x1, y1, x2, y2], or a list of (K_i, 4) tensors, one per
    image, in input-image coordinates; spatial_scale maps them to the feature map (1/stride).
    sampling_ratio: sample points per bin side; <= 0 means adaptive, ceil(roi_size / output_size).
    aligned: shift the box by -0.5 cell so that samples sit on pixel centres (see the comment in the body).
    Differentiable with respect to ``input`` (not to the boxes, like torchvision).

    Computed in the separable form explained at the top of this file: per RoI, an interpolation
    matrix for each axis, one gather of the RoI's window, two batched matrix products.
    """
    pooled_h, pooled_w = _pair(output_size)
    rois = _as_rois(input, boxes, "roi_align")  # (K, 5)
    _, channels, height, width = input.shape
    if rois.shape[0] == 0:  # still a function of input, like torchvision's, so that backward() works
        return input.reshape(-1)[:0].view(0, channels, pooled_h, pooled_w)  # (0, C, ph, pw)

    # The RoI on the feature map, in continuous coordinates: scaled, never rounded (Sec. 3).
    # aligned=True moves it by half a cell, so that image pixel centres x + 0.5 land on feature cell
    # centres (Detectron2's fix); torchvision's Mask R-CNN keeps the original aligned=False.
    offset = 0.5 if aligned else 0.0
    batch = rois[:, 0].long()  # (K,)
    start_x = rois[:, 1] * spatial_scale - offset  # (K,)
    start_y = rois[:, 2] * spatial_scale - offset  # (K,)
    width_roi = rois[:, 3] * spatial_scale - offset - start_x  # (K,)
    height_roi = rois[:, 4] * spatial_scale - offset - start_y  # (K,)
    if not aligned:
        # Legacy rule of the original implementation: a RoI is never smaller than one cell.
        width_roi = width_roi.clamp(min=1.0)  # (K,)
        height_roi = height_roi.clamp(min=1.0)  # (K,)
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


# ---------------------------------------------------------------------------------------------
# RoIPool
# ---------------------------------------------------------------------------------------------


def _round_half_away(x: Tensor) -> Tensor:
    """C's round(): halves go away from zero (2.5 -> 3, -2.5 -> -3). torch.round rounds halves to even."""
    whole = torch.trunc(x)  # exact; x - whole is exact too, so the test below has no rounding error
    return whole + torch.sign(x) * ((x - whole).abs() >= 0.5)


def _pool_bins(start: Tensor, end: Tensor, pooled: int, size: int, dtype: torch.dtype):
    """RoIPool's bins along one axis. start, end: (K,) int64 cells (inclusive) -> first, stop: (K, pooled), clipped to [0, size]."""
    length = (end - start + 1).clamp(min=1)  # (K,)  a malformed box still covers one cell
    bin_size = length.to(dtype) / pooled  # (K,)
    p = torch.arange(pooled, device=start.device).to(dtype)  # (P,)
    # Second quantisation: a bin starts at the floor and stops at the ceil of its exact edges.
    first = torch.floor(p[None, :] * bin_size[:, None]).long() + start[:, None]  # (K, P)
    stop = torch.ceil((p[None, :] + 1) * bin_size[:, None]).long() + start[:, None]  # (K, P)
    return first.clamp(0, size), stop.clamp(0, size)


def _window(first: Tensor, stop: Tensor, window: int, size: int):
    """Cells first, first+1, ... of each bin, padded to `window`: (K, P) -> cells (K, P, window), valid (K, P, window)."""
    cells = first[..., None] + torch.arange(window, device=first.device)  # (K, P, window)
    valid = cells < stop[..., None]  # (K, P, window)
    return cells.clamp(max=size - 1), valid


def _roi_pool_chunk(table, batch, rows, row_ok, cols, col_ok, height, width):
    """Max over each bin's window for a chunk: rows (k, ph, wh), cols (k, pw, ww) -> (k, ph*pw, C)."""
    k, pooled_h, win_h = rows.shape
    pooled_w, win_w = cols.shape[1:]
    flat = _flat_index(batch, rows.view(k, pooled_h, 1, win_h, 1), cols.view(k, 1, pooled_w, 1, win_w), height, width)  # (k, ph, pw, wh, ww)
    valid = row_ok.view(k, pooled_h, 1, win_h, 1) & col_ok.view(k, 1, pooled_w, 1, win_w)  # (k, ph, pw, wh, ww)
    values = table.index_select(0, flat.reshape(-1)).view(k, pooled_h * pooled_w, win_h * win_w, table.shape[1])  # (k, ph*pw, wh*ww, C)
    valid = valid.reshape(k, pooled_h * pooled_w, win_h * win_w, 1)  # (k, ph*pw, wh*ww, 1)
    values = values.masked_fill(~valid, float("-inf"))  # (k, ph*pw, wh*ww, C)  padding never wins
    best = values.max(dim=2).values  # (k, ph*pw, C)
    # A bin clipped away entirely (box off the map) is 0, not -inf.
    nonempty = valid.any(dim=2)  # (k, ph*pw, 1)
    return torch.where(nonempty, best, torch.zeros_like(best))  # (k, ph*pw, C)


def roi_pool(input: Tensor, boxes, output_size, spatial_scale: float = 1.0) -> Tensor:
    """RoIPool (Fast R-CNN): (B, C, H, W), boxes -> (K, C, ph, pw). Same as torchvision.ops.roi_pool.

    boxes as for roi_align. Each bin is the max over its (quantised) window of cells; a bin that
    the map's border clips to nothing is 0. Differentiable with respect to ``input``.
    """
    pooled_h, pooled_w = _pair(output_size)
    rois = _as_rois(input, boxes, "roi_pool")  # (K, 5)
    _, channels, height, width = input.shape
    table = _channels_last_table(input)  # (B*H*W, C)

    batch = rois[:, 0].long()  # (K,)
    # First quantisation: the box corners are rounded to whole cells.
    corners = _round_half_away(rois[:, 1:] * spatial_scale).long()  # (K, 4)  x1, y1, x2, y2
    row_first, row_stop = _pool_bins(corners[:, 1], corners[:, 3], pooled_h, height, input.dtype)  # (K, ph) x2
    col_first, col_stop = _pool_bins(corners[:, 0], corners[:, 2], pooled_w, width, input.dtype)  # (K, pw) x2
    # Bins differ in size: pad every bin to the largest window and mask the padding.
    win_h = max(1, int((row_stop - row_first).max())) if len(rois) else 1
    win_w = max(1, int((col_stop - col_first).max())) if len(rois) else 1
    rows, row_ok = _window(row_first, row_stop, win_h, height)  # (K, ph, wh) x2
    cols, col_ok = _window(col_first, col_stop, win_w, width)  # (K, pw, ww) x2

    per_roi = pooled_h * pooled_w * win_h * win_w * (2 * channels + 2)  # values + masked copy + index
    pooled = torch.cat(
        [
            _roi_pool_chunk(table, batch[c], rows[c], row_ok[c], cols[c], col_ok[c], height, width)
            for c in _chunks(rois.shape[0], per_roi)
        ],
        dim=0,
    )  # (K, ph*pw, C)
    # contiguous() so callers can .view() the result, as they can torchvision's.
    return pooled.view(-1, pooled_h, pooled_w, channels).permute(0, 3, 1, 2).contiguous()  # (K, C, ph, pw)
