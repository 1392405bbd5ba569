"""heads.py against torchvision's TwoMLPHead, FastRCNNPredictor, MaskRCNNHeads, MaskRCNNPredictor."""

from functools import partial

import pytest
import torch
from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

from mrcnn_teach import build_maskrcnn
from mrcnn_teach.heads import BoxHead, BoxPredictor, ConvFCBoxHead, MaskHead, MaskPredictor


def copy_weights(ours, theirs, rename):
    """Load `theirs` state dict into `ours`, renaming keys with the (their prefix -> our prefix) pairs."""
    state = {}
    for key, value in theirs.state_dict().items():
        for old, new in rename:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        state[key] = value
    ours.load_state_dict(state)  # strict: every parameter must be covered


def test_box_head_and_predictor_match_torchvision():
    torch.manual_seed(0)
    x = torch.randn(6, 8, 7, 7)  # (N, C, 7, 7)
    theirs_head, theirs_pred = TwoMLPHead(8 * 7 * 7, 32), FastRCNNPredictor(32, 5)
    ours_head, ours_pred = BoxHead(8, resolution=7, representation_size=32), BoxPredictor(32, 5)
    copy_weights(ours_head, theirs_head, [("fc6", "fc1"), ("fc7", "fc2")])
    copy_weights(ours_pred, theirs_pred, [("bbox_pred", "bbox_deltas")])

    features = ours_head(x)
    torch.testing.assert_close(features, theirs_head(x))
    assert features.shape == (6, 32) and (features >= 0).all()
    logits, deltas = ours_pred(features)
    their_logits, their_deltas = theirs_pred(features)
    assert logits.shape == (6, 5) and deltas.shape == (6, 20)
    torch.testing.assert_close(logits, their_logits)
    torch.testing.assert_close(deltas, their_deltas)


def test_mask_head_and_predictor_match_torchvision():
    torch.manual_seed(1)
    x = torch.randn(4, 8, 14, 14)  # (N, C, 14, 14)
    theirs_head = MaskRCNNHeads(8, [16, 16, 16, 16], dilation=1)
    theirs_pred = MaskRCNNPredictor(16, 12, num_classes=5)
    ours_head, ours_pred = MaskHead(8, layers=(16, 16, 16, 16)), MaskPredictor(16, 5, dim_reduced=12)
    copy_weights(ours_head, theirs_head, [(f"{i}.0.", f"convs.{i}.") for i in range(4)])
    copy_weights(ours_pred, theirs_pred, [("conv5_mask", "deconv"), ("mask_fcn_logits", "mask_logits")])

    features = ours_head(x)
    assert features.shape == (4, 16, 14, 14)
    torch.testing.assert_close(features, theirs_head(x))
    logits = ours_pred(features)
    assert logits.shape == (4, 5, 28, 28)
    torch.testing.assert_close(logits, theirs_pred(features))


def test_class_agnostic_mask_predictor_has_one_channel():
    pred = MaskPredictor(16, 5, dim_reduced=12, class_agnostic=True)
    assert pred.mask_logits.out_channels == 1
    assert pred(torch.randn(3, 16, 14, 14)).shape == (3, 1, 28, 28)


def test_mask_layers_use_torchvision_init():
    torch.manual_seed(2)
    head, pred = MaskHead(64, layers=(256, 256)), MaskPredictor(256, 3)
    # kaiming_normal_(mode="fan_out", relu): std = sqrt(2 / (out_channels * k * k)).
    for conv in head.convs:
        assert torch.all(conv.bias == 0)
        assert abs(conv.weight.std().item() - (2 / (256 * 9)) ** 0.5) < 0.002
    # ConvTranspose2d weight is (in, out, k, k): PyTorch's fan_out is dim 0 * k * k = 256 * 4.
    assert abs(pred.deconv.weight.std().item() - (2 / (256 * 4)) ** 0.5) < 0.003


# ---------------------------------------------------------------- heads with normalisation (from scratch)

TV_NORMS = {"gn": partial(nn.GroupNorm, 32), "bn": nn.BatchNorm2d}


@pytest.mark.parametrize("norm", [None, "gn", "bn"])
def test_conv_fc_box_head_matches_torchvision(norm):
    """Our 4conv1fc head vs torchvision's FastRCNNConvFCHead (the head of maskrcnn_resnet50_fpn_v2)."""
    torch.manual_seed(3)
    x = torch.randn(6, 8, 7, 7)  # (N, C, 7, 7)
    theirs = FastRCNNConvFCHead((8, 7, 7), [64, 64, 64, 64], [32], norm_layer=TV_NORMS.get(norm))
    ours = ConvFCBoxHead(8, 7, conv_channels=(64,) * 4, representation_size=32, norm=norm)
    for m in theirs.modules():  # non-trivial affine parameters, so a mix-up would show
        if isinstance(m, (nn.GroupNorm, nn.BatchNorm2d)):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    # torchvision: Sequential(4 x Conv2dNormActivation, Flatten, Linear, ReLU) -> indices 0-3 and 5
    copy_weights(ours, theirs, [*((f"{i}.", f"convs.{i}.") for i in range(4)), ("5.", "fc.")])
    ours.train(), theirs.train()
    features = ours(x)
    assert features.shape == (6, 32) and (features >= 0).all()
    torch.testing.assert_close(features, theirs(x))
    assert all((block[0].bias is None) == (norm is not None) for block in ours.convs)


@pytest.mark.parametrize("norm", ["gn", "bn"])
def test_mask_head_with_norm_matches_torchvision(norm):
    torch.manual_seed(4)
    x = torch.randn(4, 8, 14, 14)  # (N, C, 14, 14)
    theirs = MaskRCNNHeads(8, [64, 64, 64, 64], dilation=1, norm_layer=TV_NORMS[norm])
    ours = MaskHead(8, layers=(64,) * 4, norm=norm)
    for m in theirs.modules():
        if isinstance(m, (nn.GroupNorm, nn.BatchNorm2d)):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    copy_weights(ours, theirs, [(f"{i}.", f"convs.{i}.") for i in range(4)])
    features = ours(x)
    assert features.shape == (4, 64, 14, 14)
    torch.testing.assert_close(features, theirs(x))


def test_config_builds_the_chosen_box_head():
    paper = build_maskrcnn("shapes_tiny", box_head="2fc", head_norm=None)
    assert isinstance(paper.roi_heads.box_head, BoxHead)
    scratch = build_maskrcnn("shapes_tiny", box_head="4conv1fc", head_norm="gn")
    assert isinstance(scratch.roi_heads.box_head, ConvFCBoxHead)
    assert isinstance(scratch.roi_heads.mask_head.convs[0][1], nn.GroupNorm)
    with pytest.raises(ValueError, match="box_head must be"):
        build_maskrcnn("shapes_tiny", box_head="3fc")
