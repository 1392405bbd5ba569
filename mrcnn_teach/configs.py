"""Model configurations as plain data, and `build_maskrcnn` that turns one into a model.

Keys use torchvision's `MaskRCNN` keyword names wherever torchvision has one (`num_classes`,
`min_size`, `rpn_post_nms_top_n_test`, `box_score_thresh`, ...), so a user can carry settings
between the two libraries. The rest name what torchvision decides inside its builder functions
(`depth`, `norm`, `anchor_sizes`, `representation_size`, ...).
"""

from __future__ import annotations

import copy
from typing import Any

from .anchors import AnchorGenerator
from .backbone import ResNetBody
from .fpn import FPN, BackboneWithFPN
from .heads import BoxHead, BoxPredictor, ConvFCBoxHead, MaskHead, MaskPredictor
from .kernels import get_kernels
from .model import MaskRCNN
from .poolers import MultiLevelRoIAlign
from .roi_heads import RoIHeads
from .rpn import RegionProposalNetwork, RPNHead
from .transform import ImageTransform

# torchvision's maskrcnn_resnet50_fpn, setting for setting (COCO: 80 classes with their original
# category ids 1..90, 10 of which are unused, plus background 0, hence 91 outputs).
RESNET50_FPN: dict[str, Any] = dict(
    # backbone: frozen BN and the first two stages frozen, as for pretrained ImageNet/COCO weights
    depth=50, norm="frozen_bn", trainable_layers=3, fpn_channels=256,
    # transform
    num_classes=91, min_size=800, max_size=1333,
    image_mean=(0.485, 0.456, 0.406), image_std=(0.229, 0.224, 0.225), size_divisible=32,
    # anchors: one size per level P2..P6 (FPN Sec. 4.1), three aspect ratios
    anchor_sizes=((32,), (64,), (128,), (256,), (512,)), aspect_ratios=((0.5, 1.0, 2.0),) * 5,
    # RPN (Faster R-CNN Sec. 3.1; numbers from Detectron / torchvision)
    rpn_pre_nms_top_n_train=2000, rpn_pre_nms_top_n_test=1000,
    rpn_post_nms_top_n_train=2000, rpn_post_nms_top_n_test=1000,
    rpn_nms_thresh=0.7, rpn_fg_iou_thresh=0.7, rpn_bg_iou_thresh=0.3,
    rpn_batch_size_per_image=256, rpn_positive_fraction=0.5, rpn_score_thresh=0.0,
    # RoI heads (Mask R-CNN Sec. 3.1: 512 RoIs per image, 1:3 positive to negative)
    box_roi_size=7, mask_roi_size=14, roi_sampling_ratio=2,
    box_fg_iou_thresh=0.5, box_bg_iou_thresh=0.5,
    box_batch_size_per_image=512, box_positive_fraction=0.25,
    bbox_reg_weights=(10.0, 10.0, 5.0, 5.0),
    box_score_thresh=0.05, box_nms_thresh=0.5, box_detections_per_img=100,
    representation_size=1024, mask_head_channels=(256, 256, 256, 256), mask_dim_reduced=256,
    class_agnostic_masks=False,
    # the paper's ablations as options (Table 2b, 2c): "sigmoid" per-class BCE or "softmax" over classes;
    # the RoI layer of both heads, "align" (RoIAlign) or "pool" (Fast R-CNN's RoIPool)
    mask_loss="sigmoid", roi_layer="align",
    # box head: "2fc" (the paper's) or "4conv1fc" (box_head_conv_channels, then one fc); head_norm:
    # None (the paper's) or "gn"/"bn" after every conv of the mask head and of a 4conv1fc box head
    box_head="2fc", box_head_conv_channels=(256, 256, 256, 256), head_norm=None,
    # which NMS / RoIAlign to run: "teaching" (the from-scratch ops the notebooks explain: nms.py,
    # roi_ops.py), "torchvision" (its compiled kernels) or "mixed" (torchvision's NMS and the fast
    # RoIAlign of roi_align_fast.py). All three give the same detections (tests/test_kernels.py);
    # "mixed" is the fastest on a CPU (benchmarks/README.md), so a model built to be used runs it.
    # model.set_kernels("teaching") switches to the classroom version.
    kernels="mixed",
)

