"""Worked solutions of the exercises in 04_rpn.ipynb (for teachers; tests/test_exercises.py runs them)."""

import torch

from mrcnn_teach.exercises.nb04 import check_anchor_labels, check_global_top_k, check_suppression_chain


# 1. Labels by hand ---------------------------------------------------------------------------------------
def my_labels():
    """-> (labels of a0..a7: 1 / 0 / -1, the box each anchor learns from or -1, the boxes no anchor learns from)."""
    # a0: 0.70 is >= 0.7: positive (torchvision's >=; the paper's "higher than 0.7" would leave it ignored).
    # a1: 0.82, positive, box 0.                a2: exactly 0.30 is not below 0.3: ignored.
    # a3: 0.29 with every box: negative.         a4, a5: tied best (0.55) of box 1: both positive, box 1.
    # a6: the best anchor of box 2 (0.45), so positive -- but it learns from its own best box, box 0 (0.60).
    # a7: 0.69 with box 0 is between the thresholds and no box's best: ignored.
    # Box 2 therefore has no anchor that learns from it: the best-anchor rule does not guarantee one.
    labels = [1, 1, -1, 0, 1, 1, 1, -1]
    learns_from = [0, 0, -1, -1, 1, 1, 0, -1]
    orphans = [2]
    return labels, learns_from, orphans


# 2. A suppression chain ----------------------------------------------------------------------------------
def my_chain():
    """-> (boxes (5, 4), scores (5,), passes): each box overlaps the next by more than 0.7, the one after by less."""
    # Boxes 10 px wide, shifted by 1 px: IoU with the next is 9/11 = 0.82 (> 0.7), with the one after
    # 8/12 = 0.67 (< 0.7). Greedy keeps 0 (drops 1), keeps 2 (drops 3), keeps 4: three boxes. One pass
    # drops every box that has any higher-scoring neighbour above 0.7: only box 0 stays.
    x = torch.arange(5.0)  # (5,)
    boxes = torch.stack([x, torch.zeros(5), x + 10, torch.full((5,), 10.0)], dim=1)  # (5, 4)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])  # (5,) in chain order
    # keep after each pass: {0} -> {0, 2, 3, 4} -> {0, 2} -> {0, 2, 4} -> {0, 2, 4} (repeats: stop) = 5 passes,
    # the chain's length (4 links) + 1.
    return boxes, scores, 5


# 3. A global top-k ---------------------------------------------------------------------------------------
def my_global_top_k(objectness, num_per_level, pre_nms_top_n):
    """(B, A) logits -> (B, K) indices of the K best anchors over all levels, K = sum_l min(pre_nms_top_n, A_l)."""
    total = sum(min(pre_nms_top_n, n) for n in num_per_level)
    return objectness.topk(total, dim=1).indices  # (B, K)
    # Measured with the cached model (section 8's by-hand cell with this function in place of the per-level
    # cut): on section 8's image the global cut takes 558 / 180 / 86 / 16 / 12 candidates from P2..P6 where the
    # per-level cut takes 300 / 300 / 192 / 48 / 12; over the 50 held-out images, on average 481 / 267 / 76 /
    # 17 / 12. The trap: no level loses all its candidates. The negatives-only levels P5 and P6 score about
    # 0.01 (section 2), low but above the thousands of P2/P3 anchors on plain background that the head is
    # surest of, so the cut falls among those, and P3 and P4 give up the most. The final 100 have the same
    # counts per level (61 / 24 / 15 / 0 / 0 on that image) and cover the same objects at IoU 0.5 (all 126 of the 50
    # images): on this data the choice does not matter. On COCO,
    # where P5/P6 anchors do match large objects, the per-level cut keeps the few large-anchor candidates
    # from being crowded out by thousands of small-anchor ones (FPN / Detectron's choice, and torchvision's).


CHECKS = [
    (check_anchor_labels, my_labels),
    (check_suppression_chain, my_chain),
    (check_global_top_k, my_global_top_k),
]


# Plausible mistakes, each of which its check must reject --------------------------------------------------
def labels_paper_strict():  # "higher than 0.7" read as a strict >: a0 (exactly 0.70) is then ignored
    labels, learns_from, orphans = my_labels()
    return [-1, *labels[1:]], [-1, *learns_from[1:]], orphans


def labels_negative_at_or_below():  # "IoU <= 0.3" for the negatives: a2 (exactly 0.30) becomes negative
    labels, learns_from, orphans = my_labels()
    return labels[:2] + [0] + labels[3:], learns_from, orphans


def labels_best_anchor_learns_from_the_box_it_is_best_for():  # a6 learning from box 2: then no orphan
    labels, learns_from, _ = my_labels()
    return labels, learns_from[:6] + [2] + learns_from[7:], []


def labels_one_winner_per_tie():  # only the first of two tied best anchors made positive
    labels, learns_from, orphans = my_labels()
    return labels[:5] + [-1] + labels[6:], learns_from[:5] + [-1] + learns_from[6:], orphans


def chain_two_apart():  # 2-px steps: IoU 8/12 = 0.67 between neighbours, so nothing suppresses anything
    _, scores, _ = my_chain()
    x = 2 * torch.arange(5.0)  # (5,)
    return torch.stack([x, torch.zeros(5), x + 10, torch.full((5,), 10.0)], dim=1), scores, 1


def chain_passes_without_the_last():  # the right boxes, but the confirming pass not counted
    boxes, scores, passes = my_chain()
    return boxes, scores, passes - 1


def global_top_k_too_few(objectness, num_per_level, pre_nms_top_n):  # one level's worth instead of the total
    return objectness.topk(min(pre_nms_top_n, objectness.shape[1]), dim=1).indices


def global_top_k_per_level(objectness, num_per_level, pre_nms_top_n):  # the library's per-level cut again
    out, start = [], 0
    for n in num_per_level:
        out.append(objectness[:, start:start + n].topk(min(pre_nms_top_n, n), dim=1).indices + start)
        start += n
    return torch.cat(out, dim=1)


def global_top_k_lowest(objectness, num_per_level, pre_nms_top_n):  # largest=False: the worst anchors
    total = sum(min(pre_nms_top_n, n) for n in num_per_level)
    return objectness.topk(total, dim=1, largest=False).indices


WRONG = [
    (check_anchor_labels, labels_paper_strict),
    (check_anchor_labels, labels_negative_at_or_below),
    (check_anchor_labels, labels_best_anchor_learns_from_the_box_it_is_best_for),
    (check_anchor_labels, labels_one_winner_per_tie),
    (check_suppression_chain, chain_two_apart),
    (check_suppression_chain, chain_passes_without_the_last),
    (check_global_top_k, global_top_k_too_few),
    (check_global_top_k, global_top_k_per_level),
    (check_global_top_k, global_top_k_lowest),
    (check_anchor_labels, None),
]
