"""A built-in toy dataset: squares, circles and triangles with instance masks.

Mask R-CNN (He et al. 2017) learns three things per object: a class, a box and a
pixel mask (Sec. 3). COCO needs hours of GPU time before any of them look right;
this dataset needs nothing downloaded and trains on a CPU in minutes, yet it has
what makes instance segmentation hard: several objects per image, objects that
hide parts of each other, and a background that is not a single colour.

How an image is made (all of it from one numpy Generator seeded by (seed, index),
so image i is the same in every process, DataLoader workers included):

1. a linear colour gradient between two random colours is the background;
2. 1..4 shapes get a class, a size, a centre, a rotation and a colour that stands out
   from the background and from the shapes drawn before;
3. shapes are painted in order, so a later shape hides (and cuts from the mask of)
   an earlier one; a shape left with too little visible area is removed from the
   scene altogether, so every painted pixel belongs to an annotated instance;
4. a little Gaussian noise, so a network cannot solve it by reading exact colours.

Boxes are the tight boxes of the final masks in the pixel-edge convention that COCO
uses: a mask whose pixels span columns 3..7 has x1 = 3, x2 = 8.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .transforms import tight_boxes

CLASSES = ("background", "square", "circle", "triangle")
SQUARE, CIRCLE, TRIANGLE = 1, 2, 3

# Sizes are given for a 128-px image and scale with image_size. A shape's size is its side (square,
# triangle) or diameter (circle), drawn uniformly from 12-48 px. Its box is what the detector sees:
# a rotated square's box is up to sqrt(2) wider and an occluded shape's smaller, so over the 2000
# training images the boxes' sides sqrt(w*h) run from 6 to 67 px (median 31; benchmarks/anchor_design.py).
MIN_SIZE_128, MAX_SIZE_128 = 12.0, 48.0
MIN_VISIBLE_FRACTION = 0.2  # keep a shape only if >= 20% of it is still visible ...
MIN_VISIBLE_PIXELS = 10     # ... and at least 10 pixels
MIN_COLOR_DISTANCE = 0.35   # RGB distance (cube diagonal = 1.73) to background and earlier shapes
NOISE_STD = 0.02


@dataclass(frozen=True)
class Shape:
    """One shape to draw. size = side length (square, triangle) or diameter (circle)."""

    label: int                         # 1 square, 2 circle, 3 triangle (index into CLASSES)
    cx: float                          # centre, pixels (pixel (x, y) covers [x, x+1) x [y, y+1))
    cy: float
    size: float
    angle: float = 0.0                 # radians, counter-clockwise on screen; ignored for circles
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @property
    def radius(self) -> float:
        """Circumradius: the shape lies inside the circle of this radius around its centre."""
        if self.label == SQUARE:
            return self.size / math.sqrt(2.0)
        if self.label == TRIANGLE:
            return self.size / math.sqrt(3.0)
        return self.size / 2.0


def _polygon_vertices(shape: Shape) -> np.ndarray:
    """Corners of a square / equilateral triangle as a regular polygon around its centre."""
    n = 4 if shape.label == SQUARE else 3
    start = math.pi / 4 if n == 4 else -math.pi / 2  # axis-aligned square, triangle pointing up
    theta = start - shape.angle + 2 * math.pi * np.arange(n) / n  # (n,); minus: y points down
    return np.stack([shape.cx + shape.radius * np.cos(theta),
                     shape.cy + shape.radius * np.sin(theta)], axis=1)  # (n, 2)


def shape_mask(shape: Shape, height: int, width: int) -> np.ndarray:
    """Rasterise one shape: a pixel belongs to it if the pixel's centre lies inside.

    Circles: distance test. Squares and triangles are convex, so a point is inside iff
    it lies on the same side of every edge (the half-plane test); both are evaluated
    for the whole pixel grid at once.
    """
    if shape.label not in (SQUARE, CIRCLE, TRIANGLE):
        raise ValueError(f"shape label must be 1, 2 or 3 ({CLASSES[1:]}), got {shape.label}")
    ys = np.arange(height, dtype=np.float64)[:, None] + 0.5  # (H, 1) pixel centres
    xs = np.arange(width, dtype=np.float64)[None, :] + 0.5   # (1, W)
    if shape.label == CIRCLE:
        return (xs - shape.cx) ** 2 + (ys - shape.cy) ** 2 <= (shape.size / 2) ** 2  # (H, W)
    v = _polygon_vertices(shape)  # (n, 2)
    edge = np.roll(v, -1, axis=0) - v  # (n, 2) edge i goes from v[i] to v[i+1]
    # z-component of edge x (p - v): its sign says on which side of the edge p lies.
    cross = (edge[:, 0, None, None] * (ys - v[:, 1, None, None])
             - edge[:, 1, None, None] * (xs - v[:, 0, None, None]))  # (n, H, W)
    return (cross >= 0).all(axis=0) | (cross <= 0).all(axis=0)  # (H, W)


def visible_masks(full_masks: np.ndarray) -> np.ndarray:
    """Painter's algorithm on masks: shape i keeps the pixels no later shape covers.

    full_masks (N, H, W) bool, in drawing order -> (N, H, W) bool, pairwise disjoint.
    """
    if len(full_masks) == 0:
        return full_masks.copy()
    # covered_from[i] = pixel is covered by any of shapes i, i+1, ..., N-1
    covered_from = np.logical_or.accumulate(full_masks[::-1], axis=0)[::-1]  # (N, H, W)
    covered_later = np.zeros_like(full_masks)  # (N, H, W)
    covered_later[:-1] = covered_from[1:]
    return full_masks & ~covered_later  # (N, H, W)


def render_shapes(shapes: list[Shape], background: np.ndarray,
                  min_visible_fraction: float = MIN_VISIBLE_FRACTION,
                  min_visible_pixels: int = MIN_VISIBLE_PIXELS, rasterise=shape_mask):
    """Paint shapes in order onto background (H, W, 3) float.

    Returns (image (H, W, 3) float32, masks (K, H, W) bool, kept: list[Shape]).
    A shape whose visible area is < min_visible_fraction of its full area or
    < min_visible_pixels is removed from the scene (not painted, not annotated):
    a sliver with no label would teach the network that objects can be background.
    rasterise(shape, height, width) -> (H, W) bool draws one shape (default: `shape_mask`).
    """
    if background.ndim != 3 or background.shape[2] != 3:
        raise ValueError(f"background must be (H, W, 3), got shape {background.shape}")
    height, width = background.shape[:2]
    kept = list(shapes)
    full = np.stack([rasterise(s, height, width) for s in kept]) if kept else \
        np.zeros((0, height, width), dtype=bool)  # (N, H, W)
    while True:
        visible = visible_masks(full)  # (N, H, W)
        visible_area = visible.sum(axis=(1, 2))  # (N,)
        full_area = full.sum(axis=(1, 2))  # (N,)
        too_hidden = (visible_area < min_visible_fraction * full_area) | (visible_area < min_visible_pixels)  # (N,)
        if not too_hidden.any():
            break
        # Drop the top-most failing shape only: removing it can un-hide the shapes below,
        # while nothing below can change what it shows.
        drop = int(np.flatnonzero(too_hidden)[-1])
        kept.pop(drop)
        full = np.delete(full, drop, axis=0)  # (N-1, H, W)
    colors = np.array([s.color for s in kept], dtype=np.float64).reshape(-1, 3)  # (K, 3)
    covered = visible.any(axis=0)[..., None]  # (H, W, 1)
    painted = np.einsum("khw,kc->hwc", visible.astype(np.float64), colors)  # (H, W, 3); masks are disjoint
    image = np.where(covered, painted, background).astype(np.float32)  # (H, W, 3)
    return image, visible, kept


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight boxes (x1, y1, x2, y2) of non-empty masks (N, H, W), x2 = last column + 1: the numpy face of
    transforms.tight_boxes, for the numpy drawing code here."""
    return tight_boxes(torch.from_numpy(np.asarray(masks))).numpy()  # (N, 4) float32


