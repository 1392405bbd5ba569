"""Worked solutions of the exercises of 09_training.ipynb (for teachers; tests/test_exercises.py runs them)."""

import bisect
import math

import torch

from mrcnn_teach.exercises.nb09 import check_box_loss_per_positive, check_clip, check_jitter_boxes, check_run_lr


def my_lr(step, num_images, world_size, cfg):
    """The rate SGD uses at optimizer step `step` (0-based) of a run without a time budget."""
    base_lr = cfg.lr if cfg.lr_batch is None else cfg.lr * world_size * cfg.batch_size / cfg.lr_batch  # linear scaling
    per_process = math.ceil(num_images / world_size)  # DistributedSampler pads every shard to the same size
    total_steps = cfg.epochs * math.ceil(per_process / cfg.batch_size)  # the last batch may be short
    factor = 1.0
    if step < cfg.warmup_steps:  # linear ramp from warmup_factor (step 0) towards 1 (reached at step W)
        factor = cfg.warmup_factor + (1.0 - cfg.warmup_factor) * step / cfg.warmup_steps
    milestone_steps = [round(f * total_steps) for f in cfg.milestones]  # e.g. 0.75 * 3000 -> 2250
    passed = bisect.bisect_right(milestone_steps, step)  # milestones m with m <= step: the decay starts AT m
    return base_lr * factor * cfg.gamma ** passed


# With the first case (COCO train2017, 118,287 images, 8 GPUs x 2): 7,393 steps per epoch, 12 epochs =
# 88,716 steps; lr 0.02 x 16 / 16 = 0.02; the decays at round(8/12 x 88,716) = 59,144 and 81,323.


def my_clip_grad_norm(parameters, max_norm):
    """One global norm over all gradients; if it is above max_norm, every gradient times max_norm / norm."""
    grads = [p.grad for p in parameters if p.grad is not None]  # a frozen tensor has none
    total_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))  # ()
    clip_coef = max_norm / (total_norm + 1e-6)  # torch adds 1e-6 too
    if clip_coef < 1:  # only ever shrink: a small gradient is left as it is
        for g in grads:
            g.mul_(clip_coef)
    return total_norm


def my_per_positive(history, window):
    """loss_box_reg is summed over the positives and divided by ALL sampled RoIs: undo that division,
    then pool each window (total error / total positives), so that every positive RoI weighs the same."""
    values = []
    for start in range(0, len(history), window):
        rows = history[start:start + window]  # the last window may be shorter
        error = sum(r["loss_box_reg"] * r["sampled"] for r in rows)  # summed smooth-L1 over the positives
        values.append(error / sum(r["positives"] for r in rows))
    return values


def my_jitter_boxes(boxes, image_size, scale, offset):
    """x' = s_x x - left, y' = s_y y - top with the scale actually applied, clipped to the window; empty ones dropped."""
    h, w = image_size
    top, left = offset
    sx, sy = max(1, round(w * scale)) / w, max(1, round(h * scale)) / h  # the resized image has whole pixels
    moved = boxes * torch.tensor([sx, sy, sx, sy]) - torch.tensor([left, top, left, top])  # (N, 4)
    moved[:, 0::2] = moved[:, 0::2].clamp(0, w)  # the window is the image's own size
    moved[:, 1::2] = moved[:, 1::2].clamp(0, h)
    keep = (moved[:, 2] > moved[:, 0]) & (moved[:, 3] > moved[:, 1])  # (N,)
    return moved[keep]


CHECKS = [
    (check_run_lr, my_lr),
    (check_clip, my_clip_grad_norm),
    (check_box_loss_per_positive, my_per_positive),
    (check_jitter_boxes, my_jitter_boxes),
]


def _lr_without_scaling(step, num_images, world_size, cfg):
    # the preset's lr used as given: right on one GPU when lr_batch is the batch, 8x off elsewhere
    per_process = math.ceil(num_images / world_size)
    total_steps = cfg.epochs * math.ceil(per_process / cfg.batch_size)
    factor = cfg.warmup_factor + (1 - cfg.warmup_factor) * step / cfg.warmup_steps if step < cfg.warmup_steps else 1.0
    return cfg.lr * factor * cfg.gamma ** bisect.bisect_right([round(f * total_steps) for f in cfg.milestones], step)


