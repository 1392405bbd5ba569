"""RPNHead and RegionProposalNetwork against torchvision.models.detection.rpn, on tiny random features.

Setting: a padded batch (3, 3, 64, 96) with different unpadded sizes, five 16-channel levels P2..P6 at
strides 4..64 (P6 is 1x2, so its x-stride is 96 // 2 = 48, like torchvision's integer-division rule),
anchors 8..128 px with 3 aspect ratios (k = 3, A = 1536), small top-n numbers.
"""

from collections import OrderedDict

import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork as TVRegionProposalNetwork
from torchvision.models.detection.rpn import RPNHead as TVRPNHead

from mrcnn_teach.anchors import AnchorGenerator
from mrcnn_teach.boxes import box_iou
from mrcnn_teach.matcher import Matcher
from mrcnn_teach.rpn import RegionProposalNetwork, RPNHead, flatten_head_outputs

SIZES = ((8,), (16,), (32,), (64,), (128,))
RATIOS = ((0.5, 1.0, 2.0),) * 5
FEATURE_SIZES = [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]  # P2..P6 of a 64x96 padded batch
C = 16
IMAGE_SIZES = [(60, 90), (64, 96), (50, 70)]  # (h, w) before padding
HEAD_KEYS = {"conv.0.0.weight": "conv.0.weight", "conv.0.0.bias": "conv.0.bias",
             "cls_logits.weight": "objectness.weight", "cls_logits.bias": "objectness.bias",
             "bbox_pred.weight": "deltas.weight", "bbox_pred.bias": "deltas.bias"}


def make_heads(seed=0):
    """torchvision's RPNHead with lively weights (std 0.1, so deltas and logits vary), and ours with a copy."""
    torch.manual_seed(seed)
    tv_head = TVRPNHead(C, 3)
    with torch.no_grad():
        for p in tv_head.parameters():
            p.normal_(std=0.1)
    head = RPNHead(C, 3)
    head.load_state_dict({HEAD_KEYS[k]: v.clone() for k, v in tv_head.state_dict().items()})
    return tv_head, head


def make_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(3, 3, 64, 96, generator=g)  # (B, 3, H, W) — only its shape matters to the RPN
    features = [torch.randn(3, C, h, w, generator=g) for h, w in FEATURE_SIZES]  # [(B, C, h, w)]
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 40.0, 30.0], [50.0, 5.0, 58.0, 13.0],  # a small box
                                [2.0, 20.0, 88.0, 58.0], [30.0, 30.0, 33.0, 33.0]])},  # a tiny box
        {"boxes": torch.zeros(0, 4)},  # an image with no objects: all anchors are background
        {"boxes": torch.tensor([[5.0, 5.0, 45.0, 25.0], [20.0, 10.0, 36.0, 48.0]])},
    ]
    return images, features, targets


def make_rpns(kernels="teaching", batch=256, frac=0.5, score_thresh=0.0, nms_thresh=0.7):
    tv_head, head = make_heads()
    tops = dict(pre_train=60, pre_test=40, post_train=50, post_test=30)
    ours = RegionProposalNetwork(AnchorGenerator(SIZES, RATIOS), head, 0.7, 0.3, batch, frac,
                                 tops["pre_train"], tops["pre_test"], tops["post_train"], tops["post_test"],
                                 nms_thresh=nms_thresh, score_thresh=score_thresh, kernels=kernels)
    theirs = TVRegionProposalNetwork(TVAnchorGenerator(SIZES, RATIOS), tv_head, 0.7, 0.3, batch, frac,
                                     dict(training=tops["pre_train"], testing=tops["pre_test"]),
                                     dict(training=tops["post_train"], testing=tops["post_test"]),
                                     nms_thresh, score_thresh=score_thresh)
    return ours, theirs


def run_theirs(theirs, images, features, targets=None):
    feats = OrderedDict((str(i), f) for i, f in enumerate(features))
    return theirs(ImageList(images, IMAGE_SIZES), feats, targets)


# ---------------------------------------------------------------------------------------------- head
def test_head_equals_torchvision():
    tv_head, head = make_heads()
    _, features, _ = make_inputs()
    obj, dlt = head(features)
    tv_obj, tv_dlt = tv_head(features)
    for lvl, (h, w) in enumerate(FEATURE_SIZES):
        assert obj[lvl].shape == (3, 3, h, w) and dlt[lvl].shape == (3, 12, h, w)
        torch.testing.assert_close(obj[lvl], tv_obj[lvl], rtol=0, atol=1e-6)
        torch.testing.assert_close(dlt[lvl], tv_dlt[lvl], rtol=0, atol=1e-6)


def test_head_init():
    torch.manual_seed(0)
    head = RPNHead(64, 3)
    for layer in (head.conv[0], head.objectness, head.deltas):
        assert abs(float(layer.weight.detach().std()) - 0.01) < 0.002  # N(0, 0.01^2), Faster R-CNN Sec. 3.1.3
        assert float(layer.bias.detach().abs().max()) == 0.0


