"""Checks for the exercises of notebooks/11_evaluation.ipynb (error kinds, the envelope, interpolated AP).

The references are the library's error analysis (evaluate.detection_errors, whose C50/C75 curves equal
COCOeval's, tests/test_evaluate.py) and a line-by-line transcription of COCOeval.accumulate's
interpolation (loops, as pycocotools writes it), so a student's answer is compared with an
independently written computation. Predict answers may not call the functions that would answer them
(the checks read the answer's code names).
"""

from __future__ import annotations

import numpy as np
import torch

from ..boxes import box_iou
from ..evaluate import ERROR_TYPES, detection_errors
from . import close, need_function, refuse_names, run_check


# --------------------------------------------------------------------------- exercise 1


def _tiny_example():
    """The notebook's nine-detection example (section 2): (gts, dets), one dict per image."""
    f64 = dict(dtype=torch.float64)
    gts = [dict(boxes=torch.tensor([[10, 10, 50, 50], [55, 10, 95, 50], [20, 60, 60, 95]], **f64),
                labels=torch.tensor([1, 1, 2])),
           dict(boxes=torch.tensor([[30, 30, 70, 70], [5, 5, 35, 35]], **f64), labels=torch.tensor([1, 2])),
           dict(boxes=torch.tensor([[40, 40, 90, 90]], **f64), labels=torch.tensor([2]))]
    dets = [dict(boxes=torch.tensor([[12, 10, 50, 52], [11, 12, 49, 50], [20, 58, 60, 90], [55, 15, 95, 55]], **f64),
                 labels=torch.tensor([1, 1, 2, 1]), scores=torch.tensor([0.95, 0.80, 0.70, 0.40], **f64)),
            dict(boxes=torch.tensor([[34, 34, 74, 74], [60, 60, 95, 95], [10, 10, 40, 40]], **f64),
                 labels=torch.tensor([1, 2, 2]), scores=torch.tensor([0.85, 0.55, 0.45], **f64)),
            dict(boxes=torch.tensor([[42, 40, 90, 88], [40, 40, 90, 90]], **f64),
                 labels=torch.tensor([2, 1]), scores=torch.tensor([0.90, 0.60], **f64))]
    return gts, dets


def _tiny_kinds(iou_threshold: float) -> dict:
    """{"d1": kind, ..., "d9": kind}: d1..d9 in decreasing score over the three images."""
    gts, dets = _tiny_example()
    kinds = detection_errors(dets, gts, iou_threshold)
    pairs = [(float(s), ERROR_TYPES[int(k)]) for d, kk in zip(dets, kinds) for s, k in zip(d["scores"], kk)]
    return {f"d{n + 1}": kind for n, (_, kind) in enumerate(sorted(pairs, reverse=True))}


def check_tiny_kinds(answer) -> bool:
    """answer() -> {"d1": kind, ..., "d9": kind} at IoU 0.75, each kind "TP", "Loc", "Cls" or "BG"."""

    def compare():
        need_function(answer)
        refuse_names(answer, {"detection_errors", "error_curves", "_greedy_match", "box_iou", "match_detections",
                              "class_detections"},
                     "work the kinds out by hand from the picture and the IoU table of section 2")
        got = answer()
        assert isinstance(got, dict), "return a dict {'d1': kind, ..., 'd9': kind}"
        expected = _tiny_kinds(0.75)
        missing = sorted(set(expected) - set(got))
        assert not missing, f"give a kind for every detection; missing: {', '.join(missing)}"
        unknown = sorted({str(v) for v in got.values()} - set(ERROR_TYPES))
        assert not unknown, f"a kind is one of {', '.join(ERROR_TYPES)}; got {', '.join(unknown)}"
        wrong = [name for name in expected if got[name] != expected[name]]
        assert not wrong, (f"{', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} not right; for an FP, "
                           "ask in order: does it overlap an object of its own class (IoU >= 0.1), "
                           "then one of another class?")

    return run_check("the kind of each detection at IoU 0.75", compare)


# --------------------------------------------------------------------------- exercise 2


