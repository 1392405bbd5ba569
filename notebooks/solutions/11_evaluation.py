"""Worked solutions to the exercises of 11_evaluation.ipynb (for teachers; tests/test_exercises.py runs them).

CHECKS pairs every check the notebook calls with its solution; WRONG pairs each check with a
plausible mistake that the check must reject.
"""

import numpy as np
import torch

from mrcnn_teach.exercises.nb11 import check_ap, check_envelope_ap, check_error_kinds, check_tiny_kinds


# Exercise 1 -------------------------------------------------------------------------------------
def tiny_kinds():
    """The kinds at IoU 0.75, read off the picture and the table of section 2 (IoUs worked out by hand)."""
    return {
        "d1": "TP",   # square A, IoU 0.91
        "d2": "TP",   # the circle of image 2, IoU 0.92
        "d3": "Loc",  # the square of image 1 at IoU 0.68: found, placed too loosely for 0.75
        "d4": "Loc",  # IoU 0.90 with square A, which d1 already claimed: a duplicate
        "d5": "TP",   # the circle of image 0, IoU 0.81
        "d6": "Cls",  # no square in image 2, but it covers the circle exactly (IoU 1): a confusion
        "d7": "BG",   # circle (60..95)^2 in image 1: IoU 0 with the circle, 10*10 / (35^2 + 40^2 - 100) = 0.037 with the square
        "d8": "Loc",  # the circle of image 1 at IoU 0.53
        "d9": "TP",   # square B, IoU 0.78
    }


def tiny_kinds_duplicate_is_tp():
    """Wrong: d4 overlaps square A at 0.90 >= 0.75, but d1 claimed A first."""
    return dict(tiny_kinds(), d4="TP")


def tiny_kinds_touching_is_cls():
    """Wrong: d7 touches the square of image 1, but at IoU 0.037 < 0.1 that is background."""
    return dict(tiny_kinds(), d7="Cls")


# Exercise 2 -------------------------------------------------------------------------------------
def envelope_ap():
    """3 objects, ranked TP FP FP TP. Recall 1/3 at rank 1 (precision 1), 2/3 at rank 4 (precision 1/2).

    The list: points 0..0.33 (34) read 1, points 0.34..0.66 (33) read 1/2, 0.67..1 (34) are never reached.
    + 2 FPs: the ranks above keep their precision, no recall is added, the envelope there is still 1/2.
    + FP FP TP: recall 1 at rank 7 with precision 3/7; the 34 points 0.67..1 now read 3/7 instead of 0.
    """
    before = (34 * 1.0 + 33 * 0.5) / 101
    return before, before, (34 * 1.0 + 33 * 0.5 + 34 * 3 / 7) / 101


def envelope_ap_fps_lower():
    """Wrong: two more false positives 'lower the precision', so AP drops (the envelope never reads them)."""
    before = (34 * 1.0 + 33 * 0.5) / 101
    return before, (34 * 1.0 + 33 * 2 / 6) / 101, (34 * 1.0 + 33 * 0.5 + 34 * 3 / 7) / 101


def envelope_ap_raw_precision():
    """Wrong: reads the raw precision at each point (rank 4 still 1/2, but rank 7's 3/7 is right), and
    the list before counts the unreached points 0.67..1 at the last precision instead of 0."""
    return (34 * 1.0 + 67 * 0.5) / 101, (34 * 1.0 + 67 * 0.5) / 101, (34 * 1.0 + 33 * 0.5 + 34 * 3 / 7) / 101


# Exercise 3 -------------------------------------------------------------------------------------
def interpolated_ap(recall: np.ndarray, precision: np.ndarray, num_points=101) -> float:
    """AP of one class from its ranked recall/precision: 101 points (COCO), 11 (VOC 2007), None (VOC 2010+)."""
    if len(recall) == 0:
        return 0.0  # objects but no detections: nothing is ever recalled
    envelope = np.maximum.accumulate(precision[::-1])[::-1]  # (D,) best precision at this recall or beyond
    if num_points is None:
        # Exact area under the envelope: each detection that raises the recall adds a rectangle
        # (recall gained) x (envelope there).
        gained = np.diff(np.concatenate([[0.0], recall]))  # (D,) 0 for an FP
        return float(np.sum(gained * envelope))
    points = np.linspace(0.0, 1.0, num_points)  # (P,) recall points 0 .. 1
    first = np.searchsorted(recall, points, side="left")  # (P,) first detection with recall >= point
    reached = first < len(recall)  # (P,) beyond the last recall the precision counts as 0
    return float(np.where(reached, envelope[np.minimum(first, len(recall) - 1)], 0.0).mean())


def ap_without_envelope(recall, precision, num_points=101):
    """Wrong: reads the raw precision at each recall point, without the running maximum from the right."""
    if len(recall) == 0:
        return 0.0
    if num_points is None:
        return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))
    points = np.linspace(0.0, 1.0, num_points)
    first = np.searchsorted(recall, points, side="left")
    reached = first < len(recall)
    return float(np.where(reached, precision[np.minimum(first, len(recall) - 1)], 0.0).mean())


