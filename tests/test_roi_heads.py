"""RoIHeads against torchvision's RoIHeads (with masks): same detections in eval, same losses in training."""

from collections import OrderedDict

import pytest
import torch
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads as TVRoIHeads
from torchvision.ops import MultiScaleRoIAlign

from mrcnn_teach.heads import BoxHead, BoxPredictor, MaskHead, MaskPredictor
from mrcnn_teach.kernels import TEACHING, TORCHVISION
from mrcnn_teach.poolers import MultiLevelRoIAlign
from mrcnn_teach.masks import project_masks_on_boxes
from mrcnn_teach.roi_heads import RoIHeads, box_loss, mask_loss, sigmoid_mask_loss, softmax_mask_loss

C, REPR, MASK_C, NUM_CLASSES = 16, 32, 16, 4  # tiny heads; 3 foreground classes + background
IMAGE_SIZES = [(96, 120), (81, 128)]  # padded batch 96 x 128
RENAME = [("box_head.fc6", "box_head.fc1"), ("box_head.fc7", "box_head.fc2"),
          ("box_predictor.bbox_pred", "box_predictor.bbox_deltas"),
          ("mask_predictor.conv5_mask", "mask_predictor.deconv"),
          ("mask_predictor.mask_fcn_logits", "mask_predictor.mask_logits")] + \
         [(f"mask_head.{i}.0", f"mask_head.convs.{i}") for i in range(4)]

SETTINGS = dict(fg_iou_thresh=0.5, bg_iou_thresh=0.5, batch_size_per_image=32, positive_fraction=0.25,
                score_thresh=0.2, nms_thresh=0.5, detections_per_img=30)


def build_pair(kernels, class_agnostic=False):
    """torchvision's RoIHeads and ours, with the same weights."""
    torch.manual_seed(0)
    theirs = TVRoIHeads(
        MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2), TwoMLPHead(C * 7 * 7, REPR),
        FastRCNNPredictor(REPR, NUM_CLASSES),
        SETTINGS["fg_iou_thresh"], SETTINGS["bg_iou_thresh"], SETTINGS["batch_size_per_image"],
        SETTINGS["positive_fraction"], None, SETTINGS["score_thresh"], SETTINGS["nms_thresh"],
        SETTINGS["detections_per_img"],
        mask_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], 14, 2),
        mask_head=MaskRCNNHeads(C, [MASK_C] * 4, 1), mask_predictor=MaskRCNNPredictor(MASK_C, MASK_C, NUM_CLASSES))
    ours = RoIHeads(
        MultiLevelRoIAlign(7, 2, kernels=kernels), BoxHead(C, 7, REPR), BoxPredictor(REPR, NUM_CLASSES),
        MultiLevelRoIAlign(14, 2, kernels=kernels), MaskHead(C, (MASK_C,) * 4),
        MaskPredictor(MASK_C, NUM_CLASSES, MASK_C, class_agnostic=class_agnostic), kernels=kernels, **SETTINGS)
    state = {}
    for key, value in theirs.state_dict().items():
        for old, new in RENAME:
            key = key.replace(old, new)
        state[key] = value
    if class_agnostic:  # one mask channel; torchvision gets K+1 copies of it, so any class picks the same mask
        for name in ("weight", "bias"):
            key = f"mask_predictor.mask_logits.{name}"
            state[key] = state[key][:1]
            theirs.mask_predictor.mask_fcn_logits.state_dict()[name].copy_(state[key].expand_as(
                theirs.mask_predictor.mask_fcn_logits.state_dict()[name]))
    ours.load_state_dict(state)
    return theirs, ours


