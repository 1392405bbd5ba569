"""Time a shapes_tiny training step with each kernel set, in one process, and print the ratios.

    python benchmarks/step_time.py [--steps 8] [--batch-size 8] [--set KEY=VALUE ...]

Builds the shapes_tiny model (fresh, seeded) once per kernel set -- "torchvision" (compiled NMS
and RoIAlign), "mixed" (compiled NMS, our RoIAlign), "teaching" (ours for both) -- and times
forward + backward + SGD step on the same batches of built-in shapes images; the first two steps
are warm-up, the median of the rest is printed, with the ratio to "torchvision". `--set` applies
model overrides (e.g. --set "mask_head_channels=(64, 64, 64, 64)") to compare head designs.
A fresh model has few positive RoIs, so the mask head costs less here than late in training.
"""

from __future__ import annotations

import argparse
import ast
import os
import platform
import statistics
import sys
import time

import torch

from mrcnn_teach import build_maskrcnn
from mrcnn_teach.datasets import ShapesDataset, collate_fn


def time_steps(model, batches) -> float:
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.002, momentum=0.9)
    seconds = []
    for images, targets in batches:
        start = time.perf_counter()
        loss = sum(model(list(images), list(targets)).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds[2:])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="steps per kernel set, the first 2 are warm-up")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a model override")
    args = parser.parse_args(argv)
    if args.steps < 3:
        parser.error("--steps must be >= 3 (2 warm-up steps + at least one timed)")
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = ast.literal_eval(value)

    dataset = ShapesDataset(args.steps * args.batch_size, 128, seed=0)
    batches = [collate_fn([dataset[i] for i in range(s * args.batch_size, (s + 1) * args.batch_size)])
               for s in range(args.steps)]
    print(f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"shapes_tiny {overrides or ''} batch {args.batch_size}, median of {args.steps - 2} steps")
    results = {}
    for kernels in ("torchvision", "mixed", "teaching"):
        torch.manual_seed(0)
        results[kernels] = time_steps(build_maskrcnn("shapes_tiny", kernels=kernels, **overrides), batches)
        print(f"  {kernels:<12} {results[kernels]:.3f} s/step   ratio {results[kernels] / results['torchvision']:.2f}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
