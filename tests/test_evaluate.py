"""COCO evaluation: our translation layer must give exactly what pycocotools computes by hand."""

import contextlib
import io
import math

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch.utils.data import DataLoader

from mrcnn_teach.evaluate import (
    METRIC_NAMES,
    dataset_to_coco,
    evaluate,
    evaluate_predictions,
    format_metrics,
    predictions_to_coco,
)

# pycocotools' decode trips numpy 2's __array__(copy=...) deprecation; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

H = W = 128


def rect_masks(rects, h=H, w=W):
    """Rectangles (x1, y1, x2, y2), end exclusive -> (N, h, w) uint8 masks whose tight box is the rect."""
    masks = torch.zeros(len(rects), h, w, dtype=torch.uint8)  # (N, h, w)
    for k, (x1, y1, x2, y2) in enumerate(rects):
        masks[k, y1:y2, x1:x2] = 1
    return masks


def make_item(image_id, rects, labels, iscrowd=None, h=H, w=W):
    # The image is filled with image_id / 100 so that the fake model can tell which image it sees.
    image = torch.full((3, h, w), image_id / 100.0)  # (3, h, w)
    target = dict(
        boxes=torch.tensor(rects, dtype=torch.float32).reshape(-1, 4),
        labels=torch.tensor(labels, dtype=torch.int64),
        masks=rect_masks(rects, h, w),
        image_id=torch.tensor(image_id),
    )
    if iscrowd is not None:
        target["iscrowd"] = torch.tensor(iscrowd, dtype=torch.int64)
    return image, target


def three_sizes_dataset():
    """Small (< 32^2), medium and large (> 96^2) objects of two classes over three images."""
    return [
        make_item(0, [(10, 10, 30, 30), (50, 40, 100, 90)], [1, 2]),  # 400 px small, 2500 px medium
        make_item(1, [(5, 5, 115, 120)], [1]),  # 16500 px large
        make_item(2, [(60, 60, 80, 75), (0, 0, 40, 40)], [2, 1]),  # 300 px small, 1600 px medium
    ]


def gt_as_predictions(dataset, score=1.0):
    return {int(t["image_id"]): dict(boxes=t["boxes"].clone(), labels=t["labels"].clone(),
                                     scores=torch.full((len(t["labels"]),), score),
                                     masks=t["masks"][:, None].float())  # (N, 1, H, W)
            for _, t in dataset}


class GroundTruthModel(torch.nn.Module):
    """Follows torchvision's eval contract and answers with the ground truth (shifted by `shift` px)."""

    def __init__(self, dataset, shift=0):
        super().__init__()
        self.targets = {int(t["image_id"]): t for _, t in dataset}
        self.shift = shift
        self.modes_seen = []
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, images):
        self.modes_seen.append(self.training)
        outputs = []
        for image in images:
            t = self.targets[round(float(image[0, 0, 0]) * 100)]
            outputs.append(dict(boxes=t["boxes"] + torch.tensor([self.shift, 0, self.shift, 0]),
                                labels=t["labels"], scores=torch.ones(len(t["labels"])),
                                masks=torch.roll(t["masks"], self.shift, dims=2)[:, None].float()))
        return outputs


# --------------------------------------------------------------------------- format translation


def test_dataset_to_coco_fields():
    class Dataset(list):
        label_to_category_id = {1: 7, 2: 11}
        class_names = ("background", "square", "circle")

    ds = Dataset([make_item(5, [(2, 3, 12, 23), (40, 40, 41, 42)], [2, 1], iscrowd=[0, 1])])
    coco = dataset_to_coco(ds)
    assert coco.getImgIds() == [5]
    assert coco.imgs[5]["height"] == H and coco.imgs[5]["width"] == W
    assert {c["id"]: c["name"] for c in coco.dataset["categories"]} == {7: "square", 11: "circle"}
    a, b = coco.loadAnns(coco.getAnnIds())
    assert (a["category_id"], b["category_id"]) == (11, 7)
    assert a["bbox"] == [2.0, 3.0, 10.0, 20.0]
    assert a["area"] == 200.0 and b["area"] == 2.0
    assert (a["iscrowd"], b["iscrowd"]) == (0, 1)
    assert min(ann["id"] for ann in (a, b)) == 1  # COCOeval treats id 0 as "unmatched"
    np.testing.assert_array_equal(mask_utils.decode(a["segmentation"]), ds[0][1]["masks"][0].numpy())


