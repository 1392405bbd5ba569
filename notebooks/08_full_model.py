# %% [markdown]
# # 08 — The full model
#
# Notebooks 01–07 built Mask R-CNN one stage at a time. This notebook puts the stages together. The
# whole model, `MaskRCNN`, defines no layer of its own. It holds four parts and calls them in the order
# of the paper's Figure 1. A configuration, a plain dictionary, says how to build those parts. We check
# what goes in and what comes out, count where the parameters and the arithmetic are, and then load a torchvision Mask
# R-CNN's weights into our model to show that the two compute the same features, proposals and
# detections. Last, we swap the NMS/RoIAlign kernels, look at what a GPU changes, and run the trained
# shapes model on held-out images.
#
# **You will learn**
# - how `MaskRCNN` is the paper's Figure 1 written as a constructor: transform → backbone → RPN →
#   RoI heads, with a `forward` of four calls, and how `build_from_config` turns a config dict into those parts;
# - the input/output contract we share with torchvision: five named scalar losses in train mode, and in
#   eval mode one dict per image with boxes, labels, scores and mask probabilities at the caller's image size;
# - where the parameters are, and where the arithmetic is: 44.4 million parameters in the ResNet-50-FPN
#   model (more than a quarter in one fc layer of the box head, which costs little compute), 13.1 million
#   in the small shapes model, and the multiply-accumulates of each stage, measured;
# - that, given the same weights, our model and torchvision's `maskrcnn_resnet50_fpn` compute the same
#   FPN features, proposals and detections, and that switching the NMS/RoIAlign kernels does not change the answer;
# - what changes on a GPU: `.to("cuda")` and torchvision's compiled kernels (mixed precision is in notebook 09).
#
# **Builds on:** [01 — Backbone](01_backbone.ipynb), [02 — FPN](02_fpn.ipynb),
# [03 — Anchors](03_anchors.ipynb), [04 — RPN](04_rpn.ipynb), [05 — RoIAlign](05_roi_align.ipynb),
# [06 — Box and mask heads](06_heads.ipynb), [07 — Mask loss](07_mask_loss.ipynb).
#
# **Run time:** about 40 s on a 2-core CPU; the first notebook you run also trains the shared shapes
# model once, 6 to 13 minutes on a 2-core CPU (700 steps; `make model` trains it ahead); later notebooks load it in a second.

# %%
# On Google Colab, install mrcnn_teach from its repository, keeping Colab's own torch and torchvision.
# Anywhere else (a clone after `make install`, Binder) this cell does nothing.
import importlib.util
import sys

if "google.colab" in sys.modules and importlib.util.find_spec("mrcnn_teach") is None:
    import subprocess
    from importlib.metadata import version

    keep = [f"{name}=={version(name)}" for name in ("torch", "torchvision")]  # e.g. torch==2.8.0+cu126
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "mrcnn_teach @ git+https://github.com/mrcnn-teach/mrcnn_teach", *keep], check=True)
    importlib.invalidate_caches()

# %%
from mrcnn_teach.notebook import setup, show_source, print_shapes

setup()

import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models.detection import maskrcnn_resnet50_fpn

from mrcnn_teach import build_maskrcnn, configs, kernels, load_torchvision_weights, weights
from mrcnn_teach import model as maskrcnn_module
from mrcnn_teach.configs import RESNET50_FPN, SHAPES_TINY, get_config
from mrcnn_teach.datasets import ShapesDataset
from mrcnn_teach.model import MaskRCNN
from mrcnn_teach.pretrained import trained_shapes_model
from mrcnn_teach.transform import ImageTransform
from mrcnn_teach.boxes import box_iou
from mrcnn_teach.datasets.transforms import tight_boxes
from mrcnn_teach.visualize import draw_instances

# %% [markdown]
# ## 1. Figure 1 as a constructor
#
# The paper's Figure 1 (He et al. 2017; the architecture is described in Sec. 3) shows Mask R-CNN as an
# image, a convolutional network, RoIAlign on each region, and then two branches side by side: one gives
# the class and the box, and a small FCN gives the mask. The regions come from a Region Proposal Network
# that reads the same features (Faster R-CNN, Ren et al. 2015, Sec. 3). With FPN, the "convolutional
# network" is a ResNet plus a feature pyramid (Lin et al. 2017). `MaskRCNN` is that figure as an
# `nn.Module`. It gets its four parts as constructor arguments: `transform`, `backbone`, `rpn` and
# `roi_heads`. Its `forward` calls them in that order, and in eval mode it then maps the detections back
# onto the caller's images. The module docstring draws the data flow. Read `forward` against it: each
# line is one box of the figure.

# %%
show_source(maskrcnn_module)

# %% [markdown]
# In train mode the RPN and the RoI heads also get the targets and return losses. In eval mode they return
# proposals and detections. The class also has a `set_kernels` method, which we use in section 6. Which
# classes fill the four slots? We build the small model and list its parts two levels deep, with the
# notebook that teaches each part. We expect the body and the FPN inside `backbone`, the anchors and the
# head inside `rpn`, and, inside `roi_heads`, a RoIAlign, a head and a predictor for each of the two branches.

# %%
# NBVAL_CHECK_OUTPUT
tiny = build_maskrcnn("shapes_tiny")
taught_in = {
    "transform": "08 (this notebook, section 3)",
    "backbone.body": "01 Backbone (C2..C5)",
    "backbone.fpn": "02 FPN (P2..P6)",
    "rpn.anchor_generator": "03 Anchors",
    "rpn.head": "04 RPN (objectness, deltas)",
    "roi_heads.box_roi_align": "05 RoIAlign, 06 Heads (7x7)",
    "roi_heads.box_head": "06 Heads",
    "roi_heads.box_predictor": "06 Heads (K+1 scores, deltas)",
    "roi_heads.mask_roi_align": "05 RoIAlign, 06 Heads (14x14)",
    "roi_heads.mask_head": "06 Heads",
    "roi_heads.mask_predictor": "06 Heads, 07 Mask loss (28x28)",
}
for path, where in taught_in.items():
    print(f"{path:<25} {type(tiny.get_submodule(path)).__name__:<20} {where}")
assert isinstance(tiny, MaskRCNN) and [name for name, _ in tiny.named_children()] == [
    "transform", "backbone", "rpn", "roi_heads"]

# %% [markdown]
# ## 2. A config is plain data
#
# `build_maskrcnn(name, **overrides)` does two things. `get_config` copies the named dict and applies
# the overrides; it refuses a key it does not know. `build_from_config` then reads the dict and builds
# the parts, one constructor call per box of the figure. A config is an ordinary `dict`: you can print
# it and compare it with `==`, and every model keeps it as `model.config`, so a checkpoint can rebuild
# the same model. Its keys are torchvision's `MaskRCNN` keyword names wherever torchvision has one
# (`min_size`, `rpn_post_nms_top_n_test`, `box_score_thresh`, ...). The same dict of overrides can
# therefore be given to both libraries, and section 5 does exactly that. The other keys name what
# torchvision decides inside its builder functions (`depth`, `norm`, `anchor_sizes`, ...).

# %%
show_source(configs.get_config, configs.build_maskrcnn, configs.build_from_config)

# %% [markdown]
# Two configs ship with the library. `resnet50_fpn` is torchvision's `maskrcnn_resnet50_fpn`.
# `shapes_tiny` starts from it (`{**RESNET50_FPN, ...}`) and changes what a model trained from scratch
# on 128-pixel images on a CPU needs. Before you run the next cell, guess the changes: a smaller ResNet
# (18 layers); GroupNorm instead of frozen BN, because there are no pretrained statistics to freeze
# (notebook 01); a narrower FPN; 4 classes; 128-pixel images, with anchors fitted to the shapes' boxes
# (three sizes per level, square only; notebook 03); fewer proposals and sampled RoIs; and narrow heads
# with GroupNorm. Both use the `mixed` kernels, the fastest of the three kernel sets for a `shapes_tiny`
# training step on a CPU (section 6). The cell prints every key where the two configs differ.

