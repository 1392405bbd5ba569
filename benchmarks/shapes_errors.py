"""Where a trained shapes model goes wrong: per-class AP, confusions, and a class-agnostic NMS check.

    python benchmarks/shapes_errors.py runs/demo/checkpoint.pt [--images 100] [--seed 1] [--size-range 6 96]

Runs the checkpoint on the held-out shapes images (seed 1, as the trainer holds them out) and prints:
* how much of its objects the set shows: the share left less than 60% visible by the shapes on top;
* COCO box/mask AP per class;
* for each ground-truth object, the class of the best-overlapping detection with score > 0.5
  (box IoU >= 0.5; "miss" when there is none), as a confusion table, and how many objects also
  have a *wrong-class* detection on top of them;
* the same per object size (side, or diameter, as drawn): how many objects are found and how many
  of those get the right class, for each size band;
* AP again after an extra class-agnostic NMS at several IoU thresholds: does removing
  cross-class duplicates help, or does it throw away the right class?
--size-range draws the held-out shapes with other sizes (ShapesDataset's size_range).
benchmarks/README.md quotes these figures for the runs that tuned the shapes_tiny preset.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from torchvision.ops import box_iou, nms

from mrcnn_teach.checkpoint import model_from_checkpoint
from mrcnn_teach.datasets import ShapesDataset, shape_mask
from mrcnn_teach.evaluate import dataset_to_coco, evaluate_predictions


def confusion(dataset, predictions, num_classes: int, score: float = 0.5):
    """-> table (K+1, K+1): rows GT class, columns class of the best detection (0 = miss); objects with a wrong-class hit."""
    table = torch.zeros(num_classes, num_classes, dtype=torch.long)  # (K+1, K+1)
    wrong = 0
    for index, pred in predictions.items():
        target = dataset[index][1]
        keep = pred["scores"] > score
        boxes, labels = pred["boxes"][keep], pred["labels"][keep]  # (D, 4), (D,)
        iou = box_iou(target["boxes"], boxes)  # (G, D)
        hit = iou >= 0.5  # (G, D)
        best = torch.where(hit, iou, -1.0).argmax(dim=1) if boxes.shape[0] else None  # (G,)
        for g, gt_label in enumerate(target["labels"].tolist()):  # <= 4 objects per image
            if best is None or not hit[g].any():
                table[gt_label, 0] += 1
                continue
            table[gt_label, labels[best[g]]] += 1
            wrong += int((labels[hit[g]] != gt_label).any())
    return table, wrong


SIZE_BANDS = (6, 12, 24, 48, 72, 97)  # object size (px in a 128-px image) band edges


def by_size(dataset, predictions, score: float = 0.5):
    """-> rows (band, objects, found, right class): per GT object, its best detection as in `confusion`."""
    sizes, found, right = [], [], []
    for index, pred in predictions.items():
        target = dataset[index][1]
        _, _, shapes = dataset.scene(index)  # the drawn shapes, in annotation order
        keep = pred["scores"] > score
        iou = box_iou(target["boxes"], pred["boxes"][keep])  # (G, D)
        hit = iou >= 0.5  # (G, D)
        best = torch.where(hit, iou, -1.0).argmax(dim=1) if hit.shape[1] else None  # (G,)
        for g, shape in enumerate(shapes):
            sizes.append(shape.size)
            found.append(bool(best is not None and hit[g].any()))
            right.append(found[-1] and int(pred["labels"][keep][best[g]]) == shape.label)
    sizes, found, right = torch.tensor(sizes), torch.tensor(found), torch.tensor(right)
    scale = dataset.image_size / 128
    rows = []
    for lo, hi in zip(SIZE_BANDS[:-1], SIZE_BANDS[1:]):
        band = (sizes >= lo * scale) & (sizes < hi * scale)  # (N,)
        rows.append((f"{lo}-{hi} px", int(band.sum()), int((band & found).sum()), int((band & right).sum())))
    return rows


def partly_hidden(dataset, below: float = 0.6) -> tuple[int, int]:
    """(objects, objects with less than `below` of their full area visible) in the dataset."""
    objects = hidden = 0
    for index in range(len(dataset)):
        _, visible, shapes = dataset.scene(index)  # (N, H, W) bool visible masks, N shapes
        full = np.stack([shape_mask(s, *visible.shape[1:]) for s in shapes])  # (N, H, W) before occlusion
        fraction = visible.sum(axis=(1, 2)) / full.sum(axis=(1, 2))  # (N,)
        objects, hidden = objects + len(shapes), hidden + int((fraction < below).sum())
    return objects, hidden


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1, help="shapes seed of the held-out set (the trainer's val_data_seed)")
    parser.add_argument("--size-range", type=float, nargs=2, default=(12.0, 48.0), metavar=("MIN", "MAX"),
                        help="object sizes of the held-out shapes (default: the training range 12 48)")
    args = parser.parse_args(argv)

    model, ckpt = model_from_checkpoint(args.checkpoint)
    model.eval()
    size = ckpt["train_config"].get("image_size", 128)
    dataset = ShapesDataset(args.images, size, seed=args.seed, size_range=tuple(args.size_range))
    names = dataset.class_names
    objects, hidden = partly_hidden(dataset)
    print(f"held-out set: {len(dataset)} images, shapes {args.size_range[0]:g}-{args.size_range[1]:g} px, "
          f"{objects} objects, {hidden / objects:.0%} of them less than 60% visible")
    with torch.no_grad():
        predictions = {i: model([dataset[i][0]])[0] for i in range(len(dataset))}
    coco = dataset_to_coco(dataset)

    metrics = evaluate_predictions(coco, predictions, per_class=True)
    for kind in ("bbox", "segm"):
        per_class = "  ".join(f"{name} {ap:.3f}" for name, ap in metrics[kind]["per_class"].items())
        print(f"{kind}: AP {metrics[kind]['AP']:.3f}  AP50 {metrics[kind]['AP50']:.3f}  per class AP: {per_class}")

    table, wrong = confusion(dataset, predictions, len(names))
    objects = int(table.sum())
    print(f"\nbest detection (score > 0.5, box IoU >= 0.5) per GT object; rows GT, columns predicted:")
    print(f"{'':>10}" + "".join(f"{n:>10}" for n in ("miss", *names[1:])))
    for label in range(1, len(names)):
        print(f"{names[label]:>10}" + "".join(f"{v:>10}" for v in table[label].tolist()))
    off_diagonal = objects - int(table.diagonal()[1:].sum()) - int(table[:, 0].sum())
    print(f"{objects} objects: {int(table[:, 0].sum())} missed, {off_diagonal} with a wrong-class best detection "
          f"({off_diagonal / max(objects, 1):.1%}), {wrong} with a wrong-class detection among their hits")

    print("\nper object size: found (a detection with score > 0.5 and box IoU >= 0.5), and of those the right class:")
    for band, objects, found, right in by_size(dataset, predictions):
        if objects:
            print(f"  {band:>9}: {objects:>3} objects, found {found / objects:.0%}, right class {right / max(found, 1):.0%}")

    print("\nextra class-agnostic NMS after the per-class one:")
    for threshold in (None, 0.9, 0.8, 0.7, 0.5):
        if threshold is None:
            kept = predictions
        else:
            kept = {}
            for i, p in predictions.items():
                keep = nms(p["boxes"], p["scores"], threshold)  # (D',)
                kept[i] = {k: v[keep] for k, v in p.items()}
        m = evaluate_predictions(coco, kept)
        label = "none (per-class NMS only)" if threshold is None else f"IoU {threshold}"
        print(f"  {label:<26} mask AP {m['segm']['AP']:.3f}  AP50 {m['segm']['AP50']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
