"""mrcnn_teach.failures: each kind of failure is found on a hand-made image, and nothing else is."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from mrcnn_teach.failures import (  # noqa: E402
    covered_fraction,
    draw_failure_gallery,
    find_failures,
    judge_image,
    mask_ious,
    outside_fraction,
    worst_cases,
)

H = W = 64
NAMES = ("background", "square", "circle", "triangle")


def box_mask(box, h=H, w=W):
    x1, y1, x2, y2 = (int(v) for v in box)
    m = torch.zeros(h, w)
    m[y1:y2, x1:x2] = 1
    return m


def target(boxes, labels):
    boxes = torch.tensor(boxes, dtype=torch.float32)
    return dict(boxes=boxes, labels=torch.tensor(labels), masks=torch.stack([box_mask(b) for b in boxes]).to(torch.uint8))


def output(boxes, labels, scores, masks=None):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    masks = masks if masks is not None else torch.stack([box_mask(b) for b in boxes]) if len(boxes) else torch.zeros(0, H, W)
    return dict(boxes=boxes, labels=torch.tensor(labels, dtype=torch.int64), scores=torch.tensor(scores),
                masks=masks[:, None].float())


def test_helpers_by_hand():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 5.0, 15.0, 15.0], [0.0, 0.0, 5.0, 5.0]])
    assert torch.allclose(covered_fraction(a, b), torch.tensor([[0.25, 1.0]]))
    m1, m2 = box_mask((0, 0, 10, 10))[None].bool(), box_mask((5, 0, 15, 10))[None].bool()
    assert torch.allclose(mask_ious(m1, m2), torch.tensor([[50 / 150]]))
    assert outside_fraction(box_mask((0, 0, 10, 10)), torch.tensor([0.0, 0.0, 5.0, 10.0])) == pytest.approx(0.5)


def test_each_verdict():
    tgt = target([[2, 2, 20, 20], [30, 2, 50, 20], [2, 30, 14, 42], [20, 30, 32, 42], [40, 40, 60, 60]],
                 [1, 2, 3, 3, 1])
    cut_mask = box_mask((30, 2, 36, 20))  # the circle's box right, its mask a sliver
    det_masks = torch.stack([box_mask((2, 2, 20, 20)), cut_mask, box_mask((2, 30, 32, 42)), box_mask((2, 2, 20, 20)),
                             box_mask((40, 2, 60, 10))])
    out = output([[2, 2, 20, 20], [30, 2, 50, 20], [1, 29, 33, 43], [2, 2, 20, 20], [40, 2, 60, 10]],
                 [1, 2, 3, 2, 1], [0.9, 0.8, 0.7, 0.6, 0.55], det_masks)
    proposals = torch.tensor([[38.0, 38.0, 60.0, 60.0], [0.0, 0.0, 64.0, 64.0]])
    verdicts, missed = judge_image(out, tgt, proposals)
    assert [v["verdict"] for v in verdicts] == ["right", "cut-off or bad mask", "merged neighbours", "wrong class", "other"]
    assert verdicts[3]["duplicate"] is True and verdicts[3]["gt"] == [0]
    assert verdicts[2]["gt"] == [2, 3]
    # the two triangles under the merged box and the square at the bottom are missed
    assert [m["gt"] for m in missed] == [[2], [3], [4]]
    assert missed[2]["proposal_index"] == 0 and missed[2]["proposal_iou"] == pytest.approx(400 / 484)


def test_score_threshold_and_all_images():
    tgt = target([[2, 2, 20, 20]], [1])
    low = output([[2, 2, 20, 20]], [2], [0.3])  # a wrong class below the threshold: not shown, so: missed
    verdicts, missed = judge_image(low, tgt)
    assert verdicts == [] and len(missed) == 1 and missed[0]["proposal"] is None
    failures = find_failures([low, output([[2, 2, 20, 20]], [2], [0.9])], [tgt, tgt])
    assert [f["image"] for f in failures["missed object"]] == [0]
    assert [f["image"] for f in failures["wrong class"]] == [1] and failures["wrong class"][0]["duplicate"] is False
    worst = worst_cases(failures)
    assert set(worst) == {"missed object", "wrong class"}


def test_gallery_draws_one_column_per_kind():
    tgt = target([[2, 2, 20, 20], [30, 30, 50, 50]], [1, 2])
    img = torch.rand(3, H, W)
    out = output([[2, 2, 20, 20]], [3], [0.9])
    failures = find_failures([out], [tgt], [torch.tensor([[28.0, 28.0, 40.0, 40.0]])])
    fig = draw_failure_gallery(worst_cases(failures), [(img, tgt)], NAMES)
    assert len(fig.axes) == 4  # 2 rows x 2 kinds (wrong class, missed)
    assert "triangle 0.90 on a square" in fig.axes[2].get_title()
    plt.close(fig)