# %%
# NBVAL_CHECK_OUTPUT
differ = [key for key in RESNET50_FPN if RESNET50_FPN[key] != SHAPES_TINY[key]]
print(f"{len(RESNET50_FPN)} keys, {len(differ)} differ\n")
print(f"{'key':<26}{'resnet50_fpn':<40}shapes_tiny")
for key in differ:
    ours = str(RESNET50_FPN[key])
    print(f"{key:<26}{ours if len(ours) < 40 else ours[:34] + ' ...':<40}{SHAPES_TINY[key]}")
assert set(RESNET50_FPN) == set(SHAPES_TINY)

# %% [markdown]
# Is `resnet50_fpn` really torchvision's model, setting for setting? We build torchvision's
# `maskrcnn_resnet50_fpn` (random weights; nothing is downloaded) and read each setting from the place
# where torchvision keeps it: the transform, the anchor generator, the RPN's matcher and sampler, the RoI
# heads, the layer widths. `depth` is counted from the layers: 3 convs per bottleneck block, plus the
# stem conv and the (removed) classifier, makes 50. We expect every row to say `same`.

# %%
# NBVAL_CHECK_OUTPUT
tv = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
rpn, heads, tf = tv.rpn, tv.roi_heads, tv.transform
blocks = sum(len(getattr(tv.backbone.body, f"layer{i}")) for i in range(1, 5))  # 3 + 4 + 6 + 3 = 16
tv_settings = {
    "depth": 3 * blocks + 2, "fpn_channels": tv.backbone.out_channels,
    "num_classes": heads.box_predictor.cls_score.out_features,
    "min_size": tf.min_size[-1], "max_size": tf.max_size, "size_divisible": tf.size_divisible,
    "image_mean": tuple(tf.image_mean), "image_std": tuple(tf.image_std),
    "anchor_sizes": rpn.anchor_generator.sizes, "aspect_ratios": rpn.anchor_generator.aspect_ratios,
    "rpn_pre_nms_top_n_train": rpn._pre_nms_top_n["training"], "rpn_pre_nms_top_n_test": rpn._pre_nms_top_n["testing"],
    "rpn_post_nms_top_n_train": rpn._post_nms_top_n["training"], "rpn_post_nms_top_n_test": rpn._post_nms_top_n["testing"],
    "rpn_nms_thresh": rpn.nms_thresh, "rpn_score_thresh": rpn.score_thresh,
    "rpn_fg_iou_thresh": rpn.proposal_matcher.high_threshold, "rpn_bg_iou_thresh": rpn.proposal_matcher.low_threshold,
    "rpn_batch_size_per_image": rpn.fg_bg_sampler.batch_size_per_image,
    "rpn_positive_fraction": rpn.fg_bg_sampler.positive_fraction,
    "box_roi_size": heads.box_roi_pool.output_size[0], "mask_roi_size": heads.mask_roi_pool.output_size[0],
    "roi_sampling_ratio": heads.box_roi_pool.sampling_ratio,
    "box_fg_iou_thresh": heads.proposal_matcher.high_threshold, "box_bg_iou_thresh": heads.proposal_matcher.low_threshold,
    "box_batch_size_per_image": heads.fg_bg_sampler.batch_size_per_image,
    "box_positive_fraction": heads.fg_bg_sampler.positive_fraction,
    "bbox_reg_weights": heads.box_coder.weights, "representation_size": heads.box_head.fc7.out_features,
    "box_score_thresh": heads.score_thresh, "box_nms_thresh": heads.nms_thresh,
    "box_detections_per_img": heads.detections_per_img,
    "mask_head_channels": tuple(block[0].out_channels for block in heads.mask_head),
    "mask_dim_reduced": heads.mask_predictor.conv5_mask.out_channels,
}
for key, theirs in tv_settings.items():
    ours = RESNET50_FPN[key]
    shown = str(ours) if len(str(ours)) < 40 else str(ours)[:34] + " ..."  # aspect_ratios is long
    print(f"{key:<26}{shown:<40}{'same' if ours == theirs else f'DIFFERENT: torchvision has {theirs}'}")
assert all(RESNET50_FPN[key] == theirs for key, theirs in tv_settings.items())

# %% [markdown]
# Nine of the 43 keys are not in that list. Seven are choices that torchvision's builder does not
# offer: `kernels`, and options for the paper's ablations and for training from scratch (`mask_loss`,
# `roi_layer`, `box_head`, `box_head_conv_channels`, `head_norm`, `class_agnostic_masks`). At their
# `resnet50_fpn` values they give the paper's model. The other two, `norm="frozen_bn"` and `trainable_layers=3`, describe the
# *pretrained* path. When torchvision loads pretrained weights, it freezes BatchNorm and trains only
# res3–res5. Built with `weights=None`, as here, it uses ordinary, trainable BatchNorm everywhere (the
# next cell prints the stem's norm layer of both). Section 5 therefore builds ours with `norm="bn",
# trainable_layers=5` when it compares the two models.

# %%
r50 = build_maskrcnn("resnet50_fpn")  # ours, exactly as configured (section 4 counts its parameters)
print("torchvision, weights=None:", type(tv.backbone.body.bn1).__name__)
print("ours, resnet50_fpn:       ", type(r50.backbone.body.stem.bn1).__name__)

# %% [markdown]
# **Common mistake: "the RPN keeps 1000 proposals in training and 300 at test time".** Those are the
# numbers of the C4 model, not of a model with FPN. At test time Mask R-CNN keeps 300 proposals with the
# C4 backbone and 1000 with FPN (paper, Sec. 3.1, "Inference"). In training, torchvision keeps 2000 per
# image, as Detectron2 does (with FPN, the original Detectron applied its 2000 to the whole batch). Put
# the 1000/300 into the config and compare it with torchvision again; two settings now disagree:

# %%
c4_cfg = get_config("resnet50_fpn", rpn_post_nms_top_n_train=1000, rpn_post_nms_top_n_test=300)
try:
    wrong = {key: (c4_cfg[key], theirs) for key, theirs in tv_settings.items() if c4_cfg[key] != theirs}
    assert not wrong, f"the 1000/300 numbers differ from torchvision's FPN model: {wrong} (1000/300, torchvision)"
except AssertionError as err:
    print("1000/300 proposals:", err)
print("resnet50_fpn keeps", RESNET50_FPN["rpn_post_nms_top_n_train"], "proposals per image in training,",
      RESNET50_FPN["rpn_post_nms_top_n_test"], "at test time")

# %% [markdown]
# Overrides are how you change one setting without writing a new config, for example your own number
# of classes. A key that is not in the config is refused, with the list of valid keys, rather than
# silently ignored (the message is cut short below):

# %%
print("num_classes:", get_config("shapes_tiny", num_classes=7)["num_classes"])
try:
    get_config("shapes_tiny", num_class=7)  # a typo: num_class
except ValueError as err:
    print("ValueError:", str(err)[:80], "...")

# %% [markdown]
# ## 3. The contract: what goes in, what comes out
#
# Our model has torchvision's input/output contract, so a training loop or an evaluation script can
# use either model:
#
# - **in:** a list of `B` images, each `(3, H_i, W_i)` floats in [0, 1] and each its own size. In
#   training, also a list of `B` targets: `boxes (G_i, 4)` float `x1, y1, x2, y2` in pixels, `labels (G_i,)`
#   int64 in 1..K (0 is the background), `masks (G_i, H_i, W_i)` uint8.
# - **out, train mode** (`model.train(); model(images, targets)`): a dict of **five** scalar losses. Two
#   come from the RPN (notebook 04): `loss_objectness` and `loss_rpn_box_reg`. Three come from the RoI
#   heads: `loss_classifier` and `loss_box_reg` (notebook 06), and `loss_mask` (notebook 07). The
#   paper's multi-task loss $L = L_{cls} + L_{box} + L_{mask}$ (Sec. 3) is the last three; training
#   minimises the sum of all five (notebook 09).
# - **out, eval mode** (`model.eval(); model(images)`): a list of `B` dicts, one per image, with `boxes (D_i, 4)`
#   in the caller's pixels, `labels (D_i,)`, `scores (D_i,)` sorted from best to worst, and `masks (D_i, 1, H_i, W_i)`:
#   probabilities in [0, 1] at the caller's image size (threshold at 0.5 for a binary mask).
#
# The weights play no part in the contract. We use the trained shapes model (classes: background,
# square, circle, triangle) so that the picture at the end of this section shows something. Train mode
# first, on two training images; the cell prints each loss's name, shape and dtype, and whether it
# carries a gradient.

