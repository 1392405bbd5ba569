"""CocoDetection on a tiny annotation file written by the test: every segmentation form,
crowd handling, category remapping, empty images, and each kind of bad annotation."""

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from mrcnn_teach.datasets import CocoDetection, rle_string_to_counts

SIZES = {"a.png": (12, 16), "b.png": (8, 10), "c.png": (8, 8)}  # (height, width)


def uncompressed_rle(mask: np.ndarray) -> list[int]:
    """Run lengths of 0s, 1s, 0s, ... in column-major order (written here, not by pycocotools)."""
    flat = mask.flatten(order="F").astype(np.int64)
    change = np.flatnonzero(np.diff(flat)) + 1
    edges = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(edges).tolist()
    return runs if flat[0] == 0 else [0] + runs


def compressed_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def box_mask(shape, y1, y2, x1, x2):
    m = np.zeros(shape, dtype=np.uint8)
    m[y1:y2, x1:x2] = 1
    return m


MASK_102 = box_mask(SIZES["a.png"], 1, 5, 11, 15)   # compressed RLE, category 3
MASK_103 = box_mask(SIZES["a.png"], 9, 12, 0, 4)    # crowd, uncompressed RLE, category 7
MASK_201 = box_mask(SIZES["b.png"], 2, 7, 3, 9)     # uncompressed RLE, category 3


def base_annotations():
    return {
        "images": [
            {"id": 20, "file_name": "b.png", "height": 8, "width": 10},
            {"id": 10, "file_name": "a.png", "height": 12, "width": 16},
            {"id": 30, "file_name": "c.png", "height": 8, "width": 8},  # no annotations
        ],
        # sparse, unsorted ids: labels follow the sorted ids, 3 -> 1 and 7 -> 2
        "categories": [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}],
        "annotations": [
            {"id": 101, "image_id": 10, "category_id": 7, "iscrowd": 0, "area": 48.0,
             "bbox": [2, 2, 8, 6], "segmentation": [[2, 2, 10, 2, 10, 8, 2, 8]]},
            {"id": 102, "image_id": 10, "category_id": 3, "iscrowd": 0, "area": 16.0,
             "bbox": [11, 1, 4, 4], "segmentation": compressed_rle(MASK_102)},
            {"id": 103, "image_id": 10, "category_id": 7, "iscrowd": 1, "area": 12.0,
             "bbox": [0, 9, 4, 3], "segmentation": {"size": [12, 16], "counts": uncompressed_rle(MASK_103)}},
            {"id": 201, "image_id": 20, "category_id": 3, "iscrowd": 0, "area": 30.0,
             "bbox": [3, 2, 6, 5], "segmentation": {"size": [8, 10], "counts": uncompressed_rle(MASK_201)}},
        ],
    }


def write(tmp_path, anns):
    rng = np.random.default_rng(0)
    pixels = {}
    for name, (h, w) in SIZES.items():
        pixels[name] = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels[name]).save(tmp_path / name)
    (tmp_path / "ann.json").write_text(json.dumps(anns))
    return tmp_path / "ann.json", pixels


@pytest.fixture
def files(tmp_path):
    return tmp_path, *write(tmp_path, base_annotations())


def test_category_ids_map_to_contiguous_labels(files):
    root, ann_file, _ = files
    ds = CocoDetection(root, ann_file)
    assert ds.category_ids == [3, 7]
    assert ds.category_id_to_label == {3: 1, 7: 2}
    assert ds.label_to_category_id == {1: 3, 2: 7}
    assert ds.class_names == ("background", "dog", "cat")
    assert ds.num_classes == 3 and len(ds) == 3


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside pycocotools
def test_targets_from_polygon_and_rle_segmentations_train(files):
    root, ann_file, pixels = files
    ds = CocoDetection(root, ann_file, train=True)
    image, t = ds[0]  # image ids are sorted: 10 first
    assert int(t["image_id"]) == 10
    assert torch.equal(image, torch.from_numpy(pixels["a.png"]).permute(2, 0, 1).float() / 255)
    # the crowd annotation 103 is not a training target
    assert torch.equal(t["labels"], torch.tensor([2, 1]))
    assert torch.equal(t["boxes"], torch.tensor([[2.0, 2.0, 10.0, 8.0], [11.0, 1.0, 15.0, 5.0]]))
    assert torch.equal(t["area"], torch.tensor([48.0, 16.0]))
    assert torch.equal(t["iscrowd"], torch.tensor([0, 0]))
    assert t["masks"].shape == (2, 12, 16) and t["masks"].dtype == torch.uint8
    polygon = ds.coco.annToMask(ds.coco.anns[101])  # pycocotools' own rasterisation
    np.testing.assert_array_equal(t["masks"][0].numpy(), polygon)
    assert (polygon[2:8, 2:10] == 1).sum() >= 40 and polygon[:, 11:].sum() == 0  # roughly the rectangle
    np.testing.assert_array_equal(t["masks"][1].numpy(), MASK_102)

    _, t = ds[1]  # image 20: an uncompressed RLE
    assert torch.equal(t["labels"], torch.tensor([1]))
    assert torch.equal(t["boxes"], torch.tensor([[3.0, 2.0, 9.0, 7.0]]))
    np.testing.assert_array_equal(t["masks"][0].numpy(), MASK_201)


