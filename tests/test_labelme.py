"""Your own data (notebook 13): the made-up tool export, labelme -> COCO, and the inspection helpers.

Round trips: what the writers paint is what CocoDetection reads back (masks pixel for pixel, boxes as
the COCO convention defines them); bad labelme files are refused with the file and the shape named.
"""

import json

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from pycocotools import mask as mask_utils

from mrcnn_teach import build_maskrcnn
from mrcnn_teach.configs import get_config
from mrcnn_teach.datasets import CocoDetection
from mrcnn_teach.datasets import example
from mrcnn_teach.datasets.inspection import best_anchor_iou, boxes_in_model_frame, resized_size
from mrcnn_teach.datasets.labelme import labelme_to_coco
from mrcnn_teach.datasets.transforms import tight_boxes

# pycocotools' decode raises numpy 2's copy-keyword DeprecationWarning on every call; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

CATEGORIES = {"square": 4, "circle": 11, "triangle": 25}


def polygon_pixels(polygons, height, width):
    """The COCO definition of a polygon's mask: pycocotools' rasterisation, union of the parts."""
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))).astype(bool)


# --------------------------------------------------------------------------- the COCO export


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    return example.write_coco_export(root, num_images=12, seed=3)


def test_export_round_trip_masks_boxes_labels(export):
    data = json.loads((export / "annotations.json").read_text())
    by_image = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    ds = CocoDetection(export / "images", export / "annotations.json", train=False)
    assert ds.class_names == ("background", "square", "circle", "triangle")  # labels follow sorted ids 4, 11, 25
    assert ds.label_to_category_id == {1: 4, 2: 11, 3: 25}
    forms = set()
    for i in range(len(ds)):
        image, target = ds[i]
        pixels, objects = example.make_scene(3, i, crowd=(i == example.CROWD_IMAGE))
        assert tuple(image.shape) == (3,) + pixels.shape[:2]
        plain = [o for o in objects if not o["crowd"]]
        keep = target["iscrowd"] == 0
        masks = target["masks"][keep].bool()  # (N, H, W)
        assert masks.shape[0] == len(plain)
        for obj, mask, box, label, area, ann in zip(plain, masks, target["boxes"][keep], target["labels"][keep],
                                                    target["area"][keep],
                                                    [a for a in by_image[i + 1] if not a["iscrowd"]]):
            assert torch.equal(mask, torch.from_numpy(obj["mask"]))  # painted pixels == annotated pixels
            assert float(area) == float(mask.sum())  # COCO's area: the mask's pixel count
            assert ds.label_to_category_id[int(label)] == example.CATEGORY_ID[obj["label"]]
            tight = tight_boxes(mask[None])[0]
            if isinstance(ann["segmentation"], list):  # polygon: the bbox is the outline's extent
                forms.add("polygon")
                xy = np.reshape(ann["segmentation"][0], (-1, 2))
                assert torch.allclose(box, torch.tensor([*xy.min(0), *xy.max(0)], dtype=torch.float32), atol=1e-4)
                assert torch.equal(mask, torch.from_numpy(polygon_pixels(ann["segmentation"], *mask.shape)))
                assert (box[:2] <= tight[:2] + 1).all() and (box[2:] >= tight[2:] - 1).all()
            else:  # RLE: the mask's tight box, in pixel edges
                forms.add("rle")
                assert torch.equal(box, tight)
        if i == example.CROWD_IMAGE:
            crowd = target["masks"][~keep].bool()
            assert crowd.shape[0] == 1 and int(target["iscrowd"].sum()) == 1
            pile = np.logical_or.reduce([o["mask"] for o in objects if o["crowd"]])
            assert torch.equal(crowd[0], torch.from_numpy(pile))
    assert forms == {"polygon", "rle"}
    # training leaves the crowd out, evaluation keeps it
    train = CocoDetection(export / "images", export / "annotations.json", train=True)
    assert int(train[example.CROWD_IMAGE][1]["iscrowd"].sum()) == 0


def test_export_is_what_a_tool_gives(export):
    data = json.loads((export / "annotations.json").read_text())
    assert [c["id"] for c in data["categories"]] == [25, 4, 11]  # sparse and out of id order
    sizes = {(im["height"], im["width"]) for im in data["images"]}
    assert len(sizes) >= 4 and any(h != w for h, w in sizes)  # varied sizes and aspect ratios
    crowd = [a for a in data["annotations"] if a["iscrowd"]]
    assert len(crowd) == 1 and isinstance(crowd[0]["segmentation"]["counts"], list)  # uncompressed, like COCO's
    assert any(isinstance(a["segmentation"], dict) and isinstance(a["segmentation"]["counts"], str)
               for a in data["annotations"])
    for im in data["images"]:
        with Image.open(export / "images" / im["file_name"]) as f:
            assert f.format == "JPEG" and f.size == (im["width"], im["height"])


