"""RoIPool (Fast R-CNN, Girshick 2015) and RoIAlign (Mask R-CNN, He et al. 2017, Sec. 3), from scratch.

Both cut a box of any size out of a feature map and return a fixed ``(ph, pw)`` grid of feature
vectors, so that the box head and the mask head can be ordinary fixed-size networks.

**RoIPool quantises twice.** With a stride-32 feature map:

1. the box is snapped to whole cells: ``round(x1 / 32)`` etc. An image box (10, 10, 124, 124)
   becomes cells 0..4 -- each edge moves by up to half a cell (16 image pixels), so the width can
   change by up to a whole cell;
2. the snapped box is split into ``ph x pw`` bins whose edges are snapped again (``floor`` for a
   bin's start, ``ceil`` for its end), so 5 cells split into 2 bins give bins of 3 and 3 cells that
   overlap. Each bin is then max-pooled.

The features are misaligned with the box by up to a large fraction of a cell. A 28x28 mask suffers
most, but the box head too: Mask R-CNN's Table 2d (stride 32) gains 5.8 box AP from RoIAlign, and
Table 3 still 1.1 box AP with FPN.

**RoIAlign removes both quantisations** (Mask R-CNN Sec. 3, "RoIAlign"), in three steps:

1. *sample points*: the box is scaled but not rounded, the bins are exact fractions of it, and
   each bin holds a regular grid of ``sampling_ratio x sampling_ratio`` points;
2. *bilinear taps*: each point reads the feature map by bilinear interpolation from the four
   cells around it;
3. *mean per bin*: a bin's value is the average of its points.

The paper reports that this alone improves mask accuracy by 10% to 50% relative, more under
stricter IoU and on coarser maps (Sec. 3, Table 2c and 2d).

Both functions reproduce torchvision's CPU kernels (same positions, same border rules) and are
vectorised: there is no Python loop over RoIs, bins or samples. The feature map is read in
channels-last layout, so one index fetches a whole C-vector. The RoIAlign here is the one to read;
``roi_align_fast.py`` computes the same numbers several times faster by regrouping the same sums
into two small matrix products per RoI (the ``mixed`` kernel set uses it for training on a CPU).
"""

import torch
from torch import Tensor

# Upper bound on the number of feature values gathered at once (64 M floats = 256 MB). RoIs are
# processed in chunks that respect it: a memory guard, not a per-RoI loop.
_CHUNK_ELEMENTS = 2**26


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
# RoIAlign: sample points -> bilinear taps -> mean per bin
# ---------------------------------------------------------------------------------------------


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


def _sample_positions(start: Tensor, length: Tensor, pooled: int, grid: Tensor, grid_max: int):
    """Where RoIAlign samples along one axis: (K,) geometry -> pos (K, pooled, grid_max), exists (K, 1, grid_max).

    start, length: the RoI's first coordinate and extent on this axis, in feature cells (not rounded).
    grid: (K,) samples per bin on this axis; every RoI is padded to grid_max, and `exists` is False
    for the padding. Sample g of bin p sits at the centre of the g-th of `grid` equal slices of the bin.
    """
    dtype, device = start.dtype, start.device
    bin_size = length / pooled  # (K,)
    p = torch.arange(pooled, device=device).to(dtype)  # (P,)
    g = torch.arange(grid_max, device=device).to(dtype)  # (G,)
    # The float operations are done in torchvision's order, so positions are bit-identical to its.
    bin_start = start[:, None, None] + p[None, :, None] * bin_size[:, None, None]  # (K, P, 1)
    in_bin = (g[None, None, :] + 0.5) * bin_size[:, None, None] / grid.clamp(min=1)[:, None, None].to(dtype)  # (K, 1, G)
    exists = g[None, None, :] < grid[:, None, None]  # (K, 1, G)
    return bin_start + in_bin, exists  # (K, P, G), (K, 1, G)


def _bilinear_taps(pos: Tensor, exists: Tensor, size: int):
    """Linear interpolation along one axis: positions (K, P, G) -> index (K, P, G, 2), weight (K, P, G, 2).

    index holds the two neighbouring cells (lower, upper), weight (1 - frac, frac). Bilinear
    interpolation is this twice: the weight of cell (y, x) is (weight of row y) * (weight of column x).
    Padding samples (exists False) and samples that fall off the map get weight 0.
    """
    # torchvision's border rule: a sample more than one cell outside the map reads 0 ...
    on_map = (pos >= -1.0) & (pos <= size)  # (K, P, G)
    # ... one within a cell of the border reads the border cell: clamp below at 0, and at or
    # beyond the last cell both neighbours are the last cell.
    pos = pos.clamp(min=0)  # (K, P, G)
    low = pos.floor().long()  # (K, P, G)
    at_end = low >= size - 1  # (K, P, G)
    low = low.clamp(max=size - 1)  # (K, P, G)
    high = torch.where(at_end, low, low + 1)  # (K, P, G)
    frac = torch.where(at_end, torch.zeros_like(pos), pos - low.to(pos.dtype))  # (K, P, G)
    index = torch.stack((low, high), dim=-1)  # (K, P, G, 2)
    weight = torch.stack((1.0 - frac, frac), dim=-1) * (exists & on_map)[..., None]  # (K, P, G, 2)
    return index, weight


