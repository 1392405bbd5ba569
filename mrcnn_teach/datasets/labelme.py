"""labelme's per-image JSON files -> one COCO annotation file (what CocoDetection and the CLI read).

labelme (github.com/wkentaro/labelme) saves `photo.json` beside `photo.jpg`:

    {"imagePath": "photo.jpg", "imageHeight": 480, "imageWidth": 640,
     "shapes": [{"label": "cat", "shape_type": "polygon", "points": [[x, y], ...], "group_id": null}, ...]}

Points are pixel coordinates with the same convention as COCO's polygons (x to the right, y down,
pixel (x, y) covering [x, x+1) x [y, y+1)). The conversion, per shape:

- polygon (3 points or more): the COCO polygon [x1, y1, x2, y2, ...];
- rectangle (two corners): the polygon of its four corners;
- circle (centre, a point on the rim): a mask of the pixels whose centre lies inside, as RLE
  (a polygon would only approximate it);
- shapes with the same label and the same group_id (not null) in one file: one object of several
  parts (an object cut in two by an occluder), so one annotation;
- bbox = [x, y, w, h] of the outline's extent, area = the pixel count of its mask (COCO's meaning).

Why not the `labelme2coco` package: its release 0.2.6 pulls in opencv and shapely (35 packages) for
what is done here in a page; it numbers categories from 0 in the order labels first appear, so a typo
("strr") silently becomes a new class and the ids change when files are added; it writes each
`file_name` as a path through the labelme folder, which an `images/` directory does not resolve; and
a two-point polygon ends in a shapely traceback that names neither the file nor the shape. Here the
categories are given (name -> the id you choose), and every refusal names the file and the shape.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

SHAPE_TYPES = ("polygon", "rectangle", "circle")
TOLERANCE = 1.0  # pixels a point may lie outside the image (annotation tools round at the border)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _categories(categories: Mapping[str, int] | Sequence[str]) -> dict[str, int]:
    """name -> COCO id; a list of names gets ids 1, 2, ... in its order."""
    if isinstance(categories, Mapping):
        table = dict(categories)
    else:
        table = {name: i for i, name in enumerate(categories, start=1)}
    if not table:
        raise ValueError("labelme_to_coco: categories is empty; give the label names (and ids) to convert")
    bad = {k: v for k, v in table.items() if not isinstance(k, str) or not isinstance(v, int) or isinstance(v, bool)}
    if bad:
        raise ValueError(f"labelme_to_coco: categories maps label names to int ids, got {bad}")
    if len(set(table.values())) != len(table):
        raise ValueError(f"labelme_to_coco: two labels share an id in {table}")
    return table


def _points(shape: dict, where: str, width: int, height: int) -> np.ndarray:
    points = shape.get("points")
    if not (isinstance(points, list) and all(isinstance(p, (list, tuple)) and len(p) == 2 and all(map(_is_number, p))
                                             for p in points)):
        raise ValueError(f"{where}: 'points' must be a list of [x, y] pairs of numbers, got {points!r}")
    xy = np.asarray(points, dtype=np.float64).reshape(-1, 2)  # (n, 2)
    t = TOLERANCE
    if len(xy) and ((xy < -t).any() or (xy[:, 0] > width + t).any() or (xy[:, 1] > height + t).any()):
        raise ValueError(f"{where}: a point lies outside the {width}x{height} image: {xy.round(2).tolist()}")
    return xy


def _shape_to_segmentation(shape: dict, where: str, width: int, height: int):
    """One labelme shape -> a COCO polygon (list of numbers) or a mask (H, W) bool (circles)."""
    kind = shape.get("shape_type", "polygon")  # labelme 3 wrote no shape_type: all polygons
    xy = _points(shape, where, width, height)
    if kind == "polygon":
        if len(xy) < 3:
            raise ValueError(f"{where}: a polygon needs at least 3 points, got {len(xy)} "
                             "(a stray click in labelme? delete the shape or redraw it)")
        return xy.ravel().tolist()
    if kind == "rectangle":
        if len(xy) != 2:
            raise ValueError(f"{where}: a rectangle is given by 2 corners, got {len(xy)} points")
        (x1, y1), (x2, y2) = xy.min(axis=0), xy.max(axis=0)
        if x2 <= x1 or y2 <= y1:
            raise ValueError(f"{where}: the rectangle {xy.tolist()} has zero width or height")
        return [x1, y1, x2, y1, x2, y2, x1, y2]
    if kind == "circle":
        if len(xy) != 2:
            raise ValueError(f"{where}: a circle is given by its centre and a point on the rim, got {len(xy)} points")
        (cx, cy), rim = xy
        r2 = float(((rim - xy[0]) ** 2).sum())  # radius squared
        if r2 == 0:
            raise ValueError(f"{where}: the circle has radius 0")
        ys = np.arange(height)[:, None] + 0.5  # (H, 1) pixel centres
        xs = np.arange(width)[None, :] + 0.5  # (1, W)
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= r2  # (H, W)
    raise ValueError(f"{where}: shape_type {kind!r} cannot be a mask; use one of {SHAPE_TYPES} "
                     "(lines and points have no area)")


def _read(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}") from err
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a UTF-8 text file") from err
    if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
        raise ValueError(f"{path}: not a labelme file (a JSON object with a 'shapes' list)")
    for key in ("imagePath", "imageHeight", "imageWidth"):
        if key not in doc:
            raise ValueError(f"{path}: has no '{key}'")
    if not (isinstance(doc["imageHeight"], int) and isinstance(doc["imageWidth"], int)
            and doc["imageHeight"] > 0 and doc["imageWidth"] > 0):
        raise ValueError(f"{path}: imageHeight and imageWidth must be positive ints, "
                         f"got {doc['imageHeight']!r} x {doc['imageWidth']!r}")
    return doc


def labelme_to_coco(json_files: Iterable[str | os.PathLike], categories: Mapping[str, int] | Sequence[str],
                    image_dir: str | os.PathLike | None = None, out_file: str | os.PathLike | None = None) -> dict:
    """Convert labelme files (one per image) into one COCO dict; write it to out_file if given.

    categories: {label name: COCO id} (or a list of names: ids 1, 2, ...); any other label is refused.
    image_dir: the folder the COCO file's `file_name`s are relative to (default: the folder of the
    first JSON file); each image must lie inside it and have the size its JSON file states.
    Image ids are 1, 2, ... in the order of the files given; annotation ids 1, 2, ...
    """
    from PIL import Image
    from pycocotools import mask as mask_utils

    table = _categories(categories)
    paths = [Path(p) for p in json_files]
    if not paths:
        raise ValueError("labelme_to_coco: no labelme files given")
    root = Path(image_dir) if image_dir is not None else paths[0].parent
    images, annotations = [], []
    for image_id, path in enumerate(paths, start=1):
        doc = _read(path)
        height, width = doc["imageHeight"], doc["imageWidth"]
        image_path = (path.parent / doc["imagePath"]).resolve()
        if not image_path.is_file():
            raise FileNotFoundError(f"{path}: its image {doc['imagePath']!r} is not at {image_path}")
        try:
            file_name = image_path.relative_to(root.resolve()).as_posix()
        except ValueError:
            raise ValueError(f"{path}: its image {image_path} is not inside image_dir {root}") from None
        with Image.open(image_path) as im:  # reads the header only
            if im.size != (width, height):
                raise ValueError(f"{path}: the image {doc['imagePath']!r} is {im.size[0]}x{im.size[1]}, "
                                 f"the file says {width}x{height}")
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        objects: dict[tuple, list] = {}  # (label, group or shape index) -> segmentations of its parts
        for k, shape in enumerate(doc["shapes"]):
            if not isinstance(shape, dict):
                raise ValueError(f"{path}: shapes[{k}] must be a JSON object, got {type(shape).__name__}")
            label = shape.get("label")
            where = f"{path}: shapes[{k}] (label {label!r}, {shape.get('shape_type', 'polygon')})"
            if label not in table:
                raise ValueError(f"{where}: label {label!r} is not one of the categories {sorted(table)}")
            group = shape.get("group_id")
            key = (label, ("group", group) if group is not None else ("shape", k))
            objects.setdefault(key, [where, []])[1].append(_shape_to_segmentation(shape, where, width, height))
        for (label, _), (where, parts) in objects.items():
            polygons = [p for p in parts if isinstance(p, list)]
            rles = mask_utils.frPyObjects(polygons, height, width) if polygons else []
            rles += [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in parts if not isinstance(m, list)]
            rle = mask_utils.merge(rles) if len(rles) > 1 else rles[0]
            if mask_utils.area(rle) == 0:
                raise ValueError(f"{where}: covers no pixel (are its points on one line?)")
            if len(rles) == len(polygons):  # polygons only: keep the outlines, as COCO does
                segmentation = polygons
                xy = np.concatenate([np.reshape(p, (-1, 2)) for p in polygons])  # (n, 2)
                (x1, y1), (x2, y2) = xy.min(axis=0).clip(0), np.minimum(xy.max(axis=0), (width, height))
                bbox = [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]  # the outline's extent
            else:  # a circle among the parts: store the mask
                segmentation = {"size": [height, width], "counts": rle["counts"].decode("ascii")}
                bbox = [float(v) for v in mask_utils.toBbox(rle)]  # the mask's tight box
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": table[label],
                                "segmentation": segmentation, "area": float(mask_utils.area(rle)),
                                "bbox": bbox, "iscrowd": 0})
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": cid, "name": name} for name, cid in table.items()]}
    if out_file is not None:
        Path(out_file).parent.mkdir(parents=True, exist_ok=True)
        Path(out_file).write_text(json.dumps(coco))
    return coco
