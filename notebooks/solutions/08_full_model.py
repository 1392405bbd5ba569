"""Worked solutions of the exercises of 08_full_model.ipynb (for teachers; tests/test_exercises.py runs them)."""

import math

from mrcnn_teach.exercises.nb08 import check_fpn_params, check_image_sizes, check_predictor_shapes, check_rescale_boxes


def my_fpn_params(in_channels, out_channels):
    """Per level: a 1x1 lateral conv C_l -> d and a 3x3 output conv d -> d, each with a bias.
    P6 is a subsampling of P5 (max pool, kernel 1, stride 2): no parameters."""
    d = out_channels
    lateral = sum(c * d + d for c in in_channels)  # 1x1 convs: weight (d, C_l, 1, 1) + bias (d,)
    output = len(in_channels) * (d * d * 3 * 3 + d)  # 3x3 convs: weight (d, d, 3, 3) + bias (d,)
    return lateral + output


def my_image_sizes(sizes, min_size, max_size, size_divisible=32):
    """One scale per image (the shorter side to min_size unless the longer side passes max_size), then
    interpolate's output size: floor(side * scale), computed in floating point, so 97 * (800 / 97) can
    give 799. The batch is the largest height and width, each rounded up to a multiple of size_divisible."""
    resized = []
    for h, w in sizes:
        scale = min(min_size / min(h, w), max_size / max(h, w))
        resized.append((math.floor(h * scale), math.floor(w * scale)))
    H = math.ceil(max(h for h, _ in resized) / size_divisible) * size_divisible
    W = math.ceil(max(w for _, w in resized) / size_divisible) * size_divisible
    return resized, (H, W)


def my_predictor_shapes(num_classes, class_agnostic=False):
    """shapes_tiny: representation_size 1024, mask head (32, 32, 32, 32), mask_dim_reduced 32.
    num_classes already counts the background."""
    representation, head_width, mask_width = 1024, 32, 32
    mask_maps = 1 if class_agnostic else num_classes  # one 28x28 map per class, or one shared map
    return {"cls_score": (num_classes, representation),  # nn.Linear weight is (out, in)
            "bbox_deltas": (4 * num_classes, representation),  # four deltas per class, background included
            "deconv": (head_width, mask_width, 2, 2),  # ConvTranspose2d weight is (in, out, kh, kw): 2x2, stride 2
            "mask_logits": (mask_maps, mask_width, 1, 1)}  # a 1x1 conv over the deconv's 32 channels


def my_rescale_boxes(boxes, resized_size, original_size):
    """Each axis has its own ratio: the resize floors each side separately, so h'/h and w'/w differ
    (203x287 -> 256x361: 1.2611 and 1.2578), and one ratio for both puts x off by up to 0.7 px there."""
    ratio_h = original_size[0] / resized_size[0]
    ratio_w = original_size[1] / resized_size[1]
    return boxes * boxes.new_tensor([ratio_w, ratio_h, ratio_w, ratio_h])  # (N, 4) x1, y1, x2, y2


CHECKS = [
    (check_fpn_params, my_fpn_params),
    (check_image_sizes, my_image_sizes),
    (check_predictor_shapes, my_predictor_shapes),
    (check_rescale_boxes, my_rescale_boxes),
]


def _fpn_params_with_p6_conv(in_channels, out_channels):
    # counts a 3x3 stride-2 conv for P6 (RetinaNet's P6 is a conv; Mask R-CNN's is a subsampling)
    return my_fpn_params(in_channels, out_channels) + out_channels * out_channels * 9 + out_channels


def _fpn_params_without_biases(in_channels, out_channels):
    return sum(c * out_channels for c in in_channels) + len(in_channels) * out_channels * out_channels * 9


def _image_sizes_rounded(sizes, min_size, max_size, size_divisible=32):
    # rounds to the nearest pixel: 361.93 -> 362 (interpolate floors)
    resized = []
    for h, w in sizes:
        scale = min(min_size / min(h, w), max_size / max(h, w))
        resized.append((round(h * scale), round(w * scale)))
    H = math.ceil(max(h for h, _ in resized) / size_divisible) * size_divisible
    W = math.ceil(max(w for _, w in resized) / size_divisible) * size_divisible
    return resized, (H, W)


