"""Checks for the exercises of notebooks/04_rpn.ipynb (anchor labels, NMS suppression chains, a global top-k).

The references are the library's own pieces: `Matcher` (exercise 1), `nms.nms` and its fixed-point loop
(exercise 2), and `torch.topk` over all levels at once (exercise 3).
"""

from __future__ import annotations

import torch

from ..boxes import box_iou
from ..matcher import Matcher
from ..nms import nms, suppression_matrix
from . import need_function, refuse_names, run_check

# --------------------------------------------------------------------------- exercise 1: labels by hand

# IoU of 3 ground-truth boxes (rows) with 8 anchors (columns a0..a7); the notebook prints it as a table.
LABEL_IOU = torch.tensor([
    #  a0    a1    a2    a3    a4    a5    a6    a7
    [0.70, 0.82, 0.30, 0.29, 0.00, 0.10, 0.60, 0.69],  # box 0
    [0.10, 0.40, 0.05, 0.00, 0.55, 0.55, 0.00, 0.00],  # box 1
    [0.00, 0.00, 0.00, 0.10, 0.00, 0.00, 0.45, 0.25],  # box 2
])  # (G=3, N=8)
RPN_HIGH, RPN_LOW = 0.7, 0.3


def _label_truth(iou: torch.Tensor = LABEL_IOU) -> tuple[list[int], list[int], list[int]]:
    """(labels 1/0/-1, box each anchor learns from or -1, boxes no anchor learns from), from the library's Matcher."""
    matched = Matcher(RPN_HIGH, RPN_LOW, allow_low_quality_matches=True)(iou)  # (N,)
    labels = torch.where(matched >= 0, 1, torch.where(matched == Matcher.BETWEEN_THRESHOLDS, -1, 0))  # (N,)
    learns_from = torch.where(matched >= 0, matched, -1)  # (N,)
    orphans = sorted(set(range(iou.shape[0])) - set(learns_from[learns_from >= 0].tolist()))
    return labels.tolist(), learns_from.tolist(), orphans


def _as_int_list(value, name: str, length: int | None = None) -> list[int]:
    values = value.tolist() if isinstance(value, torch.Tensor) else list(value)
    assert all(float(v) == int(v) for v in values), f"{name}: give whole numbers, got {values}"
    values = [int(v) for v in values]
    if length is not None:
        assert len(values) == length, f"{name}: give one value per anchor ({length}), got {len(values)}"
    return values


def check_anchor_labels(answer) -> bool:
    """answer() -> (labels [8] in 1/0/-1, learns_from [8] box index or -1, orphans [boxes no anchor learns from])."""

    def compare():
        need_function(answer)
        refuse_names(answer, {"Matcher", "matcher", "assign_targets"},
                     "work the labels out on paper and return them (the point is to predict what it does)")
        got = answer()
        assert isinstance(got, (tuple, list)) and len(got) == 3, "return three lists: (labels, learns_from, orphans)"
        labels, learns_from, orphans = _label_truth()
        n = LABEL_IOU.shape[1]
        my_labels = _as_int_list(got[0], "labels", n)
        my_from = _as_int_list(got[1], "learns_from", n)
        my_orphans = sorted(_as_int_list(got[2], "orphans"))
        wrong = [a for a in range(n) if my_labels[a] != labels[a]]
        if wrong:
            column = ", ".join(f"{v:.2f}" for v in LABEL_IOU[:, wrong[0]].tolist())
            raise AssertionError(f"the labels of anchor(s) {', '.join(f'a{a}' for a in wrong)} are not right "
                                 f"(a{wrong[0]} has IoUs [{column}] with boxes 0, 1, 2): check what happens exactly "
                                 "at 0.3 and 0.7, and which anchors the best-anchor rule adds")
        wrong = [a for a in range(n) if my_from[a] != learns_from[a]]
        if wrong:
            raise AssertionError(f"the labels are right, but not which box anchor(s) "
                                 f"{', '.join(f'a{a}' for a in wrong)} learn from (-1 for an anchor that is not "
                                 "positive): a positive anchor regresses to its OWN best box")
        assert my_orphans == orphans, (f"labels and boxes are right, but the boxes that no anchor learns from are "
                                       f"not {my_orphans}: read them off your learns_from list")

    return run_check("anchor labels by hand", compare)


# --------------------------------------------------------------------------- exercise 2: a suppression chain

CHAIN_BOXES, CHAIN_GREEDY_KEEPS, CHAIN_ONE_PASS_KEEPS, NMS_THRESH = 5, 3, 1, 0.7


