"""Worked solutions of the exercises in 04_rpn.ipynb (for teachers; tests/test_exercises.py runs them)."""

import torch
import torch.nn.functional as F

from mrcnn_teach.exercises.nb04 import check_box_encoding, check_rpn_labels, check_rpn_losses


# 1. Label the anchors ------------------------------------------------------------------------------------
def my_rpn_labels(iou):
    """iou (G, N) -> (N,) labels: 1 positive, 0 negative, -1 ignored (Faster R-CNN Sec. 3.1.2)."""
    best_iou = iou.max(dim=0).values  # (N,) each anchor's best IoU over the boxes
    labels = torch.full_like(best_iou, -1.0)  # (N,) ignored unless a rule below says otherwise
    labels[best_iou < 0.3] = 0.0  # negative: below 0.3 with EVERY box (strict <)
    labels[best_iou >= 0.7] = 1.0  # positive: 0.7 or more with some box
    # Low-quality rule: each box's best anchor(s) are positive whatever their IoU (ties included).
    best_per_box = iou.max(dim=1, keepdim=True).values  # (G, 1)
    labels[(iou == best_per_box).any(dim=0)] = 1.0
    return labels


# 2. Encode boxes -----------------------------------------------------------------------------------------
def my_encode(boxes, anchors):
    """(N, 4) boxes and anchors as x1y1x2y2 -> (N, 4) deltas between CENTRES, log size ratios."""
    w_a, h_a = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]  # (N,) each
    x_a, y_a = anchors[:, 0] + 0.5 * w_a, anchors[:, 1] + 0.5 * h_a  # (N,) anchor centres
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]  # (N,)
    x, y = boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h  # (N,) box centres
    return torch.stack([(x - x_a) / w_a, (y - y_a) / h_a, torch.log(w / w_a), torch.log(h / h_a)], dim=1)


# 3. The RPN losses ---------------------------------------------------------------------------------------
def my_rpn_losses(objectness, deltas, labels, regression_targets, pos_mask, neg_mask):
    """BCE averaged over the sampled anchors; smooth-L1 (beta 1/9) summed over the positives / number sampled."""
    sampled = pos_mask | neg_mask  # (A,)
    loss_objectness = F.binary_cross_entropy_with_logits(objectness[sampled], labels[sampled])
    box_sum = F.smooth_l1_loss(deltas[pos_mask], regression_targets[pos_mask], beta=1 / 9, reduction="sum")
    return loss_objectness, box_sum / sampled.sum()
    # Dividing by the 20 positives instead of the 128 sampled anchors makes loss_box 128 / 20 = 6.4 x larger.


CHECKS = [
    (check_rpn_labels, my_rpn_labels),
    (check_box_encoding, my_encode),
    (check_rpn_losses, my_rpn_losses),
]


# Plausible mistakes, each of which its check must reject --------------------------------------------------
def labels_without_low_quality_rule(iou):
    best_iou = iou.max(dim=0).values
    labels = torch.full_like(best_iou, -1.0)
    labels[best_iou < 0.3] = 0.0
    labels[best_iou >= 0.7] = 1.0
    return labels


def labels_with_negatives_at_or_below(iou):  # the seed's "IoU <= 0.3"
    labels = my_rpn_labels(iou)
    labels[(iou.max(dim=0).values <= 0.3) & (labels != 1)] = 0.0
    return labels


def encode_from_corners(boxes, anchors):  # offsets between top-left corners, not centres
    w_a, h_a = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return torch.stack([(boxes[:, 0] - anchors[:, 0]) / w_a, (boxes[:, 1] - anchors[:, 1]) / h_a,
                        torch.log(w / w_a), torch.log(h / h_a)], dim=1)


def losses_box_over_positives(objectness, deltas, labels, regression_targets, pos_mask, neg_mask):
    loss_objectness, box = my_rpn_losses(objectness, deltas, labels, regression_targets, pos_mask, neg_mask)
    return loss_objectness, box * (pos_mask | neg_mask).sum() / pos_mask.sum()


def losses_bce_over_all_labelled(objectness, deltas, labels, regression_targets, pos_mask, neg_mask):
    keep = labels >= 0  # every labelled anchor instead of the sample
    _, box = my_rpn_losses(objectness, deltas, labels, regression_targets, pos_mask, neg_mask)
    return F.binary_cross_entropy_with_logits(objectness[keep], labels[keep]), box


WRONG = [
    (check_rpn_labels, labels_without_low_quality_rule),
    (check_rpn_labels, labels_with_negatives_at_or_below),
    (check_box_encoding, encode_from_corners),
    (check_rpn_losses, losses_box_over_positives),
    (check_rpn_losses, losses_bce_over_all_labelled),
    (check_rpn_labels, None),
]
