"""Checks for the exercises of notebooks/02_fpn.ipynb (the Feature Pyramid Network).

Each check runs the library's FPN (random weights, inputs of our choosing) and compares the
student's answer with what it computes: which output cells move when one C5 cell moves, the jumps
a 3x3 conv leaves of a step, and the top-down merged maps on odd and even sizes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..fpn import FPN, merged_maps
from . import close, need_function, refuse_names, run_check

LEVELS = (2, 3, 4, 5, 6)


def _random_fpn(channels=(3, 4, 5, 6), d=4, seed=0) -> FPN:
    """A small FPN whose weights are random (uniform, no zeros), built without moving the caller's random state."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        fpn = FPN(list(channels), d).eval()
        for conv in [*fpn.lateral, *fpn.output]:
            torch.nn.init.uniform_(conv.weight, 0.1, 1.0)  # positive: no cancellation can hide a change
    return fpn


def _changed_boxes(row: int, col: int, h5: int, w5: int) -> dict[int, tuple[int, int, int, int]]:
    """{level: (first row, last row, first col, last col)} of the P_l cells that move when C5[row, col] moves."""
    fpn = _random_fpn()
    sizes = [(h5 * 2 ** (5 - level), w5 * 2 ** (5 - level)) for level in (2, 3, 4, 5)]
    with torch.random.fork_rng():
        torch.manual_seed(1)
        C = [torch.randn(1, c, h, w) for c, (h, w) in zip(fpn.in_channels, sizes)]  # [C2..C5]
    moved = [c.clone() for c in C]
    moved[3][0, :, row, col] += 1.0
    boxes = {}
    with torch.no_grad():
        for level, p, q in zip(LEVELS, fpn(C), fpn(moved)):
            changed = ((p - q).abs().amax(dim=(0, 1)) > 1e-3).nonzero()  # (n, 2) cells (y, x)
            boxes[level] = (int(changed[:, 0].min()), int(changed[:, 0].max()),
                            int(changed[:, 1].min()), int(changed[:, 1].max()))
    return boxes


CHANGED_CASES = [(1, 2, 4, 4), (0, 0, 4, 4), (3, 3, 4, 4), (2, 1, 5, 3), (2, 5, 5, 7)]
CHANGED_HIDDEN = [(1, 1, 3, 3), (0, 4, 2, 5), (4, 0, 5, 5)]


def check_changed_cells(answer, hidden=False) -> bool:
    """answer(row, col, h5, w5) -> {level: (first_row, last_row, first_col, last_col)} for levels 2..6:
    the cells of P_l that change when one cell of C5 (h5 x w5; every finer level exactly twice as large)
    changes. Ranges are inclusive, in the cells of that level."""

    def compare():
        need_function(answer)
        for row, col, h5, w5 in CHANGED_HIDDEN if hidden else CHANGED_CASES:
            expected = _changed_boxes(row, col, h5, w5)
            got = answer(row, col, h5, w5)
            assert isinstance(got, dict), f"return a dict {{level: (r0, r1, c0, c1)}}, got {type(got).__name__}"
            assert sorted(got) == list(LEVELS), f"give levels 2..6 as the dict's keys, got {sorted(got)}"
            for level in LEVELS:
                box = tuple(int(v) for v in got[level])
                assert box == expected[level], (
                    f"C5 cell ({row}, {col}) of a {h5}x{w5} C5: P{level} changes on rows "
                    f"{expected[level][0]}..{expected[level][1]}, cols {expected[level][2]}..{expected[level][3]}; "
                    f"you said rows {box[0]}..{box[1]}, cols {box[2]}..{box[3]}")

    return run_check("the cells that one C5 cell reaches", compare, hidden=hidden)