# Sized for the built-in 128x128 shapes images on a 2-core CPU, trained from scratch.
SHAPES_TINY: dict[str, Any] = {
    **RESNET50_FPN,
    # From scratch, so normalisation layers must learn (frozen BN at identity statistics would
    # leave the network unnormalised); GroupNorm does not care about the small batches.
    "depth": 18, "norm": "gn", "trainable_layers": 5, "fpn_channels": 64,
    "num_classes": 4, "min_size": 128, "max_size": 128,
    # Anchors fitted to the data (benchmarks/anchor_design.py, results/anchor_design.json): the shapes'
    # boxes are 6-67 px (sqrt(wh), median 31) and nearly square (90% have h/w in 0.88-1.14). One size
    # per level at 2x the stride (8..128 px) left 88% of the GT boxes without an anchor at IoU >= 0.7;
    # three sizes per octave (2^0, 2^1/3, 2^2/3, as RetinaNet, Lin et al. 2017, Sec. 4) from 4x the
    # stride, with the square ratio only, gives 89% one at the same anchor count (k = 3 per position).
    "anchor_sizes": ((16, 20, 25), (32, 40, 51), (64, 81, 102), (128, 161, 203), (256, 323, 406)),
    "aspect_ratios": ((1.0,),) * 5,
    "rpn_pre_nms_top_n_train": 500, "rpn_pre_nms_top_n_test": 300,
    "rpn_post_nms_top_n_train": 300, "rpn_post_nms_top_n_test": 100,
    "rpn_batch_size_per_image": 128,
    # <= 4 objects per image: 64 sampled RoIs (16 positive) carry the signal, and RoIAlign's
    # backward (the costliest op of a CPU step) scales with the RoI count (0.70 -> 0.55 s/step).
    "box_batch_size_per_image": 64, "box_positive_fraction": 0.25,
    "box_detections_per_img": 20,
    # Heads for training from scratch: GroupNorm after every head conv (He et al. 2018, "Rethinking
    # ImageNet Pre-training", Sec. 3.1) and the 4conv1fc box head of Detectron's GN models (Wu & He
    # 2018, Group Normalization). Narrow convs (32) keep them cheap; the classifier gets a 1024-d
    # representation (square vs circle vs triangle is the hard part).
    # On the shapes budget this lifted mask AP50 from 0.86 to 0.92 (benchmarks/README.md).
    "box_head": "4conv1fc", "box_head_conv_channels": (32, 32, 32, 32), "head_norm": "gn",
    "representation_size": 1024, "mask_head_channels": (32, 32, 32, 32), "mask_dim_reduced": 32,
}

CONFIGS: dict[str, dict[str, Any]] = {"resnet50_fpn": RESNET50_FPN, "shapes_tiny": SHAPES_TINY}


def get_config(name: str, **overrides: Any) -> dict[str, Any]:
    """The named configuration with `overrides` applied; unknown names or keys raise."""
    if name not in CONFIGS:
        raise ValueError(f"unknown config {name!r}; choose one of {sorted(CONFIGS)}")
    cfg = copy.deepcopy(CONFIGS[name])
    unknown = sorted(set(overrides) - set(cfg))
    if unknown:
        raise ValueError(f"unknown override(s) {unknown} for config {name!r}; valid keys: {sorted(cfg)}")
    cfg.update(overrides)
    return cfg


def build_maskrcnn(name: str = "resnet50_fpn", **overrides: Any) -> MaskRCNN:
    """Build a Mask R-CNN from a named config. Example: `build_maskrcnn("resnet50_fpn", num_classes=3)`."""
    return build_from_config(get_config(name, **overrides))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_config(cfg: dict[str, Any]) -> None:
    """Refuse values the model cannot be built or run with, naming the key (keys a config lacks are
    skipped: checkpoints written before an option existed hold configs without it)."""
    def bad(key: str, must: str):
        return ValueError(f"config: {key}={cfg[key]!r} is not valid: {key} must be {must}")

    has = cfg.__contains__
    if has("num_classes") and not (_is_int(cfg["num_classes"]) and cfg["num_classes"] >= 2):
        raise bad("num_classes", "an int >= 2: the object classes plus background (one class -> num_classes=2)")
    if has("min_size"):
        sizes = cfg["min_size"] if isinstance(cfg["min_size"], (list, tuple)) else (cfg["min_size"],)
        if not sizes or not all(_is_int(v) and v >= 1 for v in sizes):
            raise bad("min_size", "a positive int, or a non-empty tuple of them (one drawn per training image)")
    positive_ints = ("max_size", "size_divisible", "fpn_channels", "representation_size", "box_roi_size",
                     "mask_roi_size", "mask_dim_reduced", "rpn_pre_nms_top_n_train", "rpn_pre_nms_top_n_test",
                     "rpn_post_nms_top_n_train", "rpn_post_nms_top_n_test", "rpn_batch_size_per_image",
                     "box_batch_size_per_image", "box_detections_per_img")
    for key in filter(has, positive_ints):
        if not (_is_int(cfg[key]) and cfg[key] >= 1):
            raise bad(key, "a positive int")
    for key in filter(has, ("rpn_positive_fraction", "box_positive_fraction")):
        if not (_is_number(cfg[key]) and 0 < cfg[key] <= 1):
            raise bad(key, "a fraction in (0, 1]")
    for key in filter(has, ("rpn_nms_thresh", "rpn_fg_iou_thresh", "rpn_bg_iou_thresh", "box_fg_iou_thresh",
                            "box_bg_iou_thresh", "box_nms_thresh", "box_score_thresh", "rpn_score_thresh")):
        if not (_is_number(cfg[key]) and 0 <= cfg[key] <= 1):
            raise bad(key, "a number in [0, 1]")
    for key, n, positive in (("image_mean", 3, False), ("image_std", 3, True), ("bbox_reg_weights", 4, True)):
        value = cfg.get(key)
        if has(key) and not (isinstance(value, (list, tuple)) and len(value) == n and all(map(_is_number, value))
                             and (not positive or all(v > 0 for v in value))):
            raise bad(key, f"{n} {'positive ' if positive else ''}numbers")
    for key in filter(has, ("mask_head_channels", "box_head_conv_channels")):
        value = cfg[key]
        if not (isinstance(value, (list, tuple)) and value and all(_is_int(v) and v >= 1 for v in value)):
            raise bad(key, "a non-empty tuple of positive ints (one per conv)")
    levels = 5  # P2..P6
    for key in filter(has, ("anchor_sizes", "aspect_ratios")):
        value = cfg[key]
        if not (isinstance(value, (list, tuple)) and len(value) == levels
                and all(isinstance(v, (list, tuple)) and v and all(_is_number(x) and x > 0 for x in v) for v in value)):
            raise bad(key, f"{levels} non-empty tuples of positive numbers, one per pyramid level P2..P6")


