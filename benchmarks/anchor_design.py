"""Anchor design from the data's boxes: how well does each candidate set of anchors fit the GT boxes?

    python benchmarks/anchor_design.py [--images 2000] [--json benchmarks/results/anchor_design.json]

The RPN labels an anchor positive when its IoU with a GT box is >= 0.7 (Faster R-CNN Sec. 3.1.2).
A GT box whose best anchor stays under 0.7 gets a positive anchor only through the "low-quality"
rule (its best anchor is made positive whatever its IoU), and that anchor's regression target is
a large correction. So the first question for a new dataset is the one this script asks, for a
few candidate designs, over every GT box of the training images:

- covered: the share of GT boxes whose best anchor has IoU >= 0.7 (positive without the rule);
- the median best IoU, and the share with best IoU >= 0.5;
- where the best anchors sit (share of GT boxes per level P2..P6), and how many anchors each
  level holds -- a level that is nobody's best anchor still costs proposal slots and negatives;
- the same on the 0.5x-2x held-out set of benchmarks/shapes_budget.py (shapes 6-96 px).

It is pure geometry (no training), so it runs in seconds and its numbers do not depend on the
machine. The chosen design is `shapes_tiny`'s `anchor_sizes` in mrcnn_teach/configs.py; notebook 03
teaches this measurement and asks for a design as its exercise.
"""

from __future__ import annotations

import argparse
import json

import torch

from mrcnn_teach.anchors import anchor_coverage
from mrcnn_teach.configs import get_config
from mrcnn_teach.datasets import ShapesDataset

IMAGE_SIZE = 128  # P2..P6 of a 128-px image: 32, 16, 8, 4, 2 positions a side
RATIOS3 = ((0.5, 1.0, 2.0),) * 5
R2 = 2 ** 0.5

# name -> (anchor_sizes per level, aspect_ratios per level, what it is)
CANDIDATES = {
    "before: 2x stride (8..128)": (((8,), (16,), (32,), (64,), (128,)), RATIOS3,
                                   "the first edition's shapes_tiny"),
    "3x stride (12..192)": (((12,), (24,), (48,), (96,), (192,)), RATIOS3, "one size per level, 1.5x larger"),
    "4x stride (16..256)": (((16,), (32,), (64,), (128,), (256,)), RATIOS3, "one size per level, 2x larger"),
    "2 sizes/octave from 12": (tuple((12 * 2 ** l, round(12 * 2 ** l * R2)) for l in range(5)), RATIOS3,
                               "12, 17 on P2 ... each level x2; k = 6"),
    "2 sizes/octave from 16": (tuple((16 * 2 ** l, round(16 * 2 ** l * R2)) for l in range(5)), RATIOS3,
                               "16, 23 on P2 ... each level x2; k = 6"),
    "3 sizes/octave from 12, 3 ratios": (tuple(tuple(round(12 * 2 ** (l + i / 3)) for i in range(3)) for l in range(5)),
                                         RATIOS3, "12, 15, 19 on P2 ...; k = 9"),
    "2 sizes/octave from 12, square": (tuple((12 * 2 ** l, round(12 * 2 ** l * R2)) for l in range(5)),
                                       ((1.0,),) * 5, "12, 17 on P2 ...; ratio 1 only; k = 2"),
    "3 sizes/octave from 10, square": (tuple(tuple(round(10 * 2 ** (l + i / 3)) for i in range(3)) for l in range(5)),
                                       ((1.0,),) * 5, "10, 13, 16 on P2 ...; ratio 1 only; k = 3"),
    "3 sizes/octave from 12, square": (tuple(tuple(round(12 * 2 ** (l + i / 3)) for i in range(3)) for l in range(5)),
                                       ((1.0,),) * 5, "12, 15, 19 on P2 ...; ratio 1 only; k = 3"),
    "3 sizes/octave from 14, square": (tuple(tuple(round(14 * 2 ** (l + i / 3)) for i in range(3)) for l in range(5)),
                                       ((1.0,),) * 5, "14, 18, 22 on P2 ...; ratio 1 only; k = 3"),
    "3 sizes/octave from 16, square": (tuple(tuple(round(16 * 2 ** (l + i / 3)) for i in range(3)) for l in range(5)),
                                       ((1.0,),) * 5, "16, 20, 25 on P2 ...; ratio 1 only; k = 3"),
}


