"""AnchorGenerator against torchvision's twin, plus the geometry it promises."""

import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList

from mrcnn_teach.anchors import AnchorGenerator, anchor_coverage, make_cell_anchors
from mrcnn_teach.boxes import box_iou

DEFAULT_SIZES = ((32,), (64,), (128,), (256,), (512,))
DEFAULT_RATIOS = ((0.5, 1.0, 2.0),) * 5
SMALL_SIZES = ((8,), (16,), (32,), (64,), (128,))


def pyramid_sizes(H, W):
    """Feature sizes of P2..P6 for a padded image (H, W): ResNet maps n -> ceil(n/2) per stride-2 layer."""
    sizes = []
    h, w = H, W
    for _ in range(2):  # stem: conv1 and max pool
        h, w = -(-h // 2), -(-w // 2)
    sizes.append((h, w))  # P2
    for _ in range(4):  # res3, res4, res5, then P6
        h, w = -(-h // 2), -(-w // 2)
        sizes.append((h, w))
    return sizes


def torchvision_anchors(sizes, ratios, H, W, feature_sizes, dtype=torch.float32):
    tv = TVAnchorGenerator(sizes, ratios)
    images = ImageList(torch.zeros(2, 3, H, W, dtype=dtype), [(H, W), (H - 5, W - 7)])
    feats = [torch.zeros(2, 1, h, w, dtype=dtype) for h, w in feature_sizes]
    per_image = tv(images, feats)
    assert torch.equal(per_image[0], per_image[1])  # torchvision also gives every image the same anchors
    return per_image[0], tv


@pytest.mark.parametrize(
    "sizes,ratios,H,W",
    [
        (DEFAULT_SIZES, DEFAULT_RATIOS, 96, 160),  # padded to /32, non-square
        (DEFAULT_SIZES, DEFAULT_RATIOS, 97, 131),  # not /32: strides from integer division differ per level
        (SMALL_SIZES, DEFAULT_RATIOS, 64, 96),
        (SMALL_SIZES, DEFAULT_RATIOS, 61, 83),
    ],
)
def test_matches_torchvision(sizes, ratios, H, W):
    feature_sizes = pyramid_sizes(H, W)
    expected, tv = torchvision_anchors(sizes, ratios, H, W, feature_sizes)
    ours = AnchorGenerator(sizes, ratios)
    anchors = ours((H, W), feature_sizes)
    assert anchors.dtype == torch.float32
    assert torch.equal(anchors, expected)
    assert ours.num_anchors_per_location() == tv.num_anchors_per_location() == [3] * 5
    for mine, theirs in zip(ours.cell_anchors, tv.cell_anchors):
        assert torch.equal(mine, theirs)
    A = sum(h * w * k for (h, w), k in zip(feature_sizes, ours.num_anchors_per_location()))
    assert anchors.shape == (A, 4)


def test_matches_torchvision_float64_and_multi_scale_levels():
    # Several sizes per level (Faster R-CNN's original single-level setup generalised): k = 2 * 3 = 6.
    sizes = ((16, 24), (48, 64))
    ratios = ((0.5, 1.0, 2.0), (0.25, 1.0, 3.0))
    feature_sizes = [(9, 13), (5, 7)]
    expected, tv = torchvision_anchors(sizes, ratios, 36, 52, feature_sizes, dtype=torch.float64)
    ours = AnchorGenerator(sizes, ratios)
    anchors = ours((36, 52), feature_sizes, dtype=torch.float64)
    assert anchors.dtype == torch.float64
    assert torch.equal(anchors, expected)
    assert ours.num_anchors_per_location() == [6, 6]
    assert anchors.shape == (9 * 13 * 6 + 5 * 7 * 6, 4)


def test_cell_anchors_are_rounded_and_keep_the_area():
    cell = make_cell_anchors((32,), (0.5, 1.0, 2.0))
    # h = 32*sqrt(r), w = 32/sqrt(r); 32/sqrt(0.5)/2 = 22.63 -> 23, 32*sqrt(0.5)/2 = 11.31 -> 11.
    expected = torch.tensor([[-23.0, -11.0, 23.0, 11.0], [-16.0, -16.0, 16.0, 16.0], [-11.0, -23.0, 11.0, 23.0]])
    assert torch.equal(cell, expected)
    w, h = cell[:, 2] - cell[:, 0], cell[:, 3] - cell[:, 1]
    assert torch.allclose(h / w, torch.tensor([0.5, 1.0, 2.0]), rtol=0.05)  # ratio = h / w, up to rounding
    assert torch.allclose(w * h, torch.full((3,), 1024.0), rtol=0.02)  # area = size^2, up to rounding


def test_order_and_centres_lie_on_the_stride_grid():
    H, W = 64, 96
    feature_sizes = pyramid_sizes(H, W)  # [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]
    gen = AnchorGenerator(SMALL_SIZES, DEFAULT_RATIOS)
    anchors = gen((H, W), feature_sizes)
    start = 0
    for (h, w), cell in zip(feature_sizes, gen.cell_anchors):
        k = cell.shape[0]
        level = anchors[start:start + h * w * k].reshape(h, w, k, 4)  # level, then y, then x, then k
        start += h * w * k
        sy, sx = H // h, W // w
        centres_x = (level[..., 0] + level[..., 2]) / 2  # (h, w, k)
        centres_y = (level[..., 1] + level[..., 3]) / 2  # (h, w, k)
        xs = (torch.arange(w) * sx).float()[None, :, None].expand(h, w, k)
        ys = (torch.arange(h) * sy).float()[:, None, None].expand(h, w, k)
        assert torch.equal(centres_x, xs)
        assert torch.equal(centres_y, ys)
        # every cell holds the same k boxes, just shifted by its grid position
        shifts = torch.stack([xs, ys, xs, ys], dim=-1)  # (h, w, k, 4)
        assert torch.equal(level - shifts, cell.expand(h, w, k, 4))
    assert start == anchors.shape[0]


def test_p6_stride_uses_integer_division():
    # P6 of a 96x160 image is 2x3 (= ceil(3/2) x ceil(5/2)): stride 96//2 = 48 and 160//3 = 53, not 64.
    gen = AnchorGenerator(((32,),), ((1.0,),))
    anchors = gen((96, 160), [(2, 3)])
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2  # (6, 2)
    assert torch.equal(centres[:, 0], torch.tensor([0.0, 53.0, 106.0, 0.0, 53.0, 106.0]))
    assert torch.equal(centres[:, 1], torch.tensor([0.0, 0.0, 0.0, 48.0, 48.0, 48.0]))


def test_bad_input_raises():
    gen = AnchorGenerator()
    with pytest.raises(ValueError, match="5 levels"):
        gen((64, 64), [(16, 16), (8, 8)])
    with pytest.raises(ValueError, match="feature map 1"):
        gen((64, 64), [(16, 16), (128, 8), (4, 4), (2, 2), (1, 1)])
    with pytest.raises(ValueError, match="aspect_ratios"):
        AnchorGenerator(DEFAULT_SIZES, DEFAULT_RATIOS[:3])


def test_anchor_coverage_equals_brute_force():
    # boxes of two images of different sizes pooled; a small chunk so that several chunks are merged
    torch.manual_seed(0)
    xy = torch.rand(40, 2) * torch.tensor([140.0, 80.0])  # (40, 2) top-left corners
    wh = 4 + torch.rand(40, 2) * 60  # (40, 2)
    boxes = torch.cat([xy, xy + wh], dim=1)  # (40, 4)
    sizes, ratios = ((12, 17), (24, 34), (48, 68), (96, 136), (192, 272)), ((0.5, 1.0),) * 5
    fit = anchor_coverage(boxes, sizes, ratios, image_size=(96, 160), threshold=0.6, chunk=7)
    feature_sizes = pyramid_sizes(96, 160)  # what the ResNet-FPN makes: ceil(H / 2^l)
    anchors = AnchorGenerator(sizes, ratios)((96, 160), feature_sizes)  # (A, 4)
    iou = box_iou(boxes, anchors)  # (40, A)
    per_level = [h * w * 4 for h, w in feature_sizes]
    level_of = torch.repeat_interleave(torch.arange(5), torch.tensor(per_level))  # (A,)
    assert fit.anchors_per_level == per_level and fit.num_anchors == anchors.shape[0]
    assert torch.equal(fit.best_iou, iou.max(dim=1).values)
    assert torch.equal(fit.best_level, level_of[iou.argmax(dim=1)])
    positive = (iou >= 0.6).any(dim=0)  # (A,)
    assert fit.positive_per_level == [int(positive[level_of == l].sum()) for l in range(5)]
    assert fit.covered == pytest.approx(float((iou.max(dim=1).values >= 0.6).float().mean()))
    assert 0 < fit.covered < 1  # the random boxes are neither all covered nor none


def test_anchor_coverage_of_boxes_placed_by_hand():
    # shapes_tiny's P3 holds a 40-px square anchor at (64, 64): a box equal to it has IoU 1 there; the
    # same box moved 2 px in x and y (half of P2's stride) is no longer on any 40-px anchor's centre
    sizes, ratios = ((16, 20, 25), (32, 40, 51), (64, 81, 102), (128, 161, 203), (256, 323, 406)), ((1.0,),) * 5
    on_anchor = torch.tensor([[44.0, 44.0, 84.0, 84.0]])  # (1, 4)
    half_stride_off = torch.tensor([[46.0, 46.0, 86.0, 86.0]])  # (1, 4) 40 px, 2 px = half of P2's stride
    fit = anchor_coverage(torch.cat([on_anchor, half_stride_off]), sizes, ratios)
    assert fit.num_anchors == 4092
    assert fit.best_iou[0] == 1.0 and fit.best_level[0] == 1
    # the nearest 40-px anchors are 2 px off in x and y: overlap 38^2, union 2 * 40^2 - 38^2
    assert fit.best_iou[1] == pytest.approx(38**2 / (2 * 40**2 - 38**2))
    assert fit.covered == 1.0
    with pytest.raises(ValueError, match="no GT boxes"):
        anchor_coverage(torch.zeros(0, 4), sizes, ratios)
    with pytest.raises(ValueError, match=r"\(G, 4\)"):
        anchor_coverage(torch.zeros(3, 5), sizes, ratios)
