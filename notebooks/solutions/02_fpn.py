"""Worked solutions to the exercises of 02_fpn.ipynb (for teachers; tests/test_exercises.py runs them).

CHECKS pairs every check the notebook calls with its solution; WRONG holds plausible mistakes that
the checks must reject.
"""

import torch

from mrcnn_teach.exercises.nb02 import check_changed_cells, check_step_jumps, check_top_down


# Exercise 1 -------------------------------------------------------------------------------------
def changed_cells(row, col, h5, w5):
    """Follow the change down the top-down path, which carries the merged maps M_l, not the P_l.
    M5 = L5(C5) is a 1x1 conv: only cell (row, col) moves. Each nearest-neighbour x2 upsampling copies a
    cell into a 2x2 block, so at level l the moved cells of M_l are the f x f block from (row*f, col*f),
    f = 2^(5-l). The 3x3 output conv (padding 1) grows that block by one cell on each side, cut at the
    map's border. P6 keeps the even rows and columns of P5: P5 row r is P6 row r/2."""
    boxes = {}
    for level in (2, 3, 4, 5):
        f = 2 ** (5 - level)
        h, w = h5 * f, w5 * f
        boxes[level] = (max(row * f - 1, 0), min(row * f + f, h - 1), max(col * f - 1, 0), min(col * f + f, w - 1))
    r0, r1, c0, c1 = boxes[5]
    boxes[6] = ((r0 + 1) // 2, r1 // 2, (c0 + 1) // 2, c1 // 2)  # the even rows/cols of P5's range, halved
    return boxes


# Exercise 2 -------------------------------------------------------------------------------------
def step_jumps(weight, delta):
    """PyTorch's conv2d is a cross-correlation: y[:, c] = sum_v W_v x[:, c + v - 1] along a row, where
    W_v = weight[..., v].sum(-1 over kernel rows) = the kernel's column v summed over its rows (the map is
    constant down each column). A neighbour difference y[c] - y[c-1] only sees the one input pair that
    jumps, (j-1, j), through the column v = j - c + 1: the pair (j-2, j-1) sees column 2, (j-1, j) column 1,
    (j, j+1) column 0. The three jumps add up to (sum of all nine taps) @ delta: the step is spread over
    three cells, and its total height changes only by that matrix; a 3x3 can only make it vanish by
    sending delta to zero."""
    columns = weight.sum(dim=2)  # (d_out, d_in, 3): kernel column v summed over kernel rows
    return torch.stack([columns[..., 2] @ delta, columns[..., 1] @ delta, columns[..., 0] @ delta])  # (3, d_out)


# Exercise 3 -------------------------------------------------------------------------------------
def top_down(laterals):
    """The bug: after doubling, the copy is cut with [-h:, -w:], which drops the FIRST row/column when
    the finer side is odd, so every fine cell i reads coarse cell (i+1)//2 instead of i//2: a shift of
    one fine cell, and the last coarse row is paired with the first fine row. Cut from the start instead
    ([:h, :w]): coarse cell i then covers fine cells 2i and 2i+1 on every size, as on even sizes (and as
    F.interpolate(size=...) with mode="nearest" does). Even sizes hid the bug: nothing is cut there."""
    merged = [laterals[-1]]  # M5 = L5
    for lateral in reversed(laterals[:-1]):
        h, w = lateral.shape[-2:]
        up = merged[0].repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)  # (B, d, 2h', 2w')
        merged.insert(0, lateral + up[..., :h, :w])  # (B, d, h, w)
    return merged  # [M2, M3, M4, M5]


CHECKS = [
    (check_changed_cells, changed_cells),
    (check_step_jumps, step_jumps),
    (check_top_down, top_down),
]


