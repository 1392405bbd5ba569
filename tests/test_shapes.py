"""The shapes dataset, its COCO export, and the flip / collate transforms."""

import json
import math

import numpy as np
import pytest
import torch
import torchvision
from torch.utils.data import DataLoader

from mrcnn_teach.datasets import (CLASSES, CocoDetection, Compose, RandomHorizontalFlip, Shape,
                                  ShapesDataset, collate_fn, export_coco, hflip, masks_to_boxes,
                                  render_shapes, shape_mask, visible_masks)

SQUARE, CIRCLE, TRIANGLE = 1, 2, 3


def assert_targets_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


# ---------------------------------------------------------------- determinism

def test_same_seed_and_index_give_identical_samples_in_any_order():
    ds = ShapesDataset(6, seed=3)
    forward = [ds[i] for i in range(6)]
    fresh = ShapesDataset(6, seed=3)
    for i in reversed(range(6)):  # access order must not matter
        image, target = fresh[i]
        assert torch.equal(image, forward[i][0])
        assert_targets_equal(target, forward[i][1])


def test_different_index_or_seed_gives_different_images():
    a = ShapesDataset(4, seed=0)
    b = ShapesDataset(4, seed=1)
    assert not torch.equal(a[0][0], a[1][0])
    assert not torch.equal(a[0][0], b[0][0])
    # image i does not depend on the dataset length
    assert torch.equal(ShapesDataset(100, seed=0)[3][0], a[3][0])


def test_dataloader_workers_give_the_same_samples():
    ds = ShapesDataset(4, seed=5)
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_fn)
    images = [im for batch_images, _ in loader for im in batch_images]
    for i, image in enumerate(images):
        assert torch.equal(image, ds[i][0])


def test_negative_index_wraps_and_out_of_range_raises():
    ds = ShapesDataset(3)
    assert torch.equal(ds[-1][0], ds[2][0])
    assert int(ds[-1][1]["image_id"]) == 2
    with pytest.raises(IndexError, match="index 3"):
        ds[3]


# ---------------------------------------------------------------- target format

def test_target_format_and_value_ranges():
    ds = ShapesDataset(30, image_size=96, seed=1)
    labels_seen = set()
    for i in range(len(ds)):
        image, t = ds[i]
        n = len(t["labels"])
        assert image.shape == (3, 96, 96) and image.dtype == torch.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert 1 <= n <= 4  # the last shape drawn is never hidden
        assert t["boxes"].shape == (n, 4) and t["boxes"].dtype == torch.float32
        assert t["labels"].dtype == torch.int64 and ((t["labels"] >= 1) & (t["labels"] <= 3)).all()
        assert t["masks"].shape == (n, 96, 96) and t["masks"].dtype == torch.uint8
        assert t["image_id"].dtype == torch.int64 and t["image_id"].ndim == 0 and int(t["image_id"]) == i
        assert torch.equal(t["area"], t["masks"].sum(dim=(1, 2)).float())
        assert torch.equal(t["iscrowd"], torch.zeros(n, dtype=torch.int64))
        labels_seen |= set(t["labels"].tolist())
    assert labels_seen == {1, 2, 3}
    assert ds.class_names == CLASSES == ("background", "square", "circle", "triangle")


def test_boxes_are_tight_around_masks_and_masks_disjoint():
    ds = ShapesDataset(40, seed=2)
    for i in range(len(ds)):
        _, t = ds[i]
        masks = t["masks"]
        assert (masks.flatten(1).sum(1) >= 10).all()  # min_visible_pixels
        assert masks.sum(0).max() <= 1  # occlusion: no pixel in two instances
        # torchvision's masks_to_boxes gives the last pixel; our x2/y2 is that pixel's far edge
        expected = torchvision.ops.masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0])
        assert torch.equal(t["boxes"], expected)


def test_masks_to_boxes_pixel_edge_convention():
    masks = np.zeros((2, 6, 8), dtype=bool)
    masks[0, 2, 3] = True            # a single pixel at x=3, y=2
    masks[1, 1:5, 0:8] = True        # full width rows 1..4
    np.testing.assert_array_equal(masks_to_boxes(masks), [[3, 2, 4, 3], [0, 1, 8, 5]])