def test_dataset_to_coco_without_maps_uses_labels():
    coco = dataset_to_coco(three_sizes_dataset())
    assert sorted(coco.getCatIds()) == [1, 2]
    assert len(coco.getAnnIds()) == 5
    assert all(ann["iscrowd"] == 0 for ann in coco.loadAnns(coco.getAnnIds()))


def test_predictions_to_coco_thresholds_masks_and_maps_labels():
    probs = torch.zeros(1, 1, 8, 8)  # (1, 1, 8, 8)
    probs[0, 0, 2:4, 1:6] = 0.8
    probs[0, 0, 6, 6] = 0.5  # not above the 0.5 threshold
    pred = {3: dict(boxes=torch.tensor([[1.0, 2.0, 6.0, 4.0]]), labels=torch.tensor([2]),
                    scores=torch.tensor([0.25]), masks=probs)}
    bbox, segm = predictions_to_coco(pred, label_to_category_id={2: 9})
    assert bbox == [{"image_id": 3, "category_id": 9, "bbox": [1.0, 2.0, 5.0, 2.0], "score": 0.25}]
    assert len(segm) == 1 and segm[0]["category_id"] == 9 and "bbox" not in segm[0]
    np.testing.assert_array_equal(mask_utils.decode(segm[0]["segmentation"]),
                                  (probs[0, 0] > 0.5).numpy().astype(np.uint8))


def test_bad_inputs_raise_value_errors():
    ds = three_sizes_dataset()
    coco = dataset_to_coco(ds)
    preds = gt_as_predictions(ds)
    preds[99] = preds[0]
    with pytest.raises(ValueError, match="99"):
        evaluate_predictions(coco, preds)
    with pytest.raises(ValueError, match="image_id 0"):
        predictions_to_coco({0: dict(boxes=torch.zeros(2, 4), labels=torch.zeros(3), scores=torch.zeros(2))})
    small = {0: dict(boxes=torch.zeros(1, 4), labels=torch.ones(1), scores=torch.ones(1),
                     masks=torch.ones(1, 1, 28, 28))}  # unpasted 28x28 mask
    with pytest.raises(ValueError, match="28, 28"):
        evaluate_predictions(coco, small)
    with pytest.raises(ValueError, match="label 2"):
        predictions_to_coco(gt_as_predictions(ds), label_to_category_id={1: 1})
    bad = [make_item(0, [(1, 1, 5, 5)], [1])]
    bad[0][1]["masks"] = bad[0][1]["masks"][:, :10]
    with pytest.raises(ValueError, match="image index 0"):
        dataset_to_coco(bad)


# --------------------------------------------------------------------------- metric values


def test_perfect_predictions_score_one():
    ds = three_sizes_dataset()
    metrics = evaluate_predictions(dataset_to_coco(ds), gt_as_predictions(ds))
    for iou_type in ("bbox", "segm"):
        assert set(metrics[iou_type]) == set(METRIC_NAMES)
        for name in METRIC_NAMES:
            assert metrics[iou_type][name] == pytest.approx(1.0), (iou_type, name)


def test_missing_size_range_is_nan():
    ds = [make_item(0, [(10, 10, 20, 20)], [1])]  # only a small object
    metrics = evaluate_predictions(dataset_to_coco(ds), gt_as_predictions(ds))
    assert metrics["bbox"]["APs"] == pytest.approx(1.0)
    assert math.isnan(metrics["bbox"]["APm"]) and math.isnan(metrics["segm"]["APl"])


def test_shift_lowers_ap_and_ap75_more_than_ap50():
    # 20x20 squares shifted 4 px right: IoU = (16*20) / (24*20) = 2/3 for boxes and masks alike.
    # 2/3 clears the IoU thresholds 0.50, 0.55, 0.60, 0.65 but not 0.70..0.95, so AP = 4/10.
    ds = [make_item(i, [(10 + 30 * i, 10, 30 + 30 * i, 30)], [1]) for i in range(3)]
    coco = dataset_to_coco(ds)
    model = GroundTruthModel(ds, shift=4)
    preds = {i: out for i, out in enumerate(model([image for image, _ in ds]))}
    metrics = evaluate_predictions(coco, preds)
    for iou_type in ("bbox", "segm"):
        m = metrics[iou_type]
        assert m["AP"] == pytest.approx(0.4)
        assert m["AP50"] == pytest.approx(1.0) and m["AP75"] == pytest.approx(0.0)
        assert m["AP50"] - m["AP75"] > 1.0 - m["AP50"]

    # A 1 px shift of a 20x20 square: IoU = 19/21 = 0.905 -> thresholds 0.50..0.90 pass, AP = 9/10.
    preds = {i: out for i, out in enumerate(GroundTruthModel(ds, shift=1)([image for image, _ in ds]))}
    assert evaluate_predictions(coco, preds)["segm"]["AP"] == pytest.approx(0.9)