def ap_search_right(recall, precision, num_points=101):
    """Wrong: side="right" reads the detection *after* the one that first reaches each recall point."""
    if len(recall) == 0:
        return 0.0
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    if num_points is None:
        return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * envelope))
    points = np.linspace(0.0, 1.0, num_points)
    first = np.searchsorted(recall, points, side="right")
    reached = first < len(recall)
    return float(np.where(reached, envelope[np.minimum(first, len(recall) - 1)], 0.0).mean())


def interpolated_precision(recall, precision):
    """Section 2c's helper, as the notebook defines it: the envelope read at the 101 recall points."""
    env = np.maximum.accumulate(precision[::-1])[::-1]  # (D,)
    first = np.searchsorted(recall, np.linspace(0.0, 1.0, 101), side="left")  # (101,)
    reached = first < len(recall)  # (101,)
    q = np.zeros(101)  # (101,)
    q[reached] = env[first[reached]]
    return q


def ap_reusing_section_2(recall, precision, num_points=101):
    """Wrong (refused by the check): the 101-point case is section 2c's interpolated_precision, not new work."""
    if num_points == 101:
        return float(interpolated_precision(recall, precision).mean())
    return interpolated_ap(recall, precision, num_points)


# Exercise 4 -------------------------------------------------------------------------------------
def buggy_error_kinds(ious, scores, det_labels, gt_labels, t, low=0.1):
    """The notebook's buggy copy (kept here so WRONG can show the check rejects it)."""
    num_det, num_gt = ious.shape
    same = det_labels[:, None] == gt_labels[None, :]  # (D, G)
    claimed = torch.zeros(num_gt, dtype=torch.bool)  # (G,)
    tp = torch.zeros(num_det, dtype=torch.bool)  # (D,)
    for d in range(num_det if num_gt else 0):
        free = torch.where(same[d] & ~claimed, ious[d], torch.full_like(ious[d], -1.0))  # (G,)
        if free.max() >= t:
            g = num_gt - 1 - int(free.flip(0).argmax())  # the best free object, the last one on a tie
            claimed[g] = tp[d] = True
    zero = torch.zeros_like(ious)  # (D, G)
    best_same = torch.where(same, ious, zero).amax(dim=1) if num_gt else zero.sum(1)  # (D,)
    best_other = torch.where(same, zero, ious).amax(dim=1) if num_gt else zero.sum(1)  # (D,)
    kinds = torch.full((num_det,), 3, dtype=torch.int64)  # (D,) BG
    kinds[best_other >= low] = 2
    kinds[best_same >= low] = 1
    kinds[tp] = 0
    return kinds


def error_kinds(ious, scores, det_labels, gt_labels, t, low=0.1):
    """Kind of each detection of one image: 0 TP, 1 Loc, 2 Cls, 3 BG. The fix: match in score order."""
    num_det, num_gt = ious.shape
    same = det_labels[:, None] == gt_labels[None, :]  # (D, G)
    claimed = torch.zeros(num_gt, dtype=torch.bool)  # (G,)
    tp = torch.zeros(num_det, dtype=torch.bool)  # (D,)
    for d in torch.argsort(-scores, stable=True).tolist() if num_gt else []:  # the best score picks first
        free = torch.where(same[d] & ~claimed, ious[d], torch.full_like(ious[d], -1.0))  # (G,)
        if free.max() >= t:
            g = num_gt - 1 - int(free.flip(0).argmax())  # the best free object, the last one on a tie
            claimed[g] = tp[d] = True
    zero = torch.zeros_like(ious)  # (D, G)
    best_same = torch.where(same, ious, zero).amax(dim=1) if num_gt else zero.sum(1)  # (D,)
    best_other = torch.where(same, zero, ious).amax(dim=1) if num_gt else zero.sum(1)  # (D,)
    kinds = torch.full((num_det,), 3, dtype=torch.int64)  # (D,) BG
    kinds[best_other >= low] = 2
    kinds[best_same >= low] = 1
    kinds[tp] = 0
    return kinds


def error_kinds_class_blind(ious, scores, det_labels, gt_labels, t, low=0.1):
    """Wrong: sorted, but Loc looks at objects of any class, so every confusion is called Loc."""
    kinds = error_kinds(ious, scores, det_labels, gt_labels, t, low)
    if ious.shape[1]:
        kinds[(kinds == 2) & (ious.amax(dim=1) >= low)] = 1
    return kinds


CHECKS = [
    (check_tiny_kinds, tiny_kinds),
    (check_envelope_ap, envelope_ap),
    (check_ap, interpolated_ap),
    (check_error_kinds, error_kinds),
]

WRONG = [
    (check_tiny_kinds, tiny_kinds_duplicate_is_tp),
    (check_tiny_kinds, tiny_kinds_touching_is_cls),
    (check_envelope_ap, envelope_ap_fps_lower),
    (check_envelope_ap, envelope_ap_raw_precision),
    (check_ap, ap_without_envelope),
    (check_ap, ap_search_right),
    (check_ap, ap_reusing_section_2),
    (check_error_kinds, buggy_error_kinds),
    (check_error_kinds, error_kinds_class_blind),
]
