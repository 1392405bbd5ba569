"""Normalisation layers for the ResNet backbone.

Mask R-CNN (He et al. 2017) fine-tunes an ImageNet-pretrained ResNet with 2 images per GPU (Sec. 3.1).
Batch statistics of 1-2 images are too noisy to train BatchNorm, so the reference implementations
(Detectron, torchvision) freeze the pretrained statistics and affine parameters: each BN becomes a fixed
per-channel affine map ("frozen BN", as Wu & He 2018, Group Normalization, Sec. 6.1, call it). That is
FrozenBatchNorm2d. When training from scratch there are no pretrained statistics to freeze, and
ordinary BatchNorm (large enough batches) or GroupNorm (batch-size independent) is used instead.
"""

import torch
from torch import nn


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters: y = x * scale + shift, per channel.

    With gamma = weight, beta = bias, mu = running_mean, var = running_var:
        scale = gamma / sqrt(var + eps),   shift = beta - mu * scale.
    All four are buffers (not parameters), so no optimiser touches them and train()/eval() make no
    difference. Names match torchvision.ops.FrozenBatchNorm2d and nn.BatchNorm2d, so an ImageNet
    state dict loads unchanged (its `num_batches_tracked` entries are dropped).

    Use it for PRETRAINED weights only. Built fresh, the buffers are the identity (mean 0, var 1,
    gamma 1, beta 0) and stay that way forever: the network then has no normalisation at all. The
    convs can still learn any scale, but from the standard initialisation the activations and
    gradients of an unnormalised ResNet grow with depth (notebook 01, section 7.2), which makes
    training from scratch hard. Use norm="bn" or norm="gn" for that.
    """

    def __init__(self, num_features, eps=1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))  # (C,) gamma
        self.register_buffer("bias", torch.zeros(num_features))  # (C,) beta
        self.register_buffer("running_mean", torch.zeros(num_features))  # (C,) mu
        self.register_buffer("running_var", torch.ones(num_features))  # (C,) var

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # nn.BatchNorm2d saves a step counter we have no use for; drop it so strict loading of a
        # BatchNorm checkpoint works (torchvision's FrozenBatchNorm2d does the same).
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def forward(self, x):
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)  # (C,)
        shift = self.bias - self.running_mean * scale  # (C,)
        return x * scale[None, :, None, None] + shift[None, :, None, None]  # (B, C, H, W)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}"


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every nn.BatchNorm2d inside `module` by a FrozenBatchNorm2d with its current statistics.

    Setting requires_grad=False does not freeze a BatchNorm layer: in train mode it still normalises
    with the batch's statistics and updates its running averages. Detectron2 converts the BatchNorm
    layers of its frozen stages the same way (CNNBlockBase.freeze). Returns `module`, changed in place.
    """
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            like = child.weight if child.affine else child.running_mean  # on the layer's device, in its dtype
            if like is not None:
                frozen = frozen.to(device=like.device, dtype=like.dtype)
            if child.affine:
                frozen.weight.copy_(child.weight.detach())
                frozen.bias.copy_(child.bias.detach())
            if child.track_running_stats:
                frozen.running_mean.copy_(child.running_mean)
                frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module


def _group_norm(num_channels):
    return nn.GroupNorm(32, num_channels)  # Wu & He 2018: 32 groups is their default


NORM_KINDS = {
    "frozen_bn": FrozenBatchNorm2d,  # pretrained backbone, small batches (the Mask R-CNN recipe)
    "bn": nn.BatchNorm2d,  # from scratch with a reasonable batch size
    "gn": _group_norm,  # from scratch with any batch size
}


def norm_layer(kind):
    """A constructor num_channels -> nn.Module for kind in {"frozen_bn", "bn", "gn"}.

    A callable is passed through unchanged, so a custom norm layer can be given instead of a name.
    """
    if callable(kind):
        return kind
    if kind not in NORM_KINDS:
        raise ValueError(f"norm_layer: unknown kind {kind!r}; expected one of {sorted(NORM_KINDS)}")
    return NORM_KINDS[kind]
