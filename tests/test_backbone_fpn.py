"""norm.py, backbone.py and fpn.py against their torchvision twins, on small odd-sized images."""

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection.backbone_utils import BackboneWithFPN as TVBackboneWithFPN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d as TVFrozenBatchNorm2d

from mrcnn_teach.backbone import ResNetBody
from mrcnn_teach.fpn import FPN, BackboneWithFPN
from mrcnn_teach.norm import FrozenBatchNorm2d, norm_layer

TV_RESNETS = {18: torchvision.models.resnet18, 34: torchvision.models.resnet34,
              50: torchvision.models.resnet50, 101: torchvision.models.resnet101}
RETURN_LAYERS = {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}
# An image whose sides are not multiples of 32: every stride-2 layer rounds up.
ODD_IMAGE = (1, 3, 97, 131)
ODD_SIZES = [(25, 33), (13, 17), (7, 9), (4, 5)]  # C2..C5 of ODD_IMAGE


def tv_name_to_ours(name):
    """torchvision resnet parameter name -> ResNetBody name (None for the classifier `fc`)."""
    if name.startswith("layer"):
        return f"res{int(name[5]) + 1}{name[6:]}"  # layer1.0.conv1.weight -> res2.0.conv1.weight
    if name.startswith(("conv1.", "bn1.")):
        return "stem." + name
    return None


def resnet_state_dict_for_body(tv_state):
    return {tv_name_to_ours(k): v for k, v in tv_state.items() if tv_name_to_ours(k) is not None}