def test_rle_annotation_box_is_pycocotools_box():
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = np.zeros((17, 23), bool)
        y, x = rng.integers(0, 17), rng.integers(0, 23)
        mask[y: y + rng.integers(1, 9), x: x + rng.integers(1, 9)] = True  # touches the border sometimes
        ann = example.rle_annotation(mask, 1, 1, 4)
        rle = {"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()}
        assert ann["bbox"] == mask_utils.toBbox(rle).tolist()
        assert ann["area"] == float(mask_utils.area(rle)) == mask.sum()
        assert (mask_utils.decode(rle) == mask).all()


# --------------------------------------------------------------------------- labelme


def test_labelme_export_round_trip(tmp_path):
    paths = example.write_labelme_export(tmp_path, num_images=4, seed=7)
    coco = labelme_to_coco(paths, CATEGORIES, out_file=tmp_path / "annotations.json")
    ds = CocoDetection(tmp_path, tmp_path / "annotations.json")
    assert len(ds) == 4 and [im["file_name"] for im in coco["images"]] == [p.with_suffix(".jpg").name for p in paths]
    n = 0
    for i in range(len(ds)):
        _, target = ds[i]
        _, objects = example.make_scene(7, i, overlap=False)
        doc = json.loads(paths[i].read_text())
        assert len(doc["shapes"]) == len(objects) == len(target["labels"])
        for obj, shape, mask, box, label in zip(objects, doc["shapes"], target["masks"].bool(), target["boxes"],
                                                target["labels"]):
            n += 1
            assert torch.equal(mask, torch.from_numpy(obj["mask"]))
            assert ds.class_names[int(label)] == shape["label"]
            if shape["shape_type"] == "circle":  # stored as RLE: the mask's tight box
                assert torch.equal(box, tight_boxes(mask[None])[0])
            else:  # polygon: the outline's extent
                xy = np.asarray(shape["points"])
                assert torch.allclose(box, torch.tensor([*xy.min(0), *xy.max(0)], dtype=torch.float32), atol=1e-4)
    assert n >= 8


def write_labelme(folder, shapes, name="a", size=(40, 60)):
    """A labelme file with an image of `size` (H, W) beside it; -> the JSON path."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros(size + (3,), np.uint8)).save(folder / f"{name}.png")
    doc = {"version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": f"{name}.png", "imageData": None,
           "imageHeight": size[0], "imageWidth": size[1]}
    path = folder / f"{name}.json"
    path.write_text(json.dumps(doc))
    return path


def shape(label, points, kind="polygon", group=None):
    return {"label": label, "points": points, "group_id": group, "shape_type": kind, "flags": {}}


def test_labelme_rectangle_circle_groups(tmp_path):
    shapes = [shape("square", [[30, 8], [46, 8], [46, 12], [35, 12], [35, 28], [30, 28]]),  # an L, 144 px
              shape("circle", [[10, 10], [13, 10]], "circle"),  # r = 3: 32 pixel centres inside
              shape("square", [[50, 30], [40, 22]], "rectangle"),  # corners in either order
              shape("triangle", [[2, 30], [8, 30], [2, 36]], group=1),  # one object in two parts
              shape("triangle", [[10, 30], [16, 30], [16, 36]], group=1)]
    path = write_labelme(tmp_path, shapes)
    coco = labelme_to_coco([path], ["square", "circle", "triangle"], out_file=tmp_path / "annotations.json")
    assert [c["id"] for c in coco["categories"]] == [1, 2, 3]
    anns = coco["annotations"]
    assert [a["category_id"] for a in anns] == [1, 2, 1, 3]
    assert anns[0]["bbox"] == [30, 8, 16, 20] and anns[0]["area"] == 144
    assert anns[1]["bbox"] == [7, 7, 6, 6] and anns[1]["area"] == 32
    assert anns[2]["bbox"] == [40, 22, 10, 8] and anns[2]["area"] == 80
    assert len(anns[3]["segmentation"]) == 2 and anns[3]["bbox"] == [2, 30, 14, 6]
    ds = CocoDetection(tmp_path, tmp_path / "annotations.json")
    _, target = ds[0]
    assert target["boxes"].tolist()[0] == [30, 8, 46, 28]
    expected = polygon_pixels([[2, 30, 8, 30, 2, 36], [10, 30, 16, 30, 16, 36]], 40, 60)
    assert torch.equal(target["masks"][3].bool(), torch.from_numpy(expected))
    ys, xs = np.mgrid[:40, :60] + 0.5
    assert torch.equal(target["masks"][1].bool(), torch.from_numpy((xs - 10) ** 2 + (ys - 10) ** 2 <= 9))


@pytest.mark.parametrize("bad, words", [
    (shape("square", [[5, 5], [20, 5]]), ["shapes[1]", "'square'", "polygon", "at least 3 points, got 2"]),
    (shape("sqaure", [[5, 5], [20, 5], [20, 20]]), ["shapes[1]", "'sqaure'", "not one of the categories",
                                                   "circle", "square"]),
    (shape("square", [[5, 5], [20, 5]], "line"), ["shapes[1]", "shape_type 'line'", "polygon"]),
    (shape("square", [[5, 5], [80, 5], [20, 20]]), ["shapes[1]", "outside the 60x40 image"]),
    (shape("square", [[5, 5], [10, 10], [15, 15]]), ["shapes[1]", "covers no pixel"]),
    (shape("circle", [[5, 5], [5, 5]], "circle"), ["shapes[1]", "radius 0"]),
    (shape("square", [[5, 5], [20, 20], [30, 30]], "rectangle"), ["shapes[1]", "2 corners, got 3"]),
    (shape("square", "5,5,20,20"), ["shapes[1]", "[x, y] pairs"]),
])
def test_labelme_refuses_bad_shapes_naming_file_and_shape(tmp_path, bad, words):
    path = write_labelme(tmp_path, [shape("circle", [[30, 20], [34, 20]], "circle"), bad], name="photo_7")
    with pytest.raises(ValueError) as err:
        labelme_to_coco([path], CATEGORIES)
    message = str(err.value)
    assert str(path) in message, message
    for word in words:
        assert word in message, message


def test_labelme_refuses_bad_files(tmp_path):
    good = write_labelme(tmp_path, [shape("circle", [[30, 20], [34, 20]], "circle")])
    broken = tmp_path / "b.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="b.json: not valid JSON"):
        labelme_to_coco([good, broken], CATEGORIES)
    doc = json.loads(good.read_text())
    (tmp_path / "c.json").write_text(json.dumps({**doc, "imagePath": "missing.png"}))
    with pytest.raises(FileNotFoundError, match="c.json: its image 'missing.png'"):
        labelme_to_coco([tmp_path / "c.json"], CATEGORIES)
    (tmp_path / "d.json").write_text(json.dumps({**doc, "imageWidth": 61}))
    with pytest.raises(ValueError, match=r"d.json: the image 'a.png' is 60x40, the file says 61x40"):
        labelme_to_coco([tmp_path / "d.json"], CATEGORIES)
    with pytest.raises(ValueError, match="share an id"):
        labelme_to_coco([good], {"square": 1, "circle": 1})
    with pytest.raises(ValueError, match="not inside image_dir"):
        labelme_to_coco([good], CATEGORIES, image_dir=tmp_path / "elsewhere")


# --------------------------------------------------------------------------- inspection


def test_boxes_in_model_frame_match_the_model_transform(export):
    ds = CocoDetection(export / "images", export / "annotations.json", train=True)
    model = build_maskrcnn("shapes_tiny", num_classes=4, min_size=160, max_size=200)
    resized = boxes_in_model_frame(ds, 160, 200)
    for i in range(len(ds)):
        image, target = ds[i]
        batch, sizes, targets = model.transform([image], [target])
        assert resized[i][1] == tuple(sizes[0])
        assert torch.allclose(resized[i][0], targets[0]["boxes"])
        assert resized_size(*image.shape[-2:], 160, 200) == tuple(sizes[0])


def test_best_anchor_iou_equals_the_models_own_anchors(export):
    ds = CocoDetection(export / "images", export / "annotations.json", train=True)
    for min_size, max_size in ((128, 128), (192, 256)):
        model = build_maskrcnn("shapes_tiny", num_classes=4, min_size=min_size, max_size=max_size).eval()
        config = get_config("shapes_tiny")
        for (boxes, size), i in zip(boxes_in_model_frame(ds, min_size, max_size), range(4)):
            image, _ = ds[i]
            batch, _, _ = model.transform([image])
            with torch.no_grad():
                features = model.backbone(batch)  # [P2, ..., P6]
            anchors = model.rpn.anchor_generator(batch.shape[-2:], [f.shape[-2:] for f in features])  # (A, 4)
            expected = torchvision.ops.box_iou(boxes, anchors).max(dim=1).values  # (N,) torchvision's IoU
            assert len(boxes) and torch.allclose(best_anchor_iou(boxes, size, config), expected, atol=1e-6)
