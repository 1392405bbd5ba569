"""Data augmentation for (image, target) pairs, and batching.

Mask R-CNN's only training augmentation is a horizontal flip (He et al. 2017, Sec. 3.1,
"Training": images are resized so the short side is 800 px; the Detectron recipes add
the flip). The image, its boxes and its masks must flip together, or the targets stop
describing the picture. Resizing and normalising happen inside the model
(mrcnn_teach.transform.ImageTransform), as in torchvision, so they are not here.

Randomness comes from torch's generator (torch.rand), so torch.manual_seed and the
per-worker seeds that DataLoader sets make it reproducible.
"""

from __future__ import annotations

import torch


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


def collate_fn(batch):
    """[(image, target), ...] -> (list of images, list of targets).

    Images differ in size and targets in object count, so nothing is stacked here; the
    model pads images into one batch tensor itself (ImageTransform).
    """
    images = [image for image, _ in batch]
    targets = [target for _, target in batch]
    return images, targets
