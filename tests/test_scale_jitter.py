"""Scale augmentation (large-scale jitter) and the shapes dataset's size range.

scale_jitter is checked against torchvision.transforms.v2 (resize, then crop) for the image and for
boxes without masks, and its masks against the same shape drawn at the new scale.
"""

import math

import numpy as np
import pytest
import torch
import torchvision
import torchvision.transforms.v2.functional as TF
from torchvision import tv_tensors

from mrcnn_teach.datasets import (Compose, RandomHorizontalFlip, RandomScaleJitter, Shape, ShapesDataset,
                                  render_shapes, scale_jitter, tight_boxes)
from mrcnn_teach.train_data import SeededTransforms

SQUARE, CIRCLE, TRIANGLE = 1, 2, 3
CASES = [(2.0, (30, 40)), (0.5, (-20, -10)), (0.73, (-5, -7)), (1.6, (77, 0)), (1.3, (-3, 10))]


def sample(index=0, seed=0):
    return ShapesDataset(index + 1, seed=seed)[index]


def torchvision_twin(image, boxes, masks, scale, top, left):
    """torchvision v2: resize by scale, then crop a 128 x 128 window at (top, left) (zero padding outside)."""
    size = [round(image.shape[-2] * scale), round(image.shape[-1] * scale)]
    canvas = tuple(image.shape[-2:])
    image = TF.crop(TF.resize(image, size, antialias=True), top, left, *canvas)
    boxes = TF.crop(TF.resize(tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=canvas), size),
                    top, left, *canvas)
    masks = TF.crop(TF.resize(tv_tensors.Mask(masks), size), top, left, *canvas)  # nearest neighbour
    return image, boxes.as_subclass(torch.Tensor), masks.as_subclass(torch.Tensor)


# ---------------------------------------------------------------- the deterministic transform

def test_scale_one_at_offset_zero_is_the_identity():
    image, target = sample()
    out_image, out = scale_jitter(image, target, 1.0, (0, 0))
    assert torch.equal(out_image, image)
    assert out.keys() == target.keys()
    for key in target:
        assert torch.equal(out[key], target[key]), key
    assert out is not target


@pytest.mark.parametrize("scale,offset", CASES)
def test_image_and_boxes_match_torchvision(scale, offset):
    image, target = sample(seed=3)
    tv_image, tv_boxes, _ = torchvision_twin(image, target["boxes"], target["masks"], scale, *offset)
    out_image, out = scale_jitter(image, {k: v for k, v in target.items() if k != "masks"}, scale, offset, fill=0)
    assert out_image.shape == (3, 128, 128)
    torch.testing.assert_close(out_image, tv_image, atol=1e-6, rtol=0)
    # torchvision keeps boxes squashed to zero width at the border (SanitizeBoundingBoxes drops them later)
    alive = (tv_boxes[:, 2] > tv_boxes[:, 0]) & (tv_boxes[:, 3] > tv_boxes[:, 1])  # (N,)
    torch.testing.assert_close(out["boxes"], tv_boxes[alive])
    assert torch.equal(out["labels"], target["labels"][alive])
    torch.testing.assert_close(out["area"], (tv_boxes[alive, 2:] - tv_boxes[alive, :2]).prod(dim=1))


def test_integer_upscale_masks_equal_torchvision_nearest():
    # Bilinear x2 then >= 0.5 picks each pixel's own value (its weight is 0.75 x 0.75 > 0.5): nearest.
    image, target = sample(seed=0)
    _, _, tv_masks = torchvision_twin(image, target["boxes"], target["masks"], 2.0, 30, 40)
    _, out = scale_jitter(image, target, 2.0, (30, 40))
    alive = tv_masks.flatten(1).ne(0).any(dim=1)  # (N,)
    assert 0 < alive.sum() < len(alive)  # the window drops one object and keeps others
    assert torch.equal(out["masks"], tv_masks[alive])
    assert torch.equal(out["labels"], target["labels"][alive])


