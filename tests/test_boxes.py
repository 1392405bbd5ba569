"""boxes.py against torchvision.ops box functions and torchvision's BoxCoder."""

import math

import pytest
import torch
import torchvision
from torchvision.models.detection._utils import BoxCoder as TvBoxCoder

from mrcnn_teach.boxes import BoxCoder, box_area, box_iou, clip_boxes_to_image, remove_small_boxes


def random_boxes(n, seed, scale=100.0, max_size=50.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * scale  # (n, 2)
    wh = torch.rand(n, 2, generator=g) * max_size + 0.5  # (n, 2)
    return torch.cat([xy, xy + wh], dim=1)  # (n, 4)


def test_box_area_matches_torchvision():
    boxes = random_boxes(20, 0)
    boxes[3] = torch.tensor([5.0, 5.0, 5.0, 9.0])  # zero width
    boxes[4] = torch.tensor([5.0, 5.0, 3.0, 9.0])  # degenerate: negative area, kept as is
    torch.testing.assert_close(box_area(boxes), torchvision.ops.box_area(boxes), rtol=0, atol=0)
    assert box_area(boxes)[3] == 0 and box_area(boxes)[4] == -8
    ints = torch.tensor([[0, 0, 3, 4], [1, 1, 2, 2]])
    assert torch.equal(box_area(ints), torchvision.ops.box_area(ints))
    assert box_area(torch.zeros(0, 4)).shape == (0,)


def test_box_iou_matches_torchvision_and_known_values():
    a, b = random_boxes(13, 1), random_boxes(7, 2)
    torch.testing.assert_close(box_iou(a, b), torchvision.ops.box_iou(a, b), rtol=0, atol=0)
    known = box_iou(torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[0.0, 0, 2, 2], [1, 1, 3, 3], [2, 0, 4, 2]]))
    torch.testing.assert_close(known, torch.tensor([[1.0, 1 / 7, 0.0]]))  # same, 1/(4+4-1), touching
    assert box_iou(torch.zeros(0, 4), b).shape == (0, 7)
    assert box_iou(a, torch.zeros(0, 4)).shape == (13, 0)


def test_clip_boxes_to_image_matches_torchvision():
    boxes = random_boxes(30, 3, scale=160.0) - 30  # many partly or fully outside a 100x80 image
    for shape in [(30, 4), (10, 3, 4)]:
        b = boxes.reshape(shape)
        torch.testing.assert_close(clip_boxes_to_image(b, (80, 100)), torchvision.ops.clip_boxes_to_image(b, (80, 100)))
    clipped = clip_boxes_to_image(torch.tensor([[-5.0, -5, 200, 300]]), (80, 100))
    assert clipped.tolist() == [[0.0, 0.0, 100.0, 80.0]]


def test_remove_small_boxes_matches_torchvision():
    boxes = random_boxes(50, 4, max_size=4.0)
    boxes[0] = torch.tensor([0.0, 0, 2, 2])  # exactly min_size: kept (>=)
    boxes[1] = torch.tensor([0.0, 0, 2, 1.999])  # just below in height: removed
    for min_size in [0.0, 1e-3, 2.0, 3.0]:
        ours = remove_small_boxes(boxes, min_size)
        assert ours.dtype == torch.int64
        assert torch.equal(ours, torchvision.ops.remove_small_boxes(boxes, min_size))
    keep = remove_small_boxes(boxes, 2.0).tolist()
    assert 0 in keep and 1 not in keep


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_box_coder_matches_torchvision(weights):
    anchors, gt = random_boxes(40, 5), random_boxes(40, 6)
    ours, theirs = BoxCoder(weights), TvBoxCoder(weights)
    torch.testing.assert_close(ours.encode(gt, anchors), theirs.encode_single(gt, anchors), rtol=0, atol=0)

    deltas = torch.randn(40, 4, generator=torch.Generator().manual_seed(7)) * 3  # (40, 4)
    torch.testing.assert_close(ours.decode(deltas, anchors), theirs.decode_single(deltas, anchors), rtol=0, atol=0)
    per_class = torch.randn(40, 5, 4, generator=torch.Generator().manual_seed(8))  # (40, 5 classes, 4)
    decoded = ours.decode(per_class, anchors)
    assert decoded.shape == (40, 5, 4)
    torch.testing.assert_close(decoded, theirs.decode(per_class.reshape(40, 20), [anchors]), rtol=0, atol=0)
    # decode undoes encode
    torch.testing.assert_close(ours.decode(ours.encode(gt, anchors), anchors), gt, rtol=1e-5, atol=1e-4)


def test_box_coder_known_values_and_clamp():
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    anchor = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), size (10, 20)
    gt = torch.tensor([[2.0, 4.0, 22.0, 24.0]])  # centre (12, 14), size (20, 20)
    expected = torch.tensor([[10 * 7 / 10, 10 * 4 / 20, 5 * math.log(2.0), 5 * math.log(1.0)]])
    torch.testing.assert_close(coder.encode(gt, anchor), expected)
    # A huge dw is capped at log(1000/16): the box grows at most 62.5x instead of overflowing to inf.
    huge = torch.tensor([[0.0, 0.0, 5 * 1000.0, 5 * 1000.0]])
    out = coder.decode(huge, anchor)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0, 2] - out[0, 0], torch.tensor(10 * 1000 / 16))
    torch.testing.assert_close(out, TvBoxCoder((10.0, 10.0, 5.0, 5.0)).decode_single(huge, anchor))


def test_box_coder_empty_and_bad_input():
    coder = BoxCoder()
    assert coder.encode(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)
    assert coder.decode(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)
    assert coder.decode(torch.zeros(0, 3, 4), torch.zeros(0, 4)).shape == (0, 3, 4)
    with pytest.raises(ValueError, match="deltas"):
        coder.decode(torch.zeros(5, 4), torch.zeros(4, 4))
    with pytest.raises(ValueError, match="same shape"):
        coder.encode(torch.zeros(5, 4), torch.zeros(4, 4))
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        box_iou(torch.zeros(3, 5), torch.zeros(3, 4))
