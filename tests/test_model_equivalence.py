"""The whole model against torchvision's Mask R-CNN, given the same weights.

A seeded, randomly initialised `torchvision.models.detection.maskrcnn_resnet50_fpn` is loaded
into ours with `load_torchvision_weights`; both then see the same batch of odd-sized images and
must agree stage by stage: FPN features, RPN proposals, final detections (boxes, labels, scores,
pasted masks) and, in training mode, every loss term.

Two choices keep the comparison exact rather than lucky:
- Both models run in float64. Top-k and NMS are discrete decisions; in float32 a 1e-7 difference
  between two mathematically equal computations can swap two nearly tied proposals. In float64
  the same arithmetic leaves no such ties, so any disagreement is a real bug.
- Sampling is made identical by construction, not by patching: our transform and samplers draw
  from torch's global generator in the same order and with the same calls as torchvision's
  (one uniform draw per image for the training scale, then per image `randperm(positives)` and
  `randperm(negatives)` in the RPN, then the same in the RoI heads). Seeding the generator
  before each model's forward therefore makes both pick the same anchors and the same RoIs.
"""

import re

import pytest
import torch
from torchvision.models.detection import maskrcnn_resnet50_fpn
from torchvision.models.detection.image_list import ImageList

from mrcnn_teach import build_maskrcnn, load_torchvision_weights
from mrcnn_teach.configs import RESNET50_FPN

# Smaller than the default 800/1333 so the suite stays fast on a 2-core CPU; one test below runs
# the default size. The code path is the same at any size.
SMALL = dict(min_size=256, max_size=384)


def make_pair(seed=0, **overrides):
    """torchvision's model (random init, seeded) and ours with its weights, both float64, eval."""
    torch.manual_seed(seed)
    tv = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, **overrides)
    calibrate_batchnorm(tv)
    with torch.no_grad():
        # Random init leaves every class near 1/91; spread the class scores so there are
        # confident detections to compare (and fewer boxes for NMS to chew on).
        tv.roi_heads.box_predictor.cls_score.weight.normal_(0, 0.05)
    # weights=None gives trainable BatchNorm in all 5 stages; build ours the same way.
    ours = build_maskrcnn("resnet50_fpn", norm="bn", trainable_layers=5, **overrides)
    load_torchvision_weights(ours, tv.state_dict())
    return tv.double().eval(), ours.double().eval()


def calibrate_batchnorm(tv):
    """Give the random network realistic BatchNorm statistics: one train-mode pass over random
    images, with momentum=None so the running stats become exactly that batch's. Without this the
    identity statistics let activations grow through 50 layers and every box regresses to the
    image border."""
    for m in tv.backbone.body.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    tv.backbone.body.train()
    with torch.no_grad():
        tv.backbone.body(torch.randn(4, 3, 224, 288, generator=torch.Generator().manual_seed(7)))
    tv.backbone.body.eval()


def make_batch(seed=1):
    """Two images of different odd sizes, with boxes and masks (masks are ellipses in boxes)."""
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for h, w, n in ((203, 287, 3), (251, 171, 0)):
        images.append(torch.rand(3, h, w, generator=g, dtype=torch.float64))
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])  # (n, 2)
        wh = 12 + torch.rand(n, 2, generator=g) * torch.tensor([w * 0.35, h * 0.35])  # (n, 2)
        boxes = torch.cat([xy, xy + wh], dim=1).double()  # (n, 4)
        ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")  # (h, w)
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2  # (n,)
        rx, ry = (boxes[:, 2] - boxes[:, 0]) / 2, (boxes[:, 3] - boxes[:, 1]) / 2  # (n,)
        inside = ((xs - cx[:, None, None]) / rx[:, None, None]) ** 2 + ((ys - cy[:, None, None]) / ry[:, None, None]) ** 2
        masks = (inside <= 1).to(torch.uint8)  # (n, h, w)
        labels = torch.randint(1, 91, (n,), generator=g)
        targets.append(dict(boxes=boxes, labels=labels, masks=masks))
    return images, targets


