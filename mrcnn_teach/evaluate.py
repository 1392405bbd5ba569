"""COCO metrics for boxes and masks: how the Mask R-CNN paper scores its results (Sec. 4).

The paper reports the standard COCO numbers for both tasks:

- AP    : average precision, averaged over the IoU thresholds 0.50, 0.55, ..., 0.95;
- AP50  : AP at IoU 0.5 (the old PASCAL VOC metric), AP75 : AP at IoU 0.75 (a strict one);
- APs / APm / APl : AP for small (area < 32^2 px), medium (32^2..96^2) and large (> 96^2) objects.

"Box AP" measures the IoU between boxes, "mask AP" (the headline number of Mask R-CNN) the IoU
between binary masks; everything else in the protocol is the same.

We do not write our own AP for the headline numbers: pycocotools' COCOeval is the yardstick every
paper is measured with, and a home-made metric that is 0.3 AP off would make every comparison
meaningless. This file only translates our formats into COCO's json format and back:

    dataset (image, target) ---- dataset_to_coco -----> COCO ground truth ----+
                                                                              +--> COCOeval("bbox"), COCOeval("segm")
    model -> predictions ------ predictions_to_coco --> COCO results ---------+

The one exception is the error analysis at the end (detection_errors, error_curves): why a class's AP
is low, told by the kind of each false positive, as COCO's analyze() and Hoiem et al. (ECCV 2012) do.
Its C50 and C75 curves equal COCOeval's precision (tests/test_evaluate.py).

Conventions of the returned numbers:
- metrics are fractions in [0, 1] (COCO papers print them x100);
- where COCOeval has no ground truth to score (e.g. no small objects in the data, APs) it reports -1;
  we return float("nan") instead, so that a missing number cannot be averaged or compared by accident.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch.utils.data import DataLoader, Subset

IOU_TYPES = ("bbox", "segm")
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # = COCOeval.stats[0:6]

__all__ = [
    "IOU_TYPES",
    "METRIC_NAMES",
    "masks_to_rle",
    "boxes_to_xywh",
    "dataset_to_coco",
    "predictions_to_coco",
    "evaluate_predictions",
    "evaluate",
    "format_metrics",
    "ERROR_TYPES",
    "detection_errors",
    "error_curves",
]


# --------------------------------------------------------------------------- format helpers


def masks_to_rle(masks) -> list[dict]:
    """Binary masks (N, H, W) -> N compressed COCO run-length encodings.

    COCO's RLE runs down the *columns* of the image, so pycocotools wants a column-major
    (Fortran-ordered) uint8 array of shape (H, W, N). The byte-string counts are decoded to str so
    the result can also be written with json.dump (pycocotools accepts both).
    """
    masks = torch.as_tensor(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks_to_rle: expected masks of shape (N, H, W), got {tuple(masks.shape)}")
    if masks.shape[0] == 0:
        return []
    hwn = masks.permute(1, 2, 0).to(torch.uint8).numpy()  # (H, W, N)
    rles = mask_utils.encode(np.asfortranarray(hwn))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def boxes_to_xywh(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 4) corners x1y1x2y2 -> (N, 4) COCO's x, y, width, height."""
    xywh = boxes.clone()  # (N, 4)
    xywh[:, 2:] = boxes[:, 2:] - boxes[:, :2]
    return xywh


def _quiet(verbose: bool):
    """COCO and COCOeval print progress lines; keep them out of notebooks unless asked for."""
    return contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())


def _find_attr(data, name: str, default=None):
    """Look up e.g. `class_names` on a dataset, through DataLoader and Subset wrappers."""
    while data is not None:
        if hasattr(data, name):
            return getattr(data, name)
        data = data.dataset if isinstance(data, (DataLoader, Subset)) else None
    return default


def _class_names(data):
    return _find_attr(data, "class_names", _find_attr(data, "classes"))


