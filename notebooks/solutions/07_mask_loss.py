"""Worked solutions of the exercises of 07_mask_loss.ipynb (for teachers; tests/test_exercises.py runs them)."""

import torch
from torch.nn import functional as F

from mrcnn_teach.exercises.nb07 import check_bce_gradient, check_mask_loss, check_softmax_gradient


def my_mask_loss(mask_logits, labels, targets):
    """(P, C, m, m), (P,), (P, m, m) -> (): mean BCE on the GT class's channel (channel 0 if C == 1)."""
    channel = torch.zeros_like(labels) if mask_logits.shape[1] == 1 else labels  # (P,)
    x = mask_logits[torch.arange(len(labels)), channel]  # (P, m, m)
    p = torch.sigmoid(x)  # (P, m, m)
    # The textbook formula; F.binary_cross_entropy_with_logits computes the same, more stably.
    return -(targets * torch.log(p) + (1 - targets) * torch.log(1 - p)).mean()  # ()


def my_bce_gradient(mask_logits, labels, targets):
    """d L_mask / d x: (sigmoid(x_k) - y) / (P m^2) on the GT channel k, exactly 0 on every other channel."""
    P, _, m, _ = mask_logits.shape
    grad = torch.zeros_like(mask_logits)  # (P, K+1, m, m)
    rows = torch.arange(P)
    grad[rows, labels] = (torch.sigmoid(mask_logits[rows, labels]) - targets) / (P * m * m)  # (P, m, m)
    return grad


def my_softmax_gradient(mask_logits, labels, targets):
    """d L / d x for the per-pixel softmax CE: (softmax(x) - one_hot(class map)) / (P m^2), on every channel."""
    P, num_classes, m, _ = mask_logits.shape
    class_map = torch.where(targets >= 0.5, labels[:, None, None], 0)  # (P, m, m)
    one_hot = F.one_hot(class_map, num_classes).permute(0, 3, 1, 2).to(mask_logits.dtype)  # (P, K+1, m, m)
    return (mask_logits.softmax(dim=1) - one_hot) / (P * m * m)  # (P, K+1, m, m)


CHECKS = [
    (check_mask_loss, my_mask_loss),
    (check_bce_gradient, my_bce_gradient),
    (check_softmax_gradient, my_softmax_gradient),
]


def _loss_on_all_channels(mask_logits, labels, targets):
    # BCE against every channel: trains all K+1 masks towards the same target (not the paper's loss)
    return F.binary_cross_entropy_with_logits(mask_logits, targets[:, None].expand_as(mask_logits))


def _loss_without_agnostic_case(mask_logits, labels, targets):
    return F.binary_cross_entropy_with_logits(mask_logits[torch.arange(len(labels)), labels], targets)


def _bce_gradient_summed(mask_logits, labels, targets):
    return my_bce_gradient(mask_logits, labels, targets) * mask_logits.shape[-1] ** 2  # forgets the mean over pixels


def _softmax_gradient_gt_channel_only(mask_logits, labels, targets):
    full = my_softmax_gradient(mask_logits, labels, targets)
    keep = torch.zeros_like(full)
    rows = torch.arange(len(labels))
    keep[rows, labels] = full[rows, labels]  # as if the softmax only touched the GT channel
    return keep


WRONG = [
    (check_mask_loss, _loss_on_all_channels),
    (check_mask_loss, _loss_without_agnostic_case),
    (check_bce_gradient, _bce_gradient_summed),
    (check_softmax_gradient, _softmax_gradient_gt_channel_only),
]
