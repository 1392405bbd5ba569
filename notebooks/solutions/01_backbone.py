"""Worked solutions of the exercises of 01_backbone.ipynb (for teachers; tests/test_exercises.py runs them)."""

import torch

from mrcnn_teach.exercises.nb01 import check_bottleneck_params, check_c_sizes, check_fold_bn


def conv_out(n, kernel, stride, padding):
    """Output side of a conv / pool layer: floor((n + 2p - k) / s) + 1."""
    return (n + 2 * padding - kernel) // stride + 1


def c_sizes(H, W):
    """(h, w) of C2..C5: stem conv1 (7x7/2, p3), max pool (3x3/2, p1), then one 3x3/2 conv per stage."""
    h, w = conv_out(H, 7, 2, 3), conv_out(W, 7, 2, 3)  # conv1: stride 2
    h, w = conv_out(h, 3, 2, 1), conv_out(w, 3, 2, 1)  # max pool: stride 4 -> C2 (res2 keeps the size)
    sizes = [(h, w)]
    for _ in range(3):  # res3, res4, res5 each halve, rounding up
        h, w = conv_out(h, 3, 2, 1), conv_out(w, 3, 2, 1)
        sizes.append((h, w))
    return sizes


def fold_bn(bn):
    """y = gamma (x - mu) / sqrt(var + eps) + beta = x * scale + shift (what FrozenBatchNorm2d computes)."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)  # (C,)
    shift = bn.bias.detach() - bn.running_mean * scale  # (C,)
    return scale, shift


def bottleneck_params(in_channels, planes, stride):
    """1x1 reduce + 3x3 + 1x1 expand (x4), BN (weight, bias) after each, and a projection shortcut if needed."""
    out_channels = 4 * planes
    convs = in_channels * planes + 9 * planes * planes + planes * out_channels  # no conv biases
    norms = 2 * (planes + planes + out_channels)  # gamma and beta per channel
    projection = 0
    if stride != 1 or in_channels != out_channels:
        projection = in_channels * out_channels + 2 * out_channels  # 1x1 conv + its BN
    return convs + norms + projection


CHECKS = [
    (check_c_sizes, c_sizes),
    (check_fold_bn, fold_bn),
    (check_bottleneck_params, bottleneck_params),
]


def _naive_sizes(H, W):  # integer division: wrong whenever the side is not a multiple of the stride
    return [(H // s, W // s) for s in (4, 8, 16, 32)]


def _fold_without_mean(bn):  # forgets to subtract the running mean
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias.detach()


def _params_without_projection(in_channels, planes, stride):  # forgets the shortcut's 1x1 conv and BN
    return in_channels * planes + 9 * planes * planes + 4 * planes * planes + 2 * 6 * planes


WRONG = [
    (check_c_sizes, _naive_sizes),
    (check_fold_bn, _fold_without_mean),
    (check_bottleneck_params, _params_without_projection),
]
