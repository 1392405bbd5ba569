"""Checks for the exercises of notebooks/01_backbone.ipynb (conv arithmetic, frozen stages, bottleneck cost).

Each check compares the student's answer with the library itself, run on inputs the student did not
choose: the C2..C5 sizes with a ResNet-D variant of ResNetBody that the check builds and runs, the
frozen stages with a BatchNorm ResNet that the check trains for two steps, the bottleneck's cost with
the block `make_stage` builds, counted by torch.utils.flop_counter.
"""

from __future__ import annotations

import torch
from torch import nn

from . import need_function, refuse_names, run_check

STAGES = ("stem", "res2", "res3", "res4", "res5")

# (H, W) inputs for the ResNet-D variant: some run, some do not (shown in messages / hidden).
RESNET_D_CASES = [(128, 128), (100, 75), (61, 64), (224, 200), (125, 96), (29, 32)]
RESNET_D_HIDDEN = [(160, 93), (127, 128), (64, 97), (252, 250), (93, 190), (33, 30)]
# (in_channels, planes, stride, h, w): the first block of a stage and its input size.
BOTTLENECK_CASES = [(64, 64, 1, 56, 56), (256, 128, 2, 56, 56), (512, 256, 2, 28, 28), (1024, 512, 2, 13, 17)]
BOTTLENECK_HIDDEN = [(256, 64, 1, 20, 30), (48, 16, 2, 9, 7), (2048, 512, 1, 7, 7), (128, 32, 2, 15, 16)]


def resnet_d_body():
    """ResNet-18 whose stride-2 shortcuts are ResNet-D's: AvgPool2d(2, stride=2) (PyTorch's default,
    floor) and then a 1x1 conv of stride 1, instead of the 1x1 conv of stride 2. Built without moving
    the caller's random state."""
    from ..backbone import ResNetBody

    with torch.random.fork_rng():
        torch.manual_seed(0)
        body = ResNetBody(depth=18, norm="frozen_bn", trainable_layers=0).eval()
    for stage in (body.res3, body.res4, body.res5):
        block = stage[0]
        conv, norm = block.downsample
        block.downsample = nn.Sequential(nn.AvgPool2d(2, stride=2),
                                         nn.Conv2d(conv.in_channels, conv.out_channels, 1, bias=False), norm)
    return body


def resnet_d_sizes_run(body, H, W):
    """The true answer: [(h, w)] of C2..C5 from a forward pass, or None if the forward pass fails."""
    try:
        with torch.no_grad():
            return [tuple(C.shape[-2:]) for C in body(torch.zeros(1, 3, H, W))]
    except RuntimeError:  # the residual sum's shapes differ (or a map got too small to pool)
        return None


def check_resnet_d_sizes(resnet_d_sizes, hidden=False) -> bool:
    """resnet_d_sizes(H, W) -> [(h, w)] of C2..C5, or None where the variant cannot run."""

    def compare():
        need_function(resnet_d_sizes)
        body = resnet_d_body()
        for H, W in RESNET_D_HIDDEN if hidden else RESNET_D_CASES:
            got = resnet_d_sizes(H, W)
            expected = resnet_d_sizes_run(body, H, W)
            if got is not None:
                got = [tuple(int(v) for v in hw) for hw in got]
            if expected is None:
                assert got is None, f"a {H}x{W} input cannot go through this network, but you predicted {got}"
            else:
                assert got == expected, f"for a {H}x{W} input expected {expected}, got {got}"

    return run_check("C2..C5 sizes of the ResNet-D variant", compare, hidden=hidden)


def _bn_body():
    """A BatchNorm ResNet-18 with made-up running statistics (as a checkpoint would carry), all trainable."""
    from ..backbone import ResNetBody

    with torch.random.fork_rng():
        torch.manual_seed(1)
        body = ResNetBody(depth=18, norm="bn", trainable_layers=5)
        for m in body.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
    return body


def _stage_inputs(generator):
    """One input per stage of a ResNet-18 body: (2, channels, h, w)."""
    shapes = {"stem": (3, 64), "res2": (64, 16), "res3": (64, 16), "res4": (128, 8), "res5": (256, 4)}
    return {name: torch.randn(2, c, s, s, generator=generator) * 2 + 0.5 for name, (c, s) in shapes.items()}