def one_pass_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Keep a box when no higher-scoring box overlaps it by more than the threshold, kept or not:
    (N, 4), (N,) -> kept indices (K,) by decreasing score. One pass of the fixed point, not greedy NMS."""
    order = torch.sort(scores, descending=True, stable=True).indices  # (N,)
    suppressed = suppression_matrix(boxes[order], iou_threshold).any(dim=0)  # (N,) bool
    return order[~suppressed]  # (K,)


def _fixed_point_passes(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> int:
    """How many times `nms.greedy_keep` computes `suppressed = ...` on these boxes before it returns."""
    order = torch.sort(scores, descending=True, stable=True).indices  # (N,)
    suppresses = suppression_matrix(boxes[order], iou_threshold)  # (N, N) bool
    keep = torch.ones(len(order), dtype=torch.bool)  # (N,)
    passes = 0
    while True:
        passes += 1
        new_keep = ~suppresses[keep].any(dim=0)  # (N,)
        if torch.equal(new_keep, keep):
            return passes
        keep = new_keep


def check_suppression_chain(answer) -> bool:
    """answer() -> (boxes (5, 4), scores (5,), passes): greedy NMS at 0.7 keeps 3, one pass keeps 1,
    and `passes` is the number of passes of the library's fixed-point loop on them."""

    def compare():
        need_function(answer)
        got = answer()
        assert isinstance(got, (tuple, list)) and len(got) == 3, "return (boxes, scores, passes)"
        boxes = torch.as_tensor(got[0], dtype=torch.float32)
        scores = torch.as_tensor(got[1], dtype=torch.float32)
        assert boxes.shape == (CHAIN_BOXES, 4), f"give {CHAIN_BOXES} boxes as a ({CHAIN_BOXES}, 4) tensor, got shape {tuple(boxes.shape)}"
        assert scores.shape == (CHAIN_BOXES,), f"give one score per box, shape ({CHAIN_BOXES},), got {tuple(scores.shape)}"
        assert torch.isfinite(boxes).all() and torch.isfinite(scores).all(), "boxes and scores must be finite"
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all(), "each box needs x1 < x2 and y1 < y2"
        assert (boxes >= 0).all(), "keep the boxes at coordinates >= 0, like image boxes"
        greedy = nms(boxes, scores, NMS_THRESH)  # (K,)
        single = one_pass_nms(boxes, scores, NMS_THRESH)  # (K',)
        iou = box_iou(boxes, boxes)  # (5, 5)
        pairs = [(i, j) for i in range(CHAIN_BOXES) for j in range(i + 1, CHAIN_BOXES) if iou[i, j] > NMS_THRESH]
        assert len(greedy) == CHAIN_GREEDY_KEEPS, (
            f"greedy NMS at {NMS_THRESH} keeps {len(greedy)} of your boxes ({sorted(greedy.tolist())}), not "
            f"{CHAIN_GREEDY_KEEPS}; the pairs with IoU > {NMS_THRESH} are {pairs}")
        assert len(single) == CHAIN_ONE_PASS_KEEPS, (
            f"greedy NMS keeps 3, right, but one_pass_nms keeps {len(single)} ({sorted(single.tolist())}), not "
            f"{CHAIN_ONE_PASS_KEEPS}; the pairs with IoU > {NMS_THRESH} are {pairs}")
        passes = got[2]
        assert isinstance(passes, int) and not isinstance(passes, bool), f"passes must be an int, got {passes!r}"
        truth = _fixed_point_passes(boxes, scores, NMS_THRESH)
        assert passes == truth, (f"the boxes are right; the fixed-point loop makes {'more' if truth > passes else 'fewer'} "
                                 f"than {passes} passes on them (count the last one, which only confirms)")

    return run_check("a suppression chain: greedy NMS keeps 3, one pass keeps 1", compare)


# --------------------------------------------------------------------------- exercise 3: a global top-k

def _topk_cases():
    """(objectness (B, A), num_per_level, pre_nms_top_n): logits whose best anchors sit unevenly over the levels."""
    g = torch.Generator().manual_seed(404)
    cases = []
    for num_per_level, pre_n, batch in (([3072, 768, 192, 48, 12], 300, 2), ([40, 10, 5], 8, 3), ([6, 6], 10, 1)):
        # later levels score lower on average, so a global cut takes fewer of them than a per-level cut
        means = torch.linspace(1.0, -3.0, len(num_per_level))
        logits = torch.cat([torch.randn(batch, n, generator=g) * 2 + m for n, m in zip(num_per_level, means)], dim=1)
        cases.append((logits, num_per_level, pre_n))  # (B, A)
    return cases


def check_global_top_k(answer) -> bool:
    """answer(objectness (B, A), num_per_level, pre_nms_top_n) -> (B, K) indices of the K best anchors of each
    image over all levels at once, K = sum_l min(pre_nms_top_n, A_l) (as many as the per-level cut keeps)."""

    def compare():
        need_function(answer)
        for case, (logits, num_per_level, pre_n) in enumerate(_topk_cases()):
            total = sum(min(pre_n, n) for n in num_per_level)
            expected = logits.topk(total, dim=1).indices.sort(dim=1).values  # (B, K)
            got = answer(logits.clone(), list(num_per_level), pre_n)
            assert isinstance(got, torch.Tensor), f"return a tensor of indices, got {type(got).__name__}"
            assert got.shape == expected.shape, (f"case {case}: expected shape {tuple(expected.shape)} (images, "
                                                 f"sum over levels of min({pre_n}, A_l)), got {tuple(got.shape)}")
            mine = got.long().sort(dim=1).values  # (B, K)
            for i in range(len(logits)):
                if not torch.equal(mine[i], expected[i]):
                    missing = sorted(set(expected[i].tolist()) - set(mine[i].tolist()))
                    assert missing, f"case {case}, image {i}: an index appears twice"
                    a = missing[0]
                    level = next(l for l, end in enumerate(torch.tensor(num_per_level).cumsum(0).tolist()) if a < end)
                    raise AssertionError(f"case {case}, image {i}: {len(missing)} of the {total} best anchors are "
                                         f"missing, e.g. anchor {a} (level {level}, logit {logits[i, a]:.2f})")

    return run_check("a global top-k over all levels", compare)
