"""Data for mrcnn_teach: a built-in shapes dataset, COCO-format files, flips and batching."""

from .coco import CocoDetection, rle_string_to_counts
from .shapes import (CLASSES, Shape, ShapesDataset, export_coco, masks_to_boxes,
                     render_shapes, shape_mask, visible_masks)
from .transforms import Compose, RandomHorizontalFlip, collate_fn, hflip

__all__ = [
    "CLASSES", "Shape", "ShapesDataset", "export_coco", "masks_to_boxes", "render_shapes",
    "shape_mask", "visible_masks",
    "CocoDetection", "rle_string_to_counts",
    "Compose", "RandomHorizontalFlip", "collate_fn", "hflip",
]
