"""Masks in and out of the RoI frame (Mask R-CNN, He et al. 2017, Sec. 3).

The mask branch lives in RoI coordinates: it predicts an m x m (28 x 28) map for each RoI. Two
conversions connect it to the image:

* training, image -> RoI (`project_masks_on_boxes`): "The mask target is the intersection between an
  RoI and its associated ground-truth mask" (Sec. 3.1), resampled to m x m. We crop-and-resize the GT
  mask with RoIAlign itself, so targets are sampled exactly like the features.
* inference, RoI -> image (`paste_masks_in_image`): "The m x m floating-number mask output is then
  resized to the RoI size" (Sec. 3.1, Inference) and placed in the image. We keep probabilities
  (no 0.5 threshold) so that evaluation or the user can threshold later, as torchvision does.
"""

import torch
from torch import Tensor
from torch.nn import functional as F

from . import roi_ops


def project_masks_on_boxes(gt_masks: Tensor, boxes: Tensor, matched_idxs: Tensor, M: int,
                           roi_align=roi_ops.roi_align) -> Tensor:
    """Crop each RoI's matched GT mask to the RoI and resample it to M x M: the mask targets.

    gt_masks (G, H, W) {0, 1} of one image, boxes (N, 4) RoIs in the same frame, matched_idxs (N,) the GT
    of each RoI -> (N, M, M) float targets in [0, 1] (soft at the object's border).

    The trick: treat the G masks as a batch of G one-channel images, and give each RoI its matched GT's
    index as its batch index. One RoIAlign call (spatial_scale 1, default sampling) then reads RoI n
    from mask matched_idxs[n] — the crop and the resize in one vectorised step.
    """
    if boxes.shape[0] == 0:
        return boxes.new_zeros((0, M, M))  # (0, M, M)
    if gt_masks.dim() != 3:
        raise ValueError(f"project_masks_on_boxes: gt_masks must be (G, H, W), got {tuple(gt_masks.shape)}")
    rois = torch.cat([matched_idxs.to(boxes)[:, None], boxes], dim=1)  # (N, 5) [gt_index, x1, y1, x2, y2]
    masks = gt_masks[:, None].to(rois)  # (G, 1, H, W) float
    return roi_align(masks, rois, (M, M), spatial_scale=1.0)[:, 0]  # (N, M, M)


def expand_boxes(boxes: Tensor, scale: float) -> Tensor:
    """Scale boxes about their centres: (N, 4) -> (N, 4)."""
    center = (boxes[:, :2] + boxes[:, 2:]) * 0.5  # (N, 2) (cx, cy)
    half_size = (boxes[:, 2:] - boxes[:, :2]) * 0.5 * scale  # (N, 2) (w/2, h/2), scaled
    return torch.cat([center - half_size, center + half_size], dim=1)  # (N, 4)


