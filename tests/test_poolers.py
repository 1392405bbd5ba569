"""poolers.py against torchvision: FPN Eq. 1 level assignment and multi-level RoIAlign."""

from collections import OrderedDict

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.poolers import initLevelMapper

from mrcnn_teach.kernels import TEACHING, TORCHVISION
from mrcnn_teach.poolers import MultiLevelRoIAlign, assign_levels, infer_scale


def random_boxes(n, max_xy, min_side, max_side, generator):
    """n boxes with top-left in [0, max_xy) and sides log-uniform in [min_side, max_side]."""
    xy = torch.rand(n, 2, generator=generator) * max_xy  # (n, 2)
    log_wh = torch.empty(n, 2).uniform_(torch.log(torch.tensor(min_side)).item(),
                                        torch.log(torch.tensor(max_side)).item(), generator=generator)  # (n, 2)
    return torch.cat([xy, xy + log_wh.exp()], dim=1)  # (n, 4)


def test_assign_levels_matches_torchvision_level_mapper():
    g = torch.Generator().manual_seed(0)
    boxes = random_boxes(500, 300, 0.5, 2000, g)  # sizes from sub-pixel to far above 224 * 2
    # Exact level boundaries (sqrt(wh) = 56, 112, 224, 448): eps decides them.
    edges = torch.tensor([[0, 0, 56, 56], [10, 10, 122, 122], [0, 0, 224, 224], [5, 5, 453, 453],
                          [0, 0, 112, 448], [0, 0, 1, 1], [0, 0, 5000, 5000],
                          # sqrt(wh) = 224 up to float round-off: 4 + log2(...) = 3.9999998, eps lifts it to 4
                          [66.30107879638672, 93.69860076904297, 273.351318359375, 336.035888671875]])
    boxes = torch.cat([boxes, edges])  # (508, 4)
    ours = assign_levels(boxes)
    theirs = initLevelMapper(2, 5)([boxes])
    assert ours.dtype == torch.int64
    assert torch.equal(ours, theirs)
    # The rule itself on the hand-made boxes, e.g. sqrt(wh) = 56: floor(4 + log2(56 / 224)) = 2 -> P2 (index 0).
    assert ours[-8:].tolist() == [0, 1, 2, 3, 2, 0, 3, 2]
    assert set(ours.tolist()) == {0, 1, 2, 3}  # clamping used at both ends


def test_assign_levels_other_range_and_bad_shape():
    g = torch.Generator().manual_seed(1)
    boxes = random_boxes(200, 100, 1, 1000, g)
    assert torch.equal(assign_levels(boxes, k_min=3, k_max=6), initLevelMapper(3, 6)([boxes]))
    with pytest.raises(ValueError, match="shape"):
        assign_levels(torch.zeros(3, 5))


def test_infer_scale_rounds_to_a_power_of_two():
    assert infer_scale(14, 53) == 0.25  # odd size: 53 / 4 = 13.25, rounded up by the convs
    assert infer_scale(4, 53) == 1 / 16
    assert infer_scale(2, 53) == 1 / 32


def make_pyramid(generator, channels=3):
    """P2..P6 of an odd-size padded batch of 2 images (53 x 75), and the two images' own sizes."""
    sizes = [(14, 19), (7, 10), (4, 5), (2, 3), (1, 2)]  # ceil(53 / stride), ceil(75 / stride)
    features = [torch.randn(2, channels, h, w, generator=generator) for h, w in sizes]
    image_sizes = [(53, 70), (41, 75)]
    return features, image_sizes


@pytest.mark.parametrize("kernels", [TEACHING, TORCHVISION], ids=lambda k: k.name)
@pytest.mark.parametrize("output_size,sampling_ratio", [(7, 2), (5, 0)])
def test_multilevel_roi_align_matches_torchvision(kernels, output_size, sampling_ratio):
    g = torch.Generator().manual_seed(2)
    features, image_sizes = make_pyramid(g)
    # Boxes from 1 px to larger than the image, so that all four levels are used (P5 needs sqrt(wh) >= 448).
    huge = torch.tensor([[-30.0, -20.0, 500.0, 480.0], [10.0, 5.0, 700.0, 300.0]])  # P5
    boxes = [torch.cat([random_boxes(28, 40, 1, 600, g), huge]), random_boxes(25, 40, 1, 600, g)]
    assert set(assign_levels(torch.cat(boxes)).tolist()) == {0, 1, 2, 3}

    ours = MultiLevelRoIAlign(output_size, sampling_ratio, kernels=kernels)(features, boxes, image_sizes)
    theirs_pooler = MultiScaleRoIAlign(["0", "1", "2", "3"], output_size, sampling_ratio)
    feats = OrderedDict([(str(i), f) for i, f in enumerate(features[:4])] + [("pool", features[4])])
    theirs = theirs_pooler(feats, boxes, image_sizes)
    assert ours.shape == (55, 3, output_size, output_size)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    assert theirs_pooler.scales == [0.25, 0.125, 1 / 16, 1 / 32]


def test_multilevel_roi_align_keeps_input_order_and_handles_empty_images():
    g = torch.Generator().manual_seed(3)
    features, image_sizes = make_pyramid(g)
    pooler = MultiLevelRoIAlign(7, 2, kernels=TORCHVISION)
    boxes = random_boxes(12, 40, 2, 500, g)
    both = pooler(features, [boxes, torch.zeros(0, 4)], image_sizes)
    assert both.shape == (12, 3, 7, 7)
    # Pooling the boxes one by one gives the same rows: row order = input order.
    one_by_one = torch.cat([pooler(features, [b[None], torch.zeros(0, 4)], image_sizes) for b in boxes])
    torch.testing.assert_close(both, one_by_one)
    assert pooler(features, [torch.zeros(0, 4), torch.zeros(0, 4)], image_sizes).shape == (0, 3, 7, 7)


def test_multilevel_roi_align_rejects_bad_input():
    g = torch.Generator().manual_seed(4)
    features, image_sizes = make_pyramid(g)
    pooler = MultiLevelRoIAlign(7, 2)
    good = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    with pytest.raises(ValueError, match="box 1 of image 1"):
        pooler(features, [good, torch.tensor([[0.0, 0.0, 5.0, 5.0], [9.0, 0.0, 3.0, 5.0]])], image_sizes)
    with pytest.raises(ValueError, match="2 images"):
        pooler(features, [good], image_sizes)
    with pytest.raises(ValueError, match="P2, P3, P4, P5"):
        pooler(features[:3], [good, good], image_sizes)
