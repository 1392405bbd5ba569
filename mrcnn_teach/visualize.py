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
    "draw_fpn_diagram",
    "draw_feature_grid",
    "draw_rect",
    "roi_sample_points",
    "draw_roi_samples",
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


def draw_fpn_diagram(in_channels: Sequence[int] = (256, 512, 1024, 2048), d: int = 256, ax=None):
    """The Feature Pyramid Network as FPN Fig. 3 draws it, with the names the library uses.

    Bottom-up C2..C5 (blue), a 1x1 lateral per level into the merged maps M2..M5 (orange), the
    top-down path (M_{l+1} upsampled x2, nearest neighbour, added at level l), a 3x3 output conv
    per level (green) and P6 = P5 subsampled by 2. Squares shrink with the level, not to scale.
    in_channels: the widths of C2..C5; d: the FPN width. Returns the Figure.
    """
    from matplotlib.patches import Circle, FancyArrowPatch, Rectangle

    if len(in_channels) != 4:
        raise ValueError(f"draw_fpn_diagram: expected the widths of C2..C5 (4 ints), got {in_channels!r}")
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 7.2), layout="constrained")
    up, top, out = (to_rgb(c) for c in ("C0", "C1", "C2"))  # bottom-up, top-down, outputs
    x_c, x_plus, x_m, x_p = 2.0, 5.1, 6.2, 9.6
    ys = [1.0 + 2.0 * i for i in range(4)]  # the rows of levels 2..5
    sides = [1.3 * 0.72**i for i in range(4)]

    def square(x, y, s, color, label=None, where="left"):
        ax.add_patch(Rectangle((x - s / 2, y - s / 2), s, s, facecolor=color, alpha=0.35, edgecolor=color, lw=1.5))
        if label:
            dx = -(s / 2 + 0.15) if where == "left" else s / 2 + 0.15
            ax.text(x + dx, y, label, ha="right" if where == "left" else "left", va="center", fontsize=9)

    def arrow(a, b, color, label=None, shift=(0.0, 0.0)):
        ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=12, color=color, lw=1.4))
        if label:
            ax.text((a[0] + b[0]) / 2 + shift[0], (a[1] + b[1]) / 2 + shift[1], label, ha="center", va="center",
                    fontsize=8.5, color=color, bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none"))

    ax.add_patch(Rectangle((x_c - 0.8, -1.6), 1.6, 1.0, facecolor="0.85", edgecolor="0.4"))
    ax.text(x_c, -1.1, "image", ha="center", va="center", fontsize=9)
    arrow((x_c, -0.6), (x_c, ys[0] - sides[0] / 2), up)
    for i, (y, s, c) in enumerate(zip(ys, sides, in_channels)):
        level = i + 2
        square(x_c, y, s, up, f"C{level}: {c} ch.\nstride {2**level}")
        if i < 3:
            arrow((x_c, y + s / 2), (x_c, ys[i + 1] - sides[i + 1] / 2), up)
            ax.add_patch(Circle((x_plus, y), 0.17, facecolor="white", edgecolor=top, lw=1.4))
            ax.text(x_plus, y, "+", ha="center", va="center", fontsize=11, color=top)
            arrow((x_c + s / 2, y), (x_plus - 0.17, y), up, "1×1 conv", (0, 0.22))
            arrow((x_plus + 0.17, y), (x_m - s / 2, y), top)
            # top-down: M_{l+1} upsampled x2 and added at level l
            arrow((x_m - sides[i + 1] / 2, ys[i + 1] - sides[i + 1] / 2), (x_plus, y + 0.17), top, "×2 up (nearest)")
        else:
            arrow((x_c + s / 2, y), (x_m - s / 2, y), up, "1×1 conv", (-0.5, 0.22))
        square(x_m, y, s, top)
        ax.text(x_m, y, f"M{level}", ha="center", va="center", fontsize=9)
        arrow((x_m + s / 2, y), (x_p - s / 2, y), out, "3×3 conv", (0, 0.22))
        square(x_p, y, s, out, f"P{level}: {d} ch.", where="right")
    s6 = sides[3] * 0.72
    square(x_p, ys[3] + 1.7, s6, out, f"P6: {d} ch.\n(RPN only)", where="right")
    arrow((x_p, ys[3] + sides[3] / 2), (x_p, ys[3] + 1.7 - s6 / 2), out, "subsample ×2", (-0.85, 0))
    ax.text(x_c, ys[3] + 1.7, "bottom-up\n(ResNet)", ha="center", va="center", fontsize=10, color=up, weight="bold")
    ax.text(x_m, ys[3] + 1.7, "top-down", ha="center", va="center", fontsize=10, color=top, weight="bold")
    ax.set_xlim(0.0, 11.6)
    ax.set_ylim(-1.8, ys[3] + 2.5)
    ax.set_aspect("equal")
    ax.set_axis_off()
    return ax.figure


def draw_feature_grid(ax, feature, title: str, vmax: float = 2.5, cmap: str = "coolwarm", values: bool = True,
                      points: bool = False, bold=()):
    """A 2-D feature map (H, W) as RoIAlign sees it with aligned=False: cell (i, j) is centred on the point (x=j, y=i).

    values: write each value in its cell (in bold for the (i, j) listed in `bold`); points: mark each
    cell's point with a +, and then write the values just below it. Returns the image, for a colour bar.
    """
    feature = _as_numpy(feature)
    if feature.ndim != 2:
        raise ValueError(f"draw_feature_grid: expected a 2-D map (H, W), got shape {feature.shape}")
    im = ax.imshow(feature, cmap=cmap, vmin=-vmax, vmax=vmax)
    for (i, j), v in np.ndenumerate(feature):
        if values:
            ax.text(j, i + (0.3 if points else 0), f"{v:.2f}", ha="center", va="center", fontsize=7.5,
                    fontweight="bold" if (i, j) in bold else "normal")
        if points:
            ax.plot(j, i, marker="+", color="black", markersize=6)
    ax.set_xticks(range(feature.shape[1]))
    ax.set_yticks(range(feature.shape[0]))
    ax.set_xlabel("x (feature cells)")
    ax.set_ylabel("y (feature cells)")
    ax.set_title(title)
    return im


def draw_rect(ax, x1: float, y1: float, x2: float, y2: float, **style):
    """An unfilled rectangle from (x1, y1) to (x2, y2), in the axes' data coordinates; style goes to Rectangle."""
    from matplotlib.patches import Rectangle

    return ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, **style))