def test_validation_errors():
    with pytest.raises(ValueError, match="num_images"):
        ShapesDataset(-1)
    with pytest.raises(ValueError, match="image_size"):
        ShapesDataset(2, image_size=16)
    with pytest.raises(ValueError, match="min_shapes=3, max_shapes=2"):
        ShapesDataset(2, min_shapes=3, max_shapes=2)
    with pytest.raises(ValueError, match="seed"):
        ShapesDataset(2, seed=-5)
    with pytest.raises(ValueError, match="image_size must be an int"):
        ShapesDataset(2, image_size=64.0)
    with pytest.raises(ValueError, match="label"):
        shape_mask(Shape(4, 10, 10, 8), 20, 20)


def test_min_max_shapes_are_respected():
    ds = ShapesDataset(20, seed=4, min_shapes=1, max_shapes=1)
    assert all(len(ds[i][1]["labels"]) == 1 for i in range(len(ds)))
    empty = ShapesDataset(2, min_shapes=0, max_shapes=1)
    counts = [len(empty[i][1]["labels"]) for i in range(2)]
    assert set(counts) <= {0, 1}


# ---------------------------------------------------------------- rasterisation

@pytest.mark.parametrize("label, size, angle, expected_area", [
    (CIRCLE, 30.0, 0.0, math.pi * 15 ** 2),
    (SQUARE, 30.0, 0.0, 30.0 ** 2),
    (SQUARE, 30.0, 0.6, 30.0 ** 2),
    (TRIANGLE, 36.0, 1.0, math.sqrt(3) / 4 * 36.0 ** 2),
])
def test_shape_areas_match_geometry(label, size, angle, expected_area):
    mask = shape_mask(Shape(label, 40.3, 38.7, size, angle), 80, 80)
    assert abs(mask.sum() - expected_area) / expected_area < 0.03
    ys, xs = np.nonzero(mask)
    # the mask lies inside the shape's circumcircle
    r = Shape(label, 0, 0, size).radius
    assert (np.hypot(xs + 0.5 - 40.3, ys + 0.5 - 38.7) <= r + 1e-9).all()


def test_axis_aligned_square_covers_exact_pixels():
    mask = shape_mask(Shape(SQUARE, 10.0, 8.0, 6.0, 0.0), 16, 20)  # edges x 7..13, y 5..11
    expected = np.zeros((16, 20), dtype=bool)
    expected[5:11, 7:13] = True
    np.testing.assert_array_equal(mask, expected)


# ---------------------------------------------------------------- occlusion

def test_later_shape_cuts_its_pixels_from_earlier_masks():
    background = np.full((64, 64, 3), 0.5)
    square = Shape(SQUARE, 24.0, 32.0, 30.0, 0.0, (1.0, 0.0, 0.0))
    circle = Shape(CIRCLE, 40.0, 32.0, 24.0, 0.0, (0.0, 0.0, 1.0))
    image, masks, kept = render_shapes([square, circle], background)
    assert kept == [square, circle]
    full_square, full_circle = shape_mask(square, 64, 64), shape_mask(circle, 64, 64)
    assert (full_square & full_circle).sum() > 50  # they really overlap
    np.testing.assert_array_equal(masks[0], full_square & ~full_circle)
    np.testing.assert_array_equal(masks[1], full_circle)
    # what is painted is exactly what is annotated
    np.testing.assert_array_equal(image[masks[0]], np.tile([1.0, 0.0, 0.0], (masks[0].sum(), 1)))
    np.testing.assert_array_equal(image[masks[1]], np.tile([0.0, 0.0, 1.0], (masks[1].sum(), 1)))
    np.testing.assert_array_equal(image[~(masks[0] | masks[1])], 0.5)


def test_mostly_hidden_shape_is_dropped_and_not_painted():
    background = np.zeros((64, 64, 3))
    small_circle = Shape(CIRCLE, 27.5, 30.0, 12.0, 0.0, (0.0, 1.0, 0.0))
    big_square = Shape(SQUARE, 32.0, 32.0, 16.0, 0.0, (1.0, 1.0, 1.0))  # hides > 80% of the circle
    visible = shape_mask(small_circle, 64, 64) & ~shape_mask(big_square, 64, 64)
    assert 0 < visible.sum() < 0.2 * shape_mask(small_circle, 64, 64).sum()
    image, masks, kept = render_shapes([small_circle, big_square], background)
    assert kept == [big_square] and masks.shape == (1, 64, 64)
    assert not (image == np.array([0.0, 1.0, 0.0], dtype=np.float32)).all(-1).any()  # no green left
    # with the threshold lowered the sliver is kept, cut by the square
    _, masks, kept = render_shapes([small_circle, big_square], background,
                                   min_visible_fraction=0.0, min_visible_pixels=1)
    assert kept == [small_circle, big_square]
    np.testing.assert_array_equal(masks[0], visible)


