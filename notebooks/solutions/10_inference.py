"""Worked solutions of the exercises of 10_inference.ipynb (for teachers; tests/test_exercises.py runs them)."""

import math

import torch
from torch.nn import functional as F

from mrcnn_teach import nms as nms_module
from mrcnn_teach.boxes import BoxCoder, clip_boxes_to_image, remove_small_boxes
from mrcnn_teach.exercises.nb10 import check_inference_settings, check_mask_extent, check_postprocess


def my_mask_extent(box, padding, fade=True):
    """(first column, last column, first row, last row) of an all-ones 28x28 mask pasted into box with a
    zero ring `padding` = p cells wide, > 0.5.

    Per axis: the box grown by (28 + 2p) / 28 about its centre, truncated to whole pixels a..b, gets the
    padded 28 + 2p cells resized to n = b - a + 1 pixels; cell c covers image x in [a + c n/(28 + 2p),
    a + (c+1) n/(28 + 2p)). The value crosses 0.5 halfway between cell p - 1 (a zero) and cell p (a one):
    at x = a + p n/(28 + 2p), and on the right at a + (28 + p) n/(28 + 2p). A pixel u is in the mask when
    its centre u + 0.5 lies strictly between the two.
    """
    M = 28
    scale = (M + 2 * padding) / M
    out = []
    for lo, hi in ((box[0], box[2]), (box[1], box[3])):
        centre, half = (lo + hi) / 2, (hi - lo) / 2 * scale
        a, b = int(centre - half), int(centre + half)  # torchvision's truncation (toward 0; here >= 0)
        n = b - a + 1  # the +1: pixels a..b inclusive
        cells = M + 2 * padding
        left, right = (a + padding * n / cells, a + (cells - padding) * n / cells) if fade else (a, a + n)
        first = math.floor(left - 0.5) + 1  # the first pixel whose centre is > left
        last = math.ceil(right - 0.5) - 1  # the last pixel whose centre is < right
        out += [first, last]
    return out[0], out[1], out[2], out[3]


def my_inference_settings():
    """Per-class NMS as the model has it, and a score threshold of 0.55 instead of 0.05.

    Measured with notebook 11's evaluation on the 100 held-out images (section 9's grid): raising the
    score threshold removes the low-scored detections that cost mask-branch work and add little AP, and
    keeps the wrong-class second guesses above 0.55 (class-agnostic NMS drops them, and then loses the
    objects whose first guess was the wrong class: lower AP for the same number of detections).
    """
    return dict(score_thresh=0.55, nms_thresh=0.5, class_agnostic=False)


def my_postprocess(class_logits, box_deltas, proposals, image_size, score_thresh, nms_thresh, detections_per_img):
    """One image's box post-processing: the buggy copy with the softmax over all K+1 classes."""
    num_classes = class_logits.shape[1]  # K + 1
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    boxes = coder.decode(box_deltas.reshape(-1, num_classes, 4), proposals)  # (N, K+1, 4)
    boxes = clip_boxes_to_image(boxes, image_size)[:, 1:].reshape(-1, 4)  # (N*K, 4)
    scores = F.softmax(class_logits, dim=-1)[:, 1:].reshape(-1)  # (N*K,) background keeps its share
    labels = torch.arange(1, num_classes).repeat(len(proposals))  # (N*K,)
    keep = torch.nonzero(scores > score_thresh).squeeze(1)  # (n1,)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = remove_small_boxes(boxes, min_size=1e-2)  # (n2,)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = nms_module.batched_nms(boxes, scores, labels, nms_thresh)[:detections_per_img]  # (D,)
    return boxes[keep], scores[keep], labels[keep]


CHECKS = [
    (check_mask_extent, my_mask_extent),
    (check_inference_settings, my_inference_settings),
    (check_postprocess, my_postprocess),
]


def _extent_without_fade(box, padding):
    return my_mask_extent(box, padding, fade=False)  # the padded cells over the truncated box: no fade


def _extent_without_plus_one(box, padding):
    first, last, top, bottom = my_mask_extent(box, padding)
    return first, last - 1, top, bottom - 1  # resized to b - a pixels: one short


def _extent_of_a_one_cell_ring(box, padding):
    return my_mask_extent(box, 1)  # section 7's 30/28 and 1/30 copied: right for p = 1 only


def _extent_of_the_exact_box(box, padding):
    # "the mask covers the box": every pixel whose centre is inside the float box
    return (math.ceil(box[0] - 0.5), math.floor(box[2] - 0.5), math.ceil(box[1] - 0.5), math.floor(box[3] - 0.5))


def _the_defaults():
    return dict(score_thresh=0.05, nms_thresh=0.5, class_agnostic=False)  # 7.6 detections per image


def _too_strict():
    return dict(score_thresh=0.85, nms_thresh=0.5, class_agnostic=False)  # within budget, objects lost


def _postprocess_foreground_softmax(class_logits, box_deltas, proposals, image_size, score_thresh, nms_thresh,
                                    detections_per_img):
    # the bug of the notebook's buggy copy: a softmax over the K foreground logits only
    return my_postprocess(torch.cat([torch.full_like(class_logits[:, :1], -1e4), class_logits[:, 1:]], dim=1),
                          box_deltas, proposals, image_size, score_thresh, nms_thresh, detections_per_img)


def _postprocess_cut_before_nms(class_logits, box_deltas, proposals, image_size, score_thresh, nms_thresh,
                                detections_per_img):
    num_classes = class_logits.shape[1]
    boxes = BoxCoder((10.0, 10.0, 5.0, 5.0)).decode(box_deltas.reshape(-1, num_classes, 4), proposals)
    boxes = clip_boxes_to_image(boxes, image_size)[:, 1:].reshape(-1, 4)
    scores = F.softmax(class_logits, dim=-1)[:, 1:].reshape(-1)
    labels = torch.arange(1, num_classes).repeat(len(proposals))
    top = scores.argsort(descending=True)[:detections_per_img]  # the top-N cut before NMS, as the RPN does
    boxes, scores, labels = boxes[top], scores[top], labels[top]
    keep = scores > score_thresh
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = nms_module.batched_nms(boxes, scores, labels, nms_thresh)
    return boxes[keep], scores[keep], labels[keep]


WRONG = [
    (check_mask_extent, _extent_without_fade),
    (check_mask_extent, _extent_without_plus_one),
    (check_mask_extent, _extent_of_a_one_cell_ring),
    (check_mask_extent, _extent_of_the_exact_box),
    (check_inference_settings, _the_defaults),
    (check_inference_settings, _too_strict),
    (check_postprocess, _postprocess_foreground_softmax),
    (check_postprocess, _postprocess_cut_before_nms),
]
