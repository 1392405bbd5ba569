"""The paper's ablations as real options: RoIPool as the RoI layer (Table 2c) and the softmax mask loss (Table 2b).

Each option is checked against its definition on a hand-made case, for shapes and gradients, and in a
whole model that trains a step and predicts.
"""

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import MultiScaleRoIAlign, roi_pool

from mrcnn_teach import build_maskrcnn
from mrcnn_teach.kernels import MIXED, TEACHING, TORCHVISION
from mrcnn_teach.poolers import MultiLevelRoIAlign, assign_levels
from mrcnn_teach.roi_heads import mask_loss, softmax_mask_loss

from test_model import synthetic_image


# ------------------------------------------------------------------------- RoIPool as the RoI layer

@pytest.mark.parametrize("kernels", [TEACHING, TORCHVISION, MIXED], ids=lambda k: k.name)
def test_roi_pool_layer_pools_each_roi_from_its_level(kernels):
    g = torch.Generator().manual_seed(0)
    sizes = [(16, 20), (8, 10), (4, 5), (2, 3)]  # P2..P5 of a 64 x 80 image
    features = [torch.randn(1, 3, h, w, generator=g) for h, w in sizes]
    boxes = torch.tensor([[3.0, 5.0, 20.0, 30.0], [0.0, 0.0, 60.0, 64.0], [10.0, 2.0, 79.0, 63.0]])  # (3, 4)
    levels = assign_levels(boxes)  # (3,)
    pooler = MultiLevelRoIAlign(7, 2, kernels=kernels, layer="pool")
    out = pooler(features, [boxes], [(64, 80)])
    assert out.shape == (3, 3, 7, 7)
    # The definition: RoIPool (torchvision's kernel) of each box on its FPN level at that level's scale.
    for i, level in enumerate(levels.tolist()):
        expected = roi_pool(features[level], [boxes[i:i + 1]], 7, spatial_scale=1 / 2 ** (level + 2))
        torch.testing.assert_close(out[i:i + 1], expected, rtol=0, atol=0)
    # And it is not RoIAlign: the same boxes pooled by RoIAlign differ.
    align = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)(
        OrderedDict((str(i), f) for i, f in enumerate(features)), [boxes], [(64, 80)])
    assert (out - align).abs().max() > 0.1


