"""Command line: `python -m mrcnn_teach {train,evaluate,predict,demo}`.

    python -m mrcnn_teach train --config shapes_tiny --out runs/shapes [--max-minutes 10]
    python -m mrcnn_teach train --resume runs/shapes/checkpoint.pt
    python -m mrcnn_teach evaluate --checkpoint runs/shapes/checkpoint.pt [--data DIR]
    python -m mrcnn_teach predict --checkpoint runs/shapes/checkpoint.pt a.png b.png --out preds/
    python -m mrcnn_teach demo --out runs/demo [--max-minutes 5]
    torchrun --nproc_per_node=2 -m mrcnn_teach train --config shapes_tiny --out runs/ddp

Each command is a thin layer over the library (train.train, evaluate.evaluate, visualize), so
everything it does can also be done from a notebook.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

from . import distributed as dist_utils
from .checkpoint import CHECKPOINT_NAME, load_checkpoint, model_from_checkpoint
from .train import (METRICS_NAME, TRAIN_PRESETS, TrainConfig, build_datasets, class_names_of, get_train_config,
                    resume_config, train, write_metrics)

EXIT_ERROR, EXIT_INTERRUPTED = 2, 130


# ============================================================================= arguments

def _key_value(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set wants KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        parsed = ast.literal_eval(value)  # numbers, tuples, dicts, None, True ...
    except (ValueError, SyntaxError):
        parsed = value  # a bare string
    return key.strip(), parsed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mrcnn_teach",
                                     description="Mask R-CNN, one readable stage at a time.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train (or resume) a model")
    p.add_argument("--config", default=None, help=f"training preset: {', '.join(TRAIN_PRESETS)} (default shapes_tiny)")
    p.add_argument("--out", default=None, help="run directory (log.jsonl, checkpoint.pt, metrics.json)")
    _add_train_options(p)
    p.add_argument("--resume", nargs="?", const="", default=None, metavar="CHECKPOINT",
                   help="continue a run exactly (default: OUT/checkpoint.pt)")
    p.add_argument("--overwrite", action="store_true", help="start again even if OUT has a checkpoint")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation after training")

    p = sub.add_parser("evaluate", help="COCO AP of a checkpoint")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", default=None,
                   help="COCO dir (images/ + annotations.json); default: the run's held-out images")
    p.add_argument("--out", default=None, help=f"metrics JSON file (default: {METRICS_NAME} next to the checkpoint)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--kernels", choices=("teaching", "torchvision", "mixed"), default=None)

    p = sub.add_parser("predict", help="draw a checkpoint's detections on images (NAME.png) and list them (NAME.json)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--out", required=True, help="directory for NAME.png pictures")
    p.add_argument("--score-thresh", type=float, default=0.5)
    p.add_argument("--device", default="auto")
    p.add_argument("--kernels", choices=("teaching", "torchvision", "mixed"), default=None)

    p = sub.add_parser("demo", help="train shapes_tiny, evaluate, draw predictions and losses")
    p.add_argument("--out", default="runs/demo")
    _add_train_options(p)
    return parser


def _add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    p.add_argument("--epochs", type=int, default=None,
                   help="train this many epochs (no time budget unless --max-minutes)")
    p.add_argument("--max-minutes", type=float, default=None, help="time budget; then checkpoint and evaluate")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (schedule unchanged)")
    p.add_argument("--batch-size", type=int, default=None, help="images per step per process")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate for the preset's lr_batch images per step; scaled with the total batch")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="mixed precision (CUDA)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader worker processes")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--data", default=None, help="COCO dir (images/ + annotations.json); default: built-in shapes")
    p.add_argument("--val-data", default=None, help="COCO dir to evaluate on (default: hold out images of --data)")
    p.add_argument("--kernels", choices=("teaching", "torchvision", "mixed"), default=None)
    p.add_argument("--set", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="any TrainConfig field, e.g. --set train_images=200 --set \"model_overrides={'min_size': 96}\"")


def _overrides(args) -> dict:
    """TrainConfig fields given on the command line (None = not given)."""
    flags = dict(device=args.device, epochs=args.epochs, max_minutes=args.max_minutes, max_steps=args.max_steps,
                 batch_size=args.batch_size, lr=args.lr, amp=args.amp, workers=args.workers, seed=args.seed,
                 data=args.data, val_data=args.val_data, kernels=args.kernels)
    values = {k: v for k, v in flags.items() if v is not None}
    if args.epochs is not None and args.max_minutes is None:
        values["max_minutes"] = None  # --epochs N means N epochs: drop the preset's time budget
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for key, value in args.set:
        if key not in known:
            raise ValueError(f"--set {key}: not a TrainConfig field; fields: {sorted(known)}")
        values[key] = value
    return values


# ============================================================================= commands

def cmd_train(args) -> int:
    overrides = _overrides(args)
    resume = None
    if args.resume is not None:
        if args.resume == "":
            if args.out is None:
                raise ValueError("--resume without a path needs --out (the run directory)")
            resume = Path(args.out) / CHECKPOINT_NAME
        else:
            resume = Path(args.resume)
        ckpt = load_checkpoint(resume)
        if args.config is not None:
            print("note: --config is ignored with --resume (the checkpoint's own config is used)", file=sys.stderr)
        cfg = resume_config(ckpt, **overrides)
        out = Path(args.out) if args.out is not None else resume.parent
    else:
        if args.out is None:
            raise ValueError("train needs --out DIR (where the log and checkpoints go)")
        cfg = get_train_config(args.config or "shapes_tiny", **overrides)
        out = Path(args.out)
    try:
        train(cfg, out, resume=resume, evaluate=not args.no_eval, overwrite=args.overwrite)
    finally:
        dist_utils.cleanup()
    return 0


def _eval_dataset(ckpt: dict, data: str | None):
    """The run's held-out images, or every image of the COCO directory `data`."""
    cfg = TrainConfig.from_dict(ckpt["train_config"])
    if data is not None:
        cfg = dataclasses.replace(cfg, data=data, val_data=data)
    _, val = build_datasets(cfg)
    names = class_names_of(val)
    if len(names) != len(ckpt["class_names"]):
        raise ValueError(f"--data has {len(names) - 1} classes {list(names[1:])}, the model was trained on "
                         f"{len(ckpt['class_names']) - 1}: {list(ckpt['class_names'][1:])}")
    return val, cfg


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate, format_metrics

    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    ckpt = load_checkpoint(args.checkpoint)
    device = dist_utils.pick_device(args.device)
    model, ckpt = model_from_checkpoint(ckpt, device, kernels=args.kernels)
    dataset, cfg = _eval_dataset(ckpt, args.data)
    metrics = evaluate(model, dataset, device, args.batch_size or cfg.eval_batch_size)
    print(format_metrics(metrics))
    checkpoint = Path(args.checkpoint)
    out = Path(args.out) if args.out else (checkpoint if checkpoint.is_dir() else checkpoint.parent) / METRICS_NAME
    print(f"wrote {write_metrics(metrics, out)}")
    return 0


