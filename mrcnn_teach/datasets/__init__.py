"""Data for mrcnn_teach: a built-in shapes dataset, COCO-format files, flips, scale jitter and batching."""

from .coco import CocoDetection, rle_string_to_counts
from .shapes import (CLASSES, Shape, ShapesDataset, export_coco, masks_to_boxes,
                     render_shapes, shape_mask, visible_masks)
from .transforms import Compose, RandomHorizontalFlip, RandomScaleJitter, collate_fn, hflip, scale_jitter, tight_boxes

__all__ = [
    "CLASSES", "Shape", "ShapesDataset", "export_coco", "masks_to_boxes", "render_shapes",
    "shape_mask", "visible_masks",
    "CocoDetection", "rle_string_to_counts",
    "Compose", "RandomHorizontalFlip", "RandomScaleJitter", "collate_fn", "hflip", "scale_jitter", "tight_boxes",
]