def _category_id(label: int, label_to_category_id: Mapping | None, where: str) -> int:
    if label_to_category_id is None:
        return label
    if label not in label_to_category_id:
        raise ValueError(f"{where}: label {label} has no entry in label_to_category_id")
    return int(label_to_category_id[label])


# --------------------------------------------------------------------------- ground truth


class _CocoGroundTruth:
    """Collects (image, target) pairs one at a time and builds a pycocotools COCO object.

    evaluate() feeds it from the same loop that runs the model, so the dataset is read only once.
    """

    def __init__(self, label_to_category_id: Mapping | None = None, class_names=None):
        self.label_to_category_id = label_to_category_id
        self.class_names = class_names
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.labels_seen: set[int] = set()
        self.image_ids: set[int] = set()

    def add(self, image: torch.Tensor, target: Mapping, index: int) -> int:
        """Add one image (only its size is used) and its target; returns the COCO image id."""
        image_id = int(target["image_id"]) if "image_id" in target else index
        where = f"image index {index} (image_id {image_id})"
        if image_id in self.image_ids:
            raise ValueError(f"{where}: image_id {image_id} appears twice in the dataset")
        self.image_ids.add(image_id)
        height, width = (int(s) for s in image.shape[-2:])
        self.images.append({"id": image_id, "height": height, "width": width})

        boxes = torch.as_tensor(target["boxes"], dtype=torch.float64).cpu()  # (N, 4)
        labels = torch.as_tensor(target["labels"], dtype=torch.int64).cpu()  # (N,)
        if boxes.ndim != 2 or boxes.shape[1] != 4 or labels.shape != boxes.shape[:1]:
            raise ValueError(f"{where}: expected boxes (N, 4) and labels (N,), got "
                             f"{tuple(boxes.shape)} and {tuple(labels.shape)}")
        num = boxes.shape[0]
        if num == 0:
            return image_id
        if bool((labels < 1).any()):
            raise ValueError(f"{where}: GT labels must be >= 1 (0 is background), got {labels.tolist()}")
        iscrowd = torch.as_tensor(target.get("iscrowd", torch.zeros(num)), dtype=torch.int64)  # (N,)

        if "masks" in target:
            masks = torch.as_tensor(target["masks"]).cpu()  # (N, H, W)
            if masks.shape != (num, height, width):
                raise ValueError(f"{where}: masks should be ({num}, {height}, {width}) to match boxes "
                                 f"and image, got {tuple(masks.shape)}")
            masks = masks > 0  # (N, H, W) bool
            segmentations = masks_to_rle(masks)
            # Area decides small/medium/large (and is what COCO stores): the object's pixel count.
            areas = masks.flatten(1).sum(1).double()  # (N,)
        else:
            # A box-only dataset: the box itself stands in as a polygon, like loadRes does for results.
            x1, y1, x2, y2 = boxes.unbind(1)
            polygons = torch.stack([x1, y1, x1, y2, x2, y2, x2, y1], dim=1)  # (N, 8)
            segmentations = [[p] for p in polygons.tolist()]
            areas = torch.as_tensor(target.get("area", (x2 - x1) * (y2 - y1)), dtype=torch.float64)  # (N,)

        xywh = boxes_to_xywh(boxes).tolist()
        for i, label in enumerate(labels.tolist()):
            self.labels_seen.add(label)
            self.annotations.append({
                # Ids start at 1: COCOeval stores "matched GT id" with 0 meaning "unmatched",
                # so an annotation with id 0 would silently count as a miss.
                "id": len(self.annotations) + 1,
                "image_id": image_id,
                "category_id": _category_id(label, self.label_to_category_id, where),
                "bbox": xywh[i],
                "area": float(areas[i]),
                "iscrowd": int(iscrowd[i]),
                "segmentation": segmentations[i],
            })
        return image_id

    def categories(self) -> list[dict]:
        labels = set(self.labels_seen)
        names = self.class_names
        if names is not None:
            labels |= set(range(1, len(names)))  # index 0 of class_names is the background
        if self.label_to_category_id is not None:
            labels |= {int(k) for k in self.label_to_category_id}
        cats = []
        for label in sorted(labels):
            cat_id = _category_id(label, self.label_to_category_id, "categories")
            name = str(names[label]) if names is not None and label < len(names) else str(cat_id)
            cats.append({"id": cat_id, "name": name})
        return cats

    def build(self, verbose: bool = False) -> COCO:
        coco = COCO()
        coco.dataset = {"images": self.images, "annotations": self.annotations,
                        "categories": self.categories()}
        with _quiet(verbose):
            coco.createIndex()
        return coco


