"""mrcnn_teach: Mask R-CNN, one readable stage at a time.

The modules follow the data flow of the paper's Figure 1:

    transform -> backbone (C2..C5) -> fpn (P2..P6) -> anchors -> rpn (-> proposals)
    -> poolers (RoIAlign per level) -> heads / roi_heads (boxes, classes, masks) -> masks (paste)

Box geometry shared by every stage lives in `boxes` and `nms`; RoIPool/RoIAlign in `roi_ops`.
"""

import importlib

# Imported on first use, so `import mrcnn_teach.boxes` stays light and a notebook that only needs
# the geometry does not build the whole model stack.
_EXPORTS = {
    "BoxCoder": "boxes", "box_area": "boxes", "box_iou": "boxes",
    "clip_boxes_to_image": "boxes", "remove_small_boxes": "boxes",
    "nms": "nms", "batched_nms": "nms", "roi_align": "roi_ops", "roi_pool": "roi_ops",
    "Kernels": "kernels", "TEACHING": "kernels", "TORCHVISION": "kernels", "get_kernels": "kernels",
    "MaskRCNN": "model", "CONFIGS": "configs", "build_maskrcnn": "configs", "get_config": "configs",
    "load_torchvision_weights": "weights",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CONFIGS", "TEACHING", "TORCHVISION", "BoxCoder", "Kernels", "MaskRCNN",
    "batched_nms", "box_area", "box_iou", "build_maskrcnn", "clip_boxes_to_image", "get_config",
    "get_kernels", "load_torchvision_weights", "nms", "remove_small_boxes", "roi_align", "roi_pool",
]
__version__ = "0.1.0"
