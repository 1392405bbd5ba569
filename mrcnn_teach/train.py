"""Training Mask R-CNN: the recipe of Sec. 3.1 ("Training") as one readable loop.

The paper trains with SGD (momentum 0.9, weight decay 1e-4) on the sum of the losses
L = L_cls + L_box + L_mask (Sec. 3; plus the RPN's two, Faster R-CNN Sec. 3.1.3): 160k iterations
of 16 images at learning rate 0.02, divided by 10 after 120k (that is, at 75% of the run).
torchvision's recipe divides twice (epochs 16 and 22 of 26); we take milestones as fractions of
the run, so both fit. A short linear warm-up (Goyal et al. 2017) keeps the randomly initialised
heads from blowing up the first steps, and gradient-norm clipping is a seat belt for
small-batch CPU runs.

    for each step:  images, targets -> model -> dict of 5 losses -> sum -> backward -> SGD step

Everything else in this file makes that loop safe to run for hours: a per-step JSON-lines log,
atomic checkpoints (checkpoint.py), exact resumption (data order, flips and RNG states), a time
budget, Ctrl-C that saves first, mixed precision on GPUs, and data parallelism (distributed.py).

Exact resumption rests on three choices:
1. the data order of epoch e is a permutation drawn from a generator seeded with (seed, e)
   (DistributedSampler), and a resumed epoch skips the batches it already trained on;
2. each sample's flip is drawn from a generator seeded with (seed, epoch, index)
   (`SeededTransforms`), so it does not depend on which DataLoader worker loads it;
3. the global RNG (the RPN and RoI samplers draw from it) is saved in the checkpoint and is
   never touched by data loading.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import json
import math
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from . import distributed as dist_utils
from .checkpoint import (CHECKPOINT_NAME, FORMAT, ModelFactory, build_model, capture_rng_state,
                         load_checkpoint, restore_rng_state, save_checkpoint)

LOG_NAME = "log.jsonl"
METRICS_NAME = "metrics.json"


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
    hflip: float = 0.5  # probability of a horizontal flip (the only augmentation, Sec. 3.1)
    # --- optimisation (Sec. 3.1): SGD with momentum, warm-up, step decay
    epochs: int = 12
    batch_size: int = 8  # images per step per process
    lr: float = 0.02  # used as given; scale it with the total batch yourself (Goyal et al.)
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
        if "milestones" in values:
            values["milestones"] = tuple(values["milestones"])
        if "model_overrides" in values:
            values["model_overrides"] = dict(values["model_overrides"])
        return cls(**values)

    def validate(self) -> TrainConfig:
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}"),
            (all(0 < m < 1 for m in self.milestones), f"milestones are fractions in (0, 1), got {self.milestones}"),
            (list(self.milestones) == sorted(self.milestones), f"milestones must increase, got {self.milestones}"),
            (self.grad_clip is None or self.grad_clip > 0, f"grad_clip must be > 0 or None, got {self.grad_clip}"),
            (self.max_minutes is None or self.max_minutes > 0, f"max_minutes must be > 0, got {self.max_minutes}"),
            (self.max_steps is None or self.max_steps >= 1, f"max_steps must be >= 1, got {self.max_steps}"),
            (self.workers >= 0, f"workers must be >= 0, got {self.workers}"),
            (0.0 <= self.hflip <= 1.0, f"hflip is a probability, got {self.hflip}"),
            (self.kernels in (None, "teaching", "torchvision", "mixed"),
             f"kernels must be 'teaching', 'torchvision' or 'mixed', got {self.kernels!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"TrainConfig: {message}")
        return self


TRAIN_PRESETS: dict[str, TrainConfig] = {
    # The built-in shapes at 128 px, from scratch, sized for a laptop CPU (a GPU finishes the
    # epochs long before the budget). Step decay at 75% and 90% of the run.
    "shapes_tiny": TrainConfig(
        model="shapes_tiny", train_images=2000, val_images=100, image_size=128,
        epochs=12, batch_size=8, lr=0.02, warmup_steps=100, milestones=(0.75, 0.9),
        grad_clip=10.0, max_minutes=10.0, workers=2,
    ),
    # torchvision's COCO recipe (26 epochs, decay at 16 and 22; 2 images per GPU, lr 0.02 for
    # 8 GPUs). Meant for a GPU and a COCO directory: --data DIR.
    "resnet50_fpn": TrainConfig(
        model="resnet50_fpn", epochs=26, batch_size=2, lr=0.02, warmup_steps=1000,
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


def build_optimizer(model: nn.Module, cfg: TrainConfig):
    """SGD + momentum on the trainable parameters, and the warm-up/step-decay schedule."""
    params = [p for p in model.parameters() if p.requires_grad]  # frozen stages are left out
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return optimizer


def build_scheduler(optimizer, cfg: TrainConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    schedule = WarmupStepDecay(total_steps, cfg.warmup_steps, cfg.warmup_factor, cfg.milestones, cfg.gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


# ============================================================================= data

def sample_seed(*parts: int) -> int:
    """A 64-bit seed mixed from integers (numpy's SeedSequence hashes them well)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0])


class SeededTransforms(Dataset):
    """Apply random transforms with a generator seeded by (seed, epoch, index).

    A DataLoader worker's RNG depends on how many samples that worker has loaded before, so with
    plain `torch.rand` a resumed run (or one with a different number of workers) would flip
    different images. Here every sample draws from a fresh seed, and `fork_rng` puts the global
    generator back afterwards, so data loading never moves the RNG the model samples RoIs with.
    """

    def __init__(self, dataset: Dataset, transforms, seed: int = 0):
        self.dataset = dataset
        self.transforms = transforms
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch  # set before the DataLoader iterator (and its workers) is created

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):  # class_names, label_to_category_id, ... of the dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int):
        image, target = self.dataset[index]
        if self.transforms is None:
            return image, target
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, self.epoch, index))
            return self.transforms(image, target)


