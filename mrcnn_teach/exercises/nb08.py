"""Checks for the exercises of notebooks/08_full_model.ipynb (the whole model: parameters, sizes, predictors).

Each check compares the student's answer with the library itself, on cases the notebook does not
show: a freshly built `FPN` for the parameter count, `ImageTransform` on blank images for the sizes
inside the batch, models built by `build_maskrcnn` for the predictor shapes, and `resize_boxes`
for the debug exercise. An answer that calls the very function that would answer it is refused
(the check reads the names its code uses).
"""

from __future__ import annotations

import torch

from . import need_function, refuse_names, run_check


# ------------------------------------------------------------------------------- exercise 1

FPN_CASES = [([64, 128, 256, 512], 64), ([256, 512, 1024, 2048], 256), ([48, 96, 192, 384], 128)]
FPN_HIDDEN = [([16, 32, 64], 8), ([32, 64, 128, 256], 48), ([100, 200, 300, 400, 500], 20), ([24, 48], 1)]


def check_fpn_params(my_fpn_params, hidden=False) -> bool:
    """my_fpn_params(in_channels list[int], out_channels int) -> int, the number of parameters of
    FPN(in_channels, out_channels), for channel lists the notebook does not show."""
    from ..fpn import FPN

    def compare():
        need_function(my_fpn_params)
        refuse_names(my_fpn_params, {"FPN", "parameters", "numel", "Conv2d", "BackboneWithFPN", "build_maskrcnn"},
                     "count the weights and biases of each conv by hand, without building one")
        for in_channels, out_channels in FPN_HIDDEN if hidden else FPN_CASES:
            expected = sum(p.numel() for p in FPN(in_channels, out_channels).parameters())
            got = my_fpn_params(list(in_channels), out_channels)
            assert got is not None, "your function returned None"
            assert int(got) == expected, (f"FPN({in_channels}, {out_channels}): expected {expected:,} parameters, "
                                          f"got {int(got):,}")

    return run_check("FPN parameter count", compare, hidden=hidden)


# ------------------------------------------------------------------------------- exercise 2

# (image sizes (h, w), min_size, max_size): the shorter side 97 at 800 comes out 799 (floor in floats)
SIZE_CASES = [([(203, 287)], 256, 384), ([(500, 375), (427, 640)], 800, 1333), ([(97, 130)], 800, 1333),
              ([(1000, 3000), (600, 500)], 800, 1333)]
SIZE_HIDDEN = [([(161, 500), (600, 90)], 128, 512), ([(49, 49)], 128, 128), ([(375, 500), (500, 333), (640, 480)], 800, 1333),
               ([(300, 1200)], 600, 1000), ([(128, 100), (100, 128)], 128, 128)]


def _true_sizes(sizes, min_size, max_size, size_divisible=32):
    """What ImageTransform does with blank images of these sizes: ([(h', w')], (H, W) of the padded batch)."""
    from ..transform import ImageTransform

    transform = ImageTransform(min_size, max_size, size_divisible=size_divisible).eval()
    batch, image_sizes, _ = transform([torch.zeros(3, h, w) for h, w in sizes])  # (B, 3, H, W)
    return [tuple(s) for s in image_sizes], tuple(batch.shape[-2:])


def check_image_sizes(my_image_sizes, hidden=False) -> bool:
    """my_image_sizes(sizes [(h, w)], min_size, max_size, size_divisible=32) -> ([(h', w')], (H, W)):
    each image's size after the resize, and the padded batch's size."""

    def compare():
        need_function(my_image_sizes)
        refuse_names(my_image_sizes, {"ImageTransform", "transform", "interpolate", "resize", "batch_images",
                                      "build_maskrcnn", "GeneralizedRCNNTransform"},
                     "work the sizes out with arithmetic, as interpolate does, without resizing anything")
        for sizes, min_size, max_size in SIZE_HIDDEN if hidden else SIZE_CASES:
            expected_sizes, expected_batch = _true_sizes(sizes, min_size, max_size)
            got = my_image_sizes([tuple(s) for s in sizes], min_size, max_size, 32)
            assert isinstance(got, (tuple, list)) and len(got) == 2, "return two things: ([(h', w'), ...], (H, W))"
            got_sizes, got_batch = [tuple(int(n) for n in s) for s in got[0]], tuple(int(n) for n in got[1])
            where = f"sizes {sizes}, min_size {min_size}, max_size {max_size}"
            assert got_sizes == expected_sizes, f"{where}: the resized sizes are {expected_sizes}, you said {got_sizes}"
            assert got_batch == expected_batch, f"{where}: the padded batch is {expected_batch}, you said {got_batch}"

    return run_check("sizes inside the batch", compare, hidden=hidden)


# ------------------------------------------------------------------------------- exercise 3

PREDICTOR_CASES = [(7, False), (2, False), (12, True)]
PREDICTOR_HIDDEN = [(5, True), (81, False), (3, False), (91, True)]