# %%
model = trained_shapes_model()
train_set = ShapesDataset(2, seed=0)
images = [train_set[i][0] for i in range(2)]  # 2 x (3, 128, 128)
targets = [train_set[i][1] for i in range(2)]  # 2 x dict(boxes (G, 4), labels (G,), masks (G, 128, 128), ...)
print(model.class_names)
print_shapes(image_0=images[0], boxes_0=targets[0]["boxes"], labels_0=targets[0]["labels"], masks_0=targets[0]["masks"])
assert images[0].shape == (3, 128, 128) and targets[0]["masks"].shape[1:] == (128, 128)

# %%
# NBVAL_CHECK_OUTPUT
model.train()
losses = model(images, targets)  # dict of 5 named scalars
model.eval()
for name, loss in losses.items():
    print(f"{name:<18} shape {tuple(loss.shape)}  {str(loss.dtype).removeprefix('torch.')}  requires_grad={loss.requires_grad}")
assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"}
assert all(loss.shape == () and loss.requires_grad for loss in losses.values())

# %% [markdown]
# Now eval mode, on two images of **different sizes**. Image 0 is held-out image 0 enlarged to 192×192;
# image 1 is held-out image 1 cut to its top 100 rows, so it is 100×128. The shapes config resizes each
# image so that its shorter side is 128 pixels, as long as its longer side stays at most 128 (the
# `resnet50_fpn` config does the same with 800 and 1333). Image 0 therefore shrinks to 128×128. For
# image 1, the shorter side 100 would become 128, which would push the longer side to 164, past the cap, so its scale is
# min(128/100, 128/128) = 1 and it stays 100×128. The batch is padded to multiples of 32, so we expect
# `(2, 3, 128, 128)`, with image 1 sitting in the top 100 rows.
#
# The paper gives only the 800 (Sec. 3.1: images are resized so that their shorter edge is 800 pixels).
# The cap of 1333 on the longer side comes from Detectron's configs, and torchvision's `maskrcnn_resnet50_fpn`
# has it as its default `max_size`; `resnet50_fpn` uses both (section 2 read them back from torchvision).

# %%
# NBVAL_CHECK_OUTPUT
held_out = ShapesDataset(100, seed=1)
eval_images = [F.interpolate(held_out[0][0][None], size=(192, 192), mode="bilinear", align_corners=False)[0].clamp(0, 1),
               held_out[1][0][:, :100, :]]  # (3, 192, 192), (3, 100, 128)
batch, image_sizes, _ = model.transform(eval_images)  # (2, 3, 128, 128), [(h, w) inside the batch]
print_shapes(image_0=eval_images[0], image_1=eval_images[1], batch=batch)
print("image sizes inside the batch:", image_sizes)
assert batch.shape == (2, 3, 128, 128) and image_sizes == [(128, 128), (100, 128)]

# %% [markdown]
# The model runs on the batch and returns one dict per image. We expect the keys `boxes`, `labels`,
# `scores`, `masks`. `D` is the number of detections, which differs from image to image; the masks
# should have each image's *own* size, 192×192 and 100×128. Only the shapes are printed, with `D` as a letter.

# %%
# NBVAL_CHECK_OUTPUT
with torch.no_grad():
    outputs = model(eval_images)  # list of 2 dicts
for i, (image, out) in enumerate(zip(eval_images, outputs)):
    D, (H, W) = len(out["boxes"]), image.shape[-2:]
    shapes = ", ".join(f"{key} ({', '.join(['D', *map(str, value.shape[1:])])}{',' if value.dim() == 1 else ''}) "
                       f"{str(value.dtype).removeprefix('torch.')}" for key, value in out.items())
    print(f"image {i} ({H}x{W}): {shapes}")
    assert set(out) == {"boxes", "labels", "scores", "masks"}
    assert out["boxes"].shape == (D, 4) and out["labels"].shape == (D,) and out["scores"].shape == (D,)
    assert out["masks"].shape == (D, 1, H, W) and out["masks"].dtype == torch.float32
    assert 0 <= out["masks"].min() and out["masks"].max() <= 1, "masks are probabilities"
    assert torch.all(out["scores"][:-1] >= out["scores"][1:]), "sorted, best first"
    assert (out["boxes"][:, 2] <= W).all() and (out["boxes"][:, 3] <= H).all(), "boxes in the caller's pixels"

# %% [markdown]
# The last step of `forward` brings the detections back to the caller's images. Each box is scaled by
# the inverse of the resize (×1.5 for image 0), and each 28×28 mask is resized into its box and pasted
# into an empty image of the caller's size (`masks.paste_masks_in_image`; notebook 10 looks at the
# pasting and the thresholds).

# %%
show_source(ImageTransform.postprocess)

# %% [markdown]
# The two images at their own sizes, with the detections that score at least 0.5 (a pixel is drawn as
# part of a mask where its probability is above 0.5). The axes are in the caller's pixels: 0..192 and 0..128.
# The cell after the picture compares image 1's detections with its ground truth.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), layout="constrained", gridspec_kw={"width_ratios": [192, 128]})
for i, (ax, image, out) in enumerate(zip(axes, eval_images, outputs)):
    draw_instances(ax, image, out["boxes"], out["labels"], out["scores"], out["masks"],
                   class_names=model.class_names, score_thresh=0.5)
    ax.set_axis_on()
    ax.set_xlabel("x (pixels of the caller's image)")
    ax.set_ylabel("y (pixels)")
    H, W = image.shape[-2:]
    ax.set_title(f"image {i}: {H}×{W}, masks come back {tuple(out['masks'].shape[-2:])}")
fig.suptitle("Eval mode: boxes and masks at each caller's image size (score ≥ 0.5)")
plt.show()

# %%
# Image 1's shapes, cut to the top 100 rows like the image, against each detection drawn there
gt_boxes = tight_boxes(held_out[1][1]["masks"][:, :100])  # (G, 4) each shape's visible pixels in the top 100 rows
gt_labels = held_out[1][1]["labels"]  # (G,)
shown = outputs[1]["scores"] >= 0.5
best, match = box_iou(outputs[1]["boxes"][shown], gt_boxes).max(dim=1)  # (D,) best IoU, its shape
for label, score, iou, g in zip(outputs[1]["labels"][shown], outputs[1]["scores"][shown], best, match):
    verdict = "right" if iou >= 0.5 and label == gt_labels[g] else "WRONG"
    print(f"{model.class_names[label]:<9} {score:.2f}: best IoU {iou:.2f} with the {model.class_names[gt_labels[g]]:<9} {verdict}")

# %% [markdown]
# In the saved run, two of image 1's five detections are wrong, and the picture shows both. The
# "square" box around the circle is a second guess on the circle: it overlaps the circle's box well
# (IoU above 0.5) under the wrong class. NMS runs per class, so the circle's own, better detection does
# not suppress it (notebook 06); section 8 counts such second guesses. The "triangle" at the bottom
# is the right class in the wrong place: the crop left only that triangle's top rows (y 91 to 100), and
# its box (y about 83 to 100) is about twice as tall as that, reaching up over the square's box, so its
# IoU with the triangle's visible pixels is 0.40 (the table above). The contract says nothing about how
# good the detections are; notebooks 10 and 11 measure that.

# %% [markdown]
# Inputs that break the contract are refused at the door, with a message that names the image and the
# box. Below are three mistakes students make: one stacked `(B, 3, H, W)` tensor instead of a list, train
# mode without targets, and boxes given as `(x, y, w, h)` (COCO's annotation format), here a 20×25 box at
# (30, 40), whose "x2" 20 is left of its x1 30.