class SkipFirst(Sampler):
    """The indices of `sampler` without the first `n`: how a resumed epoch skips its done batches."""

    def __init__(self, sampler: Sampler, n: int):
        self.sampler, self.n = sampler, n

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.n, None)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.n)


def _attr(dataset, name: str, default=None):
    while dataset is not None:
        if name in getattr(dataset, "__dict__", {}) or hasattr(type(dataset), name):
            return getattr(dataset, name)
        dataset = getattr(dataset, "dataset", None)
    return default


def class_names_of(dataset) -> tuple[str, ...]:
    names = _attr(dataset, "class_names")
    if names is None:
        raise ValueError(f"{type(dataset).__name__} has no class_names (background first)")
    return tuple(names)


def _coco_dir(path: str) -> tuple[Path, Path]:
    root = Path(path)
    images, ann = root / "images", root / "annotations.json"
    if not images.is_dir() or not ann.is_file():
        raise ValueError(f"--data {path}: expected a COCO directory with images/ and annotations.json")
    return images, ann


def build_datasets(cfg: TrainConfig) -> tuple[Dataset, Dataset]:
    """(train, held-out val) datasets, without augmentation."""
    from .datasets import CocoDetection, ShapesDataset

    if cfg.data is None:
        train = ShapesDataset(cfg.train_images, cfg.image_size, seed=cfg.train_data_seed)
        val = ShapesDataset(cfg.val_images, cfg.image_size, seed=cfg.val_data_seed)
        return train, val
    train = CocoDetection(*_coco_dir(cfg.data), train=True)
    if cfg.val_data is not None:
        return train, CocoDetection(*_coco_dir(cfg.val_data), train=False)
    # No separate val dir: a seeded random split, the last val_images for evaluation.
    if not 0 < cfg.val_images < len(train):
        raise ValueError(f"--data {cfg.data} has {len(train)} images; cannot hold out val_images={cfg.val_images}")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    n_train = len(train) - cfg.val_images
    val = CocoDetection(*_coco_dir(cfg.data), train=False)
    return Subset(train, order[:n_train]), Subset(val, order[n_train:])


