"""Training Mask R-CNN (Sec. 3.1, "Training"): one short step function, and the trainer around it.

`training_step` is the whole of what one iteration does -- forward, L = the sum of the five losses,
backward, clip, SGD step -- and is what notebook 09 shows. Everything else in this file makes that
step safe to run for hours: a per-step JSON-lines log, atomic checkpoints (checkpoint.py), exact
resumption (data order, flips and RNG states), a time budget, Ctrl-C that saves first, mixed
precision on GPUs, and data parallelism (distributed.py).

    for each step:  images, targets -> model -> dict of 5 losses -> sum -> backward -> clip -> SGD step

The configuration and the learning-rate schedule are in train_config.py, the datasets and resumable
loaders in train_data.py. Exact resumption rests on three choices:
1. the data order of epoch e is a permutation drawn from a generator seeded with (seed, e), and a
   resumed epoch skips the batches it already trained on (train_data.make_loader);
2. each sample's random flip and scale jitter are drawn from a generator seeded with (seed, epoch, index)
   (train_data.SeededTransforms), so it does not depend on which DataLoader worker loads it;
3. the global RNG (the RPN and RoI samplers draw from it) is saved in the checkpoint and is
   never touched by data loading.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import distributed as dist_utils
from .checkpoint import (CHECKPOINT_NAME, FORMAT, ModelFactory, build_model, capture_rng_state,
                         load_checkpoint, load_model_state, restore_rng_state, save_checkpoint)
# Re-exported: `from mrcnn_teach.train import TrainConfig, get_train_config, ...` keeps working.
from .train_config import (TRAIN_PRESETS, TrainConfig, WarmupStepDecay, build_optimizer, scaled_lr,  # noqa: F401
                           build_scheduler, get_train_config, resume_config)
from .train_data import (SeededTransforms, SkipFirst, build_datasets, class_names_of,  # noqa: F401
                         make_loader, sample_seed, steps_per_epoch)

LOG_NAME = "log.jsonl"
METRICS_NAME = "metrics.json"


def training_step(model, optimizer, images, targets, grad_clip: float | None = 10.0,
                  scaler=None, amp_dtype=None, after_forward=None) -> tuple[dict, float]:
    """One SGD step of Mask R-CNN: forward, L = the sum of the five losses, backward, clip, step.

    images: list of (3, H_i, W_i) tensors; targets: list of dicts with boxes (G_i, 4), labels (G_i,),
    masks (G_i, H_i, W_i). Returns the dict of the five losses and the gradient norm before clipping.
    The optional arguments serve the Trainer below: `scaler` and `amp_dtype` for mixed precision on a
    GPU, `after_forward(loss_dict)` to log, average over GPUs and stop on a NaN before the update.
    """
    with torch.autocast(images[0].device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        loss_dict = model(images, targets)  # 5 scalar losses: the RPN's 2 and the RoI heads' 3
    loss = sum(loss_dict.values())  # () Sec. 3: L = L_cls + L_box + L_mask, plus the RPN's two
    if after_forward is not None:
        after_forward(loss_dict)
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
    else:  # mixed precision: scale up so fp16 gradients do not underflow, unscale before clipping
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    # Clipping the global gradient norm is a seat belt for small-batch runs (the paper has none).
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip)) if grad_clip else math.nan
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)  # skipped by the scaler if AMP produced inf gradients
        scaler.update()
    return loss_dict, grad_norm


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


def _lr_message(cfg: TrainConfig, world_size: int) -> str:
    total = world_size * cfg.batch_size
    if cfg.lr_batch is None:
        return f"lr {cfg.lr:g} as given (total batch {total} = {world_size} x {cfg.batch_size} images)"
    return (f"lr {scaled_lr(cfg, world_size):g} = {cfg.lr:g} x {total} / {cfg.lr_batch} (linear scaling rule: "
            f"lr {cfg.lr:g} is for {cfg.lr_batch} images per step; this run takes {world_size} x {cfg.batch_size})")


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
        from .datasets import Compose, RandomHorizontalFlip, RandomScaleJitter

        augment = ([RandomScaleJitter(cfg.scale_jitter)] if cfg.scale_jitter is not None else []) \
            + ([RandomHorizontalFlip(cfg.hflip)] if cfg.hflip > 0 else [])
        self.train_set = SeededTransforms(train_set, Compose(augment) if augment else None, seed=cfg.seed)

        self.model_name = cfg.model
        given = cfg.model_overrides.get("num_classes")
        if given is not None and given != len(self.class_names):
            raise ValueError(f"model_overrides has num_classes={given!r} but the data has {len(self.class_names)} "
                             f"classes with background ({list(self.class_names)}): leave num_classes out, the "
                             "trainer takes it from the data")
        self.model_overrides = {**cfg.model_overrides, "num_classes": len(self.class_names)}
        model = (build or build_model)(self.model_name, **self.model_overrides)
        if cfg.kernels and hasattr(model, "set_kernels"):
            model.set_kernels(cfg.kernels)
        self.model = model.to(self.device)

        self.steps_per_epoch = steps_per_epoch(len(self.train_set), cfg, self.info.world_size)
        self.optimizer = build_optimizer(self.model, cfg, self.info.world_size)
        self.say(_lr_message(cfg, self.info.world_size))
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
            self._load(ckpt, f"checkpoint {resume}")
        self.ddp_model = dist_utils.wrap_model(self.model, self.info)

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

    def _load(self, ckpt: dict[str, Any], source: str = "the checkpoint") -> None:
        if ckpt["model_name"] != self.model_name:
            raise ValueError(f"{source} is of model {ckpt['model_name']!r}, this run builds {self.model_name!r}")
        if list(ckpt["class_names"]) != list(self.class_names):
            raise ValueError(f"{source} was trained on classes {list(ckpt['class_names'])}, this run's data has "
                             f"{list(self.class_names)}: resume with the same data, or start a new run")
        load_model_state(self.model, ckpt["model"], source)
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
        """`training_step` with what a long run adds: DDP averaging, the NaN check, AMP, the lr schedule.

        `stop_flags()` -> (F,) tensor of this rank's reasons to stop. Returns (loss terms averaged over
        ranks, flags summed over ranks, grad norm).
        """
        images, targets = _to_device(images, targets, self.device)
        seen = {}

        def after_forward(loss_dict):
            # One all-reduce carries the loss terms (for the log and the NaN check) and the stop flags,
            # so every rank decides the same thing at the same step.
            names = list(loss_dict)
            losses = torch.stack([loss_dict[k].detach().float() for k in names])  # (T,)
            flags = stop_flags() if stop_flags is not None else torch.zeros(0)  # (F,)
            reduced = dist_utils.all_reduce_sum(torch.cat([losses, flags.to(losses.device)])).cpu()  # (T + F,)
            seen["terms"] = dict(zip(names, (reduced[: len(names)] / self.info.world_size).tolist()))
            seen["flags"] = reduced[len(names):]  # (F,)
            bad = [f"{k}={v}" for k, v in seen["terms"].items() if not math.isfinite(v)]
            if bad:
                raise FloatingPointError(
                    f"non-finite loss at step {self.step + 1} (epoch {self.epoch + 1}): {', '.join(bad)}. "
                    f"Try a lower --lr or a longer warm-up; the last good checkpoint is {self.checkpoint_path}")
            self.updating = True  # a hard Ctrl-C from here to the counters' update must not save

        _, grad_norm = training_step(self.ddp_model, self.optimizer, images, targets, self.cfg.grad_clip,
                                     scaler=self.scaler, amp_dtype=self.amp_dtype if self.use_amp else None,
                                     after_forward=after_forward)  # DDP averages gradients in backward
        self.scheduler.step()
        return seen["terms"], seen["flags"], grad_norm

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
            # enable_grad: a caller may have turned gradients off (a notebook's torch.set_grad_enabled(False))
            with _GracefulInterrupt(self.say) as interrupt, torch.enable_grad():
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

        if cfg.max_steps is not None and self.step >= cfg.max_steps:  # e.g. resumed at or past max_steps
            return "max_steps"
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