def test_crowd_kept_and_flagged_when_not_training(files):
    root, ann_file, _ = files
    _, t = CocoDetection(root, ann_file, train=False)[0]
    assert torch.equal(t["labels"], torch.tensor([2, 1, 2]))
    assert torch.equal(t["iscrowd"], torch.tensor([0, 0, 1]))
    assert torch.equal(t["boxes"][2], torch.tensor([0.0, 9.0, 4.0, 12.0]))
    np.testing.assert_array_equal(t["masks"][2].numpy(), MASK_103)


@pytest.mark.parametrize("train", [True, False])
def test_image_without_annotations_is_kept_with_empty_targets(files, train):
    root, ann_file, pixels = files
    image, t = CocoDetection(root, ann_file, train=train)[2]
    assert int(t["image_id"]) == 30 and image.shape == (3, 8, 8)
    assert t["boxes"].shape == (0, 4) and t["boxes"].dtype == torch.float32
    assert t["labels"].shape == (0,) and t["labels"].dtype == torch.int64
    assert t["masks"].shape == (0, 8, 8) and t["masks"].dtype == torch.uint8
    assert t["area"].shape == (0,) and t["iscrowd"].shape == (0,)


def test_image_with_only_crowd_annotations_is_empty_in_training(tmp_path):
    anns = base_annotations()
    anns["annotations"] = [a for a in anns["annotations"] if a["id"] == 103]
    ann_file, _ = write(tmp_path, anns)
    assert CocoDetection(tmp_path, ann_file, train=True)[0][1]["boxes"].shape == (0, 4)
    assert CocoDetection(tmp_path, ann_file, train=False)[0][1]["boxes"].shape == (1, 4)


def test_bbox_within_tolerance_is_clipped(tmp_path):
    anns = base_annotations()
    anns["annotations"][0]["bbox"] = [-0.5, 0.0, 16.9, 12.0]  # sticks out 0.5 and 0.4 px
    ann_file, _ = write(tmp_path, anns)
    _, t = CocoDetection(tmp_path, ann_file)[0]
    assert torch.allclose(t["boxes"][0], torch.tensor([0.0, 0.0, 16.0, 12.0]))


def test_rle_string_to_counts_matches_pycocotools():
    rng = np.random.default_rng(1)
    for shape in [(12, 16), (1, 1), (30, 7)]:
        mask = (rng.random(shape) < 0.4).astype(np.uint8)
        mask[0, 0] = 1  # starts with a 1: a leading zero-length run
        counts = rle_string_to_counts(compressed_rle(mask)["counts"])
        assert counts.tolist() == uncompressed_rle(mask)
    big = np.zeros((300, 400), dtype=np.uint8)  # long runs need several 5-bit groups
    big[100:250, 50:300] = 1
    assert rle_string_to_counts(compressed_rle(big)["counts"]).tolist() == uncompressed_rle(big)


# ---------------------------------------------------------------- bad data: errors name the culprit

def edit(ann_id, **changes):
    def apply(anns):
        ann = next(a for a in anns["annotations"] if a["id"] == ann_id)
        ann.update(changes)
    return apply


A101 = r"image id 10 \(file 'a\.png'\), annotation id 101"
A102 = r"image id 10 \(file 'a\.png'\), annotation id 102"
A201 = r"image id 20 \(file 'b\.png'\), annotation id 201"