# %%
xywh = [dict(targets[0], boxes=torch.tensor([[30.0, 40.0, 20.0, 25.0]] * len(targets[0]["boxes"])))]
mistakes = {
    "one stacked tensor": lambda: model(torch.stack(images)),
    "train mode, no targets": lambda: model.train()(images),
    "(x, y, w, h) boxes": lambda: model.train()(images[:1], xywh),
}
for what, call in mistakes.items():
    try:
        call()
    except (TypeError, ValueError) as err:
        print(f"{what:<24} {type(err).__name__}: {err}")
    finally:
        model.eval()

# %% [markdown]
# **Common mistake: "the model refuses `(x, y, w, h)` boxes".** It refuses only the ones it can tell
# apart from corner boxes: those with a width no larger than their x, or a height no larger than their
# y, which read as x2 <= x1 or y2 <= y1. Any other `(x, y, w, h)` box is also a valid `(x1, y1, x2, y2)` box, just the
# wrong one. The 20×20 square at (10, 10), given as `[10, 10, 20, 20]`, is read as the 10×10 square
# from (10, 10) to (20, 20), and training takes it without a word. The fix is at the source: convert
# once, `x2 = x + w`, `y2 = y + h` (`torchvision.ops.box_convert(boxes, "xywh", "xyxy")`), where the
# annotations are read; the library's COCO reader does it for you.

# %%
square_xywh = torch.tensor([[10.0, 10.0, 20.0, 20.0]])  # x, y, w, h of the square (10, 10)-(30, 30)
quiet = [dict(boxes=square_xywh, labels=torch.tensor([1]), masks=torch.zeros(1, 128, 128, dtype=torch.uint8))]
quiet[0]["masks"][0, 10:30, 10:30] = 1  # the true square's mask
model.train()
silent_losses = model(images[:1], quiet)  # no error: [10, 10, 20, 20] is a valid corner box too
model.eval()
print("accepted; the losses:", ", ".join(f"{k} {v.item():.3f}" for k, v in silent_losses.items()))
print("the box it learns from: x1, y1, x2, y2 =", square_xywh[0].tolist(), "-> 10x10, not 20x20")
assert set(silent_losses) == set(losses)  # trained on the wrong box, silently

# %% [markdown]
# ## 4. Where the parameters are, and where the arithmetic is
#
# We count the parameters stage by stage in both configs. Try to predict the big numbers first:
#
# - The ResNet-50 body is torchvision's ResNet-50 classifier (25.6 M) minus its 1000-way fc layer
#   (2048·1000 + 1000 ≈ 2.05 M), so about 23.5 M. ResNet-18's body is about 11.2 M.
# - The box head's first fc layer reads the whole 7×7×256 RoI grid, 12 544 numbers, and writes 1024:
#   about 12.8 M weights in a single layer, more than half as many as the body.
# - The RPN head is one 3×3 conv from 256 to 256 channels plus two 1×1 convs: about 0.6 M.
#
# Frozen BatchNorm keeps its scale and shift as buffers, not parameters, so they are not counted here.
# torchvision counts the same way: its pretrained `maskrcnn_resnet50_fpn` lists 44,401,393 parameters.

# %%
# NBVAL_CHECK_OUTPUT
def stage_counts(m):
    """Parameters per stage of Figure 1: {stage: count}."""
    stages = {"backbone body": [m.backbone.body], "FPN": [m.backbone.fpn], "RPN head": [m.rpn],
              "box head + predictor": [m.roi_heads.box_head, m.roi_heads.box_predictor],
              "mask head + predictor": [m.roi_heads.mask_head, m.roi_heads.mask_predictor]}
    return {name: sum(p.numel() for part in parts for p in part.parameters()) for name, parts in stages.items()}


counts = {"shapes_tiny": stage_counts(tiny), "resnet50_fpn": stage_counts(r50)}
print(f"{'stage':<24}{'shapes_tiny':>14}{'resnet50_fpn':>14}")
for stage in counts["shapes_tiny"]:
    print(f"{stage:<24}{counts['shapes_tiny'][stage]:>14,}{counts['resnet50_fpn'][stage]:>14,}")
totals = {name: sum(c.values()) for name, c in counts.items()}
print(f"{'total':<24}{totals['shapes_tiny']:>14,}{totals['resnet50_fpn']:>14,}")
trainable = sum(p.numel() for p in r50.parameters() if p.requires_grad)
print(f"resnet50_fpn trainable (stem and res2 frozen, trainable_layers=3): {trainable:,}")
print(f"box head's first fc alone: {r50.roi_heads.box_head.fc1.weight.numel():,} weights")
assert totals["shapes_tiny"] == sum(p.numel() for p in tiny.parameters())
assert totals["resnet50_fpn"] == sum(p.numel() for p in r50.parameters()) == 44_401_393

# %% [markdown]
# Parameters are not compute. A parameter is stored once, but a layer does its multiply-accumulates
# (MACs) wherever it is applied: a conv at every output cell of its map, the box head once per RoI, the
# mask head once per mask. Which stage has the most arithmetic? We count instead of guessing.
# `FlopCounterMode` (`torch.utils.flop_counter`) records the convolutions and matrix products of a run,
# at 2 flops per MAC. It also runs on `meta` tensors, which have shapes and no data, so counting a
# ResNet-50 at 800 pixels costs no arithmetic at all. RoIAlign, NMS and the element-wise layers are
# not counted; beside the convolutions they are small.
#
# How many RoIs each head sees is part of the answer. At test time the box head runs on every
# proposal (`rpn_post_nms_top_n_test`), and the mask head only on the highest-scoring detections,
# at most `box_detections_per_img` = 100 (Sec. 3.1, "Inference"). **In training the mask head runs on
# the positive RoIs only** (the mask loss is defined only on positive RoIs, Sec. 3.1), at most a quarter
# of the 512 sampled RoIs; the box head runs on all 512.

# %%
from torch.utils.flop_counter import FlopCounterMode


def macs(run, *inputs):
    """Multiply-accumulates of run(*inputs): FlopCounterMode counts 2 flops per multiply-add."""
    with FlopCounterMode(display=False) as counter:
        run(*inputs)
    return counter.get_total_flops() // 2


def stage_macs(name, image_hw, num_rois, num_masks):
    """MACs per stage of Figure 1: one padded image of image_hw, num_rois box RoIs, num_masks mask RoIs."""
    with torch.device("meta"):  # shapes without data: nothing is computed
        m = build_maskrcnn(name)
        d, box, mask, heads = m.backbone.fpn.out_channels, m.config["box_roi_size"], m.config["mask_roi_size"], m.roi_heads
        image = torch.empty(1, 3, *image_hw)  # (1, 3, H, W)
        C = m.backbone.body(image)  # [C2..C5]
        P = m.backbone.fpn(C)  # [P2..P6], each (1, d, h, w)
        return {"backbone body": macs(m.backbone.body, image), "FPN": macs(m.backbone.fpn, C),
                "RPN head": macs(m.rpn.head, P),
                "box head + predictor": macs(lambda x: heads.box_predictor(heads.box_head(x)),
                                             torch.empty(num_rois, d, box, box)),  # (N, d, 7, 7)
                "mask head + predictor": macs(lambda x: heads.mask_predictor(heads.mask_head(x)),
                                              torch.empty(num_masks, d, mask, mask))}  # (M, d, 14, 14)

# %% [markdown]
# For `resnet50_fpn` we count one COCO-sized image, 480×640, which the transform resizes to 800×1066 and
# pads to 800×1088; for `shapes_tiny` one 128×128 image. Each RoI count comes from the config. Before
# running: which stage of `resnet50_fpn` do you expect to do the most arithmetic at test time, and how
# much of it goes to the fc layer with 12.8 M weights?