def dataset_to_coco(dataset, verbose: bool = False) -> COCO:
    """Ground truth of any dataset returning our (image, target) pairs, as an in-memory COCO object.

    image ids come from target["image_id"] (else the index); bbox = target boxes as [x, y, w, h];
    area = mask pixel count; iscrowd from the target when present; category ids are the labels, or
    dataset.label_to_category_id[label] when the dataset has that map (e.g. COCO's ids 1..90 for
    labels 1..80); category names from dataset.class_names (index = label, 0 = background).
    """
    gt = _CocoGroundTruth(_find_attr(dataset, "label_to_category_id"), _class_names(dataset))
    for index in range(len(dataset)):
        image, target = dataset[index]
        gt.add(image, target, index)
    return gt.build(verbose)


# --------------------------------------------------------------------------- predictions


def predictions_to_coco(predictions: Mapping[int, Mapping], label_to_category_id: Mapping | None = None,
                        mask_threshold: float = 0.5) -> tuple[list[dict], list[dict]]:
    """{image_id: dict(boxes (D,4), labels (D,), scores (D,), masks (D,1,H,W) probs)} -> COCO results.

    Returns (bbox_results, segm_results): lists of {"image_id", "category_id", "bbox" | "segmentation",
    "score"}. Masks are binarised at prob > mask_threshold (Mask R-CNN Sec. 3: "binarized at a
    threshold of 0.5"); a prediction without "masks" adds no segm results.
    """
    bbox_results: list[dict] = []
    segm_results: list[dict] = []
    for image_id, pred in predictions.items():
        image_id = int(image_id)
        where = f"predictions for image_id {image_id}"
        boxes = torch.as_tensor(pred["boxes"], dtype=torch.float64).cpu()  # (D, 4)
        labels = torch.as_tensor(pred["labels"], dtype=torch.int64).cpu()  # (D,)
        scores = torch.as_tensor(pred["scores"], dtype=torch.float64).cpu()  # (D,)
        num = boxes.shape[0] if boxes.ndim >= 1 else -1
        if boxes.shape != (num, 4) or labels.shape != (num,) or scores.shape != (num,):
            raise ValueError(f"{where}: expected boxes (D, 4), labels (D,), scores (D,), got "
                             f"{tuple(boxes.shape)}, {tuple(labels.shape)}, {tuple(scores.shape)}")
        if num == 0:
            continue
        category_ids = [_category_id(label, label_to_category_id, where) for label in labels.tolist()]
        score_list = scores.tolist()
        for box, cat_id, score in zip(boxes_to_xywh(boxes).tolist(), category_ids, score_list):
            bbox_results.append({"image_id": image_id, "category_id": cat_id, "bbox": box, "score": score})

        if pred.get("masks") is None:
            continue
        masks = torch.as_tensor(pred["masks"]).cpu()  # (D, 1, H, W) or (D, H, W)
        if masks.ndim == 4 and masks.shape[1] == 1:
            masks = masks[:, 0]  # (D, H, W)
        if masks.ndim != 3 or masks.shape[0] != num:
            raise ValueError(f"{where}: expected masks (D, 1, H, W) with D={num}, got {tuple(masks.shape)}")
        # No "bbox" key here on purpose: pycocotools' loadRes would then treat these as box results.
        rles = masks_to_rle(masks > mask_threshold)
        for rle, cat_id, score in zip(rles, category_ids, score_list):
            segm_results.append({"image_id": image_id, "category_id": cat_id, "segmentation": rle,
                                 "score": score})
    return bbox_results, segm_results


