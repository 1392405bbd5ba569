"""RoIAlign over the feature pyramid: which level does each RoI read from?

Mask R-CNN (He et al. 2017, Sec. 3 and Fig. 4 right) pools every RoI into a fixed grid with RoIAlign —
7x7 for the box head, 14x14 for the mask head. With an FPN backbone there are four maps to pool from
(P2..P5, strides 4..32), and FPN (Lin et al. 2017, Sec. 4.2, Eq. 1) assigns an RoI of width w and
height h (in input-image pixels) to level

    k = floor(k0 + log2(sqrt(w * h) / 224)),   k0 = 4, clamped to 2..5.

A 224x224 RoI — the ImageNet pre-training size — reads from P4, the level an ImageNet ResNet would
use for a whole image; every halving of the RoI's side moves it one level finer. So small objects are
pooled from high-resolution maps and big objects from coarse, semantically strong ones. P6 exists for
the RPN's 512-px anchors only and is never pooled.

Numerically equal to torchvision.ops.MultiScaleRoIAlign (whose level rule is LevelMapper).
"""

import math

import torch
from torch import Tensor, nn

from .boxes import box_area
from .kernels import TEACHING, Kernels, get_kernels

NUM_POOLED_LEVELS = 4  # P2..P5 (FPN Sec. 4.2); P6 is ignored


def assign_levels(boxes: Tensor, k_min: int = 2, k_max: int = 5, canonical_scale: int = 224,
                  canonical_level: int = 4, eps: float = 1e-6) -> Tensor:
    """FPN Eq. 1: the pyramid level of each box, as an index 0..k_max-k_min into [P_kmin .. P_kmax].

    boxes (N, 4) x1y1x2y2 in image pixels -> (N,) int64.
    `eps` pushes values that are integers in exact arithmetic (a 112x112 box gives exactly 3) past
    float round-off, so that they are not floored to the level below.
    """
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"assign_levels: boxes must have shape (N, 4), got {tuple(boxes.shape)}")
    scale = torch.sqrt(box_area(boxes))  # (N,) sqrt(wh): the side of a square of the same area
    k = torch.floor(canonical_level + torch.log2(scale / canonical_scale) + eps)  # (N,) Eq. 1
    k = torch.clamp(k, min=k_min, max=k_max)  # (N,) tiny boxes -> P2, huge boxes -> P5
    return k.to(torch.int64) - k_min  # (N,) 0 = P_kmin


def infer_scale(feature_size: int, image_size: int) -> float:
    """The stride of a level as a spatial scale 1/stride, assumed to be a power of two.

    A feature map of a padded batch is not exactly image_size / stride big (padding to a multiple of 32,
    odd sizes rounded up by strided convs), so the ratio is rounded to the nearest power of two, like
    torchvision's MultiScaleRoIAlign does.
    """
    return 2.0 ** round(math.log2(feature_size / image_size))


def rois_with_image_index(boxes: list[Tensor]) -> Tensor:
    """list of (N_i, 4) boxes per image -> (sum N_i, 5) rows [image_index, x1, y1, x2, y2] (roi_align's format)."""
    image_index = torch.cat([torch.full((len(b), 1), i, dtype=b.dtype, device=b.device)
                             for i, b in enumerate(boxes)])  # (N, 1)
    return torch.cat([image_index, torch.cat(boxes)], dim=1)  # (N, 5)


