"""Checks for the exercises of notebooks/10_inference.ipynb.

1. Predict: which pixels a pasted 28x28 mask full of object covers (the truncation, the +1, the pad's
   fade), for zero rings 1, 2 and 3 cells wide and boxes the student did not choose; compared with
   `masks.paste_masks_in_image(..., padding=p)`.
2. Design: score threshold, NMS threshold and class-agnostic NMS under a budget of detections per image,
   scored with notebook 11's COCO evaluation (`evaluate.evaluate_predictions`) on held-out images.
3. Debug: a one-image post-processing with one wrong line; compared with `RoIHeads.postprocess_detections`.
"""

from __future__ import annotations

import contextlib

import torch

from ..masks import paste_masks_in_image
from ..nms import nms
from . import need_function, refuse_names, run_check


# --------------------------------------------------------------------------- 1. Predict: the pasted extent

EXTENT_BOXES = [(67.74, 24.75, 112.96, 68.60),  # the notebook's detection 0
                (10.3, 20.6, 38.3, 48.6),  # section 7's box by hand
                (40.0, 30.0, 100.0, 70.0)]  # whole-pixel corners
PADDINGS = (1, 2, 3)  # the width p of the zero ring: torchvision's 1, and two the notebook does not use
EXTENT_CASES = [(box, p) for box in EXTENT_BOXES for p in PADDINGS]


def _hidden_extent_cases() -> list[tuple]:
    g = torch.Generator().manual_seed(1010)
    xy = 12 + torch.rand(12, 2, generator=g) * 40  # (12, 2)
    wh = 6 + torch.rand(12, 2, generator=g) * 60  # (12, 2) from smaller than the mask to large
    boxes = torch.cat([xy, xy + wh], dim=1)  # (12, 4) the box grown by 34/28 (p = 3) stays inside 128 x 128
    return [(tuple(round(v, 2) for v in b.tolist()), p) for b in boxes for p in PADDINGS]


def _extent(box, padding: int) -> tuple[int, int, int, int] | None:
    """(first column, last column, first row, last row) of the pasted all-ones mask > 0.5; None on a tie."""
    ones = torch.ones(1, 1, 28, 28)
    soft = paste_masks_in_image(ones, torch.tensor([box]), (128, 128), padding=padding)[0, 0]  # (128, 128)
    if ((soft - 0.5).abs() < 1e-3).any():  # a pixel centre on the 0.5 line: either answer is fair
        return None
    on = soft > 0.5  # (128, 128)
    cols, rows = torch.nonzero(on.any(0)).squeeze(1), torch.nonzero(on.any(1)).squeeze(1)
    return int(cols[0]), int(cols[-1]), int(rows[0]), int(rows[-1])


def check_mask_extent(answer, hidden=False) -> bool:
    """answer(box (x1, y1, x2, y2) floats, padding p) -> (first column, last column, first row, last row) of
    the pixels whose pasted value is > 0.5 when the 28x28 mask is 1 everywhere and is pasted with a zero
    ring p cells wide (image 128 x 128), for p = 1, 2, 3."""

    def compare():
        need_function(answer)
        refuse_names(answer, {"paste_masks_in_image", "paste_masks", "interpolate", "grid_sample", "expand_boxes"},
                     "work the extent out from the box (the grown box, its whole pixels, the fade of the zero ring)")
        for box, p in _hidden_extent_cases() if hidden else EXTENT_CASES:
            expected = _extent(box, p)
            if expected is None:
                continue
            got = answer(box, p)
            assert got is not None, "your function returned None"
            got = tuple(int(v) for v in got)
            assert len(got) == 4, "return four whole numbers: (first column, last column, first row, last row)"
            assert got == expected, (f"box {box}, padding {p}: the mask covers columns {expected[0]}..{expected[1]} "
                                     f"and rows {expected[2]}..{expected[3]}, you say {got[0]}..{got[1]} and "
                                     f"{got[2]}..{got[3]}")

    return run_check("where a pasted mask lands", compare, hidden=hidden)


# --------------------------------------------------------------------------- 2. Design: the knobs under a budget

