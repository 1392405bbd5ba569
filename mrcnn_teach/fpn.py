"""Feature Pyramid Network: C2..C5 -> P2..P6 (Lin et al. 2017, Sec. 3; Mask R-CNN Sec. 3).

ResNet's C5 is semantically strong but coarse (stride 32); C2 is fine (stride 4) but semantically weak.
FPN gives every level both (FPN Fig. 3):

  * lateral:   a 1x1 conv brings each C_l to the same width d = 256;
  * top-down:  the coarser merged map is upsampled (nearest neighbour) and added to the lateral;
  * output:    a 3x3 conv on every merged map -- on P5 and P2 too -- which smooths the blocky
               nearest-neighbour upsampling (FPN Sec. 3: it reduces aliasing), giving P2..P5;
  * P6:        a stride-2 subsampling of P5, used only by the RPN for the largest anchors (FPN Sec. 4.1).

The upsampling goes to the lateral's exact size rather than "x2": ResNet maps a side n to ceil(n/2), so
for an input whose side is not a multiple of 32 the coarser map doubled is one pixel too big
(e.g. C4 is 7 wide but C5 = 4 doubled is 8).
"""

import torch
import torch.nn.functional as F
from torch import nn


class FPN(nn.Module):
    """lateral[i] and output[i] belong to level i (index 0 is C2/P2)."""

    def __init__(self, in_channels, out_channels=256):
        super().__init__()
        if len(in_channels) == 0 or any(c <= 0 for c in in_channels):
            raise ValueError(f"FPN: in_channels must be a non-empty list of positive ints, got {in_channels!r}")
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, kernel_size=1) for c in in_channels)
        self.output = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1) for _ in in_channels
        )
        # torchvision's (and Detectron's) init: uniform with a=1, i.e. bound sqrt(3 / fan_in); biases 0.
        for conv in [*self.lateral, *self.output]:
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)

    def forward(self, features):
        """features: [C2, C3, C4, C5] -> [P2, P3, P4, P5, P6], all with out_channels channels."""
        if len(features) != len(self.lateral):
            raise ValueError(f"FPN: expected {len(self.lateral)} feature maps (C2..C5), got {len(features)}")
        for level, (c, expected) in enumerate(zip(features, self.in_channels)):
            if c.dim() != 4 or c.shape[1] != expected:
                raise ValueError(
                    f"FPN: feature map {level} should be (B, {expected}, h, w), got {tuple(c.shape)}"
                )

        # Top-down pathway, coarsest level first (FPN Sec. 3).
        merged = self.lateral[-1](features[-1])  # (B, d, h5, w5)
        outputs = [self.output[-1](merged)]  # [P5 (B, d, h5, w5)]
        for level in range(len(features) - 2, -1, -1):
            lateral = self.lateral[level](features[level])  # (B, d, h_l, w_l)
            top_down = F.interpolate(merged, size=lateral.shape[-2:], mode="nearest")  # (B, d, h_l, w_l)
            merged = lateral + top_down  # (B, d, h_l, w_l)
            outputs.insert(0, self.output[level](merged))  # P_l (B, d, h_l, w_l)

        # P6: kernel 1, stride 2 = keep every other pixel of P5 (FPN Sec. 4.1; torchvision's LastLevelMaxPool).
        P6 = F.max_pool2d(outputs[-1], kernel_size=1, stride=2)  # (B, d, ceil(h5/2), ceil(w5/2))
        return outputs + [P6]  # [P2, P3, P4, P5, P6]


def merged_maps(fpn: FPN, features) -> list:
    """The merged maps [M2..M5] that `fpn(features)` hands to its 3x3 output convs (P_l = output[l](M_l)).

    Caught with forward pre-hooks on the output convs, so they are exactly what FPN.forward computed,
    not a re-implementation. No gradients: for looking at, as notebook 02 does.
    """
    caught = {}
    hooks = [conv.register_forward_pre_hook(lambda module, inputs, i=i: caught.__setitem__(i, inputs[0]))
             for i, conv in enumerate(fpn.output)]
    try:
        with torch.no_grad():
            fpn(features)
    finally:
        for hook in hooks:
            hook.remove()
    return [caught[i] for i in range(len(fpn.output))]  # [(B, d, h_l, w_l)]


class BackboneWithFPN(nn.Module):
    """ResNet body + FPN: images (B, 3, H, W) -> [P2, P3, P4, P5, P6], each (B, out_channels, h_l, w_l)."""

    def __init__(self, body, fpn):
        super().__init__()
        if list(body.out_channels) != list(fpn.in_channels):
            raise ValueError(
                f"BackboneWithFPN: body gives channels {list(body.out_channels)} but the FPN expects "
                f"{list(fpn.in_channels)}"
            )
        self.body = body
        self.fpn = fpn
        self.out_channels = fpn.out_channels

    def forward(self, images):
        features = self.body(images)  # [C2..C5], (B, C_l, h_l, w_l)
        return self.fpn(features)  # [P2..P6], (B, d, h_l, w_l)
