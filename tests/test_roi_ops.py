"""roi_ops.py (the plain RoIAlign and RoIPool) and roi_align_fast.py against torchvision.ops, plus the seed's worked example.

Every RoIAlign test runs both forms: `roi_align` is a fixture over the plain one (the one the
notebooks teach) and the fast one (the `mixed` kernel set's).
"""

import pytest
import torch
import torchvision

from mrcnn_teach import roi_align_fast, roi_ops
from mrcnn_teach.roi_ops import roi_pool


@pytest.fixture(params=[roi_ops.roi_align, roi_align_fast.roi_align], ids=["plain", "fast"])
def roi_align(request):
    return request.param


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
def test_roi_align_matches_torchvision(features, sampling_ratio, aligned, spatial_scale, roi_align):
    rois = make_rois(25, 2, seed=1)
    for output_size in [(3, 4), 2]:
        ours = roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned)
        theirs = torchvision.ops.roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned)
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_roi_align_border_rule(roi_align):
    # One bin, one sample at the box centre, scale 1: the sample row is exactly (y1 + y2) / 2.
    x = torch.arange(20.0).reshape(1, 1, 4, 5)  # (1, 1, H=4, W=5)
    centres_y = [-2.0, -1.0, -0.5, 0.0, 2.5, 3.0, 3.5, 4.0, 4.5]  # off, edge, clamp, ..., last row, edge, off
    rois = torch.tensor([[0.0, 1.0, cy - 1, 3.0, cy + 1] for cy in centres_y])  # (9, 5), x centre 2
    ours = roi_align(x, rois, 1, 1.0, 1, False)[:, 0, 0, 0]
    theirs = torchvision.ops.roi_align(x, rois, 1, 1.0, 1, False)[:, 0, 0, 0]
    torch.testing.assert_close(ours, theirs)
    # Column 2 holds 2, 7, 12, 17: -1 and -0.5 clamp to row 0, 3.5 and 4.0 use the last row, beyond is 0.
    torch.testing.assert_close(ours, torch.tensor([0.0, 2.0, 2.0, 2.0, 14.5, 17.0, 17.0, 17.0, 0.0]))


def test_roi_align_list_equals_tensor_boxes(features, roi_align):
    rois = make_rois(12, 2, seed=2)
    as_list = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    as_tensor = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], 1) for i, b in enumerate(as_list)])
    ours_list = roi_align(features, as_list, (3, 2), 0.5, 2)
    torch.testing.assert_close(ours_list, roi_align(features, as_tensor, (3, 2), 0.5, 2), rtol=0, atol=0)
    torch.testing.assert_close(ours_list, torchvision.ops.roi_align(features, as_list, (3, 2), 0.5, 2))


@pytest.mark.parametrize("sampling_ratio,aligned", [(2, False), (-1, False), (-1, True)])
def test_roi_align_input_gradient_matches_torchvision(features, sampling_ratio, aligned, roi_align):
    rois = make_rois(20, 2, seed=3)
    upstream = torch.randn(20, 3, 3, 4, generator=torch.Generator().manual_seed(4))  # (K, C, 3, 4)
    grads = []
    for op in (roi_align, torchvision.ops.roi_align):
        x = features.clone().requires_grad_(True)
        (op(x, rois, (3, 4), 0.5, sampling_ratio, aligned) * upstream).sum().backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-5)
    assert grads[0].abs().sum() > 0


def _support_sizes(rois, spatial_scale, sampling_ratio, output_size=(3, 4), size=(10, 12)):
    """count_h, count_w of roi_align's supports for rois (aligned=False) on a map of `size`."""
    start = rois[:, 1:3] * spatial_scale  # (K, 2)  x1, y1
    extent = (rois[:, 3:5] * spatial_scale - start).clamp(min=1.0)  # (K, 2)  w, h
    grid_h, grid_w = roi_ops._sampling_grid(extent[:, 1], extent[:, 0], *output_size, sampling_ratio)
    _, count_h, _ = roi_align_fast._interpolation_matrix(start[:, 1], extent[:, 1], output_size[0], grid_h, size[0])
    _, count_w, _ = roi_align_fast._interpolation_matrix(start[:, 0], extent[:, 0], output_size[1], grid_w, size[1])
    return count_h, count_w