def _load_results(coco_gt: COCO, results: list[dict], iou_type: str) -> COCO:
    """COCO.loadRes, plus the two cases it does not handle: no results at all, and bad image ids/sizes."""
    unknown = sorted({r["image_id"] for r in results} - set(coco_gt.getImgIds()))
    if unknown:
        raise ValueError(f"{iou_type} results for image ids {unknown[:10]} that are not in the ground truth")
    if iou_type == "segm":
        for r in results:
            img = coco_gt.imgs[r["image_id"]]
            if list(r["segmentation"]["size"]) != [img["height"], img["width"]]:
                raise ValueError(f"image_id {r['image_id']}: predicted mask is {r['segmentation']['size']} "
                                 f"but the image is {[img['height'], img['width']]} (pasted masks expected)")
    if not results:
        # loadRes reads results[0] and fails on an empty list; an empty result set is simply a
        # COCO object with the GT's images and categories and no annotations -> AP 0.
        coco_dt = COCO()
        coco_dt.dataset = {"images": list(coco_gt.dataset["images"]),
                           "categories": list(coco_gt.dataset["categories"]), "annotations": []}
        coco_dt.createIndex()
        return coco_dt
    # loadRes writes "id", "area", ... into every dict it is given: hand it copies.
    return coco_gt.loadRes([dict(r) for r in results])


def _per_class_ap(coco_eval: COCOeval) -> dict[str, float]:
    """AP of each category: mean of precision over IoU thresholds and recall points (all areas, 100 dets)."""
    precision = coco_eval.eval["precision"]  # (T iou thresholds, R recall points, K classes, A areas, M maxDets)
    names = {c["id"]: c["name"] for c in coco_eval.cocoGt.dataset["categories"]}
    out = {}
    for k, cat_id in enumerate(coco_eval.params.catIds):
        p = precision[:, :, k, 0, -1]  # (T, R)
        valid = p[p > -1]
        out[names[cat_id]] = float(valid.mean()) if valid.size else math.nan
    return out


def run_cocoeval(coco_gt: COCO, results: list[dict], iou_type: str, verbose: bool = False) -> COCOeval:
    """pycocotools' three steps on COCO-format results -> the COCOeval object, for its arrays.

    evaluate() matches detections to GT per image and category, accumulate() builds
    eval["precision"] (T IoU thresholds, R recall points, K classes, A area ranges, M maxDets) and
    eval["recall"], summarize() the 12 headline numbers in stats. Quiet unless verbose.
    """
    with _quiet(verbose):
        coco_dt = _load_results(coco_gt, results, iou_type)
        coco_eval = COCOeval(coco_gt, coco_dt, iou_type)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


def _run_cocoeval(coco_gt: COCO, results: list[dict], iou_type: str, verbose: bool, per_class: bool) -> dict:
    coco_eval = run_cocoeval(coco_gt, results, iou_type, verbose)
    stats = coco_eval.stats[: len(METRIC_NAMES)]
    metrics = {name: float(v) if v >= 0 else math.nan for name, v in zip(METRIC_NAMES, stats)}
    if per_class:
        metrics["per_class"] = _per_class_ap(coco_eval)
    return metrics


def evaluate_predictions(coco_gt: COCO, predictions: Mapping[int, Mapping],
                         label_to_category_id: Mapping | None = None, verbose: bool = False,
                         per_class: bool = False, mask_threshold: float = 0.5) -> dict:
    """COCOeval for "bbox" and "segm" -> {"bbox": {"AP", "AP50", ...}, "segm": {...}} (fractions, nan = no GT).

    predictions: {image_id: dict(boxes, labels, scores, masks)} in the original image frame.
    per_class=True adds {"per_class": {category name: AP}} to each iou type's dict.
    """
    results = predictions_to_coco(predictions, label_to_category_id, mask_threshold)
    return _evaluate_results(coco_gt, *results, verbose=verbose, per_class=per_class)