@pytest.mark.parametrize("scale,offset", CASES)
def test_masks_match_the_shape_drawn_at_the_new_scale(scale, offset):
    """The jittered mask of a shape is (almost) the mask of that shape drawn scaled and shifted."""
    top, left = offset
    shapes = [Shape(TRIANGLE, 40.3, 50.2, 30.0, 0.4), Shape(SQUARE, 90.1, 80.7, 26.0, 1.1),
              Shape(CIRCLE, 60.2, 100.4, 22.0)]
    background = np.full((128, 128, 3), 0.5)
    image_np, masks_np, kept = render_shapes(shapes, background)
    assert len(kept) == 3
    image = torch.from_numpy(image_np).permute(2, 0, 1)  # (3, 128, 128)
    masks = torch.from_numpy(masks_np.astype(np.uint8))  # (3, 128, 128)
    target = {"boxes": tight_boxes(masks), "labels": torch.tensor([s.label for s in kept]), "masks": masks}
    _, out = scale_jitter(image, target, scale, offset)
    s = round(128 * scale) / 128  # the scale actually applied
    moved = [Shape(sh.label, sh.cx * s - left, sh.cy * s - top, sh.size * s, sh.angle) for sh in kept]
    _, drawn, _ = render_shapes(moved, background, min_visible_fraction=0.0, min_visible_pixels=1)
    drawn = torch.from_numpy(drawn)  # (K, 128, 128) bool: the shapes still in the window
    assert len(drawn) == len(out["masks"])
    for got, want in zip(out["masks"].bool(), drawn):
        iou = (got & want).sum() / (got | want).sum()
        assert iou > 0.85, iou  # resampling moves the edge by at most about a pixel
    assert torch.equal(out["boxes"], tight_boxes(out["masks"]))  # boxes are re-derived from the masks


def test_boxes_are_the_tight_boxes_of_the_cropped_masks():
    """A crop through a rotated square leaves a box smaller than the clipped old one."""
    shape = Shape(SQUARE, 64.0, 64.0, 60.0, math.pi / 4)  # a diamond
    image_np, masks_np, _ = render_shapes([shape], np.zeros((128, 128, 3)))
    image = torch.from_numpy(image_np).permute(2, 0, 1)
    masks = torch.from_numpy(masks_np.astype(np.uint8))  # (1, 128, 128)
    target = {"boxes": tight_boxes(masks), "labels": torch.tensor([SQUARE]), "masks": masks}
    _, out = scale_jitter(image, target, 1.0, (80, 0))  # cut away the top 80 rows, past the widest row (64)
    clipped = (target["boxes"] - torch.tensor([0.0, 80.0, 0.0, 80.0])).clamp(0, 128)  # (1, 4)
    assert torch.equal(out["boxes"], tight_boxes(out["masks"]))
    assert out["boxes"][0, 1] == 0 and out["boxes"][0, 2] - out["boxes"][0, 0] < clipped[0, 2] - clipped[0, 0]
    assert out["area"][0] == out["masks"].sum()


def test_padding_uses_the_mean_colour_and_everything_outside_is_dropped():
    image, target = sample(seed=5)
    out_image, out = scale_jitter(image, target, 0.5, (-64, -64))  # the 64-px image in the bottom-right quarter
    resized = torch.nn.functional.interpolate(image[None], size=(64, 64), mode="bilinear", antialias=True)[0]
    assert torch.allclose(out_image[:, :64, :64], resized.mean(dim=(1, 2), keepdim=True).expand(3, 64, 64))
    assert torch.equal(out_image[:, 64:, 64:], resized)
    assert out["masks"][:, :64].sum() == 0 and out["masks"][:, :, :64].sum() == 0
    assert (out["boxes"][:, :2] >= 64).all()
    _, gone = scale_jitter(image, target, 0.5, (64, 64))  # a window wholly outside the image
    assert gone["boxes"].shape == (0, 4) and gone["masks"].shape == (0, 128, 128) and gone["labels"].shape == (0,)
    assert int(gone["image_id"]) == int(target["image_id"])


def test_output_size_can_differ_from_the_input():
    image, target = sample()
    out_image, out = scale_jitter(image, target, 1.5, (10, 20), output_size=(96, 160))
    assert out_image.shape == (3, 96, 160) and out["masks"].shape[1:] == (96, 160)
    assert (out["boxes"][:, 2] <= 160).all() and (out["boxes"][:, 3] <= 96).all()


def test_empty_target_passes_through():
    image, target = sample()
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
             "masks": torch.zeros(0, 128, 128, dtype=torch.uint8)}
    _, out = scale_jitter(image, empty, 0.7, (-3, -3))
    assert out["boxes"].shape == (0, 4) and out["masks"].shape == (0, 128, 128)


# ---------------------------------------------------------------- the random transform

