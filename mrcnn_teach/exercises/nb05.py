"""Checks for the exercises of notebooks/05_roi_align.ipynb (RoIPool vs RoIAlign).

Each check compares the student's answer with the library's from-scratch ops in roi_ops.py (which
reproduce torchvision's kernels exactly), on the notebook's example or on inputs of our choosing.
"""

from __future__ import annotations

import torch

from .. import roi_ops
from . import close, need_function, refuse_names, run_check


def _example_map() -> torch.Tensor:
    """The notebook's 6x6 map, torch.manual_seed(1), without moving the caller's random state: (1, 1, 6, 6)."""
    with torch.random.fork_rng():
        torch.manual_seed(1)
        return torch.randn(1, 1, 6, 6)


# The example box (10, 10, 124, 124) at stride 32, moved along x by 0.49 cell = 15.68 pixels.
SHIFTED_BOXES = {"to the right": (25.68, 10.0, 139.68, 124.0), "to the left": (-5.68, 10.0, 108.32, 124.0)}


def check_shifted_roipool(answer) -> bool:
    """answer() -> (2x2 output after the shift to the right, 2x2 output after the shift to the left)."""

    def compare():
        need_function(answer)
        refuse_names(answer, {"roi_pool", "RoIPool"},
                     "ours or torchvision's; read the values off the map printed in section 2")
        got = answer()
        assert isinstance(got, (tuple, list)) and len(got) == 2, "return two 2x2 outputs: (shift right, shift left)"
        feature = _example_map()
        for (name, coords), mine in zip(SHIFTED_BOXES.items(), got):
            expected = roi_ops.roi_pool(feature, [torch.tensor([coords])], 2, 1 / 32)[0, 0]  # (2, 2)
            mine = torch.as_tensor(mine, dtype=torch.float32)
            assert mine.shape == (2, 2), f"shift {name}: give a 2x2 output [[b00, b01], [b10, b11]], got shape {tuple(mine.shape)}"
            wrong = [(p, q) for p in range(2) for q in range(2) if abs(mine[p, q] - expected[p, q]) > 2e-3]
            assert not wrong, (f"shift {name}: bin(s) {', '.join(f'({p},{q})' for p, q in wrong)} are not right; "
                               "snap the shifted edges again and redo the bins")

    return run_check("RoIPool after a 0.49-cell shift", compare)


def _gradient_sum_cases():
    """(features (B, 1, H, W), boxes (K, 5), output_size, spatial_scale, sampling_ratio) on which the answer is run."""
    g = torch.Generator().manual_seed(5)
    features = torch.randn(2, 1, 8, 10, generator=g)  # (2, 1, 8, 10)  stride 4: a 32 x 40 image
    inside = torch.tensor([[0.0, 3.0, 2.0, 30.0, 25.0], [1.0, 10.5, 7.25, 21.0, 14.0],
                           [1.0, 0.0, 0.0, 39.0, 31.0], [0.0, 12.0, 12.0, 13.0, 13.5]])  # (4, 5)  the last one < 1 cell
    hanging = torch.tensor([[0.0, -12.0, 4.0, 12.0, 20.0], [1.0, 20.0, -30.0, 52.0, 10.0],
                            [0.0, -40.0, -40.0, -8.0, -8.0]])  # (3, 5)  partly off the map, the last one wholly
    return [(features, inside, 2, 1 / 4, 2), (features, inside, 3, 1 / 4, 1),
            (features, hanging, 2, 1 / 4, 2), (features, torch.cat([inside, hanging]), (2, 3), 1 / 4, 3)]


def check_bin_gradient_sums(answer) -> bool:
    """answer(features (B, 1, H, W), boxes (K, 5), output_size, spatial_scale, sampling_ratio) -> (K, ph, pw)."""

    def compare():
        need_function(answer)
        for features, boxes, size, scale, ratio in _gradient_sum_cases():
            # RoIAlign is linear in the map, so the sum of a bin's gradient is its output on a map of ones.
            expected = roi_ops.roi_align(torch.ones_like(features), boxes, size, scale, ratio)[:, 0]  # (K, ph, pw)
            got = answer(features.clone(), boxes.clone(), size, scale, ratio)
            got = torch.as_tensor(got)
            assert got.shape == expected.shape, (f"output_size {size}, {len(boxes)} boxes: shape {tuple(got.shape)}, "
                                                 f"expected (K, ph, pw) = {tuple(expected.shape)}")
            bad = (got - expected).abs().flatten(1).amax(dim=1) > 1e-4  # (K,)
            if bad.any():
                k = int(bad.nonzero()[0, 0])
                assert False, (f"box {boxes[k, 1:].tolist()} (image {int(boxes[k, 0])}, map {features.shape[-2]}x"
                               f"{features.shape[-1]}, spatial_scale 1/{round(1 / scale)}, sampling_ratio {ratio}): expected "
                               f"{expected[k].tolist()}, got {got[k].tolist()}")

    return run_check("each bin's gradient sum", compare)


def _aligned_cases():
    """(features (C, H, W), boxes (K, 4), output_size, spatial_scale, sampling_ratio) for the debug exercise."""
    g = torch.Generator().manual_seed(7)
    features = torch.randn(3, 12, 10, generator=g)  # (3, 12, 10)
    cases = []
    for scale in (1.0, 1 / 4, 1 / 8, 1 / 16):
        size = torch.tensor([10.0, 12.0]) / scale  # the map's extent in pixels (x, y)
        corner = torch.rand(5, 2, generator=g) * size * 0.7  # (5, 2)
        boxes = torch.cat([corner, corner + (0.1 + 0.3 * torch.rand(5, 2, generator=g)) * size], dim=1)  # (5, 4)
        boxes = torch.cat([boxes, torch.cat([-0.2 * size, 0.4 * size])[None]])  # (6, 4)  one over the top-left border
        cases += [(features, boxes, 2, scale, 2), (features, boxes, 3, scale, 1)]
    return cases


def check_aligned_roi_align(answer) -> bool:
    """answer(features (C, H, W), boxes (K, 4), output_size, spatial_scale, sampling_ratio) -> (K, C, P, P), aligned=True."""

    def compare():
        need_function(answer)
        for features, boxes, size, scale, ratio in _aligned_cases():
            expected = roi_ops.roi_align(features[None], [boxes], size, scale, ratio, aligned=True)  # (K, C, P, P)
            got = torch.as_tensor(answer(features.clone(), boxes.clone(), size, scale, ratio))
            assert got.shape == expected.shape, f"spatial_scale 1/{round(1 / scale)}: shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
            assert close(got, expected, atol=1e-4), (
                f"spatial_scale 1/{round(1 / scale)}, output_size {size}, sampling_ratio {ratio}: differs from "
                f"roi_align(..., aligned=True) by up to {(got - expected).abs().max():.4f}")

    return run_check("RoIAlign with aligned=True", compare)
