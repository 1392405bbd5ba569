"""Find a detector's failures on images with ground truth, and name the stage each one points to.

Notebook 10 (section 8) uses these to sort the detections a user sees (score >= 0.5) into four kinds:

| kind                | test                                                                        |
|---------------------|-----------------------------------------------------------------------------|
| wrong class         | box IoU >= 0.5 with an object of another class, < 0.5 with every object of its own |
| merged neighbours   | covers >= 70% of the boxes of two or more objects, IoU < 0.5 with each        |
| cut-off or bad mask | right class and box IoU >= 0.5, but mask IoU more than 0.2 below the box IoU  |
| missed object       | an object with no detection of any class at box IoU >= 0.5                   |

`judge_image` gives every shown detection of one image its verdict (one of the kinds, "right", or
"other": no object at IoU >= 0.5 and no group of objects under it), and lists the image's missed objects
with the best proposal each one had (so that the RPN's recall can be told from the classifier's score).
"""

from __future__ import annotations

import torch

from .boxes import box_iou

KINDS = ("wrong class", "merged neighbours", "cut-off or bad mask", "missed object")


def covered_fraction(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """Fraction of each box b's area that lies inside each box a: (A, 4), (B, 4) -> (A, B)."""
    top_left = torch.max(boxes_a[:, None, :2], boxes_b[None, :, :2])  # (A, B, 2)
    bottom_right = torch.min(boxes_a[:, None, 2:], boxes_b[None, :, 2:])  # (A, B, 2)
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=2)  # (A, B)
    area_b = (boxes_b[:, 2:] - boxes_b[:, :2]).prod(dim=1)  # (B,)
    return inter / area_b.clamp(min=1e-9)[None, :]  # (A, B)


def mask_ious(masks_a: torch.Tensor, masks_b: torch.Tensor) -> torch.Tensor:
    """IoU of every pair of binary masks: (A, H, W), (B, H, W) -> (A, B)."""
    a, b = masks_a.flatten(1).float(), masks_b.flatten(1).float()  # (A, HW), (B, HW)
    inter = a @ b.T  # (A, B)
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter  # (A, B)
    return inter / union.clamp(min=1)  # (A, B)


def outside_fraction(mask: torch.Tensor, box: torch.Tensor) -> float:
    """Fraction of a binary mask's pixels whose centres lie outside the box: (H, W), (4,) -> float."""
    ys = torch.arange(mask.shape[0]) + 0.5  # (H,) pixel centres
    xs = torch.arange(mask.shape[1]) + 0.5  # (W,)
    inside = ((ys >= box[1]) & (ys <= box[3]))[:, None] & ((xs >= box[0]) & (xs <= box[2]))[None, :]  # (H, W)
    return float((mask.bool() & ~inside).sum() / mask.bool().sum().clamp(min=1))


def judge_image(output: dict, target: dict, proposals: torch.Tensor | None = None, score: float = 0.5,
                iou_thresh: float = 0.5, mask_gap: float = 0.2, merge_cover: float = 0.7):
    """One image: (verdicts, missed).

    output: the model's dict(boxes (D, 4), labels (D,), scores (D,), masks (D, 1, H, W) probabilities);
    target: dict(boxes (G, 4), labels (G,), masks (G, H, W)); proposals (N, 4) or None.
    verdicts: one dict per detection with score >= `score` (box, label, score, mask (H, W) bool, verdict,
    gt: the object indices concerned, and box_iou / mask_iou / outside / duplicate where they apply);
    a detection can fail two ways (merged and cut-off), its verdict is the first in KINDS.
    missed: one dict per object no shown detection reaches at IoU >= iou_thresh (gt, proposal, proposal_iou).
    """
    shown = output["scores"] >= score  # (D,)
    boxes, labels, scores = output["boxes"][shown], output["labels"][shown], output["scores"][shown]
    masks = output["masks"][shown][:, 0] > 0.5  # (d, H, W)
    gb, gl, gm = target["boxes"], target["labels"], target["masks"].bool()  # (G, 4), (G,), (G, H, W)
    iou = box_iou(boxes, gb)  # (d, G)
    same = labels[:, None] == gl[None, :]  # (d, G)
    miou = mask_ious(masks, gm)  # (d, G)
    cover = covered_fraction(boxes, gb)  # (d, G)
    found_right = ((iou >= iou_thresh) & same).any(dim=0)  # (G,) objects with a right-class detection
    verdicts = []
    for j in range(len(boxes)):
        det = dict(box=boxes[j], label=int(labels[j]), score=float(scores[j]), mask=masks[j])
        right = (iou[j] >= iou_thresh) & same[j]  # (G,)
        many = torch.nonzero(cover[j] >= merge_cover).squeeze(1)  # (m,) objects mostly inside this box
        if not right.any() and ((iou[j] >= iou_thresh) & ~same[j]).any():
            g = int((iou[j] * ~same[j]).argmax())
            det.update(verdict="wrong class", gt=[g], box_iou=float(iou[j, g]), duplicate=bool(found_right[g]))
        elif len(many) >= 2 and float(iou[j].max()) < iou_thresh:
            det.update(verdict="merged neighbours", gt=many.tolist(), box_iou=float(iou[j].max()))
        elif right.any():
            g = int((iou[j] * right).argmax())
            bad = float(iou[j, g] - miou[j, g]) > mask_gap
            det.update(verdict="cut-off or bad mask" if bad else "right", gt=[g], box_iou=float(iou[j, g]),
                       mask_iou=float(miou[j, g]), outside=outside_fraction(gm[g], boxes[j]))
        else:
            det.update(verdict="other", gt=[], box_iou=float(iou[j].max()) if len(gb) else 0.0)
        verdicts.append(det)
    missed = []
    for g in range(len(gb)):
        if not (iou[:, g] >= iou_thresh).any():
            entry = dict(gt=[g], proposal=None, proposal_iou=float("nan"))
            if proposals is not None and len(proposals):
                best = box_iou(proposals, gb[g][None])[:, 0]  # (N,)
                entry.update(proposal=proposals[int(best.argmax())], proposal_index=int(best.argmax()),
                             proposal_iou=float(best.max()))
            missed.append(entry)
    return verdicts, missed