ENVELOPE_LIST = [True, False, False, True]  # TP / FP of a class's ranked detections, best first
ENVELOPE_OBJECTS = 3
ENVELOPE_APPENDED = ([False, False], [False, False, True])  # appended below, at lower scores


def _ap101(is_tp, num_gt: int) -> float:
    """COCO's 101-point AP of one class's ranked TP flags (the transcription below)."""
    is_tp = np.asarray(is_tp, dtype=bool)
    tp = np.cumsum(is_tp)
    return _coco_style_ap(tp / num_gt, tp / np.arange(1, len(tp) + 1), 101)


def check_envelope_ap(answer) -> bool:
    """answer() -> (AP of the list, AP after appending two FPs, AP after appending FP, FP, TP)."""

    def compare():
        need_function(answer)
        refuse_names(answer, {"interpolated_precision", "precision_recall", "envelope", "coco_precision",
                              "error_curves", "_interpolated_precision", "my_ap", "interpolated_ap"},
                     "work the three APs out on paper, with the 101 recall points of section 2c")
        got = answer()
        assert isinstance(got, (tuple, list)) and len(got) == 3, "return three numbers: (before, + 2 FPs, + FP FP TP)"
        expected = [_ap101(ENVELOPE_LIST, ENVELOPE_OBJECTS)] + [
            _ap101(ENVELOPE_LIST + added, ENVELOPE_OBJECTS) for added in ENVELOPE_APPENDED]
        for name, mine, ref in zip(("the list", "the list + 2 FPs", "the list + FP, FP, TP"), got, expected):
            assert close(float(mine), ref, 1e-3), (f"{name}: AP {float(mine):.4f} is not right; count the recall points "
                                                    "that read each envelope value")

    return run_check("AP after appending low-scored detections", compare)


# --------------------------------------------------------------------------- exercise 3


def _coco_style_ap(recall: np.ndarray, precision: np.ndarray, num_points: int) -> float:
    """COCOeval.accumulate's interpolation, transcribed loop for loop (then the mean, as summarize takes it)."""
    rec_thrs = np.linspace(0.0, 1.0, num_points)
    pr = list(precision)
    q = [0.0] * num_points
    for i in range(len(pr) - 1, 0, -1):
        if pr[i] > pr[i - 1]:
            pr[i - 1] = pr[i]
    inds = np.searchsorted(recall, rec_thrs, side="left")
    try:
        for ri, pi in enumerate(inds):
            q[ri] = pr[pi]
    except IndexError:
        pass
    return float(np.mean(q))


