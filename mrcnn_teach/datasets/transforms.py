"""Data augmentation for (image, target) pairs, and batching.

Mask R-CNN's only training augmentation is a horizontal flip (He et al. 2017, Sec. 3.1,
"Training": images are resized so the short side is 800 px; the Detectron recipes add
the flip). The image, its boxes and its masks must flip together, or the targets stop
describing the picture. Resizing to the model's input size and normalising happen inside the
model (mrcnn_teach.transform.ImageTransform), as in torchvision, so they are not here.

A flip alone teaches nothing about size: a model trained on shapes drawn 12-48 px misses 90 px ones.
Large-scale jitter (Ghiasi et al. 2021, "Simple Copy-Paste", Sec. 3; torchvision's newer recipes)
resizes each training image by a random factor and then crops or pads it back to a fixed size, so
the objects change size while the model's input does not (`scale_jitter`, `RandomScaleJitter`).

Randomness comes from torch's generator (torch.rand), so torch.manual_seed and the
per-worker seeds that DataLoader sets make it reproducible.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class Compose:
    """Apply transforms in order; each is callable(image, target) -> (image, target)."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, image, target=None):
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


def hflip(image: torch.Tensor, target: dict | None = None):
    """Mirror image (C, H, W) left-right, with its boxes and masks.

    A box spans pixel edges [x1, x2]; the mirror of edge x is W - x, so the new box is
    [W - x2, W - x1] (left and right edges swap).
    """
    width = image.shape[-1]
    image = image.flip(-1)  # (C, H, W)
    if target is None:
        return image, None
    target = dict(target)
    if "boxes" in target:
        boxes = target["boxes"]  # (N, 4)
        target["boxes"] = torch.stack([width - boxes[:, 2], boxes[:, 1],
                                       width - boxes[:, 0], boxes[:, 3]], dim=1)  # (N, 4)
    if "masks" in target:
        target["masks"] = target["masks"].flip(-1)  # (N, H, W)
    return image, target


