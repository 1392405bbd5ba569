"""Pictures of every stage: instances, anchors/proposals, 28x28 mask outputs, loss curves.

Mask R-CNN's Figures 2 and 5 show results as translucent coloured masks with a box and a
"class score" caption per instance; draw_instances draws exactly that. The other helpers show
the intermediate objects a student meets on the way: anchors and proposals (Faster R-CNN Sec. 3.1),
the 28x28 mask logits of the mask branch (Mask R-CNN Sec. 3, Fig. 4), and the training losses
(L = L_cls + L_box + L_mask, Sec. 3, plus the RPN's two terms).

matplotlib only; nothing here calls plt.show(), so it runs under the Agg backend (tests, CI) and
notebooks display the returned figures themselves. Images may be (3, H, W) tensors in [0, 1] (our
datasets' format), (H, W, 3) arrays, or uint8.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgb

__all__ = [
    "CLASS_COLORS",
    "class_color",
    "to_numpy_image",
    "draw_instances",
    "show_predictions",
    "draw_boxes",
    "show_mask_grid",
    "read_log",
    "plot_losses",
]

# matplotlib's tab10 palette: ten colours that are easy to tell apart. Class k always gets the same
# colour, in every picture and every notebook, so a reader learns "circle = orange" once.
CLASS_COLORS = tuple(to_rgb(f"C{i}") for i in range(10))
MASK_ALPHA = 0.5


def class_color(label: int) -> tuple[float, float, float]:
    """Deterministic RGB colour (floats in [0, 1]) of a class label."""
    return CLASS_COLORS[int(label) % len(CLASS_COLORS)]


def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def to_numpy_image(image) -> np.ndarray:
    """(3, H, W) / (1, H, W) / (H, W) / (H, W, 3) tensor or array -> (H, W, 3) float array in [0, 1]."""
    img = _as_numpy(image)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = img.transpose(1, 2, 0)  # (H, W, C)
    if img.ndim == 2:
        img = img[:, :, None]  # (H, W, 1)
    if img.ndim != 3 or img.shape[2] not in (1, 3):
        raise ValueError(f"to_numpy_image: expected an image (3, H, W) or (H, W, 3), got {img.shape}")
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)  # (H, W, 3)
    img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    return np.clip(img, 0.0, 1.0)  # normalised images would otherwise wrap around in imshow


def _box_outlines(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) x1y1x2y2 -> (N, 5, 2) closed rectangle outlines, all drawn by a single LineCollection."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    xs = np.stack([x1, x2, x2, x1, x1], axis=1)  # (N, 5)
    ys = np.stack([y1, y1, y2, y2, y1], axis=1)  # (N, 5)
    return np.stack([xs, ys], axis=2)  # (N, 5, 2)


def _show_image(ax, image) -> None:
    if image is not None:
        ax.imshow(to_numpy_image(image))
    ax.set_axis_off()


def _mask_overlay(masks: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """(N, H, W) bool, (N, 3) colours -> (H, W, 4) RGBA image: each pixel takes the colour of the first
    (highest-scoring) instance that covers it, transparent where no instance does."""
    covered = masks.any(axis=0)  # (H, W)
    first = masks.argmax(axis=0)  # (H, W) index of the first instance covering the pixel
    overlay = np.zeros(masks.shape[1:] + (4,), dtype=np.float32)  # (H, W, 4)
    overlay[..., :3] = colors[first]
    overlay[..., 3] = np.where(covered, MASK_ALPHA, 0.0)
    return overlay


def draw_instances(ax, image, boxes=None, labels=None, scores=None, masks=None, class_names=None,
                   score_thresh: float = 0.0, mask_thresh: float = 0.5, linewidth: float = 1.5):
    """Draw an image with its instances: translucent masks, boxes, and "class score" captions.

    boxes (N, 4) x1y1x2y2; labels (N,); scores (N,) (None for ground truth); masks (N, H, W) or
    (N, 1, H, W), binary or probabilities (kept where > mask_thresh). Instances scoring below
    score_thresh are left out. Returns ax.
    """
    _show_image(ax, image)
    arrays = {k: _as_numpy(v) for k, v in
              dict(boxes=boxes, labels=labels, scores=scores, masks=masks).items() if v is not None}
    if not arrays:
        return ax
    num = {k: len(v) for k, v in arrays.items()}
    if len(set(num.values())) != 1:
        raise ValueError(f"draw_instances: boxes/labels/scores/masks disagree on the number of instances: {num}")
    keep = np.ones(next(iter(num.values())), dtype=bool)  # (N,)
    if "scores" in arrays:
        keep = arrays["scores"] >= score_thresh
        order = np.argsort(-arrays["scores"][keep], kind="stable")  # best first: it wins overlapping pixels
    else:
        order = np.arange(keep.sum())
    arrays = {k: v[keep][order] for k, v in arrays.items()}
    labels_np = arrays.get("labels")
    n = int(keep.sum())
    colors = (np.array([class_color(c) for c in labels_np]) if labels_np is not None
              else np.tile(np.array(class_color(0)), (n, 1))).reshape(n, 3)  # (n, 3)

    if "masks" in arrays and n > 0:
        m = arrays["masks"]
        if m.ndim == 4:
            m = m[:, 0]  # (n, H, W)
        ax.imshow(_mask_overlay(m > mask_thresh, colors), interpolation="nearest")

    if "boxes" in arrays and n > 0:
        boxes_np = arrays["boxes"].astype(np.float64).reshape(n, 4)
        ax.add_collection(LineCollection(_box_outlines(boxes_np), colors=colors, linewidths=linewidth))
        # One caption per instance: matplotlib has no vectorised text, and N is small (<= 100).
        for i in range(n):
            caption = []
            if labels_np is not None:
                label = int(labels_np[i])
                caption.append(str(class_names[label]) if class_names is not None else str(label))
            if "scores" in arrays:
                caption.append(f"{float(arrays['scores'][i]):.2f}")
            if caption:
                ax.text(boxes_np[i, 0], boxes_np[i, 1], " ".join(caption), fontsize=7, color="white",
                        va="bottom", ha="left", clip_on=True,
                        bbox=dict(facecolor=colors[i], alpha=0.8, pad=1, edgecolor="none"))
    return ax


def show_predictions(images: Sequence, targets: Sequence[Mapping], predictions: Sequence[Mapping],
                     class_names=None, score_thresh: float = 0.5, size: float = 3.0):
    """One row per image: ground truth on the left, the model's predictions (score >= score_thresh) right."""
    if not len(images) == len(targets) == len(predictions):
        raise ValueError(f"show_predictions: got {len(images)} images, {len(targets)} targets and "
                         f"{len(predictions)} predictions")
    rows = len(images)
    fig, axes = plt.subplots(rows, 2, figsize=(2 * size, rows * size), squeeze=False)
    for row, (image, target, pred) in enumerate(zip(images, targets, predictions)):
        draw_instances(axes[row, 0], image, target.get("boxes"), target.get("labels"), None,
                       target.get("masks"), class_names)
        draw_instances(axes[row, 1], image, pred.get("boxes"), pred.get("labels"), pred.get("scores"),
                       pred.get("masks"), class_names, score_thresh=score_thresh)
    axes[0, 0].set_title("ground truth")
    axes[0, 1].set_title(f"prediction (score >= {score_thresh:g})")
    fig.tight_layout()
    return fig