def test_random_scale_jitter_draws_log_uniform_scales_and_valid_offsets():
    jitter = RandomScaleJitter((0.5, 2.0))
    torch.manual_seed(0)
    draws = [jitter.get_params(128, 128) for _ in range(2000)]
    scales = torch.tensor([s for s, _ in draws])
    assert scales.min() >= 0.5 and scales.max() <= 2.0
    # log-uniform on [0.5, 2]: log2(scale) uniform on [-1, 1]
    log2 = scales.log2()
    assert abs(log2.mean()) < 0.05 and abs(log2.std() - 2 / math.sqrt(12)) < 0.03
    assert abs((scales < 1).float().mean() - 0.5) < 0.04
    for scale, (top, left) in draws:
        spare = round(128 * scale) - 128
        assert min(0, spare) <= top <= max(0, spare) and min(0, spare) <= left <= max(0, spare)
    tops = torch.tensor([top / (round(128 * s) - 128) for s, (top, _) in draws if abs(round(128 * s) - 128) > 20])
    assert tops.min() < 0.05 and tops.max() > 0.95  # the whole range of positions is used
    torch.manual_seed(0)
    assert [jitter.get_params(128, 128) for _ in range(2000)] == draws  # torch's RNG decides


def test_the_random_transform_is_scale_jitter_at_the_drawn_parameters():
    image, target = sample()
    jitter = RandomScaleJitter((2.0, 2.0))
    torch.manual_seed(1)
    scale, offset = jitter.get_params(128, 128)
    assert scale == pytest.approx(2.0) and all(0 <= o <= 128 for o in offset)
    torch.manual_seed(1)
    out_image, out = jitter(image, target)
    ref_image, ref = scale_jitter(image, target, 2.0, offset)
    assert torch.equal(out_image, ref_image)
    assert all(torch.equal(out[k], ref[k]) for k in ref)


@pytest.mark.parametrize("bad", [(0.0, 2.0), (2.0, 1.0), (0.5, float("inf")), (-1.0, 1.0)])
def test_random_scale_jitter_refuses_a_bad_range(bad):
    with pytest.raises(ValueError, match="scale_range must be"):
        RandomScaleJitter(bad)


def test_seeded_transforms_with_jitter_do_not_depend_on_order():
    augment = Compose([RandomScaleJitter((0.5, 2.0)), RandomHorizontalFlip(0.5)])
    data = SeededTransforms(ShapesDataset(6, seed=2), augment, seed=7)
    forward = [data[i] for i in range(6)]
    again = SeededTransforms(ShapesDataset(6, seed=2), augment, seed=7)
    for i in reversed(range(6)):
        image, target = again[i]
        assert torch.equal(image, forward[i][0])
        assert torch.equal(target["masks"], forward[i][1]["masks"])
    assert any(not torch.equal(forward[i][0], ShapesDataset(6, seed=2)[i][0]) for i in range(6))
    data.set_epoch(1)  # another epoch, other draws
    assert any(not torch.equal(data[i][0], forward[i][0]) for i in range(6))


# ---------------------------------------------------------------- the shapes size range

def box_sides(dataset):
    boxes = torch.cat([dataset[i][1]["boxes"] for i in range(len(dataset))])  # (N, 4)
    return torch.cat([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]])


def test_default_images_are_unchanged_by_the_size_range_argument():
    image, target = ShapesDataset(1, seed=0)[0]
    assert target["boxes"].tolist() == [[89.0, 75.0, 120.0, 102.0], [55.0, 37.0, 91.0, 73.0],
                                         [14.0, 76.0, 40.0, 100.0]]
    assert abs(image.double().sum().item() - 23567.0267) < 1e-3
    explicit = ShapesDataset(1, seed=0, size_range=(12, 48))[0]
    assert torch.equal(explicit[0], image)


def test_size_range_draws_other_sizes():
    train_sides = box_sides(ShapesDataset(40, seed=1))
    wide_sides = box_sides(ShapesDataset(40, seed=1, size_range=(6, 96)))
    assert train_sides.min() >= 5 and train_sides.max() <= 69  # a 48-px square turned 45 degrees is 68 px wide
    assert wide_sides.max() > 80 and wide_sides.min() < 8
    assert wide_sides.median() > 1.3 * train_sides.median()
    big = ShapesDataset(20, seed=1, size_range=(120, 120))  # larger than the image: centred, cut by the border
    for i in range(len(big)):
        image, target = big[i]
        assert len(target["boxes"]) >= 1 and image.shape == (3, 128, 128)
        assert torch.equal(target["boxes"], tight_boxes(target["masks"]))


@pytest.mark.parametrize("bad", [(0, 10), (48, 12), (12,), "big", (12, float("nan")), (True, 3)])
def test_shapes_refuses_a_bad_size_range(bad):
    with pytest.raises(ValueError, match="size_range must be"):
        ShapesDataset(2, size_range=bad)


def test_tight_boxes_matches_torchvision():
    masks = ShapesDataset(3, seed=4)[2][1]["masks"]
    expected = torchvision.ops.masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert torch.equal(tight_boxes(masks), expected)
