"""roi_ops.py against torchvision.ops.roi_align / roi_pool, plus the seed's worked example."""

import pytest
import torch
import torchvision

from mrcnn_teach import roi_ops
from mrcnn_teach.roi_ops import roi_align, roi_pool


def make_rois(num, batch_size, seed, extent=(24.0, 20.0), max_size=14.0):
    """(num, 5) rois in image coordinates; many are partly or fully outside a (extent) image."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(num, 2, generator=g) * torch.tensor(extent) * 1.4 - 4  # (num, 2)
    wh = torch.rand(num, 2, generator=g) * max_size  # (num, 2)
    batch = torch.randint(0, batch_size, (num, 1), generator=g).float()  # (num, 1)
    rois = torch.cat([batch, xy, xy + wh], dim=1)  # (num, 5)
    rois[0, 1:] = torch.tensor([3.0, 4.0, 3.0, 4.0])  # zero area
    rois[1, 1:] = torch.tensor([-30.0, -30.0, -20.0, -25.0])  # fully outside, top-left
    rois[2, 1:] = torch.tensor([100.0, 100.0, 120.0, 110.0])  # fully outside, bottom-right
    rois[3, 1:] = torch.tensor([-5.0, 2.0, 30.0, 9.0])  # wider than the image
    return rois


@pytest.fixture(scope="module")
def features():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 10, 12, generator=g)  # (B, C, H, W), image 2x the map at scale 0.5


@pytest.mark.parametrize("sampling_ratio", [-1, 0, 1, 2, 3])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("spatial_scale", [1.0, 0.5, 1 / 3])
def test_roi_align_matches_torchvision(features, sampling_ratio, aligned, spatial_scale):
    rois = make_rois(25, 2, seed=1)
    for output_size in [(3, 4), 2]:
        ours = roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned)
        theirs = torchvision.ops.roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned)
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_roi_align_border_rule():
    # One bin, one sample at the box centre, scale 1: the sample row is exactly (y1 + y2) / 2.
    x = torch.arange(20.0).reshape(1, 1, 4, 5)  # (1, 1, H=4, W=5)
    centres_y = [-2.0, -1.0, -0.5, 0.0, 2.5, 3.0, 3.5, 4.0, 4.5]  # off, edge, clamp, ..., last row, edge, off
    rois = torch.tensor([[0.0, 1.0, cy - 1, 3.0, cy + 1] for cy in centres_y])  # (9, 5), x centre 2
    ours = roi_align(x, rois, 1, 1.0, 1, False)[:, 0, 0, 0]
    theirs = torchvision.ops.roi_align(x, rois, 1, 1.0, 1, False)[:, 0, 0, 0]
    torch.testing.assert_close(ours, theirs)
    # Column 2 holds 2, 7, 12, 17: -1 and -0.5 clamp to row 0, 3.5 and 4.0 use the last row, beyond is 0.
    torch.testing.assert_close(ours, torch.tensor([0.0, 2.0, 2.0, 2.0, 14.5, 17.0, 17.0, 17.0, 0.0]))


def test_roi_align_list_equals_tensor_boxes(features):
    rois = make_rois(12, 2, seed=2)
    as_list = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    as_tensor = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], 1) for i, b in enumerate(as_list)])
    ours_list = roi_align(features, as_list, (3, 2), 0.5, 2)
    torch.testing.assert_close(ours_list, roi_align(features, as_tensor, (3, 2), 0.5, 2), rtol=0, atol=0)
    torch.testing.assert_close(ours_list, torchvision.ops.roi_align(features, as_list, (3, 2), 0.5, 2))


@pytest.mark.parametrize("sampling_ratio,aligned", [(2, False), (-1, False), (-1, True)])
def test_roi_align_input_gradient_matches_torchvision(features, sampling_ratio, aligned):
    rois = make_rois(20, 2, seed=3)
    upstream = torch.randn(20, 3, 3, 4, generator=torch.Generator().manual_seed(4))  # (K, C, 3, 4)
    grads = []
    for op in (roi_align, torchvision.ops.roi_align):
        x = features.clone().requires_grad_(True)
        (op(x, rois, (3, 4), 0.5, sampling_ratio, aligned) * upstream).sum().backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-5)
    assert grads[0].abs().sum() > 0


def test_roi_align_chunking_gives_same_result(features, monkeypatch):
    rois = make_rois(30, 2, seed=5)
    whole = roi_align(features, rois, (3, 4), 0.5, -1)
    monkeypatch.setattr(roi_ops, "_CHUNK_ELEMENTS", 500)  # forces one RoI or a few per chunk
    torch.testing.assert_close(roi_align(features, rois, (3, 4), 0.5, -1), whole, rtol=0, atol=0)
    torch.testing.assert_close(roi_pool(features, rois, (3, 4), 0.5), torchvision.ops.roi_pool(features, rois, (3, 4), 0.5))


@pytest.mark.parametrize("spatial_scale", [1.0, 0.5, 0.25, 1 / 3])
def test_roi_pool_matches_torchvision(features, spatial_scale):
    rois = make_rois(25, 2, seed=6)
    for output_size in [(3, 4), 2, (1, 5)]:
        ours = roi_pool(features, rois, output_size, spatial_scale)
        theirs = torchvision.ops.roi_pool(features, rois, output_size, spatial_scale)
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    as_list = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    torch.testing.assert_close(roi_pool(features, as_list, 3, spatial_scale), torchvision.ops.roi_pool(features, as_list, 3, spatial_scale))


def test_roi_pool_rounds_halves_away_from_zero(features):
    # 5 * 0.5 = 2.5: C's round gives 3, torch.round (half to even) would give 2.
    rois = torch.tensor([[0.0, 5.0, 5.0, 13.0, 9.0], [1.0, 1.0, 3.0, 7.0, 11.0]])
    ours = roi_pool(features, rois, (2, 2), 0.5)
    torch.testing.assert_close(ours, torchvision.ops.roi_pool(features, rois, (2, 2), 0.5), rtol=0, atol=0)
    # Box 0 -> cells x 3..7, y 3..5 (rounded half away); bin (0, 0) = max over rows 3..4, cols 3..5.
    assert ours[0, :, 0, 0].tolist() == features[0, :, 3:5, 3:6].amax(dim=(1, 2)).tolist()
    halves = roi_ops._round_half_away(torch.tensor([0.5, 1.5, 2.5, -0.5, -2.5, 2.4999]))
    assert halves.tolist() == [1.0, 2.0, 3.0, -1.0, -3.0, 2.0]


def test_roi_pool_input_gradient_matches_torchvision(features):
    rois = make_rois(20, 2, seed=7)
    upstream = torch.randn(20, 3, 3, 4, generator=torch.Generator().manual_seed(8))  # (K, C, 3, 4)
    grads = []
    for op in (roi_pool, torchvision.ops.roi_pool):
        x = features.clone().requires_grad_(True)
        (op(x, rois, (3, 4), 0.5) * upstream).sum().backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-6, atol=1e-6)


def test_empty_boxes(features):
    for boxes in ([torch.zeros(0, 4), torch.zeros(0, 4)], torch.zeros(0, 5), []):
        assert roi_align(features, boxes, (3, 4), 0.5, 2).shape == (0, 3, 3, 4)
        assert roi_pool(features, boxes, (3, 4), 0.5).shape == (0, 3, 3, 4)
    x = features.clone().requires_grad_(True)
    roi_align(x, torch.zeros(0, 5), 2).sum().backward()  # still part of the graph
    assert x.grad.abs().sum() == 0


def test_bad_input_raises(features):
    with pytest.raises(ValueError, match="RoI 1 has batch index 2"):
        roi_align(features, torch.tensor([[0.0, 1, 1, 5, 5], [2.0, 1, 1, 5, 5]]), 2)
    with pytest.raises(ValueError, match=r"boxes\[1\]"):
        roi_pool(features, [torch.zeros(2, 4), torch.zeros(2, 5)], 2)
    with pytest.raises(ValueError, match=r"\(K, 5\)"):
        roi_align(features, torch.zeros(3, 4), 2)


def test_seed_worked_example():
    # A 6x6 stride-32 feature map and the image box (10, 10, 124, 124), pooled to 2x2.
    torch.manual_seed(1)
    x = torch.randn(1, 1, 6, 6)  # (1, 1, 6, 6)
    box = torch.tensor([[10.0, 10.0, 124.0, 124.0]])
    scale = 1 / 32

    pooled = roi_pool(x, [box], 2, scale)[0, 0]
    torch.testing.assert_close(pooled, torch.tensor([[1.6871, 0.4676], [2.0242, 2.3571]]), rtol=0, atol=1e-4)
    aligned = roi_align(x, [box], 2, scale, sampling_ratio=1)[0, 0]
    torch.testing.assert_close(aligned, torch.tensor([[-0.8546, 0.3236], [0.2177, 0.0546]]), rtol=0, atol=1e-4)

    # By hand: on the map the box spans 10/32 .. 124/32; one sample at the centre of bin (0, 0).
    x1, x2 = 10 * scale, 124 * scale
    bin_size = (x2 - x1) / 2
    sample = x1 + 0.5 * bin_size  # the same along y, the box is square
    cell = int(sample)  # 1: the sample lies between cells 1 and 2
    u = v = sample - cell
    assert cell == 1 and u == pytest.approx(0.203125)
    f = x[0, 0]
    by_hand = (1 - u) * (1 - v) * f[1, 1] + u * (1 - v) * f[1, 2] + (1 - u) * v * f[2, 1] + u * v * f[2, 2]
    torch.testing.assert_close(aligned[0, 0], by_hand, rtol=0, atol=1e-6)
    torch.testing.assert_close(pooled, torchvision.ops.roi_pool(x, [box], 2, scale)[0, 0], rtol=0, atol=0)