def read_image(path: str) -> torch.Tensor:
    """An image file as a (3, H, W) float tensor in [0, 1]."""
    from PIL import Image

    if Path(path).is_dir():
        raise ValueError(f"{path} is a directory; predict wants image files (e.g. {path}/*.png)")
    if not Path(path).is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            pixels = np.asarray(im.convert("RGB"))  # (H, W, 3) uint8
    except OSError as err:
        raise ValueError(f"{path}: not an image file PIL can read ({err})") from err
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 255.0  # (3, H, W)


def cmd_predict(args) -> int:
    import matplotlib.pyplot as plt

    from .visualize import draw_instances

    if not 0 <= args.score_thresh <= 1:
        raise ValueError(f"--score-thresh is a score in [0, 1], got {args.score_thresh:g}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; predict writes NAME.png pictures into a directory")
    stems: dict[str, str] = {}
    for path in args.images:  # a.png and other/a.png would both write OUT/a.png
        if Path(path).stem in stems:
            raise ValueError(f"{stems[Path(path).stem]} and {path} would both be drawn to {out / Path(path).stem}.png; "
                             "predict them in two runs with different --out")
        stems[Path(path).stem] = path
    images = [read_image(p) for p in args.images]  # check every path before the slow part
    for path in args.images:  # after read_image: a missing or unreadable input is the first thing to say
        if (out / f"{Path(path).stem}.png").resolve() == Path(path).resolve():
            raise ValueError(f"--out {out} holds the input {path}: its picture {Path(path).stem}.png would "
                             "overwrite the image; choose another --out")
    device = dist_utils.pick_device(args.device)
    model, ckpt = model_from_checkpoint(args.checkpoint, device, kernels=args.kernels)
    out.mkdir(parents=True, exist_ok=True)
    for path, image in zip(args.images, images):
        with torch.no_grad():
            pred = {k: v.cpu() for k, v in model([image.to(device)])[0].items()}
        height, width = image.shape[-2:]
        fig, ax = plt.subplots(figsize=(6 * width / max(height, width), 6 * height / max(height, width)))
        draw_instances(ax, image, pred["boxes"], pred["labels"], pred["scores"], pred["masks"],
                       ckpt["class_names"], score_thresh=args.score_thresh)
        kept = int((pred["scores"] >= args.score_thresh).sum())
        ax.set_title(f"{Path(path).name}: {kept} instances (score >= {args.score_thresh:g})")
        target = out / f"{Path(path).stem}.png"
        fig.savefig(target, dpi=100, bbox_inches="tight")
        plt.close(fig)
        # The numbers behind the picture, for a program to read: every detection, in the image's pixels.
        detections = [{"box": [round(v, 2) for v in box.tolist()], "label": int(label),
                       "class": ckpt["class_names"][int(label)], "score": round(float(score), 4),
                       "mask_pixels": int((mask[0] >= 0.5).sum())}
                      for box, label, score, mask in zip(pred["boxes"], pred["labels"], pred["scores"], pred["masks"])]
        (out / f"{Path(path).stem}.json").write_text(json.dumps(
            {"image": Path(path).name, "height": int(height), "width": int(width), "detections": detections}, indent=1))
        print(f"wrote {target} and {target.with_suffix('.json').name}")
    return 0