def check_step_jumps(answer) -> bool:
    """answer(weight (d_out, d_in, 3, 3), delta (d_in,)) -> (3, d_out): the jumps that a 3x3 conv (padding 1)
    leaves of a step of height delta between columns j-1 and j, on the pairs (j-2, j-1), (j-1, j), (j, j+1)."""

    def compare():
        need_function(answer)
        with torch.random.fork_rng():
            torch.manual_seed(2)
            cases = [(torch.randn(4, 3, 3, 3), torch.randn(4), torch.randn(3)),
                     (torch.randn(2, 5, 3, 3), torch.randn(2), torch.randn(5)),
                     (torch.randn(6, 6, 3, 3), torch.zeros(6), torch.randn(6))]
        for weight, bias, delta in cases:
            d_in = weight.shape[1]
            a = torch.randn(d_in, generator=torch.Generator().manual_seed(3))  # the value left of the step
            j, rows, cols = 5, 9, 11
            x = a[:, None, None].expand(d_in, rows, cols).clone()  # (d_in, rows, cols)
            x[:, :, j:] += delta[:, None, None]
            y = F.conv2d(x[None], weight, bias, padding=1)[0]  # (d_out, rows, cols)
            mid = y[:, rows // 2]  # (d_out, cols): a row away from the top and bottom borders
            expected = torch.stack([mid[:, j - 1] - mid[:, j - 2], mid[:, j] - mid[:, j - 1],
                                    mid[:, j + 1] - mid[:, j]])  # (3, d_out)
            got = answer(weight.clone(), delta.clone())
            assert isinstance(got, torch.Tensor), f"return a tensor, got {type(got).__name__}"
            assert tuple(got.shape) == tuple(expected.shape), (
                f"weight {tuple(weight.shape)}: expected a (3, {weight.shape[0]}) tensor, got {tuple(got.shape)}")
            for k, pair in enumerate(["(j-2, j-1)", "(j-1, j)", "(j, j+1)"]):
                assert close(got[k], expected[k], atol=1e-4), (
                    f"weight {tuple(weight.shape)}: the jump on the pair {pair} is wrong "
                    f"(expected {[round(v, 3) for v in expected[k].tolist()]}, got {[round(v, 3) for v in got[k].tolist()]})")

    return run_check("the jumps a 3x3 conv leaves of a step", compare)


TOP_DOWN_CASES = [[(8, 8), (4, 4), (2, 2), (1, 1)],  # an input of 32 x 32: every side doubles
                  [(25, 33), (13, 17), (7, 9), (4, 5)],  # 100 x 130
                  [(19, 16), (10, 8), (5, 4), (3, 2)],  # 76 x 64: odd rows only
                  [(2, 7), (1, 4), (1, 2), (1, 1)]]


def check_top_down(answer) -> bool:
    """answer(laterals [L2, L3, L4, L5], each (B, d, h_l, w_l)) -> [M2, M3, M4, M5], the merged maps that
    the library's FPN computes (M5 = L5, M_l = L_l + Up(M_{l+1}))."""

    def compare():
        need_function(answer)
        refuse_names(answer, {"interpolate", "upsample", "Upsample"},
                     "keep repeat_interleave and fix the cut; F.interpolate (or an Upsample) copies the "
                     "library's own line instead of finding the bug")
        fpn = _random_fpn()
        for sizes in TOP_DOWN_CASES:
            with torch.random.fork_rng():
                torch.manual_seed(4)
                C = [torch.randn(2, c, h, w) for c, (h, w) in zip(fpn.in_channels, sizes)]  # [C2..C5]
            expected = merged_maps(fpn, C)  # [M2..M5] as FPN.forward computes them
            with torch.no_grad():
                laterals = [conv(c) for conv, c in zip(fpn.lateral, C)]  # [(2, d, h_l, w_l)]
                got = answer([lat.clone() for lat in laterals])
            assert isinstance(got, (list, tuple)) and len(got) == 4, "return the list [M2, M3, M4, M5]"
            for level, g, e in reversed(list(zip((2, 3, 4, 5), got, expected))):  # M5 first: where it goes wrong
                assert isinstance(g, torch.Tensor) and g.shape == e.shape, (
                    f"C2 of {sizes[0][0]}x{sizes[0][1]}: M{level} should be {tuple(e.shape)}, "
                    f"got {tuple(g.shape) if isinstance(g, torch.Tensor) else type(g).__name__}")
                assert close(g, e, atol=1e-5), (
                    f"C2 of {sizes[0][0]}x{sizes[0][1]}: M{level} has the right shape but not the library's values")

    return run_check("the top-down path on odd and even sizes", compare)