def check_freeze_stages(freeze_stages) -> bool:
    """freeze_stages(body, k) -> body: only the last k stages train, the others compute a fixed function."""

    def compare():
        need_function(freeze_stages)
        refuse_names(freeze_stages, ("freeze_stages", "freeze_batchnorm"),
                     "the library's function is the solution; write it yourself")
        g = torch.Generator().manual_seed(3)
        probes = _stage_inputs(g)
        for k in (3, 1, 4):
            body = _bn_body()
            with torch.no_grad():
                before = {name: getattr(body.eval(), name)(x) for name, x in probes.items()}
            body = freeze_stages(body, k)  # (the student's function: may raise NotImplementedError)
            assert isinstance(body, nn.Module), f"return the body (got {type(body).__name__})"
            for i, name in enumerate(STAGES):
                stage = getattr(body, name)
                flags = {p.requires_grad for p in stage.parameters()}
                if i >= 5 - k:
                    assert flags == {True}, f"k={k}: {name} should train, but not all its parameters have a gradient"
                    assert any(isinstance(m, nn.BatchNorm2d) for m in stage.modules()), (
                        f"k={k}: {name} trains, so its BatchNorm layers should stay ordinary BatchNorm")
                else:
                    assert True not in flags, f"k={k}: {name} should be frozen, but some of its parameters train"
            body.train()
            trainable = [p for p in body.parameters() if p.requires_grad]
            optimizer = torch.optim.SGD(trainable, lr=0.05)
            for _ in range(2):  # two training steps on batches unlike the checkpoint's statistics
                optimizer.zero_grad()
                sum(C.mean() for C in body(torch.randn(2, 3, 64, 64, generator=g) * 3 + 1)).backward()
                optimizer.step()
            with torch.no_grad():
                for i, name in enumerate(STAGES[:5 - k]):
                    for mode in ("train", "eval"):
                        stage = getattr(body.train(mode == "train"), name)
                        change = (stage(probes[name]) - before[name]).abs().max().item()
                        assert change < 1e-5, (f"k={k}: after two training steps the frozen {name} computes another "
                                               f"function in {mode} mode (it moved by up to {change:.2g})")

    return run_check("frozen stages stay frozen", compare)


def bottleneck_cost_measured(in_channels, planes, stride, h, w):
    """(parameters, multiply-accumulates of the convs) of make_stage's first Bottleneck, measured."""
    from torch.utils.flop_counter import FlopCounterMode
    from torchvision.models.resnet import Bottleneck

    from ..backbone import make_stage

    block = make_stage(Bottleneck, in_channels, planes, 1, stride, nn.BatchNorm2d)[0].eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        block(torch.zeros(1, in_channels, h, w))
    return sum(p.numel() for p in block.parameters()), counter.get_total_flops() // 2  # a MAC is 2 FLOPs


def check_bottleneck_cost(bottleneck_cost, hidden=False) -> bool:
    """bottleneck_cost(in_channels, planes, stride, h, w) -> (parameters, MACs) of make_stage's first block."""

    def compare():
        need_function(bottleneck_cost)
        refuse_names(bottleneck_cost, ("make_stage", "Bottleneck", "FlopCounterMode", "flop_counter", "macs",
                                       "bottleneck_cost_measured"),
                     "that is how the check measures the answer; count with arithmetic only")
        for in_channels, planes, stride, h, w in BOTTLENECK_HIDDEN if hidden else BOTTLENECK_CASES:
            got = tuple(int(v) for v in bottleneck_cost(in_channels, planes, stride, h, w))
            expected = bottleneck_cost_measured(in_channels, planes, stride, h, w)
            where = f"in_channels={in_channels}, planes={planes}, stride={stride}, input {h}x{w}"
            assert got[0] == expected[0], f"{where}: expected {expected[0]:,} parameters, got {got[0]:,}"
            assert got[1] == expected[1], f"{where}: expected {expected[1]:,} multiply-accumulates, got {got[1]:,}"

    return run_check("bottleneck parameters and multiply-accumulates", compare, hidden=hidden)
