"""Worked solutions of the exercises of 08_full_model.ipynb (for teachers; tests/test_exercises.py runs them)."""

from mrcnn_teach.exercises.nb08 import check_contract, check_fpn_params, check_predictor_shapes


def my_fpn_params(in_channels, out_channels):
    """Per level: a 1x1 lateral conv C_l -> d and a 3x3 output conv d -> d, each with a bias.
    P6 is a subsampling of P5 (max pool, kernel 1, stride 2): no parameters."""
    d = out_channels
    lateral = sum(c * d + d for c in in_channels)  # 1x1 convs: weight (d, C_l, 1, 1) + bias (d,)
    output = len(in_channels) * (d * d * 3 * 3 + d)  # 3x3 convs: weight (d, d, 3, 3) + bias (d,)
    return lateral + output


# The RPN's two losses (Faster R-CNN Sec. 3.1.2) and the RoI heads' three (Mask R-CNN Sec. 3).
def my_contract():
    # Two RPN losses, three from the RoI heads; one dict per image, masks pasted at the caller's size.
    return ({"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"},
            {"boxes", "labels", "scores", "masks"})


def my_predictor_shapes(num_classes, class_agnostic=False):
    """shapes_tiny: representation_size 1024, mask_dim_reduced 32. num_classes already counts the background."""
    representation, mask_width = 1024, 32
    mask_maps = 1 if class_agnostic else num_classes  # one 28x28 map per class, or one shared map
    return {"cls_score": (num_classes, representation),  # nn.Linear weight is (out, in)
            "bbox_deltas": (4 * num_classes, representation),  # four deltas per class, background included
            "mask_logits": (mask_maps, mask_width, 1, 1)}  # a 1x1 conv over the deconv's 32 channels


CHECKS = [
    (check_fpn_params, my_fpn_params),
    (check_contract, my_contract),
    (check_predictor_shapes, my_predictor_shapes),
]


def _fpn_params_with_p6_conv(in_channels, out_channels):
    # counts a 3x3 stride-2 conv for P6 (RetinaNet's P6 is a conv; Mask R-CNN's is a subsampling)
    return my_fpn_params(in_channels, out_channels) + out_channels * out_channels * 9 + out_channels


def _fpn_params_without_biases(in_channels, out_channels):
    return sum(c * out_channels for c in in_channels) + len(in_channels) * out_channels * out_channels * 9


def _predictor_shapes_without_background(num_classes, class_agnostic=False):
    k = num_classes - 1  # forgets that the predictors keep a background column
    return {"cls_score": (k, 1024), "bbox_deltas": (4 * k, 1024), "mask_logits": (1 if class_agnostic else k, 32, 1, 1)}


def _predictor_shapes_ignoring_agnostic(num_classes, class_agnostic=False):
    return my_predictor_shapes(num_classes, False)


WRONG = [
    (check_fpn_params, _fpn_params_with_p6_conv),
    (check_fpn_params, _fpn_params_without_biases),
    (check_contract, lambda: ({"loss_cls", "loss_box", "loss_mask"}, {"boxes", "labels", "scores", "masks"})),  # the paper's three terms only
    (check_contract, lambda: ({"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}, {"boxes", "labels", "scores", "masks"})),  # Faster R-CNN
    (check_contract, lambda: ({"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"}, {"boxes", "labels", "masks"})),
    (check_contract, lambda: ({"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"}, {"boxes", "labels", "scores", "masks", "mask_logits"})),
    (check_predictor_shapes, _predictor_shapes_without_background),
    (check_predictor_shapes, _predictor_shapes_ignoring_agnostic),
]
