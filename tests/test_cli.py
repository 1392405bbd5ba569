"""`python -m mrcnn_teach`: train -> resume -> evaluate -> predict -> demo on a tiny budget, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mrcnn_teach import cli
from mrcnn_teach.checkpoint import load_checkpoint
from mrcnn_teach.datasets import ShapesDataset

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = dict(
    min_size=64, max_size=64, fpn_channels=32,
    rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50, rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20,
    rpn_batch_size_per_image=32, box_batch_size_per_image=32, representation_size=64,
    mask_head_channels=(32, 32), mask_dim_reduced=32, box_detections_per_img=10,
)
# 4 training images, batch 2: 2 steps per epoch.
TINY_FLAGS = ["--device", "cpu", "--epochs", "1", "--batch-size", "2", "--workers", "0",
              "--set", "train_images=4", "--set", "val_images=2", "--set", "image_size=64",
              "--set", "warmup_steps=1", "--set", f"model_overrides={TINY_MODEL!r}"]


def run_module(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "mrcnn_teach", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def write_images(folder: Path, n: int) -> list[str]:
    folder.mkdir()
    paths = []
    for i in range(n):
        image, _ = ShapesDataset(n, image_size=64, seed=5)[i]
        path = folder / f"shape{i}.png"
        Image.fromarray((image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


@pytest.mark.slow
def test_train_resume_evaluate_predict(tmp_path, capsys):
    run = tmp_path / "run"
    # The real entry point, as a user types it; stopped after 1 of its 2 steps.
    proc = run_module("train", "--config", "shapes_tiny", "--out", str(run), "--max-steps", "1", "--no-eval", *TINY_FLAGS)
    assert proc.returncode == 0, proc.stderr
    assert "stopped (max_steps) at step 1/2" in proc.stdout
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 1

    # --resume without a path continues OUT/checkpoint.pt, then evaluates on the held-out images.
    assert cli.main(["train", "--out", str(run), "--resume", "--device", "cpu"]) == 0
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 2
    assert [r["step"] for r in map(json.loads, open(run / "log.jsonl"))] == [1, 2]
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) >= {"bbox", "segm"} and "AP50" in metrics["segm"]

    capsys.readouterr()
    assert cli.main(["evaluate", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(tmp_path / "m.json")]) == 0
    printed = capsys.readouterr().out
    assert "bbox" in printed and "segm" in printed and "AP50" in printed
    assert json.loads((tmp_path / "m.json").read_text()).keys() == metrics.keys()

    images = write_images(tmp_path / "images", 2)
    assert cli.main(["predict", "--checkpoint", str(run / "checkpoint.pt"), *images, "--out", str(tmp_path / "preds")]) == 0
    assert sorted(p.name for p in (tmp_path / "preds").iterdir()) == ["shape0.json", "shape0.png", "shape1.json", "shape1.png"]
    assert Image.open(tmp_path / "preds" / "shape0.png").size[0] > 100
    listed = json.loads((tmp_path / "preds" / "shape0.json").read_text())
    assert listed["image"] == "shape0.png" and (listed["height"], listed["width"]) == Image.open(images[0]).size[::-1]
    for det in listed["detections"]:
        assert set(det) == {"box", "label", "class", "score", "mask_pixels"} and 0 <= det["score"] <= 1
    # An --out that holds the images would overwrite them with their pictures: refused before any work.
    assert cli.main(["predict", "--checkpoint", str(run / "checkpoint.pt"), images[0], "--out",
                     str(Path(images[0]).parent)]) == cli.EXIT_ERROR
    assert "would overwrite the image" in capsys.readouterr().err


def test_demo_writes_metrics_and_pictures(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out), *TINY_FLAGS]) == 0
    assert "segm" in capsys.readouterr().out  # the AP table
    for name in ("metrics.json", "predictions.png", "losses.png", "checkpoint.pt", "log.jsonl"):
        assert (out / name).is_file(), name


def test_bad_input_gives_clear_errors(tmp_path, capsys):
    assert cli.main(["evaluate", "--checkpoint", str(tmp_path / "nope.pt")]) == cli.EXIT_ERROR
    assert "checkpoint not found" in capsys.readouterr().err
    assert cli.main(["train", "--config", "nope", "--out", str(tmp_path / "x")]) == cli.EXIT_ERROR
    assert "unknown training config 'nope'" in capsys.readouterr().err
    assert cli.main(["train", "--out", str(tmp_path / "x"), "--set", "learning_rate=1"]) == cli.EXIT_ERROR
    assert "not a TrainConfig field" in capsys.readouterr().err
    assert cli.main(["train", "--config", "shapes_tiny"]) == cli.EXIT_ERROR
    assert "--out" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"junk")
    image = write_images(tmp_path / "images", 1)[0]
    assert cli.main(["predict", "--checkpoint", str(tmp_path / "junk.pt"), image, "--out", str(tmp_path)]) == cli.EXIT_ERROR
    assert "not a readable mrcnn_teach checkpoint" in capsys.readouterr().err
    (tmp_path / "text.png").write_text("not pixels")
    assert cli.main(["predict", "--checkpoint", str(tmp_path / "junk.pt"), str(tmp_path / "text.png"),
                     "--out", str(tmp_path)]) == cli.EXIT_ERROR
    assert "not an image file" in capsys.readouterr().err
    assert cli.main(["predict", "--checkpoint", "x.pt", str(tmp_path / "missing.png"), "--out", str(tmp_path)]) == 2
    assert "image not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: unknown subcommand
        cli.main(["fly"])


@pytest.mark.slow
def test_coco_directory_train_and_evaluate(tmp_path, capsys):
    from mrcnn_teach.datasets import export_coco

    export_coco(ShapesDataset(6, image_size=64, seed=3), tmp_path / "coco")
    run = tmp_path / "run"
    # No --val-data: 2 of the 6 images are held out (val_images=2) for evaluation.
    assert cli.main(["train", "--out", str(run), "--data", str(tmp_path / "coco"), *TINY_FLAGS]) == 0
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["class_names"] == ["background", "square", "circle", "triangle"] and ckpt["step"] == 2
    assert cli.main(["evaluate", "--checkpoint", str(run / "checkpoint.pt"), "--data", str(tmp_path / "coco")]) == 0
    assert json.loads((run / "metrics.json").read_text())["segm"].keys() >= {"AP", "AP50"}
    assert cli.main(["train", "--out", str(tmp_path / "r2"), "--data", str(tmp_path)]) == cli.EXIT_ERROR
    assert "images/ and annotations.json" in capsys.readouterr().err
