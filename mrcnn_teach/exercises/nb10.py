"""Checks for the exercises of notebooks/10_inference.ipynb (per-class NMS, decoding one class, pasting a mask).

Each check calls the student's function on inputs of our choosing and compares it with the library:
`nms.batched_nms` for the per-class NMS, `BoxCoder.decode` for the boxes of one class, and
`masks.paste_masks_in_image` followed by the 0.5 threshold for the pasted mask.
"""

from __future__ import annotations

import math

import torch

from ..boxes import BoxCoder
from ..masks import paste_masks_in_image
from ..nms import batched_nms
from . import close, need_function, run_check


def _clustered_boxes(g: torch.Generator, num_objects: int, per_object: int) -> torch.Tensor:
    """Stacks of jittered copies around a few objects, as a detector produces: (num_objects * per_object, 4)."""
    xy = torch.rand(num_objects, 2, generator=g) * 90  # (O, 2)
    wh = 12 + torch.rand(num_objects, 2, generator=g) * 40  # (O, 2)
    objects = torch.cat([xy, xy + wh], dim=1)  # (O, 4)
    jitter = torch.randn(num_objects, per_object, 4, generator=g) * 3  # (O, P, 4)
    boxes = (objects[:, None, :] + jitter).reshape(-1, 4)  # (O*P, 4)
    x1y1 = torch.minimum(boxes[:, :2], boxes[:, 2:] - 1).clamp(min=0)  # (n, 2) keep x1 < x2, coordinates >= 0
    return torch.cat([x1y1, torch.maximum(boxes[:, 2:], x1y1 + 1)], dim=1)  # (n, 4)


def check_per_class_nms(answer) -> bool:
    """answer(boxes (N, 4), scores (N,), labels (N,), iou_threshold) -> kept indices (K,) by decreasing score."""

    def compare():
        need_function(answer)
        g = torch.Generator().manual_seed(1010)
        for num_objects, per_object, num_classes, thr in ((3, 8, 3, 0.5), (6, 12, 4, 0.3), (2, 20, 2, 0.7)):
            boxes = _clustered_boxes(g, num_objects, per_object)  # (N, 4)
            n = len(boxes)
            scores = torch.rand(n, generator=g)  # (N,) distinct with probability 1
            # Every stack gets several classes, so boxes of different classes overlap heavily: a class-blind
            # NMS would drop them, per-class NMS must keep them.
            labels = 1 + torch.randint(0, num_classes, (n,), generator=g)  # (N,)
            expected = batched_nms(boxes, scores, labels, thr)  # (K,)
            got = answer(boxes.clone(), scores.clone(), labels.clone(), thr)
            assert got is not None, "your function returned None"
            got = torch.as_tensor(got)
            assert got.dim() == 1, f"expected a 1-D tensor of indices, got shape {tuple(got.shape)}"
            got = got.to(torch.int64)
            if set(got.tolist()) != set(expected.tolist()):
                raise AssertionError(f"{n} boxes, {num_classes} classes, IoU {thr}: expected {len(expected)} kept "
                                     f"boxes, you keep {len(got)} ({len(set(got.tolist()) - set(expected.tolist()))} "
                                     f"too many, {len(set(expected.tolist()) - set(got.tolist()))} missing); "
                                     f"is NMS run separately for each class?")
            assert torch.equal(got, expected), "the right boxes, but not in order of decreasing score"

    return run_check("per-class NMS", compare)