def gradient_background(rng: np.random.Generator, height: int, width: int):
    """A linear gradient between two random colours along a random direction.

    Returns (background (H, W, 3) float64, its two end colours (2, 3)).
    """
    ends = rng.uniform(0.0, 1.0, size=(2, 3))  # (2, 3)
    phi = rng.uniform(0.0, 2 * math.pi)
    ys = np.arange(height)[:, None] + 0.5 - height / 2  # (H, 1)
    xs = np.arange(width)[None, :] + 0.5 - width / 2    # (1, W)
    half_extent = (abs(math.cos(phi)) * width + abs(math.sin(phi)) * height) / 2
    t = (xs * math.cos(phi) + ys * math.sin(phi)) / (2 * half_extent) + 0.5  # (H, W) in [0, 1]
    background = ends[0] * (1 - t[..., None]) + ends[1] * t[..., None]  # (H, W, 3)
    return background, ends


def _distinct_color(rng: np.random.Generator, avoid: list[np.ndarray]) -> tuple[float, float, float]:
    """A random colour at least MIN_COLOR_DISTANCE from every colour in avoid (50 tries)."""
    for _ in range(50):
        color = rng.uniform(0.0, 1.0, size=3)  # (3,)
        if all(np.linalg.norm(color - a) >= MIN_COLOR_DISTANCE for a in avoid):
            break
    return tuple(float(c) for c in color)