def test_wrong_class_gives_zero_ap_for_that_class():
    ds = [make_item(0, [(10, 10, 40, 40), (60, 60, 90, 90)], [1, 2])]
    preds = gt_as_predictions(ds)
    preds[0]["labels"] = torch.tensor([1, 1])  # the class-2 object is called class 1
    preds[0]["scores"] = torch.tensor([0.9, 0.8])
    metrics = evaluate_predictions(dataset_to_coco(ds), preds, per_class=True)
    for iou_type in ("bbox", "segm"):
        # class 1: its one object found first (precision 1 up to recall 1) -> AP 1; the false positive
        # comes after it and costs nothing. class 2: never predicted -> AP 0. Mean over classes: 0.5.
        assert metrics[iou_type]["per_class"] == {"1": pytest.approx(1.0), "2": 0.0}
        assert metrics[iou_type]["AP"] == pytest.approx(0.5)

    # With the false positive ranked first, class 1's precision at recall 1 is 1/2 -> AP 0.5.
    preds[0]["scores"] = torch.tensor([0.8, 0.9])
    metrics = evaluate_predictions(dataset_to_coco(ds), preds, per_class=True)
    assert metrics["bbox"]["per_class"]["1"] == pytest.approx(0.5)
    assert metrics["bbox"]["AP"] == pytest.approx(0.25)


def test_empty_predictions_give_zero():
    ds = three_sizes_dataset()
    coco = dataset_to_coco(ds)
    no_detections = {i: dict(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.int64),
                             scores=torch.zeros(0), masks=torch.zeros(0, 1, H, W)) for i in range(3)}
    for preds in ({}, no_detections):
        metrics = evaluate_predictions(coco, preds)
        for iou_type in ("bbox", "segm"):
            assert all(metrics[iou_type][name] == 0.0 for name in METRIC_NAMES)


def test_crowd_region_is_ignored():
    # Image 0: one normal object and a crowd region (iscrowd=1, e.g. "a group of people").
    ds = [make_item(0, [(10, 10, 40, 40), (60, 60, 120, 120)], [1, 1], iscrowd=[0, 1])]
    coco = dataset_to_coco(ds)
    hit = dict(boxes=torch.tensor([[10.0, 10, 40, 40]]), masks=rect_masks([(10, 10, 40, 40)]))
    on_crowd = dict(boxes=torch.tensor([[65.0, 65, 110, 110]]), masks=rect_masks([(65, 65, 110, 110)]))
    on_nothing = dict(boxes=torch.tensor([[45.0, 0, 100, 50]]), masks=rect_masks([(45, 0, 100, 50)]))

    def metrics_with(extra):
        # The extra detection scores higher than the true hit, so as a false positive it would halve AP.
        preds = {0: dict(boxes=torch.cat([extra["boxes"], hit["boxes"]]), labels=torch.tensor([1, 1]),
                         scores=torch.tensor([0.95, 0.9]),
                         masks=torch.cat([extra["masks"], hit["masks"]])[:, None].float())}
        return evaluate_predictions(coco, preds)

    ignored, penalised = metrics_with(on_crowd), metrics_with(on_nothing)
    for iou_type in ("bbox", "segm"):
        assert ignored[iou_type]["AP"] == pytest.approx(1.0)
        assert penalised[iou_type]["AP"] == pytest.approx(0.5)


def _pycocotools_by_hand(ds, preds, iou_type):
    """The same evaluation written directly against pycocotools, one annotation at a time."""
    images, annotations = [], []
    for image, target in ds:
        image_id = int(target["image_id"])
        images.append({"id": image_id, "height": image.shape[1], "width": image.shape[2]})
        for box, label, mask in zip(target["boxes"].tolist(), target["labels"].tolist(), target["masks"]):
            rle = mask_utils.encode(np.asfortranarray(mask.numpy()))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label,
                                "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                                "area": float(mask.sum()), "iscrowd": 0, "segmentation": rle})
    coco_gt = COCO()
    coco_gt.dataset = {"images": images, "annotations": annotations,
                       "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    results = []
    for image_id, p in preds.items():
        for box, label, score, prob in zip(p["boxes"].tolist(), p["labels"].tolist(), p["scores"].tolist(),
                                           p["masks"]):
            r = {"image_id": image_id, "category_id": label, "score": score}
            if iou_type == "bbox":
                r["bbox"] = [box[0], box[1], box[2] - box[0], box[3] - box[1]]
            else:
                r["segmentation"] = mask_utils.encode(np.asfortranarray((prob[0] > 0.5).numpy().astype(np.uint8)))
            results.append(r)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(results), iou_type)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats[:6]