def draw_boxes(ax, image, boxes, color="yellow", linewidth: float = 0.5, alpha: float = 1.0):
    """Draw many boxes (anchors, proposals: thousands are fine, it is one LineCollection).

    image may be None (then the axes just cover the boxes); color is one colour or one per box.
    Returns ax.
    """
    _show_image(ax, image)
    boxes_np = _as_numpy(boxes).astype(np.float64)
    if boxes_np.ndim != 2 or boxes_np.shape[1] != 4:
        raise ValueError(f"draw_boxes: expected boxes (N, 4), got {boxes_np.shape}")
    ax.add_collection(LineCollection(_box_outlines(boxes_np), colors=color, linewidths=linewidth, alpha=alpha))
    if image is None and len(boxes_np):
        ax.set_xlim(boxes_np[:, 0].min(), boxes_np[:, 2].max())
        ax.set_ylim(boxes_np[:, 3].max(), boxes_np[:, 1].min())  # y down, like an image
        ax.set_aspect("equal")
    return ax


def show_mask_grid(masks, titles: Sequence[str] | None = None, ncols: int = 8, kind: str | None = None,
                   size: float = 1.4):
    """Grid of small masks, e.g. the mask branch's (N, 28, 28) output, with one shared colorbar.

    kind: "probs" (colour scale 0..1) or "logits" (diverging scale centred at 0, where sigmoid = 0.5);
    None guesses: values outside [0, 1] mean logits. Accepts (N, 1, M, M) too.
    """
    m = _as_numpy(masks).astype(np.float32)
    if m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]  # (N, M, M)
    if m.ndim != 3 or len(m) == 0:
        raise ValueError(f"show_mask_grid: expected masks (N, M, M) with N >= 1, got {m.shape}")
    if kind is None:
        kind = "logits" if (m.min() < 0 or m.max() > 1) else "probs"
    if kind == "logits":
        vmax = max(float(np.abs(m).max()), 1e-6)
        cmap, vmin, label = "RdBu_r", -vmax, "mask logit"
    elif kind == "probs":
        cmap, vmin, vmax, label = "viridis", 0.0, 1.0, "mask probability"
    else:
        raise ValueError(f"show_mask_grid: kind must be 'logits', 'probs' or None, got {kind!r}")
    if titles is not None and len(titles) != len(m):
        raise ValueError(f"show_mask_grid: {len(titles)} titles for {len(m)} masks")

    ncols = min(ncols, len(m))
    nrows = -(-len(m) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size + 1.0, nrows * size + 0.3),
                             squeeze=False, layout="constrained")
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < len(m):
            im = ax.imshow(m[i], cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=7)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label=label)
    return fig


