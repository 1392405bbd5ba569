"""A made-up annotation tool's export, for notebook 13: "photos" of varied sizes and their annotations.

Nothing can be downloaded here, so the notebook that teaches how to train on your own data makes the
data itself, in the two forms users bring:

- `write_coco_export(out_dir)`: a COCO folder (`images/` + `annotations.json`) as CVAT or Label Studio
  hand it over: JPEG images of several sizes and aspect ratios, sparse category ids listed out of
  order, polygons for the objects drawn with a polygon tool (squares and triangles in full view),
  compressed RLE for masks painted with a brush (circles, and anything partly hidden, whose visible
  part is no longer a polygon), and one crowd region (a pile of small circles, uncompressed RLE, as
  COCO stores its own crowds);
- `write_labelme_export(out_dir)`: labelme's format, one JSON file beside each image, with polygon and
  circle shapes (`datasets.labelme.labelme_to_coco` converts it).

The pixels and the annotations agree exactly: a polygon object is painted with the very pixels
pycocotools rasterises its polygon to (`polygon_mask`), a circle with `shapes.shape_mask`'s rule
(a pixel whose centre lies inside), so a loader that reads the files back must find the same masks.
Scenes are drawn from a generator seeded by (seed, index), like `ShapesDataset`.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np

from .shapes import (CIRCLE, SQUARE, TRIANGLE, Shape, _distinct_color, _polygon_vertices,
                     gradient_background, render_shapes, shape_mask)

# Sparse ids, not in id order: the file's order is not the model's label order (labels follow sorted ids).
CATEGORIES = (
    {"id": 25, "name": "triangle", "supercategory": "shape"},
    {"id": 4, "name": "square", "supercategory": "shape"},
    {"id": 11, "name": "circle", "supercategory": "shape"},
)
CATEGORY_ID = {SQUARE: 4, CIRCLE: 11, TRIANGLE: 25}  # shapes label -> the file's category id
IMAGE_SIZES = ((96, 128), (120, 160), (150, 200), (180, 240), (240, 320), (160, 120), (200, 150), (128, 128))  # (H, W)
SIZE_FRACTION = (0.05, 0.5)  # object size (side or diameter) / shorter image side, drawn log-uniformly
CROWD_IMAGE = 0  # index of the one image with a crowd region


def polygon_mask(vertices: np.ndarray, height: int, width: int) -> np.ndarray:
    """(n, 2) polygon vertices x, y -> (H, W) bool: the pixels pycocotools rasterises the polygon to."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.frPyObjects([np.asarray(vertices, dtype=np.float64).ravel().tolist()], height, width)
    with warnings.catch_warnings():  # pycocotools' own numpy-2 DeprecationWarning, not ours
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(mask_utils.merge(rle)).astype(bool)  # (H, W)


def vertices(shape: Shape) -> np.ndarray:
    """(n, 2) corners of a square or triangle, rounded to 0.01 px as an annotation tool stores them."""
    return _polygon_vertices(shape).round(2)


def _rasterise(shape: Shape, height: int, width: int) -> np.ndarray:
    """Paint exactly what the annotation will say: pycocotools' polygon pixels, or a circle's
    pixel-centre-inside rule (what labelme_to_coco uses for circles)."""
    if shape.label == CIRCLE:
        return shape_mask(shape, height, width)
    return polygon_mask(vertices(shape), height, width)


def make_scene(seed: int, index: int, crowd: bool = False, overlap: bool = True):
    """One photo: (image (H, W, 3) uint8, objects), each object a dict(label, shape, mask (H, W) bool,
    full_view bool, crowd bool). overlap=False places the objects apart (for the labelme export)."""
    rng = np.random.default_rng([seed, index])
    height, width = IMAGE_SIZES[int(rng.integers(len(IMAGE_SIZES)))]
    background, ends = gradient_background(rng, height, width)
    avoid = [ends[0], ends[1], ends.mean(axis=0)]
    short = min(height, width)
    shapes, is_crowd = [], []
    if crowd:  # a pile of small circles in one corner: too many to outline one by one
        color = _distinct_color(rng, avoid)
        avoid.append(np.array(color))
        cx0, cy0 = 0.3 * width, 0.7 * height
        for _ in range(16):
            r = 0.13 * short * math.sqrt(rng.uniform())
            phi = rng.uniform(0, 2 * math.pi)
            shade = tuple(float(np.clip(c + rng.uniform(-0.08, 0.08), 0, 1)) for c in color)
            shapes.append(Shape(CIRCLE, round(cx0 + r * math.cos(phi), 2), round(cy0 + r * math.sin(phi), 2),
                                round(float(rng.uniform(0.025, 0.04) * short), 2), color=shade))
            is_crowd.append(True)
    for _ in range(int(rng.integers(1, 6))):
        label = int(rng.integers(1, 4))
        size = short * math.exp(rng.uniform(*np.log(SIZE_FRACTION)))
        r = Shape(label, 0.0, 0.0, size).radius
        for _attempt in range(50):  # without overlap: rejection sampling of the centre
            cx, cy = rng.uniform(r, width - r), rng.uniform(r, height - r)
            if overlap or all(math.hypot(cx - s.cx, cy - s.cy) > r + s.radius + 2 for s in shapes):
                break
        else:
            continue
        color = _distinct_color(rng, avoid)
        avoid.append(np.array(color))
        shapes.append(Shape(label, round(float(cx), 2), round(float(cy), 2), round(size, 2),
                            float(rng.uniform(0, 2 * math.pi)), color))
        is_crowd.append(False)
    image, masks, kept = render_shapes(shapes, background, rasterise=_rasterise)
    noise = 0.02 * rng.standard_normal(image.shape)  # (H, W, 3)
    pixels = (np.clip(image + noise, 0, 1) * 255).round().astype(np.uint8)  # (H, W, 3)
    crowd_of = {id(s): c for s, c in zip(shapes, is_crowd)}
    objects = [dict(label=s.label, shape=s, mask=m, full_view=bool((m == _rasterise(s, height, width)).all()),
                    crowd=crowd_of[id(s)]) for s, m in zip(kept, masks)]
    return pixels, objects


