"""Worked solutions of the exercises of 01_backbone.ipynb (for teachers; tests/test_exercises.py runs them)."""

from torch import nn

from mrcnn_teach.exercises.nb01 import check_bottleneck_cost, check_freeze_stages, check_resnet_d_sizes
from mrcnn_teach.norm import FrozenBatchNorm2d


def resnet_d_sizes(H, W):
    """The main path rounds up at every stride-2 layer, ceil(n / 2); the ResNet-D shortcut's 2x2 average
    pool (floor mode) rounds down, floor(n / 2). The residual sum of res3[0], res4[0], res5[0] needs both
    equal, so C2, C3 and C4 must have even sides; otherwise the network raises.

    Follow-up: ceil(n / 4) must be a multiple of 8, so a side runs only if it is 32m - 3 ... 32m (29..32,
    61..64, ...): a multiple of 32, or at most 3 short of one. With ceil_mode=True the pool rounds up
    like the 3x3 branch, ceil(n / 2), and every input side works (timm's avg-pool shortcut does this)."""
    h, w = -(-H // 4), -(-W // 4)  # C2: conv1 and the max pool each give ceil(n / 2)
    sizes = [(h, w)]
    for _ in range(3):  # res3, res4, res5
        if h % 2 or w % 2:  # ceil(n/2) (3x3 conv, stride 2, padding 1) != floor(n/2) (2x2 average pool)
            return None
        h, w = h // 2, w // 2
        sizes.append((h, w))
    return sizes


def freeze_stages(body, k):
    """Freeze the first 5 - k stages. requires_grad=False stops the gradient, but a BatchNorm layer in
    train mode still normalises with the batch's statistics and updates its running averages, so its
    stage would go on changing. Replace each of those by a FrozenBatchNorm2d holding its statistics."""

    def freeze_bn(module):
        for name, child in module.named_children():
            if isinstance(child, nn.BatchNorm2d):
                frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
                frozen.load_state_dict(child.state_dict())  # gamma, beta, mu, var (num_batches_tracked dropped)
                setattr(module, name, frozen)
            else:
                freeze_bn(child)

    for i, name in enumerate(("stem", "res2", "res3", "res4", "res5")):
        stage = getattr(body, name)
        stage.requires_grad_(i >= 5 - k)
        if i < 5 - k:
            freeze_bn(stage)
    return body


def bottleneck_cost(in_channels, planes, stride, h, w):
    """Parameters: the three convs (no bias), a BatchNorm (gamma, beta) after each, and the projection
    shortcut (1x1 conv + BN) when the stride or the width changes. Multiply-accumulates: a conv costs
    its weight count at every output position; torchvision's stride sits on the 3x3 (ResNet v1.5), so
    conv1 runs at the input's size and conv2, conv3 and the projection at the output's, ceil(h / s).

    Follow-up: for res3[0] of ResNet-50 (256 -> 128 -> 512, 32x32 input) v1.5 costs 121.6 M MACs; with
    the stride on conv1 (the 2016 paper), conv1 runs on 16x16 and the block costs 96.5 M, 21 % less.
    The price of v1: a 1x1 conv of stride 2 reads only a quarter of its input positions (the argument
    for ResNet-B in "Bag of Tricks", Sec. 4.2); v1.5 lets the 3x3 conv see all of them."""
    out_channels = 4 * planes
    h_out, w_out = -(-h // stride), -(-w // stride)
    conv1, conv2, conv3 = in_channels * planes, 9 * planes * planes, planes * out_channels  # weights
    params = conv1 + conv2 + conv3 + 2 * (planes + planes + out_channels)
    macs = conv1 * h * w + (conv2 + conv3) * h_out * w_out
    if stride != 1 or in_channels != out_channels:
        params += in_channels * out_channels + 2 * out_channels
        macs += in_channels * out_channels * h_out * w_out
    return params, macs


CHECKS = [
    (check_resnet_d_sizes, resnet_d_sizes),
    (check_freeze_stages, freeze_stages),
    (check_bottleneck_cost, bottleneck_cost),
]


def _plain_resnet_sizes(H, W):  # the sizes of the ordinary ResNet: forgets that the shortcut rounds down
    h, w = -(-H // 4), -(-W // 4)
    sizes = [(h, w)]
    for _ in range(3):
        h, w = -(-h // 2), -(-w // 2)
        sizes.append((h, w))
    return sizes


def _none_if_the_input_is_odd(H, W):  # blames the input's parity instead of C2..C4's
    return None if H % 2 or W % 2 else _plain_resnet_sizes(H, W)


def _freeze_requires_grad_only(body, k):  # the bug: BatchNorm of a frozen stage still moves in train mode
    for i, name in enumerate(("stem", "res2", "res3", "res4", "res5")):
        getattr(body, name).requires_grad_(i >= 5 - k)
    return body


def _freeze_with_eval(body, k):  # eval() once: body.train() undoes it at the next training step
    _freeze_requires_grad_only(body, k)
    for name in ("stem", "res2", "res3", "res4", "res5")[:5 - k]:
        getattr(body, name).eval()
    return body


def _cost_stride_in_first_conv(in_channels, planes, stride, h, w):  # the 2016 paper's ResNet v1, not v1.5
    params, _ = bottleneck_cost(in_channels, planes, stride, h, w)
    h_out, w_out = -(-h // stride), -(-w // stride)
    macs = (in_channels * planes + 9 * planes * planes + 4 * planes * planes) * h_out * w_out
    if stride != 1 or in_channels != 4 * planes:
        macs += in_channels * 4 * planes * h_out * w_out
    return params, macs


def _cost_floor(in_channels, planes, stride, h, w):  # output size h // stride: wrong for odd sides
    params, _ = bottleneck_cost(in_channels, planes, stride, h, w)
    h_out, w_out = h // stride, w // stride
    macs = in_channels * planes * h * w + 13 * planes * planes * h_out * w_out
    if stride != 1 or in_channels != 4 * planes:
        macs += in_channels * 4 * planes * h_out * w_out
    return params, macs


WRONG = [
    (check_resnet_d_sizes, _plain_resnet_sizes),
    (check_resnet_d_sizes, _none_if_the_input_is_odd),
    (check_freeze_stages, _freeze_requires_grad_only),
    (check_freeze_stages, _freeze_with_eval),
    (check_bottleneck_cost, _cost_stride_in_first_conv),
    (check_bottleneck_cost, _cost_floor),
]
