"""Worked solutions of the exercises of 12_ablations.ipynb (for teachers; tests/test_exercises.py runs them)."""

import math

import torch

from mrcnn_teach.exercises.nb12 import check_mask_logit_shape, check_seeds_needed, check_snap_error


def my_seeds_needed(difference, std, k=2.0):
    """Smallest n with |d| > k * SE, where SE = std * sqrt(2 / n) is the standard error of the difference
    of two means of n runs each (both with the same seed-to-seed std).

    |d| > k s sqrt(2/n)  <=>  n > 2 k^2 s^2 / d^2, so n is the next whole number above 2 k^2 s^2 / d^2.
    """
    return math.floor(2 * k**2 * std**2 / difference**2) + 1


def my_mask_logit_shape(overrides, num_rois, num_classes):
    """(N, K+1, 28, 28) for every variant but the class-agnostic one, which has a single channel.

    The softmax loss and the RoIPool layer change how the logits are trained or where their features come
    from, not how many there are; `num_classes` counts the background (K+1), as in the library.
    """
    channels = 1 if overrides.get("class_agnostic_masks", False) else num_classes
    return (num_rois, channels, 28, 28)


def my_snap_error(boxes, stride):
    """(K, 4) pixels -> (K,): RoIPool snaps each coordinate x to the cell round(x / stride), i.e. to the pixel
    position round(x / stride) * stride; the error is the distance moved, at most stride / 2.

    The direction of rounding at exact halves (torchvision rounds them away from zero) does not change the
    distance: a coordinate halfway between two cells moves by stride / 2 either way.
    """
    cells = boxes / stride  # (K, 4) in feature cells
    snapped = torch.sign(cells) * torch.floor(cells.abs() + 0.5)  # (K, 4) C's round(): halves away from zero
    return ((snapped - cells).abs() * stride).amax(dim=1)  # (K,) in image pixels


CHECKS = [
    (check_seeds_needed, my_seeds_needed),
    (check_mask_logit_shape, my_mask_logit_shape),
    (check_snap_error, my_snap_error),
]


def _seeds_needed_one_sample(difference, std, k=2.0):
    return math.floor(k**2 * std**2 / difference**2) + 1  # forgets that both means are noisy: SE = s / sqrt(n)


def _shape_ignoring_agnostic(overrides, num_rois, num_classes):
    return (num_rois, num_classes, 28, 28)  # every variant with K+1 channels


def _snap_error_with_floor(boxes, stride):
    cells = boxes / stride
    return ((torch.floor(cells) - cells).abs() * stride).amax(dim=1)  # truncation: errors up to a whole cell


WRONG = [
    (check_seeds_needed, _seeds_needed_one_sample),
    (check_mask_logit_shape, _shape_ignoring_agnostic),
    (check_snap_error, _snap_error_with_floor),
]
