"""DataLoader worker processes against none, for the cached model's recipe on this machine.

    python benchmarks/loader_workers.py [--steps 100] [--rounds 2] [--workers 0 2]

Trains the first `--steps` steps of `mrcnn_teach.pretrained.train_config()` (the notebooks' model)
once per worker count per round, the counts alternating so that drift in the machine's speed hits
them alike; prints the median seconds of each, the ratio to the first count, and the largest weight
difference from the first count's model (0.0: the same weights to the last bit, as the per-sample
seeding of train_data.py promises).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from mrcnn_teach import pretrained
from mrcnn_teach.checkpoint import load_checkpoint
from mrcnn_teach.train import train


def run(steps: int, workers: int) -> tuple[float, dict]:
    cfg = dataclasses.replace(pretrained.train_config(), max_steps=steps, workers=workers).validate()
    with tempfile.TemporaryDirectory(prefix="loader-workers-") as tmp:
        start = time.perf_counter()
        result = train(cfg, Path(tmp), evaluate=False, quiet=True)
        seconds = time.perf_counter() - start
        return seconds, load_checkpoint(result["checkpoint"])["model"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args(argv)

    print(f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{args.steps} steps of the cached model's recipe, {args.rounds} rounds", flush=True)
    seconds = {w: [] for w in args.workers}
    weights = {}
    for _ in range(args.rounds):
        for w in args.workers:
            t, weights[w] = run(args.steps, w)
            seconds[w].append(t)
            print(f"  workers={w}: {t:.1f} s", flush=True)
    first = args.workers[0]
    for w in args.workers:
        median = statistics.median(seconds[w])
        diff = max((weights[w][k].float() - weights[first][k].float()).abs().max().item() for k in weights[first])
        print(f"workers={w}: median {median:.1f} s ({median / args.steps:.3f} s/step), ratio "
              f"{median / statistics.median(seconds[first]):.2f}, largest weight difference from workers={first}: {diff}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
