"""Label assignment: which ground-truth box does each anchor (or RoI) learn from, and which ones are sampled.

Two small pieces, shared by both stages of Mask R-CNN (He et al. 2017):

* `Matcher` turns an IoU matrix into one label per anchor. The RPN uses it with thresholds 0.7 / 0.3
  and the "low-quality" rule (Faster R-CNN, Ren et al. 2015, Sec. 3.1.2); the box/mask heads use it
  with 0.5 / 0.5 and no such rule (Mask R-CNN Sec. 3.1, "Training").
* `BalancedSampler` picks, per image, a fixed-size random mini-batch with a capped share of positives
  (Faster R-CNN Sec. 3.1.3: 256 anchors, up to half positive; Mask R-CNN: 512 RoIs, 1/4 positive).

A common mix-up (for example in SSD-style write-ups) is that the RPN uses *hard-negative mining*,
keeping the negatives with the highest loss at a 3:1 ratio. It does not: SSD (Liu et al. 2016,
Sec. 2.2) mines hard negatives; Faster R-CNN samples positives and negatives *uniformly at random*.
"""

import torch
from torch import Tensor


class Matcher:
    """Give every anchor the index of its ground-truth box, or a negative code.

    For an IoU matrix `iou` of shape (G, N) — G ground-truth boxes against N anchors — each anchor n
    looks at its best GT, `g* = argmax_g iou[g, n]`, and gets

        g*                       if iou[g*, n] >= high_threshold      (foreground, learns from GT g*)
        BETWEEN_THRESHOLDS (-2)  if low_threshold <= iou < high       (ignored: neither label is safe)
        BELOW_LOW_THRESHOLD (-1) if iou < low_threshold               (background)

    Note the strict `<` for background: the RPN's negatives are anchors with IoU *below* 0.3, not
    "<= 0.3" (Faster R-CNN Sec. 3.1.2; Detectron and torchvision agree).

    The low-quality rule (`allow_low_quality_matches=True`, used by the RPN). Faster R-CNN Sec. 3.1.2
    gives the positive label to anchors with IoU >= 0.7 *and* to "the anchor/anchors with the highest
    IoU overlap with a ground-truth box". Without the second clause a GT box that no anchor covers with
    IoU >= 0.7 — a tiny object, or a very elongated one — would have no positive anchor at all, and the
    RPN would never be taught to propose it. So: for each GT g, take every anchor whose IoU with g equals
    g's maximum IoU (ties included), and give those anchors back their own argmax match g* — which is
    usually g, but is another GT when that anchor overlaps another box even more.

    Edge case inherited from torchvision (kept for equality): a GT that overlaps no anchor has max IoU 0,
    so *every* anchor with IoU 0 to it is "tied best" and is restored to its own argmax (GT 0 when the
    anchor touches no GT at all). Real anchors tile the whole image, so this does not arise in practice.
    """

    BELOW_LOW_THRESHOLD = -1  # background
    BETWEEN_THRESHOLDS = -2  # ignored by the loss

    def __init__(self, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool = False):
        if low_threshold > high_threshold:
            raise ValueError(
                f"Matcher: low_threshold ({low_threshold}) must be <= high_threshold ({high_threshold})"
            )
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, iou: Tensor) -> Tensor:
        """iou (G, N) with G >= 1 GT boxes and N >= 1 anchors -> matched_idxs (N,) int64 in {0..G-1, -1, -2}."""
        if iou.dim() != 2:
            raise ValueError(f"Matcher: expected an IoU matrix of shape (G, N), got shape {tuple(iou.shape)}")
        if iou.shape[0] == 0:
            raise ValueError("Matcher: the IoU matrix has no rows — an image has no ground-truth boxes "
                             "(handle empty images before matching: every anchor is background)")
        if iou.shape[1] == 0:
            raise ValueError("Matcher: the IoU matrix has no columns — there are no anchors/proposals to match")

        best_iou, best_gt = iou.max(dim=0)  # (N,), (N,) int64: each anchor's best GT and its IoU
        below = torch.full_like(best_gt, self.BELOW_LOW_THRESHOLD)  # (N,)
        between = torch.full_like(best_gt, self.BETWEEN_THRESHOLDS)  # (N,)
        matched_idxs = torch.where(best_iou < self.high_threshold, between, best_gt)  # (N,)
        matched_idxs = torch.where(best_iou < self.low_threshold, below, matched_idxs)  # (N,)

        if self.allow_low_quality_matches:
            # Faster R-CNN Sec. 3.1.2, condition (i): each GT's best anchors are positive, whatever their IoU.
            best_iou_per_gt = iou.max(dim=1).values  # (G,)
            is_best_for_a_gt = (iou == best_iou_per_gt[:, None]).any(dim=0)  # (N,) bool, ties included
            matched_idxs = torch.where(is_best_for_a_gt, best_gt, matched_idxs)  # (N,) restore argmax GT
        return matched_idxs


