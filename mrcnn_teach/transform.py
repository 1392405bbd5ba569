"""Getting images in and detections out: normalise, resize, pad into a batch, and map back.

Mask R-CNN (Sec. 3.1, "Implementation details") resizes every image so its shorter side is
800 pixels (the longer side capped at 1333), and the FPN needs a batch whose height and width are
multiples of 32 so that every pyramid level (strides 4..64, P6 included) tiles the padded image
exactly. After inference the boxes are scaled back to the caller's image and each 28x28 mask is
pasted into it (`masks.paste_masks_in_image`).

Everything here follows torchvision's `GeneralizedRCNNTransform`, so the two models see
bit-identical inputs. `check_inputs` adds what torchvision leaves to chance: an error that names
the image and the box when the input is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .masks import paste_masks_in_image

Size = tuple[int, int]


class ImageTransform(nn.Module):
    """Normalise -> resize -> pad to a batch (and `postprocess` to undo the resize)."""

    def __init__(
        self,
        min_size: int | Sequence[int] = 800,
        max_size: int = 1333,
        image_mean: Sequence[float] = (0.485, 0.456, 0.406),
        image_std: Sequence[float] = (0.229, 0.224, 0.225),
        size_divisible: int = 32,
    ):
        super().__init__()
        # A tuple of min sizes means multi-scale training: one is drawn per image.
        self.min_size = (min_size,) if isinstance(min_size, int) else tuple(min_size)
        self.max_size = max_size
        self.image_mean = tuple(image_mean)
        self.image_std = tuple(image_std)
        self.size_divisible = size_divisible

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> tuple[Tensor, list[Size], list[dict[str, Tensor]] | None]:
        """images: list of (3, H_i, W_i) floats in [0, 1].

        Returns the padded batch (B, 3, H, W), each image's size inside it before padding, and
        the targets with boxes and masks resized to match (copies: the caller's stay untouched).
        """
        resized, new_targets = [], []
        for i, image in enumerate(images):
            target = dict(targets[i]) if targets is not None else None
            image = self.normalize(image)  # (3, H_i, W_i)
            image, target = self.resize(image, target)  # (3, h_i, w_i)
            resized.append(image)
            new_targets.append(target)
        image_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in resized]
        batch = self.batch_images(resized)  # (B, 3, H, W), H and W multiples of size_divisible
        return batch, image_sizes, (new_targets if targets is not None else None)

    def normalize(self, image: Tensor) -> Tensor:
        mean = torch.as_tensor(self.image_mean, dtype=image.dtype, device=image.device)  # (3,)
        std = torch.as_tensor(self.image_std, dtype=image.dtype, device=image.device)  # (3,)
        return (image - mean[:, None, None]) / std[:, None, None]  # (3, H, W)

    def pick_min_size(self) -> int:
        """Training draws the scale with torch's RNG, exactly as torchvision does (one uniform
        draw per image, even when there is a single size): a seeded run of ours and of
        torchvision then reach the RPN/RoI samplers with the same generator state."""
        if not self.training:
            return self.min_size[-1]
        index = int(torch.empty(1).uniform_(0.0, float(len(self.min_size))).item())
        return self.min_size[index]

    def resize(self, image: Tensor, target: dict[str, Tensor] | None) -> tuple[Tensor, dict | None]:
        h, w = image.shape[-2:]
        min_size = self.pick_min_size()
        # The shorter side becomes min_size unless that pushes the longer side past max_size.
        scale = min(min_size / min(h, w), self.max_size / max(h, w))
        image = F.interpolate(
            image[None], scale_factor=scale, mode="bilinear",
            recompute_scale_factor=True, align_corners=False,
        )[0]  # (3, h', w')
        if target is None:
            return image, None
        target["boxes"] = resize_boxes(target["boxes"], (h, w), image.shape[-2:])  # (N, 4)
        if "masks" in target:
            masks = target["masks"][:, None].float()  # (N, 1, H, W)
            masks = F.interpolate(masks, scale_factor=scale, recompute_scale_factor=True)  # nearest
            target["masks"] = masks[:, 0].byte()  # (N, h', w')
        return image, target

    def batch_images(self, images: list[Tensor]) -> Tensor:
        """Zero-pad every image at the bottom/right to a common size divisible by 32."""
        stride = self.size_divisible
        height = math.ceil(max(img.shape[-2] for img in images) / stride) * stride
        width = math.ceil(max(img.shape[-1] for img in images) / stride) * stride
        batch = images[0].new_zeros(len(images), images[0].shape[0], height, width)  # (B, 3, H, W)
        for i, img in enumerate(images):
            batch[i, :, : img.shape[-2], : img.shape[-1]].copy_(img)
        return batch

    def postprocess(
        self, detections: list[dict[str, Tensor]], image_sizes: list[Size], original_sizes: list[Size]
    ) -> list[dict[str, Tensor]]:
        """Boxes back to the caller's pixels; each 28x28 mask pasted into the full image."""
        results = []
        for det, size, original in zip(detections, image_sizes, original_sizes):
            det = dict(det)
            det["boxes"] = resize_boxes(det["boxes"], size, original)  # (D, 4)
            if "masks" in det:
                det["masks"] = paste_masks_in_image(det["masks"], det["boxes"], original)  # (D, 1, H, W)
            results.append(det)
        return results