def test_roi_pool_layer_gradient_goes_to_one_cell_per_bin():
    feature = torch.randn(1, 1, 16, 16, requires_grad=True)  # P2 of a 64 x 64 image
    features = [feature] + [torch.zeros(1, 1, 16 // 2**k, 16 // 2**k) for k in (1, 2, 3)]
    box = torch.tensor([[4.0, 4.0, 40.0, 40.0]])  # 36 px: level P2 (index 0)
    assert assign_levels(box).item() == 0
    MultiLevelRoIAlign(2, 2, layer="pool")(features, [box], [(64, 64)]).sum().backward()
    # Max pooling: each of the 2 x 2 bins sends its gradient to its argmax cell only.
    assert (feature.grad != 0).sum().item() <= 4 and feature.grad.sum().item() == 4.0


def test_bad_roi_layer_is_refused():
    with pytest.raises(ValueError, match="layer must be 'align'"):
        MultiLevelRoIAlign(7, 2, layer="warp")


# ------------------------------------------------------------------------------ softmax mask loss

def test_softmax_mask_loss_is_fcn_per_pixel_cross_entropy():
    # Two RoIs, K = 2 classes (+ background), 2 x 2 masks; binary targets make the definition plain:
    # each pixel's class is the RoI's class inside the mask and background (0) outside.
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 2, 2, generator=g)  # (P, K+1, M, M)
    targets = torch.tensor([[[1.0, 0.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 1.0]]])  # (P, M, M)
    labels = torch.tensor([2, 1])  # (P,)
    by_hand = 0.0
    for p in range(2):
        for y in range(2):
            for x in range(2):
                cls = labels[p] if targets[p, y, x] == 1 else 0
                by_hand += -torch.log_softmax(logits[p, :, y, x], dim=0)[cls]
    by_hand /= 8
    torch.testing.assert_close(softmax_mask_loss(logits, targets, labels), by_hand)
    # Same as PyTorch's cross-entropy with class indices (the hard-target special case).
    pixel_class = labels[:, None, None] * targets.long()  # (P, M, M)
    torch.testing.assert_close(softmax_mask_loss(logits, targets, labels), F.cross_entropy(logits, pixel_class))


def test_softmax_mask_loss_thresholds_soft_targets_at_one_half():
    # RoIAlign'd GT masks are soft at the border: a pixel is the RoI's class from t = 0.5 up.
    logits = torch.tensor([[[[0.0, 0.0, 0.0]], [[5.0, 5.0, 5.0]], [[-1.0, -1.0, -1.0]]]])  # (1, K+1=3, 1, 3)
    targets = torch.tensor([[[0.3, 0.5, 0.9]]])  # (1, 1, 3)
    logp = torch.log_softmax(logits[0, :, 0, 0], dim=0)  # the same logits at every pixel
    expected = -(logp[0] + logp[1] + logp[1]) / 3  # background, class 1, class 1
    torch.testing.assert_close(softmax_mask_loss(logits, targets, torch.tensor([1])), expected)


def test_softmax_gives_every_channel_a_gradient_sigmoid_only_the_gt_class():
    g = torch.Generator().manual_seed(2)
    gt_mask = torch.zeros(1, 32, 32, dtype=torch.uint8)
    gt_mask[0, 8:24, 6:20] = 1
    rois, labels, matched = [torch.tensor([[4.0, 4.0, 28.0, 28.0]])], [torch.tensor([2])], [torch.tensor([0])]
    grads = {}
    for kind in ("sigmoid", "softmax"):
        logits = torch.randn(1, 4, 28, 28, generator=g, requires_grad=True)  # (P, K+1, 28, 28)
        loss = mask_loss(logits, rois, [gt_mask], labels, matched, kind=kind)
        assert loss.shape == () and torch.isfinite(loss)
        loss.backward()
        grads[kind] = logits.grad.abs().sum(dim=(2, 3))[0]  # (K+1,) gradient mass per channel
    assert grads["sigmoid"][2] > 0 and grads["sigmoid"][[0, 1, 3]].sum() == 0  # decoupled
    assert (grads["softmax"] > 0).all()  # the classes compete


def test_softmax_refuses_class_agnostic_masks():
    with pytest.raises(ValueError, match="class_agnostic"):
        softmax_mask_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2), torch.tensor([1]))
    with pytest.raises(ValueError, match="class_agnostic"):
        build_maskrcnn("shapes_tiny", mask_loss="softmax", class_agnostic_masks=True)
    with pytest.raises(ValueError, match="mask_loss must be"):
        build_maskrcnn("shapes_tiny", mask_loss="dice")


# ------------------------------------------------------------------------- both, in a whole model

@pytest.mark.parametrize("overrides", [dict(roi_layer="pool"), dict(mask_loss="softmax"),
                                       dict(roi_layer="pool", mask_loss="softmax")], ids=str)
def test_ablation_models_train_and_predict(overrides):
    torch.manual_seed(0)
    model = build_maskrcnn("shapes_tiny", **overrides).train()
    image, target = synthetic_image()
    losses = model([image], [target])
    total = sum(losses.values())
    assert torch.isfinite(total) and losses["loss_mask"] > 0
    total.backward()
    head = model.roi_heads.mask_predictor.mask_logits.weight.grad  # (K+1, C, 1, 1)
    assert head is not None and torch.isfinite(head).all()
    model.eval()
    (pred,) = model([image])
    assert pred["masks"].shape[1:] == (1, 96, 112)
    assert ((pred["masks"] >= 0) & (pred["masks"] <= 1)).all()