# %%
# NBVAL_CHECK_OUTPUT
coco_batch, _, _ = r50.transform([torch.zeros(3, 480, 640)])  # (1, 3, 800, 1088)
runs = {}
for name, cfg, image_hw in (("resnet50_fpn", RESNET50_FPN, tuple(coco_batch.shape[-2:])), ("shapes_tiny", SHAPES_TINY, (128, 128))):
    positives = int(cfg["box_batch_size_per_image"] * cfg["box_positive_fraction"])  # at most, per image
    runs[name] = {"test": stage_macs(name, image_hw, cfg["rpn_post_nms_top_n_test"], cfg["box_detections_per_img"]),
                  "training": stage_macs(name, image_hw, cfg["box_batch_size_per_image"], positives)}
    print(f"{name}, image {image_hw[0]}x{image_hw[1]}: test {cfg['rpn_post_nms_top_n_test']} box RoIs and "
          f"{cfg['box_detections_per_img']} masks; training {cfg['box_batch_size_per_image']} box RoIs and {positives} masks")
    print(f"  {'stage':<24}{'parameters':>16}{'GMACs, test':>16}{'GMACs, training':>18}")
    for stage, n in counts[name].items():
        t, r = runs[name]["test"][stage], runs[name]["training"][stage]
        print(f"  {stage:<24}{n / 1e6:>9.2f} M {n / totals[name]:>4.0%}{t / 1e9:>10.2f} {t / sum(runs[name]['test'].values()):>5.0%}"
              f"{r / 1e9:>12.2f} {r / sum(runs[name]['training'].values()):>5.0%}")
fc1, n_test = r50.roi_heads.box_head.fc1, RESNET50_FPN["rpn_post_nms_top_n_test"]
with torch.device("meta"):  # a copy of fc1's shape: (1000, 12544) RoI features in
    fc1_macs = macs(torch.nn.Linear(fc1.in_features, fc1.out_features), torch.empty(n_test, fc1.in_features))
print(f"\nresnet50_fpn's fc1 (torchvision's fc6): {fc1.weight.numel() / totals['resnet50_fpn']:.0%} of the parameters, "
      f"{fc1_macs / sum(runs['resnet50_fpn']['test'].values()):.0%} of the test-time MACs")
assert fc1_macs == fc1.weight.numel() * n_test  # a linear layer costs its weights once per RoI
test, train = runs["resnet50_fpn"]["test"], runs["resnet50_fpn"]["training"]
assert train["box head + predictor"] * n_test == test["box head + predictor"] * RESNET50_FPN["box_batch_size_per_image"]
assert train["backbone body"] == test["backbone body"]  # the image, not the RoIs, sets the body's cost

# %%
colours = ["tab:blue", "tab:cyan", "tab:purple", "tab:olive", "tab:pink"]
fig, axes = plt.subplots(2, 1, figsize=(11, 5.6), layout="constrained", sharex=True)
for ax, name in zip(axes, ("resnet50_fpn", "shapes_tiny")):
    rows = {"parameters": counts[name], "MACs, test": runs[name]["test"], "MACs, training\n(forward)": runs[name]["training"]}
    left = np.zeros(len(rows))
    for stage, colour in zip(counts[name], colours):
        share = np.array([100 * row[stage] / sum(row.values()) for row in rows.values()])
        bars = ax.barh(list(rows), share, left=left, color=colour, label=stage)
        ax.bar_label(bars, labels=[f"{v:.0f}%" if v >= 4 else "" for v in share], label_type="center", fontsize=9)
        left += share
    ax.invert_yaxis()
    ax.set_title(f"{name}: parameters {totals[name] / 1e6:.1f} M, test-time compute "
                 f"{sum(runs[name]['test'].values()) / 1e9:.1f} GMACs per image")
axes[1].set_xlabel("share of the model's total (%)")
fig.suptitle("Where the parameters are is not where the arithmetic is")
fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=5, fontsize=9)
plt.show()

# %% [markdown]
# Read the bars of each model against each other. In `resnet50_fpn` the box head's fc1 holds more than a
# quarter of the parameters and does a small share of the arithmetic (the line under the table): it is
# one matrix product per RoI. The convolutions that slide over the whole 800×1088 image do most of
# the work, and the body alone less than a third of it: the FPN's 3×3 output convs and the RPN's 3×3
# conv run at 256 channels on every level, P2 (200×272) included. The mask branch is fc1's opposite: a
# few percent of the parameters, but four 3×3 convs at 14×14 and a deconv to 28×28, once per mask, so
# 100 masks cost most of what the body costs (compare the two rows of the table). In training, with
# at most 128 masks, its share grows. `shapes_tiny`, with narrow convs on a 128×128 image, spends a
# larger share in its box head.
# %% [markdown]
# ## 5. Same weights, same numbers as torchvision
#
# The claim of this library is that its Mask R-CNN *is* torchvision's, written to be read. We test the
# claim on the whole model. The parts are the same; only their names differ. Ours use the paper's names
# (`res2..res5` for conv2_x..conv5_x, `lateral`/`output` for the FPN's 1×1 and 3×3 convs,
# `objectness`/`deltas` for the RPN's two outputs), while torchvision's names come from its history
# (`layer1`, `inner_blocks`, `fc6`, ...). `load_torchvision_weights` renames every key with a short
# table of rules (one regular expression per line), checks every shape, and loads strictly: a key
# that has no partner is an error that lists the key, never a silent skip.

# %%
show_source(weights)

# %% [markdown]
# Some of torchvision's names and ours, and the count: every tensor in torchvision's state dict
# (including BatchNorm's step counters) has a partner in our model.

# %%
# NBVAL_CHECK_OUTPUT
tv_state = tv.state_dict()
for key in ["backbone.body.layer1.0.conv1.weight", "backbone.fpn.inner_blocks.0.0.weight",
            "backbone.fpn.layer_blocks.3.0.bias", "rpn.head.conv.0.0.weight", "rpn.head.cls_logits.weight",
            "roi_heads.box_head.fc6.weight", "roi_heads.box_predictor.bbox_pred.weight",
            "roi_heads.mask_head.0.0.weight", "roi_heads.mask_predictor.conv5_mask.weight",
            "roi_heads.mask_predictor.mask_fcn_logits.weight"]:
    assert key in tv_state
    print(f"{key:<48} -> {weights.torchvision_key_to_ours(key)}")
converted = weights.convert_torchvision_state_dict(tv_state)
print(f"\n{len(tv_state)} torchvision tensors, {len(converted)} renamed")
assert len(converted) == len(tv_state)

# %% [markdown]
# Now the experiment, set up the way the project's own test (`tests/test_model_equivalence.py`) does it.
# Four choices make the comparison exact rather than lucky:
#
# 1. **Same settings, same keywords.** Both models get the same override dict. Smaller images
#    (`min_size=256, max_size=384` instead of 800/1333), 300 proposals and at most 20 detections keep
#    the CPU time low, and a low score threshold (0.01) leaves enough detections to compare. The
#    keyword names are the same in both libraries, so one dict serves both.
# 2. **BatchNorm statistics.** A fresh BatchNorm has running mean 0 and variance 1, which is the
#    identity. Through 50 layers the activations then grow by orders of magnitude, and every box ends up
#    regressed to the image border. One train-mode pass over random images with `momentum=None` sets
#    the running statistics to that batch's, as a trained network would have them.
# 3. **Confident classes.** Random weights give every one of the 91 classes a score near 1/91. The
#    classifier's weights are drawn a little wider, so that some detections stand out.
# 4. **float64.** Top-k and NMS are discrete decisions. In float32 two computations that are equal
#    in exact arithmetic can differ by 1e-7 and swap two nearly tied proposals. float64 leaves no such
#    ties, so any difference that remains is a bug.
#
# torchvision with `weights=None` uses trainable BatchNorm in all five stages, so ours is built with
# `norm="bn", trainable_layers=5` (section 2). After loading, the parameter counts must agree.

# %%
SMALL = dict(min_size=256, max_size=384, rpn_post_nms_top_n_test=300, box_detections_per_img=20, box_score_thresh=0.01)

torch.manual_seed(0)
tv_model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, **SMALL)
for m in tv_model.backbone.body.modules():  # 2. BatchNorm statistics from one batch
    if isinstance(m, torch.nn.BatchNorm2d):
        m.reset_running_stats()
        m.momentum = None  # the running statistics become exactly this batch's
tv_model.backbone.body.train()
with torch.no_grad():
    tv_model.backbone.body(torch.randn(2, 3, 160, 224))  # (2, 3, 160, 224) random images
    tv_model.roi_heads.box_predictor.cls_score.weight.normal_(0, 0.05)  # 3. spread the class scores