def _lr_dropping_the_last_batch(step, num_images, world_size, cfg):
    # num_images // total batch steps per epoch: the milestones land early
    base_lr = cfg.lr if cfg.lr_batch is None else cfg.lr * world_size * cfg.batch_size / cfg.lr_batch
    total_steps = cfg.epochs * (num_images // (cfg.batch_size * world_size))
    factor = cfg.warmup_factor + (1 - cfg.warmup_factor) * step / cfg.warmup_steps if step < cfg.warmup_steps else 1.0
    return base_lr * factor * cfg.gamma ** bisect.bisect_right([round(f * total_steps) for f in cfg.milestones], step)


def buggy_clip_grad_norm(parameters, max_norm):
    """The notebook's buggy copy: each tensor clipped by its own norm."""
    norms = []
    for p in parameters:
        if p.grad is None:
            continue
        norm = p.grad.norm()
        norms.append(norm)
        if norm > max_norm:
            p.grad.mul_(max_norm / norm)
    return torch.stack(norms).norm()


def _clip_that_also_scales_up(parameters, max_norm):
    # every gradient set to length max_norm, also the small ones
    grads = [p.grad for p in parameters if p.grad is not None]
    total_norm = torch.stack([g.norm() for g in grads]).norm()
    for g in grads:
        g.mul_(max_norm / total_norm)
    return total_norm


def _per_positive_forgetting_the_sampled(history, window):
    # divides by the positives but never undoes the division by all sampled RoIs
    return [sum(r["loss_box_reg"] for r in history[a:a + window]) / sum(r["positives"] for r in history[a:a + window])
            for a in range(0, len(history), window)]


def _per_positive_mean_of_ratios(history, window):
    # every step weighs the same: a step with 5 positives counts as much as one with 60
    # (and a step without positives divides by zero)
    per_step = [r["loss_box_reg"] * r["sampled"] / r["positives"] for r in history]
    return [sum(per_step[a:a + window]) / len(per_step[a:a + window]) for a in range(0, len(history), window)]


def _per_positive_dropping_the_short_window(history, window):
    # only whole windows
    whole = len(history) // window * window
    return [sum(r["loss_box_reg"] * r["sampled"] for r in history[a:a + window])
            / sum(r["positives"] for r in history[a:a + window]) for a in range(0, whole, window)]


def _jitter_with_the_asked_scale(boxes, image_size, scale, offset):
    # s instead of round(H * s) / H: off by a fraction of a pixel when H * s is not whole
    h, w = image_size
    top, left = offset
    moved = boxes * scale - torch.tensor([left, top, left, top])
    moved[:, 0::2], moved[:, 1::2] = moved[:, 0::2].clamp(0, w), moved[:, 1::2].clamp(0, h)
    return moved[(moved[:, 2] > moved[:, 0]) & (moved[:, 3] > moved[:, 1])]


def _jitter_keeping_empty_boxes(boxes, image_size, scale, offset):
    h, w = image_size
    top, left = offset
    sx, sy = round(w * scale) / w, round(h * scale) / h
    moved = boxes * torch.tensor([sx, sy, sx, sy]) - torch.tensor([left, top, left, top])
    moved[:, 0::2], moved[:, 1::2] = moved[:, 0::2].clamp(0, w), moved[:, 1::2].clamp(0, h)
    return moved  # a box pushed out of the window stays, squashed to zero width


WRONG = [
    (check_run_lr, _lr_without_scaling),
    (check_run_lr, _lr_dropping_the_last_batch),
    (check_clip, buggy_clip_grad_norm),
    (check_clip, _clip_that_also_scales_up),
    (check_box_loss_per_positive, _per_positive_forgetting_the_sampled),
    (check_box_loss_per_positive, _per_positive_mean_of_ratios),
    (check_box_loss_per_positive, _per_positive_dropping_the_short_window),
    (check_jitter_boxes, _jitter_with_the_asked_scale),
    (check_jitter_boxes, _jitter_keeping_empty_boxes),
]