BAD_AT_INIT = {
    "polygon with 4 coordinates": (edit(101, segmentation=[[2, 2, 10, 2]]), A101 + ".*polygon 0.*got 4"),
    "polygon with odd count": (edit(101, segmentation=[[2, 2, 10, 2, 10, 8, 2]]), A101 + ".*got 7"),
    "empty polygon list": (edit(101, segmentation=[]), A101 + ".*empty polygon"),
    "RLE size differs from image": (edit(102, segmentation={**compressed_rle(MASK_102), "size": [16, 12]}),
                                    A102 + ".*RLE size \\[16, 12\\]"),
    "uncompressed RLE wrong total": (edit(201, segmentation={"size": [8, 10],
                                                             "counts": uncompressed_rle(MASK_201) + [3]}),
                                     A201 + ".*sum to height\\*width = 80, got sum 83"),
    "bbox outside image": (edit(101, bbox=[2, 2, 20, 6]), A101 + ".*outside the 16x12 image"),
    "bbox left of image": (edit(201, bbox=[-3, 2, 6, 5]), A201 + ".*outside"),
    "bbox zero width": (edit(101, bbox=[2, 2, 0, 6]), A101 + ".*non-positive width"),
    "bbox negative height": (edit(201, bbox=[3, 2, 6, -1]), A201 + ".*non-positive"),
    "unknown category": (edit(102, category_id=5), A102 + ".*unknown category_id 5"),
    "segmentation of wrong type": (edit(201, segmentation="oops"), A201 + ".*polygon list or an RLE dict"),
    "annotation of unknown image": (edit(101, image_id=99), r"annotation id 101: image_id 99"),
}


@pytest.mark.parametrize("case", list(BAD_AT_INIT))
def test_bad_annotation_raises_naming_image_and_annotation(tmp_path, case):
    mutate, message = BAD_AT_INIT[case]
    anns = copy.deepcopy(base_annotations())
    mutate(anns)
    ann_file, _ = write(tmp_path, anns)
    with pytest.raises(ValueError, match=message):
        CocoDetection(tmp_path, ann_file)


def test_invalid_skip_drops_bad_annotations_with_a_warning(tmp_path):
    anns = base_annotations()
    edit(101, bbox=[2, 2, 1.5, 0.0])(anns)  # like annotation 918 of COCO train2017
    ann_file, _ = write(tmp_path, anns)
    with pytest.warns(UserWarning, match="skipped 1 invalid annotation.*" + A101):
        ds = CocoDetection(tmp_path, ann_file, invalid="skip")
    assert len(ds.skipped) == 1 and "non-positive width or height" in ds.skipped[0]
    _, t = ds[0]
    assert torch.equal(t["labels"], torch.tensor([1]))  # only annotation 102 is left
    np.testing.assert_array_equal(t["masks"][0].numpy(), MASK_102)
    with pytest.raises(ValueError, match="invalid must be"):
        CocoDetection(tmp_path, ann_file, invalid="ignore")


def test_compressed_rle_with_wrong_total_raises_on_load(tmp_path):
    wider = np.zeros((12, 17), dtype=np.uint8)  # encodes 204 pixels, the image has 192
    wider[1:5, 11:15] = 1
    anns = base_annotations()
    edit(102, segmentation={"size": [12, 16], "counts": compressed_rle(wider)["counts"]})(anns)
    ann_file, _ = write(tmp_path, anns)
    ds = CocoDetection(tmp_path, ann_file)
    with pytest.raises(ValueError, match=A102 + ".*sum to height\\*width = 192, got sum 204"):
        ds[0]


def test_missing_image_file_raises_naming_image(files):
    root, ann_file, _ = files
    (root / "a.png").unlink()
    ds = CocoDetection(root, ann_file)
    with pytest.raises(FileNotFoundError, match=r"image id 10 \(file 'a\.png'\).*does not exist"):
        ds[0]
    assert ds[1][1]["labels"].tolist() == [1]  # the other images still load


def test_image_size_differs_from_annotation_file(tmp_path):
    anns = base_annotations()
    anns["images"][0]["height"] = 9  # b.png is 8 high
    anns["annotations"] = [a for a in anns["annotations"] if a["image_id"] != 20]
    ann_file, _ = write(tmp_path, anns)
    with pytest.raises(ValueError, match=r"image id 20 \(file 'b\.png'\).*10x8.*10x9"):
        CocoDetection(tmp_path, ann_file)[1]
