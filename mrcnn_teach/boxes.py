"""Box geometry shared by every stage: area, IoU, clipping, and the box encoding.

Boxes are always ``(x1, y1, x2, y2)`` in pixels, the convention of torchvision.

The encoding is the one of Faster R-CNN (Ren et al. 2015, Sec. 3.1.2), which Mask R-CNN keeps
for both its RPN and its box head. A box is described relative to a reference box (an anchor, or
a proposal) by four numbers ``(tx, ty, tw, th)``::

    tx = wx * (gx - ax) / aw        ty = wy * (gy - ay) / ah
    tw = ww * log(gw / aw)          th = wh * log(gh / ah)

where ``(ax, ay, aw, ah)`` are the reference box's centre and size, ``(gx, gy, gw, gh)`` those of
the target box, and the centre of a box is ``x1 + 0.5 * w``. Dividing by the reference size makes
the offsets scale-invariant; the log makes width/height changes symmetric (twice as big and half
as big are +log 2 and -log 2).

The weights ``(wx, wy, ww, wh)`` are a fixed rescaling of the targets, chosen per stage so that
the regression targets have roughly unit variance (this balances the box loss against the
classification loss without tuning a loss weight):

* RPN: ``(1, 1, 1, 1)`` -- anchors are far from the objects, offsets are already large.
* Box head: ``(10, 10, 5, 5)`` -- proposals are already close to the objects, so the raw offsets
  are small (std about 0.1 for the centre, 0.2 for the size) and are scaled up.
"""

import math

import torch
from torch import Tensor


def _check_boxes(boxes: Tensor, name: str) -> None:
    if not isinstance(boxes, Tensor) or boxes.dim() < 1 or boxes.shape[-1] != 4:
        shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"{name}: expected boxes of shape (..., 4) as (x1, y1, x2, y2), got {shape}")


def _upcast(t: Tensor) -> Tensor:
    # Products of float16 coordinates overflow quickly (65504), and integer boxes would make IoU
    # an integer division: compute areas in float32 at least, exactly as torchvision does.
    if t.is_floating_point():
        return t if t.dtype in (torch.float32, torch.float64) else t.float()
    return t if t.dtype in (torch.int32, torch.int64) else t.int()