class MultiLevelRoIAlign(nn.Module):
    """Pool every RoI from its own pyramid level (FPN Eq. 1) with RoIAlign (Mask R-CNN Sec. 3).

    forward(features [P2, P3, P4, P5(, P6 ignored)] each (B, C, H_l, W_l), boxes list of (N_i, 4) per image
    in the (resized) image frame, image_sizes list of (h, w)) -> (sum N_i, C, out, out), rows in the order
    of the input boxes (image 0's boxes first).

    The scale of each level is inferred from the feature sizes and the largest image of the batch
    (torchvision's rule, see `infer_scale`); the level range k_min..k_max follows from those scales
    (1/4 .. 1/32 -> 2..5). Unlike torchvision we do not cache the scales after the first call: they are
    recomputed (cheaply) every time, so one module serves batches of any size.

    aligned=False by default: torchvision's Mask R-CNN (and its pre-trained weights) uses the original
    RoIAlign without the half-pixel shift (Detectron2 later set aligned=True).

    layer="pool" swaps RoIAlign for Fast R-CNN's RoIPool (same levels, same output size; sampling_ratio
    and aligned do not apply): the RoI layer of the paper's ablation, Table 2c.
    """

    def __init__(self, output_size: int, sampling_ratio: int, kernels: Kernels = TEACHING, aligned: bool = False,
                 layer: str = "align"):
        super().__init__()
        if layer not in ("align", "pool"):
            raise ValueError(f"MultiLevelRoIAlign: layer must be 'align' (RoIAlign) or 'pool' (RoIPool), got {layer!r}")
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned
        self.layer = layer
        self.kernels = get_kernels(kernels)

    def pool(self, feature: Tensor, rois: Tensor, scale: float) -> Tensor:
        """One level: (B, C, H_l, W_l), rois (N_l, 5) -> (N_l, C, out, out) with the chosen RoI layer."""
        if self.layer == "pool":
            return self.kernels.roi_pool(feature, rois, self.output_size, spatial_scale=scale)
        return self.kernels.roi_align(feature, rois, self.output_size, spatial_scale=scale,
                                      sampling_ratio=self.sampling_ratio, aligned=self.aligned)

    def scales(self, features: list[Tensor], image_sizes: list[tuple[int, int]]) -> list[float]:
        """1/stride of each pooled level, from the height of the feature map and of the tallest image."""
        max_h = max(int(h) for h, _ in image_sizes)
        return [infer_scale(f.shape[-2], max_h) for f in features]

    def forward(self, features: list[Tensor], boxes: list[Tensor], image_sizes: list[tuple[int, int]]) -> Tensor:
        features = list(features)[:NUM_POOLED_LEVELS]
        self._check_inputs(features, boxes, image_sizes)
        scales = self.scales(features, image_sizes)
        k_min, k_max = round(-math.log2(scales[0])), round(-math.log2(scales[-1]))  # 2, 5 for P2..P5

        rois = rois_with_image_index(boxes)  # (N, 5)
        levels = assign_levels(rois[:, 1:], k_min, k_max)  # (N,) 0..3
        num_rois, channels = rois.shape[0], features[0].shape[1]
        pooled = features[0].new_zeros((num_rois, channels) + self.output_size)  # (N, C, out, out)
        for level, (feature, scale) in enumerate(zip(features, scales)):  # a loop over 4 levels, not RoIs
            idx = torch.nonzero(levels == level).squeeze(1)  # (N_l,) the RoIs of this level
            if idx.numel() == 0:
                continue
            pooled_l = self.pool(feature, rois[idx], scale)  # (N_l, C, out, out)
            pooled = pooled.index_copy(0, idx, pooled_l.to(pooled.dtype))  # (N, C, out, out) back in input order
        return pooled

    @staticmethod
    def _check_inputs(features, boxes, image_sizes):
        if len(features) != NUM_POOLED_LEVELS:
            raise ValueError(f"MultiLevelRoIAlign: expected features [P2, P3, P4, P5(, P6)], got {len(features)} maps")
        batch = features[0].shape[0]
        if len(boxes) != batch or len(image_sizes) != batch:
            raise ValueError(f"MultiLevelRoIAlign: features hold {batch} images but got {len(boxes)} box lists "
                             f"and {len(image_sizes)} image sizes")
        for i, b in enumerate(boxes):
            if b.dim() != 2 or b.shape[-1] != 4:
                raise ValueError(f"MultiLevelRoIAlign: boxes of image {i} must have shape (N, 4), "
                                 f"got {tuple(b.shape)}")
            bad = torch.nonzero((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])).flatten()  # (n_bad,)
            if bad.numel() > 0:
                j = int(bad[0])
                raise ValueError(f"MultiLevelRoIAlign: box {j} of image {i} has x2 < x1 or y2 < y1: "
                                 f"{b[j].tolist()}")