class RandomHorizontalFlip:
    """Flip with probability p (image, boxes, masks)."""

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, image, target=None):
        if torch.rand(1).item() < self.p:
            return hflip(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


# Target entries scale_jitter knows: per-instance ones are indexed by the instances kept.
PER_INSTANCE = ("boxes", "labels", "masks", "area", "iscrowd")
PER_IMAGE = ("image_id",)


def tight_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight boxes (x1, y1, x2, y2) of non-empty masks (N, H, W), pixel-edge convention (x2 = last column + 1)."""
    height, width = masks.shape[-2:]
    masks = masks.ne(0)  # (N, H, W) bool, whatever the dtype given
    cols = masks.any(dim=1)  # (N, W) which columns each mask touches
    rows = masks.any(dim=2)  # (N, H)
    x = torch.arange(width, device=masks.device)  # (W,)
    y = torch.arange(height, device=masks.device)  # (H,)
    x1 = torch.where(cols, x, width).amin(dim=1)  # (N,) first touched column
    x2 = torch.where(cols, x + 1, 0).amax(dim=1)  # (N,) one past the last
    y1 = torch.where(rows, y, height).amin(dim=1)  # (N,)
    y2 = torch.where(rows, y + 1, 0).amax(dim=1)  # (N,)
    return torch.stack([x1, y1, x2, y2], dim=1).to(torch.float32)  # (N, 4)


def _place(src: torch.Tensor, top: int, left: int, out_h: int, out_w: int, fill: torch.Tensor) -> torch.Tensor:
    """The window [top, top + out_h) x [left, left + out_w) of src (..., h, w); outside src it is `fill`.

    A positive offset crops, a negative one pads: out[..., y, x] = src[..., y + top, x + left].
    fill broadcasts over (..., out_h, out_w) (a scalar, or (C, 1, 1) for a per-channel colour).
    """
    h, w = src.shape[-2:]
    out = fill.to(src.dtype).expand(*src.shape[:-2], out_h, out_w).clone()  # (..., out_h, out_w)
    y0, y1 = max(top, 0), min(top + out_h, h)  # rows of src inside the window
    x0, x1 = max(left, 0), min(left + out_w, w)
    if y1 > y0 and x1 > x0:
        out[..., y0 - top:y1 - top, x0 - left:x1 - left] = src[..., y0:y1, x0:x1]
    return out


def scale_jitter(image: torch.Tensor, target: dict | None, scale: float, offset: tuple[int, int] = (0, 0),
                 output_size: tuple[int, int] | None = None, fill: float | None = None):
    """Resize image (C, H, W) by `scale`, then take an output_size window at offset (top, left) of it.

    output_size defaults to the input's own (H, W): objects grow or shrink, the image does not. A window
    reaching past the resized image is padded with `fill` (default: the image's mean colour, which the
    model's normalisation maps close to the zero its own batch padding uses).
    - image: bilinear with antialiasing (a plain bilinear shrink by 2 would skip every other pixel);
    - masks: resized the same way as soft masks and thresholded at 0.5, then placed like the image;
    - boxes: with masks, re-derived as the tight boxes of the new masks (a crop that cuts a corner off
      a triangle leaves a smaller box than the clamped old one; detectron2's LSJ recipes recompute
      boxes for this reason); without masks, scaled, shifted and clipped to the window;
    - instances left with no pixel (or an empty box) in the window are dropped, with their labels,
      area and iscrowd; `area` is recomputed (with masks: their pixel counts, always set).
    """
    if image.ndim != 3:
        raise ValueError(f"scale_jitter: image must be (C, H, W), got shape {tuple(image.shape)}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale_jitter: scale must be a positive number, got {scale!r}")
    height, width = image.shape[-2:]
    out_h, out_w = (height, width) if output_size is None else output_size
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    top, left = offset
    resized = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", align_corners=False,
                            antialias=True)[0]  # (C, new_h, new_w)
    colour = resized.mean(dim=(1, 2), keepdim=True) if fill is None else torch.tensor(float(fill))  # (C, 1, 1) or ()
    image = _place(resized, top, left, out_h, out_w, colour)  # (C, out_h, out_w)
    if target is None:
        return image, None

    unknown = sorted(k for k, v in target.items() if k not in PER_INSTANCE + PER_IMAGE
                     and isinstance(v, torch.Tensor) and v.ndim > 0)
    if unknown:
        raise ValueError(f"scale_jitter: does not know how to resize target entries {unknown} "
                         f"(it transforms {list(PER_INSTANCE)} and keeps {list(PER_IMAGE)})")
    target = dict(target)
    sx, sy = new_w / width, new_h / height  # the scale actually applied, after rounding the size
    if "masks" in target:
        masks = target["masks"]  # (N, H, W)
        soft = F.interpolate(masks[None].float(), size=(new_h, new_w), mode="bilinear", align_corners=False,
                             antialias=True)[0] if len(masks) else masks.new_zeros((0, new_h, new_w)).float()
        masks = _place((soft >= 0.5).to(masks.dtype), top, left, out_h, out_w, torch.tensor(0))  # (N, out_h, out_w)
        keep = masks.flatten(1).ne(0).any(dim=1)  # (N,) bool
        target["masks"] = masks
        if "boxes" in target:
            target["boxes"] = tight_boxes(masks).to(target["boxes"].dtype)  # (N, 4)
        target["area"] = masks.flatten(1).sum(dim=1).to(torch.float32)  # (N,) pixels left in the window
    elif "boxes" in target:
        boxes = target["boxes"] * torch.tensor([sx, sy, sx, sy]) - torch.tensor([left, top, left, top])  # (N, 4)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, out_w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, out_h)
        target["boxes"] = boxes.to(target["boxes"].dtype)  # (N, 4)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # (N,)
        if "area" in target:
            target["area"] = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).to(torch.float32)  # (N,)
    else:
        return image, target
    for key in PER_INSTANCE:
        if key in target:
            target[key] = target[key][keep]
    return image, target


class RandomScaleJitter:
    """Large-scale jitter: resize by a random factor in scale_range, then crop or pad back to the image size.

    The factor is drawn log-uniformly (x2 and x0.5 are equally likely, and equally far from 1); the
    window's position is uniform over all positions that keep it inside the resized image (when
    cropping) or the resized image inside it (when padding). Randomness comes from torch's generator.
    """

    def __init__(self, scale_range: tuple[float, float] = (0.5, 2.0)):
        lo, hi = scale_range
        if not (0 < lo <= hi and math.isfinite(hi)):
            raise ValueError(f"RandomScaleJitter: scale_range must be (min, max) with 0 < min <= max, got {scale_range!r}")
        self.scale_range = (float(lo), float(hi))

    def get_params(self, height: int, width: int) -> tuple[float, tuple[int, int]]:
        """Draw (scale, (top, left)) for an image of height x width."""
        lo, hi = self.scale_range
        scale = math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * torch.rand(1).item())
        spare_h = max(1, round(height * scale)) - height  # > 0: rows to crop away, < 0: rows to pad
        spare_w = max(1, round(width * scale)) - width
        top = int(torch.randint(min(0, spare_h), max(0, spare_h) + 1, ()).item())
        left = int(torch.randint(min(0, spare_w), max(0, spare_w) + 1, ()).item())
        return scale, (top, left)

    def __call__(self, image, target=None):
        scale, offset = self.get_params(*image.shape[-2:])
        return scale_jitter(image, target, scale, offset)

    def __repr__(self) -> str:
        return f"RandomScaleJitter(scale_range={self.scale_range})"


def collate_fn(batch):
    """[(image, target), ...] -> (list of images, list of targets).

    Images differ in size and targets in object count, so nothing is stacked here; the
    model pads images into one batch tensor itself (ImageTransform).
    """
    images = [image for image, _ in batch]
    targets = [target for _, target in batch]
    return images, targets