def _voc_all_points_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """PASCAL VOC 2010+ (the devkit's VOCap): exact area under the precision envelope."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    steps = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _pr_cases(seed: int = 1121, visible: bool = True):
    """(name, recall, precision) lists of one class, in rank order, with the edge cases that matter."""
    cases = [("the notebook's squares at IoU 0.5", np.array([1, 2, 2, 2, 3]) / 3, np.array([1, 1, 2 / 3, 0.5, 0.6])),
             ("a class with objects but no detections", np.zeros(0), np.zeros(0)),
             ("recall never reaching 1", np.array([0.25, 0.25, 0.5]), np.array([1.0, 0.5, 2 / 3]))] if visible else []
    rng = np.random.default_rng(seed)
    for num_gt in ((7, 40) if visible else (3, 13, 101)):
        is_tp = rng.random(60) < 0.45  # (D,)
        is_tp[: num_gt // 3] = True
        tp = np.cumsum(is_tp)[: min(60, 4 * num_gt)]
        tp = np.minimum(tp, num_gt)
        n = np.arange(1, len(tp) + 1)
        cases.append((f"60 random detections, {num_gt} objects", tp / num_gt, tp / n))
    return cases


def check_ap(answer, hidden=False) -> bool:
    """answer(recall (D,), precision (D,), num_points) -> AP: 101 = COCO, 11 = VOC 2007, None = VOC 2010+ all points."""

    def compare():
        need_function(answer)
        refuse_names(answer, {"interpolated_precision", "envelope", "precision_recall", "coco_precision",
                              "class_detections", "_interpolated_precision", "error_curves"},
                     "section 2's helpers already read the envelope at 101 points; "
                     "write the envelope and its reading yourself")
        for name, recall, precision in (_pr_cases(seed=1122, visible=False) if hidden else _pr_cases()):
            for num_points in (101, 11, None):
                expected = (_voc_all_points_ap(recall, precision) if num_points is None
                            else _coco_style_ap(recall, precision, num_points))
                got = answer(recall.copy(), precision.copy(), num_points)
                assert got is not None, "your function returned None"
                kind = {101: "COCO 101-point", 11: "VOC 2007 11-point", None: "VOC all-points"}[num_points]
                assert close(float(got), expected, 1e-9), f"{name}, {kind}: expected {expected:.4f}, got {float(got):.4f}"

    return run_check("interpolated AP (101, 11 and all points)", compare, hidden=hidden)


# --------------------------------------------------------------------------- exercise 4


def _kinds_cases(seed: int, num_images: int = 4):
    """Images of clustered detections in shuffled order: (ious (D, G), scores (D,), det_labels, gt_labels, t, expected)."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for i in range(num_images):
        num_gt = 2 + i % 3
        xy = torch.rand(num_gt, 2, generator=g) * 60  # (G, 2)
        gt_boxes = torch.cat([xy, xy + 15 + torch.rand(num_gt, 2, generator=g) * 25], dim=1)  # (G, 4)
        gt_labels = 1 + torch.randint(0, 3, (num_gt,), generator=g)  # (G,)
        near = torch.randint(0, num_gt, (4 * num_gt,), generator=g)  # (D,) the object each detection is near
        det_boxes = gt_boxes[near] + torch.randn(len(near), 4, generator=g) * 5  # (D, 4)
        det_boxes[:, 2:] = torch.maximum(det_boxes[:, 2:], det_boxes[:, :2] + 2)
        det_boxes[-1] = torch.tensor([95.0, 95.0, 110.0, 110.0])  # off every object: background
        det_labels = torch.where(torch.rand(len(near), generator=g) < 0.7, gt_labels[near],
                                 1 + torch.randint(0, 3, (len(near),), generator=g))  # (D,) mostly right
        scores = torch.rand(len(near), generator=g, dtype=torch.float64)  # (D,) in no order
        t = (0.5, 0.75)[i % 2]
        expected = detection_errors([dict(boxes=det_boxes, labels=det_labels, scores=scores)],
                                    [dict(boxes=gt_boxes, labels=gt_labels)], t)[0]  # (D,)
        cases.append((box_iou(det_boxes.double(), gt_boxes.double()), scores, det_labels, gt_labels, t, expected))
    return cases


def check_error_kinds(answer, hidden=False) -> bool:
    """answer(ious (D, G), scores (D,), det_labels (D,), gt_labels (G,), t, low=0.1) -> (D,) codes 0 TP 1 Loc 2 Cls 3 BG."""

    def compare():
        need_function(answer)
        refuse_names(answer, {"detection_errors", "_greedy_match", "error_curves"},
                     "fix the function above; the library's detection_errors is what it is compared with")
        for n, (ious, scores, det_labels, gt_labels, t, expected) in enumerate(
                _kinds_cases(1142 if hidden else 1141)):
            got = answer(ious.clone(), scores.clone(), det_labels.clone(), gt_labels.clone(), t)
            assert got is not None, "your function returned None"
            got = torch.as_tensor(got).to(torch.int64)
            assert got.shape == expected.shape, f"image {n}: shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
            bad = (got != expected).nonzero().flatten().tolist()
            assert not bad, (f"image {n} ({len(scores)} detections, t = {t}): detection {bad[0]} (score "
                             f"{float(scores[bad[0]]):.3f}) should be {ERROR_TYPES[int(expected[bad[0]])]}, "
                             f"got {ERROR_TYPES[int(got[bad[0]])] if 0 <= int(got[bad[0]]) < 4 else int(got[bad[0]])}"
                             f" ({len(bad)} wrong)")

    return run_check("the kind of each detection of an image", compare, hidden=hidden)
