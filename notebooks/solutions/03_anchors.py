"""Worked solutions to the exercises of 03_anchors.ipynb (for teachers; tests/test_exercises.py runs them).

CHECKS pairs every check the notebook calls with its solution; WRONG holds plausible mistakes that
the checks must reject.
"""

import math

import torch

from mrcnn_teach.configs import get_config
from mrcnn_teach.exercises.nb03 import check_anchor_design, check_max_stride, check_stolen_pair


# Exercise 1 -------------------------------------------------------------------------------------
def max_stride(size, min_iou):
    """A box half a stride t off in x and in y overlaps its anchor (same size s) in an (s - t/2)^2
    square, so IoU = o / (2 s^2 - o) with o = (s - t/2)^2. IoU >= u  <=>  o / s^2 >= 2u / (1 + u),
    so t = 2 s (1 - sqrt(2u / (1 + u))): about 0.185 s for u = 0.7 (5.92 px for a 32-px anchor).
    Read the other way, an anchor keeps IoU >= 0.7 anywhere on its grid only if it is at least
    1 / 0.185 = 5.4 strides wide: at stride 4, of shapes_tiny's P2 sizes 16, 20 and 25 (24 after
    rounding) only the last."""
    return 2 * size * (1 - math.sqrt(2 * min_iou / (1 + min_iou)))


# Exercise 2 -------------------------------------------------------------------------------------
def my_anchor_design():
    """Two square sizes per level, a factor 1.45 apart, from 18 px: P2 18 and 26, P3 36 and 52, ...

    The boxes are nearly square (h/w 0.88..1.14 for 90% of them), so one ratio is enough and the
    budget k <= 2 goes to sizes. Only P2..P4 matter (strides 4, 8, 16): the data's 6..67 px boxes are
    nobody's best anchor on P5 and P6. With two sizes per octave the teeth of the sawtooth are a
    factor 1.45 and 1.38 apart (a centred box midway gets 1/1.45 = 0.69 at worst), so a base a little
    above 4 strides (18 px, not 16) puts the teeth on the bulk of the boxes and a smaller size at P2's
    bottom end; the design loses the boxes under ~14 px (smaller than any anchor by a factor the IoU
    cannot bear) and those sitting in the dips away from a grid point. Against shapes_tiny's three
    sizes per octave: a third fewer anchors for about 5 points less coverage (83% against 88% on
    these 300 images); the plain 2 sizes per octave from 16 px (16, 23), copied
    from section 7's table with the square ratio, falls short (81%, the check asks for 82%)."""
    sizes = tuple((round(18 * 2**level), round(18 * 1.45 * 2**level)) for level in range(5))
    return sizes, ((1.0,),) * 5


# Exercise 3 -------------------------------------------------------------------------------------
def stolen_pair():
    """Box 1 is exactly shapes_tiny's 24-px P2 anchor at (64, 64) ("25 px" before rounding); box 0 is a
    26-px square on the same centre. Box 0 contains that anchor, so its best IoU is 24^2 / 26^2 = 0.85,
    with the anchor that box 1 fits with IoU 1: the low-quality rule hands it back to box 1. Every other
    anchor stays under 0.7 for box 0: 26 px lies in the dip between the sizes 24 and 32 (the 32-px
    anchor gets 26^2 / 32^2 = 0.66), and the 24-px anchors one stride away overlap it 24 x 21 px (0.67).
    So box 0, the larger one, has no positive anchor.
    A Matcher that let each box keep its own best anchor would give box 0 that anchor. Box 1 would lose
    its perfect anchor (IoU 1, a zero regression target) but keep its four 24-px neighbours one stride
    away (IoU 0.71 with it, 0.67 with box 0): here the change costs box 1 little. It would cost more where
    the shared anchor is box 1's only one above 0.7."""
    return torch.tensor([[51.0, 51.0, 77.0, 77.0],  # (2, 4): 26 px centred on (64, 64)
                         [52.0, 52.0, 76.0, 76.0]])  # 24 px centred on (64, 64): a P2 anchor


CHECKS = [
    (check_max_stride, max_stride),
    (check_anchor_design, my_anchor_design),
    (check_stolen_pair, stolen_pair),
]


# Plausible mistakes ----------------------------------------------------------------------------
def stride_one_axis(size, min_iou):  # the box off in x only: overlap (s - t/2) * s
    return 2 * size * (1 - 2 * min_iou / (1 + min_iou))


def stride_full_offset(size, min_iou):  # a whole stride off instead of half
    return size * (1 - math.sqrt(2 * min_iou / (1 + min_iou)))


def stride_overlap_over_area(size, min_iou):  # IoU taken as overlap / area: forgets the union
    return 2 * size * (1 - math.sqrt(min_iou))


def design_of_shapes_tiny():  # copied from the config: k = 3, over the budget
    cfg = get_config("shapes_tiny")
    return cfg["anchor_sizes"], cfg["aspect_ratios"]


def design_one_size_two_ratios():  # k = 2 spent on ratios the square boxes do not need
    return tuple((round(20 * 2**level),) for level in range(5)), ((0.8, 1.25),) * 5


def design_uneven_k():  # three sizes on P2, one elsewhere: the shared RPN head needs one k
    return ((16, 20, 25), (40,), (80,), (160,), (320,)), ((1.0,),) * 5


def design_octave_apart():  # two sizes per level an octave apart = one size per level, duplicated
    return tuple((round(16 * 2**level), round(32 * 2**level)) for level in range(5)), ((1.0,),) * 5


def pair_of_section_8():  # the notebook's pair from image 460, loser first: the loser is the smaller box
    return torch.tensor([[50.0, 21.0, 84.0, 50.0], [48.0, 13.0, 79.0, 45.0]])


def pair_reversed():  # the solution's boxes the other way round: box 0 is then the one that keeps its anchor
    return stolen_pair().flip(0)


def pair_in_a_dip_alone():  # a larger box in a dip, but far from the other: it keeps its best anchor
    return torch.tensor([[13.0, 13.0, 39.0, 39.0], [80.0, 80.0, 104.0, 104.0]])


def pair_too_small():  # box 1 is smaller than any shape's box can be
    return torch.tensor([[51.0, 51.0, 77.0, 77.0], [60.0, 60.0, 68.0, 68.0]])


WRONG = [
    (check_max_stride, stride_one_axis),
    (check_max_stride, stride_full_offset),
    (check_max_stride, stride_overlap_over_area),
    (check_anchor_design, design_of_shapes_tiny),
    (check_anchor_design, design_one_size_two_ratios),
    (check_anchor_design, design_uneven_k),
    (check_anchor_design, design_octave_apart),
    (check_stolen_pair, pair_of_section_8),
    (check_stolen_pair, pair_reversed),
    (check_stolen_pair, pair_in_a_dip_alone),
    (check_stolen_pair, pair_too_small),
]