def box_area(boxes: Tensor) -> Tensor:
    """Area of each box: (N, 4) -> (N,). Degenerate boxes (x2 < x1) give a negative area, like torchvision."""
    _check_boxes(boxes, "box_area")
    boxes = _upcast(boxes)  # (N, 4)
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])  # (N,)


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Intersection over union of every pair: (N, 4), (M, 4) -> (N, M)."""
    _check_boxes(boxes1, "box_iou(boxes1)")
    _check_boxes(boxes2, "box_iou(boxes2)")
    area1 = box_area(boxes1)  # (N,)
    area2 = box_area(boxes2)  # (M,)
    # The intersection of two boxes is the box between the larger top-left and the smaller
    # bottom-right corner; it is empty (size 0) when those cross.
    top_left = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])  # (N, M, 2)
    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])  # (N, M, 2)
    wh = _upcast(bottom_right - top_left).clamp(min=0)  # (N, M, 2)
    inter = wh[..., 0] * wh[..., 1]  # (N, M)
    union = area1[:, None] + area2[None, :] - inter  # (N, M)
    return inter / union  # (N, M)


def clip_boxes_to_image(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clamp x to [0, w] and y to [0, h]: (..., 4), size=(h, w) -> (..., 4)."""
    _check_boxes(boxes, "clip_boxes_to_image")
    height, width = size
    x = boxes[..., 0::2].clamp(min=0, max=width)  # (..., 2)  x1, x2
    y = boxes[..., 1::2].clamp(min=0, max=height)  # (..., 2)  y1, y2
    return torch.stack((x, y), dim=-1).reshape(boxes.shape)  # (..., 4)  back to x1 y1 x2 y2


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices of the boxes whose width and height are both >= min_size: (N, 4) -> (K,) int64."""
    _check_boxes(boxes, "remove_small_boxes")
    widths = boxes[..., 2] - boxes[..., 0]  # (N,)
    heights = boxes[..., 3] - boxes[..., 1]  # (N,)
    keep = (widths >= min_size) & (heights >= min_size)  # (N,) bool
    return torch.where(keep)[0]  # (K,) int64


class BoxCoder:
    """Encode boxes as deltas relative to reference boxes, and decode them back (Faster R-CNN Sec. 3.1.2).

    ``weights`` rescale ``(tx, ty, tw, th)``: RPN uses ``(1, 1, 1, 1)``, the box head ``(10, 10, 5, 5)``
    (see the module docstring).

    ``bbox_xform_clip`` caps the predicted log-size change ``dw, dh`` before ``exp``: an untrained (or
    diverging) regressor can output large values, and ``exp(dw)`` overflows float32 already at
    ``dw ~ 89``. The cap ``log(1000 / 16)`` says a box can grow at most 62.5x in one step -- enough to turn
    the smallest anchor side (16 px in the original Faster R-CNN) into a 1000-px box, the size of the image.
    """

    def __init__(self, weights=(1.0, 1.0, 1.0, 1.0), bbox_xform_clip: float = math.log(1000.0 / 16)):
        if len(weights) != 4:
            raise ValueError(f"BoxCoder: weights must be 4 numbers (wx, wy, ww, wh), got {weights}")
        self.weights = tuple(float(w) for w in weights)
        self.bbox_xform_clip = bbox_xform_clip

    def encode(self, matched_gt_boxes: Tensor, boxes: Tensor) -> Tensor:
        """Regression targets that move ``boxes`` onto ``matched_gt_boxes``: (N, 4), (N, 4) -> deltas (N, 4)."""
        _check_boxes(matched_gt_boxes, "BoxCoder.encode(matched_gt_boxes)")
        _check_boxes(boxes, "BoxCoder.encode(boxes)")
        if matched_gt_boxes.shape != boxes.shape:
            raise ValueError(
                f"BoxCoder.encode: matched_gt_boxes {tuple(matched_gt_boxes.shape)} and boxes "
                f"{tuple(boxes.shape)} must have the same shape (one GT box per reference box)"
            )
        wx, wy, ww, wh = self.weights
        widths = boxes[:, 2] - boxes[:, 0]  # (N,)  aw
        heights = boxes[:, 3] - boxes[:, 1]  # (N,)  ah
        ctr_x = boxes[:, 0] + 0.5 * widths  # (N,)  ax
        ctr_y = boxes[:, 1] + 0.5 * heights  # (N,)  ay

        gt_widths = matched_gt_boxes[:, 2] - matched_gt_boxes[:, 0]  # (N,)  gw
        gt_heights = matched_gt_boxes[:, 3] - matched_gt_boxes[:, 1]  # (N,)  gh
        gt_ctr_x = matched_gt_boxes[:, 0] + 0.5 * gt_widths  # (N,)  gx
        gt_ctr_y = matched_gt_boxes[:, 1] + 0.5 * gt_heights  # (N,)  gy

        dx = wx * (gt_ctr_x - ctr_x) / widths  # (N,)
        dy = wy * (gt_ctr_y - ctr_y) / heights  # (N,)
        dw = ww * torch.log(gt_widths / widths)  # (N,)
        dh = wh * torch.log(gt_heights / heights)  # (N,)
        return torch.stack((dx, dy, dw, dh), dim=1)  # (N, 4)

    def decode(self, deltas: Tensor, boxes: Tensor) -> Tensor:
        """Apply deltas to reference boxes: deltas (N, 4) or (N, K, 4) (one per class), boxes (N, 4) -> like deltas."""
        _check_boxes(deltas, "BoxCoder.decode(deltas)")
        _check_boxes(boxes, "BoxCoder.decode(boxes)")
        if deltas.dim() not in (2, 3) or deltas.shape[0] != boxes.shape[0]:
            raise ValueError(
                f"BoxCoder.decode: deltas must be (N, 4) or (N, K, 4) with N = len(boxes) = {boxes.shape[0]}, "
                f"got {tuple(deltas.shape)}"
            )
        boxes = boxes.to(deltas.dtype)  # (N, 4)
        per_class = deltas if deltas.dim() == 3 else deltas[:, None, :]  # (N, K, 4)  K = 1 for (N, 4) input
        wx, wy, ww, wh = self.weights

        widths = (boxes[:, 2] - boxes[:, 0])[:, None]  # (N, 1)
        heights = (boxes[:, 3] - boxes[:, 1])[:, None]  # (N, 1)
        ctr_x = boxes[:, 0, None] + 0.5 * widths  # (N, 1)
        ctr_y = boxes[:, 1, None] + 0.5 * heights  # (N, 1)

        dx = per_class[..., 0] / wx  # (N, K)
        dy = per_class[..., 1] / wy  # (N, K)
        # Cap before exp: see the class docstring.
        dw = (per_class[..., 2] / ww).clamp(max=self.bbox_xform_clip)  # (N, K)
        dh = (per_class[..., 3] / wh).clamp(max=self.bbox_xform_clip)  # (N, K)

        pred_ctr_x = dx * widths + ctr_x  # (N, K)
        pred_ctr_y = dy * heights + ctr_y  # (N, K)
        half_w = 0.5 * (torch.exp(dw) * widths)  # (N, K)
        half_h = 0.5 * (torch.exp(dh) * heights)  # (N, K)

        pred = torch.stack(
            (pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h), dim=-1
        )  # (N, K, 4)
        return pred.reshape(deltas.shape)  # (N, 4) or (N, K, 4)