def make_batch(seed, empty_gt=()):
    """Features P2..P6 of a 2-image batch, proposals (some near the GT boxes), and targets with masks."""
    g = torch.Generator().manual_seed(seed)
    features = [torch.randn(2, C, 96 // s, 128 // s, generator=g) for s in (4, 8, 16, 32)]
    features.append(torch.randn(2, C, 2, 2, generator=g))  # P6: never pooled
    proposals, targets = [], []
    for i, (h, w) in enumerate(IMAGE_SIZES):
        num_gt = 0 if i in empty_gt else 3
        xy = torch.rand(num_gt, 2, generator=g) * torch.tensor([w - 50.0, h - 50.0])  # (G, 2)
        gt_boxes = torch.cat([xy, xy + 10 + torch.rand(num_gt, 2, generator=g) * 40], dim=1)  # (G, 4)
        near_gt = gt_boxes.repeat(5, 1) + torch.randn(5 * num_gt, 4, generator=g) * 4  # (5G, 4) jittered copies
        xy = torch.rand(40, 2, generator=g) * torch.tensor([w - 20.0, h - 20.0])  # (40, 2)
        background = torch.cat([xy, xy + 4 + torch.rand(40, 2, generator=g) * 80], dim=1)  # (40, 4)
        rois = torch.cat([near_gt, background])  # (N, 4)
        rois[:, 0::2] = rois[:, 0::2].clamp(0, w)
        rois[:, 1::2] = rois[:, 1::2].clamp(0, h)
        rois[:, 2:] = torch.max(rois[:, 2:], rois[:, :2] + 1)  # at least 1 px wide
        proposals.append(rois)
        masks = (torch.rand(num_gt, h, w, generator=g) > 0.4).to(torch.uint8)  # (G, h, w)
        labels = torch.randint(1, NUM_CLASSES, (num_gt,), generator=g)  # (G,)
        targets.append(dict(boxes=gt_boxes, labels=labels, masks=masks))
    return features, proposals, targets


def as_dict(features):
    return OrderedDict([(str(i), f) for i, f in enumerate(features[:4])] + [("pool", features[4])])


@pytest.mark.parametrize("kernels", [TEACHING, TORCHVISION], ids=lambda k: k.name)
def test_eval_detections_match_torchvision(kernels):
    theirs, ours = build_pair(kernels)
    theirs.eval(), ours.eval()
    features, proposals, _ = make_batch(1)
    with torch.no_grad():
        their_dets, their_losses = theirs(as_dict(features), proposals, IMAGE_SIZES)
        our_dets, our_losses = ours(features, proposals, IMAGE_SIZES)
    assert our_losses == their_losses == {}
    assert len(our_dets) == 2
    for o, t in zip(our_dets, their_dets):
        assert 0 < len(o["boxes"]) <= SETTINGS["detections_per_img"]
        assert torch.equal(o["labels"], t["labels"])
        assert o["labels"].dtype == torch.int64 and o["labels"].min() >= 1
        torch.testing.assert_close(o["boxes"], t["boxes"])
        torch.testing.assert_close(o["scores"], t["scores"])
        assert o["masks"].shape == (len(o["boxes"]), 1, 28, 28)
        torch.testing.assert_close(o["masks"], t["masks"], atol=1e-5, rtol=1e-5)
    assert len(our_dets[0]["boxes"]) == SETTINGS["detections_per_img"]  # the cap was reached


def training_losses(theirs, ours, features, proposals, targets):
    theirs.train(), ours.train()
    torch.manual_seed(123)
    _, their_losses = theirs(as_dict(features), [p.clone() for p in proposals], IMAGE_SIZES, targets)
    torch.manual_seed(123)  # the same seed -> the same randperm draws in the sampler -> the same RoIs
    dets, our_losses = ours(features, [p.clone() for p in proposals], IMAGE_SIZES, targets)
    assert dets == []
    assert set(our_losses) == {"loss_classifier", "loss_box_reg", "loss_mask"} == set(their_losses)
    for name in our_losses:
        torch.testing.assert_close(our_losses[name], their_losses[name], atol=1e-6, rtol=1e-5)
    return their_losses, our_losses


@pytest.mark.parametrize("kernels", [TEACHING, TORCHVISION], ids=lambda k: k.name)
def test_training_losses_and_gradients_match_torchvision(kernels):
    theirs, ours = build_pair(kernels)
    features, proposals, targets = make_batch(2)
    their_losses, our_losses = training_losses(theirs, ours, features, proposals, targets)
    assert all(v > 0 for v in our_losses.values())
    sum(their_losses.values()).backward()
    sum(our_losses.values()).backward()
    torch.testing.assert_close(ours.box_head.fc1.weight.grad, theirs.box_head.fc6.weight.grad, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(ours.mask_predictor.mask_logits.weight.grad,
                               theirs.mask_predictor.mask_fcn_logits.weight.grad, atol=1e-6, rtol=1e-4)
    # The mask loss trains only the GT classes' channels (Sec. 3): background channel 0 gets no gradient.
    assert torch.all(ours.mask_predictor.mask_logits.weight.grad[0] == 0)


def test_training_with_an_image_without_objects():
    theirs, ours = build_pair(TORCHVISION)
    features, proposals, targets = make_batch(3, empty_gt=(1,))
    training_losses(theirs, ours, features, proposals, targets)
    # Image 1 has no GT: all of its sampled RoIs are background.
    torch.manual_seed(0)
    _, _, labels, _ = ours.select_training_samples([p.clone() for p in proposals], targets)
    assert (labels[0] > 0).any() and torch.all(labels[1] == 0) and len(labels[1]) == SETTINGS["batch_size_per_image"]


def test_training_without_any_positive_gives_a_zero_mask_loss():
    theirs, ours = build_pair(TORCHVISION)
    features, proposals, targets = make_batch(4, empty_gt=(0, 1))
    _, our_losses = training_losses(theirs, ours, features, proposals, targets)
    assert our_losses["loss_mask"] == 0 and our_losses["loss_mask"].requires_grad
    assert our_losses["loss_box_reg"] == 0 and our_losses["loss_classifier"] > 0


def test_class_agnostic_masks():
    theirs, ours = build_pair(TORCHVISION, class_agnostic=True)
    assert ours.mask_predictor.mask_logits.out_channels == 1
    features, proposals, targets = make_batch(5)
    training_losses(theirs, ours, features, proposals, targets)
    theirs.eval(), ours.eval()
    with torch.no_grad():
        their_dets, _ = theirs(as_dict(features), proposals, IMAGE_SIZES)
        our_dets, _ = ours(features, proposals, IMAGE_SIZES)
    for o, t in zip(our_dets, their_dets):
        torch.testing.assert_close(o["masks"], t["masks"], atol=1e-5, rtol=1e-5)


def test_box_loss_uses_the_gt_class_deltas_of_positives_only():
    class_logits = torch.zeros(3, 3)  # (N, K+1): uniform -> cross-entropy log(3)
    box_deltas = torch.zeros(3, 12)
    box_deltas[0, 8:12] = 1.0  # RoI 0 (class 2): its class-2 deltas are off by 1 -> smooth-L1 (1 - 1/18) each
    box_deltas[1, 4:8] = 5.0  # RoI 1 is background: ignored
    box_deltas[0, 4:8] = 7.0  # RoI 0's class-1 deltas: ignored
    labels, targets = [torch.tensor([2, 0, 1])], [torch.zeros(3, 4)]
    loss_cls, loss_box = box_loss(class_logits, box_deltas, labels, targets)
    torch.testing.assert_close(loss_cls, torch.log(torch.tensor(3.0)))
    torch.testing.assert_close(loss_box, torch.tensor(4 * (1 - 0.5 / 9) / 3))  # / all 3 sampled RoIs


def test_bad_targets_raise_value_errors():
    _, ours = build_pair(TORCHVISION)
    features, proposals, targets = make_batch(6)
    ours.train()
    with pytest.raises(ValueError, match="targets are required"):
        ours(features, proposals, IMAGE_SIZES)
    bad = [dict(t) for t in targets]
    bad[1]["labels"] = bad[1]["labels"].to(torch.int32)
    with pytest.raises(ValueError, match="labels of image 1"):
        ours(features, proposals, IMAGE_SIZES, bad)
    bad = [dict(t) for t in targets]
    bad[0]["masks"] = bad[0]["masks"][:2]
    with pytest.raises(ValueError, match="masks of image 0"):
        ours(features, proposals, IMAGE_SIZES, bad)


def test_sigmoid_mask_loss_takes_the_targets_and_equals_mask_loss():
    """sigmoid_mask_loss(logits, targets, labels) (softmax_mask_loss's order) is what mask_loss computes once it has
    made the targets from the RoIs: per class and class agnostic, the values mask_loss gave before it was split out."""
    g = torch.Generator().manual_seed(7)
    gt_masks = [(torch.rand(3, 20, 24, generator=g) > 0.5).to(torch.uint8),
                (torch.rand(2, 16, 16, generator=g) > 0.5).to(torch.uint8)]
    gt_labels = [torch.tensor([1, 3, 2]), torch.tensor([2, 1])]
    rois = [torch.tensor([[1.0, 2.0, 15.0, 12.0], [0.0, 0.0, 23.0, 19.0], [5.5, 3.25, 9.0, 18.0]]),
            torch.tensor([[2.0, 2.0, 14.0, 14.0]])]
    matched = [torch.tensor([0, 1, 2]), torch.tensor([1])]
    logits = torch.randn(4, 4, 6, 6, generator=g)  # (P, K+1, M, M)
    targets = torch.cat([project_masks_on_boxes(m, r, i, 6) for m, r, i in zip(gt_masks, rois, matched)])  # (P, 6, 6)
    labels = torch.tensor([1, 3, 2, 1])  # (P,) the matched GTs' classes
    # mask_loss's values before sigmoid_mask_loss existed (its inline BCE, commit 0c6d089)
    for lg, before in ((logits, 0.818025529384613), (logits[:, :1], 0.8149705529212952)):
        torch.testing.assert_close(mask_loss(lg, rois, gt_masks, gt_labels, matched), torch.tensor(before))
        torch.testing.assert_close(sigmoid_mask_loss(lg, targets, labels), torch.tensor(before))
    # by hand: BCE of channel labels[n] of RoI n; a gradient on that channel only
    x = logits.clone().requires_grad_(True)
    p = torch.sigmoid(x[torch.arange(4), labels])  # (P, M, M)
    by_hand = -(targets * p.log() + (1 - targets) * (1 - p).log()).mean()
    torch.testing.assert_close(sigmoid_mask_loss(x, targets, labels), by_hand)
    sigmoid_mask_loss(x, targets, labels).backward()
    touched = x.grad.abs().sum(dim=(2, 3)) > 0  # (P, K+1)
    assert touched.tolist() == torch.nn.functional.one_hot(labels, 4).bool().tolist()
    # the softmax variant takes the same three arguments, and mask_loss(kind="softmax") is it
    torch.testing.assert_close(mask_loss(logits, rois, gt_masks, gt_labels, matched, kind="softmax"),
                               softmax_mask_loss(logits, targets, labels))