def assert_close(a, b, what, atol=1e-6, rtol=1e-6):
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} vs {tuple(b.shape)}"
    torch.testing.assert_close(a, b, atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")


def run_stages_torchvision(tv, images):
    originals = [tuple(img.shape[-2:]) for img in images]
    image_list, _ = tv.transform(images)
    features = list(tv.backbone(image_list.tensors).values())
    proposals, _ = tv.rpn(image_list, dict(zip(["0", "1", "2", "3", "pool"], features)))
    feats = dict(zip(["0", "1", "2", "3", "pool"], features))
    detections, _ = tv.roi_heads(feats, proposals, image_list.image_sizes)
    detections = tv.transform.postprocess(detections, image_list.image_sizes, originals)
    return image_list.tensors, features, proposals, detections


def run_stages_ours(model, images):
    originals = [tuple(img.shape[-2:]) for img in images]
    batch, sizes, _ = model.transform(images)
    features = model.backbone(batch)
    proposals, _ = model.rpn(batch, sizes, features)
    detections, _ = model.roi_heads(features, proposals, sizes)
    detections = model.transform.postprocess(detections, sizes, originals)
    return batch, features, proposals, detections


def compare_inference(tv, ours, images):
    with torch.no_grad():
        tv_batch, tv_feats, tv_props, tv_dets = run_stages_torchvision(tv, images)
        batch, feats, props, dets = run_stages_ours(ours, images)
    assert_close(batch, tv_batch, "normalised, resized, padded batch")
    assert len(feats) == len(tv_feats) == 5
    for level, (a, b) in enumerate(zip(feats, tv_feats), start=2):
        assert_close(a, b, f"P{level}")
    for i, (a, b) in enumerate(zip(props, tv_props)):
        assert a.shape[0] > 100, "too few proposals to make the comparison meaningful"
        assert_close(a, b, f"proposals of image {i}")
    for i, (a, b) in enumerate(zip(dets, tv_dets)):
        assert a["boxes"].shape[0] > 10, f"image {i}: too few detections to compare"
        assert_close(a["boxes"], b["boxes"], f"boxes of image {i}")
        assert_close(a["scores"], b["scores"], f"scores of image {i}")
        assert torch.equal(a["labels"], b["labels"]), f"labels of image {i}"
        assert_close(a["masks"], b["masks"], f"masks of image {i}", atol=1e-5, rtol=1e-5)
        assert a["masks"].shape[1:] == (1, *images[i].shape[-2:])
    return dets


@pytest.mark.slow
def test_inference_matches_torchvision_stage_by_stage():
    tv, ours = make_pair(box_score_thresh=0.01, kernels="teaching", **SMALL)  # the from-scratch ops
    images, _ = make_batch()
    dets = compare_inference(tv, ours, images)
    # And the public forward gives the same as the stage-by-stage run.
    with torch.no_grad():
        out = ours(images)
    for a, b in zip(out, dets):
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["masks"], b["masks"])


@pytest.mark.slow
@pytest.mark.parametrize("kernels", ["torchvision", "mixed"])
def test_inference_matches_with_other_kernels(kernels):
    tv, ours = make_pair(box_score_thresh=0.01, **SMALL)
    ours.set_kernels(kernels)
    images, _ = make_batch(seed=2)
    compare_inference(tv, ours, images)