def test_flatten_order_is_level_y_x_anchor():
    # Put a single 1 at (image 1, anchor a=2, y=3, x=5) of level 1 (8 x 12 map, k = 3).
    obj = [torch.zeros(2, 3, h, w) for h, w in FEATURE_SIZES]  # [(B, k, h, w)]
    dlt = [torch.zeros(2, 12, h, w) for h, w in FEATURE_SIZES]  # [(B, 4k, h, w)]
    obj[1][1, 2, 3, 5] = 1.0
    dlt[1][1, 2 * 4 + 3, 3, 5] = 7.0  # coordinate 3 (th) of anchor 2
    flat_obj, flat_dlt, num_per_level = flatten_head_outputs(obj, dlt)
    assert num_per_level == [h * w * 3 for h, w in FEATURE_SIZES]
    i = num_per_level[0] + (3 * 12 + 5) * 3 + 2  # level offset + (y * w + x) * k + a
    assert flat_obj.shape == (2, 1536) and flat_dlt.shape == (2, 1536, 4)
    assert torch.nonzero(flat_obj).tolist() == [[1, i]]
    assert torch.nonzero(flat_dlt).tolist() == [[1, i, 3]]
    # ... and anchor i is the anchor of that cell: stride 8, centre (5 * 8, 3 * 8), ratio 2 (tall) box of size 16.
    anchors = AnchorGenerator(SIZES, RATIOS)((64, 96), FEATURE_SIZES)  # (A, 4)
    cx, cy = (anchors[i, 0] + anchors[i, 2]) / 2, (anchors[i, 1] + anchors[i, 3]) / 2
    assert (float(cx), float(cy)) == (40.0, 24.0)
    assert float(anchors[i, 3] - anchors[i, 1]) > float(anchors[i, 2] - anchors[i, 0])


# ---------------------------------------------------------------------------------------------- whole RPN
@pytest.mark.parametrize("kernels,score_thresh", [("teaching", 0.0), ("torchvision", 0.0), ("teaching", 0.7)])
def test_eval_proposals_equal_torchvision(kernels, score_thresh):
    ours, theirs = make_rpns(kernels=kernels, score_thresh=score_thresh)
    ours.eval(), theirs.eval()
    images, features, _ = make_inputs()
    with torch.no_grad():
        boxes, losses = ours(images, IMAGE_SIZES, features)
        tv_boxes, tv_losses = run_theirs(theirs, images, features)
    assert losses == {} and tv_losses == {}
    for i, (b, tb) in enumerate(zip(boxes, tv_boxes)):
        assert b.shape == tb.shape, f"image {i}: {b.shape} vs torchvision {tb.shape}"
        torch.testing.assert_close(b, tb, rtol=0, atol=1e-4)
        h, w = IMAGE_SIZES[i]
        assert float(b[:, 2].max()) <= w and float(b[:, 3].max()) <= h  # clipped to the unpadded image
    if score_thresh == 0.0:
        assert all(len(b) == 30 for b in boxes)  # eval post_nms_top_n
    else:
        assert all(0 < len(b) < 30 for b in boxes)  # the score threshold removed some


@pytest.mark.parametrize("batch,frac", [(256, 0.5), (32, 0.25)])
def test_training_losses_equal_torchvision(batch, frac):
    """Sampling is made identical by seeding the global RNG right before each forward pass.

    In training, the only random numbers either RPN draws are in its sampler, image by image:
    `torch.randperm(num_positive_candidates)` then `torch.randperm(num_negative_candidates)`. Our
    BalancedSampler makes those same calls in the same order, and the matcher gives the same candidates,
    so after `torch.manual_seed(5)` both pick exactly the same anchors. With (32, 0.25) image 0 has more
    positives than its quota of 8, so the positive draw is cut too, not only the negative one.
    """
    ours, theirs = make_rpns(batch=batch, frac=frac)
    ours.train(), theirs.train()
    images, features, targets = make_inputs()

    torch.manual_seed(5)
    boxes, losses = ours(images, IMAGE_SIZES, features, targets)
    torch.manual_seed(5)
    tv_boxes, tv_losses = run_theirs(theirs, images, features, targets)

    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg"}
    for name in losses:
        torch.testing.assert_close(losses[name], tv_losses[name], rtol=1e-5, atol=1e-6)
    assert float(losses["loss_rpn_box_reg"].detach()) > 0  # there were sampled positives
    for b, tb in zip(boxes, tv_boxes):  # training top-n (50 after NMS)
        assert b.shape == tb.shape
        torch.testing.assert_close(b, tb, rtol=0, atol=1e-4)

    # Same gradients into the head (objectness through BCE, deltas through smooth-L1).
    sum(losses.values()).backward()
    sum(tv_losses.values()).backward()
    tv_grads = dict(theirs.head.named_parameters())
    for tv_name, name in HEAD_KEYS.items():
        torch.testing.assert_close(ours.head.get_parameter(name).grad, tv_grads[tv_name].grad,
                                   rtol=1e-4, atol=1e-7)

    # A different seed samples different anchors, so the loss changes: the sampling really is random.
    torch.manual_seed(6)
    _, losses6 = ours(images, IMAGE_SIZES, features, targets)
    assert float(losses6["loss_objectness"].detach()) != float(losses["loss_objectness"].detach())