def random_scene(rng: np.random.Generator, image_size: int, min_shapes: int, max_shapes: int,
                 size_range: tuple[float, float] = (MIN_SIZE_128, MAX_SIZE_128)):
    """Draw a background and a list of shapes (before occlusion) from rng.

    Sizes are uniform in size_range (pixels of a 128-px image, scaled with image_size). A shape is
    placed wholly inside the image where it fits; one too large to fit (circumradius over half the
    image) is centred in that direction and the image border cuts it, like a close-up photo.
    """
    background, ends = gradient_background(rng, image_size, image_size)
    avoid = [ends[0], ends[1], ends.mean(axis=0)]
    scale = image_size / 128.0
    shapes = []
    for _ in range(int(rng.integers(min_shapes, max_shapes + 1))):
        label = int(rng.integers(1, 4))
        size = float(rng.uniform(*size_range)) * scale
        probe = Shape(label, 0.0, 0.0, size)
        r = min(probe.radius, image_size / 2)  # keep the whole shape inside the image if it fits
        cx, cy = rng.uniform(r, image_size - r, size=2)
        angle = float(rng.uniform(0.0, 2 * math.pi))
        color = _distinct_color(rng, avoid)
        avoid.append(np.array(color))
        shapes.append(Shape(label, float(cx), float(cy), size, angle, color))
    return background, shapes