# Plausible mistakes ----------------------------------------------------------------------------
def changed_cells_from_P(row, col, h5, w5):  # the top-down path passing P_{l+1} (3x3 applied) downwards
    boxes = {5: (max(row - 1, 0), min(row + 1, h5 - 1), max(col - 1, 0), min(col + 1, w5 - 1))}
    for level in (4, 3, 2):
        r0, r1, c0, c1 = boxes[level + 1]
        h, w = h5 * 2 ** (5 - level), w5 * 2 ** (5 - level)
        boxes[level] = (max(2 * r0 - 1, 0), min(2 * r1 + 2, h - 1), max(2 * c0 - 1, 0), min(2 * c1 + 2, w - 1))
    r0, r1, c0, c1 = boxes[5]
    boxes[6] = ((r0 + 1) // 2, r1 // 2, (c0 + 1) // 2, c1 // 2)
    return boxes


def changed_cells_no_3x3(row, col, h5, w5):  # forgets the output conv: only the upsampled block moves
    boxes = {level: (row * 2 ** (5 - level), row * 2 ** (5 - level) + 2 ** (5 - level) - 1,
                     col * 2 ** (5 - level), col * 2 ** (5 - level) + 2 ** (5 - level) - 1) for level in (2, 3, 4, 5)}
    boxes[6] = (row // 2, row // 2, col // 2, col // 2)
    return boxes


def changed_cells_p6_floor(row, col, h5, w5):  # P6 as P5's range halved with floor: an odd first row counts
    boxes = changed_cells(row, col, h5, w5)
    r0, r1, c0, c1 = boxes[5]
    boxes[6] = (r0 // 2, r1 // 2, c0 // 2, c1 // 2)
    return boxes


def step_jumps_flipped(weight, delta):  # a true convolution (kernel flipped): columns in the wrong order
    columns = weight.sum(dim=2)
    return torch.stack([columns[..., 0] @ delta, columns[..., 1] @ delta, columns[..., 2] @ delta])


def step_jumps_thirds(weight, delta):  # "a 3x3 is a blur": the total height, a third on each pair
    total = weight.sum(dim=(2, 3)) @ delta  # (d_out,)
    return torch.stack([total / 3, total / 3, total / 3])


def step_jumps_rows(weight, delta):  # sums the kernel over its columns (a horizontal step seen as vertical)
    rows = weight.sum(dim=3)
    return torch.stack([rows[..., 2] @ delta, rows[..., 1] @ delta, rows[..., 0] @ delta])


def buggy_top_down(laterals):  # the notebook's buggy copy: right on even sizes only
    merged = [laterals[-1]]
    for lateral in reversed(laterals[:-1]):
        h, w = lateral.shape[-2:]
        up = merged[0].repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
        merged.insert(0, lateral + up[..., -h:, -w:])
    return merged


def top_down_nearest_exact(laterals):  # PyTorch's "nearest-exact": equal on even sizes, shifted on odd ones
    merged = [laterals[-1]]
    for lateral in reversed(laterals[:-1]):
        merged.insert(0, lateral + torch.nn.functional.interpolate(merged[0], size=lateral.shape[-2:],
                                                                   mode="nearest-exact"))
    return merged


def top_down_times_two(laterals):  # scale_factor=2: crashes on odd sizes
    merged = [laterals[-1]]
    for lateral in reversed(laterals[:-1]):
        merged.insert(0, lateral + torch.nn.functional.interpolate(merged[0], scale_factor=2, mode="nearest"))
    return merged


def top_down_library_line(laterals):  # right values, but copies FPN.forward's F.interpolate: the check refuses it
    merged = [laterals[-1]]
    for lateral in reversed(laterals[:-1]):
        merged.insert(0, lateral + torch.nn.functional.interpolate(merged[0], size=lateral.shape[-2:], mode="nearest"))
    return merged


WRONG = [
    (check_changed_cells, changed_cells_from_P),
    (check_changed_cells, changed_cells_no_3x3),
    (check_changed_cells, changed_cells_p6_floor),
    (check_step_jumps, step_jumps_flipped),
    (check_step_jumps, step_jumps_thirds),
    (check_step_jumps, step_jumps_rows),
    (check_top_down, buggy_top_down),
    (check_top_down, top_down_nearest_exact),  # (these two call F.interpolate, so the name check stops them first)
    (check_top_down, top_down_times_two),
    (check_top_down, top_down_library_line),
    (check_changed_cells, None),
]
