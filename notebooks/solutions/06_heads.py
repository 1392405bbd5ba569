"""Worked solutions of the exercises of 06_heads.ipynb (for teachers; tests/test_exercises.py runs them)."""

import torch

from mrcnn_teach.exercises.nb06 import check_assign_levels, check_gt_class_deltas, check_sample_counts


def my_assign_levels(boxes):
    """FPN Eq. 1: k = floor(4 + log2(sqrt(wh) / 224)), clamped to 2..5. boxes (N, 4) -> (N,) int64."""
    w = boxes[:, 2] - boxes[:, 0]  # (N,)
    h = boxes[:, 3] - boxes[:, 1]  # (N,)
    k = torch.floor(4 + torch.log2(torch.sqrt(w * h) / 224) + 1e-6)  # (N,) the eps guards exact boundaries
    return k.clamp(2, 5).to(torch.int64)  # (N,)


def my_gt_class_deltas(box_deltas, labels):
    """(N, (K+1)*4), (N,) -> (P, 4): for each positive RoI, the four deltas of its own class."""
    per_class = box_deltas.reshape(box_deltas.shape[0], -1, 4)  # (N, K+1, 4)
    positive = torch.nonzero(labels > 0).squeeze(1)  # (P,)
    return per_class[positive, labels[positive]]  # (P, 4) one (row, class) pair per positive


def my_sample_counts(num_positive, num_negative, batch_size, positive_fraction):
    """The quota: up to batch*fraction positives (fewer if there are fewer), negatives fill the rest."""
    num_pos = min(int(batch_size * positive_fraction), num_positive)
    num_neg = min(batch_size - num_pos, num_negative)
    return num_pos, num_neg


CHECKS = [
    (check_assign_levels, my_assign_levels),
    (check_gt_class_deltas, my_gt_class_deltas),
    (check_sample_counts, my_sample_counts),
]


def _levels_without_clamp(boxes):
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return torch.floor(4 + torch.log2(torch.sqrt(w * h) / 224) + 1e-6).to(torch.int64)  # forgets the clamp


def _levels_as_index(boxes):
    return my_assign_levels(boxes) - 2  # the library's index 0..3 instead of the level


def _background_deltas(box_deltas, labels):
    return box_deltas[labels > 0, :4]  # always the first block: the background's deltas


def _fixed_quota(num_positive, num_negative, batch_size, positive_fraction):
    num_pos = min(int(batch_size * positive_fraction), num_positive)
    return num_pos, batch_size - int(batch_size * positive_fraction)  # negatives do not fill the gap


WRONG = [
    (check_assign_levels, _levels_without_clamp),
    (check_assign_levels, _levels_as_index),
    (check_gt_class_deltas, _background_deltas),
    (check_sample_counts, _fixed_quota),
]
