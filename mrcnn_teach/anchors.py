"""Anchors: the reference boxes the RPN scores and refines.

Faster R-CNN (Ren et al. 2015, Sec. 3.1.1) puts k reference boxes ("anchors") at every position of a
feature map: one per (scale, aspect ratio) pair. FPN (Lin et al. 2017, Sec. 4.1) changes one thing:
since the pyramid already covers scale, each level P2..P6 gets anchors of a single size
(32, 64, 128, 256, 512 pixels) and only the three aspect ratios {1:2, 1:1, 2:1}, so k = 3 per level.

Two steps, both vectorised:
1. cell anchors: the k zero-centred boxes of one level (one row per (ratio, size) pair);
2. tiling: copy them to every position (x, y) of the level's grid, centred at (x * stride, y * stride).
   (torchvision centres on the cell's top-left pixel, not on (x + 0.5) * stride; we follow it so that its
   trained weights work unchanged.)

Numerically equal to torchvision.models.detection.anchor_utils.AnchorGenerator, including its
rounding of the cell anchors to whole pixels and its stride rule stride = H // h (integer division).

`anchor_coverage` measures how well a design (sizes and ratios per level) fits a set of GT boxes:
each box's best-anchor IoU, the measurement behind shapes_tiny's anchors (benchmarks/anchor_design.py,
notebook 03).
"""

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .boxes import box_iou

DEFAULT_SIZES = ((32,), (64,), (128,), (256,), (512,))  # FPN Sec. 4.1: one size per level P2..P6
DEFAULT_ASPECT_RATIOS = ((0.5, 1.0, 2.0),) * 5  # height / width


def make_cell_anchors(sizes, aspect_ratios, dtype=torch.float32, device=None):
    """The k = len(aspect_ratios) * len(sizes) zero-centred anchors of one level, as (k, 4) x1y1x2y2.

    An anchor of size s and aspect ratio r = h / w keeps the area s*s: h = s * sqrt(r), w = s / sqrt(r).
    Rows are ordered ratio-major (all sizes of the first ratio, then the next ratio), and the corners are
    rounded to whole pixels, both exactly as torchvision does (its weights were trained with these boxes).
    """
    sizes = torch.as_tensor(sizes, dtype=dtype, device=device)  # (S,)
    ratios = torch.as_tensor(aspect_ratios, dtype=dtype, device=device)  # (R,)
    h_ratios = torch.sqrt(ratios)  # (R,)
    w_ratios = 1 / h_ratios  # (R,)
    ws = (w_ratios[:, None] * sizes[None, :]).reshape(-1)  # (R*S,) widths, ratio-major
    hs = (h_ratios[:, None] * sizes[None, :]).reshape(-1)  # (R*S,) heights
    cell = torch.stack([-ws, -hs, ws, hs], dim=1) / 2  # (k, 4) centred on (0, 0)
    return cell.round()  # (k, 4); round-half-to-even is symmetric, so the centre stays at (0, 0)


class AnchorGenerator(nn.Module):
    """Anchors for every level of the pyramid, concatenated into one (A, 4) tensor.

    sizes[l] and aspect_ratios[l] describe level l (P2 first). The same anchors serve every image of the
    padded batch, because they depend only on the padded size and the feature-map sizes.
    """

    def __init__(self, sizes=DEFAULT_SIZES, aspect_ratios=DEFAULT_ASPECT_RATIOS):
        super().__init__()
        if len(sizes) != len(aspect_ratios):
            raise ValueError(
                f"AnchorGenerator: sizes has {len(sizes)} levels but aspect_ratios has {len(aspect_ratios)}; "
                "give one tuple of each per pyramid level"
            )
        for level, (s, r) in enumerate(zip(sizes, aspect_ratios)):
            if not isinstance(s, (tuple, list)) or not isinstance(r, (tuple, list)) or len(s) == 0 or len(r) == 0:
                raise ValueError(
                    f"AnchorGenerator: level {level} needs non-empty tuples of sizes and aspect ratios, "
                    f"got sizes={s!r}, aspect_ratios={r!r}"
                )
        self.sizes = tuple(tuple(s) for s in sizes)
        self.aspect_ratios = tuple(tuple(r) for r in aspect_ratios)
        # Plain list, not buffers: anchors are recomputed from (sizes, ratios), never learned or saved.
        self.cell_anchors = [make_cell_anchors(s, r) for s, r in zip(self.sizes, self.aspect_ratios)]  # [(k_l, 4)]

    def num_anchors_per_location(self):
        """k_l for each level: the number of output channels / 4 of the RPN's delta conv at that level."""
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios)]

    def forward(self, image_size, feature_sizes, dtype=torch.float32, device=None):
        """Anchors (A, 4) x1y1x2y2 in padded-image pixels, A = sum_l h_l * w_l * k_l.

        image_size: (H, W) of the padded batch. feature_sizes: [(h_l, w_l)] one per level.
        Order: level, then row y, then column x, then the k_l anchors of that cell -- the same order in
        which the RPN head's outputs are flattened, so anchor i and prediction i belong together.
        """
        if len(feature_sizes) != len(self.cell_anchors):
            raise ValueError(
                f"AnchorGenerator: got {len(feature_sizes)} feature maps but anchors were configured for "
                f"{len(self.cell_anchors)} levels (sizes={self.sizes})"
            )
        H, W = int(image_size[0]), int(image_size[1])
        all_anchors = []
        for level, ((h, w), cell) in enumerate(zip(feature_sizes, self.cell_anchors)):
            h, w = int(h), int(w)
            if h <= 0 or w <= 0 or h > H or w > W:
                raise ValueError(
                    f"AnchorGenerator: feature map {level} has size {(h, w)}, which does not fit the "
                    f"padded image size {(H, W)}"
                )
            # Integer division, like torchvision: with padding to a multiple of 32 this is exact for
            # P2..P5; for P6 (h = ceil(h5 / 2)) it is not, and torchvision's weights learned with it.
            stride_y, stride_x = H // h, W // w
            cell = cell.to(dtype=dtype, device=device)  # (k, 4)
            shifts_x = torch.arange(w, dtype=torch.int64, device=cell.device) * stride_x  # (w,) anchor centres x
            shifts_y = torch.arange(h, dtype=torch.int64, device=cell.device) * stride_y  # (h,) anchor centres y
            grid_y, grid_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")  # (h, w) each
            grid_x = grid_x.reshape(-1)  # (h*w,) row-major: y outer, x inner
            grid_y = grid_y.reshape(-1)  # (h*w,)
            shifts = torch.stack([grid_x, grid_y, grid_x, grid_y], dim=1)  # (h*w, 4)
            anchors = (shifts[:, None, :] + cell[None, :, :]).reshape(-1, 4)  # (h*w*k, 4)
            all_anchors.append(anchors)
        return torch.cat(all_anchors, dim=0)  # (A, 4)

    def extra_repr(self):
        return f"sizes={self.sizes}, aspect_ratios={self.aspect_ratios}"


