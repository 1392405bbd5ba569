"""Getting images in and detections out: normalise, resize, pad into a batch, and map back.

Mask R-CNN (Sec. 3.1, "Implementation details") resizes every image so its shorter side is
800 pixels (the longer side capped at 1333), and the FPN needs a batch whose height and width are
multiples of 32 so that every pyramid level (strides 4..64, P6 included) tiles the padded image
exactly. After inference the boxes are scaled back to the caller's image and each 28x28 mask is
pasted into it (`masks.paste_masks_in_image`).

Everything here follows torchvision's `GeneralizedRCNNTransform`, so the two models see
bit-identical inputs. `check_inputs` adds what torchvision leaves to chance: an error that names
the image and the box when the input is wrong (empty lists, NaN pixels, 0..255 images, boxes
outside the image or normalised, 0/255 masks ...). `match_dtype` gives a float64 image to a
float32 model as float32, and says so once.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Mapping, Sequence

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


# What the model accepts, and the tolerances of its checks (README, "What gets refused, and why").
BOX_TOLERANCE = 1.0  # pixels a target box may stick out of its image (rounding); datasets/coco.py too
PIXEL_TOLERANCE = 0.25  # images may overshoot [0, 1] by this much (bicubic resizing rings a little)
MODEL_TARGET_KEYS = ("boxes", "labels", "masks")  # what training reads
# Also written by the datasets (for evaluation) and accepted without a word; anything else gets a warning.
KNOWN_TARGET_KEYS = frozenset(MODEL_TARGET_KEYS + ("image_id", "area", "iscrowd"))

_WARNED: set = set()  # keys of the warnings already given in this process


def warn_once(key, message: str) -> None:
    """`warnings.warn(message)` the first time `key` is seen in this process, then never again.

    The warning points at the first caller outside mrcnn_teach and torch: the user's line.
    """
    if key in _WARNED:
        return
    _WARNED.add(key)
    inside = (os.path.dirname(__file__) + os.sep, os.path.dirname(torch.__file__) + os.sep)
    frame, level = sys._getframe(0), 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(inside):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, stacklevel=level)


def match_dtype(images: Sequence[Tensor], dtype: torch.dtype) -> list[Tensor]:
    """Images converted to the model's parameter dtype (float64 images for a float32 model, say).

    An image of the model's own dtype is passed through untouched (a float64 model gets float64
    images as they are); a conversion is announced once per process.
    """
    converted = []
    for i, image in enumerate(images):
        if image.dtype != dtype:
            warn_once(("dtype", image.dtype, dtype),
                      f"image {i} is {image.dtype} but the model's weights are {dtype}: converted it to {dtype} "
                      f"(pass {dtype} images to skip the copy; warned once)")
            image = image.to(dtype)
        converted.append(image)
    return converted


def check_inputs(
    images: Sequence[Tensor], targets: Sequence[dict[str, Tensor]] | None, num_classes: int,
    device: torch.device | None = None, max_size: int | None = None, pixel_max: float = 1.0,
) -> None:
    """Raise a ValueError/TypeError that names the image (and box) when the input is malformed.

    torchvision checks a few of these with asserts deep inside the model; a student who passes a
    uint8 image or (x, y, w, h) boxes deserves to be told what and where. `device` is the model's,
    `max_size` its resize limit, `pixel_max` the top of the expected pixel range (1, or 255 for a
    model whose image_mean is given in 0..255).
    """
    check_images(images, device, max_size, pixel_max)
    if targets is None:
        return
    if isinstance(targets, Mapping):
        raise TypeError("targets must be a list of dicts, one per image, not one dict: use [target]")
    if not isinstance(targets, (list, tuple)):
        raise TypeError(f"targets must be a list of dicts, one per image, got {type(targets).__name__}")
    if len(targets) != len(images):
        raise ValueError(f"got {len(images)} images but {len(targets)} targets")
    for i, (image, target) in enumerate(zip(images, targets)):
        check_target(i, image, target, num_classes)


def check_images(images: Sequence[Tensor], device: torch.device | None = None, max_size: int | None = None,
                 pixel_max: float = 1.0) -> None:
    """The images half of `check_inputs`: a non-empty list of finite (3, H, W) floats in [0, 1]."""
    if isinstance(images, Tensor):
        if images.dim() == 4:
            raise TypeError("images must be a list of (3, H, W) tensors, not one (B, 3, H, W) tensor: use list(batch)")
        hint = ": use [image]" if images.dim() == 3 else ""
        raise TypeError("images must be a list of (3, H, W) tensors, not one tensor of shape "
                        f"{tuple(images.shape)}{hint}")
    if not isinstance(images, (list, tuple)):
        raise TypeError(f"images must be a list of (3, H, W) tensors, got {type(images).__name__}")
    if len(images) == 0:
        raise ValueError("got an empty list of images: pass at least one (3, H, W) tensor")
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
        height, width = image.shape[-2:]
        if height == 0 or width == 0:
            raise ValueError(f"image {i}: has no pixels (shape {tuple(image.shape)})")
        if device is not None and image.device != device:
            raise ValueError(f"image {i} is on {image.device} but the model is on {device}: "
                             f"move it with image.to({str(device)!r})")
        if max_size is not None and min(height, width) * max_size / max(height, width) < 1:
            raise ValueError(f"image {i}: {width}x{height} is too elongated: shrinking its longer side to "
                             f"max_size={max_size} leaves its shorter side under 1 pixel")
    # One (min, max) pair per image, fetched together: a single device sync for the whole batch.
    with torch.no_grad():
        pairs = [torch.stack(torch.aminmax(image.detach())).float() for image in images]  # B x (2,)
        same_device = all(p.device == pairs[0].device for p in pairs)
        ranges = torch.stack(pairs).tolist() if same_device else [p.tolist() for p in pairs]
    for i, (low, high) in enumerate(ranges):
        if math.isfinite(low) and math.isfinite(high) and -PIXEL_TOLERANCE * pixel_max <= low \
                and high <= (1 + PIXEL_TOLERANCE) * pixel_max:
            continue
        expected = f"images hold values in [0, {pixel_max:g}]"
        bad = ~torch.isfinite(images[i])  # (3, H, W)
        if bad.any():
            c, y, x = torch.nonzero(bad)[0].tolist()
            raise ValueError(f"image {i}: {int(bad.sum())} pixel value(s) are NaN or infinite "
                             f"(the first at channel {c}, y={y}, x={x}); {expected}")
        if low < -PIXEL_TOLERANCE * pixel_max:
            raise ValueError(f"image {i}: pixel values range from {low:g} to {high:g}, but {expected}; do not "
                             "normalise images yourself: the model subtracts image_mean and divides by image_std")
        hint = " (an image in 0..255? divide it by 255: image.float() / 255)" if pixel_max == 1 else ""
        raise ValueError(f"image {i}: pixel values reach {high:g}, but {expected}{hint}")


def check_target(i: int, image: Tensor, target: dict[str, Tensor], num_classes: int) -> None:
    """The targets half of `check_inputs`, for image i: boxes, labels and masks that fit the image."""
    if not isinstance(target, Mapping):
        raise TypeError(f"image {i}: the target must be a dict with boxes, labels and masks, "
                        f"got {type(target).__name__}")
    for key in MODEL_TARGET_KEYS:
        if key not in target:
            raise ValueError(f"image {i}: target has no '{key}' (keys: {sorted(target)})")
        if not isinstance(target[key], Tensor):
            raise TypeError(f"image {i}: target['{key}'] must be a torch.Tensor, got {type(target[key]).__name__}")
        if target[key].device != image.device:
            raise ValueError(f"image {i}: target['{key}'] is on {target[key].device} but the image is on "
                             f"{image.device}: move both to the model's device")
    unknown = sorted(set(target) - KNOWN_TARGET_KEYS, key=str)
    if unknown:
        warn_once(("target keys", tuple(unknown)),
                  f"image {i}: target keys {unknown} are not used by Mask R-CNN, which trains on "
                  f"{list(MODEL_TARGET_KEYS)} (warned once)")
    boxes, labels, masks = target["boxes"], target["labels"], target["masks"]
    height, width = image.shape[-2:]
    if boxes.dim() != 2 or boxes.shape[-1] != 4 or not boxes.is_floating_point():
        raise ValueError(
            f"image {i}: boxes must be a float tensor of shape (N, 4), got {boxes.dtype} {tuple(boxes.shape)}"
        )
    n = boxes.shape[0]
    if labels.shape != (n,) or labels.dtype != torch.int64:
        raise ValueError(
            f"image {i}: labels must be int64 of shape ({n},), got {labels.dtype} {tuple(labels.shape)}"
        )
    if masks.dim() != 3 or masks.shape[0] != n or masks.shape[-2:] != image.shape[-2:]:
        raise ValueError(
            f"image {i}: masks must have shape ({n}, {height}, {width}) "
            f"(one mask per box, same size as the image), got {tuple(masks.shape)}"
        )
    if n == 0:
        return
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
    check_boxes_in_image(i, boxes, masks, height, width)
    out_of_range = (labels < 1) | (labels >= num_classes)  # (N,)
    if out_of_range.any():
        bad = int(torch.nonzero(out_of_range)[0])
        raise ValueError(
            f"image {i}, object {bad}: label {int(labels[bad])} is out of range 1..{num_classes - 1} "
            f"(0 is background; the model has num_classes={num_classes})"
        )
    if masks.dtype != torch.bool:
        low, high = (float(v) for v in torch.aminmax(masks))
        if not 0 <= low <= high <= 1:  # also False for NaN
            hint = " (a 0/255 mask read from an image file? use mask > 0)" if high == 255 else ""
            raise ValueError(f"image {i}: masks must hold 0 and 1 (or probabilities in [0, 1]), "
                             f"got values from {low:g} to {high:g}{hint}")
    iscrowd = target.get("iscrowd")
    if isinstance(iscrowd, Tensor) and iscrowd.numel() and (iscrowd != 0).any():
        bad = int(torch.nonzero(iscrowd.flatten() != 0)[0])
        raise ValueError(f"image {i}, object {bad}: a crowd region (iscrowd=1); Mask R-CNN does not train on "
                         "crowds: leave them out of training targets (CocoDetection(train=True) does)")


def check_boxes_in_image(i: int, boxes: Tensor, masks: Tensor, height: int, width: int) -> None:
    """Boxes must lie in the image, in pixels: the commonest wrong input is boxes in another scale.

    A box may stick out by BOX_TOLERANCE (1 px: rounding in annotation tools); one that sticks out
    further, or has no area inside the image, is refused. Boxes that all fit in [0, 1] on an image
    whose masks are larger are normalised coordinates, refused too.
    """
    t = BOX_TOLERANCE
    x1, y1, x2, y2 = boxes.unbind(-1)  # each (N,)
    beyond = (x1 < -t) | (y1 < -t) | (x2 > width + t) | (y2 > height + t)  # (N,)
    no_area = (x1 >= width) | (y1 >= height) | (x2 <= 0) | (y2 <= 0)  # (N,) nothing of it inside
    if (beyond | no_area).any():
        j = int(torch.nonzero(beyond | no_area)[0])
        box = [round(v, 2) for v in boxes[j].tolist()]
        how = f"by more than {t:g} px" if beyond[j] else "(no part of it is inside)"
        xs, ys = boxes[:, [0, 2]], boxes[:, [1, 3]]  # (N, 2) each
        scale = max(float(xs.max()) / width, float(ys.max()) / height)
        if height != width and bool((xs.min() >= -t) & (ys.min() >= -t) & (xs.max() <= height + t)
                                    & (ys.max() <= width + t)):
            cause = "they would fit as (y1, x1, y2, x2): swap the coordinates to (x1, y1, x2, y2)"
        elif scale > 1:
            cause = (f"they reach {scale:.3g}x the image size: were they made for the image before it was resized "
                     "or cropped (scale or clip them with the image), or were (x1, y1, x2, y2) boxes converted "
                     "as if they were (x, y, w, h)?")
        else:
            cause = "clip them to the image (x in [0, W], y in [0, H])"
        raise ValueError(f"image {i}, box {j}: {box} lies outside the {width}x{height} image (width x height) "
                         f"{how}; boxes are (x1, y1, x2, y2) in pixels of this image: {cause}")
    if float(boxes.abs().max()) <= 1.0 and max(height, width) > 2 and bool(masks[:, 2:].any() or masks[:, :, 2:].any()):
        raise ValueError(f"image {i}: all {len(boxes)} boxes lie within [0, 1] (box 0: {boxes[0].tolist()}) but "
                         f"the masks cover more of the {width}x{height} image: boxes must be in pixels, "
                         f"not normalised; multiply them by (W, H, W, H) = ({width}, {height}, {width}, {height})")
