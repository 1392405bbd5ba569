"""Checks for the exercises of notebooks/01_backbone.ipynb (ResNet body, conv arithmetic, normalisation).

Each check compares the student's answer with the library itself on inputs the student did not
choose: the C2..C5 sizes with a ResNetBody run on odd-sized inputs, the folded BatchNorm with
FrozenBatchNorm2d loaded from the same state dict, the parameter count with the block `make_stage`
builds.
"""

from __future__ import annotations

import torch
from torch import nn

from . import close, run_check

# (H, W) inputs whose sides are mostly not multiples of 32.
ODD_SIZES = [(100, 75), (97, 61), (33, 130), (64, 64), (129, 31), (1, 1)]
# (in_channels, planes, stride) of a first bottleneck block: ResNet-50's res2..res5 and a few others.
BOTTLENECKS = [(64, 64, 1), (256, 128, 2), (512, 256, 2), (1024, 512, 2), (256, 64, 1), (48, 16, 1)]


def check_c_sizes(c_sizes) -> bool:
    """c_sizes(H, W) -> [(h, w)] of C2..C5."""

    def compare():
        if c_sizes is None:
            raise NotImplementedError
        from ..backbone import ResNetBody

        torch.manual_seed(0)
        body = ResNetBody(depth=18, norm="gn").eval()
        for H, W in ODD_SIZES:
            with torch.no_grad():
                expected = [tuple(C.shape[-2:]) for C in body(torch.zeros(1, 3, H, W))]
            got = [tuple(int(v) for v in hw) for hw in c_sizes(H, W)]
            assert got == expected, f"for a {H}x{W} input expected {expected}, got {got}"

    return run_check("C2..C5 sizes", compare)


def check_fold_bn(fold_bn) -> bool:
    """fold_bn(bn) -> (scale, shift), each (C,), with x * scale + shift == bn(x) in eval mode."""

    def compare():
        if fold_bn is None:
            raise NotImplementedError
        from ..norm import FrozenBatchNorm2d

        g = torch.Generator().manual_seed(7)
        C = 6
        bn = nn.BatchNorm2d(C, eps=1e-3).eval()  # a non-default eps, so that it must be read from bn
        with torch.no_grad():
            bn.running_mean.copy_(torch.randn(C, generator=g))
            bn.running_var.copy_(torch.rand(C, generator=g) * 3 + 0.01)
            bn.weight.copy_(torch.randn(C, generator=g))
            bn.bias.copy_(torch.randn(C, generator=g))
        frozen = FrozenBatchNorm2d(C, eps=1e-3)
        frozen.load_state_dict(bn.state_dict())
        scale, shift = fold_bn(bn)
        scale, shift = torch.as_tensor(scale).detach().reshape(-1), torch.as_tensor(shift).detach().reshape(-1)
        expected_scale = frozen.weight * torch.rsqrt(frozen.running_var + frozen.eps)
        expected_shift = frozen.bias - frozen.running_mean * expected_scale
        assert scale.shape == (C,) and shift.shape == (C,), (
            f"expected two ({C},) tensors, got {tuple(scale.shape)}, {tuple(shift.shape)}")
        assert close(scale, expected_scale, atol=1e-5), f"scale {scale.tolist()} != {expected_scale.tolist()}"
        assert close(shift, expected_shift, atol=1e-5), f"shift {shift.tolist()} != {expected_shift.tolist()}"
        x = torch.randn(2, C, 3, 3, generator=g)
        with torch.no_grad():
            assert close(x * scale[:, None, None] + shift[:, None, None], bn(x), atol=1e-5)

    return run_check("BatchNorm folded into scale and shift", compare)


def check_bottleneck_params(bottleneck_params) -> bool:
    """bottleneck_params(in_channels, planes, stride) -> parameter count of make_stage's first block."""

    def compare():
        if bottleneck_params is None:
            raise NotImplementedError
        from torchvision.models.resnet import Bottleneck

        from ..backbone import make_stage

        for in_channels, planes, stride in BOTTLENECKS:
            block = make_stage(Bottleneck, in_channels, planes, 1, stride, nn.BatchNorm2d)[0]
            expected = sum(p.numel() for p in block.parameters())
            got = bottleneck_params(in_channels, planes, stride)
            assert int(got) == expected, (f"in_channels={in_channels}, planes={planes}, stride={stride}: "
                                          f"expected {expected:,}, got {got}")

    return run_check("bottleneck parameter count", compare)