def test_all_images_without_boxes():
    ours, theirs = make_rpns()
    ours.train(), theirs.train()
    images, features, _ = make_inputs()
    empty = [{"boxes": torch.zeros(0, 4)} for _ in range(3)]
    torch.manual_seed(0)
    _, losses = ours(images, IMAGE_SIZES, features, empty)
    torch.manual_seed(0)
    _, tv_losses = run_theirs(theirs, images, features, empty)
    assert float(losses["loss_rpn_box_reg"].detach()) == 0.0  # no positives, nothing to regress
    assert torch.isfinite(losses["loss_objectness"])
    torch.testing.assert_close(losses["loss_objectness"], tv_losses["loss_objectness"], rtol=1e-5, atol=1e-6)

    anchors = AnchorGenerator(SIZES, RATIOS)((64, 96), FEATURE_SIZES)  # (A, 4)
    labels, matched = ours.assign_targets(anchors, [torch.zeros(0, 4)])
    assert labels[0].shape == (1536,) and bool((labels[0] == 0).all())
    assert torch.equal(matched[0], anchors)


# ---------------------------------------------------------------------------------------------- the seed's claims
def test_tiny_box_still_gets_a_positive_anchor():
    """A 3x3 GT box: every anchor is >= 8x8 px, so its best IoU is < 0.3 — yet one anchor is positive."""
    ours, _ = make_rpns()
    anchors = AnchorGenerator(SIZES, RATIOS)((64, 96), FEATURE_SIZES)  # (A, 4)
    gt = torch.tensor([[30.0, 30.0, 33.0, 33.0]])  # (1, 4)
    iou = box_iou(gt, anchors)  # (1, A)
    assert float(iou.max()) < 0.3

    labels, matched = ours.assign_targets(anchors, [gt])
    positive = torch.nonzero(labels[0] == 1).squeeze(1)  # (P,)
    assert len(positive) >= 1
    assert bool((iou[0, positive] == iou.max()).all())  # exactly the GT's best anchor(s)
    assert torch.equal(matched[0][positive], gt.expand(len(positive), 4))
    # Without the low-quality rule this object would never be learned: no positive anchor at all.
    assert int((Matcher(0.7, 0.3)(iou) >= 0).sum()) == 0


def test_sampled_batch_is_256_with_at_most_128_positives():
    ours, _ = make_rpns()  # batch_size_per_image=256, positive_fraction=0.5
    anchors = AnchorGenerator(SIZES, RATIOS)((64, 96), FEATURE_SIZES)  # (A, 4)
    many = anchors[:400]  # (400, 4) GT boxes equal to 400 P2 anchors -> >= 400 positives
    few = torch.tensor([[10.0, 12.0, 40.0, 30.0]])  # (1, 4) a handful of positives
    labels, _ = ours.assign_targets(anchors, [many, few])
    assert int((labels[0] == 1).sum()) >= 400 and int((labels[0] == 0).sum()) > 256
    torch.manual_seed(0)
    pos, neg = ours.sampler(labels)
    assert int(pos[0].sum()) == 128 and int(neg[0].sum()) == 128  # capped at half
    n_pos_few = int((labels[1] == 1).sum())
    assert 0 < n_pos_few < 128
    assert int(pos[1].sum()) == n_pos_few and int(neg[1].sum()) == 256 - n_pos_few  # negatives pad to 256
    for i in range(2):
        assert int((pos[i] | neg[i]).sum()) == 256
        assert bool((labels[i][neg[i]] == 0).all())  # ignored (-1) anchors are never sampled


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_input_raises():
    ours, _ = make_rpns()
    images, features, targets = make_inputs()
    ours.train()
    with pytest.raises(ValueError, match="targets are required"):
        ours(images, IMAGE_SIZES, features)
    bad = [targets[0], {"boxes": torch.tensor([[5.0, 5.0, 4.0, 9.0]])}, targets[2]]
    with pytest.raises(ValueError, match=r"image 1, box 0"):
        ours(images, IMAGE_SIZES, features, bad)
    with pytest.raises(ValueError, match=r"targets\[2\]\['boxes'\] must be a \(G, 4\)"):
        ours(images, IMAGE_SIZES, features, targets[:2] + [{"boxes": torch.zeros(4)}])
    ours.eval()
    with pytest.raises(ValueError, match="image_sizes"):
        ours(images, IMAGE_SIZES[:2], features)
    with pytest.raises(ValueError, match="head predicts"):
        RegionProposalNetwork(AnchorGenerator(SIZES, ((1.0,),) * 5), RPNHead(C, 3)).eval()(
            images, IMAGE_SIZES, features)