def test_matches_direct_pycocotools():
    ds = three_sizes_dataset()
    gen = torch.Generator().manual_seed(0)
    preds = {}
    for image_id, p in gt_as_predictions(ds).items():
        n = len(p["labels"])
        jitter = torch.randint(-5, 6, (n, 4), generator=gen).float()  # (n, 4)
        boxes = (p["boxes"] + jitter).clamp(0, W)  # (n, 4)
        # A false positive per image, and the masks of the jittered boxes.
        boxes = torch.cat([boxes, torch.tensor([[70.0, 0, 126, 30]])])  # (n + 1, 4)
        rects = [tuple(int(v) for v in b) for b in boxes.tolist()]
        probs = rect_masks(rects)[:, None].float() * 0.7  # (n + 1, 1, H, W)
        preds[image_id] = dict(boxes=boxes, labels=torch.cat([p["labels"], torch.tensor([2])]),
                               scores=torch.rand(n + 1, generator=gen), masks=probs)
    ours = evaluate_predictions(dataset_to_coco(ds), preds)
    for iou_type in ("bbox", "segm"):
        expected = _pycocotools_by_hand(ds, preds, iou_type)
        got = [ours[iou_type][name] for name in METRIC_NAMES]
        assert 0.0 < got[0] < 1.0  # a non-trivial case
        np.testing.assert_allclose(got, np.where(expected < 0, np.nan, expected), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- evaluate(model, ...)


def test_evaluate_runs_model_in_eval_mode_and_restores_it():
    ds = three_sizes_dataset()
    model = GroundTruthModel(ds).train()
    metrics = evaluate(model, ds, batch_size=2)
    assert model.modes_seen == [False, False]  # 3 images in batches of 2, eval mode
    assert model.training  # mode restored for the training loop that called us
    for iou_type in ("bbox", "segm"):
        assert metrics[iou_type]["AP"] == pytest.approx(1.0)


def test_evaluate_accepts_a_dataloader_and_matches_evaluate_predictions():
    ds = [make_item(i, [(10 + 30 * i, 10, 30 + 30 * i, 30)], [1]) for i in range(3)]
    loader = DataLoader(ds, batch_size=3, collate_fn=lambda b: tuple(zip(*b)))
    model = GroundTruthModel(ds, shift=4)
    via_loader = evaluate(model, loader)
    direct = evaluate_predictions(dataset_to_coco(ds),
                                  {i: out for i, out in enumerate(model([image for image, _ in ds]))})
    assert via_loader == direct
    assert via_loader["segm"]["AP"] == pytest.approx(0.4)


def test_cocoeval_is_silent_unless_verbose(capsys):
    ds = three_sizes_dataset()
    evaluate(GroundTruthModel(ds), ds)
    assert capsys.readouterr().out == ""
    evaluate(GroundTruthModel(ds), ds, verbose=True)
    assert "Average Precision" in capsys.readouterr().out


def test_format_metrics_table():
    metrics = {"bbox": dict(zip(METRIC_NAMES, [0.5, 0.75, 0.5, math.nan, 0.25, 1.0])),
               "segm": dict(zip(METRIC_NAMES, [0.125, 0.2, 0.1, 0.0, 0.3, 0.4]))}
    lines = format_metrics(metrics).splitlines()
    assert lines[0].split() == list(METRIC_NAMES)
    assert lines[1].split() == ["bbox", "0.500", "0.750", "0.500", "-", "0.250", "1.000"]
    assert lines[2].split()[0] == "segm" and lines[2].split()[1] == "0.125"


# --------------------------------------------------------------------------- error analysis


def _error_case():
    """Two images, two classes, one detection of each kind (counts known by hand).

    Image 0: square A (0..40), square B (50..90), circle C (0..40 x 50..90).
      d0 square on A, IoU 1, score 0.6  -> Loc: a duplicate, since d1 scores higher and claims A first
      d1 square on A, IoU 0.9           -> TP at 0.5 and 0.75
      d2 square on B shifted by 10 px   -> IoU 30*40/(2*1600-1200) = 0.6: TP at 0.5, Loc at 0.75
      d3 square exactly on circle C     -> Cls
      d4 circle far from everything     -> BG
    Image 1: one circle (20..60), no detection: a missed object (FN).
    """
    f64 = dict(dtype=torch.float64)
    gts = [dict(boxes=torch.tensor([[0, 0, 40, 40], [50, 50, 90, 90], [0, 50, 40, 90]], **f64),
                labels=torch.tensor([1, 1, 2])),
           dict(boxes=torch.tensor([[20, 20, 60, 60]], **f64), labels=torch.tensor([2]))]
    dets = [dict(boxes=torch.tensor([[0, 0, 40, 40], [0, 0, 40, 36], [60, 50, 100, 90], [0, 50, 40, 90],
                                     [100, 0, 120, 20]], **f64),
                 labels=torch.tensor([1, 1, 1, 1, 2]), scores=torch.tensor([0.6, 0.9, 0.5, 0.8, 0.7], **f64)),
            dict(boxes=torch.zeros(0, 4, **f64), labels=torch.zeros(0, dtype=torch.int64), scores=torch.zeros(0, **f64))]
    return gts, dets


def test_detection_errors_counts_each_kind():
    from mrcnn_teach.evaluate import ERROR_TYPES, detection_errors

    gts, dets = _error_case()
    # d1 scores 0.9 > d0's 0.6, so d1 (IoU 0.9) claims A first at 0.5 and d0 becomes the duplicate.
    at50 = detection_errors(dets, gts, 0.5)
    assert at50[0].tolist() == [1, 0, 0, 2, 3] and at50[1].tolist() == []
    # at 0.75: d1's IoU 0.9 still claims A; d2 (0.6) is a loose box
    at75 = detection_errors(dets, gts, 0.75)
    assert at75[0].tolist() == [1, 0, 1, 2, 3]
    assert [ERROR_TYPES[k] for k in at75[0].tolist()] == ["Loc", "TP", "Loc", "Cls", "BG"]
    # the same detections handed over in another order get the same kinds
    perm = torch.tensor([4, 2, 0, 3, 1])
    shuffled = [dict({k: v[perm] for k, v in dets[0].items()}), dets[1]]
    assert detection_errors(shuffled, gts, 0.75)[0].tolist() == at75[0][perm].tolist()
    with pytest.raises(ValueError, match="2 detection dicts for 1 images"):
        detection_errors(dets, gts[:1])


def test_error_curves_c50_c75_equal_cocoeval_and_steps_rise():
    from mrcnn_teach.evaluate import error_curves, run_cocoeval

    gts, dets = _error_case()
    coco_gt = dataset_to_coco([(torch.zeros(3, 128, 128), dict(g, image_id=i)) for i, g in enumerate(gts)])
    bbox_results, _ = predictions_to_coco(dict(enumerate(dets)))
    coco_eval = run_cocoeval(coco_gt, bbox_results, "bbox")
    for k, c in enumerate((1, 2)):
        curves = error_curves(dets, gts, c)
        assert list(curves) == ["C75", "C50", "Loc", "Cls", "BG", "FN"]
        np.testing.assert_allclose(curves["C50"], coco_eval.eval["precision"][0, :, k, 0, 2], atol=1e-12)
        np.testing.assert_allclose(curves["C75"], coco_eval.eval["precision"][5, :, k, 0, 2], atol=1e-12)
    squares = {name: q.mean() for name, q in error_curves(dets, gts, 1).items()}
    # squares at 0.5: ranked d1 TP, d3 Cls, d0 dup, d2 TP -> precision 1, 1/2, 1/3, 1/2 at recall 1/2, 1/2, 1/2, 1
    assert squares["C50"] == pytest.approx((51 * 1 + 50 * 0.5) / 101)
    assert squares["Loc"] == squares["C50"]  # no loose box at 0.5 that 0.1 would forgive
    assert squares["Cls"] == pytest.approx((51 + 50 * 2 / 3) / 101)  # without d3: TP, dup, TP
    assert squares["BG"] == squares["FN"] == 1.0  # the duplicate removed too; nothing missed
    circles = {name: q.mean() for name, q in error_curves(dets, gts, 2).items()}
    assert circles["C50"] == circles["Cls"] == circles["BG"] == 0.0  # one BG detection, no circle found
    assert circles["FN"] == 1.0
    with pytest.raises(ValueError, match="no object of category 3"):
        error_curves(dets, gts, 3)