def roi_sample_points(rois, spatial_scale: float, pooled: int, sampling_ratio: int, aligned: bool = False):
    """RoIAlign's sample points of the first RoI of rois (K, 5), from roi_ops' own helpers.

    -> xs (P, G), ys (P, G) in feature cells (row p = the samples of bin p), and the box
    (x1, y1, x2, y2) in feature cells as RoIAlign uses it.
    """
    from . import roi_ops

    _, sx, sy, w, h = roi_ops._roi_geometry(rois[:1], spatial_scale, aligned)  # (1,) x4
    gh, gw = roi_ops._sampling_grid(h, w, pooled, pooled, sampling_ratio)  # (1,), (1,)
    xs, _ = roi_ops._sample_positions(sx, w, pooled, gw, int(gw.max()))  # (1, P, G)
    ys, _ = roi_ops._sample_positions(sy, h, pooled, gh, int(gh.max()))  # (1, P, G)
    return xs[0], ys[0], (sx.item(), sy.item(), sx.item() + w.item(), sy.item() + h.item())


def draw_roi_samples(ax, feature, rois, spatial_scale: float, pooled: int, sampling_ratio: int, title: str,
                     values: bool = True, vmax: float = 2.5, taps: bool = True):
    """A feature map (H, W) with the first RoI's exact box, its bin edges (dotted) and RoIAlign's sample points.

    taps: join the first sample to the four cells it reads. Returns the image, for a colour bar.
    """
    im = draw_feature_grid(ax, feature, title, vmax=vmax, values=values, points=values)
    xs, ys, (bx1, by1, bx2, by2) = roi_sample_points(rois, spatial_scale, pooled, sampling_ratio)
    draw_rect(ax, bx1, by1, bx2, by2, color="black", linewidth=2, label="exact box")
    for k in range(1, pooled):  # the exact bin edges, inside the box
        ex, ey = bx1 + k * (bx2 - bx1) / pooled, by1 + k * (by2 - by1) / pooled
        ax.plot([ex, ex], [by1, by2], color="black", linestyle=":", linewidth=1.2)
        ax.plot([bx1, bx2], [ey, ey], color="black", linestyle=":", linewidth=1.2)
    gx, gy = np.meshgrid(xs.flatten().numpy(), ys.flatten().numpy())
    per_bin = gx.size // pooled**2
    ax.scatter(gx, gy, s=30, color="gold", edgecolor="black", zorder=3,
               label=f"{per_bin} sample{'s' if per_bin > 1 else ''} per bin")
    if taps:
        x0, y0 = xs[0, 0].item(), ys[0, 0].item()
        for i in (int(np.floor(y0)), int(np.floor(y0)) + 1):
            for j in (int(np.floor(x0)), int(np.floor(x0)) + 1):
                ax.plot([x0, j], [y0, i], color="dimgray", linewidth=1.2)
    height, width = _as_numpy(feature).shape
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    return im
