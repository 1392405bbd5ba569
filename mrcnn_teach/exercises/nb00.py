"""Checks for the exercises of notebooks/00_tour.ipynb (a tour of the whole model).

Each check compares the student's answer with the library itself, on a model and inputs the
notebook does not show: the shapes of a variant of `shapes_tiny` run on a zero batch, the
library's `flatten_head_outputs` on random maps, and `model(images)` on two images of different
sizes.
"""

from __future__ import annotations

import torch

from . import close, refuse_names, run_check

# Exercise 1: the variant whose shapes the student predicts (the notebook states the same numbers).
VARIANT = dict(fpn_channels=128, aspect_ratios=((0.5, 1.0, 2.0),) * 5, num_classes=6)
VARIANT_BATCH = (2, 3, 96, 160)  # (B, 3, H, W), already padded
VARIANT_PROPOSALS = 100  # per image
VARIANT_DETECTIONS = 7  # in all
SHAPE_KEYS = ("P6", "objectness_P2", "deltas_P6", "anchors", "class_logits", "box_deltas", "mask_logits")


def _variant_shapes() -> dict[str, tuple[int, ...]]:
    """The shapes Exercise 1 asks for, measured by running the variant's modules."""
    from ..configs import build_maskrcnn

    torch.manual_seed(0)
    model = build_maskrcnn("shapes_tiny", **VARIANT).eval()
    B, _, H, W = VARIANT_BATCH
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        features = model.backbone(torch.zeros(VARIANT_BATCH))  # [P2..P6]
        objectness, deltas = model.rpn.head(features)  # [(B, k, h, w)], [(B, 4k, h, w)]
        anchors = model.rpn.anchor_generator((H, W), [tuple(P.shape[-2:]) for P in features])  # (A, 4)
        xy = torch.rand(B, VARIANT_PROPOSALS, 2, generator=g) * 60  # (B, N, 2)
        proposals = list(torch.cat([xy, xy + 20], dim=2))  # B x (N, 4)
        sizes = [(H, W)] * B
        class_logits, box_deltas = model.roi_heads.box_logits(features, proposals, sizes)  # (BN, K+1), (BN, 4(K+1))
        detections = [proposals[0][:4], proposals[1][:VARIANT_DETECTIONS - 4]]  # D = 7 boxes over both images
        mask_logits = model.roi_heads.mask_logits(features, detections, sizes)  # (D, K+1, 28, 28)
    return {"P6": tuple(features[-1].shape), "objectness_P2": tuple(objectness[0].shape),
            "deltas_P6": tuple(deltas[-1].shape), "anchors": (anchors.shape[0],),
            "class_logits": tuple(class_logits.shape), "box_deltas": tuple(box_deltas.shape),
            "mask_logits": tuple(mask_logits.shape)}


def check_variant_shapes(predict_shapes) -> bool:
    """predict_shapes() -> {name: shape tuple (or int for "anchors")} for the variant of Exercise 1."""

    def compare():
        got = predict_shapes()
        assert isinstance(got, dict), f"return a dict with the keys {list(SHAPE_KEYS)}, got {type(got).__name__}"
        missing = [key for key in SHAPE_KEYS if key not in got]
        assert not missing, f"your dict lacks {missing}"
        expected = _variant_shapes()
        wrong = []
        for key in SHAPE_KEYS:
            value = got[key]
            value = (int(value),) if isinstance(value, int) else tuple(int(v) for v in value)
            if value != expected[key]:
                wrong.append(key)
        assert not wrong, f"not yet right: {wrong} (the others are right)"

    return run_check("shapes of the variant", compare)


def _random_maps(seed: int, k: int, sizes, B: int = 2):
    g = torch.Generator().manual_seed(seed)
    objectness = [torch.randn(B, k, h, w, generator=g) for h, w in sizes]  # [(B, k, h, w)]
    deltas = [torch.randn(B, 4 * k, h, w, generator=g) for h, w in sizes]  # [(B, 4k, h, w)]
    return objectness, deltas


def check_flatten(my_flatten) -> bool:
    """my_flatten(objectness_maps, delta_maps) -> (B, A), (B, A, 4), [h*w*k] as rpn.flatten_head_outputs."""
    from ..rpn import flatten_head_outputs

    def compare():
        refuse_names(my_flatten, {"flatten_head_outputs"},
                     "the check compares with it, so calling it proves nothing; write the reordering yourself")
        for seed, k, sizes in ((1, 3, [(8, 6), (4, 3), (2, 2)]), (2, 9, [(5, 7), (3, 4)]), (3, 1, [(4, 4)])):
            objectness, deltas = _random_maps(seed, k, sizes)
            expected = flatten_head_outputs(objectness, deltas)
            got = my_flatten([o.clone() for o in objectness], [d.clone() for d in deltas])
            assert got is not None and len(got) == 3, "return (objectness, deltas, num_per_level)"
            where = f"with k = {k} anchors per position"
            assert close(got[0], expected[0], atol=0), f"{where}: the objectness is in the wrong order"
            assert close(got[1], expected[1], atol=0), f"{where}: the deltas are in the wrong order"
            assert [int(n) for n in got[2]] == expected[2], f"{where}: num_per_level should be {expected[2]}"

    return run_check("RPN outputs in the anchors' order", compare)


def _two_images():
    """A 128x128 image and a 64x96 crop of another (resized by the transform to 85x128)."""
    from ..datasets import ShapesDataset

    data = ShapesDataset(4, seed=5)
    return [data[0][0], data[3][0][:, 20:84, 10:106]]  # (3, 128, 128), (3, 64, 96)


def _forbid(module, name):
    def refuse(*args, **kwargs):
        raise AssertionError(f"call the parts of {name} yourself, not {name} as a whole")

    module.forward = refuse


def check_unrolled(detect_by_hand) -> bool:
    """detect_by_hand(model, images) -> model(images), without calling model, model.rpn or model.roi_heads."""
    from ..configs import build_maskrcnn

    def compare():
        torch.manual_seed(0)
        model = build_maskrcnn("shapes_tiny").eval()  # random weights: every image still has detections
        images = _two_images()
        with torch.no_grad():
            expected = model([img.clone() for img in images])
            for module, name in ((model, "model"), (model.rpn, "model.rpn"), (model.roi_heads, "model.roi_heads")):
                _forbid(module, name)
            got = detect_by_hand(model, [img.clone() for img in images])
        assert got is not None and len(got) == len(images), f"return one dict per image ({len(images)})"
        for i, (g, e) in enumerate(zip(got, expected)):
            assert len(e["boxes"]) > 0
            for key in ("boxes", "labels", "scores", "masks"):
                assert key in g, f"image {i}: your dict has no {key!r}"
                assert tuple(g[key].shape) == tuple(e[key].shape), \
                    f"image {i} ({tuple(images[i].shape[-2:])}): {key} has shape {tuple(g[key].shape)}, " \
                    f"expected {tuple(e[key].shape)}"
                assert close(g[key], e[key], atol=1e-5), f"image {i}: {key} differ from model(images)"

    return run_check("the forward pass by hand, two images", compare)