def _roi_geometry(rois: Tensor, spatial_scale: float, aligned: bool):
    """rois (K, 5) in image pixels -> batch (K,), start_x, start_y, width_roi, height_roi (K,) in feature cells."""
    # Scaled to the feature map but never rounded (Sec. 3). aligned=False puts cell j at the image
    # point s*j (s = stride); aligned=True moves the box by -0.5 cell, which puts cell j at s*(j + 1/2),
    # the centre of its s x s block of pixels (Detectron2's pixel model). Which is closer depends on the
    # backbone's padding (notebook 05, section 7); torchvision's Mask R-CNN keeps aligned=False.
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
    return batch, start_x, start_y, width_roi, height_roi


def roi_align(input: Tensor, boxes, output_size, spatial_scale: float = 1.0, sampling_ratio: int = -1, aligned: bool = False) -> Tensor:
    """RoIAlign (Mask R-CNN Sec. 3): (B, C, H, W), boxes -> (K, C, ph, pw). Same as torchvision.ops.roi_align.

    boxes: Tensor (K, 5) as [batch_index, x1, y1, x2, y2], or a list of (K_i, 4) tensors, one per
    image, in input-image coordinates; spatial_scale maps them to the feature map (1/stride).
    sampling_ratio: sample points per bin side; <= 0 means adaptive, ceil(roi_size / output_size).
    aligned: shift the box by -0.5 cell (Detectron2's pixel model: cell j stands for s*(j + 1/2)).
    Differentiable with respect to ``input`` (not to the boxes, like torchvision).
    """
    pooled_h, pooled_w = _pair(output_size)
    rois = _as_rois(input, boxes, "roi_align")  # (K, 5)
    _, channels, height, width = input.shape
    if rois.shape[0] == 0:  # still a function of input, like torchvision's, so that backward() works
        return input.reshape(-1)[:0].view(0, channels, pooled_h, pooled_w)  # (0, C, ph, pw)
    batch, start_x, start_y, width_roi, height_roi = _roi_geometry(rois, spatial_scale, aligned)  # (K,) x5
    grid_h, grid_w = _sampling_grid(height_roi, width_roi, pooled_h, pooled_w, sampling_ratio)  # (K,), (K,)
    table = _channels_last_table(input)  # (B*H*W, C)

    def pool(n: slice) -> Tensor:  # RoIs n (a memory-bounded chunk, see _chunks) -> (k, ph, pw, C)
        gh, gw = max(1, int(grid_h[n].max())), max(1, int(grid_w[n].max()))
        # 1. sample points: a regular grid of gh x gw points in every bin, along each axis.
        ys, y_exists = _sample_positions(start_y[n], height_roi[n], pooled_h, grid_h[n], gh)  # (k, ph, gh), (k, 1, gh)
        xs, x_exists = _sample_positions(start_x[n], width_roi[n], pooled_w, grid_w[n], gw)  # (k, pw, gw), (k, 1, gw)
        # 2. bilinear taps: each sample reads the 2 x 2 cells around it.
        row, row_w = _bilinear_taps(ys, y_exists, height)  # (k, ph, gh, 2) x2
        col, col_w = _bilinear_taps(xs, x_exists, width)  # (k, pw, gw, 2) x2
        # Dimensions: (k, ph, gh, pw, gw, 2 rows, 2 cols).
        row, row_w = row[:, :, :, None, None, :, None], row_w[:, :, :, None, None, :, None]
        col, col_w = col[:, None, None, :, :, None, :], col_w[:, None, None, :, :, None, :]
        cell = (batch[n].view(-1, 1, 1, 1, 1, 1, 1) * height + row) * width + col  # (k, ph, gh, pw, gw, 2, 2)
        values = table[cell]  # (k, ph, gh, pw, gw, 2, 2, C)  the C-vector of each tapped cell
        samples = (values * (row_w * col_w)[..., None]).sum(dim=(5, 6))  # (k, ph, gh, pw, gw, C)
        # 3. mean per bin: padding samples have weight 0, so divide by the real count.
        count = (grid_h[n] * grid_w[n]).clamp(min=1).to(input.dtype).view(-1, 1, 1, 1)  # (k, 1, 1, 1)
        return samples.sum(dim=(2, 4)) / count  # (k, ph, pw, C)

    per_roi = pooled_h * pooled_w * max(1, int(grid_h.max())) * max(1, int(grid_w.max())) * 4 * 2 * channels
    pooled = torch.cat([pool(n) for n in _chunks(rois.shape[0], per_roi)])  # (K, ph, pw, C)
    return pooled.permute(0, 3, 1, 2).contiguous()  # (K, C, ph, pw)


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