tv_model.backbone.body.eval()

ours_model = build_maskrcnn("resnet50_fpn", norm="bn", trainable_layers=5, **SMALL)  # 1. the same overrides
load_torchvision_weights(ours_model, tv_model.state_dict())
tv_model, ours_model = tv_model.double().eval(), ours_model.double().eval()  # 4. float64
n_tv, n_ours = (sum(p.numel() for p in m.parameters()) for m in (tv_model, ours_model))
print(f"parameters: torchvision {n_tv:,}, ours {n_ours:,}")
assert n_tv == n_ours

# %% [markdown]
# **Common mistake: "a COCO model has 81 classes".** 80 categories and the background is right for
# Detectron's label map, but torchvision's COCO checkpoint has **91** outputs: it keeps one slot for
# every original COCO id, including 10 unused ones (notebook 06). A model built with 81 classes cannot
# take those weights. The loader refuses and lists the six
# tensors whose shapes differ (weight and bias of the three predictor layers), instead of loading
# half a model:

# %%
try:
    load_torchvision_weights(build_maskrcnn("resnet50_fpn", num_classes=81, norm="bn"), tv_model.state_dict())
except ValueError as err:
    print("ValueError:", err)

# %% [markdown]
# Both models now see one image: held-out image 3 enlarged to an odd size, 203×287. For each model we
# call its parts one by one: transform, backbone, RPN, RoI heads, postprocess. We expect the shorter side
# 203 to be resized to 256, and the longer side to 287·256/203 = 361.93, which `interpolate` rounds
# **down** to 361 (it floors the output size), in a batch padded to 256×384; P2 is then 64×96 and P6 4×6.
# We also expect 300 proposals and 20 detections from each model.

# %%
image64 = F.interpolate(held_out[3][0][None], size=(203, 287), mode="bilinear", align_corners=False)[0].double()  # (3, 203, 287)
LEVELS = ["0", "1", "2", "3", "pool"]  # torchvision's names of P2, P3, P4, P5, P6


def stages_torchvision(m, image):
    image_list, _ = m.transform([image])
    features = m.backbone(image_list.tensors)  # OrderedDict "0".."pool", each (1, 256, h, w)
    proposals, _ = m.rpn(image_list, features)  # [(N, 4)]
    detections, _ = m.roi_heads(features, proposals, image_list.image_sizes)
    detections = m.transform.postprocess(detections, image_list.image_sizes, [tuple(image.shape[-2:])])
    return image_list.tensors, [features[k] for k in LEVELS], proposals[0], detections[0]


def stages_ours(m, image):
    batch, sizes, _ = m.transform([image])  # (1, 3, 256, 384), [(256, 361)]
    features = m.backbone(batch)  # [P2..P6], each (1, 256, h, w)
    proposals, _ = m.rpn(batch, sizes, features)  # [(N, 4)]
    detections, _ = m.roi_heads(features, proposals, sizes)
    detections = m.transform.postprocess(detections, sizes, [tuple(image.shape[-2:])])
    return batch, sizes, features, proposals[0], detections[0]


start = time.perf_counter()
with torch.no_grad():
    tv_batch, tv_features, tv_proposals, tv_dets = stages_torchvision(tv_model, image64)
    batch64, sizes64, features64, proposals64, dets64 = stages_ours(ours_model, image64)
    tv_sizes = tv_model.transform([image64])[0].image_sizes
compare_seconds = time.perf_counter() - start
print("image size inside the batch: ours", sizes64, "torchvision", tv_sizes)
print_shapes(batch=batch64, P2=features64[0], P6=features64[4], proposals=proposals64,
             boxes=dets64["boxes"], masks=dets64["masks"])
assert sizes64 == [(256, 361)] and [tuple(s) for s in tv_sizes] == [(256, 361)]  # floor(361.93), not 362
assert batch64.shape == tv_batch.shape == (1, 3, 256, 384)
assert [tuple(P.shape[-2:]) for P in features64] == [(64, 96), (32, 48), (16, 24), (8, 12), (4, 6)]
assert proposals64.shape == tv_proposals.shape == (300, 4)
assert dets64["boxes"].shape == tv_dets["boxes"].shape == (20, 4)
assert dets64["masks"].shape == tv_dets["masks"].shape == (20, 1, 203, 287)

# %% [markdown]
# The largest absolute difference at each stage. The project's test allows 1e-6 for the features, the
# proposals, the boxes and the scores, and 1e-5 for the pasted masks; the labels must be equal. We
# expect differences at the level of float64 round-off (about 1e-12 or less) or exactly 0, because both
# models do the same arithmetic in nearly the same order. The masks are the exception, at about 1e-6:
# our pasting (`masks.paste_masks_in_image`) computes its interpolation weights in float32 even in a
# float64 model, which is well inside the test's 1e-5 for probabilities. The picture after the numbers
# draws each stage's difference against its own tolerance (the dashes) on a log scale; a difference of
# exactly 0 is drawn at the bottom and labelled "0".

# %%
pairs = {"batch": (batch64, tv_batch), **{f"P{l}": (a, b) for l, a, b in zip(range(2, 7), features64, tv_features)},
         "proposals": (proposals64, tv_proposals), "boxes": (dets64["boxes"], tv_dets["boxes"]),
         "scores": (dets64["scores"], tv_dets["scores"]), "masks": (dets64["masks"], tv_dets["masks"])}
diffs = {name: (a - b).abs().max().item() for name, (a, b) in pairs.items()}
for name, d in diffs.items():
    print(f"{name:<10} max |ours - torchvision| = {d:.1e}")
print("labels equal:", torch.equal(dets64["labels"], tv_dets["labels"]))
print(f"(both models, stage by stage, took {compare_seconds:.1f} s)")
assert torch.equal(dets64["labels"], tv_dets["labels"])
assert all(d <= (1e-5 if name == "masks" else 1e-6) for name, d in diffs.items())

# %%
floor = 1e-18
names = list(diffs)
tolerance = [1e-5 if n == "masks" else 1e-6 for n in names]
fig, ax = plt.subplots(figsize=(10, 4.4), layout="constrained")
bars = ax.bar(names, [max(diffs[n], floor) for n in names], bottom=floor / 10,
              color=["tab:gray" if diffs[n] == 0 else "tab:blue" for n in names])
ax.bar_label(bars, labels=["0" if diffs[n] == 0 else f"{diffs[n]:.0e}" for n in names], fontsize=8)
ax.hlines(tolerance, np.arange(len(names)) - 0.4, np.arange(len(names)) + 0.4, colors="tab:red",
          linestyles="--", label="the test's tolerance for that stage")
ax.set_yscale("log")
ax.set_ylim(floor / 10, 1e-3)
ax.set_xlabel("stage")
ax.set_ylabel("max |ours − torchvision| (log scale)")
worst = max((n for n in names if n != "masks"), key=diffs.get)
ax.set_title(f"float64, stage by stage: all but the masks at round-off (worst {worst}, {diffs[worst]:.0e}); "
             f"masks {diffs['masks']:.0e}, inside their 1e-5", fontsize=10)
ax.legend(loc="upper left")
plt.show()

# %% [markdown]
# The same comparison runs in the test suite on two images at once, at the default 800/1333 size, with
# the other kernel sets, and in train mode, where the five losses and the gradients must match too.
#
# ## 6. The kernel switch
#
# Two operations have a compiled twin in torchvision: NMS (notebooks 04 and 06) and RoIAlign (notebook
# 05). The model never imports either one directly. Every module that calls one holds a `kernels`
# bundle, and `MaskRCNN.set_kernels` (section 1) hands a new bundle to all of them. There are three
# bundles:
#
# - `teaching`: `nms.py` and `roi_ops.py`, the from-scratch code these notebooks read;
# - `torchvision`: torchvision's compiled C++/CUDA kernels;
# - `mixed`: torchvision's NMS with our fast separable RoIAlign (`roi_align_fast.py`, notebook 05,
#   section 10). For a `shapes_tiny` training step on a CPU it is the fastest of the three
#   (`benchmarks/step_time.py`: 0.56x torchvision's time, teaching 0.63x), and it is the default
#   of both configs.

