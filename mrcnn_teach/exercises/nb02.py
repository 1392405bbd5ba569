"""Checks for the exercises of notebooks/02_fpn.ipynb (the Feature Pyramid Network).

Each check calls the student's function on inputs of our choosing and compares it with the
library: a ResNet body + FPN run on real tensors (for the level sizes), the FPN's own top-down
path (for the merge), and the FPN module's parameter count.
"""

from __future__ import annotations

import torch

from ..fpn import FPN
from . import close, need_function, run_check, tiny_backbone


def _as_sizes(got) -> list[tuple[int, int]]:
    assert isinstance(got, (list, tuple)), f"return a list of (h, w) pairs, got {type(got).__name__}"
    sizes = []
    for pair in got:
        assert len(pair) == 2, f"each level needs one (h, w) pair, got {pair!r}"
        sizes.append((int(pair[0]), int(pair[1])))
    return sizes


def check_pyramid_sizes(answer) -> bool:
    """answer(H, W) -> [(h2, w2), ..., (h6, w6)]: the sizes of P2..P6 for an (unpadded) H x W input."""

    def compare():
        need_function(answer)
        backbone = tiny_backbone()  # P2..P6 as the library computes them
        for H, W in [(128, 128), (100, 130), (97, 64), (33, 200), (65, 95), (224, 160)]:
            with torch.no_grad():
                levels = backbone(torch.zeros(1, 3, H, W))  # [P2..P6], each (1, 8, h_l, w_l)
            expected = [tuple(P.shape[-2:]) for P in levels]
            got = _as_sizes(answer(H, W))
            assert len(got) == 5, f"for {H}x{W}: expected 5 levels (P2..P6), got {len(got)}"
            assert got == expected, f"for an input of {H}x{W}: expected {expected}, got {got}"

    return run_check("sizes of P2..P6", compare)


def check_top_down_merge(answer) -> bool:
    """answer(coarse (B, d, h, w), lateral (B, d, h2, w2)) -> merged (B, d, h2, w2), as in FPN.forward."""

    def compare():
        need_function(answer)
        with torch.random.fork_rng():
            torch.manual_seed(1)
            fpn = FPN([6, 10], out_channels=8).eval()  # two levels: C_fine (6 ch.) and C_coarse (10 ch.)
            cases = [((9, 13), (5, 7)), ((8, 8), (4, 4)), ((7, 12), (4, 6)), ((25, 33), (13, 17))]
            features = [[torch.randn(2, 6, *fine), torch.randn(2, 10, *coarse)] for fine, coarse in cases]
        for (fine, coarse), (c_fine, c_coarse) in zip(cases, features):
            with torch.no_grad():
                expected = fpn([c_fine, c_coarse])[0]  # P_fine = output conv of the merged map
                lateral = fpn.lateral[0](c_fine)  # (2, 8, *fine)
                top = fpn.lateral[1](c_coarse)  # (2, 8, *coarse): the coarsest merged map is its lateral
                merged = answer(top.clone(), lateral.clone())
                assert isinstance(merged, torch.Tensor), f"return a tensor, got {type(merged).__name__}"
                assert merged.shape == lateral.shape, (
                    f"coarse {tuple(top.shape)} + lateral {tuple(lateral.shape)}: the merged map must have the "
                    f"lateral's shape {tuple(lateral.shape)}, got {tuple(merged.shape)}")
                got = fpn.output[0](merged)
            assert close(got, expected, atol=1e-4), (
                f"coarse {coarse} -> fine {fine}: shape right, values differ from the library's top-down path "
                "(nearest-neighbour upsampling to the lateral's size, then add)")

    return run_check("top-down merge of two levels", compare)


def check_fpn_num_params(answer) -> bool:
    """answer(in_channels: list[int], d: int) -> the number of learnable parameters of FPN(in_channels, d)."""

    def compare():
        need_function(answer)
        for in_channels, d in [([64, 128, 256, 512], 64), ([256, 512, 1024, 2048], 256), ([3, 5], 7), ([16], 4)]:
            expected = sum(p.numel() for p in FPN(in_channels, d).parameters())
            got = answer(list(in_channels), d)
            assert got is not None, "return a number"
            assert int(got) == expected, (
                f"FPN({in_channels}, d={d}): expected {expected:,} parameters, got {int(got):,}")

    return run_check("number of FPN parameters", compare)
