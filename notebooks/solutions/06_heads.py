"""Worked solutions of the exercises of 06_heads.ipynb (for teachers; tests/test_exercises.py runs them)."""

import math

import torch

from mrcnn_teach.exercises.nb06 import check_box_loss_gradient, check_levels_at_low_scale, check_sample_counts


def my_levels_at_low_scale():
    """k = floor(4 + log2(side / 32)), clamped to 2..5, worked by hand:
    8 -> 4 - 2 = 2;  16 -> 4 - 1 = 3 exactly (the eps keeps it at 3);  23 -> 4 + log2(0.72) = 3.5 -> 3;
    31 -> 3.95 -> 3;  45 -> 4.49 -> 4;  64 -> 5 exactly;  90 -> 5.49 -> 5.
    Our GT boxes (median ~31 px) would spread over P2-P5 instead of all sitting on P2."""
    return [2, 3, 3, 3, 4, 5, 5]


def my_sample_counts(num_positive, num_negative, batch_size, positive_fraction):
    """The quota: up to batch*fraction positives (fewer if there are fewer), negatives fill the rest."""
    num_pos = min(int(batch_size * positive_fraction), num_positive)
    num_neg = min(batch_size - num_pos, num_negative)
    return num_pos, num_neg


def my_box_loss_gradient(box_deltas, labels, regression_targets):
    """L_box = sum over positives of smooth-L1(d - t) / N. smooth-L1' is (d - t) / beta inside beta, +-1
    beyond: so the gradient is clamp((d - t) / beta, -1, 1) / N in the GT class's block of each positive,
    zero everywhere else (background block, other classes, every negative RoI)."""
    beta = 1 / 9
    N = box_deltas.shape[0]
    grad = torch.zeros_like(box_deltas).reshape(N, -1, 4)  # (N, K+1, 4)
    positive = torch.nonzero(labels > 0).squeeze(1)  # (P,)
    error = box_deltas.reshape(N, -1, 4)[positive, labels[positive]] - regression_targets[positive]  # (P, 4)
    grad[positive, labels[positive]] = (error / beta).clamp(-1, 1) / N  # (P, 4)
    return grad.reshape(N, -1)  # (N, (K+1)*4)


CHECKS = [
    (check_levels_at_low_scale, my_levels_at_low_scale),
    (check_sample_counts, my_sample_counts),
    (check_box_loss_gradient, my_box_loss_gradient),
]


def _levels_without_floor_eps():
    # round-off on the boundaries (16 and 64 px) floored to the level below: what the eps prevents
    return [min(5, max(2, math.floor(4 + math.log2(s / 32) - 1e-9))) for s in (8, 16, 23, 31, 45, 64, 90)]


def _levels_rounded():
    return [min(5, max(2, round(4 + math.log2(s / 32)))) for s in (8, 16, 23, 31, 45, 64, 90)]  # round, not floor


def _fixed_quota(num_positive, num_negative, batch_size, positive_fraction):
    num_pos = min(int(batch_size * positive_fraction), num_positive)
    return num_pos, batch_size - int(batch_size * positive_fraction)  # negatives do not fill the gap


def _grad_over_positives(box_deltas, labels, regression_targets):
    P = max(int((labels > 0).sum()), 1)
    return my_box_loss_gradient(box_deltas, labels, regression_targets) * box_deltas.shape[0] / P  # divides by P, not N


def _grad_sign_only(box_deltas, labels, regression_targets):
    grad = my_box_loss_gradient(box_deltas, labels, regression_targets)
    return torch.sign(grad) / box_deltas.shape[0]  # forgets the quadratic part inside beta


WRONG = [
    (check_levels_at_low_scale, _levels_without_floor_eps),
    (check_levels_at_low_scale, _levels_rounded),
    (check_sample_counts, _fixed_quota),
    (check_box_loss_gradient, _grad_over_positives),
    (check_box_loss_gradient, _grad_sign_only),
]