def find_failures(outputs, targets, proposals=None, score: float = 0.5, iou_thresh: float = 0.5) -> dict:
    """Every image: {kind: [failure dicts, each with its "image" index]} for the four KINDS (see judge_image)."""
    failures = {kind: [] for kind in KINDS}
    proposals = proposals if proposals is not None else [None] * len(outputs)
    for i, (out, tgt, props) in enumerate(zip(outputs, targets, proposals)):
        verdicts, missed = judge_image(out, tgt, props, score, iou_thresh)
        for det in verdicts:
            if det["verdict"] in failures:
                failures[det["verdict"]].append(dict(det, image=i))
        failures["missed object"] += [dict(m, image=i) for m in missed]
    return failures


def worst_cases(failures: dict) -> dict:
    """The worst failure of each kind that occurred: the highest-scoring wrong class and merged detection,
    the largest gap between box and mask IoU, the missed object whose best proposal came least close."""
    severity = {"wrong class": lambda f: f["score"], "merged neighbours": lambda f: f["score"],
                "cut-off or bad mask": lambda f: f["box_iou"] - f["mask_iou"],
                "missed object": lambda f: -f["proposal_iou"]}
    return {kind: max(found, key=severity[kind]) for kind, found in failures.items() if found}


def failure_note(kind: str, f: dict, class_names, iou_thresh: float = 0.5) -> str:
    """A two-line caption for one failure."""
    name = class_names[f["label"]] if "label" in f else ""
    if kind == "wrong class":
        return f"{name} {f['score']:.2f} on a {f['gt_name']}\n(box IoU {f['box_iou']:.2f})"
    if kind == "merged neighbours":
        return f"{name} {f['score']:.2f} over {len(f['gt'])} objects\n(best box IoU {f['box_iou']:.2f})"
    if kind == "cut-off or bad mask":
        return (f"{name} {f['score']:.2f}: box IoU {f['box_iou']:.2f}, mask IoU {f['mask_iou']:.2f}\n"
                f"{100 * f['outside']:.0f}% of the object outside the box")
    return f"best proposal IoU {f['proposal_iou']:.2f}:\nno detection at IoU >= {iou_thresh}"


def draw_failure_gallery(worst: dict, pairs, class_names, score: float = 0.5, iou_thresh: float = 0.5):
    """Two rows per kind of failure: the ground truth around the spot, and the one failing detection with
    its score and mask (for a missed object: its best proposal, dashed yellow). pairs[i] = (image, target).
    -> the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from .visualize import draw_boxes, draw_instances

    fig, axes = plt.subplots(2, len(worst), figsize=(3 * len(worst), 6.4), layout="constrained", squeeze=False)
    for col, (kind, f) in enumerate(worst.items()):
        img, tgt = pairs[f["image"]]
        gts = torch.tensor(f["gt"])
        shown_box = f["box"] if "box" in f else f["proposal"]
        spot = torch.cat([tgt["boxes"][gts], shown_box[None]])  # (n, 4)
        lo = (spot[:, :2].min(dim=0).values - 10).clamp(min=0)
        hi = (spot[:, 2:].max(dim=0).values + 10).clamp(max=img.shape[-1])
        # Top row: boxes and outlines only, so that the objects keep their own colours in both rows.
        draw_instances(axes[0, col], img, tgt["boxes"], tgt["labels"], class_names=class_names)
        axes[0, col].set_title(f"{kind}\nimage {f['image']}: ground truth", fontsize=10)
        ax = axes[1, col]
        if "box" in f:
            draw_instances(ax, img, f["box"][None], torch.tensor([f["label"]]), torch.tensor([f["score"]]),
                           f["mask"][None], class_names=class_names)
        else:
            draw_boxes(ax, img, f["proposal"][None], color="yellow", linewidth=1.5)
            ax.collections[-1].set_linestyle("--")
        draw_boxes(ax, None, tgt["boxes"][gts], color="white", linewidth=1.0)
        ax.collections[-1].set_linestyle(":")
        names = dict(f, gt_name=class_names[int(tgt["labels"][gts[0]])])
        ax.set_title(failure_note(kind, names, class_names, iou_thresh), fontsize=8.5)
        for a in axes[:, col]:
            a.set_xlim(float(lo[0]), float(hi[0]))
            a.set_ylim(float(hi[1]), float(lo[1]))
    fig.legend(handles=[Line2D([], [], color="black", ls=":", lw=1, label="GT box of the object(s) concerned"),
                        Line2D([], [], color="gold", ls="--", lw=1.5, label="best proposal (missed object)")],
               loc="outside lower center", ncol=2, fontsize=9)
    fig.suptitle(f"The worst failure of each kind on {len(pairs)} held-out images (detections with score ≥ {score})")
    return fig