BUDGET = 3.0  # detections per image on average: the mask branch's work, 2.5x less than the defaults'
# The bar: about 0.02 below the best setting under the budget on each set of images (a grid of score
# thresholds 0.05..0.9, NMS thresholds 0.3..0.7, per-class or class-agnostic; measured 2026-12-01 on the
# 700-step cached model). Visible: 100 held-out images of seed 1 (best under the budget 0.67,
# per-class NMS at score 0.6: 0.66, at 0.7: 0.64); hidden: 60 images of seed 7 (best 0.65, at 0.7: 0.62).
# The model trained on another CPU differs in the last bits, and 700 steps make that visible: on
# 2026-12-02's machine mask AP 0.690 against 0.680; the solution (score 0.55, per-class NMS 0.5) scored
# 2.74 detections / 0.671 on the visible set and 2.78 / 0.661 on the hidden one there.
DESIGN_SETS = {False: dict(size=100, seed=1, bar=0.65), True: dict(size=60, seed=7, bar=0.622)}
# The settings section 9 prints: score thresholds x NMS thresholds with per-class NMS, and one
# class-agnostic row. Its score-0.5 rows sit at about 3 detections per image, under the budget for
# some trainings of the model and over it for others, so instead of hoping none passes, the check
# does not take them: the exercise is to measure settings the notebook did not.
SECTION9_SCORES, SECTION9_NMS, SECTION9_AGNOSTIC = (0.05, 0.3, 0.5, 0.7), (0.3, 0.5, 0.7), ((0.05, 0.5),)


@contextlib.contextmanager
def inference_settings(model, score_thresh: float, nms_thresh: float):
    """Run `model` with other box post-processing thresholds, restoring its own afterwards."""
    rh = model.roi_heads
    saved = rh.score_thresh, rh.nms_thresh
    rh.score_thresh, rh.nms_thresh = float(score_thresh), float(nms_thresh)
    try:
        yield model
    finally:
        rh.score_thresh, rh.nms_thresh = saved


def detect(model, images, score_thresh: float, nms_thresh: float, class_agnostic: bool) -> list[dict]:
    """model(images) with the given thresholds; class_agnostic: one more NMS over all classes' boxes at
    nms_thresh on each image's output, so that boxes of different classes suppress each other too."""
    with torch.no_grad(), inference_settings(model, score_thresh, nms_thresh):
        outputs = model(images)
    if class_agnostic:
        outputs = [{k: v[nms(o["boxes"], o["scores"], float(nms_thresh))] for k, v in o.items()} for o in outputs]
    return outputs


def _design_score(settings: dict, size: int, seed: int):
    from ..datasets import ShapesDataset
    from ..evaluate import dataset_to_coco, evaluate_predictions
    from ..pretrained import trained_shapes_model

    model = trained_shapes_model()
    data = ShapesDataset(size, seed=seed)
    outputs = detect(model, [data[i][0] for i in range(size)], settings["score_thresh"], settings["nms_thresh"],
                     settings["class_agnostic"])
    per_image = sum(len(o["scores"]) for o in outputs) / size
    metrics = evaluate_predictions(dataset_to_coco(data), dict(enumerate(outputs)))
    return per_image, metrics["segm"]["AP"]


def check_inference_settings(answer, hidden=False) -> bool:
    """answer() -> dict(score_thresh, nms_thresh, class_agnostic): at most BUDGET detections per image on
    average, and mask AP at least the bar, on held-out images (hidden=True: other images)."""

    def compare():
        need_function(answer)
        settings = answer()
        assert isinstance(settings, dict), "return a dict(score_thresh=..., nms_thresh=..., class_agnostic=...)"
        missing = {"score_thresh", "nms_thresh", "class_agnostic"} - set(settings)
        assert not missing, f"the dict lacks {sorted(missing)}"
        s, t = float(settings["score_thresh"]), float(settings["nms_thresh"])
        assert 0 <= s < 1 and 0 < t <= 1, f"score_thresh in [0, 1) and nms_thresh in (0, 1], got {s}, {t}"
        printed = ({(a, b, False) for a in SECTION9_SCORES for b in SECTION9_NMS}
                   | {(a, b, True) for a, b in SECTION9_AGNOSTIC})
        assert (round(s, 6), round(t, 6), bool(settings["class_agnostic"])) not in printed, (
            f"score_thresh={s}, nms_thresh={t}, class_agnostic={bool(settings['class_agnostic'])} is printed in "
            f"section 9: measure settings between the printed ones and choose among those")
        case = DESIGN_SETS[bool(hidden)]
        per_image, ap = _design_score(dict(settings, score_thresh=s, nms_thresh=t), case["size"], case["seed"])
        where = f"{case['size']} held-out images"
        assert per_image <= BUDGET, (f"{per_image:.2f} detections per image on {where}: over the budget of "
                                     f"{BUDGET} (mask AP {ap:.3f})")
        assert ap >= case["bar"], (f"{per_image:.2f} detections per image, within the budget, but mask AP "
                                   f"{ap:.3f} on {where}, below the bar {case['bar']}: a better setting exists")

    return run_check("inference settings under a budget", compare, hidden=hidden)


