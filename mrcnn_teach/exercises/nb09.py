"""Checks for the exercises of notebooks/09_training.ipynb (the schedule, one SGD step, steps per epoch,
scale jitter of boxes)."""

from __future__ import annotations

import copy
import math

import torch

from . import run_check

# (base_lr, total_steps, warmup_steps, warmup_factor, milestones, gamma): the shapes_tiny preset, the
# cached 500-step model, torchvision's COCO fractions, a short run with its own numbers, no warm-up.
# No milestone lands on x.5 steps, so how round() breaks ties never matters.
_SCHEDULES = [
    (0.02, 3000, 100, 0.001, (0.75, 0.9), 0.1),
    (0.02, 500, 100, 0.001, (0.75, 0.9), 0.1),
    (0.02, 1000, 50, 0.001, (16 / 26, 22 / 26), 0.1),
    (0.1, 40, 5, 0.1, (0.5, 0.8), 0.5),
    (0.01, 20, 0, 0.001, (0.6,), 0.1),
]


def check_lr(my_lr) -> bool:
    """my_lr(step, base_lr, total_steps, warmup_steps, warmup_factor, milestones, gamma) -> float equals
    base_lr * WarmupStepDecay(...)(step) at every step that matters (warm-up ends, milestones) and more."""
    from ..train_config import WarmupStepDecay

    def compare():
        for base_lr, total, warmup, factor, milestones, gamma in _SCHEDULES:
            schedule = WarmupStepDecay(total, warmup, factor, milestones, gamma)
            edges = [0, 1, warmup - 1, warmup, warmup + 1, total - 1]
            edges += [m + d for m in schedule.milestone_steps for d in (-1, 0, 1)]
            steps = sorted({s for s in edges + list(range(0, total, max(1, total // 37))) if 0 <= s < total})
            for step in steps:
                expected = base_lr * schedule(step)
                got = my_lr(step, base_lr, total, warmup, factor, milestones, gamma)
                assert got is not None, "your function returned None"
                got = float(got)
                assert math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-15), (
                    f"run of {total} steps (warm-up {warmup}, milestones {list(milestones)}, gamma {gamma}): "
                    f"at step {step} expected lr {expected:.6g}, got {got:.6g}")

    return run_check("learning rate at step s", compare)


def _setup_for_step(seed: int = 9):
    """A small shapes_tiny model (64-px input) in train mode, its SGD optimizer, and 2 batches of 2 images."""
    from ..configs import build_maskrcnn
    from ..datasets import ShapesDataset
    from ..train_config import TrainConfig, build_optimizer

    torch.manual_seed(seed)
    model = build_maskrcnn("shapes_tiny", num_classes=4, min_size=64, max_size=64).train()
    optimizer = build_optimizer(model, TrainConfig(lr=0.01))  # momentum 0.9, weight decay 1e-4
    data = ShapesDataset(4, image_size=64, seed=seed)
    batches = [tuple(map(list, zip(*(data[i] for i in (j, j + 1))))) for j in (0, 2)]  # [(images, targets)] x 2
    return model, optimizer, batches


def check_training_step(my_training_step) -> bool:
    """my_training_step(model, optimizer, images, targets, grad_clip) -> dict of the 5 losses, and leaves the
    weights and momentum buffers where train.training_step does, over two steps from the same state.

    Deterministic: both runs start from one model (deep copies) and reset the global RNG, which the
    RPN's and RoI heads' samplers draw from, to the same seed before each step. The clip (1.0) is far
    below the gradient norm of a fresh model, so leaving it out shows; two steps, so a missing
    zero_grad (the second step adding onto the first step's gradients) shows too.
    """
    from ..train import training_step

    def compare():
        with torch.random.fork_rng(devices=[]):  # the notebook's own RNG is left where it was
            ref_model, ref_opt, batches = _setup_for_step()
            model = copy.deepcopy(ref_model)
            from ..train_config import TrainConfig, build_optimizer

            optimizer = build_optimizer(model, TrainConfig(lr=0.01))
            for step, (images, targets) in enumerate(batches):
                torch.manual_seed(100 + step)
                expected, _ = training_step(ref_model, ref_opt, images, targets, grad_clip=1.0)
                torch.manual_seed(100 + step)
                got = my_training_step(model, optimizer, images, targets, 1.0)
                assert isinstance(got, dict), f"return the dict of losses the model gave, got {type(got).__name__}"
                assert set(got) == set(expected), f"expected the loss terms {sorted(expected)}, got {sorted(got)}"
                for key in expected:
                    mine, theirs = torch.as_tensor(got[key]).detach(), expected[key].detach()
                    assert torch.allclose(mine, theirs), \
                        f"step {step + 1}: {key} = {float(mine):.6f}, expected {float(theirs):.6f}"
                with torch.no_grad():  # same ops give the same bits; a hand-written clip may differ by rounding
                    for (name, p), q in zip(ref_model.named_parameters(), model.parameters()):
                        assert torch.allclose(q, p, rtol=1e-6, atol=1e-7), (
                            f"after step {step + 1} the weights differ from training_step's, first in {name} "
                            f"(max difference {float((q - p).abs().max()):.2e})")
            for p, q in zip(ref_opt.param_groups[0]["params"], optimizer.param_groups[0]["params"]):
                a, b = ref_opt.state[p].get("momentum_buffer"), optimizer.state[q].get("momentum_buffer")
                same = b is None if a is None else b is not None and torch.allclose(b, a, rtol=1e-4, atol=1e-5)
                assert same, "the SGD momentum buffers differ: step with the optimizer you were given"

    return run_check("one training step", compare)


_EPOCHS = [(2000, 8, 1), (2001, 8, 1), (100, 8, 1), (8, 2, 1), (10, 4, 3), (2000, 8, 3), (7, 2, 4), (5, 2, 1),
           (118287, 2, 8)]


def check_steps_per_epoch(my_steps_per_epoch) -> bool:
    """my_steps_per_epoch(num_images, batch_size, world_size) -> int equals train_data.steps_per_epoch."""
    from ..train_config import TrainConfig
    from ..train_data import steps_per_epoch

    def compare():
        for num_images, batch_size, world_size in _EPOCHS:
            expected = steps_per_epoch(num_images, TrainConfig(batch_size=batch_size), world_size)
            got = my_steps_per_epoch(num_images, batch_size, world_size)
            assert got is not None, "your function returned None"
            assert int(got) == got == expected, (
                f"{num_images} images, batch {batch_size} per process, {world_size} process(es): "
                f"expected {expected} steps, got {got}")

    return run_check("steps per epoch", compare)


# (boxes, (H, W), scale, (top, left)): a crop, a pad, a size whose H * s is not a whole number (the
# scale applied is round(H * s) / H), boxes pushed out of the window, a non-square image.
_JITTER_CASES = [
    ([[10.0, 20.0, 50.0, 60.0], [70.0, 5.0, 120.0, 40.0], [0.0, 100.0, 30.0, 128.0]], (128, 128), 2.0, (30, 40)),
    ([[10.0, 20.0, 50.0, 60.0], [70.0, 5.0, 120.0, 40.0]], (128, 128), 0.5, (-20, -10)),
    ([[3.5, 7.25, 90.0, 61.0], [40.0, 40.0, 41.0, 99.0]], (100, 100), 0.733, (-5, -7)),
    ([[0.0, 0.0, 20.0, 20.0], [60.0, 60.0, 100.0, 100.0]], (100, 100), 1.5, (50, 50)),
    ([[5.0, 5.0, 60.0, 30.0], [100.0, 10.0, 150.0, 70.0]], (80, 160), 1.3, (-3, 12)),
]


def check_jitter_boxes(my_jitter_boxes) -> bool:
    """my_jitter_boxes(boxes (N, 4), image_size (H, W), scale, offset (top, left)) -> (K, 4) equals the boxes
    datasets.scale_jitter gives a target without masks (window = the image's own size)."""
    from ..datasets import scale_jitter

    def compare():
        for rows, (h, w), scale, offset in _JITTER_CASES:
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

    return run_check("boxes through scale jitter", compare)