def _image_sizes_short_side_exact(sizes, min_size, max_size, size_divisible=32):
    # "the shorter side becomes min_size exactly": true in exact arithmetic, not in floating point (97 -> 799)
    resized = []
    for h, w in sizes:
        scale = min(min_size / min(h, w), max_size / max(h, w))
        if scale == min_size / min(h, w):
            resized.append((min_size, math.floor(w * scale)) if h <= w else (math.floor(h * scale), min_size))
        else:
            resized.append((math.floor(h * scale), math.floor(w * scale)))
    H = math.ceil(max(h for h, _ in resized) / size_divisible) * size_divisible
    W = math.ceil(max(w for _, w in resized) / size_divisible) * size_divisible
    return resized, (H, W)


def _image_sizes_without_cap(sizes, min_size, max_size, size_divisible=32):
    # forgets max_size: a 1000x3000 panorama would become 800x2400
    return my_image_sizes(sizes, min_size, 10 ** 9, size_divisible)


def _image_sizes_padded_per_image(sizes, min_size, max_size, size_divisible=32):
    # pads the last image only, not to the largest of the batch
    resized, _ = my_image_sizes(sizes, min_size, max_size, size_divisible)
    h, w = resized[-1]
    return resized, (math.ceil(h / size_divisible) * size_divisible, math.ceil(w / size_divisible) * size_divisible)


def _predictor_shapes_without_background(num_classes, class_agnostic=False):
    k = num_classes - 1  # forgets that the predictors keep a background column
    return {"cls_score": (k, 1024), "bbox_deltas": (4 * k, 1024), "deconv": (32, 32, 2, 2),
            "mask_logits": (1 if class_agnostic else k, 32, 1, 1)}


def _predictor_shapes_deconv_per_class(num_classes, class_agnostic=False):
    # takes the deconvolution for the layer that makes one map per class: (in, K+1, 2, 2)
    return {**my_predictor_shapes(num_classes, class_agnostic), "deconv": (32, num_classes, 2, 2)}


def _predictor_shapes_deconv_3x3(num_classes, class_agnostic=False):
    # takes the deconvolution for a 3x3 conv like the four mask head convs before it
    return {**my_predictor_shapes(num_classes, class_agnostic), "deconv": (32, 32, 3, 3)}


def _predictor_shapes_without_deconv(num_classes, class_agnostic=False):
    # the three keys of the first edition of this exercise
    shapes = my_predictor_shapes(num_classes, class_agnostic)
    del shapes["deconv"]
    return shapes


def _predictor_shapes_ignoring_agnostic(num_classes, class_agnostic=False):
    return my_predictor_shapes(num_classes, False)


def _rescale_boxes_one_ratio(boxes, resized_size, original_size):
    # the buggy copy of the notebook: "the resize keeps the aspect ratio", so one ratio for both axes
    return boxes * (original_size[0] / resized_size[0])


def _rescale_boxes_swapped(boxes, resized_size, original_size):
    # x scaled by the heights' ratio and y by the widths'
    ratio_h = original_size[0] / resized_size[0]
    ratio_w = original_size[1] / resized_size[1]
    return boxes * boxes.new_tensor([ratio_h, ratio_w, ratio_h, ratio_w])


def _rescale_boxes_inverted(boxes, resized_size, original_size):
    # resized / original: scales the boxes up a second time
    ratio_h = resized_size[0] / original_size[0]
    ratio_w = resized_size[1] / original_size[1]
    return boxes * boxes.new_tensor([ratio_w, ratio_h, ratio_w, ratio_h])


WRONG = [
    (check_fpn_params, _fpn_params_with_p6_conv),
    (check_fpn_params, _fpn_params_without_biases),
    (check_image_sizes, _image_sizes_rounded),
    (check_image_sizes, _image_sizes_short_side_exact),
    (check_image_sizes, _image_sizes_without_cap),
    (check_image_sizes, _image_sizes_padded_per_image),
    (check_predictor_shapes, _predictor_shapes_without_background),
    (check_predictor_shapes, _predictor_shapes_ignoring_agnostic),
    (check_predictor_shapes, _predictor_shapes_deconv_per_class),
    (check_predictor_shapes, _predictor_shapes_deconv_3x3),
    (check_predictor_shapes, _predictor_shapes_without_deconv),
    (check_rescale_boxes, _rescale_boxes_one_ratio),
    (check_rescale_boxes, _rescale_boxes_swapped),
    (check_rescale_boxes, _rescale_boxes_inverted),
]
