"""The shapes accuracy budget: train `shapes_tiny` from scratch for 10 minutes, then score it.

    python benchmarks/shapes_budget.py [--minutes 10] [--out runs/shapes_budget]

Target (issue 3): within 10 minutes of training on a 2-core CPU, mask AP50 >= 0.90 and mask AP
(COCO, IoU 0.50:0.95) >= 0.60 on 100 held-out shapes images. Evaluation time is not counted in
the budget. Prints the COCO table and whether each target is met; writes metrics.json in --out.
This is a benchmark, not a test: it takes the machine for ten minutes and its result depends on
the machine, so record the figure together with the machine in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

import torch

from mrcnn_teach.evaluate import format_metrics
from mrcnn_teach.train import get_train_config, train

TARGETS = {("segm", "AP50"): 0.90, ("segm", "AP"): 0.60}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--out", default="runs/shapes_budget")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    cfg = get_train_config("shapes_tiny", max_minutes=args.minutes, device=args.device)
    result = train(cfg, args.out, overwrite=True)
    metrics = result["metrics"]
    print(format_metrics(metrics))
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    print(f"machine: {machine}; trained {result['step']} steps in {args.minutes} min")
    ok = True
    for (kind, name), target in TARGETS.items():
        value = metrics[kind][name]
        met = value >= target
        ok &= met
        print(f"{kind} {name} = {value:.3f}  (target >= {target:.2f}: {'met' if met else 'NOT met'})")
    with open(os.path.join(args.out, "budget.json"), "w") as f:
        json.dump({"machine": machine, "minutes": args.minutes, "steps": result["step"],
                   "metrics": metrics, "targets_met": ok}, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