@dataclass(frozen=True)
class AnchorCoverage:
    """How the anchors of one design fit a set of G ground-truth boxes (the result of `anchor_coverage`)."""

    best_iou: Tensor  # (G,) each GT box's IoU with its best anchor
    best_level: Tensor  # (G,) int64: the level of that anchor, 0 = P2
    anchors_per_level: list[int]  # [h_l * w_l * k_l] for P2..P6
    positive_per_level: list[int]  # anchors with IoU >= threshold with at least one of the boxes, per level
    threshold: float  # the RPN's positive threshold (0.7, Faster R-CNN Sec. 3.1.2)

    @property
    def num_anchors(self) -> int:
        """A, the anchors of one image: the cost of the design."""
        return sum(self.anchors_per_level)

    @property
    def covered(self) -> float:
        """Share of GT boxes whose best anchor reaches the threshold: positive without the low-quality rule."""
        return float((self.best_iou >= self.threshold).float().mean())


def anchor_coverage(boxes: Tensor, sizes, aspect_ratios, image_size=(128, 128), threshold: float = 0.7,
                    chunk: int = 512) -> AnchorCoverage:
    """Best-anchor IoU of every GT box (G, 4), x1y1x2y2 in pixels of a padded image of image_size (H, W),
    against the anchors of `sizes` / `aspect_ratios` (one tuple per level P2..P6) on that image.

    Level P_l has ceil(H / 2^l) x ceil(W / 2^l) positions, as the ResNet-FPN makes them. Every image of
    the same padded size has the same anchors, so the boxes of many images can be pooled in one call
    (positive_per_level then counts anchors positive for a box of any of them). Boxes are matched
    `chunk` at a time, so the IoU matrix never holds more than chunk x A values.
    """
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"anchor_coverage: boxes must be (G, 4) x1y1x2y2, got shape {tuple(boxes.shape)}")
    if boxes.shape[0] == 0:
        raise ValueError("anchor_coverage: no GT boxes to measure")
    generator = AnchorGenerator(sizes, aspect_ratios)
    H, W = int(image_size[0]), int(image_size[1])
    levels = len(generator.sizes)
    feature_sizes = [(math.ceil(H / 2 ** (l + 2)), math.ceil(W / 2 ** (l + 2))) for l in range(levels)]  # P2..
    anchors = generator((H, W), feature_sizes)  # (A, 4)
    per_level = [h * w * k for (h, w), k in zip(feature_sizes, generator.num_anchors_per_location())]
    level_of = torch.repeat_interleave(torch.arange(levels), torch.tensor(per_level))  # (A,) level of each anchor
    best_iou, best_anchor, positive = [], [], torch.zeros(anchors.shape[0], dtype=torch.bool)  # positive (A,)
    for part in boxes.to(anchors).split(chunk):  # (<= chunk, 4)
        iou = box_iou(part, anchors)  # (g, A)
        best, index = iou.max(dim=1)  # (g,), (g,)
        best_iou.append(best)
        best_anchor.append(index)
        positive |= (iou >= threshold).any(dim=0)  # (A,)
    return AnchorCoverage(
        best_iou=torch.cat(best_iou),  # (G,)
        best_level=level_of[torch.cat(best_anchor)],  # (G,)
        anchors_per_level=per_level,
        positive_per_level=[int(positive[level_of == l].sum()) for l in range(levels)],
        threshold=threshold,
    )
