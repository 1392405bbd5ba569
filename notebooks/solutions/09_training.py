"""Worked solutions of the exercises of 09_training.ipynb (for teachers; tests/test_exercises.py runs them)."""

import bisect
import math

import torch

from mrcnn_teach.exercises.nb09 import check_jitter_boxes, check_lr, check_steps_per_epoch, check_training_step


def my_lr(step, base_lr, total_steps, warmup_steps, warmup_factor, milestones, gamma):
    """The learning rate SGD uses at optimizer step `step` (0-based): warm-up ramp times step decay."""
    factor = 1.0
    if step < warmup_steps:  # linear ramp from warmup_factor (step 0) towards 1 (reached at step W)
        factor = warmup_factor + (1.0 - warmup_factor) * step / warmup_steps
    milestone_steps = [round(f * total_steps) for f in milestones]  # e.g. 0.75 * 3000 -> 2250
    passed = bisect.bisect_right(milestone_steps, step)  # milestones m with m <= step: the decay starts AT m
    return base_lr * factor * gamma ** passed


def my_training_step(model, optimizer, images, targets, grad_clip):
    """Forward, L = sum of the five losses, backward, clip the global gradient norm, SGD step."""
    loss_dict = model(images, targets)  # {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", ...}
    loss = sum(loss_dict.values())  # ()
    optimizer.zero_grad()  # otherwise the new gradients are added to the last step's
    loss.backward()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    torch.nn.utils.clip_grad_norm_(params, grad_clip)  # rescale all gradients together if ||g|| > grad_clip
    optimizer.step()
    return loss_dict


def my_steps_per_epoch(num_images, batch_size, world_size):
    """Each process gets ceil(N / world_size) images (DistributedSampler pads), in batches; the last may be short."""
    per_process = math.ceil(num_images / world_size)
    return math.ceil(per_process / batch_size)


# The question after it: COCO train2017 on 8 GPUs x 2 images is my_steps_per_epoch(118287, 2, 8) = 7393 steps
# per epoch, so the paper's 160k iterations are about 160000 / 7393 = 21.6 epochs (the paper trained on
# trainval35k, about 115k images: the same order), and its decay at 120k comes after about 16 epochs.


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
    (check_lr, my_lr),
    (check_training_step, my_training_step),
    (check_steps_per_epoch, my_steps_per_epoch),
    (check_jitter_boxes, my_jitter_boxes),
]


def _lr_decay_after_milestone(step, base_lr, total_steps, warmup_steps, warmup_factor, milestones, gamma):
    # `<` instead of `<=`: the decay starts one step late
    lr = my_lr(step, base_lr, total_steps, warmup_steps, warmup_factor, milestones, gamma)
    at_milestone = sum(step == round(f * total_steps) for f in milestones)
    return lr / gamma ** at_milestone


def _step_without_clipping(model, optimizer, images, targets, grad_clip):
    loss_dict = model(images, targets)
    optimizer.zero_grad()
    sum(loss_dict.values()).backward()
    optimizer.step()
    return loss_dict


def _step_without_zero_grad(model, optimizer, images, targets, grad_clip):
    loss_dict = model(images, targets)
    sum(loss_dict.values()).backward()  # adds onto the gradients of the previous step
    params = [p for group in optimizer.param_groups for p in group["params"]]
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    return loss_dict


def _steps_dropping_the_last_batch(num_images, batch_size, world_size):
    return num_images // (batch_size * world_size)


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
    (check_jitter_boxes, _jitter_with_the_asked_scale),
    (check_jitter_boxes, _jitter_keeping_empty_boxes),
    (check_lr, _lr_decay_after_milestone),
    (check_training_step, _step_without_clipping),
    (check_training_step, _step_without_zero_grad),
    (check_steps_per_epoch, _steps_dropping_the_last_batch),
]