# --------------------------------------------------------------------------- 3. Debug: post-processing

def _reference_heads(score_thresh: float, nms_thresh: float, detections_per_img: int):
    from ..roi_heads import RoIHeads

    return RoIHeads(None, None, None, None, None, None, score_thresh=score_thresh, nms_thresh=nms_thresh,
                    detections_per_img=detections_per_img)


def _postprocess_cases(hidden: bool):
    """(class_logits (N, K+1), box_deltas (N, (K+1)*4), proposals (N, 4), image_size, thresholds...) cases:
    proposals stacked on a few objects, most of them background with a confident background logit."""
    g = torch.Generator().manual_seed(1013 if hidden else 1012)
    cases = []
    for n, num_classes, size in (((60, 4, (128, 128)), (90, 3, (96, 128))) if not hidden
                                 else ((120, 5, (128, 160)), (40, 4, (128, 128)))):
        centres = torch.rand(4, 2, generator=g) * 80 + 20  # (4, 2) four objects
        which = torch.randint(0, 4, (n,), generator=g)  # (N,)
        half = 6 + torch.rand(n, 2, generator=g) * 20  # (N, 2)
        c = centres[which] + torch.randn(n, 2, generator=g) * 3  # (N, 2)
        proposals = torch.cat([c - half, c + half], dim=1)  # (N, 4)
        logits = torch.randn(n, num_classes, generator=g) * 2  # (N, K+1)
        logits[:, 0] += 3 * (torch.rand(n, generator=g) < 0.7)  # most proposals: background
        deltas = torch.randn(n, num_classes * 4, generator=g) * 0.5  # (N, (K+1)*4)
        cases.append((logits, deltas, proposals, size, 0.05, 0.5, 20))
    return cases


def check_postprocess(answer, hidden=False) -> bool:
    """answer(class_logits (N, K+1), box_deltas (N, (K+1)*4), proposals (N, 4), image_size, score_thresh,
    nms_thresh, detections_per_img) -> (boxes (D, 4), scores (D,), labels (D,)), as
    RoIHeads.postprocess_detections for one image."""

    def compare():
        need_function(answer)
        refuse_names(answer, {"postprocess_detections", "RoIHeads", "roi_heads"},
                     "fix the buggy copy; the library's post-processing is the reference it is compared with")
        for logits, deltas, proposals, size, s, t, top in _postprocess_cases(hidden):
            boxes, scores, labels = (x[0] for x in _reference_heads(s, t, top).postprocess_detections(
                logits, deltas, [proposals], [size]))  # (D, 4), (D,), (D,)
            got = answer(logits.clone(), deltas.clone(), proposals.clone(), size, s, t, top)
            assert got is not None and len(got) == 3, "return (boxes, scores, labels)"
            b, sc, lab = (torch.as_tensor(x) for x in got)
            assert b.shape == boxes.shape, (f"{len(proposals)} proposals, K+1 = {logits.shape[1]}: {len(scores)} "
                                            f"detections expected, you return {len(b)}")
            assert torch.equal(lab.to(torch.int64), labels), "the right number of detections, not the right classes"
            assert torch.allclose(sc.float(), scores, atol=1e-5), (
                f"the right detections, not the right scores: expected {[round(v, 3) for v in scores[:3].tolist()]}, "
                f"got {[round(v, 3) for v in sc[:3].tolist()]} first")
            assert torch.allclose(b.float(), boxes, atol=1e-3), "the right scores and classes, not the right boxes"

    return run_check("post-processing of one image", compare, hidden=hidden)