class BalancedSampler:
    """Pick a random, class-balanced mini-batch of anchors (or RoIs) per image.

    Faster R-CNN Sec. 3.1.3: optimising over all ~20k anchors would drown the few positives in easy
    negatives, so each image contributes `batch_size_per_image` anchors (256) of which up to
    `positive_fraction` (1/2) are positive; if an image has fewer positives, negatives fill the rest.
    The choice is uniformly *random* among the candidates — not SSD's hard-negative mining, which sorts
    negatives by their loss. Random sampling needs no ranking by loss, and the negatives it keeps are a
    fair sample of the background (easy and hard alike); the cap on positives balances the two classes.

    labels per image: >= 1 positive, 0 negative, -1 ignored (never sampled).
    RNG draws, per image in order: `torch.randperm(num_positive_candidates)` then
    `torch.randperm(num_negative_candidates)` — exactly torchvision's BalancedPositiveNegativeSampler,
    so that a seeded run of ours and of torchvision pick the same anchors.
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float):
        if batch_size_per_image < 1:
            raise ValueError(f"BalancedSampler: batch_size_per_image must be >= 1, got {batch_size_per_image}")
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(f"BalancedSampler: positive_fraction must be in [0, 1], got {positive_fraction}")
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction

    def __call__(self, labels: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """labels: list of (N_i,) -> (pos_masks, neg_masks), two lists of (N_i,) bool."""
        pos_masks, neg_masks = [], []
        for i, labels_i in enumerate(labels):
            if labels_i.dim() != 1:
                raise ValueError(f"BalancedSampler: labels of image {i} must be 1-D (N,), "
                                 f"got shape {tuple(labels_i.shape)}")
            positive = torch.nonzero(labels_i >= 1).squeeze(1)  # (P,) candidate indices
            negative = torch.nonzero(labels_i == 0).squeeze(1)  # (Q,)

            # Quota: up to positive_fraction of the batch is positive; negatives fill what is left.
            num_pos = min(int(self.batch_size_per_image * self.positive_fraction), positive.numel())
            num_neg = min(self.batch_size_per_image - num_pos, negative.numel())

            # A random permutation, cut to the quota = a uniform sample without replacement.
            pos_pick = positive[torch.randperm(positive.numel(), device=labels_i.device)[:num_pos]]  # (num_pos,)
            neg_pick = negative[torch.randperm(negative.numel(), device=labels_i.device)[:num_neg]]  # (num_neg,)

            pos_mask = torch.zeros_like(labels_i, dtype=torch.bool)  # (N_i,)
            neg_mask = torch.zeros_like(labels_i, dtype=torch.bool)  # (N_i,)
            pos_mask[pos_pick] = True
            neg_mask[neg_pick] = True
            pos_masks.append(pos_mask)
            neg_masks.append(neg_mask)
        return pos_masks, neg_masks
