"""Checks for the exercises of notebooks/05_roi_align.ipynb (RoIPool vs RoIAlign).

Each check calls the student's function on inputs of our choosing and compares it with the
library's own helpers in roi_ops.py (which reproduce torchvision's kernels exactly).
"""

from __future__ import annotations

import torch

from .. import roi_ops
from . import close, need_function, run_check


def _bilinear_reference(feature: torch.Tensor, y: float, x: float) -> float:
    """The library's bilinear taps for one point: the value RoIAlign reads at (y, x), aligned=False coordinates."""
    height, width = feature.shape
    one = torch.ones(1, 1, 1, dtype=torch.bool)  # (K=1, P=1, G=1): the point exists
    rows, row_w = roi_ops._bilinear_taps(torch.tensor([[[y]]], dtype=feature.dtype), one, height)  # (1, 1, 1, 2) x2
    cols, col_w = roi_ops._bilinear_taps(torch.tensor([[[x]]], dtype=feature.dtype), one, width)  # (1, 1, 1, 2) x2
    rows, row_w, cols, col_w = rows.view(2), row_w.view(2), cols.view(2), col_w.view(2)
    return float((row_w[:, None] * col_w[None, :] * feature[rows[:, None], cols[None, :]]).sum())


def check_bilinear(answer) -> bool:
    """answer(feature (H, W), y, x) -> the bilinearly interpolated value at row y, column x (0 <= y <= H-1, 0 <= x <= W-1)."""

    def compare():
        need_function(answer)
        feature = torch.randn(5, 7, generator=torch.Generator().manual_seed(5))  # (5, 7)
        # Inside cells, on grid points, on the last row and the last column, and the notebook's example point.
        points = [(1.25, 3.5), (0.203125, 5.75), (3.9, 0.1), (0.0, 0.0), (2.0, 3.0),
                  (4.0, 2.5), (1.5, 6.0), (4.0, 6.0), (1.203125, 1.203125)]
        for y, x in points:
            expected = _bilinear_reference(feature, y, x)
            got = answer(feature.clone(), y, x)
            assert close(got, expected, atol=1e-5), f"at (y, x) = ({y}, {x}) expected {expected:.4f}, got {float(got):.4f}"

    return run_check("bilinear interpolation of one point", compare)


def check_snap(answer) -> bool:
    """answer(boxes (K, 4) image pixels, spatial_scale) -> (K, 4) int64: RoIPool's first quantisation."""

    def compare():
        need_function(answer)
        boxes = torch.tensor([[10.0, 10.0, 124.0, 124.0],
                              [48.0, 80.0, 112.0, 144.0],  # exact halves at 1/32: 1.5, 2.5, 3.5, 4.5
                              [0.0, 0.0, 31.0, 31.0],
                              [16.0, 47.9, 80.1, 200.0]])  # (4, 4)
        for scale in (1 / 32, 1 / 16):
            expected = roi_ops._round_half_away(boxes * scale).long()  # (4, 4)
            got = answer(boxes.clone(), scale)
            assert isinstance(got, torch.Tensor), f"return a tensor, got {type(got).__name__}"
            assert got.shape == expected.shape, f"shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
            assert not got.is_floating_point(), f"return whole cells (an integer tensor), got dtype {got.dtype}"
            wrong = (got != expected).any(dim=1).nonzero().flatten().tolist()
            assert not wrong, (f"spatial_scale 1/{round(1 / scale)}, box {boxes[wrong[0]].tolist()}: "
                               f"expected {expected[wrong[0]].tolist()}, got {got[wrong[0]].tolist()}")

    return run_check("RoIPool's first quantisation", compare)


def check_sample_positions(answer) -> bool:
    """answer(x1, x2, spatial_scale, pooled, sampling_ratio) -> (pooled, sampling_ratio): RoIAlign's sample x's, aligned=False."""

    def compare():
        need_function(answer)
        cases = [(10.0, 124.0, 1 / 32, 2, 1), (10.0, 124.0, 1 / 32, 2, 2), (3.0, 50.0, 1 / 8, 7, 2),
                 (17.5, 90.25, 1 / 4, 3, 3), (40.0, 45.0, 1 / 16, 2, 2)]  # the last box is narrower than a cell
        for x1, x2, scale, pooled, ratio in cases:
            rois = torch.tensor([[0.0, x1, 0.0, x2, 1.0]])  # (1, 5)
            _, start_x, _, width_roi, _ = roi_ops._roi_geometry(rois, scale, aligned=False)  # (1,) x2
            expected, _ = roi_ops._sample_positions(start_x, width_roi, pooled, torch.tensor([ratio]), ratio)  # (1, P, G)
            expected = expected[0]  # (P, G)
            got = answer(x1, x2, scale, pooled, ratio)
            got = torch.as_tensor(got)
            assert got.shape == expected.shape, (f"box x {x1}..{x2}, pooled {pooled}, sampling_ratio {ratio}: "
                                                 f"shape {tuple(got.shape)}, expected {tuple(expected.shape)}")
            assert close(got, expected, atol=1e-5), (f"box x {x1}..{x2} at 1/{round(1 / scale)}, pooled {pooled}, "
                                                     f"sampling_ratio {ratio}: expected {expected.tolist()}, got {got.tolist()}")

    return run_check("sample positions of RoIAlign's bins", compare)
