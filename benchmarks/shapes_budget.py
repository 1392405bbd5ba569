"""The shapes accuracy budget: train `shapes_tiny` from scratch for 10 minutes, then score it on two sets.

    python benchmarks/shapes_budget.py [--minutes 10] [--out runs/shapes_budget] [--set KEY=VALUE ...]
    python benchmarks/shapes_budget.py --checkpoint runs/demo/checkpoint.pt   # score a trained run only
    python benchmarks/shapes_budget.py --steps 1500   # a budget in steps: what 10 minutes buy on a faster day
    python benchmarks/shapes_budget.py --train-size-range 6 96 --set scale_jitter=None   # the ceiling

Both held-out sets have 100 images drawn with the validation seed (the same scenes), and differ
only in object size (side, or a circle's diameter, in pixels of the 128-px image):
- "in-distribution": 12-48 px, the range the training images are drawn from;
- "0.5x-2x sizes": 6-96 px, half the smallest to twice the largest training size, where a
  model that has only ever seen 12-48 px objects shows whether it learned shapes or sizes.

Targets (issue 13): within 10 minutes of training on a 2-core CPU, mask AP50 >= 0.95 and mask AP
(COCO, IoU 0.50:0.95) >= 0.75 in-distribution, and mask AP50 >= 0.85 on the 0.5x-2x set. Evaluation time is not counted in the budget. `--set` changes TrainConfig fields
(e.g. `--set scale_jitter=None` for the recipe without scale augmentation). Prints both COCO
tables and whether each target is met; writes budget.json in --out. `--train-size-range 6 96` draws
the *training* shapes from the 0.5x-2x range too: not an augmentation (it trains on the test
distribution) but the ceiling an augmentation can hope to reach in the same budget.
This is a benchmark, not a test: it takes the machine for ten minutes and its result depends on
the machine, so record the figure together with the machine in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from unittest import mock

import torch

from mrcnn_teach.checkpoint import load_checkpoint, model_from_checkpoint
from mrcnn_teach.cli import _key_value
from mrcnn_teach.datasets import ShapesDataset
from mrcnn_teach.evaluate import evaluate, format_metrics
from mrcnn_teach.train import TrainConfig, build_datasets, get_train_config, train

WIDE_SIZE_RANGE = (6.0, 96.0)  # 0.5x the smallest and 2x the largest training size (12-48 px)
TARGETS = {  # (set, iou type, metric) -> minimum
    ("in-distribution", "segm", "AP50"): 0.95, ("in-distribution", "segm", "AP"): 0.75,
    ("0.5x-2x sizes", "segm", "AP50"): 0.85,
}


def held_out_sets(cfg: TrainConfig) -> dict[str, ShapesDataset]:
    """The two scoring sets: the run's own held-out images, and the same scenes at 0.5x-2x sizes."""
    return {
        "in-distribution": ShapesDataset(cfg.val_images, cfg.image_size, seed=cfg.val_data_seed),
        "0.5x-2x sizes": ShapesDataset(cfg.val_images, cfg.image_size, seed=cfg.val_data_seed,
                                       size_range=WIDE_SIZE_RANGE),
    }


def training_shapes(size_range):
    """build_datasets, with the training shapes drawn from size_range (None: unchanged)."""
    def build(cfg: TrainConfig):
        train_set, val_set = build_datasets(cfg)
        if size_range is None:
            return train_set, val_set
        return ShapesDataset(cfg.train_images, cfg.image_size, seed=cfg.train_data_seed,
                             size_range=tuple(size_range)), val_set
    return build


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--out", default="runs/shapes_budget")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--set", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                        help="a TrainConfig field, e.g. --set scale_jitter=None")
    parser.add_argument("--steps", type=int, help="train this many steps instead of --minutes, the schedule fitted "
                        "to them (a budget that does not move with the machine's speed)")
    parser.add_argument("--checkpoint", help="score this trained run instead of training one")
    parser.add_argument("--train-size-range", type=float, nargs=2, metavar=("MIN", "MAX"),
                        help="draw the training shapes with this size range (default: 12 48)")
    args = parser.parse_args(argv)

    if args.checkpoint:
        ckpt = load_checkpoint(args.checkpoint)
        cfg = TrainConfig.from_dict(ckpt["train_config"])
        steps, minutes, checkpoint = ckpt["step"], cfg.max_minutes, args.checkpoint
    else:
        budget = dict(max_minutes=args.minutes)
        if args.steps:  # whole epochs for the schedule (milestones at 75% / 90% of them), stop at exactly --steps
            preset = get_train_config("shapes_tiny")
            per_epoch = preset.train_images // preset.batch_size
            budget = dict(max_minutes=None, max_steps=args.steps, epochs=-(-args.steps // per_epoch))
        cfg = get_train_config("shapes_tiny", device=args.device, **{**budget, **dict(args.set)})
        start = time.perf_counter()
        with mock.patch("mrcnn_teach.train.build_datasets", training_shapes(args.train_size_range)):
            result = train(cfg, args.out, overwrite=True, evaluate=False)
        steps, minutes, checkpoint = result["step"], (time.perf_counter() - start) / 60, result["checkpoint"]
    device = "cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    model, _ = model_from_checkpoint(checkpoint, device)

    metrics = {}
    for name, dataset in held_out_sets(cfg).items():
        with torch.no_grad():
            metrics[name] = evaluate(model, dataset, device, cfg.eval_batch_size)
        print(f"--- {name} ({len(dataset)} images, object sizes {dataset.size_range[0]:g}-{dataset.size_range[1]:g} px)")
        print(format_metrics(metrics[name]))
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    took = f" in {minutes:.1f} min" if minutes is not None else ""  # a checkpoint of a step budget has no minutes
    print(f"machine: {machine}; trained {steps} steps{took}; scale_jitter={cfg.scale_jitter}"
          + (f"; training shapes {args.train_size_range}" if args.train_size_range else ""))
    ok = True
    for (name, kind, metric), target in TARGETS.items():
        value = metrics[name][kind][metric]
        met = value >= target
        ok &= met
        print(f"{name:>15}: {kind} {metric:<4} = {value:.3f}  (target >= {target:.2f}: {'met' if met else 'NOT met'})")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "budget.json"), "w") as f:
        json.dump({"command": " ".join(["python benchmarks/shapes_budget.py", *(argv if argv is not None else sys.argv[1:])]),
                   "date": time.strftime("%Y-%m-%d"), "machine": machine, "minutes": minutes, "steps": steps, "checkpoint": str(checkpoint),
                   "scale_jitter": cfg.scale_jitter, "train_size_range": args.train_size_range,
                   "metrics": metrics, "targets_met": ok}, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