class ShapesDataset(Dataset):
    """num_images synthetic images; image i depends only on (seed, i).

    __getitem__(i) -> (image (3, H, W) float32 in [0, 1], target) with target =
    dict(boxes (N, 4) float32 x1y1x2y2, labels (N,) int64 in 1..3, masks (N, H, W) uint8,
    image_id int64 scalar (== i), area (N,) float32 mask pixel counts, iscrowd (N,) int64 zeros).

    size_range: shape sizes (side, or a circle's diameter) drawn uniformly from it, in pixels of a
    128-px image (they scale with image_size). The default (12, 48) is the training range; draw a
    held-out set of other sizes with e.g. size_range=(6, 96), objects 0.5x-2x of it.
    """

    class_names = CLASSES
    num_classes = len(CLASSES)  # including background, as build_maskrcnn(num_classes=...) wants
    label_to_category_id = {label: label for label in range(1, len(CLASSES))}

    def __init__(self, num_images: int, image_size: int = 128, seed: int = 0,
                 min_shapes: int = 1, max_shapes: int = 4, transforms=None,
                 size_range: tuple[float, float] = (MIN_SIZE_128, MAX_SIZE_128)):
        for name, value in (("num_images", num_images), ("image_size", image_size), ("seed", seed),
                            ("min_shapes", min_shapes), ("max_shapes", max_shapes)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise ValueError(f"ShapesDataset: {name} must be an int, got {value!r}")
        if num_images < 0:
            raise ValueError(f"ShapesDataset: num_images must be >= 0, got {num_images}")
        if image_size < 32:
            raise ValueError(f"ShapesDataset: image_size must be >= 32 pixels, got {image_size}")
        if seed < 0:
            raise ValueError(f"ShapesDataset: seed must be >= 0, got {seed}")
        if not 0 <= min_shapes <= max_shapes or max_shapes < 1:
            raise ValueError("ShapesDataset: need 0 <= min_shapes <= max_shapes and max_shapes >= 1, "
                             f"got min_shapes={min_shapes}, max_shapes={max_shapes}")
        if not (isinstance(size_range, (tuple, list)) and len(size_range) == 2
                and all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in size_range)
                and 1 <= size_range[0] <= size_range[1] and math.isfinite(size_range[1])):
            raise ValueError("ShapesDataset: size_range must be two numbers (min, max) with 1 <= min <= max, "
                             f"in pixels of a 128-px image; got {size_range!r}")
        self.num_images = int(num_images)
        self.size_range = (float(size_range[0]), float(size_range[1]))
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.min_shapes = int(min_shapes)
        self.max_shapes = int(max_shapes)
        self.transforms = transforms

    def __len__(self) -> int:
        return self.num_images

    def scene(self, index: int):
        """(image (H, W, 3) float32, masks (N, H, W) bool, shapes) of image index, as numpy."""
        if not -self.num_images <= index < self.num_images:
            raise IndexError(f"ShapesDataset index {index} out of range for {self.num_images} images")
        index = index % self.num_images
        # One Generator per image, seeded by (seed, index): no shared state, so the
        # order of access and the number of DataLoader workers do not matter.
        rng = np.random.default_rng([self.seed, index])
        background, shapes = random_scene(rng, self.image_size, self.min_shapes, self.max_shapes, self.size_range)
        image, masks, kept = render_shapes(shapes, background)
        noise = NOISE_STD * rng.standard_normal(image.shape, dtype=np.float32)  # (H, W, 3)
        image = np.clip(image + noise, 0.0, 1.0)  # (H, W, 3) float32
        return image, masks, kept

    def __getitem__(self, index: int):
        image_np, masks_np, shapes = self.scene(index)
        index = index % self.num_images
        image = torch.from_numpy(image_np).permute(2, 0, 1).contiguous()  # (3, H, W)
        masks = torch.from_numpy(masks_np.astype(np.uint8))  # (N, H, W)
        target = {
            "boxes": torch.from_numpy(masks_to_boxes(masks_np)).reshape(-1, 4),  # (N, 4)
            "labels": torch.tensor([s.label for s in shapes], dtype=torch.int64),  # (N,)
            "masks": masks,  # (N, H, W)
            "image_id": torch.tensor(index, dtype=torch.int64),  # ()
            "area": masks.sum(dim=(1, 2)).to(torch.float32),  # (N,)
            "iscrowd": torch.zeros(len(shapes), dtype=torch.int64),  # (N,)
        }
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


def export_coco(dataset, out_dir) -> Path:
    """Write dataset as COCO: out_dir/images/000000.png ... and out_dir/annotations.json.

    Works for any dataset that returns our (image, target) format. COCO image id =
    target["image_id"]; annotation ids start at 1 (COCOeval treats a matched id of 0 as
    "no match"); category ids come from dataset.label_to_category_id if present, else
    id = label. Masks are stored as compressed RLE (counts as str). Returns out_dir.
    Read it back with CocoDetection(out_dir / "images", out_dir / "annotations.json").
    """
    from PIL import Image
    from pycocotools import mask as mask_utils

    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    class_names = getattr(dataset, "class_names", CLASSES)
    label_to_cat = getattr(dataset, "label_to_category_id", None) or \
        {label: label for label in range(1, len(class_names))}
    images, annotations = [], []
    for i in range(len(dataset)):
        image, target = dataset[i]
        image_id = int(target["image_id"])
        file_name = f"{i:06d}.png"
        pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # (H, W, 3)
        Image.fromarray(pixels).save(out_dir / "images" / file_name)  # PNG: lossless
        height, width = pixels.shape[:2]
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        masks = np.asfortranarray(target["masks"].numpy().astype(np.uint8).transpose(1, 2, 0))  # (H, W, N)
        rles = mask_utils.encode(masks) if masks.shape[2] else []
        for box, label, rle, area in zip(target["boxes"].tolist(), target["labels"].tolist(), rles,
                                         target["area"].tolist()):
            x1, y1, x2, y2 = box
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id,
                "category_id": int(label_to_cat[label]),
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": area, "iscrowd": 0,
                "segmentation": {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")},
            })
    categories = [{"id": int(label_to_cat[label]), "name": class_names[label], "supercategory": "shape"}
                  for label in range(1, len(class_names))]
    coco = {"info": {"description": f"exported by mrcnn_teach from {type(dataset).__name__}"},
            "licenses": [], "images": images, "annotations": annotations, "categories": categories}
    (out_dir / "annotations.json").write_text(json.dumps(coco))
    return out_dir
