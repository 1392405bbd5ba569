"""Worked solutions to the exercises of 13_your_own_data.ipynb (for teachers; tests/test_exercises.py runs them).

CHECKS pairs every check the notebook calls with its solution; WRONG pairs each check with a
plausible mistake that the check must reject.
"""

import numpy as np
from pycocotools import mask as mask_utils

from mrcnn_teach.configs import get_config
from mrcnn_teach.exercises.nb13 import (check_input_size, check_polygon_annotations, check_rle_annotation,
                                        notebook_objects, reach_and_cost)


# Exercise 1 -------------------------------------------------------------------------------------
def predicted_annotations():
    """Worked on paper.

    Bracket: its corners run from x = 30 to 46 and y = 8 to 28, so bbox = [30, 8, 16, 20] and the box the
    model trains on is [30, 8, 30 + 16, 8 + 20] = [30, 8, 46, 28]. Its area is the pixel count of the L:
    a 16 x 4 bar (y 8..12) and a 5 x 16 leg (x 30..35, y 12..28): 64 + 80 = 144 (integer corners on pixel
    edges: every pixel is wholly in or out).
    Washer: centre (10, 10), radius 3. Pixel centres sit at .5: offsets +-0.5, +-1.5, +-2.5 in x and y,
    36 of them in the 6 x 6 block of columns and rows 7..12; all but the 4 corners (2.5^2 + 2.5^2 = 12.5 > 9)
    are inside, so area = 32, and the block is the tight box: bbox [7, 7, 6, 6], box [7, 7, 13, 13].
    Labels number the categories by sorted id: washer (2) -> 1, bracket (17) -> 2, bolt (30) -> 3.
    """
    return [([30, 8, 16, 20], [30, 8, 46, 28], 144, 2),
            ([7, 7, 6, 6], [7, 7, 13, 13], 32, 1)]


def annotations_with_corner_boxes():
    """Wrong: the bbox written as corners (x1, y1, x2, y2), as our boxes are, not [x, y, w, h]."""
    return [([30, 8, 46, 28], [30, 8, 46, 28], 144, 2),
            ([7, 7, 13, 13], [7, 7, 13, 13], 32, 1)]


def annotations_with_category_ids_as_labels():
    """Wrong: the label taken to be the category id."""
    return [([30, 8, 16, 20], [30, 8, 46, 28], 144, 17),
            ([7, 7, 6, 6], [7, 7, 13, 13], 32, 2)]


def annotations_with_disc_area():
    """Wrong: the washer's area as the disc's, pi r^2 = 28.3, instead of the pixels that make its mask."""
    return [([30, 8, 16, 20], [30, 8, 46, 28], 144, 2),
            ([7, 7, 6, 6], [7, 7, 13, 13], float(np.pi * 9), 1)]


# Exercise 2 -------------------------------------------------------------------------------------
def rle_annotation(mask, ann_id, image_id, category_id):
    """The fix: w = last column + 1 - first column. A box's right edge is the right edge of its last
    pixel (pixel x covers [x, x + 1)), so a mask on columns 3..7 is 5 wide, not 7 - 3 = 4.

    The cost: the buggy box has the right top-left corner but is one pixel short in w and h, so a perfect
    detector's box contains it: IoU = (w - 1)(h - 1) / (w h). A 4 x 4 object: 9 / 16 = 0.56, a match only
    at COCO's IoU thresholds 0.50 and 0.55, a miss at the eight above; a 40 x 40 one: 39^2 / 40^2 = 0.95."""
    mask = np.asarray(mask, dtype=bool)  # (H, W)
    ys, xs = np.nonzero(mask)
    x, y = int(xs.min()), int(ys.min())
    bbox = [x, y, int(xs.max()) + 1 - x, int(ys.max()) + 1 - y]
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "iscrowd": 0,
            "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
            "area": float(mask.sum()), "bbox": [float(v) for v in bbox]}


def rle_annotation_off_by_one(mask, ann_id, image_id, category_id):
    """Wrong: the notebook's buggy version (width and height one pixel short)."""
    ann = rle_annotation(mask, ann_id, image_id, category_id)
    ann["bbox"][2] -= 1
    ann["bbox"][3] -= 1
    return ann


def rle_annotation_rows_for_columns(mask, ann_id, image_id, category_id):
    """Wrong: np.nonzero returns (rows, columns); taking them as (x, y) swaps the box's axes."""
    ann = rle_annotation(mask, ann_id, image_id, category_id)
    x, y, w, h = ann["bbox"]
    ann["bbox"] = [y, x, h, w]
    return ann


def rle_annotation_row_major(mask, ann_id, image_id, category_id):
    """Wrong: the RLE of a C-ordered (row-major) array's transpose: COCO's runs are column-major."""
    ann = rle_annotation(mask, ann_id, image_id, category_id)
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, np.uint8).T))
    ann["segmentation"] = {"size": [int(v) for v in rle["size"]][::-1], "counts": rle["counts"].decode("ascii")}
    return ann


# Exercise 3 -------------------------------------------------------------------------------------
def input_size():
    """Searched: for each min_size (multiples of 8) and max_size between min_size and 2 x min_size, the share
    of objects within a factor 2 of an anchor's area and the mean padded pixels; the cheapest pair that
    reaches 95%. Read the anchor sizes at run time, as the exercise says: the answer moves with them.

    Defence (with the anchors fitted in issue 13, 16..406 px, three sizes an octave): the preset's 128 px
    leaves 31% of the objects, the small ones of the large photos, under half the smallest anchor's area.
    (216, 288) brings 96% within reach for 4.8x the padded pixels of (128, 128), so about 4.8x the
    backbone's work per image; the photos' own size, (240, 320), reaches 98% for 6.2x. (480, 640) reaches
    all of them for 23x, and (960, 1280) already pushes the largest objects past twice the largest
    anchor's area (97%). The best-anchor IoU of section 3.3 rises for the small objects, whose point cloud
    moves right, past the smallest anchor.
    """
    sizes, boxes, image_of = notebook_objects()
    anchors = get_config("shapes_tiny")["anchor_sizes"]
    best = None  # (cost, min_size, max_size)
    for min_size in range(32, 801, 8):
        for max_size in range(min_size, min(2 * min_size, 1333) + 1, 8):
            reach, cost = reach_and_cost(sizes, boxes, image_of, min_size, max_size, anchors)
            if reach >= 0.95 and (best is None or cost < best[0]):
                best = (cost, min_size, max_size)
    return best[1], best[2]


def input_size_of_the_preset():
    """Wrong: keep the preset's 128 px; the smallest objects stay out of every anchor's reach."""
    return 128, 128


def input_size_of_the_photos():
    """Wrong (too costly): train at the largest photos' own size, 240 x 320."""
    return 240, 320


CHECKS = [
    (check_polygon_annotations, predicted_annotations),
    (check_rle_annotation, rle_annotation),
    (check_input_size, input_size),
]

WRONG = [
    (check_polygon_annotations, annotations_with_corner_boxes),
    (check_polygon_annotations, annotations_with_category_ids_as_labels),
    (check_polygon_annotations, annotations_with_disc_area),
    (check_rle_annotation, rle_annotation_off_by_one),
    (check_rle_annotation, rle_annotation_rows_for_columns),
    (check_rle_annotation, rle_annotation_row_major),
    (check_input_size, input_size_of_the_preset),
    (check_input_size, input_size_of_the_photos),
]