@pytest.mark.slow
def test_default_kernels_give_the_teaching_kernels_detections():
    """build_maskrcnn("resnet50_fpn") runs the fastest exact set; the classroom set finds the same."""
    _, ours = make_pair(box_score_thresh=0.01, **SMALL)
    assert ours.config["kernels"] == "mixed" and ours.roi_heads.kernels.name == "mixed"
    images, _ = make_batch(seed=5)
    with torch.no_grad():
        fast = ours(images)
        ours.set_kernels("teaching")
        teaching = ours(images)
    assert sum(len(d["boxes"]) for d in fast) > 10  # enough detections for the comparison to mean something
    for i, (a, b) in enumerate(zip(fast, teaching)):
        assert torch.equal(a["labels"], b["labels"]), f"labels of image {i}"
        assert_close(a["boxes"], b["boxes"], f"boxes of image {i}")
        assert_close(a["scores"], b["scores"], f"scores of image {i}")
        assert_close(a["masks"], b["masks"], f"masks of image {i}", atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_inference_matches_at_default_size():
    """The unmodified resnet50_fpn configuration (800/1333), one image, eval mode."""
    tv, ours = make_pair(box_score_thresh=0.01)
    images, _ = make_batch(seed=3)
    compare_inference(tv, ours, images[:1])


@pytest.mark.slow
def test_training_losses_match_torchvision():
    tv, ours = make_pair(kernels="teaching", **SMALL)
    tv.train()
    ours.train()
    images, targets = make_batch(seed=4)
    losses = {}
    for name, model in (("torchvision", tv), ("ours", ours)):
        torch.manual_seed(1234)  # same generator state -> same sampled anchors and RoIs
        losses[name] = model(images, [dict(t) for t in targets])
    assert set(losses["ours"]) == set(losses["torchvision"]) == {
        "loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask",
    }
    for key, value in losses["torchvision"].items():
        assert value.item() > 0, f"{key} is zero: the comparison would prove nothing"
        # (torchvision's objectness loss comes out float32 even in a float64 model: its labels are
        # float32. Compare values.)
        assert_close(losses["ours"][key].double(), value.double(), key, atol=1e-8, rtol=1e-8)

    # And the gradients agree too, for a parameter at each end of the network.
    sum(losses["torchvision"].values()).backward()
    sum(losses["ours"].values()).backward()
    pairs = {
        "stem conv": (ours.backbone.body.stem.conv1.weight, tv.backbone.body.conv1.weight),
        "mask logits": (ours.roi_heads.mask_predictor.mask_logits.weight, tv.roi_heads.mask_predictor.mask_fcn_logits.weight),
        "rpn objectness": (ours.rpn.head.objectness.weight, tv.rpn.head.cls_logits.weight),
    }
    for what, (a, b) in pairs.items():
        assert_close(a.grad, b.grad, f"gradient of {what}", atol=1e-8, rtol=1e-6)


def test_resnet50_fpn_config_is_torchvisions():
    """Every setting of our resnet50_fpn equals the one torchvision's builder chose."""
    tv = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    c = RESNET50_FPN
    rpn, heads, tf = tv.rpn, tv.roi_heads, tv.transform
    assert (c["min_size"], c["max_size"]) == (tf.min_size[-1], tf.max_size)
    assert (tuple(c["image_mean"]), tuple(c["image_std"])) == (tuple(tf.image_mean), tuple(tf.image_std))
    assert c["size_divisible"] == tf.size_divisible
    assert c["anchor_sizes"] == rpn.anchor_generator.sizes
    assert c["aspect_ratios"] == rpn.anchor_generator.aspect_ratios
    assert (c["rpn_pre_nms_top_n_train"], c["rpn_pre_nms_top_n_test"]) == (
        rpn._pre_nms_top_n["training"], rpn._pre_nms_top_n["testing"])
    assert (c["rpn_post_nms_top_n_train"], c["rpn_post_nms_top_n_test"]) == (
        rpn._post_nms_top_n["training"], rpn._post_nms_top_n["testing"])
    assert c["rpn_nms_thresh"] == rpn.nms_thresh and c["rpn_score_thresh"] == rpn.score_thresh
    assert (c["rpn_fg_iou_thresh"], c["rpn_bg_iou_thresh"]) == (
        rpn.proposal_matcher.high_threshold, rpn.proposal_matcher.low_threshold)
    assert (c["rpn_batch_size_per_image"], c["rpn_positive_fraction"]) == (
        rpn.fg_bg_sampler.batch_size_per_image, rpn.fg_bg_sampler.positive_fraction)
    assert (c["box_fg_iou_thresh"], c["box_bg_iou_thresh"]) == (
        heads.proposal_matcher.high_threshold, heads.proposal_matcher.low_threshold)
    assert (c["box_batch_size_per_image"], c["box_positive_fraction"]) == (
        heads.fg_bg_sampler.batch_size_per_image, heads.fg_bg_sampler.positive_fraction)
    assert tuple(c["bbox_reg_weights"]) == heads.box_coder.weights
    assert (c["box_score_thresh"], c["box_nms_thresh"], c["box_detections_per_img"]) == (
        heads.score_thresh, heads.nms_thresh, heads.detections_per_img)
    assert c["num_classes"] == heads.box_predictor.cls_score.out_features
    assert c["representation_size"] == heads.box_head.fc7.out_features
    assert (c["box_roi_size"], c["mask_roi_size"]) == (
        heads.box_roi_pool.output_size[0], heads.mask_roi_pool.output_size[0])
    assert c["roi_sampling_ratio"] == heads.box_roi_pool.sampling_ratio == heads.mask_roi_pool.sampling_ratio

    # And the parameter count equals torchvision's. (weights=None gives torchvision trainable BN in every
    # stage, whose weight and bias are parameters; frozen BN, and the BN of a frozen stage, keep them as
    # buffers. Count like for like.)
    ours = build_maskrcnn("resnet50_fpn", norm="bn", trainable_layers=5)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(ours) == count(tv)


def test_weight_loading_reports_unknown_and_missing_keys():
    tv_state = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3).state_dict()
    ours = build_maskrcnn("resnet50_fpn", num_classes=3)
    with pytest.raises(KeyError, match="roi_heads.extra.weight"):
        load_torchvision_weights(ours, {**tv_state, "roi_heads.extra.weight": torch.zeros(1)})
    incomplete = {k: v for k, v in tv_state.items() if not k.startswith("roi_heads.mask_predictor")}
    with pytest.raises(KeyError, match="mask_predictor.mask_logits.weight"):
        load_torchvision_weights(ours, incomplete)
    with pytest.raises(ValueError, match="cls_score.weight"):
        load_torchvision_weights(build_maskrcnn("resnet50_fpn", num_classes=5), tv_state)


