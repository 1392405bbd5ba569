"""Checks for the exercises of notebooks/09_training.ipynb (the learning rate of a run at step s, a buggy
gradient clip, the box loss per positive RoI, scale jitter of boxes)."""

from __future__ import annotations

import math

import torch

from . import need_function, refuse_names, run_check


# (num_images, world_size, TrainConfig fields): COCO train2017 on 8 GPUs x 2 (the paper's batch of 16),
# the shapes_tiny preset on one process, and a run whose shards need padding (DistributedSampler).
_LR_CASES = [
    (118287, 8, dict(batch_size=2, epochs=12, lr=0.02, lr_batch=16, warmup_steps=1000, warmup_factor=0.001,
                     milestones=(8 / 12, 11 / 12), gamma=0.1)),
    (2000, 1, dict(batch_size=8, epochs=12, lr=0.02, lr_batch=8, warmup_steps=100, warmup_factor=0.001,
                   milestones=(0.75, 0.9), gamma=0.1)),
    (1001, 3, dict(batch_size=4, epochs=2, lr=0.02, lr_batch=16, warmup_steps=10, warmup_factor=0.1,
                   milestones=(0.5,), gamma=0.1)),
]
# Hidden: lr_batch None (the rate as given), no warm-up, gamma 0.5, a last batch that is short on 2 GPUs.
_LR_HIDDEN = [
    (500, 2, dict(batch_size=3, epochs=3, lr=0.05, lr_batch=None, warmup_steps=7, warmup_factor=0.2,
                  milestones=(0.6, 0.85), gamma=0.5)),
    (77, 1, dict(batch_size=5, epochs=4, lr=0.01, lr_batch=10, warmup_steps=0, warmup_factor=0.001,
                 milestones=(0.7,), gamma=0.1)),
    (10000, 4, dict(batch_size=2, epochs=1, lr=0.02, lr_batch=16, warmup_steps=200, warmup_factor=0.01,
                    milestones=(0.62, 0.83, 0.95), gamma=0.2)),
]


