"""The ResNet body: image -> C2, C3, C4, C5 (Mask R-CNN Sec. 3, "Network Architecture").

Mask R-CNN's backbone is a ResNet (He et al. 2016) with an FPN on top. ResNet (its Table 1) is five
stages; each stage after the first halves the resolution. FPN (Lin et al. 2017, Sec. 3) takes the
output of the last residual block of stages conv2..conv5 and calls it C2..C5:

    paper (ResNet Table 1)          here            output   stride   channels (18/34, 50/101)
    conv1 (7x7/2) + 3x3/2 max pool  stem            -        4        64
    conv2_x                         res2            C2       4        64, 256
    conv3_x                         res3            C3       8        128, 512
    conv4_x                         res4            C4       16       256, 1024
    conv5_x                         res5            C5       32       512, 2048

(The paper counts the max pool as the start of conv2_x; we keep it in the stem, like torchvision.)
conv1's output is not used: at stride 2 it is large and semantically weak (FPN Sec. 3).

The residual blocks are borrowed from torchvision.models.resnet -- it is the classification network
whose ImageNet weights we load -- so parameter names inside a stage match torchvision's
(res2.0.conv1.weight == layer1.0.conv1.weight). Note torchvision's Bottleneck puts the stride-2 on the
3x3 conv ("ResNet v1.5"), not on the first 1x1 conv as in the 2016 paper.
"""

import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from .norm import freeze_batchnorm, norm_layer

# depth -> (block type, number of blocks in res2..res5); ResNet Table 1.
RESNET_SPECS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}

STAGE_NAMES = ("stem", "res2", "res3", "res4", "res5")


class Stem(nn.Module):
    """ResNet's conv1: 7x7 conv stride 2, norm, ReLU, then a 3x3 max pool stride 2 -> stride 4."""

    def __init__(self, make_norm):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = make_norm(64)

    def forward(self, images):
        x = F.relu(self.bn1(self.conv1(images)))  # (B, 64, ceil(H/2), ceil(W/2))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)  # (B, 64, ~H/4, ~W/4)


def make_stage(block, in_channels, planes, num_blocks, stride, make_norm):
    """One ResNet stage: `num_blocks` residual blocks, the first one changing stride/width.

    The first block's shortcut needs a 1x1 projection (ResNet Sec. 3.3, option B) when the shape
    changes; it is `downsample` = (conv1x1, norm), named as in torchvision so weights load.
    """
    out_channels = planes * block.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
            make_norm(out_channels),
        )
    blocks = [block(in_channels, planes, stride, downsample, norm_layer=make_norm)]
    blocks += [block(out_channels, planes, norm_layer=make_norm) for _ in range(1, num_blocks)]
    return nn.Sequential(*blocks)


def freeze_stages(body, trainable_layers):
    """Train only the last `trainable_layers` of (stem, res2, res3, res4, res5); freeze the others.

    Frozen means: no gradient for the stage's parameters (as torchvision's _resnet_fpn_extractor does,
    stage for stage), and no BatchNorm left in it that would still normalise with batch statistics
    and update its running averages in train mode (freeze_batchnorm; a no-op for frozen_bn and gn).
    Why freeze the stem and res2 when fine-tuning (Fast R-CNN Sec. 4.5): the first layers are generic,
    and their activations, the largest of the network, need no storing for the backward pass.
    """
    for i, name in enumerate(STAGE_NAMES):
        stage = getattr(body, name)
        trained = i >= len(STAGE_NAMES) - trainable_layers
        stage.requires_grad_(trained)
        if not trained:
            freeze_batchnorm(stage)
    return body


class ResNetBody(nn.Module):
    """ResNet-{18,34,50,101} without its classifier, returning [C2, C3, C4, C5].

    norm: "frozen_bn" (pretrained weights), "bn" or "gn" (training from scratch); see norm.py.
    trainable_layers k in 0..5: only the last k of (stem, res2, res3, res4, res5) are trained (see
    freeze_stages). Fine-tuning from ImageNet, torchvision and Detectron train from res3 on (k = 3).
    """

    def __init__(self, depth=50, norm="frozen_bn", trainable_layers=3):
        super().__init__()
        if depth not in RESNET_SPECS:
            raise ValueError(f"ResNetBody: depth must be one of {sorted(RESNET_SPECS)}, got {depth!r}")
        if not 0 <= trainable_layers <= 5:
            raise ValueError(f"ResNetBody: trainable_layers must be in 0..5, got {trainable_layers!r}")
        block, counts = RESNET_SPECS[depth]
        make_norm = norm_layer(norm)
        self.depth = depth

        self.stem = Stem(make_norm)
        widths = (64, 128, 256, 512)  # bottleneck widths ("planes") of res2..res5
        strides = (1, 2, 2, 2)  # res2 is already at stride 4 thanks to the stem's max pool
        in_channels = 64
        self.out_channels = []
        for name, planes, n, stride in zip(STAGE_NAMES[1:], widths, counts, strides):
            setattr(self, name, make_stage(block, in_channels, planes, n, stride, make_norm))
            in_channels = planes * block.expansion
            self.out_channels.append(in_channels)

        # Same initialisation as torchvision's ResNet (He et al. 2015 "fan_out" for ReLU nets);
        # norm layers start as the identity (weight 1, bias 0), their default.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

        freeze_stages(self, trainable_layers)
        self.trainable_layers = trainable_layers

    def forward(self, images):
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"ResNetBody: expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        # Every stride-2 layer maps a side n to ceil(n / 2), so "H/4" below means ceil(ceil(H/2)/2) etc.
        x = self.stem(images)  # (B, 64, H/4, W/4)
        C2 = self.res2(x)  # (B, out_channels[0], H/4, W/4)
        C3 = self.res3(C2)  # (B, out_channels[1], H/8, W/8)
        C4 = self.res4(C3)  # (B, out_channels[2], H/16, W/16)
        C5 = self.res5(C4)  # (B, out_channels[3], H/32, W/32)
        return [C2, C3, C4, C5]