def _evaluate_results(coco_gt, bbox_results, segm_results, verbose=False, per_class=False) -> dict:
    return {iou_type: _run_cocoeval(coco_gt, results, iou_type, verbose, per_class)
            for iou_type, results in zip(IOU_TYPES, (bbox_results, segm_results))}


def _collate(batch):
    return tuple(zip(*batch))  # ((image, ...), (target, ...)): images of different sizes stay a list


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset_or_loader, device="cpu", batch_size: int = 4,
             verbose: bool = False, per_class: bool = False) -> dict:
    """Run `model` over a dataset (or DataLoader) and score it with COCOeval; returns evaluate_predictions' dict.

    The model follows torchvision's detection contract: model(list of (3, H, W)) in eval mode returns a
    list of dict(boxes, labels, scores, masks (D, 1, H, W) probs). Ground truth is collected in the same
    pass, and each batch's masks are run-length encoded right away (full-size float masks of a whole
    dataset would not fit in memory). The model's train/eval mode is restored afterwards.
    """
    if isinstance(dataset_or_loader, DataLoader):
        loader = dataset_or_loader
    else:
        loader = DataLoader(dataset_or_loader, batch_size=batch_size, shuffle=False, collate_fn=_collate)
    label_to_category_id = _find_attr(dataset_or_loader, "label_to_category_id")
    gt = _CocoGroundTruth(label_to_category_id, _class_names(dataset_or_loader))
    bbox_results: list[dict] = []
    segm_results: list[dict] = []

    was_training = model.training
    model.eval()
    try:
        index = 0
        for images, targets in loader:
            if not isinstance(targets, (list, tuple)):
                raise ValueError("evaluate: the loader must yield (images, targets) with targets a list of "
                                 "dicts; use collate_fn=lambda b: tuple(zip(*b))")
            images = [image.to(device) for image in images]  # B x (3, H, W)
            outputs = model(images)
            if len(outputs) != len(images):
                raise ValueError(f"evaluate: the model returned {len(outputs)} outputs for {len(images)} images")
            batch_predictions = {}
            for image, target, output in zip(images, targets, outputs):
                image_id = gt.add(image, target, index)
                index += 1
                batch_predictions[image_id] = {k: v.detach().cpu() if torch.is_tensor(v) else v
                                               for k, v in output.items()}
            boxes, masks = predictions_to_coco(batch_predictions, label_to_category_id)
            bbox_results += boxes
            segm_results += masks
    finally:
        model.train(was_training)
    if index == 0:
        raise ValueError("evaluate: the dataset (or loader) yielded no images; there is nothing to score")
    return _evaluate_results(gt.build(verbose), bbox_results, segm_results, verbose=verbose, per_class=per_class)


# --------------------------------------------------------------------------- printing


def format_metrics(metrics: Mapping) -> str:
    """A small table: one row per iou type (bbox, segm), columns AP AP50 AP75 APs APm APl; "-" = no GT."""
    header = f"{'':<6}" + "".join(f"{name:>7}" for name in METRIC_NAMES)
    rows = [header]
    for iou_type, values in metrics.items():
        if not isinstance(values, Mapping):
            continue
        cells = []
        for name in METRIC_NAMES:
            v = values.get(name, math.nan)
            cells.append(f"{'-':>7}" if v is None or math.isnan(v) else f"{v:>7.3f}")
        rows.append(f"{iou_type:<6}" + "".join(cells))
    return "\n".join(rows)


# --------------------------------------------------------------------------- error analysis

ERROR_TYPES = ("TP", "Loc", "Cls", "BG")  # the codes 0, 1, 2, 3 that detection_errors returns
RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # COCOeval's params.recThrs