def test_fast_roi_align_runs_give_same_result(features, monkeypatch):
    rois = make_rois(30, 2, seed=5)
    upstream = torch.randn(30, 3, 3, 4, generator=torch.Generator().manual_seed(9))  # (K, C, 3, 4)

    def pooled_and_grad():
        x = features.clone().requires_grad_(True)
        out = roi_align_fast.roi_align(x, rois, (3, 4), 0.5, -1)
        (out * upstream).sum().backward()
        return out.detach(), x.grad

    whole, whole_grad = pooled_and_grad()
    _, groups = roi_align_fast._support_groups(*_support_sizes(rois, 0.5, -1), 10**6)
    assert len(list(roi_align_fast._runs(groups, 10**6))) == 1  # unpatched: one gather for all RoIs
    monkeypatch.setattr(roi_align_fast, "_GATHER_ELEMENTS", 100)  # runs of one RoI or a few: many gathers
    monkeypatch.setattr(roi_ops, "_CHUNK_ELEMENTS", 500)  # forces one RoI or a few per chunk (RoIPool)
    chunked, chunked_grad = pooled_and_grad()
    torch.testing.assert_close(chunked, whole, rtol=0, atol=0)
    torch.testing.assert_close(chunked_grad, whole_grad, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(chunked, torchvision.ops.roi_align(features, rois, (3, 4), 0.5, -1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(roi_pool(features, rois, (3, 4), 0.5), torchvision.ops.roi_pool(features, rois, (3, 4), 0.5))


def test_fast_roi_align_is_two_matrix_products_per_roi():
    # The separable form written out densely for one RoI: pooled = A @ F @ B^T, where A (ph, H) and
    # B (pw, W) hold the interpolation matrices' weights in the columns of their support cells.
    g = torch.Generator().manual_seed(10)
    x = torch.randn(1, 2, 9, 11, generator=g, dtype=torch.float64)  # (1, C, H, W)
    roi = torch.tensor([[0.0, 1.3, -0.6, 8.9, 7.2]], dtype=torch.float64)  # starts above the map
    pooled_h, pooled_w, ratio = 3, 4, 2
    start_x, start_y, width_roi, height_roi = roi[:, 1], roi[:, 2], roi[:, 3] - roi[:, 1], roi[:, 4] - roi[:, 2]
    grid = torch.tensor([ratio])
    rows, count_h, row_matrix = roi_align_fast._interpolation_matrix(start_y, height_roi, pooled_h, grid, 9)
    cols, count_w, col_matrix = roi_align_fast._interpolation_matrix(start_x, width_roi, pooled_w, grid, 11)
    A = torch.zeros(pooled_h, 9, dtype=torch.float64).index_add_(1, rows[0], row_matrix[0])  # (ph, H)
    B = torch.zeros(pooled_w, 11, dtype=torch.float64).index_add_(1, cols[0], col_matrix[0])  # (pw, W)
    by_hand = A @ x[0] @ B.T  # (C, ph, pw)
    theirs = torchvision.ops.roi_align(x, roi, (pooled_h, pooled_w), 1.0, ratio, False)[0]
    torch.testing.assert_close(by_hand, theirs, rtol=1e-12, atol=1e-12)
    for op in (roi_align_fast.roi_align, roi_ops.roi_align):
        torch.testing.assert_close(op(x, roi, (pooled_h, pooled_w), 1.0, ratio, False)[0], theirs, rtol=1e-12, atol=1e-12)
    # Each row of A is a mean of bilinear weights: it sums to 1, as no sample of this RoI leaves the map.
    torch.testing.assert_close(A.sum(dim=1), torch.ones(pooled_h, dtype=torch.float64))
    # The support lists each cell once, in order. Samples at y = 0.05, 1.35, 2.65, 3.95, 5.25, 6.55
    # read rows 0..7 (12 taps, 8 rows); x = 1.775, 2.725, ..., 8.425 read columns 1..9 (16 taps, 9 columns).
    assert rows[0].tolist() == list(range(8)) and count_h.item() == 8
    assert cols[0].tolist() == list(range(1, 10)) and count_w.item() == 9


def test_fast_roi_align_support_is_at_most_the_samples_or_the_roi():
    # A RoI over a whole 60-row map, sampled 2 per bin into 7 bins, reads 2 x 2 x 7 = 28 rows, not 60
    # (adaptive sampling, 9 per bin, does read all 60). A 5-row RoI reads at most its rows and the
    # one below, however densely it is sampled, not 2 x 2 x 7 or 2 x 1 x 7.
    start, length = torch.tensor([0.0, 10.0]), torch.tensor([59.0, 5.0])  # (2,) x2
    for ratio, big_roi_rows in [(2, 28), (-1, 60)]:
        grid = roi_ops._sampling_grid(length, length, 7, 7, ratio)[0]  # (2,)
        _, count, matrix = roi_align_fast._interpolation_matrix(start, length, 7, grid, 60)
        assert count[0].item() == big_roi_rows and count[1].item() <= 5 + 1
        torch.testing.assert_close(matrix.sum(dim=2), torch.ones(2, 7))  # each bin's weights sum to 1


@pytest.mark.parametrize("sampling_ratio,aligned", [(2, False), (-1, False), (-1, True), (3, True)])
def test_roi_align_mixed_sizes_many_groups(sampling_ratio, aligned, roi_align):
    # RoIs from a fraction of a cell to larger than the map, on several images: many support groups.
    g = torch.Generator().manual_seed(11)
    x = torch.randn(3, 4, 30, 36, generator=g)  # (B, C, H, W)
    size = torch.rand(80, 2, generator=g) ** 2 * 90  # (K, 2)  mostly small, some huge (image is 60 x 72)
    xy = torch.rand(80, 2, generator=g) * 80 - 10  # (K, 2)
    batch = torch.randint(0, 3, (80, 1), generator=g).float()  # (K, 1)
    rois = torch.cat([batch, xy, xy + size], dim=1)  # (K, 5)
    count_h, count_w = _support_sizes(rois, 0.5, sampling_ratio, (7, 5), (30, 36))
    assert len(roi_align_fast._support_groups(count_h, count_w, 10**6)[1]) > 5  # for the fast form
    upstream = torch.randn(80, 4, 7, 5, generator=g)  # (K, C, 7, 5)
    outs, grads = [], []
    for op in (roi_align, torchvision.ops.roi_align):
        xg = x.clone().requires_grad_(True)
        out = op(xg, rois, (7, 5), 0.5, sampling_ratio, aligned)
        (out * upstream).sum().backward()
        outs.append(out)
        grads.append(xg.grad)
    assert outs[0].is_contiguous()
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-5)


def test_roi_align_float64_and_strided_inputs(features, roi_align):
    rois = make_rois(25, 2, seed=12)
    x64 = features.double()  # (B, C, H, W)
    for aligned in (False, True):
        ours = roi_align(x64, rois.double(), (3, 4), 0.5, -1, aligned)
        theirs = torchvision.ops.roi_align(x64, rois.double(), (3, 4), 0.5, -1, aligned)
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    # A single image (its channels-last table is a strided view), channels_last memory and a strided slice.
    for x in (features[:1], features.to(memory_format=torch.channels_last), features[:, :, ::2, 1:]):
        boxes = rois[rois[:, 0] < x.shape[0]]  # (K', 5)
        theirs = torchvision.ops.roi_align(x, boxes, 2, 0.5, 2)
        torch.testing.assert_close(roi_align(x, boxes, 2, 0.5, 2), theirs, rtol=1e-5, atol=1e-5)


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


def test_empty_boxes(features, roi_align):
    for boxes in ([torch.zeros(0, 4), torch.zeros(0, 4)], torch.zeros(0, 5), []):
        assert roi_align(features, boxes, (3, 4), 0.5, 2).shape == (0, 3, 3, 4)
        assert roi_pool(features, boxes, (3, 4), 0.5).shape == (0, 3, 3, 4)
    x = features.clone().requires_grad_(True)
    roi_align(x, torch.zeros(0, 5), 2).sum().backward()  # still part of the graph
    assert x.grad.abs().sum() == 0


def test_bad_input_raises(features, roi_align):
    with pytest.raises(ValueError, match="RoI 1 has batch index 2"):
        roi_align(features, torch.tensor([[0.0, 1, 1, 5, 5], [2.0, 1, 1, 5, 5]]), 2)
    with pytest.raises(ValueError, match=r"boxes\[1\]"):
        roi_pool(features, [torch.zeros(2, 4), torch.zeros(2, 5)], 2)
    with pytest.raises(ValueError, match=r"\(K, 5\)"):
        roi_align(features, torch.zeros(3, 4), 2)


def test_seed_worked_example(roi_align):
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


def test_plain_roi_align_chunks_give_same_result(features, monkeypatch):
    # The plain form gathers every tap at once, in chunks of RoIs bounded by _CHUNK_ELEMENTS.
    rois = make_rois(30, 2, seed=13)
    upstream = torch.randn(30, 3, 3, 4, generator=torch.Generator().manual_seed(14))  # (K, C, 3, 4)

    def pooled_and_grad():
        x = features.clone().requires_grad_(True)
        out = roi_ops.roi_align(x, rois, (3, 4), 0.5, -1, True)
        (out * upstream).sum().backward()
        return out.detach(), x.grad

    whole, whole_grad = pooled_and_grad()
    monkeypatch.setattr(roi_ops, "_CHUNK_ELEMENTS", 500)  # one RoI per chunk
    chunked, chunked_grad = pooled_and_grad()
    torch.testing.assert_close(chunked, whole, rtol=0, atol=0)
    torch.testing.assert_close(chunked_grad, whole_grad, rtol=1e-6, atol=1e-6)


def test_plain_and_fast_agree_on_a_model_sized_workload():
    # FPN-sized: 300 RoIs of every size on a 256-channel stride-4 map, 7x7 with 2x2 samples.
    g = torch.Generator().manual_seed(15)
    x = torch.randn(2, 256, 50, 60, generator=g)  # (B, C, H, W)
    xy = torch.rand(300, 2, generator=g) * 220  # (K, 2)
    wh = torch.rand(300, 2, generator=g) ** 2 * 150 + 1  # (K, 2)
    rois = torch.cat([torch.randint(0, 2, (300, 1), generator=g).float(), xy, xy + wh], dim=1)  # (K, 5)
    plain = roi_ops.roi_align(x, rois, 7, 0.25, 2)
    fast = roi_align_fast.roi_align(x, rois, 7, 0.25, 2)
    assert plain.shape == fast.shape == (300, 256, 7, 7)
    torch.testing.assert_close(plain, fast, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain, torchvision.ops.roi_align(x, rois, 7, 0.25, 2), rtol=1e-5, atol=1e-5)