def _predictor_shapes(num_classes: int, class_agnostic: bool) -> dict[str, tuple[int, ...]]:
    from ..configs import build_maskrcnn

    model = build_maskrcnn("shapes_tiny", num_classes=num_classes, class_agnostic_masks=class_agnostic)
    heads = model.roi_heads
    return {"cls_score": tuple(heads.box_predictor.cls_score.weight.shape),
            "bbox_deltas": tuple(heads.box_predictor.bbox_deltas.weight.shape),
            "deconv": tuple(heads.mask_predictor.deconv.weight.shape),  # ConvTranspose2d: (in, out, kh, kw)
            "mask_logits": tuple(heads.mask_predictor.mask_logits.weight.shape)}


def check_predictor_shapes(my_predictor_shapes, hidden=False) -> bool:
    """my_predictor_shapes(num_classes, class_agnostic) -> dict of the weight shapes of cls_score,
    bbox_deltas, deconv and mask_logits in build_maskrcnn("shapes_tiny", num_classes=..., class_agnostic_masks=...)."""

    def compare():
        need_function(my_predictor_shapes)
        refuse_names(my_predictor_shapes, {"build_maskrcnn", "build_from_config", "BoxPredictor", "MaskPredictor",
                                           "RoIHeads", "roi_heads", "box_predictor", "mask_predictor"},
                     "work the shapes out from the config and notebooks 06-07, without building the model")
        for num_classes, agnostic in PREDICTOR_HIDDEN if hidden else PREDICTOR_CASES:
            expected = _predictor_shapes(num_classes, agnostic)
            got = my_predictor_shapes(num_classes, agnostic)
            assert got is not None, "your function returned None"
            assert isinstance(got, dict), f"return a dict, got {type(got).__name__}"
            assert set(got) == set(expected), f"return the keys {sorted(expected)}, got {sorted(got)}"
            for key, shape in expected.items():
                mine = tuple(int(n) for n in got[key])
                assert mine == shape, (f"num_classes={num_classes}, class_agnostic={agnostic}: {key} weight is "
                                       f"{shape}, you said {mine}")

    return run_check("predictor shapes", compare, hidden=hidden)


# ------------------------------------------------------------------------------- exercise 4

# (caller's image size (h, w), min_size, max_size): the resized size comes from ImageTransform itself
RESCALE_CASES = [((203, 287), 256, 384), ((97, 130), 800, 1333), ((480, 640), 800, 1333)]
RESCALE_HIDDEN = [((287, 203), 256, 384), ((1000, 3000), 800, 1333), ((161, 500), 128, 512), ((333, 500), 800, 1333)]


def _rescale_case(original, min_size, max_size, seed):
    """(boxes (N, 4) in the resized image, resized (h', w')): boxes spread over the whole resized image."""
    (resized,), _ = _true_sizes([original], min_size, max_size)
    g = torch.Generator().manual_seed(seed)
    h, w = resized
    corner = torch.rand(6, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])  # (6, 2) x1, y1
    size = (0.1 + 0.3 * torch.rand(6, 2, generator=g)) * torch.tensor([w, h])  # (6, 2)
    boxes = torch.cat([corner, corner + size], dim=1)  # (6, 4)
    boxes = torch.cat([boxes, torch.tensor([[0.0, 0.0, float(w), float(h)]])])  # (7, 4) the whole image too
    return boxes, resized


def check_rescale_boxes(my_rescale_boxes, hidden=False) -> bool:
    """my_rescale_boxes(boxes (N, 4) in the resized image, resized_size (h', w'), original_size (h, w))
    -> (N, 4) in the caller's pixels, as the model's postprocess gives them (to 1e-3 pixel)."""
    from ..transform import resize_boxes

    def compare():
        need_function(my_rescale_boxes)
        refuse_names(my_rescale_boxes, {"resize_boxes", "postprocess", "ImageTransform", "transform", "interpolate"},
                     "write the rescale yourself")
        for k, (original, min_size, max_size) in enumerate(RESCALE_HIDDEN if hidden else RESCALE_CASES):
            boxes, resized = _rescale_case(original, min_size, max_size, seed=80 + k + 10 * hidden)
            expected = resize_boxes(boxes, resized, original)  # (N, 4)
            got = my_rescale_boxes(boxes.clone(), tuple(resized), tuple(original))
            assert got is not None, "your function returned None"
            got = torch.as_tensor(got, dtype=torch.float32)
            assert got.shape == expected.shape, f"expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
            error = (got - expected).abs()  # (N, 4)
            assert error.max() <= 1e-3, (
                f"caller's image {original[0]}x{original[1]}, resized to {resized[0]}x{resized[1]}: off by up to "
                f"{error[:, 0::2].max():.3f} px in x and {error[:, 1::2].max():.3f} px in y (the whole-image box "
                f"{boxes[-1].tolist()} should come back as {expected[-1].tolist()}, you gave {got[-1].tolist()})")

    return run_check("boxes back to the caller's pixels", compare, hidden=hidden)