def build_from_config(cfg: dict[str, Any]) -> MaskRCNN:
    check_config(cfg)
    kernels = get_kernels(cfg["kernels"])
    if len(cfg["anchor_sizes"]) != len(cfg["aspect_ratios"]):
        raise ValueError("anchor_sizes and aspect_ratios need one entry per pyramid level (P2..P6)")

    body = ResNetBody(depth=cfg["depth"], norm=cfg["norm"], trainable_layers=cfg["trainable_layers"])
    fpn = FPN(body.out_channels, cfg["fpn_channels"])
    backbone = BackboneWithFPN(body, fpn)
    channels = backbone.out_channels

    anchor_generator = AnchorGenerator(cfg["anchor_sizes"], cfg["aspect_ratios"])
    rpn = RegionProposalNetwork(
        anchor_generator,
        RPNHead(channels, anchor_generator.num_anchors_per_location()[0]),
        fg_iou_thresh=cfg["rpn_fg_iou_thresh"], bg_iou_thresh=cfg["rpn_bg_iou_thresh"],
        batch_size_per_image=cfg["rpn_batch_size_per_image"], positive_fraction=cfg["rpn_positive_fraction"],
        pre_nms_top_n_train=cfg["rpn_pre_nms_top_n_train"], pre_nms_top_n_test=cfg["rpn_pre_nms_top_n_test"],
        post_nms_top_n_train=cfg["rpn_post_nms_top_n_train"], post_nms_top_n_test=cfg["rpn_post_nms_top_n_test"],
        nms_thresh=cfg["rpn_nms_thresh"], score_thresh=cfg["rpn_score_thresh"], kernels=kernels,
    )

    box_size, mask_size = cfg["box_roi_size"], cfg["mask_roi_size"]
    # .get: checkpoints written before these options existed hold configs without them
    roi_layer, mask_loss = cfg.get("roi_layer", "align"), cfg.get("mask_loss", "sigmoid")
    if mask_loss == "softmax" and cfg["class_agnostic_masks"]:
        raise ValueError("mask_loss='softmax' needs a mask per class: it cannot be combined with class_agnostic_masks=True")
    if cfg["box_head"] == "2fc":
        box_head = BoxHead(channels, box_size, cfg["representation_size"])
    elif cfg["box_head"] == "4conv1fc":
        box_head = ConvFCBoxHead(channels, box_size, tuple(cfg["box_head_conv_channels"]),
                                 cfg["representation_size"], norm=cfg["head_norm"])
    else:
        raise ValueError(f"box_head must be '2fc' or '4conv1fc', got {cfg['box_head']!r}")
    roi_heads = RoIHeads(
        box_roi_align=MultiLevelRoIAlign(box_size, cfg["roi_sampling_ratio"], kernels=kernels, layer=roi_layer),
        box_head=box_head,
        box_predictor=BoxPredictor(cfg["representation_size"], cfg["num_classes"]),
        mask_roi_align=MultiLevelRoIAlign(mask_size, cfg["roi_sampling_ratio"], kernels=kernels, layer=roi_layer),
        mask_head=MaskHead(channels, tuple(cfg["mask_head_channels"]), norm=cfg["head_norm"]),
        mask_predictor=MaskPredictor(
            cfg["mask_head_channels"][-1], cfg["num_classes"], cfg["mask_dim_reduced"],
            class_agnostic=cfg["class_agnostic_masks"],
        ),
        fg_iou_thresh=cfg["box_fg_iou_thresh"], bg_iou_thresh=cfg["box_bg_iou_thresh"],
        batch_size_per_image=cfg["box_batch_size_per_image"], positive_fraction=cfg["box_positive_fraction"],
        bbox_reg_weights=tuple(cfg["bbox_reg_weights"]),
        score_thresh=cfg["box_score_thresh"], nms_thresh=cfg["box_nms_thresh"],
        detections_per_img=cfg["box_detections_per_img"], kernels=kernels, mask_loss=mask_loss,
    )

    transform = ImageTransform(
        cfg["min_size"], cfg["max_size"], cfg["image_mean"], cfg["image_std"], cfg["size_divisible"]
    )
    model = MaskRCNN(backbone, rpn, roi_heads, transform)
    model.config = dict(cfg)  # kept so checkpoints can rebuild the same model
    return model