def test_dropping_a_hidden_shape_can_rescue_the_one_below():
    # A (small) lies inside B; C then hides > 80% of B but less of A. B, the top-most
    # failing shape, is dropped first, and that un-hides the part of A only B covered.
    a = Shape(CIRCLE, 16.5, 32.0, 12.0)
    b = Shape(SQUARE, 25.0, 32.0, 30.0)
    c = Shape(SQUARE, 30.0, 32.0, 30.0)
    _, masks, kept = render_shapes([a, b, c], np.zeros((64, 64, 3)))
    assert kept == [a, c]
    np.testing.assert_array_equal(masks[0], shape_mask(a, 64, 64) & ~shape_mask(c, 64, 64))


def test_visible_masks_painters_order():
    full = np.zeros((3, 1, 5), dtype=bool)
    full[0, 0, 0:4] = True
    full[1, 0, 1:3] = True
    full[2, 0, 2:5] = True
    np.testing.assert_array_equal(visible_masks(full)[:, 0].astype(int),
                                  [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 1, 1, 1]])


# ---------------------------------------------------------------- COCO export round trip

def test_export_coco_round_trip(tmp_path):
    ds = ShapesDataset(5, image_size=64, seed=7)
    out = export_coco(ds, tmp_path / "shapes")
    assert out == tmp_path / "shapes"
    data = json.loads((out / "annotations.json").read_text())
    assert [c["id"] for c in data["categories"]] == [1, 2, 3]
    assert [c["name"] for c in data["categories"]] == ["square", "circle", "triangle"]
    assert data["images"][0] == {"id": 0, "file_name": "000000.png", "height": 64, "width": 64}
    assert [a["id"] for a in data["annotations"]] == list(range(1, len(data["annotations"]) + 1))
    assert all(a["iscrowd"] == 0 and isinstance(a["segmentation"]["counts"], str) for a in data["annotations"])

    coco = CocoDetection(out / "images", out / "annotations.json", train=True)
    assert len(coco) == 5 and coco.class_names == CLASSES
    assert coco.label_to_category_id == {1: 1, 2: 2, 3: 3}
    for i in range(5):
        image, target = ds[i]
        coco_image, coco_target = coco[i]
        assert_targets_equal(coco_target, target)
        # PNG is lossless: equal after the uint8 quantisation export does
        assert torch.equal((image * 255).round(), (coco_image * 255).round())


# ---------------------------------------------------------------- transforms

def test_flip_twice_is_identity_and_boxes_stay_tight():
    image, target = ShapesDataset(3, seed=11)[1]
    flipped_image, flipped = hflip(image, target)
    assert torch.equal(flipped_image, image.flip(-1))
    expected = torchvision.ops.masks_to_boxes(flipped["masks"]) + torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert torch.equal(flipped["boxes"], expected)
    back_image, back = hflip(flipped_image, flipped)
    assert torch.equal(back_image, image)
    assert_targets_equal(back, target)
    assert target["boxes"] is not flipped["boxes"]  # the input target is not modified


def test_random_flip_probability_uses_torch_rng():
    image, target = ShapesDataset(1, seed=0)[0]
    always, never = RandomHorizontalFlip(1.0), RandomHorizontalFlip(0.0)
    assert torch.equal(always(image, target)[0], image.flip(-1))
    assert torch.equal(never(image, target)[0], image)
    flip = Compose([RandomHorizontalFlip(0.5)])
    torch.manual_seed(0)
    first = [torch.equal(flip(image, target)[0], image) for _ in range(200)]
    torch.manual_seed(0)
    second = [torch.equal(flip(image, target)[0], image) for _ in range(200)]
    assert first == second and 70 < sum(first) < 130
    with pytest.raises(ValueError, match="p must be in"):
        RandomHorizontalFlip(1.5)


def test_dataset_applies_transforms_and_collate_makes_lists():
    plain = ShapesDataset(2, seed=9)
    flipped = ShapesDataset(2, seed=9, transforms=Compose([RandomHorizontalFlip(1.0)]))
    images, targets = collate_fn([flipped[0], flipped[1]])
    assert isinstance(images, list) and isinstance(targets, list) and len(images) == 2
    for i in range(2):
        assert torch.equal(images[i], plain[i][0].flip(-1))
        assert torch.equal(targets[i]["masks"], plain[i][1]["masks"].flip(-1))