def make_loader(dataset: SeededTransforms, cfg: TrainConfig, info: dist_utils.DistInfo,
                epoch: int, skip_batches: int = 0) -> DataLoader:
    """The loader for one epoch: order from (seed, epoch), this rank's shard, done batches skipped."""
    from .datasets import collate_fn

    sampler = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank,
                                 shuffle=True, seed=cfg.seed, drop_last=False)
    sampler.set_epoch(epoch)  # permutation from a generator seeded with seed + epoch
    dataset.set_epoch(epoch)
    return DataLoader(
        dataset, batch_size=cfg.batch_size, sampler=SkipFirst(sampler, skip_batches * cfg.batch_size),
        num_workers=cfg.workers, collate_fn=collate_fn, pin_memory=info.device.type == "cuda",
        # The loader draws its workers' base seed from this generator, not from the global RNG.
        generator=torch.Generator().manual_seed(sample_seed(cfg.seed, epoch, 1)),
    )


def steps_per_epoch(num_images: int, cfg: TrainConfig, world_size: int) -> int:
    per_rank = math.ceil(num_images / world_size)  # DistributedSampler pads to equal shards
    return math.ceil(per_rank / cfg.batch_size)


# ============================================================================= the loop

class _GracefulInterrupt:
    """First Ctrl-C: finish the current step, save, stop. Second Ctrl-C: stop at once."""

    def __init__(self, say):
        self.requested = False
        self.say = say
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.say("\nCtrl-C: stopping after this step and saving a checkpoint (press again to stop now)")

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _to_device(images, targets, device):
    images = [img.to(device, non_blocking=True) for img in images]  # B x (3, H, W)
    targets = [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()}
               for t in targets]
    return images, targets


def _json_number(x: float) -> float | None:
    return x if math.isfinite(x) else None  # JSON has no NaN/Infinity


