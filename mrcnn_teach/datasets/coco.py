"""COCO-format instance segmentation data (Lin et al. 2014), the benchmark of Mask R-CNN Sec. 4.

An annotation file lists images, categories and annotations. Each annotation has a
bbox [x, y, w, h] (pixel edges: x2 = x + w), a category_id and a segmentation in one
of three forms:

- polygons: [[x1, y1, x2, y2, ...], ...] (one object may have several parts);
- compressed RLE: {"size": [h, w], "counts": "ascii string"};
- uncompressed RLE: {"size": [h, w], "counts": [n0, n1, ...]}: run lengths of
  0s, 1s, 0s, ... in column-major order, summing to h * w.

iscrowd = 1 marks a region covering many objects (a crowd of people). Mask R-CNN does
not learn from those (torchvision's reference training drops them too), so with
train=True they are left out of the targets; with train=False they stay, flagged in
target["iscrowd"], because COCO evaluation ignores detections that fall on a crowd.

Category ids in COCO are sparse (1..90 with gaps); the model wants labels 1..K, 0 being
background. Labels are given in the order of sorted category id;
label_to_category_id maps back for writing results.

Bad data raises an error naming the image (id and file name) and the annotation id;
nothing is skipped silently. The file's structure and each annotation's box, category and
segmentation form are checked when the dataset is built; image files, polygon coordinates and
compressed RLE strings when an image is loaded. Real files do have bad
annotations (instances_train2017.json has boxes of height 0, e.g. annotation id 918 of
image 200365), so invalid="skip" drops the annotations that fail the build-time checks,
with one warning and the reasons kept in .skipped.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..transform import BOX_TOLERANCE

BBOX_TOLERANCE = BOX_TOLERANCE  # pixels a bbox may stick out of the image (rounding in annotation tools)


def _where(image_info: dict, ann: dict | None = None) -> str:
    text = f"image id {image_info['id']} (file {image_info.get('file_name')!r})"
    return text if ann is None else f"{text}, annotation id {ann.get('id')}"


def rle_string_to_counts(counts: str | bytes) -> np.ndarray:
    """Decode pycocotools' compressed RLE string into run lengths (int64).

    Each count is written in 5-bit groups (low bits first) as characters 48 + value;
    bit 0x20 says "another group follows", bit 0x10 of the last group is the sign.
    From the third count on, the value stored is the difference to the count two
    places back (runs of 0s and of 1s tend to be alike).
    """
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    values = []
    p = 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            if p >= len(counts):
                raise ValueError("compressed RLE string ends in the middle of a count")
            c = counts[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x -= 1 << (5 * k)  # negative number: sign-extend
        if len(values) > 2:
            x += values[-2]
        values.append(x)
    return np.array(values, dtype=np.int64)


def check_annotation(ann: dict, image_info: dict, category_ids) -> None:
    """Raise ValueError if ann is malformed; the message names image and annotation."""
    where = _where(image_info, ann)
    height, width = image_info["height"], image_info["width"]
    if ann.get("category_id") not in category_ids:
        raise ValueError(f"{where}: unknown category_id {ann.get('category_id')!r} "
                         f"(known: {sorted(category_ids)})")
    bbox = ann.get("bbox")
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(map(_is_number, bbox)):
        raise ValueError(f"{where}: bbox must be [x, y, w, h] (4 numbers), got {bbox!r}")
    x, y, w, h = (float(v) for v in bbox)
    if not all(map(math.isfinite, (x, y, w, h))):
        raise ValueError(f"{where}: bbox {list(bbox)} has non-finite values")
    if not (_is_int(ann.get("iscrowd", 0)) and ann.get("iscrowd", 0) in (0, 1)):
        raise ValueError(f"{where}: iscrowd must be 0 or 1, got {ann.get('iscrowd')!r}")
    if "area" in ann and not (_is_number(ann["area"]) and math.isfinite(ann["area"]) and ann["area"] >= 0):
        raise ValueError(f"{where}: area must be a number >= 0, got {ann['area']!r}")
    if not (w > 0 and h > 0):
        raise ValueError(f"{where}: bbox {list(bbox)} has non-positive width or height")
    t = BBOX_TOLERANCE
    if x < -t or y < -t or x + w > width + t or y + h > height + t:
        raise ValueError(f"{where}: bbox {list(bbox)} (x, y, w, h) lies outside the "
                         f"{width}x{height} image by more than {t:g} px")
    if min(x + w, width) - max(x, 0.0) <= 0 or min(y + h, height) - max(y, 0.0) <= 0:
        raise ValueError(f"{where}: bbox {list(bbox)} does not overlap the {width}x{height} image")
    if "segmentation" not in ann:
        raise ValueError(f"{where}: has no segmentation (Mask R-CNN needs a mask for every object: "
                         "a polygon list or an RLE)")
    segm = ann["segmentation"]
    if isinstance(segm, list):
        if len(segm) == 0:
            raise ValueError(f"{where}: empty polygon list")
        for k, poly in enumerate(segm):
            if not isinstance(poly, (list, tuple)) or len(poly) < 6 or len(poly) % 2:
                n = len(poly) if isinstance(poly, (list, tuple)) else type(poly).__name__
                raise ValueError(f"{where}: polygon {k} needs an even number >= 6 of coordinates "
                                 f"(x1, y1, x2, y2, x3, y3, ...), got {n}")
    elif isinstance(segm, dict):
        if "size" not in segm or "counts" not in segm:
            raise ValueError(f"{where}: RLE segmentation needs 'size' and 'counts', got keys {sorted(segm)}")
        if not isinstance(segm["size"], (list, tuple)) or list(segm["size"]) != [height, width]:
            raise ValueError(f"{where}: RLE size {segm['size']!r} differs from the image's "
                             f"[height, width] = [{height}, {width}]")
        if isinstance(segm["counts"], list):
            if not all(_is_int(v) for v in segm["counts"]):
                raise ValueError(f"{where}: uncompressed RLE counts must be integers")
            _check_counts(np.asarray(segm["counts"], dtype=np.int64), height, width, where)
        elif not isinstance(segm["counts"], (str, bytes)):
            raise ValueError(f"{where}: RLE counts must be a list or a string, "
                             f"got {type(segm['counts']).__name__}")
    else:
        raise ValueError(f"{where}: segmentation must be a polygon list or an RLE dict, "
                         f"got {type(segm).__name__}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_counts(counts: np.ndarray, height: int, width: int, where: str) -> None:
    # pycocotools trusts the counts; a wrong total would decode garbage or overrun memory.
    if (counts < 0).any() or counts.sum() != height * width:
        raise ValueError(f"{where}: RLE counts must be >= 0 and sum to height*width = "
                         f"{height * width}, got sum {counts.sum()}")


def load_annotation_file(ann_file) -> dict:
    """Read a COCO annotation file and check its structure; errors name the file and the entry.

    pycocotools indexes the file by id without a check: a duplicate id would silently replace the
    earlier entry, a missing key fail with a bare KeyError. The annotations themselves (boxes,
    segmentations) are checked by `check_annotation`.
    """
    path = Path(ann_file)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {str(path)!r} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}") from err
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a UTF-8 text file ({err.reason} at byte {err.start})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a COCO annotation file holds a JSON object with 'images', 'categories' "
                         f"and 'annotations', got a JSON {type(data).__name__}")
    for key, required in (("images", True), ("categories", True), ("annotations", False)):
        if key not in data:
            if required:
                raise ValueError(f"{path}: has no '{key}' list (keys: {sorted(data)})")
            continue
        if not isinstance(data[key], list):
            raise ValueError(f"{path}: '{key}' must be a list, got {type(data[key]).__name__}")
    if not data["images"]:
        raise ValueError(f"{path}: lists no images")
    if not data["categories"]:
        raise ValueError(f"{path}: lists no categories (Mask R-CNN needs at least one object class)")

    fields = {
        "images": (("id", _is_int, "an int"), ("file_name", lambda v: isinstance(v, str) and v, "a file name"),
                   ("height", lambda v: _is_int(v) and v > 0, "a positive int"),
                   ("width", lambda v: _is_int(v) and v > 0, "a positive int")),
        "categories": (("id", _is_int, "an int"), ("name", lambda v: isinstance(v, str), "a string")),
        "annotations": (("id", _is_int, "an int"), ("image_id", _is_int, "an int"),
                        ("category_id", _is_int, "an int")),
    }
    for key, checks in fields.items():
        seen = {}
        for k, entry in enumerate(data.get(key, [])):
            what = f"{path}: {key}[{k}]"
            if not isinstance(entry, dict):
                raise ValueError(f"{what} must be a JSON object, got {type(entry).__name__}")
            if "id" in entry:
                what += f" (id {entry['id']!r})"
            for name, ok, must in checks:
                if name not in entry:
                    raise ValueError(f"{what} has no '{name}'")
                if not ok(entry[name]):
                    raise ValueError(f"{what}: '{name}' must be {must}, got {entry[name]!r}")
            if entry["id"] in seen:
                raise ValueError(f"{what}: id {entry['id']} is used twice ({key}[{seen[entry['id']]}] has it too)")
            seen[entry["id"]] = k
    return data


class CocoDetection(Dataset):
    """Images and instance targets from a COCO-format annotation file.

    __getitem__(i) -> (image (3, H, W) float32 in [0, 1], target) with target =
    dict(boxes (N, 4) float32 x1y1x2y2 from the annotation bbox, labels (N,) int64 in 1..K,
    masks (N, H, W) uint8, image_id int64 scalar (COCO image id), area (N,) float32,
    iscrowd (N,) int64). Images with no (non-crowd) annotations are kept, with N = 0.
    train=True leaves crowd annotations out; invalid="raise" | "skip" (module docstring).
    """

    def __init__(self, image_dir, ann_file, transforms=None, train: bool = True, invalid: str = "raise"):
        from pycocotools.coco import COCO

        if invalid not in ("raise", "skip"):
            raise ValueError(f"CocoDetection: invalid must be 'raise' or 'skip', got {invalid!r}")

        self.image_dir = Path(image_dir)
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"CocoDetection: image directory {str(self.image_dir)!r} does not exist")
        self.transforms = transforms
        self.train = train
        self.coco = COCO()
        self.coco.dataset = load_annotation_file(ann_file)
        with contextlib.redirect_stdout(io.StringIO()):  # createIndex() prints progress lines
            self.coco.createIndex()
        self.image_ids = sorted(self.coco.imgs)
        self.category_ids = sorted(self.coco.cats)
        self.category_id_to_label = {cid: label for label, cid in enumerate(self.category_ids, start=1)}
        self.label_to_category_id = {label: cid for cid, label in self.category_id_to_label.items()}
        self.class_names = ("background",) + tuple(self.coco.cats[c]["name"] for c in self.category_ids)
        self.num_classes = len(self.class_names)  # including background
        known = set(self.category_ids)
        self.skipped: list[str] = []  # reasons, one per annotation dropped with invalid="skip"
        self._skipped_ids = set()
        for ann in self.coco.dataset.get("annotations", []):
            try:
                if ann.get("image_id") not in self.coco.imgs:
                    raise ValueError(f"annotation id {ann.get('id')}: image_id {ann.get('image_id')!r} "
                                     "is not in the file's images")
                check_annotation(ann, self.coco.imgs[ann["image_id"]], known)
            except ValueError as err:
                if invalid == "raise":
                    raise
                self.skipped.append(str(err))
                self._skipped_ids.add(ann.get("id"))
        if self.skipped:
            warnings.warn(f"CocoDetection: skipped {len(self.skipped)} invalid annotation(s) of {ann_file} "
                          f"(reasons in .skipped); first: {self.skipped[0]}", stacklevel=2)

    def __len__(self) -> int:
        return len(self.image_ids)

    def _rle(self, ann: dict, info: dict) -> dict:
        """Any of the three segmentation forms -> one compressed RLE of the whole image."""
        from pycocotools import mask as mask_utils

        height, width = info["height"], info["width"]
        segm = ann["segmentation"]
        where = _where(info, ann)
        if isinstance(segm, list):  # polygons: rasterise each part, then union
            for k, poly in enumerate(segm):  # checked here, not at build time: COCO has millions of numbers
                bad = [v for v in poly if not (_is_number(v) and math.isfinite(v))]
                if bad:
                    raise ValueError(f"{where}: polygon {k} has {len(bad)} coordinate(s) that are not finite "
                                     f"numbers, e.g. {bad[0]!r}")
            return mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
        if isinstance(segm["counts"], list):  # uncompressed RLE
            return mask_utils.frPyObjects(segm, height, width)
        counts = segm["counts"]
        try:
            decoded = rle_string_to_counts(counts)
        except ValueError as err:  # also UnicodeEncodeError: a non-ASCII string
            raise ValueError(f"{where}: compressed RLE counts cannot be decoded: {err}") from err
        _check_counts(decoded, height, width, where)
        return {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}

    def load_image(self, info: dict) -> torch.Tensor:
        from PIL import Image

        path = self.image_dir / info["file_name"]
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{_where(info)}: image file {str(path)!r} does not exist")
        try:
            with Image.open(path) as im:
                pixels = np.array(im.convert("RGB"))  # (H, W, 3) uint8
        except (OSError, SyntaxError, ValueError) as err:  # not an image, truncated, corrupt
            raise ValueError(f"{_where(info)}: cannot read image file {str(path)!r}: {err}") from err
        if pixels.shape[:2] != (info["height"], info["width"]):
            raise ValueError(f"{_where(info)}: the file is {pixels.shape[1]}x{pixels.shape[0]} but the "
                             f"annotation file says {info['width']}x{info['height']}")
        return torch.from_numpy(pixels).permute(2, 0, 1).float() / 255.0  # (3, H, W)

    def __getitem__(self, index: int):
        from pycocotools import mask as mask_utils

        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        image = self.load_image(info)  # (3, H, W)
        height, width = info["height"], info["width"]
        anns = [a for a in self.coco.imgToAnns.get(image_id, []) if a["id"] not in self._skipped_ids]
        if self.train:  # crowd regions are not training targets (see module docstring)
            anns = [a for a in anns if not a.get("iscrowd", 0)]
        rles = [self._rle(a, info) for a in anns]
        if rles:
            with warnings.catch_warnings():  # pycocotools' own numpy-2 DeprecationWarning, not ours
                warnings.simplefilter("ignore", DeprecationWarning)
                decoded = mask_utils.decode(rles)  # (H, W, N) uint8
            masks = torch.from_numpy(decoded).permute(2, 0, 1).contiguous()  # (N, H, W)
        else:
            masks = torch.zeros((0, height, width), dtype=torch.uint8)  # (0, H, W)
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)  # (N, 4)
        boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)  # (N, 4) x1y1x2y2
        # Within the 1-px tolerance a box may stick out: clip it to the image.
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        mask_area = masks.sum(dim=(1, 2)).to(torch.float32)  # (N,) used when the file has no area
        target = {
            "boxes": boxes,  # (N, 4)
            "labels": torch.tensor([self.category_id_to_label[a["category_id"]] for a in anns],
                                   dtype=torch.int64),  # (N,)
            "masks": masks,  # (N, H, W)
            "image_id": torch.tensor(image_id, dtype=torch.int64),  # ()
            "area": torch.tensor([float(a.get("area", m)) for a, m in zip(anns, mask_area.tolist())],
                                 dtype=torch.float32),  # (N,)
            "iscrowd": torch.tensor([int(a.get("iscrowd", 0)) for a in anns], dtype=torch.int64),  # (N,)
        }
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target