def check_decode_class(answer) -> bool:
    """answer(box_deltas (N, (K+1)*4), proposals (N, 4), k) -> (N, 4) boxes of class k, weights (10, 10, 5, 5)."""
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))

    def compare():
        need_function(answer)
        g = torch.Generator().manual_seed(1011)
        for n, num_classes in ((10, 4), (25, 81)):
            xy = torch.rand(n, 2, generator=g) * 100  # (N, 2)
            proposals = torch.cat([xy, xy + 8 + torch.rand(n, 2, generator=g) * 60], dim=1)  # (N, 4)
            deltas = torch.randn(n, num_classes * 4, generator=g)  # (N, (K+1)*4)
            deltas[0, 4 * 1 + 2] = 30.0  # dw / 5 = 6 > log(1000/16): the cap must apply
            expected_all = coder.decode(deltas.reshape(n, num_classes, 4), proposals)  # (N, K+1, 4)
            for k in (1, num_classes - 1):
                got = answer(deltas.clone(), proposals.clone(), k)
                assert got is not None, "your function returned None"
                got = torch.as_tensor(got)
                expected = expected_all[:, k]  # (N, 4)
                assert got.shape == expected.shape, f"expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
                if not close(got, expected, atol=1e-3):
                    if k == 1 and not close(got[0], expected[0], atol=1e-3) and close(got[1:], expected[1:], atol=1e-3):
                        raise AssertionError(f"row 0 of class 1 has dw = 30 / 5 = 6: cap it at log(1000/16) = "
                                             f"{math.log(1000 / 16):.4f} before exp")
                    raise AssertionError(f"K+1 = {num_classes}, class {k}: wrong boxes; first row expected "
                                         f"{[round(v, 3) for v in expected[0].tolist()]}, got "
                                         f"{[round(v, 3) for v in got[0].tolist()]}")

    return run_check("decode the boxes of one class", compare)


def _smooth_masks(g: torch.Generator, n: int, M: int = 28) -> torch.Tensor:
    """Blob-like probability maps (n, M, M), like a mask head's: a sigmoid of an upsampled random field."""
    coarse = torch.randn(n, 1, 5, 5, generator=g) * 4 + 1  # (n, 1, 5, 5)
    field = torch.nn.functional.interpolate(coarse, size=(M, M), mode="bilinear", align_corners=False)  # (n, 1, M, M)
    return field[:, 0].sigmoid()  # (n, M, M)


def check_paste_one_mask(answer) -> bool:
    """answer(mask (28, 28), box (4,), image_size (h, w)) -> (h, w) bool, the pasted mask thresholded at 0.5."""

    def compare():
        need_function(answer)
        g = torch.Generator().manual_seed(1012)
        boxes = torch.tensor([[10.3, 20.6, 38.3, 48.6],  # the notebook's example box
                              [40.0, 30.0, 100.0, 70.0],  # whole-pixel corners
                              [0.4, 0.7, 25.9, 31.2],  # at the top-left corner: the grown box starts before 0
                              [90.2, 70.8, 127.6, 95.1],  # at the right edge: the grown box sticks out
                              [-6.5, 50.3, 20.1, 120.9],  # partly outside the image
                              [60.6, 60.2, 63.9, 65.1],  # a tiny box, smaller than the mask
                              [5.5, 10.5, 120.5, 90.5]])  # a big one
        masks = _smooth_masks(g, len(boxes))  # (B, 28, 28)
        masks[1] = 1.0  # a box full of object: the border is decided by the padding alone
        for size in ((128, 128), (96, 128)):
            reference = paste_masks_in_image(masks[:, None], boxes, size)[:, 0]  # (B, h, w) probabilities
            for n in range(len(boxes)):
                got = answer(masks[n].clone(), boxes[n].clone(), size)
                assert got is not None, "your function returned None"
                got = torch.as_tensor(got)
                assert got.shape == size, f"box {boxes[n].tolist()}: expected shape {size}, got {tuple(got.shape)}"
                assert got.dtype == torch.bool, f"return a boolean mask (probability > 0.5), got dtype {got.dtype}"
                expected = reference[n] > 0.5  # (h, w)
                # A pixel within float rounding of 0.5 may go either way.
                wrong = (got != expected) & ((reference[n] - 0.5).abs() > 1e-4)  # (h, w)
                if wrong.any():
                    raise AssertionError(
                        f"box {[round(v, 1) for v in boxes[n].tolist()]}, image {size}: {int(wrong.sum())} of "
                        f"{int(expected.sum())} mask pixels wrong (did you pad, grow the box by 30/28, truncate, "
                        f"and resize to x2 - x1 + 1 by y2 - y1 + 1?)")

    return run_check("paste one mask", compare)
