"""Worked solutions of the exercises of 00_tour.ipynb (for teachers; tests/test_exercises.py runs them)."""

import torch

from mrcnn_teach.exercises.nb00 import check_flatten, check_unrolled, check_variant_shapes
from mrcnn_teach.rpn import flatten_head_outputs


def predict_shapes():
    """The variant: 128 FPN channels, 3 sizes x 3 ratios = k = 9 anchors per position, K+1 = 6 classes,
    a batch of B = 2 padded to 96x160, N = 100 proposals per image, D = 7 detections."""
    B, C, k, classes = 2, 128, 9, 6
    sides = [(96 // s, 160 // s) for s in (4, 8, 16, 32)]  # P2..P5: (24, 40) (12, 20) (6, 10) (3, 5)
    sides.append(((3 + 1) // 2, (5 + 1) // 2))  # P6 = P5 subsampled with stride 2: ceil -> (2, 3)
    return {
        "P6": (B, C, 2, 3),
        "objectness_P2": (B, k, 24, 40),
        "deltas_P6": (B, 4 * k, 2, 3),
        "anchors": k * sum(h * w for h, w in sides),  # 9 * 1281 = 11529, per image
        "class_logits": (B * 100, classes),  # the RoIs of both images in one batch
        "box_deltas": (B * 100, 4 * classes),
        "mask_logits": (7, classes, 28, 28),
    }


def my_flatten(objectness_maps, delta_maps):
    """(B, k, h, w) and (B, 4k, h, w) per level -> (B, A), (B, A, 4): level, row, column, anchor."""
    flat_objectness, flat_deltas, num_per_level = [], [], []
    for obj, dlt in zip(objectness_maps, delta_maps):
        B, k, h, w = obj.shape
        flat_objectness.append(obj.permute(0, 2, 3, 1).reshape(B, h * w * k))  # (B, h*w*k)
        # channel 4a + j is delta j of anchor a: view as (k, 4), not (4, k)
        flat_deltas.append(dlt.view(B, k, 4, h, w).permute(0, 3, 4, 1, 2).reshape(B, h * w * k, 4))
        num_per_level.append(h * w * k)
    return torch.cat(flat_objectness, dim=1), torch.cat(flat_deltas, dim=1), num_per_level


def detect_by_hand(model, images):
    """MaskRCNN.forward at inference for any batch, its RPN and RoI heads unrolled."""
    batch, image_sizes, _ = model.transform(images)  # (B, 3, H, W)
    B = batch.shape[0]
    features = model.backbone(batch)  # [P2..P6]
    objectness_maps, delta_maps = model.rpn.head(features)
    objectness, deltas, num_per_level = flatten_head_outputs(objectness_maps, delta_maps)  # (B, A), (B, A, 4)
    anchors = model.rpn.anchor_generator(tuple(batch.shape[-2:]), [tuple(P.shape[-2:]) for P in features])
    A = anchors.shape[0]  # the same anchors for every image of the batch
    boxes = model.rpn.box_coder.decode(deltas.reshape(B * A, 4), anchors.repeat(B, 1)).view(B, A, 4)
    proposals, _ = model.rpn.propose(boxes, objectness, image_sizes, num_per_level)  # B x (N_i, 4)
    roi_heads = model.roi_heads
    class_logits, box_deltas = roi_heads.box_logits(features, proposals, image_sizes)
    det_boxes, det_scores, det_labels = roi_heads.postprocess_detections(class_logits, box_deltas, proposals,
                                                                         image_sizes)
    masks = roi_heads.predict_masks(features, det_boxes, det_labels, image_sizes)  # B x (D_i, 1, 28, 28)
    detections = [dict(boxes=b, labels=l, scores=s, masks=m)
                  for b, l, s, m in zip(det_boxes, det_labels, det_scores, masks)]
    original_sizes = [tuple(img.shape[-2:]) for img in images]  # before resizing, not image_sizes
    return model.transform.postprocess(detections, image_sizes, original_sizes)


CHECKS = [
    (check_variant_shapes, predict_shapes),
    (check_flatten, my_flatten),
    (check_unrolled, detect_by_hand),
]


def _shapes_with_floor_p6():  # P6 = P5 // 2 forgets that a 3-cell side keeps 2 cells
    return {**predict_shapes(), "P6": (2, 128, 1, 2), "deltas_P6": (2, 36, 1, 2),
            "anchors": 9 * (24 * 40 + 12 * 20 + 6 * 10 + 3 * 5 + 1 * 2)}


def _shapes_with_k_classes():  # K = 5 object classes, forgetting the background column
    return {**predict_shapes(), "class_logits": (200, 5), "box_deltas": (200, 20), "mask_logits": (7, 5, 28, 28)}


def _flatten_deltas_as_4_by_k(objectness_maps, delta_maps):  # the notebook's buggy copy: right when k = 1
    flat_objectness, flat_deltas, num_per_level = [], [], []
    for obj, dlt in zip(objectness_maps, delta_maps):
        B, k, h, w = obj.shape
        flat_objectness.append(obj.permute(0, 2, 3, 1).reshape(B, h * w * k))
        flat_deltas.append(dlt.view(B, 4, k, h, w).permute(0, 3, 4, 2, 1).reshape(B, h * w * k, 4))
        num_per_level.append(h * w * k)
    return torch.cat(flat_objectness, dim=1), torch.cat(flat_deltas, dim=1), num_per_level


def _flatten_without_permute(objectness_maps, delta_maps):  # anchor index first: (a, y, x) order
    B = objectness_maps[0].shape[0]
    objectness = torch.cat([o.reshape(B, -1) for o in objectness_maps], dim=1)
    deltas = torch.cat([d.reshape(B, -1, 4) for d in delta_maps], dim=1)
    return objectness, deltas, [o[0].numel() for o in objectness_maps]


def _detect_pasting_into_resized(model, images):  # passes image_sizes as the original sizes
    postprocess = model.transform.postprocess
    model.transform.postprocess = lambda detections, sizes, original: postprocess(detections, sizes, sizes)
    return detect_by_hand(model, images)


def _detect_masks_of_class_1(model, images):  # keeps mask channel 1 for every detection, not its class's
    predict_masks = model.roi_heads.predict_masks
    model.roi_heads.predict_masks = lambda features, boxes, labels, sizes: predict_masks(
        features, boxes, [torch.ones_like(l) for l in labels], sizes)
    return detect_by_hand(model, images)


def _flatten_by_calling_the_library(objectness_maps, delta_maps):
    """Right values, but it copies the function the check compares with."""
    return flatten_head_outputs(objectness_maps, delta_maps)


WRONG = [
    (check_variant_shapes, _shapes_with_floor_p6),
    (check_variant_shapes, _shapes_with_k_classes),
    (check_flatten, _flatten_deltas_as_4_by_k),
    (check_flatten, _flatten_without_permute),
    (check_flatten, _flatten_by_calling_the_library),
    (check_unrolled, _detect_pasting_into_resized),
    (check_unrolled, _detect_masks_of_class_1),
]