def bilinear_weights(start: Tensor, end: Tensor, length: int, M: int) -> Tensor:
    """Interpolation matrices that resize an M-long signal onto the pixels start..end of a line of `length`.

    start, end (N,) int64 are the first and last pixel the resized signal covers (both inclusive; the
    signal is resized to size = max(end - start + 1, 1) pixels). Returns A (N, length, M) such that
    A[n] @ signal is `F.interpolate(signal, size, mode="bilinear", align_corners=False)` placed at
    pixels start..end of the line, and 0 at every pixel outside it (or outside the line).

    Bilinear resizing is separable, so the same matrices for rows and for columns resize a 2-D mask.
    PyTorch's rule for output pixel i (align_corners=False): source position
    x = (i + 0.5) * M / size - 0.5, clamped to >= 0, blended from pixels floor(x) and floor(x) + 1
    (the last pixel repeats at the right edge).
    """
    size = (end - start + 1).clamp(min=1)  # (N,) the resized length
    pixel = torch.arange(length, device=start.device)  # (L,)
    i = pixel[None, :] - start[:, None]  # (N, L) index into the resized signal
    inside = (pixel[None, :] >= start[:, None]) & (pixel[None, :] <= end[:, None])  # (N, L)

    # M / size in float64, then float32: PyTorch computes its resize scale the same way (same rounding).
    scale = (M / size.to(torch.float64)).to(torch.float32)  # (N,)
    x = ((i + 0.5) * scale[:, None] - 0.5).clamp(min=0)  # (N, L) source position
    x0 = x.floor().clamp(max=M - 1)  # (N, L) left neighbour
    frac = (x - x0).clamp(0, 1)  # (N, L) weight of the right neighbour
    x0 = x0.long()  # (N, L)
    x1 = (x0 + 1).clamp(max=M - 1)  # (N, L) right neighbour (the edge pixel repeats)
    weights = torch.zeros(start.shape[0], length, M, device=start.device)  # (N, L, M)
    weights.scatter_add_(2, x0[..., None], (1 - frac)[..., None])  # (N, L, M)
    weights.scatter_add_(2, x1[..., None], frac[..., None])  # (N, L, M) two non-zeros per row
    return weights * inside[..., None]  # (N, L, M) zero outside the box


def paste_masks_in_image(masks: Tensor, boxes: Tensor, image_size: tuple[int, int], padding: int = 1) -> Tensor:
    """Resize each RoI mask to its box and place it in an empty image: (N, 1, M, M), (N, 4) -> (N, 1, h, w).

    Same numbers as torchvision's paste_masks_in_image, which does it one mask at a time:
    1. pad each mask with `padding` zero pixels and grow its box by (M + 2p) / M, so the bilinear
       resize fades to 0 at the border instead of ending in a hard edge;
    2. cut the grown box to whole pixels (truncation toward zero, int64);
    3. resize the padded mask to the box (w = x2 - x1 + 1, h = y2 - y1 + 1 pixels, at least 1) with
       bilinear interpolation, align_corners=False;
    4. paste it at (x1, y1), clipped to the image.

    Vectorised: a bilinear resize is separable, so mask n pasted into the image is
        Wy[n] (h x M') @ mask[n] (M' x M') @ Wx[n]^T (M' x w),
    where Wy, Wx (`bilinear_weights`) are zero on rows/columns outside the box — that zero *is* the
    paste and the clipping. One batched matmul for all masks, no loop.

    Boxes entirely outside the image paste nothing (torchvision raises or mis-slices for those).
    """
    if masks.dim() != 4 or masks.shape[1] != 1 or masks.shape[2] != masks.shape[3]:
        raise ValueError(f"paste_masks_in_image: masks must be (N, 1, M, M), got {tuple(masks.shape)}")
    if boxes.dim() != 2 or boxes.shape != (masks.shape[0], 4):
        raise ValueError(f"paste_masks_in_image: boxes must be ({masks.shape[0]}, 4) to match the masks, "
                         f"got {tuple(boxes.shape)}")
    im_h, im_w = int(image_size[0]), int(image_size[1])
    if masks.shape[0] == 0:
        return masks.new_zeros((0, 1, im_h, im_w))  # (0, 1, h, w)

    M = masks.shape[-1]
    padded = F.pad(masks[:, 0], (padding,) * 4)  # (N, M', M') with M' = M + 2p
    grown = expand_boxes(boxes, (M + 2 * padding) / M).to(torch.int64)  # (N, 4) whole pixels
    Mp = M + 2 * padding
    wy = bilinear_weights(grown[:, 1], grown[:, 3], im_h, Mp).to(masks.dtype)  # (N, h, M')
    wx = bilinear_weights(grown[:, 0], grown[:, 2], im_w, Mp).to(masks.dtype)  # (N, w, M')
    pasted = wy @ padded @ wx.transpose(1, 2)  # (N, h, w)
    return pasted[:, None]  # (N, 1, h, w)