def randomise_norm_stats(model, seed):
    """Give every BatchNorm non-trivial statistics so a mis-wired layer cannot hide behind identities."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, TVFrozenBatchNorm2d, FrozenBatchNorm2d)):
            c = m.weight.shape[0]
            with torch.no_grad():
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)


# ----------------------------------------------------------------------------------------------- norm


def random_bn_state(c, seed):
    g = torch.Generator().manual_seed(seed)
    return {
        "weight": torch.rand(c, generator=g) + 0.5,
        "bias": torch.randn(c, generator=g),
        "running_mean": torch.randn(c, generator=g),
        "running_var": torch.rand(c, generator=g) * 3 + 0.01,
    }


@pytest.mark.parametrize("eps", [1e-5, 1e-3])
def test_frozen_bn_matches_torchvision(eps):
    state = random_bn_state(8, seed=0)
    ours, theirs = FrozenBatchNorm2d(8, eps=eps), TVFrozenBatchNorm2d(8, eps=eps)
    ours.load_state_dict(state)
    theirs.load_state_dict(state)
    x = torch.randn(2, 8, 5, 7, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
    assert sorted(n for n, _ in ours.named_buffers()) == sorted(n for n, _ in theirs.named_buffers())
    assert list(ours.parameters()) == []  # nothing for an optimiser to touch


def test_frozen_bn_equals_batchnorm_in_eval_and_loads_its_state_dict():
    bn = nn.BatchNorm2d(8)
    bn.load_state_dict({**random_bn_state(8, seed=2), "num_batches_tracked": torch.tensor(7)})
    frozen = FrozenBatchNorm2d(8)
    result = frozen.load_state_dict(bn.state_dict(), strict=True)  # num_batches_tracked silently dropped
    assert result.missing_keys == [] and result.unexpected_keys == []
    x = torch.randn(4, 8, 6, 5, generator=torch.Generator().manual_seed(3)) * 2 + 1
    bn.eval()
    torch.testing.assert_close(frozen(x), bn(x), rtol=1e-5, atol=1e-5)
    # Frozen means frozen: train() changes nothing, whereas BatchNorm switches to batch statistics.
    frozen.train()
    bn.train()
    torch.testing.assert_close(frozen(x), bn.eval()(x), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(nn.BatchNorm2d(8).train()(x), frozen(x), atol=1e-2)


def test_norm_layer_kinds():
    assert isinstance(norm_layer("frozen_bn")(64), FrozenBatchNorm2d)
    assert type(norm_layer("bn")(64)) is nn.BatchNorm2d
    gn = norm_layer("gn")(256)
    assert isinstance(gn, nn.GroupNorm) and gn.num_groups == 32 and gn.num_channels == 256
    with pytest.raises(ValueError, match="unknown kind 'batchnorm'"):
        norm_layer("batchnorm")


# ------------------------------------------------------------------------------------------- backbone


@pytest.mark.parametrize("depth", [18, 50])
def test_resnet_body_matches_torchvision(depth):
    torch.manual_seed(0)
    tv = TV_RESNETS[depth](weights=None)
    randomise_norm_stats(tv, seed=depth)
    tv_body = IntermediateLayerGetter(tv, RETURN_LAYERS).eval()
    ours = ResNetBody(depth=depth, norm="bn", trainable_layers=5).eval()
    ours.load_state_dict(resnet_state_dict_for_body(tv.state_dict()), strict=True)

    images = torch.randn(*ODD_IMAGE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = list(tv_body(images).values())
        C = ours(images)
    assert len(C) == 4
    for level, (c, e, (h, w)) in enumerate(zip(C, expected, ODD_SIZES)):
        assert c.shape == (1, ours.out_channels[level], h, w)
        torch.testing.assert_close(c, e, rtol=1e-5, atol=1e-5)


def test_frozen_bn_body_loads_batchnorm_checkpoint_and_matches_torchvision():
    # The Mask R-CNN recipe: an ImageNet (BatchNorm) checkpoint loaded into a frozen-BN network.
    torch.manual_seed(0)
    bn_resnet = torchvision.models.resnet18(weights=None)
    randomise_norm_stats(bn_resnet, seed=5)
    checkpoint = bn_resnet.state_dict()  # holds num_batches_tracked entries
    tv_frozen = torchvision.models.resnet18(weights=None, norm_layer=TVFrozenBatchNorm2d)
    tv_frozen.load_state_dict(checkpoint)
    ours = ResNetBody(depth=18, norm="frozen_bn")
    ours.load_state_dict(resnet_state_dict_for_body(checkpoint), strict=True)

    images = torch.randn(2, 3, 61, 45, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = list(IntermediateLayerGetter(tv_frozen, RETURN_LAYERS)(images).values())
        C = ours.train()(images)  # train mode: frozen BN must still use the stored statistics
    for c, e in zip(C, expected):
        torch.testing.assert_close(c, e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("depth,channels", [(18, [64, 128, 256, 512]), (34, [64, 128, 256, 512]),
                                            (50, [256, 512, 1024, 2048]), (101, [256, 512, 1024, 2048])])
def test_resnet_body_structure_and_strides(depth, channels):
    torch.manual_seed(0)
    ours = ResNetBody(depth=depth, norm="frozen_bn")
    assert ours.out_channels == channels
    # Same parameters and buffers, same shapes, as torchvision's network minus its classifier.
    tv = TV_RESNETS[depth](weights=None, norm_layer=TVFrozenBatchNorm2d)
    expected = {tv_name_to_ours(k): v.shape for k, v in tv.state_dict().items() if tv_name_to_ours(k)}
    assert {k: v.shape for k, v in ours.state_dict().items()} == expected
    with torch.no_grad():
        C = ours(torch.randn(1, 3, 64, 96))
    for c, ch, stride in zip(C, channels, (4, 8, 16, 32)):
        assert c.shape == (1, ch, 64 // stride, 96 // stride)


@pytest.mark.parametrize("k", range(6))
def test_trainable_layers_like_torchvision(k):
    tv = torchvision.models.resnet18(weights=None)  # BatchNorm, so bn1's parameters are visible too
    _resnet_fpn_extractor(tv, k)
    expected = {tv_name_to_ours(n): p.requires_grad for n, p in tv.named_parameters() if tv_name_to_ours(n)}
    ours = ResNetBody(depth=18, norm="bn", trainable_layers=k)
    got = {n: p.requires_grad for n, p in ours.named_parameters()}
    # torchvision leaves the BatchNorm layers of a frozen stage as they are; ours become FrozenBatchNorm2d
    # (their weight and bias turn into buffers), so exactly the frozen stages' BN parameters are missing
    missing = set(expected) - set(got)
    assert set(got) <= set(expected) and all(".bn" in n or ".downsample.1." in n for n in missing)
    assert all(not expected[n] for n in missing)
    assert got == {n: flag for n, flag in expected.items() if n not in missing}
    trained_stages = sorted({n.split(".")[0] for n, flag in got.items() if flag})
    assert trained_stages == sorted(["stem", "res2", "res3", "res4", "res5"][5 - k:])
    for i, stage in enumerate(["stem", "res2", "res3", "res4", "res5"]):
        bns = [m for m in getattr(ours, stage).modules() if isinstance(m, nn.BatchNorm2d)]
        assert (len(bns) > 0) == (i >= 5 - k), stage


def test_a_frozen_stage_computes_the_same_function_after_training():
    # requires_grad=False alone would leave BatchNorm normalising with batch statistics in train mode and
    # updating its running averages: the "frozen" stem would change with every step.
    torch.manual_seed(0)
    body = ResNetBody(depth=18, norm="bn", trainable_layers=5)
    for m in body.modules():  # statistics as a checkpoint would carry them
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    probe = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = body.eval().stem(probe)
    from mrcnn_teach.backbone import freeze_stages

    freeze_stages(body, 3).train()
    optimizer = torch.optim.SGD([p for p in body.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        sum(c.mean() for c in body(torch.randn(2, 3, 64, 64) * 3 + 1)).backward()
        optimizer.step()
    with torch.no_grad():
        assert torch.allclose(body.stem(probe), before, atol=1e-6)  # train mode, after two steps
        assert torch.allclose(body.eval().stem(probe), before, atol=1e-6)
    assert isinstance(body.res3[0].bn1, nn.BatchNorm2d) and body.res3[0].bn1.num_batches_tracked == 2


def test_freeze_batchnorm_keeps_function_device_and_dtype():
    from mrcnn_teach.norm import FrozenBatchNorm2d, freeze_batchnorm

    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.BatchNorm2d(4))).double()
    bn = module[1][0]
    bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    expected = module.eval()(x)
    freeze_batchnorm(module)
    frozen = module[1][0]  # nested modules are converted too
    assert isinstance(frozen, FrozenBatchNorm2d) and frozen.weight.dtype == torch.float64
    assert torch.allclose(module.train()(x), expected, atol=1e-12)  # train mode: the same fixed map


def test_resnet_body_rejects_bad_arguments():
    with pytest.raises(ValueError, match="depth"):
        ResNetBody(depth=42)
    with pytest.raises(ValueError, match="trainable_layers"):
        ResNetBody(depth=18, trainable_layers=6)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        ResNetBody(depth=18)(torch.zeros(1, 1, 32, 32))


def test_group_norm_body_trains():
    torch.manual_seed(0)
    body = ResNetBody(depth=18, norm="gn", trainable_layers=5).train()
    gns = [m for m in body.modules() if isinstance(m, nn.GroupNorm)]
    assert len(gns) == 1 + 2 * 8 + 3 and all(m.num_groups == 32 for m in gns)  # stem + 2 per block + shortcuts
    assert not any(isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)) for m in body.modules())
    images = torch.randn(2, 3, 40, 56)

    def loss_fn():
        return sum((c ** 2).mean() for c in body(images))

    loss = loss_fn()
    loss.backward()
    for name, p in body.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    with torch.no_grad():
        for p in body.parameters():
            p -= 1e-3 * p.grad
    assert loss_fn().item() < loss.item()


# ------------------------------------------------------------------------------------------------ FPN


def odd_features(channels, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, c, h, w, generator=g) for c, (h, w) in zip(channels, ODD_SIZES)]


def fpn_state_dict_from_torchvision(tv_fpn_state):
    """inner_blocks.i.0 -> lateral.i, layer_blocks.i.0 -> output.i."""
    ours = {"inner_blocks": "lateral", "layer_blocks": "output"}
    renamed = {}
    for k, v in tv_fpn_state.items():
        block, i, _, param = k.split(".")  # e.g. inner_blocks.0.0.weight
        renamed[f"{ours[block]}.{i}.{param}"] = v
    return renamed


@pytest.mark.parametrize("channels,d", [([8, 16, 32, 64], 16), ([256, 512, 1024, 2048], 256)])
def test_fpn_matches_torchvision(channels, d):
    torch.manual_seed(0)
    tv = FeaturePyramidNetwork(channels, d, extra_blocks=LastLevelMaxPool())
    ours = FPN(channels, d)
    ours.load_state_dict(fpn_state_dict_from_torchvision(tv.state_dict()), strict=True)
    C = odd_features(channels)
    with torch.no_grad():
        expected = list(tv(OrderedDict((str(i), c) for i, c in enumerate(C))).values())
        P = ours(C)
    assert len(P) == len(expected) == 5
    for p, e, (h, w) in zip(P, expected, ODD_SIZES + [(2, 3)]):
        assert p.shape == (2, d, h, w)
        torch.testing.assert_close(p, e, rtol=1e-5, atol=1e-5)


def test_fpn_output_conv_on_every_level_and_p6_subsamples_p5():
    torch.manual_seed(0)
    fpn = FPN([8, 16, 32, 64], 16)
    C = odd_features([8, 16, 32, 64], seed=4)
    with torch.no_grad():
        P2, P3, P4, P5, P6 = fpn(C)
        # P5 is the 3x3 output conv of C5's lateral, not the lateral itself (the seed forgets it).
        torch.testing.assert_close(P5, fpn.output[3](fpn.lateral[3](C[3])))
        assert not torch.allclose(P5, fpn.lateral[3](C[3]), atol=1e-3)
        # P6 keeps every other pixel of P5 (rows/cols 0, 2, 4, ...).
        torch.testing.assert_close(P6, P5[:, :, ::2, ::2], rtol=0, atol=0)
        # P2 is the 3x3 output conv of (lateral + upsampled merged P3 input), also not skipped.
        merged = fpn.lateral[3](C[3])
        for level in (2, 1, 0):
            merged = fpn.lateral[level](C[level]) + F.interpolate(merged, size=C[level].shape[-2:], mode="nearest")
        torch.testing.assert_close(P2, fpn.output[0](merged))


def seed_style_top_down(fpn, C):
    """The seed's top-down pathway: upsample by exactly 2 (wrong for odd sizes)."""
    merged = fpn.lateral[3](C[3])  # (B, d, h5, w5)
    for level in (2, 1, 0):
        merged = fpn.lateral[level](C[level]) + F.interpolate(merged, scale_factor=2)  # size mismatch if odd
    return merged