def gt_boxes(num_images: int, seed: int, size_range=None) -> torch.Tensor:
    """All GT boxes (G, 4) of num_images shapes images (the training set: seed 0)."""
    kwargs = {} if size_range is None else {"size_range": size_range}
    data = ShapesDataset(num_images, IMAGE_SIZE, seed=seed, **kwargs)
    return torch.cat([data[i][1]["boxes"] for i in range(len(data))])  # (G, 4)


def fit(boxes: torch.Tensor, sizes, ratios) -> dict:
    """How the anchors of one design fit boxes (G, 4): coverage, best IoU, best level, anchor counts."""
    fit = anchor_coverage(boxes, sizes, ratios, (IMAGE_SIZE, IMAGE_SIZE), threshold=0.7)
    best, best_level = fit.best_iou, fit.best_level  # (G,), (G,)
    return {
        "anchors": fit.num_anchors,
        "anchors_per_level": fit.anchors_per_level,
        "covered_0.7": fit.covered,
        "covered_0.5": float((best >= 0.5).float().mean()),
        "median_best_iou": float(best.median()),
        "best_level_share": [float((best_level == l).float().mean()) for l in range(5)],
        "levels_never_best": [f"P{l + 2}" for l in range(5) if not (best_level == l).any()],
        "anchors_ever_positive_per_level": fit.positive_per_level,  # boxes of all images pooled
    }


def side_stats(boxes: torch.Tensor) -> dict:
    """Box side lengths sqrt(w*h) and aspect ratios h/w: what the anchors must fit."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]  # (G,), (G,)
    side = (w * h).sqrt()  # (G,)
    q = torch.tensor([0.0, 0.05, 0.5, 0.95, 1.0])
    return {"boxes": int(len(boxes)),
            "side_quantiles_0_5_50_95_100": [round(float(v), 1) for v in side.quantile(q)],
            "aspect_h_over_w_quantiles_0_5_50_95_100": [round(float(v), 2) for v in (h / w).quantile(q)],
            "share_aspect_within_0.75_1.33": float(((h / w > 0.75) & (h / w < 4 / 3)).float().mean())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="training images to take the GT boxes from")
    parser.add_argument("--json", help="write the table here")
    args = parser.parse_args(argv)

    sets = {"training (12-48 px)": gt_boxes(args.images, seed=0),
            "held-out 0.5x-2x (6-96 px)": gt_boxes(100, seed=1, size_range=(6.0, 96.0))}
    chosen = get_config("shapes_tiny")["anchor_sizes"]
    result = {"images": args.images, "boxes": {name: side_stats(b) for name, b in sets.items()},
              "shapes_tiny_anchor_sizes": chosen, "designs": {}}
    for name, stats in result["boxes"].items():
        print(f"{name}: {stats['boxes']} GT boxes; side sqrt(wh) min/5%/50%/95%/max = "
              f"{stats['side_quantiles_0_5_50_95_100']} px; h/w 5%..95% = "
              f"{stats['aspect_h_over_w_quantiles_0_5_50_95_100'][1]}..{stats['aspect_h_over_w_quantiles_0_5_50_95_100'][3]}")
    print()
    header = (f"{'design':34s} {'A':>5s} {'>=0.7':>6s} {'>=0.5':>6s} {'median':>6s}   best level P2..P6 (share of GT)"
              f"        {'0.5x-2x >=0.7':>13s}")
    print(header)
    print("-" * len(header))
    for name, (sizes, ratios, what) in CANDIDATES.items():
        rows = {set_name: fit(b, sizes, ratios) for set_name, b in sets.items()}
        train_row, wide_row = rows["training (12-48 px)"], rows["held-out 0.5x-2x (6-96 px)"]
        is_chosen = [tuple(s) for s in sizes] == [tuple(s) for s in chosen]
        result["designs"][name] = {"anchor_sizes": sizes, "aspect_ratios": ratios[0], "what": what,
                                   "chosen": is_chosen, **rows}
        shares = " ".join(f"{s:4.0%}" for s in train_row["best_level_share"])
        print(f"{name + (' *' if is_chosen else ''):34s} {train_row['anchors']:5d} {train_row['covered_0.7']:6.0%} "
              f"{train_row['covered_0.5']:6.0%} {train_row['median_best_iou']:6.2f}   {shares}"
              f"   {wide_row['covered_0.7']:13.0%}")
    print("\n* = shapes_tiny's anchor_sizes in mrcnn_teach/configs.py")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