def rle_annotation(mask: np.ndarray, ann_id: int, image_id: int, category_id: int) -> dict:
    """A binary mask (H, W) as a COCO annotation: compressed RLE, its tight bbox [x, y, w, h] in pixel
    edges (a mask on columns 3..7 has x = 3, w = 5), area = its pixel count."""
    from pycocotools import mask as mask_utils

    mask = np.asarray(mask, dtype=bool)  # (H, W)
    ys, xs = np.nonzero(mask)  # rows and columns of the mask's pixels
    x, y = int(xs.min()), int(ys.min())
    bbox = [x, y, int(xs.max()) + 1 - x, int(ys.max()) + 1 - y]  # + 1: the last pixel's right edge
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))  # column-major runs
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "iscrowd": 0,
            "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
            "area": float(mask.sum()), "bbox": [float(v) for v in bbox]}


def _annotation(obj: dict, image_id: int, ann_id: int) -> dict:
    """One object as a COCO annotation: a polygon where the tool had one, an RLE where it painted."""
    mask, category_id = obj["mask"], CATEGORY_ID[obj["label"]]
    if obj["label"] == CIRCLE or not obj["full_view"]:  # brush tool: the painted pixels
        return rle_annotation(mask, ann_id, image_id, category_id)
    corners = vertices(obj["shape"])  # (n, 2) polygon tool: the outline, in pixel coordinates
    x1, y1 = corners.min(axis=0).clip(0)
    x2, y2 = np.minimum(corners.max(axis=0), mask.shape[::-1])
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "iscrowd": 0,
            "segmentation": [corners.ravel().tolist()], "area": float(mask.sum()),
            "bbox": [round(float(v), 2) for v in (x1, y1, x2 - x1, y2 - y1)]}  # the outline's extent


def _crowd_annotation(masks: list[np.ndarray], image_id: int, ann_id: int) -> dict:
    """The pile as one crowd region: the union of its pieces, uncompressed RLE (column-major runs)."""
    union = np.logical_or.reduce(masks)  # (H, W)
    flat = union.T.ravel()  # column-major, as COCO counts
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1  # where a run ends
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts  # runs start with zeros
    return {**rle_annotation(union, ann_id, image_id, CATEGORY_ID[CIRCLE]), "iscrowd": 1,
            "segmentation": {"size": list(union.shape), "counts": counts}}


def write_coco_export(out_dir, num_images: int = 60, seed: int = 0) -> Path:
    """Write out_dir/images/photo_000.jpg ... and out_dir/annotations.json (see the module docstring).

    Returns out_dir. Read it with CocoDetection(out_dir / "images", out_dir / "annotations.json").
    """
    from PIL import Image

    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        pixels, objects = make_scene(seed, i, crowd=(i == CROWD_IMAGE))
        image_id, file_name = i + 1, f"photo_{i:03d}.jpg"
        Image.fromarray(pixels).save(out_dir / "images" / file_name, quality=92)
        images.append({"id": image_id, "file_name": file_name, "height": pixels.shape[0], "width": pixels.shape[1]})
        for obj in objects:
            if not obj["crowd"]:
                annotations.append(_annotation(obj, image_id, len(annotations) + 1))
        pile = [o["mask"] for o in objects if o["crowd"]]
        if pile:
            annotations.append(_crowd_annotation(pile, image_id, len(annotations) + 1))
    coco = {"info": {"description": "made up by mrcnn_teach.datasets.example"}, "licenses": [],
            "images": images, "annotations": annotations, "categories": [dict(c) for c in CATEGORIES]}
    (out_dir / "annotations.json").write_text(json.dumps(coco))
    return out_dir


def labelme_shape(obj: dict) -> dict:
    """One object as labelme draws it: a circle as (centre, a point on the rim), the others as polygons."""
    shape, name = obj["shape"], next(c["name"] for c in CATEGORIES if c["id"] == CATEGORY_ID[obj["label"]])
    if obj["label"] == CIRCLE:
        points = [[shape.cx, shape.cy], [round(shape.cx + shape.size / 2, 3), shape.cy]]
        kind = "circle"
    else:
        points = vertices(shape).tolist()
        kind = "polygon"
    return {"label": name, "points": points, "group_id": None, "description": "", "shape_type": kind, "flags": {}}


def write_labelme_export(out_dir, num_images: int = 4, seed: int = 7) -> list[Path]:
    """labelme's format: out_dir/scan_000.jpg with out_dir/scan_000.json beside it, ... -> the JSON paths.

    Objects do not overlap (each outline is the whole object), as in a labelme project where every
    object is drawn as one shape.
    """
    from PIL import Image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(num_images):
        pixels, objects = make_scene(seed, i, overlap=False)
        name = f"scan_{i:03d}"
        Image.fromarray(pixels).save(out_dir / f"{name}.jpg", quality=92)
        doc = {"version": "5.5.0", "flags": {}, "shapes": [labelme_shape(o) for o in objects],
               "imagePath": f"{name}.jpg", "imageData": None,
               "imageHeight": int(pixels.shape[0]), "imageWidth": int(pixels.shape[1])}
        paths.append(out_dir / f"{name}.json")
        paths[-1].write_text(json.dumps(doc, indent=1))
    return paths
