"""Worked solutions to the exercises of 11_evaluation.ipynb (for teachers; tests/test_exercises.py runs them).

CHECKS pairs every check the notebook calls with its solution; WRONG pairs each check with a
plausible mistake that the check must reject.
"""

import numpy as np
import torch

from mrcnn_teach.exercises.nb11 import check_ap, check_mask_iou, check_precision_recall


# Exercise 1 -------------------------------------------------------------------------------------
def precision_recall_at(scores: torch.Tensor, is_tp: torch.Tensor, num_gt: int, threshold: float):
    """Precision and recall of the detections a deployed model keeps: those scoring >= threshold."""
    kept = scores >= threshold  # (D,) bool; ">=": a detection scoring exactly the threshold is kept
    tp = int((is_tp & kept).sum())  # true positives among the kept
    return tp / int(kept.sum()), tp / num_gt  # precision over what we report, recall over what exists


def precision_recall_strict(scores, is_tp, num_gt, threshold):
    """Wrong: '>' drops the detections that score exactly the threshold."""
    kept = scores > threshold
    tp = int((is_tp & kept).sum())
    return tp / max(int(kept.sum()), 1), tp / num_gt


def precision_recall_swapped(scores, is_tp, num_gt, threshold):
    """Wrong: recall divided by the kept detections, precision by the objects."""
    kept = scores >= threshold
    tp = int((is_tp & kept).sum())
    return tp / num_gt, tp / int(kept.sum())


# Exercise 2 -------------------------------------------------------------------------------------
def mask_iou(masks1: torch.Tensor, masks2: torch.Tensor) -> torch.Tensor:
    """IoU of every pair of binary masks: (N, H, W), (M, H, W) -> (N, M), without a loop."""
    a = masks1.flatten(1).double()  # (N, H*W) 0/1
    b = masks2.flatten(1).double()  # (M, H*W)
    inter = a @ b.T  # (N, M) pixels in both: a dot product of 0/1 vectors counts the common 1s
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter  # (N, M) |A| + |B| - |A and B|
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))  # (N, M) 0 for empty/empty


def mask_iou_no_subtract(masks1, masks2):
    """Wrong: the union forgets to subtract the intersection (counts common pixels twice)."""
    a, b = masks1.flatten(1).double(), masks2.flatten(1).double()
    inter = a @ b.T
    return inter / (a.sum(1)[:, None] + b.sum(1)[None, :]).clamp(min=1)


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


CHECKS = [
    (check_precision_recall, precision_recall_at),
    (check_mask_iou, mask_iou),
    (check_ap, interpolated_ap),
]

WRONG = [
    (check_precision_recall, precision_recall_strict),
    (check_precision_recall, precision_recall_swapped),
    (check_mask_iou, mask_iou_no_subtract),
    (check_ap, ap_without_envelope),
    (check_ap, ap_search_right),
]