def check_run_lr(my_lr, hidden=False) -> bool:
    """my_lr(step, num_images, world_size, cfg) -> the rate SGD uses at optimizer step `step` (0-based) of
    a run without a time budget: the linear scaling rule, steps per epoch with DistributedSampler's
    padding, milestones at round(fraction * total steps), the warm-up ramp."""
    from ..train_config import TrainConfig, WarmupStepDecay, scaled_lr
    from ..train_data import steps_per_epoch

    def compare():
        need_function(my_lr)
        refuse_names(my_lr, {"WarmupStepDecay", "scaled_lr", "steps_per_epoch", "build_scheduler", "LambdaLR",
                             "Trainer", "build_optimizer", "DistributedSampler"},
                     "the library computes the answer; work it out yourself")
        for num_images, world_size, fields in (_LR_HIDDEN if hidden else _LR_CASES):
            cfg = TrainConfig(max_minutes=None, **fields)
            total = cfg.epochs * steps_per_epoch(num_images, cfg, world_size)
            schedule = WarmupStepDecay(total, cfg.warmup_steps, cfg.warmup_factor, cfg.milestones, cfg.gamma)
            edges = [0, 1, cfg.warmup_steps - 1, cfg.warmup_steps, cfg.warmup_steps + 1, total - 1]
            edges += [m + d for m in schedule.milestone_steps for d in (-1, 0, 1)]
            for step in sorted({s for s in edges + list(range(0, total, max(1, total // 23))) if 0 <= s < total}):
                expected = scaled_lr(cfg, world_size) * schedule(step)
                got = my_lr(step, num_images, world_size, cfg)
                assert got is not None, "your function returned None"
                assert math.isclose(float(got), expected, rel_tol=1e-9, abs_tol=1e-15), (
                    f"{num_images} images on {world_size} process(es) x {cfg.batch_size}, {cfg.epochs} epochs, "
                    f"lr {cfg.lr} for {cfg.lr_batch} images: at step {step} expected {expected:.6g}, "
                    f"got {float(got):.6g}")

    return run_check("the learning rate of a run at step s", compare, hidden=hidden)


def _clip_cases(hidden: bool):
    """Lists of gradient tensors (some None): above the threshold, below it, one huge tensor among small ones."""
    g = torch.Generator().manual_seed(29 if hidden else 3)
    shapes = [(3, 4), (5,), (2, 2, 2)] if not hidden else [(7,), (2, 3), (4, 1), (1,)]
    cases = []
    for max_norm, scale in ((1.0, 1.0), (50.0, 1.0), (2.0, 30.0)) if not hidden else ((0.5, 2.0), (10.0, 0.1), (3.0, 8.0)):
        grads = [torch.randn(s, generator=g) * scale for s in shapes]
        grads[-1] = grads[-1] * 20  # one tensor far larger than the others: a per-tensor clip shows
        cases.append((grads, max_norm))
    cases.append(([torch.randn(4, generator=g), None, torch.randn(3, generator=g) * 9], 1.5))  # a frozen tensor
    return cases


def check_clip(my_clip_grad_norm, hidden=False) -> bool:
    """my_clip_grad_norm(parameters, max_norm) -> the global gradient norm before clipping, and the
    gradients scaled in place as torch.nn.utils.clip_grad_norm_ scales them."""

    def compare():
        need_function(my_clip_grad_norm)
        refuse_names(my_clip_grad_norm, {"clip_grad_norm_", "clip_grad_norm", "clip_grads_with_norm_",
                                         "get_total_norm", "clip_grad_value_"},
                     "the clip is the function to write; work it out yourself")
        for grads, max_norm in _clip_cases(hidden):
            mine = [torch.zeros(g.shape if g is not None else (2,), requires_grad=True) for g in grads]
            ref = [torch.zeros(g.shape if g is not None else (2,), requires_grad=True) for g in grads]
            for p, q, g in zip(mine, ref, grads):
                p.grad = None if g is None else g.clone()
                q.grad = None if g is None else g.clone()
            expected = float(torch.nn.utils.clip_grad_norm_(ref, max_norm))
            got = my_clip_grad_norm(mine, max_norm)
            assert got is not None, "return the global norm before clipping"
            assert math.isclose(float(got), expected, rel_tol=1e-5), (
                f"max_norm {max_norm}: the norm before clipping is {expected:.4f}, you returned {float(got):.4f}")
            for i, (p, q) in enumerate(zip(mine, ref)):
                if q.grad is None:
                    assert p.grad is None, f"tensor {i} had no gradient (a frozen weight): leave its .grad None"
                    continue
                assert torch.allclose(p.grad, q.grad, rtol=1e-5, atol=1e-7), (
                    f"max_norm {max_norm}, global norm {expected:.3f}: tensor {i}'s gradient should be "
                    f"{q.grad.flatten()[:3].tolist()}..., got {p.grad.flatten()[:3].tolist()}...")

    return run_check("gradient clipping", compare, hidden=hidden)


def _histories(hidden: bool):
    """Synthetic logs: box_reg rises while the error per positive falls, because the positives rise; the
    positives alternate high and low within a window, so the mean of per-step ratios is off."""
    g = torch.Generator().manual_seed(41 if hidden else 5)
    steps = 12 if hidden else 8
    sampled = 192 if hidden else 256
    positives = torch.linspace(6, 60, steps).round() + torch.randint(0, 4, (steps,), generator=g)  # (S,)
    positives[1::2] = (positives[1::2] / 4).round()  # (S,) every other step far fewer
    if hidden:
        positives[3] = 0  # a step with no positive: its box loss is 0, and it adds nothing to its window
    per_positive = torch.linspace(1.4, 0.5, steps) * (1 + 0.4 * torch.rand(steps, generator=g))  # (S,)
    box_reg = per_positive * positives / sampled  # (S,)
    history = [{"step": i + 1, "loss_box_reg": float(box_reg[i]), "positives": int(positives[i]),
                "sampled": sampled} for i in range(steps)]
    expected = {}
    for window in ((5, 12) if hidden else (1, 3)):
        sums = [(float((per_positive[a:a + window] * positives[a:a + window]).sum()),
                 float(positives[a:a + window].sum())) for a in range(0, steps, window)]  # (error, positives)
        expected[window] = [e / n for e, n in sums]
    return history, expected


def check_box_loss_per_positive(my_per_positive, hidden=False) -> bool:
    """my_per_positive(history, window) -> per window of `window` consecutive records (the last may be
    shorter), the smooth-L1 box error summed over the 4 coordinates per positive RoI, every positive of
    the window weighing the same, from the logged loss_box_reg (summed over positives, divided by all
    sampled RoIs), positives and sampled."""

    def compare():
        need_function(my_per_positive)
        history, expected = _histories(hidden)
        for window, values in expected.items():
            got = my_per_positive([dict(r) for r in history], window)
            assert got is not None, "your function returned None"
            got = [float(v) for v in got]
            assert len(got) == len(values), (
                f"{len(history)} records in windows of {window}: expected {len(values)} values (the last "
                f"window may be shorter), got {len(got)}")
            for i, (e, v) in enumerate(zip(values, got)):
                rows = history[i * window:(i + 1) * window]
                assert math.isclose(v, e, rel_tol=1e-4), (
                    f"windows of {window}: steps {rows[0]['step']}-{rows[-1]['step']} (positives "
                    f"{[r['positives'] for r in rows]}): expected {e:.4f} per positive RoI, got {v:.4f}")

    return run_check("the box loss per positive RoI", compare, hidden=hidden)


# (boxes, (H, W), scale, (top, left)): a crop, a pad, a size whose H * s is not a whole number (the
# scale applied is round(H * s) / H), boxes pushed out of the window, a non-square image.
_JITTER_CASES = [
    ([[10.0, 20.0, 50.0, 60.0], [70.0, 5.0, 120.0, 40.0], [0.0, 100.0, 30.0, 128.0]], (128, 128), 2.0, (30, 40)),
    ([[10.0, 20.0, 50.0, 60.0], [70.0, 5.0, 120.0, 40.0]], (128, 128), 0.5, (-20, -10)),
    ([[3.5, 7.25, 90.0, 61.0], [40.0, 40.0, 41.0, 99.0]], (100, 100), 0.733, (-5, -7)),
]
_JITTER_HIDDEN = [
    ([[0.0, 0.0, 20.0, 20.0], [60.0, 60.0, 100.0, 100.0]], (100, 100), 1.5, (50, 50)),
    ([[5.0, 5.0, 60.0, 30.0], [100.0, 10.0, 150.0, 70.0]], (80, 160), 1.3, (-3, 12)),
    ([[1.0, 2.0, 33.0, 17.0], [20.0, 30.0, 21.0, 31.0]], (37, 53), 0.61, (-4, 2)),
]


def check_jitter_boxes(my_jitter_boxes, hidden=False) -> bool:
    """my_jitter_boxes(boxes (N, 4), image_size (H, W), scale, offset (top, left)) -> (K, 4) equals the boxes
    datasets.scale_jitter gives a target without masks (window = the image's own size)."""
    from ..datasets import scale_jitter

    def compare():
        need_function(my_jitter_boxes)
        refuse_names(my_jitter_boxes, {"scale_jitter", "RandomScaleJitter"},
                     "the library computes the answer; work it out yourself")
        for rows, (h, w), scale, offset in (_JITTER_HIDDEN if hidden else _JITTER_CASES):
            boxes = torch.tensor(rows)  # (N, 4)
            target = {"boxes": boxes.clone(), "labels": torch.arange(1, len(rows) + 1)}
            expected = scale_jitter(torch.zeros(3, h, w), target, scale, offset)[1]["boxes"]  # (K, 4)
            got = my_jitter_boxes(boxes.clone(), (h, w), scale, offset)
            assert got is not None, "your function returned None"
            got = torch.as_tensor(got, dtype=torch.float32)
            where = f"image {h}x{w}, scale {scale}, (top, left) = {offset}"
            assert got.shape == expected.shape, (
                f"{where}: expected {len(expected)} boxes (N, 4) after dropping the empty ones, got shape "
                f"{tuple(got.shape)}")
            assert torch.allclose(got, expected, atol=1e-4), f"{where}: expected {expected.tolist()}, got {got.tolist()}"

    return run_check("boxes through scale jitter", compare, hidden=hidden)
