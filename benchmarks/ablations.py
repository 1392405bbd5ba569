"""Mask R-CNN's Table 2 in miniature: the paper's mask-branch ablations, trained from scratch on shapes.

    python benchmarks/ablations.py                      # 4 variants x 3 seeds, 500 steps each
    python benchmarks/ablations.py --steps 200 --seeds 0 --jobs 2 --out /tmp/abl.json   # a quick look

Variants (one option changed from the shapes_tiny baseline each, everything else identical):

    baseline        per-class sigmoid masks, RoIAlign            (the paper's Mask R-CNN)
    softmax         a softmax over classes per pixel             (Table 2b: 30.3 -> 24.8 mask AP)
    roi_pool        RoIPool instead of RoIAlign in both heads    (Table 2c: 30.3 -> 26.9)
    class_agnostic  one mask per RoI instead of one per class    (Sec. 4.2: 30.3 -> 29.7)

Every run uses the recipe of the notebooks' cached model (`mrcnn_teach.pretrained.train_config`: a fixed
number of steps, so the comparison does not depend on the machine's load), with its own seed (weights,
data order, flips, RoI sampling). Each run is evaluated with COCO AP on the same 100 held-out images.
Each finished run is saved next to the output as it completes, so an interrupted benchmark resumes
where it stopped. The JSON (default benchmarks/results/ablations.json) holds every run, the mean and
spread per variant, the paper's numbers and the machine; notebook 12 reads it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "baseline": {},
    "softmax": {"mask_loss": "softmax"},
    "roi_pool": {"roi_layer": "pool"},
    "class_agnostic": {"class_agnostic_masks": True},
}
# Mask R-CNN (He et al. 2017), Table 2b/2c and Sec. 4.2: mask AP on COCO minival, ResNet-50-C4.
PAPER = {
    "baseline": {"AP": 30.3, "AP50": 51.2, "AP75": 31.5},
    "softmax": {"AP": 24.8, "AP50": 44.1, "AP75": 25.1},
    "roi_pool": {"AP": 26.9, "AP50": 48.8, "AP75": 26.4},
    "class_agnostic": {"AP": 29.7},
}
METRICS = ("AP", "AP50", "AP75")


def run_one(variant: str, seed: int, steps: int, out: Path, threads: int) -> dict:
    """Train and evaluate one (variant, seed) in this process; write its JSON to `out`."""
    import torch

    torch.set_num_threads(threads)
    from mrcnn_teach.pretrained import train_config
    from mrcnn_teach.train import train

    cfg = dataclasses.replace(train_config(steps), seed=seed, model_overrides=dict(VARIANTS[variant]),
                              workers=0).validate()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        result = train(cfg, run_dir, evaluate=True, quiet=True)
    metrics = result["metrics"]
    record = {
        "variant": variant, "seed": seed, "steps": result["step"], "seconds": round(time.perf_counter() - start, 1),
        "mask": {k: metrics["segm"][k] for k in METRICS}, "box": {k: metrics["bbox"][k] for k in METRICS},
    }
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, out)  # a finished run is never half-written
    return record


def summarise(runs: list[dict]) -> dict:
    summary = {}
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        if not mine:
            continue
        summary[variant] = {}
        for kind in ("mask", "box"):
            summary[variant][kind] = {}
            for k in METRICS:
                values = [r[kind][k] for r in mine]
                summary[variant][kind][k] = {
                    "mean": statistics.fmean(values),
                    "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "min": min(values), "max": max(values), "n": len(values),
                }
    return summary


def machine() -> str:
    return (f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=500, help="training steps of 8 images per run")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (each gets cores/jobs threads)")
    parser.add_argument("--out", default="benchmarks/results/ablations.json")
    parser.add_argument("--one", nargs=2, metavar=("VARIANT", "SEED"), help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    out = Path(args.out)
    runs_dir = out.with_suffix("")  # benchmarks/results/ablations/ holds one JSON per finished run
    if args.one:
        variant, seed = args.one[0], int(args.one[1])
        run_one(variant, seed, args.steps, runs_dir / f"{variant}-seed{seed}-{args.steps}steps.json",
                args.threads or os.cpu_count())
        return 0

    runs_dir.mkdir(parents=True, exist_ok=True)
    todo = [(v, s) for s in args.seeds for v in args.variants]
    path_of = {job: runs_dir / f"{job[0]}-seed{job[1]}-{args.steps}steps.json" for job in todo}
    pending = [job for job in todo if not path_of[job].exists()]
    print(f"{len(todo)} runs of {args.steps} steps, {len(todo) - len(pending)} already done; "
          f"{args.jobs} at a time on {machine()}", flush=True)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    running: list[tuple[tuple, subprocess.Popen, float]] = []
    while pending or running:
        while pending and len(running) < args.jobs:
            job = pending.pop(0)
            cmd = [sys.executable, __file__, "--one", job[0], str(job[1]), "--steps", str(args.steps),
                   "--out", str(out), "--threads", str(threads)]
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            running.append((job, subprocess.Popen(cmd, env=env), time.perf_counter()))
        time.sleep(2)
        for entry in list(running):
            job, proc, t0 = entry
            if proc.poll() is None:
                continue
            running.remove(entry)
            if proc.returncode != 0:
                print(f"run {job} failed with exit code {proc.returncode}", file=sys.stderr)
                return 1
            record = json.loads(path_of[job].read_text())
            print(f"  {job[0]:<15} seed {job[1]}: mask AP {record['mask']['AP']:.3f} AP50 "
                  f"{record['mask']['AP50']:.3f} AP75 {record['mask']['AP75']:.3f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)

    runs = [json.loads(path_of[job].read_text()) for job in todo]
    summary = summarise(runs)
    result = {
        "command": "python benchmarks/ablations.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.date.today().isoformat(), "machine": machine(),
        "torch": __import__("torch").__version__,
        "recipe": f"shapes_tiny from scratch, {args.steps} steps of 8 images (mrcnn_teach.pretrained.train_config), "
                  "COCO AP on 100 held-out shapes images",
        "seeds": args.seeds, "variants": {v: VARIANTS[v] for v in args.variants},
        "paper_mask_AP": PAPER, "runs": runs, "summary": summary,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nmask AP, mean ± std over seeds {args.seeds} ({args.steps} steps):")
    for variant, s in summary.items():
        m = s["mask"]
        paper = PAPER[variant].get("AP")
        print(f"  {variant:<15} AP {m['AP']['mean']:.3f} ± {m['AP']['std']:.3f}   AP50 {m['AP50']['mean']:.3f} ± "
              f"{m['AP50']['std']:.3f}   AP75 {m['AP75']['mean']:.3f} ± {m['AP75']['std']:.3f}   paper AP {paper}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
