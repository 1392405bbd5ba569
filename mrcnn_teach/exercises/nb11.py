"""Checks for the exercises of notebooks/11_evaluation.ipynb (IoU, precision/recall, COCO AP).

The references are pycocotools itself (mask IoU on run-length encodings) and a line-by-line
transcription of COCOeval.accumulate's interpolation (loops, as pycocotools writes it), so a
student's vectorised answer is compared with an independently written computation.
"""

from __future__ import annotations

import numpy as np
import torch

from . import close, need_function, run_check


# --------------------------------------------------------------------------- exercise 1


def _ranked_example(seed: int, num: int = 12):
    """Scores (D,) with a few exact ties at round values, TP flags (D,), and an object count >= #TP."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(num, generator=g, dtype=torch.float64)  # (D,)
    scores[:3] = torch.tensor([0.5, 0.3, 0.9], dtype=torch.float64)  # thresholds below hit these exactly
    is_tp = torch.rand(num, generator=g) < 0.6  # (D,) bool
    is_tp[2] = True  # the top detection (0.9) is a TP, so precision at 0.9 is not 0/0
    return scores, is_tp, int(is_tp.sum()) + 2  # two objects never found


def check_precision_recall(answer) -> bool:
    """answer(scores (D,), is_tp (D,) bool, num_gt, threshold) -> (precision, recall) of the detections scoring >= threshold."""

    def compare():
        need_function(answer)
        for seed in (1101, 1102):
            scores, is_tp, num_gt = _ranked_example(seed)
            for threshold in (0.9, 0.5, 0.3, float(scores.min())):
                kept = scores >= threshold  # (D,)
                tp = int((is_tp & kept).sum())
                expected = (tp / int(kept.sum()), tp / num_gt)
                got = answer(scores.clone(), is_tp.clone(), num_gt, threshold)
                assert got is not None and len(got) == 2, "return a pair (precision, recall)"
                got = tuple(float(v) for v in got)
                assert close(got[0], expected[0], 1e-9), (f"threshold {threshold:.4f}: precision should be "
                                                          f"{expected[0]:.4f}, got {got[0]:.4f}")
                assert close(got[1], expected[1], 1e-9), (f"threshold {threshold:.4f}: recall should be "
                                                          f"{expected[1]:.4f}, got {got[1]:.4f}")

    return run_check("precision and recall at a score threshold", compare)


# --------------------------------------------------------------------------- exercise 2


def _blob_masks(num: int, size: int, g: torch.Generator) -> torch.Tensor:
    """(num, size, size) bool: random rectangles and discs, some overlapping."""
    ys = torch.arange(size, dtype=torch.float32)[:, None]  # (H, 1)
    xs = torch.arange(size, dtype=torch.float32)[None, :]  # (1, W)
    masks = []
    for i in range(num):
        cx, cy = (torch.rand(2, generator=g) * size).tolist()
        r = float(3 + torch.rand(1, generator=g) * size / 3)
        if i % 2:
            masks.append((xs - cx) ** 2 + (ys - cy) ** 2 <= r ** 2)
        else:
            masks.append(((xs - cx).abs() <= r) & ((ys - cy).abs() <= 0.6 * r))
    return torch.stack(masks)  # (num, H, W)


def _coco_mask_iou(masks1: torch.Tensor, masks2: torch.Tensor) -> np.ndarray:
    """pycocotools' mask IoU (what COCOeval's "segm" uses): (N, H, W), (M, H, W) -> (N, M)."""
    from pycocotools import mask as mask_utils

    from ..evaluate import masks_to_rle

    rle1, rle2 = masks_to_rle(masks1), masks_to_rle(masks2)
    return np.asarray(mask_utils.iou(rle1, rle2, [0] * len(rle2))).reshape(len(rle1), len(rle2))


def check_mask_iou(answer) -> bool:
    """answer(masks1 (N, H, W) bool, masks2 (M, H, W) bool) -> (N, M) IoU, compared with pycocotools."""

    def compare():
        need_function(answer)
        g = torch.Generator().manual_seed(1111)
        masks1 = _blob_masks(5, 40, g)  # (5, 40, 40)
        masks2 = torch.cat([_blob_masks(3, 40, g), masks1[1:2],  # an identical pair: IoU 1
                            torch.zeros(1, 40, 40, dtype=torch.bool)])  # an empty mask: IoU 0
        masks2 = torch.cat([masks2, masks1[3:4] & ~masks1[3:4].roll(5, dims=2)])  # a part of masks1[3]
        for a, b in ((masks1, masks2), (masks2[:3], masks1)):
            expected = torch.from_numpy(_coco_mask_iou(a, b))  # (N, M)
            got = answer(a.clone(), b.clone())
            assert got is not None, "your function returned None"
            got = torch.as_tensor(got)
            assert got.shape == expected.shape, f"shape {tuple(got.shape)}, expected {tuple(expected.shape)} = (N, M)"
            assert not torch.isnan(got.double()).any(), "NaN in the result: an empty mask has IoU 0, not 0/0"
            if not close(got, expected, 1e-6):
                i, j = divmod(int((got.double() - expected).abs().argmax()), expected.shape[1])
                raise AssertionError(f"pair ({i}, {j}): expected {float(expected[i, j]):.4f}, got {float(got[i, j]):.4f}")

    return run_check("mask IoU of all pairs", compare)


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


def _pr_cases():
    """(name, recall, precision) lists of one class, in rank order, with the edge cases that matter."""
    cases = [("the notebook's squares at IoU 0.5", np.array([1, 2, 2, 2, 3]) / 3, np.array([1, 1, 2 / 3, 0.5, 0.6])),
             ("a class with objects but no detections", np.zeros(0), np.zeros(0)),
             ("recall never reaching 1", np.array([0.25, 0.25, 0.5]), np.array([1.0, 0.5, 2 / 3]))]
    rng = np.random.default_rng(1121)
    for num_gt in (7, 40):
        is_tp = rng.random(60) < 0.45  # (D,)
        is_tp[: num_gt // 3] = True
        tp = np.cumsum(is_tp)[: min(60, 4 * num_gt)]
        tp = np.minimum(tp, num_gt)
        n = np.arange(1, len(tp) + 1)
        cases.append((f"60 random detections, {num_gt} objects", tp / num_gt, tp / n))
    return cases


def check_ap(answer) -> bool:
    """answer(recall (D,), precision (D,), num_points) -> AP: 101 = COCO, 11 = VOC 2007, None = VOC 2010+ all points."""

    def compare():
        need_function(answer)
        for name, recall, precision in _pr_cases():
            for num_points in (101, 11, None):
                expected = (_voc_all_points_ap(recall, precision) if num_points is None
                            else _coco_style_ap(recall, precision, num_points))
                got = answer(recall.copy(), precision.copy(), num_points)
                assert got is not None, "your function returned None"
                kind = {101: "COCO 101-point", 11: "VOC 2007 11-point", None: "VOC all-points"}[num_points]
                assert close(float(got), expected, 1e-9), f"{name}, {kind}: expected {expected:.4f}, got {float(got):.4f}"

    return run_check("interpolated AP (101, 11 and all points)", compare)
