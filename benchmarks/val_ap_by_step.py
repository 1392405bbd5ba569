"""Held-out AP of the notebooks' cached model along its own training run (notebook 09 draws it).

    python benchmarks/val_ap_by_step.py [--every 100] [--json benchmarks/results/val_ap_by_step.json]

Trains the cached model's recipe (`mrcnn_teach.pretrained.train_config()`, 700 steps) in stops of
`--every` steps: each stop is a resume of the same run (`resume_config`, max_steps only), which on a
CPU continues it exactly (tests/test_train.py: k + k steps equal 2k steps), so the stops do not change
the run. After each stop it scores the checkpoint with COCOeval on the 100 held-out shapes images
(data seed 1) that the notebooks use. At the end it compares the last checkpoint's weights with the
cached model's file, when one is in the cache: on the same machine they are the same run.

This is a benchmark, not a test: it takes the machine for minutes (the cached model's training plus
one evaluation per stop). The AP figures do not depend on the machine's load; the times do.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from mrcnn_teach import pretrained
from mrcnn_teach.checkpoint import load_checkpoint, model_from_checkpoint
from mrcnn_teach.datasets import ShapesDataset
from mrcnn_teach.evaluate import evaluate
from mrcnn_teach.train import train
from mrcnn_teach.train_config import resume_config


def scores(checkpoint: Path, val) -> dict[str, float]:
    model, _ = model_from_checkpoint(load_checkpoint(checkpoint))
    metrics = evaluate(model.eval(), val, batch_size=10)
    return {f"{kind}_{name}": float(metrics[iou][name]) for kind, iou in (("box", "bbox"), ("mask", "segm"))
            for name in ("AP", "AP50", "AP75")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--every", type=int, default=100, help="steps between two evaluations")
    parser.add_argument("--steps", type=int, default=pretrained.DEFAULT_STEPS, help="the recipe's step count")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if args.every < 1 or args.steps < 1:
        parser.error("--every and --steps must be >= 1")

    cfg = pretrained.train_config(args.steps)
    val = ShapesDataset(100, seed=1)
    rows, start = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run, checkpoint = Path(tmp) / "run", None
        for stop in [*range(args.every, args.steps, args.every), args.steps]:
            if checkpoint is None:
                result = train(dataclasses.replace(cfg, max_steps=stop), run, evaluate=False, quiet=True)
            else:
                result = train(resume_config(load_checkpoint(checkpoint), max_steps=stop), run,
                               resume=checkpoint, evaluate=False, quiet=True)
            checkpoint = Path(result["checkpoint"])
            assert result["step"] == stop, f"the run stopped at step {result['step']}, not {stop}"
            row = {"step": stop, **scores(checkpoint, val), "seconds": time.perf_counter() - start}
            rows.append(row)
            print(f"step {stop:4d}: box AP50 {row['box_AP50']:.3f}  mask AP50 {row['mask_AP50']:.3f}  "
                  f"mask AP {row['mask_AP']:.3f}   ({row['seconds']:.0f} s)", flush=True)
        final = load_checkpoint(checkpoint)["model"]

    cached = pretrained.checkpoint_path(args.steps)
    same = None
    if cached.exists():
        mine = load_checkpoint(cached)["model"]
        same = max(float((final[k].float() - mine[k].float()).abs().max()) for k in mine if mine[k].is_floating_point())
        print(f"last checkpoint vs the cached model {cached.name}: largest weight difference {same:.3g}")
    report = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv or sys.argv[1:])]),
              "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
              f"{platform.system()} {platform.release()}, Python {platform.python_version()}", "torch": torch.__version__,
              "recipe": f"mrcnn_teach.pretrained.train_config({args.steps})", "val": "100 held-out shapes images, seed 1",
              "max_weight_difference_to_cached_model": same, "rows": rows}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