# %%
show_source(kernels)

# %% [markdown]
# We run the trained model on 8 held-out images with each bundle. We expect the same detections every
# time, equal up to float32 rounding: the three RoIAligns add the same numbers in different orders. We also time each run: one warm-up, then the median of 3 runs. We expect the teaching
# kernels to be the slowest, since they are written to be read. Timings vary from machine to machine and
# from run to run, so read them as "which is faster", not as exact figures.

# %%
test_images = [held_out[i][0] for i in range(8)]  # 8 x (3, 128, 128)
results, seconds = {}, {}
with torch.no_grad():
    for name in ("teaching", "torchvision", "mixed"):
        model.set_kernels(name)
        times = []
        for _ in range(4):
            start = time.perf_counter()
            results[name] = model(test_images)
            times.append(time.perf_counter() - start)
        seconds[name] = float(np.median(times[1:]))  # the first run warms up
model.set_kernels("mixed")  # back to the model's own setting
for name in ("torchvision", "mixed"):
    for a, b in zip(results["teaching"], results[name]):
        assert a["boxes"].shape == b["boxes"].shape and torch.equal(a["labels"], b["labels"])
    worst = {key: max((a[key] - b[key]).abs().max().item() for a, b in zip(results["teaching"], results[name]))
             for key in ("boxes", "scores", "masks")}
    print(f"{name:<12} vs teaching: same labels and counts; max difference "
          + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    assert worst["boxes"] < 1e-3 and worst["scores"] < 1e-5 and worst["masks"] < 1e-4
print("detections per image:", [len(r["boxes"]) for r in results["teaching"]])
for name, s in seconds.items():
    print(f"{name:<12} {1000 * s:7.0f} ms for 8 images  ({s / seconds['mixed']:.1f}x mixed)")

# %% [markdown]
# In the saved run torchvision's kernels were the fastest here, ahead of `mixed`. That does not
# contradict the choice of `mixed`: it was chosen by timing training steps, forward and backward
# (`benchmarks/step_time.py`, and `benchmarks/roi_align_time.py` for RoIAlign alone, where the fast
# form took 0.24x torchvision's time on the `shapes_tiny` box head's workload). This cell times
# inference only, with no backward pass, and none of the benchmarks measures that for `shapes_tiny`.
# For `resnet50_fpn` at 800 pixels, inference took 1.06x torchvision's time with `mixed` and 1.08x with
# the compiled pair (`benchmarks/README.md`, run 4): a tie within that machine's run-to-run noise. So
# for inference alone on a CPU, time both on your machine; the detections are the same either way.

# %% [markdown]
# ## 7. What changes on a GPU
#
# Nothing in the model is tied to the CPU. Every tensor the model makes is created on the device of its
# input: anchors on the device of the features, the normalising mean and std on the device of the
# image. Inference on a GPU therefore needs two moves, the model and the images: `model.to("cuda")`,
# then `model([img.to("cuda") for img in images])`. The command line's `--device auto`, the default,
# picks the GPU when there is one. Two things are worth changing there:
#
# - **Kernels.** Use torchvision's CUDA NMS and RoIAlign (`model.set_kernels("torchvision")`, or
#   `--kernels torchvision`). The teaching kernels run on a GPU too, since they are plain tensor
#   operations. Their NMS builds an N×N boolean matrix, which is fine for a few thousand boxes. `mixed`
#   was chosen by timing on a CPU; on a GPU, measure again with
#   `benchmarks/bench_vs_torchvision.py --device cuda`.
# - **Size.** The `resnet50_fpn` training preset (notebook 09) is meant for a GPU and COCO-sized data:
#   800-pixel images, 2 images per step, AMP on. For example:
#   `python -m mrcnn_teach train --config resnet50_fpn --data DIR --amp --kernels torchvision`.
#
# Training on a GPU in float16 (`--amp`: autocast and a gradient scaler) is part of training: see the
# appendix section "Mixed precision (AMP)" of [09 — Training](09_training.ipynb).
#
# This machine's answer to "is there a GPU?", and the code path that uses one when there is. On a CPU-only
# machine the cell runs the same call on the CPU, so it never fails without a GPU. The output depends on
# the machine.

# %%
print("CUDA available:", torch.cuda.is_available())
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
if device.type == "cuda":
    model.set_kernels("torchvision")  # torchvision's compiled CUDA NMS and RoIAlign
model.to(device)
with torch.no_grad():
    out = model([img.to(device) for img in test_images[:2]])  # 2 x dict, every tensor on `device`
print(f"ran on {out[0]['boxes'].device.type} with the {model.rpn.kernels.name} kernels; "
      f"masks {tuple(out[0]['masks'].shape[1:])}")
assert out[0]["masks"].shape[1:] == (1, 128, 128) and out[0]["boxes"].device.type == device.type

# %% [markdown]
# ## 8. The trained shapes model on held-out images
#
# The model these notebooks share was trained from scratch for 700 steps of 8 shapes images (notebook 09
# is about training; notebook 11 measures its AP on the held-out images). Below are four held-out images:
# the ground truth on top and the detections with a score of at least 0.7 underneath, with the masks the
# model pasted. Why 0.7 and not the 0.5 of the `predict` command: between the two, this model adds
# second guesses, the same shape once more under another class. NMS runs per class, so a "circle" box
# does not suppress a "square" box on the same object (notebook 06). The cell after the picture counts,
# over all eight images that section 6 ran and at both thresholds, the shapes found with the right class
# (box IoU ≥ 0.5), the second guesses, and the detections that overlap no shape. In image 5 the two
# squares' boxes start at nearly the same corner, so the small square's caption hides the large one's:
# the big box is the large square.

# %%
# README thumbnail
picks, SHOWN = [4, 5, 6, 7], 0.7
fig, axes = plt.subplots(2, 4, figsize=(12, 6.4), layout="constrained")
for col, i in enumerate(picks):
    image, target = held_out[i]
    pred = results["mixed"][i]  # section 6 already ran the model on held-out images 0..7
    draw_instances(axes[0, col], image, target["boxes"], target["labels"], masks=target["masks"],
                   class_names=model.class_names)
    draw_instances(axes[1, col], image, pred["boxes"], pred["labels"], pred["scores"], pred["masks"],
                   class_names=model.class_names, score_thresh=SHOWN)
    axes[0, col].set_title(f"held-out image {i}: ground truth")
    axes[1, col].set_title(f"image {i}: detections, score ≥ {SHOWN}")
fig.suptitle("shapes_tiny after 700 training steps (colours: square orange, circle green, triangle red)")
plt.show()

# %%
def count(threshold):
    """Over held-out images 0-7: shapes found with the right class, wrong-class second guesses, strays."""
    found = shapes = guesses = strays = 0
    for i in range(8):
        target, pred = held_out[i][1], results["mixed"][i]
        keep = pred["scores"] >= threshold
        hit = box_iou(target["boxes"], pred["boxes"][keep]) >= 0.5  # (G, D) GT x detection
        same = target["labels"][:, None] == pred["labels"][keep][None, :]  # (G, D) right class?
        found += int((hit & same).any(dim=1).sum())
        shapes += len(target["labels"])
        guesses += int(((hit & ~same).any(dim=0) & ~(hit & same).any(dim=0)).sum())  # only other-class shapes
        strays += int((~hit.any(dim=0)).sum())  # on no shape at all
    return found, shapes, guesses, strays


for threshold in (0.5, SHOWN):
    found, shapes, guesses, strays = count(threshold)
    print(f"score >= {threshold}: {found} of {shapes} shapes found with the right class, "
          f"{guesses} wrong-class second guesses, {strays} detections on no shape")
assert count(SHOWN)[2] <= count(0.5)[2]  # a higher threshold can only remove detections

# %% [markdown]
# At 0.7 the second guesses are gone; what remains wrong are the shapes the model does not find. In the
# saved run, one is the triangle of image 4, squeezed between and partly hidden by the two circles: its
# visible part gets no detection (no mask covers its blue pixels). Occlusion is the hardest case for
# this small model (notebook 10 collects its failures on 100 images, notebook 11 measures its AP).

# %% [markdown]
# ## Summary
#
# - `MaskRCNN` is Figure 1 written as a constructor. It holds `transform`, `backbone` (ResNet body +
#   FPN), `rpn` and `roi_heads`, and its `forward` calls them in that order; it defines no layer itself.
# - A config is a plain dict whose keys are torchvision's keyword names. `build_maskrcnn(name,
#   **overrides)` = `get_config` + `build_from_config`. `resnet50_fpn` equals torchvision's
#   `maskrcnn_resnet50_fpn` setting for setting (we read 34 of them back from torchvision's model);
#   `shapes_tiny` changes 21 of the 43 keys for a from-scratch model on 128-pixel images on a CPU.
# - The contract: in train mode, a dict of five scalar losses (`loss_objectness`, `loss_rpn_box_reg`,
#   `loss_classifier`, `loss_box_reg`, `loss_mask`); in eval mode, one dict per image with `boxes (D, 4)`,
#   `labels (D,)`, `scores (D,)` and `masks (D, 1, H, W)`, probabilities at the caller's image size.
#   Malformed inputs are refused with a message, but an `(x, y, w, h)` box with w > x and h > y passes
#   as a wrong corner box: convert where the annotations are read.
# - Parameters: resnet50_fpn has 44,401,393, with 23.5 M in the body and 14.4 M in the box branch
#   (12.8 M in its first fc layer); shapes_tiny has 13,147,911. Compute is elsewhere: the convs that
#   slide over the image (body, FPN, RPN head) do most of it, fc1 little, and the small mask branch,
#   run once per mask (the positive RoIs in training, the top 100 detections at test time), a lot.
# - The resize floors each side: 203×287 becomes 256×361, not 362.
# - Loaded with torchvision's weights, our model gives the same FPN features, proposals and
#   detections as torchvision's, at float64 round-off or exactly. An 81-class head cannot
#   take torchvision's 91-class COCO weights, and 1000/300 proposals (the C4 model's) are not the FPN model's (2000/1000).
# - `set_kernels("teaching" | "torchvision" | "mixed")` changes the speed, not the detections. On a GPU:
#   `.to("cuda")` and torchvision's kernels (mixed precision: notebook 09).
#
# ## Exercises
#
# Worked solutions are in `solutions/08_full_model.py` (for teachers). Each check cell compares your
# answer with the library and prints whether it is right.
#
# ### Exercise 1 — Predict · about 10 min: the FPN's parameters, by hand
#
# Write `my_fpn_params(in_channels, out_channels)`. It gets the body's channel list (e.g.
# `[64, 128, 256, 512]` for ResNet-18) and the FPN width `d`, and returns the FPN's number of
# parameters, computed from its layers (notebook 02) without building it: the check refuses `FPN`,
# `Conv2d` and `.parameters()` in your answer, and tries channel lists the notebook does not show.
# Check your formula first against the table of section 4 (`shapes_tiny`: 209,408).
#
# *Hint:* which convs does each level have, and what are their kernel sizes? Mind the biases. Does P6
# have parameters?

# %%
def my_fpn_params(in_channels, out_channels):
    raise NotImplementedError  # your code here


# %%
from mrcnn_teach.exercises.nb08 import check_fpn_params, check_image_sizes, check_predictor_shapes, check_rescale_boxes

check_fpn_params(my_fpn_params);

# %% [markdown]
# ### Exercise 2 — Predict · about 10 min: the sizes inside the batch
#
# Write `my_image_sizes(sizes, min_size, max_size, size_divisible=32)`. It gets a list of the
# caller's image sizes `(h, w)` and returns `(sizes, batch_hw)`, as the model's transform computes them:
# a list with one `(h', w')` tuple per image, its size after the resize, and one `(H, W)` tuple, the
# size of the padded batch. Work these out on paper first, at 800/1333: a 500×375 (portrait) and a
# 427×640 image in one batch; a 1000×3000 panorama; a small 97×130 image. Use arithmetic only: the
# check refuses `ImageTransform`, `interpolate` and the model in your answer, and tries sizes the
# notebook does not show. Then: how can a shorter side come out as 799?
#
# *Hint:* section 3 gives the one scale per image; section 5 says how `interpolate` turns it into a
# size: `floor(side * scale)`, computed in floating point. Is `h * (800 / h)` always 800.0 in Python?

# %%
def my_image_sizes(sizes, min_size, max_size, size_divisible=32):
    raise NotImplementedError  # your code here


# %%
check_image_sizes(my_image_sizes);

# %% [markdown]
# ### Exercise 3 — Predict · about 10 min: the predictors of a 7-class model
#
# `build_maskrcnn("shapes_tiny", num_classes=7)` builds the small model for 6 object classes plus the
# background. Write `my_predictor_shapes(num_classes, class_agnostic)`. It returns a dict with the
# weight shapes of `roi_heads.box_predictor.cls_score`, `roi_heads.box_predictor.bbox_deltas`,
# `roi_heads.mask_predictor.deconv` and `roi_heads.mask_predictor.mask_logits`, under the keys
# `"cls_score"`, `"bbox_deltas"`, `"deconv"` and `"mask_logits"`, for `build_maskrcnn("shapes_tiny",
# num_classes=num_classes, class_agnostic_masks=class_agnostic)`. `shapes_tiny` keeps torchvision's
# `representation_size` of 1024 (so section 2's list of differences leaves it out), and its mask
# head has `mask_head_channels=(32, 32, 32, 32)` and `mask_dim_reduced=32`.
# `class_agnostic_masks=True` predicts one mask per RoI, shared by all classes, instead of one per class
# (notebook 07, section 5). Work the shapes out from these numbers and notebooks 06–07: the check
# refuses `build_maskrcnn` and the predictors in your answer (build one in a scratch cell afterwards to
# see for yourself), and tries class counts the notebook does not show.
#
# *Hint:* an `nn.Linear` weight is `(out, in)`, a conv weight `(out, in, kh, kw)`, but a transposed
# conv's (`nn.ConvTranspose2d`) is `(in, out, kh, kw)`. How large is the deconvolution's kernel
# (notebook 07)? Does the background get a column, four deltas, a mask?

# %%
def my_predictor_shapes(num_classes, class_agnostic=False):
    raise NotImplementedError  # your code here


# %%
check_predictor_shapes(my_predictor_shapes);

# %% [markdown]
# ### Exercise 4 — Debug · about 15 min: boxes back to the caller's pixels
#
# `buggy_rescale_boxes` below does what `postprocess` does to the boxes (section 3): it takes boxes in
# the resized image back to the caller's. Its author trusted that the resize keeps the aspect ratio.
# It is right on the 128×128 and 192×192 images of section 3, and wrong on most others. Find the bug
# and write the fixed `my_rescale_boxes(boxes, resized_size, original_size)`, without `resize_boxes`
# or `postprocess` (the check refuses them). Then say how far off the buggy version puts the right edge
# of section 5's 203×287 image, and why a test on square images would never have found it. Write your
# answer as a comment in your cell.
#
# *Hint:* run it on the box that covers the whole resized image of section 5, `[0, 0, 361, 256]`. Which
# box should come back?

# %%
def buggy_rescale_boxes(boxes, resized_size, original_size):
    """Boxes (N, 4) x1, y1, x2, y2 in the resized image of resized_size (h', w') -> the same boxes in the
    caller's image of original_size (h, w), as the model's postprocess returns them."""
    ratio = original_size[0] / resized_size[0]  # the resize keeps the aspect ratio: one ratio serves both axes
    return boxes * ratio  # (N, 4)


print(buggy_rescale_boxes(torch.tensor([[0.0, 0.0, 128.0, 128.0]]), (128, 128), (192, 192)))  # right here

# %%
def my_rescale_boxes(boxes, resized_size, original_size):
    raise NotImplementedError  # your code here


# %%
check_rescale_boxes(my_rescale_boxes);

# %% [markdown]
# Next: [09 — Training](09_training.ipynb)