class Trainer:
    """Holds the objects of one run; `run()` trains. See `train()` for the one-call version."""

    def __init__(self, cfg: TrainConfig, out_dir: str | os.PathLike, resume: str | os.PathLike | None = None,
                 build: ModelFactory | None = None, info: dist_utils.DistInfo | None = None,
                 overwrite: bool = False, quiet: bool = False):
        self.cfg = cfg.validate()
        self.out_dir = Path(out_dir)
        self.info = info or dist_utils.init_distributed(cfg.device)
        self.device = self.info.device
        self.quiet = quiet
        self.checkpoint_path = self.out_dir / CHECKPOINT_NAME
        self.log_path = self.out_dir / LOG_NAME
        ckpt = load_checkpoint(resume) if resume is not None else None
        if ckpt is None and self.checkpoint_path.exists() and not overwrite:
            raise ValueError(f"{self.checkpoint_path} exists: pass --resume to continue that run, "
                             "--overwrite to start again, or another --out")

        # Same seed on every rank: identical initial weights (DDP also broadcasts rank 0's).
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        random.seed(cfg.seed)

        train_set, self.val_set = build_datasets(cfg)
        self.class_names = class_names_of(train_set)
        augment = None
        if cfg.hflip > 0:
            from .datasets import RandomHorizontalFlip

            augment = RandomHorizontalFlip(cfg.hflip)
        self.train_set = SeededTransforms(train_set, augment, seed=cfg.seed)

        self.model_name = cfg.model
        self.model_overrides = {**cfg.model_overrides, "num_classes": len(self.class_names)}
        model = (build or build_model)(self.model_name, **self.model_overrides)
        if cfg.kernels and hasattr(model, "set_kernels"):
            model.set_kernels(cfg.kernels)
        self.model = model.to(self.device)

        self.steps_per_epoch = steps_per_epoch(len(self.train_set), cfg, self.info.world_size)
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, cfg.epochs * self.steps_per_epoch)
        self.use_amp = cfg.amp and self.device.type == "cuda"
        self.amp_dtype = torch.float16  # the heads' losses are computed in float32 regardless
        if cfg.amp and not self.use_amp:
            self.say("note: --amp needs a CUDA device; training in float32")
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.use_amp)

        self.epoch = self.step = self.step_in_epoch = 0
        self.elapsed_before = 0.0  # training seconds of earlier invocations of this run
        self.last_saved_step = -1
        if ckpt is not None:
            self._load(ckpt)
        self.ddp_model = dist_utils.wrap_model(self.model, self.info)
        self.params = [p for p in self.model.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ small helpers
    @property
    def schedule(self) -> WarmupStepDecay:
        return self.scheduler.lr_lambdas[0]

    @property
    def total_steps(self) -> int:
        return self.schedule.total_steps

    def say(self, *args) -> None:
        if self.info.is_main and not self.quiet:
            print(*args, flush=True)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self, rng_states: list | None = None) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model": self.model.state_dict(),
            "model_name": self.model_name,
            "model_overrides": self.model_overrides,
            "model_config": getattr(self.model, "config", None),  # our model's full config dict
            "train_config": dataclasses.asdict(self.cfg),
            "class_names": list(self.class_names),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "step_in_epoch": self.step_in_epoch,
            "total_steps": self.total_steps,
            "elapsed": self.elapsed(),
            "world_size": self.info.world_size,
            "rng": rng_states if rng_states is not None else [capture_rng_state()],
        }

    def save(self) -> None:
        """Rank 0 writes the checkpoint; every rank's RNG state goes in (one per rank)."""
        rng = capture_rng_state()
        if self.info.distributed:
            states = [None] * self.info.world_size
            torch.distributed.all_gather_object(states, rng)
        else:
            states = [rng]
        if self.info.is_main:
            save_checkpoint(self.state_dict(states), self.checkpoint_path)
        self.last_saved_step = self.step

    def _load(self, ckpt: dict[str, Any]) -> None:
        if ckpt["model_name"] != self.model_name:
            raise ValueError(f"checkpoint is of model {ckpt['model_name']!r}, this run builds {self.model_name!r}")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt["scaler"] and self.use_amp:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.step, self.step_in_epoch = ckpt["epoch"], ckpt["step"], ckpt["step_in_epoch"]
        self.elapsed_before = float(ckpt.get("elapsed", 0.0))
        self.last_saved_step = self.step
        # Last of all: building the model and optimizer above drew random numbers.
        states = ckpt["rng"]
        restore_rng_state(states[self.info.rank] if len(states) == self.info.world_size else states[0])
        if self.info.is_main and self.log_path.exists():
            self._truncate_log(self.step)
        self.say(f"resumed from step {self.step} (epoch {self.epoch + 1}, step {self.step_in_epoch} in it)")

    def _truncate_log(self, step: int) -> None:
        """Drop log lines past the checkpoint (written after it, before a crash)."""
        lines = self.log_path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
        if len(kept) != len(lines):
            tmp = self.log_path.with_suffix(".tmp")
            tmp.write_text("".join(kept))
            os.replace(tmp, self.log_path)

    # ------------------------------------------------------------------ one step
    def train_step(self, images, targets, stop_flags=None) -> tuple[dict[str, float], torch.Tensor, float]:
        """Forward, NaN check, backward, clip, SGD step. `stop_flags()` -> (F,) tensor of this rank's
        reasons to stop. Returns (loss terms averaged over ranks, flags summed over ranks, grad norm)."""
        images, targets = _to_device(images, targets, self.device)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            loss_dict = self.ddp_model(images, targets)  # 5 scalar losses (Sec. 3: L = Lcls + Lbox + Lmask)
        names = list(loss_dict)
        losses = torch.stack([loss_dict[k].float() for k in names])  # (T,)
        loss = losses.sum()  # ()

        # One all-reduce carries the loss terms (for the log and the NaN check) and the stop flags,
        # so every rank decides the same thing at the same step.
        flags = stop_flags() if stop_flags is not None else torch.zeros(0)  # (F,)
        packed = torch.cat([losses.detach(), flags.to(losses.device)])  # (T + F,)
        reduced = dist_utils.all_reduce_sum(packed).cpu()  # (T + F,)
        values = (reduced[: len(names)] / self.info.world_size).tolist()
        terms = dict(zip(names, values))
        bad = [f"{k}={v}" for k, v in terms.items() if not math.isfinite(v)]
        if bad:
            raise FloatingPointError(
                f"non-finite loss at step {self.step + 1} (epoch {self.epoch + 1}): {', '.join(bad)}. "
                f"Try a lower --lr or a longer warm-up; the last good checkpoint is {self.checkpoint_path}")

        self.updating = True  # a hard Ctrl-C from here to the counters' update must not save
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()  # DDP averages gradients across ranks here
        grad_norm = math.nan
        if self.cfg.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip))
        self.scaler.step(self.optimizer)  # skipped by the scaler if AMP produced inf gradients
        self.scaler.update()
        self.scheduler.step()
        return terms, reduced[len(names):], grad_norm

    def elapsed(self) -> float:
        return self.elapsed_before + (time.perf_counter() - self.t0 if hasattr(self, "t0") else 0.0)

    def _plan_for_budget(self, steps_timed: int, seconds: float) -> None:
        """With a time budget, fit the schedule (warm-up, milestones) into the steps that will fit."""
        per_step = seconds / max(1, steps_timed)
        remaining = self.budget_s - (time.perf_counter() - self.t0)
        fit = self.step + int(0.97 * remaining / per_step)
        full = self.cfg.epochs * self.steps_per_epoch
        total = dist_utils.broadcast_int(min(full, max(fit, self.step + 1)), self.info)  # rank 0's plan
        if total != self.total_steps:
            noteworthy = abs(total - self.total_steps) > 0.05 * self.total_steps
            self.schedule.fit_to_budget(total)
            self.bar.total = total
            if noteworthy:
                self.say(f"time budget: about {total} steps fit ({per_step:.2f} s/step): warm-up "
                         f"{self.schedule.warmup_steps} steps, lr decays at steps {self.schedule.milestone_steps}")

    def _may_replan(self) -> bool:
        """Re-planning moves milestones; only allowed well before the first one is reached."""
        first = self.schedule.milestone_steps[0] if self.schedule.milestone_steps else self.total_steps
        return self.budget_s < math.inf and self.step < 0.9 * first

    # ------------------------------------------------------------------ the run
    def run(self, evaluate: bool = True) -> dict[str, Any]:
        """Train until the schedule ends (or max_steps, the time budget, Ctrl-C), save, evaluate."""
        cfg, info = self.cfg, self.info
        if info.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "train_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
        self.log = open(self.log_path, "a" if self.step > 0 else "w") if info.is_main else None
        self.t0 = time.perf_counter()
        self.budget_s = cfg.max_minutes * 60 if cfg.max_minutes else math.inf
        self.updating = False
        self.boundary_rng = capture_rng_state()
        self.model.train()

        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total_steps, initial=self.step, unit="step", dynamic_ncols=True,
                        disable=not (info.is_main and sys.stderr.isatty()) or self.quiet)
        try:
            with _GracefulInterrupt(self.say) as interrupt:
                stop_reason = self._loop(interrupt)
        except KeyboardInterrupt:  # a second Ctrl-C, or one that came outside our handler
            self.bar.close()
            if self.updating:
                self.say("interrupted in the middle of an SGD update: keeping the previous checkpoint")
            elif info.is_main and self.step != self.last_saved_step:
                # No collective here (the other ranks may be gone): rank 0's RNG state stands for all.
                save_checkpoint(self.state_dict([self.boundary_rng]), self.checkpoint_path)
                self.say(f"interrupted: saved {self.checkpoint_path} at step {self.step}")
            raise
        finally:
            self.bar.close()
            if self.log is not None:
                self.log.close()

        if self.step != self.last_saved_step:
            self.save()
        self.say(f"stopped ({stop_reason}) at step {self.step}/{self.total_steps}; checkpoint {self.checkpoint_path}")
        if stop_reason == "interrupted":
            raise KeyboardInterrupt(f"training interrupted; resume with --resume {self.checkpoint_path}")
        metrics = self.evaluate() if evaluate else None
        return {"stopped": stop_reason, "step": self.step, "epoch": self.epoch,
                "checkpoint": str(self.checkpoint_path), "metrics": metrics}

    def _loop(self, interrupt: _GracefulInterrupt) -> str:
        """Epochs of steps; returns why it stopped: done, max_steps, time budget or interrupted."""
        cfg = self.cfg
        # With a budget: time from step +2 (the first steps are slow: caches, workers), fit the
        # schedule at +6, then again every 20 steps with the longer average, until the first decay.
        timing_from, plan_at = None, self.step + 6

        def stop_flags():  # asked after the forward pass, so a Ctrl-C during it stops this very step
            return torch.tensor([float(interrupt.requested),
                                 float(time.perf_counter() - self.t0 >= self.budget_s)])  # (2,)

        while self.step < self.total_steps:
            loader = make_loader(self.train_set, cfg, self.info, self.epoch, self.step_in_epoch)
            t_last = time.perf_counter()
            for images, targets in loader:
                lr = self.optimizer.param_groups[0]["lr"]  # the lr this step uses
                terms, flags, grad_norm = self.train_step(images, targets, stop_flags)
                self.step += 1
                self.step_in_epoch += 1
                self.updating = False
                self.boundary_rng = capture_rng_state()  # for a checkpoint on a hard Ctrl-C
                now = time.perf_counter()
                self._record(lr, terms, grad_norm, len(images) * self.info.world_size / max(now - t_last, 1e-9))
                t_last = now

                if self._may_replan():
                    if timing_from is None and self.step >= plan_at - 4:
                        timing_from = (self.step, now)
                    elif timing_from is not None and self.step >= plan_at:
                        self._plan_for_budget(self.step - timing_from[0], now - timing_from[1])
                        plan_at = self.step + 20
                reason = ("interrupted" if flags[0] > 0 else "time budget" if flags[1] > 0
                          else "max_steps" if cfg.max_steps is not None and self.step >= cfg.max_steps
                          else "done" if self.step >= self.total_steps else None)
                if reason is not None:
                    break
            else:
                reason = None
            if self.step_in_epoch >= self.steps_per_epoch:  # the epoch is complete
                self.say(f"epoch {self.epoch + 1}/{cfg.epochs} done: step {self.step}/{self.total_steps}")
                self.epoch += 1
                self.step_in_epoch = 0
                self.save()
            if reason is not None:
                return reason
        return "done"

    def _record(self, lr: float, terms: dict[str, float], grad_norm: float, images_per_s: float) -> None:
        """One JSON line per step (rank 0; visualize.plot_losses reads it), and the progress bar.

        Fields: step (1-based, completed steps), epoch (0-based), lr (the one this step used),
        loss and each loss term (averaged over ranks), grad_norm (before clipping), images_per_s
        (all ranks), time (training seconds since the run began, resumptions included).
        """
        record = {"step": self.step, "epoch": self.epoch, "lr": lr, "loss": sum(terms.values()), **terms,
                  "grad_norm": _json_number(grad_norm), "images_per_s": images_per_s, "time": self.elapsed()}
        if self.log is not None:
            self.log.write(json.dumps(record) + "\n")
            self.log.flush()
        self.speed = images_per_s if self.step <= 1 else 0.9 * getattr(self, "speed", images_per_s) + 0.1 * images_per_s
        self.bar.update(1)
        self.bar.set_postfix({"epoch": self.epoch + 1, "loss": f"{record['loss']:.3f}",
                              **{k.removeprefix("loss_"): f"{v:.3f}" for k, v in terms.items()},
                              "img/s": f"{self.speed:.1f}"}, refresh=False)

    def evaluate(self) -> dict | None:
        """COCO AP on the held-out set, written to metrics.json; rank 0 only.

        The other ranks are done and may exit: no collective follows, and a barrier here would
        time out (NCCL: 10 minutes) while rank 0 evaluates a large set alone.
        """
        if not self.info.is_main:
            return None
        from .evaluate import evaluate, format_metrics

        metrics = evaluate(self.model, self.val_set, self.device, self.cfg.eval_batch_size)
        write_metrics(metrics, self.out_dir / METRICS_NAME)
        self.say(format_metrics(metrics))
        return metrics


def write_metrics(metrics: dict, path: str | os.PathLike) -> Path:
    def clean(x):
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        return _json_number(float(x)) if isinstance(x, (float, int)) and not isinstance(x, bool) else x

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean(metrics), indent=2))
    return path


def train(cfg: TrainConfig, out_dir: str | os.PathLike, resume: str | os.PathLike | None = None,
          build: ModelFactory | None = None, evaluate: bool = True, overwrite: bool = False,
          quiet: bool = False) -> dict[str, Any]:
    """Train (or resume) a run into out_dir; returns {"stopped", "step", "epoch", "checkpoint", "metrics"}.

    `build(name, **overrides) -> model` replaces mrcnn_teach.build_maskrcnn (any model with
    torchvision's detection contract trains here, torchvision's own MaskRCNN included).
    """
    trainer = Trainer(cfg, out_dir, resume=resume, build=build, overwrite=overwrite, quiet=quiet)
    return trainer.run(evaluate=evaluate)


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
