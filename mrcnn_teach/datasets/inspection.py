"""Looking at a dataset before training: its boxes as the model will see them, and how well anchors fit them.

A model never sees your image files at their own size: its transform resizes every image so the
shorter side is `min_size` unless the longer side would pass `max_size` (transform.ImageTransform),
then pads it to a multiple of 32. Anchor sizes are in those pixels. So the question "does an anchor
fit this object?" (notebook 03) must be asked of the resized boxes, on the padded image's anchor grid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from ..anchors import AnchorGenerator
from ..boxes import box_iou
from ..transform import resize_boxes

STRIDES = (4, 8, 16, 32)  # P2..P5; P6 is P5 subsampled by 2 (fpn.py)


def resized_size(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """The image size after the model's resize (ImageTransform.resize: shorter side to min_size, longer
    side at most max_size; F.interpolate's output size is floor(size * scale))."""
    scale = min(min_size / min(height, width), max_size / max(height, width))
    return math.floor(height * scale), math.floor(width * scale)


def boxes_in_model_frame(dataset, min_size: int, max_size: int) -> list[tuple[Tensor, tuple[int, int]]]:
    """For each image of `dataset`: (its GT boxes (N, 4) in the resized image's pixels, the resized (h, w)).

    Crowd regions are left out: they are no training targets (datasets/coco.py).
    """
    out = []
    for i in range(len(dataset)):
        image, target = dataset[i]
        height, width = image.shape[-2:]
        keep = target["iscrowd"] == 0 if "iscrowd" in target else slice(None)
        size = resized_size(height, width, min_size, max_size)
        out.append((resize_boxes(target["boxes"][keep], (height, width), size), size))  # (N, 4)
    return out


def best_anchor_iou(boxes: Tensor, image_size: tuple[int, int], config: Mapping, size_divisible: int = 32) -> Tensor:
    """IoU of each GT box (N, 4) -- in resized-image pixels -- with its best anchor of `config`
    (its anchor_sizes and aspect_ratios), on the anchor grid of the image padded to size_divisible.
    -> (N,)"""
    h, w = (math.ceil(s / size_divisible) * size_divisible for s in image_size)  # the padded image
    levels = [(h // s, w // s) for s in STRIDES]  # P2..P5
    levels.append((math.ceil(levels[-1][0] / 2), math.ceil(levels[-1][1] / 2)))  # P6 = maxpool(P5, 1, stride 2)
    anchors = AnchorGenerator(config["anchor_sizes"], config["aspect_ratios"])((h, w), levels)  # (A, 4)
    if len(boxes) == 0:
        return boxes.new_zeros(0)  # (0,)
    return box_iou(boxes.to(anchors), anchors).max(dim=1).values  # (N,)
