"""Checks for the exercises of notebooks/13_your_own_data.ipynb (annotation files, the input scale).

The references are the library's own converter and loader (exercise 1), pycocotools' box and area of an
RLE (exercise 2), and a search over input scales on the notebook's own data (exercise 3).
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np

from . import need_function, refuse_names, run_check

# --------------------------------------------------------------------------- exercise 1

EXERCISE1_CATEGORIES = {"bolt": 30, "washer": 2, "bracket": 17}
EXERCISE1_SIZE = (40, 60)  # (height, width) of the image
EXERCISE1_SHAPES = (
    {"label": "bracket", "shape_type": "polygon", "group_id": None, "flags": {},
     "points": [[30, 8], [46, 8], [46, 12], [35, 12], [35, 28], [30, 28]]},
    {"label": "washer", "shape_type": "circle", "group_id": None, "flags": {},
     "points": [[10, 10], [13, 10]]},
)


def _exercise1_truth():
    """Convert the two shapes with the library and load them: [(bbox, box, area, label), ...]."""
    from PIL import Image

    from ..datasets import CocoDetection
    from ..datasets.labelme import labelme_to_coco

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        height, width = EXERCISE1_SIZE
        Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(tmp / "parts.png")
        doc = {"shapes": list(EXERCISE1_SHAPES), "imagePath": "parts.png", "imageHeight": height, "imageWidth": width}
        (tmp / "parts.json").write_text(json.dumps(doc))
        coco = labelme_to_coco([tmp / "parts.json"], EXERCISE1_CATEGORIES, out_file=tmp / "annotations.json")
        _, target = CocoDetection(tmp, tmp / "annotations.json")[0]
    return [(ann["bbox"], box, area, label) for ann, box, area, label in
            zip(coco["annotations"], target["boxes"].tolist(), target["area"].tolist(), target["labels"].tolist())]


def check_polygon_annotations(answer) -> bool:
    """answer() -> [(bbox [x, y, w, h], box [x1, y1, x2, y2], area, label), ...] for the two shapes, in order."""

    def compare():
        need_function(answer)
        refuse_names(answer, {"labelme_to_coco", "CocoDetection"},
                     "work the numbers out on paper (the check converts the shapes itself)")
        got = answer()
        assert got is not None and len(got) == 2, "return a list of two tuples, one per shape (bracket, washer)"
        for (bbox, box, area, label), mine, shape in zip(_exercise1_truth(), got, EXERCISE1_SHAPES):
            assert len(mine) == 4, f"{shape['label']}: give (bbox, box, area, label), got {mine!r}"
            m_bbox, m_box, m_area, m_label = mine
            name = shape["label"]
            assert [float(v) for v in m_bbox] == bbox, (f"{name}: the COCO bbox is [x, y, w, h] = {bbox}, you gave "
                                                        f"{list(m_bbox)}")
            assert [float(v) for v in m_box] == box, f"{name}: the model's box (x1, y1, x2, y2) is wrong: {list(m_box)}"
            assert float(m_area) == area, (f"{name}: the area counts the pixels whose centre is inside; "
                                           f"{m_area} is not it")
            assert int(m_label) == label, (f"{name}: label {m_label} is wrong (labels number the categories in the "
                                           "order of their ids, from 1)")

    return run_check("bbox, box, area and label of a labelme shape", compare)


# --------------------------------------------------------------------------- exercise 2


def _masks(seed: int = 1313):
    """Masks that catch off-by-one boxes: single pixels, one-pixel lines, blobs on the image border."""
    rng = np.random.default_rng(seed)
    height, width = 19, 26
    masks = []
    for k in range(12):
        m = np.zeros((height, width), bool)
        if k == 0:
            m[4, 7] = True  # one pixel: bbox [7, 4, 1, 1]
        elif k == 1:
            m[2:15, 25] = True  # the last column: x + w = width
        elif k == 2:
            m[18, 3:9] = True  # the last row
        else:
            y, x = rng.integers(0, height), rng.integers(0, width)
            m[y: y + rng.integers(1, 10), x: x + rng.integers(1, 12)] = True
            m[rng.integers(0, height), rng.integers(0, width)] = True  # and a stray pixel elsewhere
        masks.append(m)
    return masks


def check_rle_annotation(answer) -> bool:
    """answer(mask (H, W) bool, ann_id, image_id, category_id) -> a COCO annotation dict with an RLE."""
    from pycocotools import mask as mask_utils

    def compare():
        need_function(answer)
        for k, mask in enumerate(_masks()):
            ann = answer(mask.copy(), k + 1, 7, 11)
            assert isinstance(ann, dict), f"return a dict, got {type(ann).__name__}"
            for key, value in (("id", k + 1), ("image_id", 7), ("category_id", 11), ("iscrowd", 0)):
                assert ann.get(key) == value, f"'{key}' should be {value}, got {ann.get(key)!r}"
            segm = ann.get("segmentation")
            assert isinstance(segm, dict) and "counts" in segm and "size" in segm, "segmentation must be an RLE dict"
            counts = segm["counts"].encode() if isinstance(segm["counts"], str) else segm["counts"]
            rle = {"size": list(segm["size"]), "counts": counts}
            assert (mask_utils.decode(rle) == mask).all(), f"mask {k}: the RLE does not decode to the mask"
            expected = mask_utils.toBbox(rle).tolist()  # pycocotools' box of the mask: [x, y, w, h]
            ys, xs = np.nonzero(mask)
            assert [float(v) for v in ann.get("bbox", [])] == expected, (
                f"mask {k} covers columns {xs.min()}..{xs.max()} and rows {ys.min()}..{ys.max()}: its bbox is "
                f"{expected}, you gave {ann.get('bbox')}")
            assert float(ann.get("area", -1)) == float(mask.sum()), f"mask {k}: area should be {mask.sum()} pixels"

    return run_check("an RLE annotation from a mask", compare)


# --------------------------------------------------------------------------- exercise 3

REACH_TARGET = 0.95  # share of objects an anchor can reach
COST_SLACK = 1.15  # a choice may cost up to 15% more pixels than the cheapest that reaches the target


def notebook_objects(num_images: int | None = None, seed: int | None = None):
    """The notebook's data as the check sees it: (image sizes (I, 2) as (H, W), boxes (N, 4) x1y1x2y2 of
    the non-crowd objects, the image index of each box (N,)), read from a fresh `write_coco_export`."""
    from ..datasets import example

    kwargs = {k: v for k, v in (("num_images", num_images), ("seed", seed)) if v is not None}
    with tempfile.TemporaryDirectory() as tmp:
        data = json.loads((example.write_coco_export(tmp, **kwargs) / "annotations.json").read_text())
    index = {im["id"]: i for i, im in enumerate(data["images"])}
    sizes = np.array([(im["height"], im["width"]) for im in data["images"]], dtype=np.float64)  # (I, 2)
    anns = [a for a in data["annotations"] if not a["iscrowd"]]
    xywh = np.array([a["bbox"] for a in anns], dtype=np.float64)  # (N, 4)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)  # (N, 4)
    return sizes, boxes, np.array([index[a["image_id"]] for a in anns])


def reach_and_cost(sizes, boxes, image_of, min_size: int, max_size: int, anchor_sizes):
    """(share of boxes whose area in the model's pixels is within a factor 2 of some anchor's area,
    mean padded pixels per image) at input scale (min_size, max_size)."""
    scale = np.minimum(min_size / sizes.min(axis=1), max_size / sizes.max(axis=1))  # (I,)
    new = np.floor(sizes * scale[:, None])  # (I, 2) the resized (h, w)
    ratio = new / sizes  # (I, 2) per-axis factors, as resize_boxes applies them
    area = ((boxes[:, 2] - boxes[:, 0]) * ratio[image_of, 1] * (boxes[:, 3] - boxes[:, 1]) * ratio[image_of, 0])  # (N,)
    anchor_area = np.array([a * a for level in anchor_sizes for a in level], dtype=np.float64)  # (S,)
    fold = np.maximum(area[:, None] / anchor_area[None, :], anchor_area[None, :] / area[:, None])  # (N, S) >= 1
    reach = float((fold.min(axis=1) <= 2.0).mean())  # IoU <= smaller area / larger area: <= 2 to reach 0.5
    padded = np.ceil(new / 32) * 32  # (I, 2)
    return reach, float((padded[:, 0] * padded[:, 1]).mean())


def cheapest_scale(sizes, boxes, image_of, anchor_sizes, target: float = REACH_TARGET):
    """The (min_size, max_size), multiples of 8 up to 800, of fewest pixels that reach `target`; and its cost."""
    best = None
    for min_size in range(32, 801, 8):
        for max_size in range(min_size, min(2 * min_size, 1333) + 1, 8):
            reach, cost = reach_and_cost(sizes, boxes, image_of, min_size, max_size, anchor_sizes)
            if reach >= target and (best is None or cost < best[2]):
                best = (min_size, max_size, cost)
    return best


def check_input_size(answer) -> bool:
    """answer() -> (min_size, max_size) for the notebook's data: >= 95% of the objects within an anchor's
    reach, at most 15% more padded pixels than the cheapest scale that does it."""
    from ..configs import get_config

    def compare():
        need_function(answer)
        refuse_names(answer, {"cheapest_scale"}, "it is the check's own; the search over scales is the exercise")
        got = answer()
        assert got is not None and len(got) == 2, "return (min_size, max_size)"
        min_size, max_size = (int(v) for v in got)
        assert min_size >= 1 and max_size >= 1, "sizes are positive numbers of pixels"
        anchors = get_config("shapes_tiny")["anchor_sizes"]
        sizes, boxes, image_of = notebook_objects()
        reach, cost = reach_and_cost(sizes, boxes, image_of, min_size, max_size, anchors)
        base_reach, base_cost = reach_and_cost(sizes, boxes, image_of, 128, 128, anchors)
        assert reach >= REACH_TARGET, (f"at ({min_size}, {max_size}) {reach:.1%} of the objects are within an anchor's "
                                       f"reach; the target is {REACH_TARGET:.0%} (the preset's 128 px: {base_reach:.1%})")
        best = cheapest_scale(sizes, boxes, image_of, anchors)
        assert cost <= COST_SLACK * best[2], (f"({min_size}, {max_size}) reaches {reach:.1%} but costs {cost:,.0f} padded "
                                              f"pixels per image, {cost / best[2]:.2f}x the cheapest choice that reaches "
                                              f"{REACH_TARGET:.0%}: can a smaller min_size or max_size do it?")

    return run_check("an input scale for small objects", compare)