def _pairwise_iou(det: Mapping, gt: Mapping, iou_type: str) -> torch.Tensor:
    """(D, G) float64 IoU of one image's detections with its objects: boxes, or masks (pycocotools' RLE IoU)."""
    if iou_type == "bbox":
        from .boxes import box_iou

        return box_iou(torch.as_tensor(det["boxes"]).double(), torch.as_tensor(gt["boxes"]).double())
    if iou_type != "segm":
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")

    def binary(masks):  # (N, H, W) or (N, 1, H, W), probabilities, 0/1 or bool -> (N, H, W) bool
        masks = torch.as_tensor(masks)
        return (masks[:, 0] if masks.ndim == 4 else masks).float() > 0.5

    num_det, num_gt = len(det["labels"]), len(gt["labels"])
    if num_det == 0 or num_gt == 0:
        return torch.zeros(num_det, num_gt, dtype=torch.float64)
    rle_det, rle_gt = masks_to_rle(binary(det["masks"])), masks_to_rle(binary(gt["masks"]))
    ious = mask_utils.iou(rle_det, rle_gt, [0] * num_gt)  # (D, G)
    return torch.from_numpy(np.asarray(ious, dtype=np.float64).reshape(num_det, num_gt))


def _greedy_match(ious: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """COCOeval.evaluateImg's matching. ious (D, G): detections in score order (best first), -1 where a
    detection may not claim an object (another class). -> (D,) bool: the detection claimed a free object
    with IoU >= iou_threshold, the best free one (the last of equals, as COCOeval's loop keeps it)."""
    num_det, num_gt = ious.shape
    claimed = torch.zeros(num_gt, dtype=torch.bool)  # (G,)
    matched = torch.zeros(num_det, dtype=torch.bool)  # (D,)
    for d in range(num_det if num_gt else 0):  # greedy: a higher score picks first, so this loop is sequential
        free = ious[d].masked_fill(claimed, -1.0)  # (G,)
        if free.max() >= iou_threshold:
            g = num_gt - 1 - int(free.flip(0).argmax())  # the last of the best
            claimed[g] = matched[d] = True
    return matched


def detection_errors(detections, targets, iou_threshold: float = 0.5, iou_type: str = "bbox",
                     low: float = 0.1) -> list[torch.Tensor]:
    """The kind of every detection, Hoiem et al.'s error types: one (D,) int64 tensor per image, codes of ERROR_TYPES.

    detections / targets: one dict per image (labels, boxes or masks; detections also scores). Per image:
    - 0 "TP":  claims an object of its own class at IoU >= iou_threshold (COCOeval's greedy matching);
    - 1 "Loc": otherwise, IoU >= low with an object of its own class: a loose box (low <= IoU < threshold)
               or a duplicate (an object that a higher-scored detection already claimed);
    - 2 "Cls": otherwise, IoU >= low with an object of another class: a confusion of classes;
    - 3 "BG":  IoU < low with every object: a detection of background.
    Every detection is classified (COCOeval's cap of 100 per image and class is not applied).
    """
    if len(detections) != len(targets):
        raise ValueError(f"detection_errors: {len(detections)} detection dicts for {len(targets)} images")
    out = []
    for i, (det, gt) in enumerate(zip(detections, targets)):
        det_labels, gt_labels = torch.as_tensor(det["labels"]), torch.as_tensor(gt["labels"])  # (D,), (G,)
        ious = _pairwise_iou(det, gt, iou_type)  # (D, G)
        if ious.shape != (len(det_labels), len(gt_labels)):
            raise ValueError(f"detection_errors: image {i}: IoU shape {tuple(ious.shape)} for "
                             f"{len(det_labels)} detections and {len(gt_labels)} objects")
        same = det_labels[:, None] == gt_labels[None, :]  # (D, G) same class
        order = torch.argsort(-torch.as_tensor(det["scores"]).double(), stable=True)  # (D,) best first
        tp = torch.zeros(len(det_labels), dtype=torch.bool)  # (D,)
        tp[order] = _greedy_match(torch.where(same, ious, -1.0)[order], iou_threshold)
        zero = torch.zeros_like(ious)  # (D, G)
        best_same = torch.where(same, ious, zero).amax(dim=1) if len(gt_labels) else zero.sum(1)  # (D,)
        best_other = torch.where(same, zero, ious).amax(dim=1) if len(gt_labels) else zero.sum(1)  # (D,)
        kind = torch.full((len(det_labels),), 3, dtype=torch.int64)  # (D,) BG unless something below holds
        kind[best_other >= low] = 2  # Cls
        kind[best_same >= low] = 1  # Loc (takes precedence over Cls, as in Hoiem et al.)
        kind[tp] = 0  # TP
        out.append(kind)
    return out


def _interpolated_precision(scores: np.ndarray, is_tp: np.ndarray, num_gt: int) -> np.ndarray:
    """COCOeval.accumulate for one class: (D,) scores and TP flags -> (101,) the envelope at recall 0, 0.01, ..., 1."""
    order = np.argsort(-scores, kind="mergesort")  # (D,) best first, stable like COCOeval
    tp = np.cumsum(is_tp[order])  # (D,)
    recall, precision = tp / num_gt, tp / np.arange(1, len(tp) + 1)  # (D,), (D,)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]  # (D,) best precision at this recall or beyond
    first = np.searchsorted(recall, RECALL_POINTS, side="left")  # (101,) first detection reaching each point
    reached = first < len(recall)  # (101,) False beyond the last recall: precision 0 there
    q = np.zeros(len(RECALL_POINTS))  # (101,)
    q[reached] = envelope[first[reached]]
    return q


def error_curves(detections, targets, category: int, iou_type: str = "bbox", low: float = 0.1) -> dict:
    """COCO analyze()'s precision/recall curves of one class, each error type removed in turn -> {name: (101,)}.

    "C75", "C50": COCO's curves at IoU 0.75 and 0.5 (equal to COCOeval's precision[t, :, k, 0, 2]);
    "Loc": at IoU `low` (0.1): loose boxes are forgiven, duplicates are still false positives;
    "Cls": also without the false positives on objects of other classes (COCO's analyze splits them into
           Sim, same supercategory, and Oth; with no supercategories the two are one step);
    "BG":  also without every other false positive (background, and the duplicates): precision 1 up to
           the recall of "Cls";
    "FN":  also every missed object found: precision 1 at every recall.
    Each curve's mean is the AP it would have; the gap between two curves is what that error type costs.
    """
    num_gt = int(sum(int((torch.as_tensor(t["labels"]) == category).sum()) for t in targets))
    if num_gt == 0:
        raise ValueError(f"error_curves: no object of category {category} in the targets")
    mine = [torch.as_tensor(d["labels"]) == category for d in detections]  # per image (D,) bool
    scores = np.concatenate([torch.as_tensor(d["scores"])[m].double().numpy() for d, m in zip(detections, mine)])
    kinds = {t: torch.cat([k[m] for k, m in zip(detection_errors(detections, targets, t, iou_type, low), mine)]).numpy()
             for t in (0.75, 0.5, low)}  # {threshold: (D_c,) error codes}
    loose = kinds[low]
    curves = {"C75": _interpolated_precision(scores, kinds[0.75] == 0, num_gt),
              "C50": _interpolated_precision(scores, kinds[0.5] == 0, num_gt),
              "Loc": _interpolated_precision(scores, loose == 0, num_gt)}
    keep = loose != 2  # (D_c,) the class confusions are removed
    curves["Cls"] = _interpolated_precision(scores[keep], loose[keep] == 0, num_gt)
    keep = loose == 0  # (D_c,) every false positive is removed
    curves["BG"] = _interpolated_precision(scores[keep], loose[keep] == 0, num_gt)
    curves["FN"] = np.ones(len(RECALL_POINTS))
    return curves
