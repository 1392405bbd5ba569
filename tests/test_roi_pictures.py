"""The feature-grid pictures of notebook 05 (visualize.draw_feature_grid, draw_roi_samples, roi_sample_points)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402

from mrcnn_teach import visualize  # noqa: E402


def test_roi_sample_points_are_where_torchvision_samples():
    # A map whose value is its own x (then y) coordinate: RoIAlign with one sample per bin returns the
    # sample's position, so the helper's points must equal torchvision's output.
    xs_map = torch.arange(20.0).expand(1, 1, 20, 20)  # (1, 1, 20, 20)  cell (i, j) holds j
    rois = torch.tensor([[0.0, 13.0, 21.0, 61.0, 50.0]])  # (1, 5)
    for aligned in (False, True):
        xs, ys, (x1, y1, x2, y2) = visualize.roi_sample_points(rois, 1 / 4, 3, 1, aligned)
        read_x = torchvision.ops.roi_align(xs_map, rois, 3, 1 / 4, 1, aligned)[0, 0]  # (3, 3)
        read_y = torchvision.ops.roi_align(xs_map.transpose(2, 3), rois, 3, 1 / 4, 1, aligned)[0, 0]  # (3, 3)
        assert torch.allclose(xs[:, 0], read_x[0], atol=1e-5) and torch.allclose(ys[:, 0], read_y[:, 0], atol=1e-5)
        assert (x1, x2) == pytest.approx((13 / 4 - 0.5 * aligned, 61 / 4 - 0.5 * aligned))
        assert (y1, y2) == pytest.approx((21 / 4 - 0.5 * aligned, 50 / 4 - 0.5 * aligned))


def test_draw_feature_grid_writes_values_and_bolds_the_chosen_cells():
    fig, ax = plt.subplots()
    feature = torch.arange(6.0).view(2, 3)  # (2, 3)
    visualize.draw_feature_grid(ax, feature, "t", bold={(1, 2)})
    texts = {t.get_text(): t.get_fontweight() for t in ax.texts}
    assert set(texts) == {f"{v:.2f}" for v in range(6)}
    assert texts["5.00"] == "bold" and texts["0.00"] == "normal"
    with pytest.raises(ValueError, match="2-D map"):
        visualize.draw_feature_grid(ax, torch.zeros(1, 2, 3), "t")
    plt.close(fig)


def test_draw_roi_samples_draws_every_sample_and_the_box():
    fig, ax = plt.subplots()
    feature = torch.randn(6, 6)
    rois = torch.tensor([[0.0, 10.0, 10.0, 124.0, 124.0]])  # (1, 5)
    visualize.draw_roi_samples(ax, feature, rois, 1 / 32, 2, 2, "t")
    (points,) = ax.collections  # the scatter of the sample points
    assert points.get_offsets().shape == (16, 2)  # 2x2 bins of 2x2 samples
    assert len(ax.patches) == 1 and ax.patches[0].get_width() == pytest.approx(3.5625)
    plt.close(fig)
