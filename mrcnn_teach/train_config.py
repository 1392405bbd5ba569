"""Training configuration as plain data: `TrainConfig`, the presets, and the learning-rate schedule.

The paper trains with SGD (momentum 0.9, weight decay 1e-4) on the sum of the losses
L = L_cls + L_box + L_mask (Sec. 3; plus the RPN's two, Faster R-CNN Sec. 3.1.3): 160k iterations
of 16 images at learning rate 0.02, divided by 10 after 120k (that is, at 75% of the run).
torchvision's recipe divides twice (epochs 16 and 22 of 26); we take milestones as fractions of
the run, so both fit. A short linear warm-up (Goyal et al. 2017) keeps the randomly initialised
heads from blowing up the first steps.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

# ============================================================================= configuration

@dataclass
class TrainConfig:
    """Everything that defines a training run, as plain data (saved in every checkpoint)."""

    # --- the model: a name for mrcnn_teach.build_maskrcnn, plus keyword overrides
    model: str = "shapes_tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    kernels: str | None = None  # "teaching" | "torchvision" | "mixed"; None keeps the model config's choice
    # --- data: a COCO directory (images/ + annotations.json), or None for the built-in shapes
    data: str | None = None
    val_data: str | None = None  # COCO dir to evaluate on; None: hold out val_images of `data`
    train_images: int = 2000  # shapes images to train on (ignored with `data`)
    val_images: int = 100  # held-out images to evaluate on
    image_size: int = 128  # shapes image side
    train_data_seed: int = 0  # shapes images are a function of (seed, index): different seeds,
    val_data_seed: int = 1  # different images, so the held-out set really is unseen
    hflip: float = 0.5  # probability of a horizontal flip (Fast R-CNN Sec. 2.3; Detectron's, torchvision's default)
    # large-scale jitter: resize each training image by a factor drawn log-uniformly from this
    # (min, max) range, then crop or pad it back to its size (datasets.RandomScaleJitter); None: off
    scale_jitter: tuple[float, float] | None = None
    # --- optimisation (Sec. 3.1): SGD with momentum, warm-up, step decay
    epochs: int = 12
    batch_size: int = 8  # images per step per process
    # the linear scaling rule (Goyal et al. 2017, Sec. 2.1): `lr` is the learning rate for a total batch
    # of `lr_batch` images, and a run uses lr * (world size * batch_size) / lr_batch (`scaled_lr`);
    # lr_batch None: `lr` is used as given, whatever the batch
    lr: float = 0.02
    lr_batch: int | None = None
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 100  # linear ramp from lr * warmup_factor to lr
    warmup_factor: float = 0.001
    milestones: tuple[float, ...] = (0.75, 0.9)  # fractions of the run where lr *= gamma
    gamma: float = 0.1
    grad_clip: float | None = 10.0  # max global gradient L2 norm; None: no clipping
    amp: bool = False  # mixed precision (CUDA only)
    # --- run control
    max_minutes: float | None = None  # time budget for training (evaluation comes after)
    max_steps: int | None = None  # stop after this many steps in total (the schedule is unchanged)
    seed: int = 0
    workers: int = 2  # DataLoader worker processes
    device: str = "auto"  # "auto" = cuda if available, else cpu
    eval_batch_size: int = 8

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; known: {sorted(known)}")
        values = dict(values)
        for name in ("milestones", "scale_jitter"):
            if isinstance(values.get(name), (list, tuple)):  # JSON gives lists
                values[name] = tuple(values[name])
        if isinstance(values.get("model_overrides"), dict):
            values["model_overrides"] = dict(values["model_overrides"])
        return cls(**values)

    def __post_init__(self):
        # A pathlib.Path would be pickled as an object into the checkpoint, which a safe
        # (weights_only) load then refuses: keep paths as plain strings.
        for name in ("data", "val_data"):
            if isinstance(getattr(self, name), os.PathLike):
                setattr(self, name, os.fspath(getattr(self, name)))

    def validate(self) -> TrainConfig:
        wrong = [f"{name} must be {must}, got {getattr(self, name)!r}"
                 for name, (ok, must) in _FIELD_TYPES.items() if not ok(getattr(self, name))]
        if wrong:
            raise ValueError(f"TrainConfig: {'; '.join(wrong)}")
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.lr_batch is None or self.lr_batch >= 1, f"lr_batch must be >= 1 or None, got {self.lr_batch}"),
            (self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}"),
            (all(0 < m < 1 for m in self.milestones), f"milestones are fractions in (0, 1), got {self.milestones}"),
            (list(self.milestones) == sorted(self.milestones), f"milestones must increase, got {self.milestones}"),
            (self.grad_clip is None or self.grad_clip > 0, f"grad_clip must be > 0 or None, got {self.grad_clip}"),
            (self.max_minutes is None or self.max_minutes > 0, f"max_minutes must be > 0, got {self.max_minutes}"),
            (self.max_steps is None or self.max_steps >= 1, f"max_steps must be >= 1, got {self.max_steps}"),
            (self.workers >= 0, f"workers must be >= 0, got {self.workers}"),
            (self.train_images >= 1, f"train_images must be >= 1, got {self.train_images}"),
            (self.val_images >= 1, f"val_images must be >= 1, got {self.val_images}"),
            (self.eval_batch_size >= 1, f"eval_batch_size must be >= 1, got {self.eval_batch_size}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (0 < self.warmup_factor <= 1, f"warmup_factor must be in (0, 1], got {self.warmup_factor}"),
            (0 < self.gamma <= 1, f"gamma must be in (0, 1], got {self.gamma}"),
            (0.0 <= self.hflip <= 1.0, f"hflip is a probability, got {self.hflip}"),
            (self.scale_jitter is None or 0 < self.scale_jitter[0] <= self.scale_jitter[1],
             f"scale_jitter must be (min, max) with 0 < min <= max, got {self.scale_jitter}"),
            (self.kernels in (None, "teaching", "torchvision", "mixed"),
             f"kernels must be 'teaching', 'torchvision' or 'mixed', got {self.kernels!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"TrainConfig: {message}")
        return self


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _optional(ok):
    return lambda v: v is None or ok(v)


# What each field must hold: values from the command line (--set) or a JSON file can be of any type.
_INT, _NUMBER, _STR = (_is_int, "an int"), (_is_number, "a number"), (lambda v: isinstance(v, str), "a string")
_FIELD_TYPES: dict[str, tuple[Any, str]] = {
    "model": _STR, "model_overrides": (lambda v: isinstance(v, dict), "a dict of config overrides"),
    "kernels": (_optional(lambda v: isinstance(v, str)), "a string or None"),
    "data": (_optional(lambda v: isinstance(v, str)), "a directory path or None"),
    "val_data": (_optional(lambda v: isinstance(v, str)), "a directory path or None"),
    "train_images": _INT, "val_images": _INT, "image_size": _INT, "train_data_seed": _INT, "val_data_seed": _INT,
    "hflip": _NUMBER,
    "scale_jitter": (_optional(lambda v: isinstance(v, (tuple, list)) and len(v) == 2 and all(map(_is_number, v))),
                     "None or two numbers (min, max)"),
    "epochs": _INT, "batch_size": _INT, "lr": _NUMBER, "lr_batch": (_optional(_is_int), "an int or None"),
    "momentum": _NUMBER,
    "weight_decay": _NUMBER, "warmup_steps": _INT, "warmup_factor": _NUMBER,
    "milestones": (lambda v: isinstance(v, (tuple, list)) and all(map(_is_number, v)), "a tuple of numbers"),
    "gamma": _NUMBER, "grad_clip": (_optional(_is_number), "a number or None"),
    "amp": (lambda v: isinstance(v, bool), "True or False"),
    "max_minutes": (_optional(_is_number), "a number or None"), "max_steps": (_optional(_is_int), "an int or None"),
    "seed": _INT, "workers": _INT, "device": _STR, "eval_batch_size": _INT,
}


TRAIN_PRESETS: dict[str, TrainConfig] = {
    # The built-in shapes at 128 px, from scratch, sized for a laptop CPU (a GPU finishes the
    # epochs long before the budget). Step decay at 75% and 90% of the run. No scale jitter: in ten
    # CPU minutes --set "scale_jitter=(0.6, 2.5)" lifts mask AP50 on shapes drawn 0.5x-2x the training
    # sizes (0.62 -> 0.65-0.69) but costs 0.04-0.07 on the training sizes (benchmarks/README.md).
    # workers=0: the images are drawn in the training process. On a 2-core CPU two loader processes
    # only take cores from the step (700 steps: 425 s against 377 s, benchmarks/README.md); each
    # sample is seeded by its index, so a fixed number of steps gives the same weights either way.
    "shapes_tiny": TrainConfig(
        model="shapes_tiny", train_images=2000, val_images=100, image_size=128,
        epochs=12, batch_size=8, lr=0.02, lr_batch=8, warmup_steps=100, milestones=(0.75, 0.9),
        grad_clip=10.0, max_minutes=10.0, workers=0,
    ),
    # torchvision's COCO recipe (26 epochs, decay at 16 and 22; 2 images per GPU on 8 GPUs, lr 0.02 for
    # that total batch of 16, the paper's too, Sec. 3.1). On fewer GPUs the lr shrinks with the total
    # batch (one GPU: 2 images, lr 0.0025). Meant for a GPU and a COCO directory: --data DIR.
    "resnet50_fpn": TrainConfig(
        model="resnet50_fpn", epochs=26, batch_size=2, lr=0.02, lr_batch=16, warmup_steps=1000,
        milestones=(16 / 26, 22 / 26), grad_clip=10.0, amp=True, workers=4, eval_batch_size=2,
    ),
}


def get_train_config(name: str, **overrides: Any) -> TrainConfig:
    """A preset with overrides: get_train_config("shapes_tiny", epochs=2)."""
    if name not in TRAIN_PRESETS:
        raise ValueError(f"unknown training config {name!r}; choose one of {sorted(TRAIN_PRESETS)}")
    values = {**dataclasses.asdict(TRAIN_PRESETS[name]), **overrides}
    return TrainConfig.from_dict(values).validate()

# ============================================================================= learning rate

class WarmupStepDecay:
    """lr factor at optimizer step s: a linear warm-up, then x gamma at each milestone.

        warm-up (s < W):  warmup_factor + (1 - warmup_factor) * s / W
        afterwards:       gamma ** (number of milestone steps <= s)

    A callable object (not a lambda), so LambdaLR saves its attributes in the checkpoint; with a
    time budget the run length (and so the milestones) is re-planned as the speed becomes known.
    """

    def __init__(self, total_steps: int, warmup_steps: int, warmup_factor: float,
                 milestones: tuple[float, ...], gamma: float):
        self.warmup_steps = int(warmup_steps)
        self.warmup_factor = float(warmup_factor)
        self.milestone_fractions = [float(m) for m in milestones]
        self.gamma = float(gamma)
        self.set_total_steps(total_steps)

    def set_total_steps(self, total_steps: int) -> None:
        self.total_steps = int(total_steps)
        self.milestone_steps = [int(round(f * self.total_steps)) for f in self.milestone_fractions]

    def fit_to_budget(self, total_steps: int, max_warmup_fraction: float = 0.1) -> None:
        """Squeeze the whole schedule into the steps a time budget allows: milestones at the same
        fractions, and a warm-up of at most 10% of the run. Fitting the schedule to the budget,
        rather than cutting a long schedule short, is what budgeted training recommends
        (Li, Yumer & Ramanan 2020)."""
        self.set_total_steps(total_steps)
        self.warmup_steps = min(self.warmup_steps, max(1, int(max_warmup_fraction * total_steps)))

    def __call__(self, step: int) -> float:
        factor = 1.0
        if step < self.warmup_steps:
            alpha = step / self.warmup_steps
            factor = self.warmup_factor + (1.0 - self.warmup_factor) * alpha
        return factor * self.gamma ** bisect.bisect_right(self.milestone_steps, step)


def scaled_lr(cfg: TrainConfig, world_size: int = 1) -> float:
    """The learning rate a run of `world_size` processes uses: the linear scaling rule.

    Goyal et al. (2017, Sec. 2.1): when the minibatch is multiplied by k, multiply the learning rate
    by k. `cfg.lr` is the rate for a total batch of `cfg.lr_batch` images; the run's total batch is
    world_size * cfg.batch_size. With lr_batch None, cfg.lr is used as given.
    """
    if cfg.lr_batch is None:
        return cfg.lr
    return cfg.lr * world_size * cfg.batch_size / cfg.lr_batch


def build_optimizer(model: nn.Module, cfg: TrainConfig, world_size: int = 1):
    """SGD + momentum on the trainable parameters, at the scaled learning rate (`scaled_lr`)."""
    params = [p for p in model.parameters() if p.requires_grad]  # frozen stages are left out
    optimizer = torch.optim.SGD(params, lr=scaled_lr(cfg, world_size), momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    return optimizer


def build_scheduler(optimizer, cfg: TrainConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    schedule = WarmupStepDecay(total_steps, cfg.warmup_steps, cfg.warmup_factor, cfg.milestones, cfg.gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

def resume_config(ckpt: dict[str, Any], **changes: Any) -> TrainConfig:
    """The run's own TrainConfig, with only run-control fields changed (anything else would not
    continue the same run). The time budget carries over, per invocation; max_steps does not."""
    allowed = {"max_minutes", "max_steps", "workers", "device", "eval_batch_size", "kernels"}
    cfg = TrainConfig.from_dict(ckpt["train_config"])
    changed = {k: v for k, v in changes.items() if v is not None}
    refused = sorted(k for k, v in changed.items() if k not in allowed and getattr(cfg, k) != v)
    if refused:
        raise ValueError(f"--resume continues the saved run; it cannot change {refused} "
                         f"(only {sorted(allowed)}). Start a new run to change them.")
    # max_steps was where the earlier invocation chose to stop; the resumed one runs on unless told.
    kept = {k: v for k, v in changed.items() if k in allowed}
    return dataclasses.replace(cfg, **{"max_steps": None, **kept}).validate()