def test_weight_loading_from_file_with_legacy_names(tmp_path):
    """The original COCO checkpoint predates torchvision's `conv.0.0` naming; both load."""
    torch.manual_seed(0)
    tv = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3)
    # torchvision < 0.13 names: bare convs, `mask_fcn1..4` for the mask head.
    rules = [
        (r"^rpn\.head\.conv\.0\.0\.", "rpn.head.conv."),
        (r"^backbone\.fpn\.(inner|layer)_blocks\.(\d)\.0\.", r"backbone.fpn.\1_blocks.\2."),
        (r"^roi_heads\.mask_head\.(\d)\.0\.", lambda m: f"roi_heads.mask_head.mask_fcn{int(m.group(1)) + 1}."),
    ]
    legacy = {}
    for k, v in tv.state_dict().items():
        for pattern, replacement in rules:
            k = re.sub(pattern, replacement, k)
        legacy[k] = v
    assert "roi_heads.mask_head.mask_fcn1.weight" in legacy and "rpn.head.conv.weight" in legacy
    path = tmp_path / "maskrcnn_legacy.pth"
    torch.save(legacy, path)
    ours = load_torchvision_weights(build_maskrcnn("resnet50_fpn", num_classes=3, norm="bn"), path)
    ours_state = ours.state_dict()
    assert torch.equal(ours_state["roi_heads.mask_head.convs.0.weight"], tv.roi_heads.mask_head[0][0].weight)
    assert torch.equal(ours.backbone.fpn.lateral[2].weight, tv.backbone.fpn.inner_blocks[2][0].weight)
