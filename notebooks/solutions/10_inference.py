"""Worked solutions of the exercises of 10_inference.ipynb (for teachers; tests/test_exercises.py runs them)."""

import math

import torch
from torch.nn import functional as F

from mrcnn_teach import nms as nms_module
from mrcnn_teach.exercises.nb10 import check_decode_class, check_paste_one_mask, check_per_class_nms


def my_per_class_nms(boxes, scores, labels, iou_threshold):
    """NMS within each class, one plain NMS per class; kept indices (K,) int64 by decreasing score."""
    kept = []
    for c in labels.unique():  # a loop over the (few) classes, not over boxes
        idx = torch.nonzero(labels == c).squeeze(1)  # (n_c,) this class's boxes in the input
        keep_c = nms_module.nms(boxes[idx], scores[idx], iou_threshold)  # (k_c,) indices into idx
        kept.append(idx[keep_c])  # (k_c,) back to input indices
    kept = torch.cat(kept) if kept else torch.empty(0, dtype=torch.int64)  # (K,)
    return kept[scores[kept].argsort(descending=True, stable=True)]  # (K,) best first over all classes


def my_decode_class(box_deltas, proposals, k, weights=(10.0, 10.0, 5.0, 5.0)):
    """The (N, 4) boxes of class k: undo the weights, cap the log-size change, apply to each proposal."""
    wx, wy, ww, wh = weights
    dx, dy, dw, dh = box_deltas[:, 4 * k: 4 * k + 4].unbind(dim=1)  # each (N,) class k's four columns
    dw = (dw / ww).clamp(max=math.log(1000.0 / 16))  # (N,)
    dh = (dh / wh).clamp(max=math.log(1000.0 / 16))  # (N,)
    w = proposals[:, 2] - proposals[:, 0]  # (N,)
    h = proposals[:, 3] - proposals[:, 1]  # (N,)
    cx = proposals[:, 0] + 0.5 * w + dx / wx * w  # (N,) moved centre
    cy = proposals[:, 1] + 0.5 * h + dy / wy * h  # (N,)
    half_w, half_h = 0.5 * w * torch.exp(dw), 0.5 * h * torch.exp(dh)  # (N,), (N,)
    return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=1)  # (N, 4)


def my_paste_one_mask(mask, box, image_size, padding=1):
    """Pad, grow the box, resize into it, paste (clipped to the image), threshold: (M, M), (4,) -> (h, w) bool."""
    M = mask.shape[-1]
    padded = F.pad(mask, (padding,) * 4)  # (M+2p, M+2p) a ring of zeros
    scale = (M + 2 * padding) / M  # the 28 inner cells still cover exactly the box
    centre = (box[:2] + box[2:]) / 2  # (2,) (cx, cy)
    half = (box[2:] - box[:2]) / 2 * scale  # (2,)
    x1, y1, x2, y2 = torch.cat([centre - half, centre + half]).to(torch.int64).tolist()  # whole pixels
    w, h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
    resized = F.interpolate(padded[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]  # (h, w)
    H, W = image_size
    out = torch.zeros(H, W)  # (H, W)
    # The part of the resized mask that lands inside the image.
    top, left = max(y1, 0), max(x1, 0)
    bottom, right = min(y1 + h, H), min(x1 + w, W)
    if bottom > top and right > left:
        out[top:bottom, left:right] = resized[top - y1: bottom - y1, left - x1: right - x1]
    return out > 0.5  # (H, W) bool


CHECKS = [
    (check_per_class_nms, my_per_class_nms),
    (check_decode_class, my_decode_class),
    (check_paste_one_mask, my_paste_one_mask),
]


def _class_blind_nms(boxes, scores, labels, iou_threshold):
    return nms_module.nms(boxes, scores, iou_threshold)  # forgets the classes: a circle suppresses a square


def _unsorted_per_class_nms(boxes, scores, labels, iou_threshold):
    kept = [torch.nonzero(labels == c).squeeze(1) for c in labels.unique()]
    return torch.cat([idx[nms_module.nms(boxes[idx], scores[idx], iou_threshold)] for idx in kept])  # class by class


def _decode_without_weights(box_deltas, proposals, k):
    return my_decode_class(box_deltas, proposals, k, weights=(1.0, 1.0, 1.0, 1.0))  # the RPN's weights


def _decode_without_cap(box_deltas, proposals, k):
    d = box_deltas[:, 4 * k: 4 * k + 4]
    w, h = proposals[:, 2] - proposals[:, 0], proposals[:, 3] - proposals[:, 1]
    cx, cy = proposals[:, 0] + 0.5 * w + d[:, 0] / 10 * w, proposals[:, 1] + 0.5 * h + d[:, 1] / 10 * h
    hw, hh = 0.5 * w * torch.exp(d[:, 2] / 5), 0.5 * h * torch.exp(d[:, 3] / 5)  # no cap
    return torch.stack([cx - hw, cy - hh, cx + hw, cy + hh], dim=1)


def _paste_without_pad(mask, box, image_size):
    return my_paste_one_mask(mask, box, image_size, padding=0)  # "resize to the box" read literally


WRONG = [
    (check_per_class_nms, _class_blind_nms),
    (check_per_class_nms, _unsorted_per_class_nms),
    (check_decode_class, _decode_without_weights),
    (check_decode_class, _decode_without_cap),
    (check_paste_one_mask, _paste_without_pad),
    (check_per_class_nms, None),
]