def test_seed_scale_factor_2_breaks_on_odd_sizes_but_ours_works():
    torch.manual_seed(0)
    fpn = FPN([8, 16, 32, 64], 16)
    C = odd_features([8, 16, 32, 64])  # C4 is 7x9 but C5 = 4x5 doubled is 8x10
    with torch.no_grad():
        with pytest.raises(RuntimeError, match="size of tensor"):
            seed_style_top_down(fpn, C)
        P = fpn(C)
    assert [tuple(p.shape[-2:]) for p in P] == ODD_SIZES + [(2, 3)]
    # On a multiple-of-32 size, x2 and exact-size upsampling agree -- which is why the bug hides.
    g = torch.Generator().manual_seed(1)
    C_even = [torch.randn(1, c, 16 // 2 ** i, 24 // 2 ** i, generator=g) for i, c in enumerate([8, 16, 32, 64])]
    with torch.no_grad():
        torch.testing.assert_close(fpn.output[0](seed_style_top_down(fpn, C_even)), fpn(C_even)[0])


def test_fpn_init_like_torchvision():
    torch.manual_seed(0)
    fpn = FPN([64, 128], 128)
    for conv in [*fpn.lateral, *fpn.output]:
        fan_in = conv.weight[0].numel()
        bound = (3.0 / fan_in) ** 0.5  # kaiming_uniform_(a=1): sqrt(6 / ((1 + a^2) fan_in))
        assert conv.bias.abs().max() == 0
        assert conv.weight.abs().max() <= bound
        assert abs(conv.weight.std().item() - bound / 3 ** 0.5) < 0.05 * bound  # std of U(-b, b) is b/sqrt(3)


def test_fpn_rejects_bad_input():
    fpn = FPN([8, 16, 32, 64], 16)
    with pytest.raises(ValueError, match="expected 4 feature maps"):
        fpn(odd_features([8, 16, 32]))
    with pytest.raises(ValueError, match="feature map 2 should be"):
        fpn(odd_features([8, 16, 30, 64]))


def test_backbone_with_fpn_matches_torchvision():
    torch.manual_seed(0)
    tv_resnet = torchvision.models.resnet18(weights=None, norm_layer=TVFrozenBatchNorm2d)
    randomise_norm_stats(tv_resnet, seed=9)
    tv = TVBackboneWithFPN(tv_resnet, RETURN_LAYERS, [64, 128, 256, 512], 32, extra_blocks=LastLevelMaxPool())
    ours = BackboneWithFPN(ResNetBody(depth=18, norm="frozen_bn"), FPN([64, 128, 256, 512], 32))
    assert ours.out_channels == 32
    state = {}
    for k, v in tv.state_dict().items():
        part, rest = k.split(".", 1)
        if part == "body":
            state["body." + tv_name_to_ours(rest)] = v
        else:
            state["fpn." + fpn_state_dict_from_torchvision({rest: v}).popitem()[0]] = v
    ours.load_state_dict(state, strict=True)
    images = torch.randn(*ODD_IMAGE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = list(tv(images).values())
        P = ours(images)
    for p, e, (h, w) in zip(P, expected, ODD_SIZES + [(2, 3)]):
        assert p.shape == (1, 32, h, w)
        torch.testing.assert_close(p, e, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="expects"):
        BackboneWithFPN(ResNetBody(depth=18), FPN([256, 512, 1024, 2048]))