def resize_boxes(boxes: Tensor, original_size: Sequence[int], new_size: Sequence[int]) -> Tensor:
    """Scale (N, 4) boxes from an image of `original_size` (h, w) to one of `new_size`."""
    ratio_h, ratio_w = (
        torch.tensor(float(new), dtype=torch.float32, device=boxes.device)
        / torch.tensor(float(old), dtype=torch.float32, device=boxes.device)
        for new, old in zip(new_size, original_size)
    )
    x1, y1, x2, y2 = boxes.unbind(-1)  # each (N,)
    return torch.stack((x1 * ratio_w, y1 * ratio_h, x2 * ratio_w, y2 * ratio_h), dim=-1)  # (N, 4)


def check_inputs(
    images: Sequence[Tensor], targets: Sequence[dict[str, Tensor]] | None, num_classes: int
) -> None:
    """Raise a ValueError/TypeError that names the image (and box) when the input is malformed.

    torchvision checks a few of these with asserts deep inside the model; a student who passes a
    uint8 image or (x, y, w, h) boxes deserves to be told what and where.
    """
    if isinstance(images, Tensor) and images.dim() == 4:
        raise TypeError("images must be a list of (3, H, W) tensors, not one (B, 3, H, W) tensor: use list(batch)")
    for i, image in enumerate(images):
        if not isinstance(image, Tensor):
            raise TypeError(f"image {i}: expected a torch.Tensor, got {type(image).__name__}")
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"image {i}: expected shape (3, H, W) (RGB, channels first), got {tuple(image.shape)}")
        if not image.is_floating_point():
            raise TypeError(
                f"image {i}: expected a float tensor with values in [0, 1], got dtype {image.dtype} "
                "(convert with image.float() / 255)"
            )
    if targets is None:
        return
    if len(targets) != len(images):
        raise ValueError(f"got {len(images)} images but {len(targets)} targets")
    for i, (image, target) in enumerate(zip(images, targets)):
        for key in ("boxes", "labels", "masks"):
            if key not in target:
                raise ValueError(f"image {i}: target has no '{key}' (keys: {sorted(target)})")
        boxes, labels, masks = target["boxes"], target["labels"], target["masks"]
        if boxes.dim() != 2 or boxes.shape[-1] != 4 or not boxes.is_floating_point():
            raise ValueError(
                f"image {i}: boxes must be a float tensor of shape (N, 4), got {boxes.dtype} {tuple(boxes.shape)}"
            )
        n = boxes.shape[0]
        if not torch.isfinite(boxes).all():
            bad = int(torch.nonzero(~torch.isfinite(boxes).all(dim=1))[0])
            raise ValueError(f"image {i}, box {bad}: non-finite coordinates {boxes[bad].tolist()}")
        degenerate = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])  # (N,)
        if degenerate.any():
            bad = int(torch.nonzero(degenerate)[0])
            raise ValueError(
                f"image {i}, box {bad}: {boxes[bad].tolist()} has x2 <= x1 or y2 <= y1; boxes must be "
                "(x1, y1, x2, y2) with positive width and height (not (x, y, w, h))"
            )
        if labels.shape != (n,) or labels.dtype != torch.int64:
            raise ValueError(
                f"image {i}: labels must be int64 of shape ({n},), got {labels.dtype} {tuple(labels.shape)}"
            )
        out_of_range = (labels < 1) | (labels >= num_classes)  # (N,)
        if out_of_range.any():
            bad = int(torch.nonzero(out_of_range)[0])
            raise ValueError(
                f"image {i}, object {bad}: label {int(labels[bad])} is out of range 1..{num_classes - 1} "
                f"(0 is background; the model has num_classes={num_classes})"
            )
        if masks.dim() != 3 or masks.shape[0] != n or masks.shape[-2:] != image.shape[-2:]:
            raise ValueError(
                f"image {i}: masks must have shape ({n}, {image.shape[-2]}, {image.shape[-1]}) "
                f"(one mask per box, same size as the image), got {tuple(masks.shape)}"
            )