def read_log(log_path_or_records) -> list[dict]:
    """A JSON-lines log (one {"step": ..., "loss": ..., ...} per line) or an iterable of dicts -> list of dicts."""
    if isinstance(log_path_or_records, (str, Path)):
        records = []
        for lineno, line in enumerate(Path(log_path_or_records).read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{log_path_or_records}, line {lineno}: not JSON ({err})") from None
        return records
    return [dict(r) for r in log_path_or_records]


def plot_losses(log_path_or_records, log_scale: bool = False, ax=None):
    """Plot every "loss*" key of a training log against "step" (the record index if a record has no step).

    Records without a given loss key (e.g. evaluation records) are skipped for that curve.
    Returns the Figure.
    """
    records = read_log(log_path_or_records)
    keys: list[str] = []
    for r in records:
        keys += [k for k in r if k.startswith("loss") and k not in keys]
    keys = [k for k in keys if k == "loss"] + [k for k in keys if k != "loss"]  # the total first
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    else:
        fig = ax.figure
    for key in keys:
        points = [(r.get("step", i), r[key]) for i, r in enumerate(records) if r.get(key) is not None]
        steps, values = zip(*points)
        style = dict(color="black", linewidth=2.0) if key == "loss" else dict(linewidth=1.0)
        ax.plot(steps, values, label=key, **style)
    if not keys:
        ax.text(0.5, 0.5, "no loss* keys in the log", transform=ax.transAxes, ha="center")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if log_scale:
        ax.set_yscale("log")
    if keys:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig
