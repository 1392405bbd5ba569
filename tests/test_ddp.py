"""Data-parallel training: `torchrun --nproc_per_node=2 -m mrcnn_teach train` on CPU (Gloo backend)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from mrcnn_teach.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = dict(
    min_size=64, max_size=64, fpn_channels=32,
    rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50, rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20,
    rpn_batch_size_per_image=32, box_batch_size_per_image=32, representation_size=64,
    mask_head_channels=(32, 32), mask_dim_reduced=32, box_detections_per_img=10,
)


@pytest.mark.slow
def test_two_process_gloo_run_writes_one_checkpoint_and_one_log(tmp_path):
    assert dist.is_available() and dist.is_gloo_available()
    out = tmp_path / "ddp"
    # 6 images over 2 ranks of batch 1 -> 3 steps, each step sees 2 images (one per rank).
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "mrcnn_teach", "train", "--config", "shapes_tiny", "--out", str(out), "--device", "cpu",
           "--epochs", "1", "--batch-size", "1", "--workers", "0",
           "--set", "train_images=6", "--set", "val_images=2", "--set", "image_size=64",
           "--set", "warmup_steps=1", "--set", f"model_overrides={TINY_MODEL!r}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    if sys.platform.startswith("linux"):  # containers whose hostname does not resolve: talk over loopback
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # Only rank 0 wrote files, and printed: one "stopped" line, one AP table.
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "log.jsonl", "metrics.json", "train_config.json"]
    assert proc.stdout.count("stopped (done) at step 3/3") == 1
    assert proc.stdout.count("segm") == 1
    records = [json.loads(line) for line in open(out / "log.jsonl")]
    assert [r["step"] for r in records] == [1, 2, 3]

    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert (ckpt["world_size"], ckpt["step"], ckpt["epoch"]) == (2, 3, 1)
    assert len(ckpt["rng"]) == 2  # each rank's generators, so a resumed DDP run continues exactly
    assert not any(k.startswith("module.") for k in ckpt["model"])  # saved unwrapped from DDP
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