def cmd_demo(args) -> int:
    """Train shapes_tiny, evaluate on held-out shapes, draw predictions and the loss curves."""
    import matplotlib.pyplot as plt

    from .visualize import plot_losses, show_predictions

    overrides = _overrides(args)
    cfg = get_train_config("shapes_tiny", **overrides)
    out = Path(args.out)
    device = dist_utils.pick_device(cfg.device)
    print(f"demo: training shapes_tiny on {device} for up to {cfg.epochs} epochs"
          + (f" or {cfg.max_minutes:g} minutes" if cfg.max_minutes else "") + f"; writing to {out}")
    try:
        result = train(cfg, out, overwrite=True)
    finally:
        dist_utils.cleanup()

    model, ckpt = model_from_checkpoint(result["checkpoint"], device)
    _, val = build_datasets(cfg)
    samples = [val[i] for i in range(min(4, len(val)))]
    with torch.no_grad():
        preds = model([img.to(device) for img, _ in samples])
    preds = [{k: v.cpu() for k, v in p.items()} for p in preds]
    fig = show_predictions([img for img, _ in samples], [t for _, t in samples], preds, ckpt["class_names"])
    fig.savefig(out / "predictions.png", dpi=100)
    plt.close(fig)
    fig = plot_losses(out / "log.jsonl")
    fig.savefig(out / "losses.png", dpi=100)
    plt.close(fig)
    print(f"wrote {out / METRICS_NAME}, {out / 'predictions.png'}, {out / 'losses.png'}")
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt as err:
        print(f"\n{str(err) or 'interrupted'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, OSError, FloatingPointError) as err:  # OSError: missing files, unwritable --out ...
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERROR
