# %% [markdown]
# # 06 — Box and mask heads
#
# The RPN of notebook 04 hands over a hundred to a few thousand proposals per image. From here on
# Mask R-CNN looks at one box at a time: RoIAlign (notebook 05) cuts a fixed grid of features out of the
# pyramid for each box, and two small networks read it — the **box branch**, which says what the object is and nudges the box
# onto it, and the **mask branch**, which paints the object's pixels (He et al. 2017, Sec. 3 and Fig. 4).
# This notebook builds both branches and the targets they learn from.
#
# **You will learn**
# - which pyramid level an RoI is pooled from (FPN Eq. 1), and why on our 128-px shapes nearly every
#   RoI lands on P2;
# - the box head (the paper's "2fc", and the "4conv1fc" head our small model uses) and the box predictor:
#   K+1 class scores and a box correction per class;
# - how the training RoIs are chosen and labelled: GT boxes added, IoU 0.5, 512 sampled per image with
#   at most 25% positives, and the (10, 10, 5, 5) scaling of the box targets;
# - the mask head (four 3×3 convs, a 2× deconvolution, one 28×28 mask per class) and its targets,
#   the GT mask cropped by the RoI and resampled to 28×28;
# - at inference: the mask branch runs on the final detections and reads the predicted class's mask;
# - three common mistakes: "(B, 256, 7, 7)", 81 vs 91 classes, and what the background's box deltas learn.
#
# **Builds on:** [02 — FPN](02_fpn.ipynb) (the levels P2–P5),
# [04 — The Region Proposal Network](04_rpn.ipynb) (the proposals),
# [05 — RoIPool vs RoIAlign](05_roi_align.ipynb) (cutting fixed-size features out of a box).
#
# **Run time:** about 20 s on a 2-core CPU (measured 19 s; 2.5 minutes when other jobs share it); the first notebook you run
# also trains the shared shapes model once, 6 to 13 minutes on a 2-core CPU (700 steps; `make model` trains it ahead); later notebooks load it in a second.

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

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch.nn import functional as F
from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

from mrcnn_teach import heads, masks, poolers, roi_heads
from mrcnn_teach.boxes import BoxCoder, box_iou
from mrcnn_teach.configs import get_config
from mrcnn_teach.datasets import ShapesDataset
from mrcnn_teach.pretrained import trained_shapes_model
from mrcnn_teach.visualize import class_color, draw_boxes, to_numpy_image

# %% [markdown]
# We work with the trained shapes model (trained on the built-in shapes data; notebook 09 shows how) and
# its held-out images.
# Its configuration, `model.config`, is plain data: every number this notebook quotes for the small
# model comes from there, beside the paper's value in `get_config("resnet50_fpn")`.

# %%
model = trained_shapes_model()
cfg, paper_cfg = model.config, get_config("resnet50_fpn")
class_names = model.class_names
heldout = ShapesDataset(100, seed=1)
for key in ("fpn_channels", "box_roi_size", "mask_roi_size", "box_head", "representation_size",
            "box_batch_size_per_image", "box_positive_fraction", "bbox_reg_weights", "num_classes"):
    print(f"{key:<26} shapes_tiny: {str(cfg[key]):<22} resnet50_fpn: {paper_cfg[key]}")

# %% [markdown]
# ## 1. Which pyramid level does an RoI read from?
#
# An FPN backbone gives four maps to pool from, P2 (stride 4) to P5 (stride 32). FPN (Lin et al. 2017,
# Sec. 4.2, Eq. 1) sends an RoI of width $w$ and height $h$ (in input pixels) to level
#
# $$k = \left\lfloor k_0 + \log_2\!\left(\sqrt{wh}\,/\,224\right) \right\rfloor, \qquad k_0 = 4,$$
#
# clamped to $2 \le k \le 5$. The 224 is the ImageNet pre-training size, and $k_0 = 4$ because the
# single-scale ResNet Faster R-CNN pools every RoI from C4: an RoI as big as an ImageNet image reads from
# P4, the pyramid's counterpart of C4. Every halving of the RoI's side moves it one level finer; the
# boundaries between levels sit at $\sqrt{wh}$ = 112, 224 and 448 pixels. The library writes the rule as below. Note the two details a
# bare reading of Eq. 1 leaves out: the clamp, and an `eps` of $10^{-6}$ added before the floor. The eps
# lowers each boundary by a factor $2^{-10^{-6}}$ — about a ten-thousandth of a pixel at 112 — so that a
# value that is an integer in exact arithmetic, but comes out as 2.9999999 after `log2` in float32, is
# not floored to the level below. It returns the level as an index into [P2, P3, P4, P5], so 0 means P2.

# %%
show_source(poolers.assign_levels)

# %% [markdown]
# Square boxes of a few sides. We expect: 8 and 16 px are far below 112 and are clamped to P2
# ($k_0 + \log_2$ gives −0.8 and 0.2); 56 px gives exactly 2, P2 without clamping; 111.9999 px is just below the first boundary (P2) and 112 px is on it
# (P3); 224 px is P4; 448 px is P5; 1000 px would be "P6" and is clamped to P5.

# %%
# NBVAL_CHECK_OUTPUT
sides = torch.tensor([8.0, 16.0, 56.0, 111.9999, 112.0, 223.9, 224.0, 448.0, 1000.0])  # (9,)
square_boxes = torch.stack([torch.zeros(9), torch.zeros(9), sides, sides], dim=1)  # (9, 4) x1y1x2y2
levels = poolers.assign_levels(square_boxes)  # (9,) index into [P2..P5]
assert levels.shape == (9,) and levels.dtype == torch.int64
for side, unclamped, level in zip(sides, torch.log2(sides.double() / 224) + 4, levels):
    print(f"side {side:9.4f} px   k0 + log2(side/224) = {unclamped:10.6f}   ->  P{int(level) + 2}")

# %% [markdown]
# Now the real proposals of the trained model on 50 held-out images: we run the backbone and the RPN
# (eval mode keeps 100 proposals per image) and assign each proposal a level. The images are only 128 px
# and the shapes are drawn 12–48 px across (a rotated square's box is up to √2 wider, so a GT box's
# $\sqrt{wh}$ can reach about 68 px; in these 50 images it reaches 63, printed below), so $\sqrt{wh}$ of
# a proposal is far below 112 and we expect
# almost **every proposal on P2**. For comparison we also assign the same boxes scaled by 800/128 — the size
# they would have if the images were resized to 800 px, the short side COCO models train at
# (`min_size` in the resnet50_fpn config).

# %%
images = [heldout[i][0] for i in range(50)]  # 50 x (3, 128, 128)
gts = [heldout[i][1] for i in range(50)]
with torch.no_grad():
    batch, image_sizes, _ = model.transform(images)  # (50, 3, 128, 128); 128 px stays 128 px
    features = model.backbone(batch)  # [P2..P6]
    proposals, _ = model.rpn(batch, image_sizes, features)  # 50 x (100, 4)
all_proposals = torch.cat(proposals)  # (5000, 4)
all_gt = torch.cat([t["boxes"] for t in gts])  # (G, 4)
proposal_levels = poolers.assign_levels(all_proposals)  # (5000,)
coco_scale = paper_cfg["min_size"] / 128  # 6.25
coco_levels = poolers.assign_levels(all_proposals * coco_scale)  # (5000,)
assert batch.shape == (50, 3, 128, 128) and all_proposals.shape == (5000, 4)
assert proposal_levels.shape == coco_levels.shape == (5000,)
assert (proposal_levels == 0).float().mean() > 0.99  # the lesson: (nearly) all on P2
print_shapes(P2=features[0], P3=features[1], P4=features[2], P5=features[3], P6=features[4],
             proposals=all_proposals, gt_boxes=all_gt)
print("proposals per level P2..P5, 128-px images:", torch.bincount(proposal_levels, minlength=4).tolist())
print("the same boxes at 800 px               :", torch.bincount(coco_levels, minlength=4).tolist())
gt_side = torch.sqrt((all_gt[:, 2] - all_gt[:, 0]) * (all_gt[:, 3] - all_gt[:, 1]))  # (G,)
print(f"GT boxes: sqrt(wh) from {gt_side.min():.0f} to {gt_side.max():.0f} px, median {gt_side.median():.0f}")


# %%
def sqrt_area(b):
    return torch.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))  # (N,) side of the equal-area square


fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4), layout="constrained")
bins = np.arange(0, 132, 4)
for boxes_, name in ((all_proposals, "RPN proposals"), (all_gt, "GT boxes")):
    side = sqrt_area(boxes_).numpy()
    ax0.hist(side, bins=bins, alpha=0.6, weights=np.full(len(side), 1 / len(side)), label=f"{name} ({len(side)})")
ax0.axvline(112, color="k", ls="--", lw=1)
ax0.text(110, 0.9 * ax0.get_ylim()[1], "P2 | P3 boundary\n(112 px)", fontsize=8, ha="right")
ax0.set(title="Box size on the 128-px shapes images", xlabel=r"$\sqrt{wh}$ (pixels)", ylabel="fraction of the boxes")
ax0.legend(fontsize=8, loc="center right")

x = np.arange(4)
ax1.bar(x - 0.2, torch.bincount(proposal_levels, minlength=4).numpy(), width=0.4, label="128-px images (ours)")
ax1.bar(x + 0.2, torch.bincount(coco_levels, minlength=4).numpy(), width=0.4, label="same boxes x 6.25 (800 px)")
ax1.set_xticks(x, ["P2", "P3", "P4", "P5"])
ax1.set(title="FPN level assigned by Eq. 1", xlabel="pyramid level pooled from", ylabel="number of proposals")
ax1.legend(fontsize=8)
plt.show()

# %% [markdown]
# On our data the heads read from P2 only: P3–P6 still serve the RPN (its larger anchors live there),
# but no RoI is pooled from them. That is not a bug. Eq. 1 was set for COCO images of 800 px,
# where the canonical 224-px RoI is a medium-sized object; our whole image is 128 px, barely more than
# the 112 px at which P3 begins, and its largest GT box (printed above) is well below that. Scaled to
# COCO's size the same boxes spread over P2–P4 (and a few, 26 of 5000, on P5), as the right panel shows.
# (If you wanted our heads to use the coarser levels too, you would lower `canonical_scale` in
# proportion — exercise 1 asks where the boxes would then go.)
#
# ## 2. Pooling RoIs from the pyramid: (N, C, 7, 7), not (B, 256, 7, 7)
#
# `MultiLevelRoIAlign` runs RoIAlign once per level on the RoIs assigned to it and puts the results back
# in the input order. The box branch pools a 7×7 grid, the mask branch a finer 14×14 grid (Fig. 4,
# right). Each pooled RoI has the pyramid's C channels: 256 for resnet50_fpn, 64 for shapes_tiny.

# %%
show_source(poolers.MultiLevelRoIAlign.forward)

# %% [markdown]
# **Common mistake: "(B, 256, 7, 7)".** Write-ups often give the RoIAlign output, the input of the
# detection head, as (B, 256, 7, 7), B being the batch size. The first axis is not images, it is RoIs:
# all RoIs of all images, stacked in order (the lengths of the per-image lists tell which image each
# came from). With 2 images and 100 proposals each we expect **(200, 64, 7, 7)** and
# **(200, 64, 14, 14)**, not (2, 64, 7, 7); and rows 100–199 should be exactly what pooling image 1
# alone gives. (We write N for the RoI count, since K is the number of classes here.)

# %%
two_features = [P[:2] for P in features]  # the first 2 images: [P2..P6], each (2, 64, H_l, W_l)
rois = proposals[:2]  # 2 x (100, 4)
with torch.no_grad():
    box_features = model.roi_heads.box_roi_align(two_features, rois, image_sizes[:2])  # (200, 64, 7, 7)
    mask_features = model.roi_heads.mask_roi_align(two_features, rois, image_sizes[:2])  # (200, 64, 14, 14)
N, C = sum(len(r) for r in rois), cfg["fpn_channels"]
assert box_features.shape == (N, C, 7, 7) and mask_features.shape == (N, C, 14, 14)
with torch.no_grad():
    image1_alone = model.roi_heads.box_roi_align([P[1:2] for P in features], rois[1:], image_sizes[1:2])  # (100, 64, 7, 7)
assert torch.allclose(box_features[len(rois[0]):], image1_alone, atol=1e-5)  # image 1's RoIs follow image 0's
print_shapes(images=batch[:2], rois_per_image=rois, box_features=box_features, mask_features=mask_features)

# %% [markdown]
# ## 3. The box head: from a 7×7 grid to one vector per RoI
#
# The paper's FPN box head ("2fc", FPN Sec. 4.2; Mask R-CNN Fig. 4 right) flattens the 7×7×C grid and
# applies two fully connected layers of 1024, each with a ReLU. Our small model uses a different head:
# **4conv1fc**, four 3×3 convolutions with GroupNorm and then one fully connected layer. Where it comes
# from, and what the two papers usually cited for it say:
#
# - **Group Normalization** (Wu & He 2018), in its COCO experiments with Mask R-CNN: the GN models of
#   Detectron's `projects/GN` "use a 4conv+1fc RoI box head", with GN in the FPN and both heads. The same
#   page reports that the frozen-BN baseline with this head "performs similarly" to the default 2fc
#   (R-50-FPN: 4conv1fc 38.8 box AP and 34.4 mask AP, 2fc 38.6 and 34.5): the head by itself is no gain
#   on COCO with pre-training.
#   That page also trains such a GN model from scratch.
# - **Rethinking ImageNet Pre-training** (He, Girshick & Dollár 2018) trains Mask R-CNN from random
#   initialisation with GN (or SyncBN), and names normalisation (its Sec. 3.1) as what makes training
#   from scratch work. It is the reference for the norm layers when training from scratch, not for the
#   head's shape.
#
# Our shapes model is trained from scratch, so it uses both (`box_head="4conv1fc"`, `head_norm="gn"` in
# the config). Whether the convolutions themselves help on our data is not measured here.

# %%
show_source(heads.BoxHead, heads.ConvFCBoxHead)

# %% [markdown]
# Both heads end in a vector of `representation_size` = 1024 per RoI. Which is bigger? Compare them at
# the **same width**: C = 256 input channels and, for 4conv1fc, convs of 256 as in Detectron's GN models.
# Work it out first. 2fc: 7·7·256·1024 + 1024 weights and biases in fc1, 1024·1024 + 1024 in fc2.
# 4conv1fc: four 3×3 convs of 256 (9·256·256 weights each and no bias, since the norm's shift replaces
# it, plus the norm's 2·256) and then *one* fc with
# the same 7·7·256 inputs as fc1. So we expect 4conv1fc to be the **larger** one, by four convs minus fc2.
# Then the head our shapes model actually has, counted on `model.roi_heads.box_head`, against a 2fc head
# on the same 64 channels.

# %%
# NBVAL_CHECK_OUTPUT
def n_params(module):
    return sum(p.numel() for p in module.parameters())


W = paper_cfg["fpn_channels"]  # 256: the paper's width
two_fc = heads.BoxHead(W, 7, 1024)  # resnet50_fpn: "2fc"
conv_fc = heads.ConvFCBoxHead(W, 7, (W,) * 4, 1024, norm="gn")  # "4conv1fc" at the same width
with torch.no_grad():
    assert two_fc(torch.zeros(3, W, 7, 7)).shape == conv_fc(torch.zeros(3, W, 7, 7)).shape == (3, 1024)
assert n_params(two_fc) == (7 * 7 * W * 1024 + 1024) + (1024 * 1024 + 1024)  # by hand, as above
assert n_params(conv_fc) == 4 * (9 * W * W + 2 * W) + (7 * 7 * W * 1024 + 1024)  # no conv bias: the norm's shift
ours = model.roi_heads.box_head  # shapes_tiny as trained: 4conv1fc on C = 64, convs of 32
two_fc_64 = heads.BoxHead(C, 7, 1024)  # 2fc on the same 64 channels
for name, head in (("2fc, C = 256", two_fc), ("4conv1fc, C = 256, convs 256", conv_fc),
                   (f"4conv1fc, C = {C}, convs {cfg['box_head_conv_channels'][-1]} (ours)", ours),
                   (f"2fc, C = {C}", two_fc_64)):
    parts = "  ".join(f"{n} {n_params(c):,}" for n, c in head.named_children())
    print(f"{name:<34} {n_params(head):>11,} parameters   ({parts})")
print(f"at equal width 4conv1fc / 2fc = {n_params(conv_fc) / n_params(two_fc):.2f}; "
      f"ours / 2fc on {C} channels = {n_params(ours) / n_params(two_fc_64):.2f}")

# %% [markdown]
# The 4conv1fc head is not the small one: at equal width it has more parameters than 2fc (the ratio
# printed above), because its fc reads the same 7·7·C inputs as 2fc's fc1 and the convs come on top.
# Our head is small for another reason: its convs are narrow (32 channels), which shrinks the fc's input
# to 7·7·32 — the last ratio above.
#
# ## 4. The box predictor: K+1 scores and (K+1)·4 deltas
#
# On the 1024-d vector, two linear layers (Fast R-CNN Sec. 2): `cls_score` gives K+1 logits — the K
# object classes and background, one softmax over all of them — and `bbox_deltas` gives four box deltas
# *for every class*, (K+1)·4 numbers, laid out class by class (columns 4c..4c+3 belong to class c). The
# box is refined differently depending on what the object is; at inference each class's score is paired
# with that class's box.

# %%
show_source(heads.BoxPredictor)

# %% [markdown]
# The trained model has K = 3 classes (square, circle, triangle) plus background, so we expect logits of
# shape (200, 4) and deltas of shape (200, 16) for the 200 RoIs pooled above.

# %%
with torch.no_grad():
    box_vectors = model.roi_heads.box_head(box_features)  # (200, 1024)
    class_logits, box_deltas = model.roi_heads.box_predictor(box_vectors)  # (200, 4), (200, 16)
num_classes = model.num_classes  # K + 1 = 4
assert box_vectors.shape == (N, 1024)
assert class_logits.shape == (N, num_classes) and box_deltas.shape == (N, num_classes * 4)
print_shapes(box_vectors=box_vectors, class_logits=class_logits, box_deltas=box_deltas,
             per_class_deltas=box_deltas.reshape(N, num_classes, 4))
print("classes:", class_names)

# %% [markdown]
# **Common mistake: 81 or 91 classes?** Write-ups of Mask R-CNN often give the COCO heads 81 outputs:
# 80 categories plus background. torchvision's COCO models (and our `resnet50_fpn` config) have `num_classes=91`. Both are
# "80 categories plus background"; they count different things. 81 counts the categories that are
# annotated. 91 counts **label ids**: COCO numbers its categories with ids 1 to 90 and leaves gaps
# (the original COCO list had 91 categories, 11 of which were never annotated; 10 of those ids fall in
# 1–90), and torchvision keeps one output per id so the raw COCO id can be the label, with no remapping.
# So 10 of its 91 outputs belong to ids no image uses and are simply never the target. The list
# torchvision ships with its weights (read from the installed package, no download) shows it:

# %%
# NBVAL_CHECK_OUTPUT
categories = MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]  # index = label id
unused = [i for i, name in enumerate(categories) if name == "N/A"]
print(f"outputs: {len(categories)}  ({categories[0]!r} + ids 1..{len(categories) - 1})")
print(f"ids with no category ('N/A'): {len(unused)} -> {unused}")
print(f"real categories: {len(categories) - 1 - len(unused)}")
for label, K1 in (("80 categories + background", 81), ("torchvision / resnet50_fpn", paper_cfg["num_classes"])):
    predictor = heads.BoxPredictor(1024, K1)
    print(f"{label:<28} cls_score -> {predictor.cls_score.out_features:>3}   "
          f"bbox_deltas -> {predictor.bbox_deltas.out_features:>3} = {K1} x 4")

# %% [markdown]
# ## 5. Which RoIs train the heads? Matching and sampling
#
# During training the heads do not see all proposals. Per image:
#
# 1. the GT boxes are **appended** to the proposals, so each object has at least one perfect RoI even
#    early in training, when the RPN still proposes rubbish (a detail of the reference implementations,
#    Detectron and torchvision);
# 2. each RoI is **matched** to the GT box it overlaps most: IoU ≥ 0.5 makes it positive, with that GT's
#    class as its label; anything less is background, label 0 (Mask R-CNN Sec. 3.1, "Training"). Unlike
#    the RPN's 0.7/0.3 there is no ignored band in between (`label_proposals` still handles an ignored
#    band, but with `box_fg_iou_thresh` = `box_bg_iou_thresh` = 0.5 that line never fires);
# 3. a random **sample** of 512 RoIs is kept, at most 25% of them positive (1:3), negatives filling the
#    rest. shapes_tiny samples only 64 (at most 16 positive), because its images hold at most 4 objects
#    — read `box_batch_size_per_image` in its config.
#
# The matched GT box of each sampled RoI is then encoded as box deltas (the encoding of notebook 04),
# with the weights (10, 10, 5, 5) discussed below.

# %%
show_source(roi_heads.RoIHeads.label_proposals, roi_heads.RoIHeads.select_training_samples)

# %% [markdown]
# We run it on 4 held-out images with the RPN in training mode, which keeps up to 300 proposals per image
# (`rpn_post_nms_top_n_train`). Per image we expect: proposals + G GT boxes as candidates, exactly 64
# sampled RoIs, and at most 16 of them positive.

# %%
four = [heldout[i] for i in range(4)]
with torch.no_grad():
    batch4, sizes4, targets4 = model.transform([img for img, _ in four], [t for _, t in four])
    features4 = model.backbone(batch4)  # [P2..P6], each (4, 64, H_l, W_l)
    model.rpn.train()  # training-time proposal counts (the RPN's loss is computed and ignored here)
    train_proposals, _ = model.rpn(batch4, sizes4, features4, targets4)  # 4 x (<= 300, 4)
    model.rpn.eval()
    s_rois, s_idxs, s_labels, s_targets = model.roi_heads.select_training_samples(train_proposals, targets4)

S = cfg["box_batch_size_per_image"]
max_pos = int(S * cfg["box_positive_fraction"])
print(f"{'image':>5} {'proposals':>9} {'+GT':>4} {'IoU>=0.5':>8} {'sampled':>8} {'pos':>4} {'neg':>4}")
for i, (props, t) in enumerate(zip(train_proposals, targets4)):
    candidates = torch.cat([props, t["boxes"]])  # (N_i + G_i, 4)
    n_iou = int((box_iou(t["boxes"], candidates).max(dim=0).values >= 0.5).sum())
    pos = int((s_labels[i] > 0).sum())
    assert s_rois[i].shape == (S, 4) and s_idxs[i].shape == s_labels[i].shape == (S,)
    assert s_targets[i].shape == (S, 4) and pos <= max_pos
    print(f"{i:>5} {len(props):>9} {len(t['boxes']):>4} {n_iou:>8} {len(s_rois[i]):>8} {pos:>4} {S - pos:>4}")

# %% [markdown]
# Compare the IoU ≥ 0.5 column of the table with the cap of 16: when an image has more candidates than
# the cap, the cap binds — the sampler draws 16 of them at random and negatives fill the other 48; when
# it has fewer, it keeps them all and negatives fill more of the 64. Here the cap binds on all four
# images; the other case is exercise 2.
# Below: the best IoU of every sampled RoI with a GT box, and the sampled RoIs of the first image.

# %%
sampled_iou = torch.cat([box_iou(t["boxes"], r).max(dim=0).values for r, t in zip(s_rois, targets4)])  # (4*S,)
sampled_pos = torch.cat(s_labels) > 0  # (4*S,)
assert sampled_iou.shape == sampled_pos.shape == (4 * S,)
assert bool((sampled_iou[sampled_pos] >= 0.5).all()) and bool((sampled_iou[~sampled_pos] < 0.5).all())

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained",
                               gridspec_kw=dict(width_ratios=[1.6, 1]))
bins = np.linspace(0, 1, 41)
ax0.hist(sampled_iou[~sampled_pos].numpy(), bins=bins, color="tab:red", alpha=0.7, label="negative (label 0)")
ax0.hist(sampled_iou[sampled_pos].numpy(), bins=bins, color="tab:green", alpha=0.7, label="positive (label = GT class)")
ax0.axvline(0.5, color="k", ls="--", lw=1)
ax0.set(title=f"Sampled RoIs of 4 images ({S} each): best IoU with a GT box",
        xlabel="IoU with the matched GT box", ylabel="number of sampled RoIs")
ax0.legend(fontsize=8)
pos0 = s_labels[0] > 0
draw_boxes(ax1, four[0][0], s_rois[0][~pos0], color="tab:red", linewidth=0.6)  # negatives first ...
draw_boxes(ax1, None, s_rois[0][pos0], color="tab:green", linewidth=1.0)  # ... positives drawn on top
ax1.set(xlim=(0, four[0][0].shape[-1]), ylim=(four[0][0].shape[-2], 0))  # the whole image, y down
ax1.set_title(f"image 0: {int(pos0.sum())} positives (green),\n{int((~pos0).sum())} negatives (red)")
plt.show()
n_gt4 = sum(len(t["boxes"]) for t in targets4)
print(f"sampled RoIs with IoU > 0.999: {int((sampled_iou > 0.999).sum())}; GT boxes appended: {n_gt4}")

# %% [markdown]
# The IoU histogram has a clean cut at 0.5 (the dashed line): positives right of it, negatives left.
# The small bar at IoU 1 is appended GT boxes. The line under the plot counts the sampled RoIs with IoU
# above 0.999 against the GT boxes appended to the 4 images: where the cap binds, an appended GT box is
# one candidate among many and is drawn only by chance. Appending guarantees every object a perfect
# candidate, even early in training; it does not guarantee that one is trained on at every step.
#
# **The box-coding weights (10, 10, 5, 5).** The regression target of a positive RoI is the delta
# $(t_x, t_y, t_w, t_h)$ that moves it onto its GT box. Proposals that already overlap a GT box by IoU ≥ 0.5
# need only small corrections, so raw deltas are small numbers. Fast R-CNN (Sec. 2.3, "Multi-task loss")
# normalises the targets to zero mean and unit variance with statistics of the data; the end-to-end
# training of py-faster-rcnn (the Faster R-CNN code, `BBOX_NORMALIZE_TARGETS_PRECOMPUTED`) fixes those
# statistics instead: means 0, standard deviations (0.1, 0.1, 0.2, 0.2). The
# weights (10, 10, 5, 5) of Detectron and torchvision are the **reciprocals** of those standard
# deviations, baked into the coder: $10\,t_x = t_x / 0.1$. They are right if the raw targets really have
# standard deviations near 0.1 and 0.2. We measure them on real training RoIs — the positives sampled
# above — and, for contrast, on the RPN's positive anchors, whose coder has weights (1, 1, 1, 1).

# %%
pos_rois = torch.cat([r[lab > 0] for r, lab in zip(s_rois, s_labels)])  # (P, 4)
pos_gt = torch.cat([t["boxes"][i[lab > 0]] for t, i, lab in zip(targets4, s_idxs, s_labels)])  # (P, 4)
weighted = BoxCoder(cfg["bbox_reg_weights"]).encode(pos_gt, pos_rois)  # (P, 4)
raw = BoxCoder((1.0, 1.0, 1.0, 1.0)).encode(pos_gt, pos_rois)  # (P, 4)
assert weighted.shape == raw.shape == (len(pos_rois), 4)
assert torch.allclose(weighted, torch.cat([t[lab > 0] for t, lab in zip(s_targets, s_labels)]))
with torch.no_grad():  # the RPN's targets: positive anchors -> their GT box, plain (1, 1, 1, 1) coding
    anchors = model.rpn.anchor_generator(tuple(batch4.shape[-2:]), [tuple(P.shape[-2:]) for P in features4],
                                       dtype=batch4.dtype, device=batch4.device)  # (A, 4)
    rpn_labels, rpn_gt = model.rpn.assign_targets(anchors, [t["boxes"] for t in targets4])  # 4 x (A,), 4 x (A, 4)
    rpn_raw = torch.cat([model.rpn.box_coder.encode(g[lab == 1], anchors[lab == 1])
                         for g, lab in zip(rpn_gt, rpn_labels)])  # (P_rpn, 4)
fmt = lambda v: "(" + ", ".join(f"{x:.3f}" for x in v.tolist()) + ")"  # noqa: E731
stds = torch.tensor([1 / w for w in cfg["bbox_reg_weights"]])  # (4,) (0.1, 0.1, 0.2, 0.2)
print(f"std of the targets (tx, ty, tw, th)         head: {len(pos_rois)} positive RoIs   RPN: {len(rpn_raw)} anchors")
print(f"  raw, weights (1, 1, 1, 1)                 {fmt(raw.std(dim=0)):<32} {fmt(rpn_raw.std(dim=0))}")
print(f"  1 / bbox_reg_weights                      {fmt(stds)}")
print(f"  weighted, {str(cfg['bbox_reg_weights']):<31} {fmt(weighted.std(dim=0))}")
print(f"  mean of the raw head targets              {fmt(raw.mean(dim=0))}")

# %% [markdown]
# Read the printed rows against the assumption. The head's raw targets (first row, left) have
# standard deviations close to 0.1 for the centre and 0.2 for the size (second row), and means near 0
# (last row): the fixed statistics, chosen on COCO, fit our proposals too, and the weighted targets
# (third row) come out with a spread of order 1, as Fast R-CNN's normalisation intends. They are a fixed
# guess, not a statistic of our data: here the centre targets come out somewhat wider than 1.
#
# The RPN column is a contrast that does *not* go the way one might guess. Its positive anchors overlap
# a box by IoU ≥ 0.7 (or are its best anchor), closer than the head's IoU ≥ 0.5, and on our fitted
# anchors their raw targets are narrower than the head's (std 0.08–0.10 against 0.13–0.20; 25 anchors,
# a small sample), so if anything they would need larger weights. The spread of the targets does not
# explain why the RPN's coder keeps weights (1, 1, 1, 1): Faster R-CNN simply never scaled the RPN's
# targets, and torchvision keeps that.
#
# ## 6. The box loss, and the background deltas that never learn
#
# The classifier learns from every sampled RoI (cross-entropy over K+1 classes). The box regressor learns
# only from positives, and only through the deltas **of the RoI's GT class**: the loss indexes
# `deltas[positive, labels[positive]]`, a (P, 4) slice of the (N, K+1, 4) tensor.

# %%
show_source(roi_heads.box_loss)

# %% [markdown]
# **Note: the background deltas.** The COCO box head regresses 81·4 (torchvision: 91·4) deltas, four per
# class *including background*. So does this library: `bbox_deltas` has (K+1)·4 outputs, to keep the
# column of class c at 4c. But the background's four columns are dead weight. A background RoI
# has no box to regress to, so no RoI ever selects column block 0, and at inference
# `postprocess_detections` drops it too. Autograd confirms it on a tiny batch with fixed random outputs:
# 8 RoIs, K+1 = 4 classes, labels 0, 0, 1, 2, 3, 0, 2, 1. We expect a zero gradient in block 0 for every
# RoI, and in each positive RoI's row a non-zero gradient only in its own class's block. Its size we can
# predict too: the loss is a sum over positives divided by the 8 sampled RoIs, and smooth-L1 with
# $\beta = 1/9$ has slope ±1 wherever the error exceeds β. So a block whose four errors all exceed 1/9
# gets |gradient| 4 × 1/8 = 0.5 — the loss is *saturated* there; only an error below β gives less.

# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(0)
toy_logits = torch.randn(8, 4, requires_grad=True)  # (N, K+1)
toy_deltas = torch.randn(8, 16, requires_grad=True)  # (N, (K+1)*4)
toy_labels = torch.tensor([0, 0, 1, 2, 3, 0, 2, 1])  # (N,)
toy_targets = torch.randn(8, 4)  # (N, 4)
loss_cls, loss_box = roi_heads.box_loss(toy_logits, toy_deltas, [toy_labels], [toy_targets])
(loss_cls + loss_box).backward()
grad_blocks = toy_deltas.grad.reshape(8, 4, 4).abs().sum(dim=2)  # (N, K+1): |grad| per class block
assert toy_deltas.grad.shape == (8, 16) and grad_blocks.shape == (8, 4)
assert bool((grad_blocks[:, 0] == 0).all())  # background block: exactly zero, always
print(f"loss_classifier {loss_cls.item():.4f}   loss_box_reg {loss_box.item():.4f}")
print("|gradient| summed per class block (columns: background, square, circle, triangle)")
for n in range(8):
    print(f"  RoI {n} label {int(toy_labels[n])}:", "  ".join(f"{g:.4f}" for g in grad_blocks[n].tolist()))

# %% [markdown]
# The same on the trained model's 256 sampled RoIs from section 5: we compute the box loss and draw the
# gradient that reaches each of the 16 delta columns, for every positive RoI and, to keep the picture
# readable, the first 40 negatives, sorted by label. The background block (columns 0–3) stays white;
# each positive RoI lights up the four columns of its own class only; negatives train no deltas at all.
# Every trained entry is at most the saturated value 1/256 (error beyond β); an entry is paler where
# the model's error on that coordinate is already below β. The line above the picture counts the
# saturated ones.

# %%
class_logits_s, box_deltas_s = model.roi_heads.box_logits(features4, s_rois, sizes4)  # (256, 4), (256, 16)
box_deltas_s.retain_grad()
l_cls, l_box = roi_heads.box_loss(class_logits_s, box_deltas_s, s_labels, s_targets)
(l_cls + l_box).backward()
all_labels = torch.cat(s_labels)  # (256,)
assert box_deltas_s.shape == box_deltas_s.grad.shape == (4 * S, num_classes * 4)
assert bool((box_deltas_s.grad[:, :4] == 0).all())  # background columns: zero for all 256 RoIs
assert bool((box_deltas_s.grad[all_labels == 0] == 0).all())  # negatives: zero in every column
rows = torch.cat([torch.nonzero(all_labels == 0).flatten()[:40],
                  torch.nonzero(all_labels > 0).flatten()[torch.argsort(all_labels[all_labels > 0], stable=True)]])
grad_map, row_labels = box_deltas_s.grad.abs()[rows], all_labels[rows]  # (R, 16), (R,)
pos_s = torch.nonzero(all_labels > 0).squeeze(1)  # (P,)
own_block = box_deltas_s.grad.reshape(-1, num_classes, 4)[pos_s, all_labels[pos_s]].abs()  # (P, 4)
saturated = torch.isclose(own_block, torch.tensor(1 / len(all_labels))).float().mean()
print(f"{100 * saturated:.0f}% of the trained coordinates are saturated (|gradient| = 1/{len(all_labels)})")

fig, ax = plt.subplots(figsize=(7.5, 4.5), layout="constrained")
im = ax.imshow(grad_map.numpy(), aspect="auto", cmap="Greys", interpolation="nearest")
for c in range(1, num_classes):
    ax.axvline(4 * c - 0.5, color="tab:blue", lw=0.8)
    ax.axhline(int((row_labels < c).sum()) - 0.5, color="tab:blue", lw=0.8)
middles = [float(torch.nonzero(row_labels == c).float().mean()) for c in range(num_classes)]
counts = [int((all_labels == c).sum()) for c in range(num_classes)]
ax.set_yticks(middles, [f"{class_names[c]} ({counts[c] if c else '40 of ' + str(counts[0])})"
                        for c in range(num_classes)], fontsize=8)
ax.set_xticks(np.arange(16), [f"{class_names[c][:3]}.{d}" for c in range(num_classes) for d in "xywh"],
              rotation=90, fontsize=7)
ax.set(title="|d loss / d box delta| of sampled RoIs", xlabel="delta column (class . coordinate)",
       ylabel="sampled RoIs, grouped by label")
fig.colorbar(im, ax=ax, label="|gradient|")
plt.show()

# %% [markdown]
# ## 7. The mask head: four convs, a deconvolution, one mask per class
#
# The mask branch is a small FCN on the 14×14 RoI features (Fig. 4, right): four 3×3 convolutions with
# ReLU that keep the 14×14 grid (`MaskHead`), then a 2×2 deconvolution with stride 2 that doubles it to
# 28×28, and a 1×1 convolution with one output channel per class (`MaskPredictor`). Each channel is a
# 28×28 map of logits: "which pixels belong to the object, if it is of class c". The paper has K such
# masks; the library, like torchvision, makes `num_classes` = K+1 channels so that channel c belongs to
# label c — channel 0 (background) is never trained nor read, just like the background deltas.
# resnet50_fpn uses 256 channels in the head and 91 masks; shapes_tiny 32 channels (with GroupNorm)
# and 4 masks.

# %%
show_source(heads.MaskHead, heads.MaskPredictor)

# %% [markdown]
# The mask branch trains on the positive RoIs only (Sec. 3.1: $L_{mask}$ is defined on positives). We run
# it on the positives of section 5 and expect (P, 64, 14, 14) → (P, 32, 14, 14) → (P, 32, 28, 28) →
# (P, 4, 28, 28).

# %%
pos_per_image = [r[lab > 0] for r, lab in zip(s_rois, s_labels)]  # 4 x (P_i, 4)
pos_idxs = [i[lab > 0] for i, lab in zip(s_idxs, s_labels)]  # 4 x (P_i,) matched GT
P = sum(len(r) for r in pos_per_image)
with torch.no_grad():
    x14 = model.roi_heads.mask_roi_align(features4, pos_per_image, sizes4)  # (P, 64, 14, 14)
    trunk = model.roi_heads.mask_head(x14)  # (P, 32, 14, 14)
    up = F.relu(model.roi_heads.mask_predictor.deconv(trunk))  # (P, 32, 28, 28)
    mask_logits = model.roi_heads.mask_predictor(trunk)  # (P, 4, 28, 28)
D = cfg["mask_dim_reduced"]
assert x14.shape == (P, C, 14, 14) and trunk.shape == (P, cfg["mask_head_channels"][-1], 14, 14)
assert up.shape == (P, D, 28, 28) and mask_logits.shape == (P, num_classes, 28, 28)
print_shapes(mask_rois=x14, after_4_convs=trunk, after_deconv=up, mask_logits=mask_logits)

# %% [markdown]
# ## 8. The mask targets: the GT mask seen through the RoI
#
# "The mask target is the intersection between an RoI and its associated ground-truth mask" (Sec. 3.1),
# at the head's 28×28 resolution. The library gets it with RoIAlign itself: it treats the G masks of an
# image as a batch of one-channel images and pools RoI n from mask `matched_idxs[n]` — the crop and the
# resize in one call, with the same bilinear sampling as the features (but RoIAlign's default adaptive
# sampling ratio, not the features' 2, and on a 28×28 grid, not 14×14). A proposal that cuts off part
# of the object gives a target that is cut off too; one that is larger shows background margins; the
# border comes out soft (values between 0 and 1) where a sample point falls between object and
# background pixels.

# %%
show_source(masks.project_masks_on_boxes)

# %%
mask_targets = torch.cat([masks.project_masks_on_boxes(t["masks"], r, i, 28)
                          for t, r, i in zip(targets4, pos_per_image, pos_idxs)])  # (P, 28, 28)
pos_labels = torch.cat([t["labels"][i] for t, i in zip(targets4, pos_idxs)])  # (P,)
pred_probs = mask_logits[torch.arange(P), pos_labels].sigmoid()  # (P, 28, 28) the GT class's mask
assert mask_targets.shape == pred_probs.shape == (P, 28, 28) and pos_labels.shape == (P,)
assert float(mask_targets.min()) >= 0 and float(mask_targets.max()) <= 1
soft = ((mask_targets > 0) & (mask_targets < 1)).float().mean()
print(f"{P} positive RoIs; targets in [{mask_targets.min():.0f}, {mask_targets.max():.0f}], "
      f"{100 * soft:.1f}% of target pixels are soft (strictly between 0 and 1)")

# %% [markdown]
# Six positives of image 0 side by side: the proposal (green) with its GT object's outline in the image,
# the 28×28 target, and what the trained model predicts in the GT class's channel. (The outline has the
# class's colour, so a circle's green outline hardly shows against the green box and background.)

# %%
img0, t0 = four[0]
show = torch.arange(min(6, len(pos_per_image[0])))  # the first positives of image 0
fig, axes = plt.subplots(3, len(show), figsize=(1.9 * len(show) + 0.8, 6), layout="constrained", squeeze=False)
for col, n in enumerate(show.tolist()):
    box, g = pos_per_image[0][n], int(pos_idxs[0][n])
    x1, y1, x2, y2 = box.tolist()
    pad = 6
    ax = axes[0, col]
    ax.imshow(to_numpy_image(img0))
    ax.contour(t0["masks"][g].numpy(), levels=[0.5], colors=[class_color(t0["labels"][g])], linewidths=1)
    draw_boxes(ax, None, box[None], color="tab:green", linewidth=1.2)
    ax.set_xlim(x1 - pad, x2 + pad)
    ax.set_ylim(y2 + pad, y1 - pad)
    ax.set_axis_off()
    ax.set_title(f"RoI {n}: {class_names[int(t0['labels'][g])]}", fontsize=8)
    im = axes[1, col].imshow(mask_targets[n].numpy(), cmap="viridis", vmin=0, vmax=1)
    axes[2, col].imshow(pred_probs[n].numpy(), cmap="viridis", vmin=0, vmax=1)
    for r in (1, 2):
        axes[r, col].set_axis_off()
axes[1, 0].set_title("28×28 target", fontsize=8, loc="left")
axes[2, 0].set_title("predicted (GT class)", fontsize=8, loc="left")
fig.colorbar(im, ax=axes[1:].ravel().tolist(), shrink=0.8, label="mask value / probability")
fig.suptitle("Positive RoIs of image 0: proposal in the image, its mask target, the model's mask", fontsize=10)
plt.show()

# %% [markdown]
# Each target is the same object seen through a slightly different window: shifted, cut off at a border,
# or with a margin around it. That is why the 28×28 masks are in RoI coordinates: the mask branch learns
# "where is the object inside this box", and at inference the mask is pasted back into the image at the
# box (notebook 08). The loss that compares prediction and target is the subject of notebook 07.
#
# ## 9. At inference: masks for the final detections, in the predicted class's channel
#
# Training runs the mask branch on the positive RoIs and reads the channel of the **GT** class. At test
# time there is no GT, and Mask R-CNN changes two things (Sec. 3.1, "Inference"): the box branch runs
# first — refinement, scores, per-class NMS, the top detections — and the mask branch then runs **only
# on those final boxes**, not on the proposals; and of its K masks only the one of the class the
# **classifier predicted** is used. This is the decoupling of Sec. 3: the box branch decides what the
# object is, the mask branch only where its pixels are. (The paper notes it speeds inference and makes
# the masks more accurate, since they are computed on refined boxes.)

# %%
show_source(roi_heads.RoIHeads.predict_masks)

# %% [markdown]
# We check it on held-out image 0: run the heads in eval mode on its proposals (the boxes they return
# are those of `model()`, which then pastes the 28×28 masks into the image, notebook 08), recompute the
# mask logits on the *detected* boxes and pick channel = predicted label. We expect exactly the heads'
# masks, and a different mask if we read another class's channel. Image 0 holds two objects, a circle
# and a triangle, but expect more detections than that: the heads keep every (proposal, class) pair
# that scores above `box_score_thresh` = 0.05 and survives the per-class NMS, sorted by score, so
# weaker extras follow (below, two squares, listed after the circle and the triangle and so scored
# lower). Notebook 08 shows a display threshold (0.7 there) that removes the weak extras of its images;
# notebook 10 goes through the steps.

# %%
with torch.no_grad():
    features0 = [P[:1] for P in features]  # image 0: [P2..P6], each (1, 64, H_l, W_l)
    det = model.roi_heads(features0, proposals[:1], image_sizes[:1])[0][0]  # boxes (D, 4), labels, scores, masks (D, 1, 28, 28)
    assert torch.allclose(det["boxes"], model([images[0]])[0]["boxes"], atol=1e-4)  # the detections of model()
    logits_det = model.roi_heads.mask_logits(features0, [det["boxes"]], image_sizes[:1])  # (D, K+1, 28, 28)
D_det = len(det["boxes"])
rows_det = torch.arange(D_det)  # (D,)
own = logits_det[rows_det, det["labels"]].sigmoid()  # (D, 28, 28) the predicted class's channel
other = logits_det[rows_det, det["labels"] % (num_classes - 1) + 1].sigmoid()  # (D, 28, 28) another class's
assert det["masks"].shape == (D_det, 1, 28, 28)
assert torch.allclose(det["masks"][:, 0], own, atol=1e-6)  # what model() returns
print(f"image 0: {len(proposals[0])} proposals -> {D_det} detections -> {D_det} masks; labels "
      f"{[class_names[int(c)] for c in det['labels']]}")
print(f"max |mask - another class's channel| = {(det['masks'][:, 0] - other).abs().max():.2f}")
print(f"max |mask - predicted class's channel| = {(det['masks'][:, 0] - own).abs().max():.1e}")

# %% [markdown]
# ## Summary
#
# - Each RoI is pooled from one pyramid level, $k = \lfloor 4 + \log_2(\sqrt{wh}/224) \rfloor$ clamped to
#   2..5 (plus a $10^{-6}$ guard against round-off). On 128-px images every object is smaller than 112 px,
#   so the heads read from P2 only; at COCO's 800 px the same boxes spread over P2–P4 (and a few, 26 of
#   5000, on P5).
# - Pooled RoIs are (N, C, 7, 7) for the box branch and (N, C, 14, 14) for the mask branch, with N the
#   RoIs of the whole batch — not (B, 256, 7, 7).
# - The box head turns 7×7×C into 1024 numbers (2fc in the paper; 4conv1fc, the head of Detectron's
#   GroupNorm models, with GroupNorm for training from scratch in shapes_tiny). At equal width 4conv1fc
#   is the larger head. The predictor gives K+1 class logits and (K+1)·4 deltas.
# - COCO: 81 = 80 categories + background; torchvision's 91 = background + one slot per COCO id 1..90,
#   10 of which are unused.
# - Training RoIs: proposals + GT boxes, matched at IoU 0.5, 512 sampled per image (shapes_tiny: 64) with at
#   most 25% positives; box targets scaled by (10, 10, 5, 5), the reciprocals of fixed target standard
#   deviations (0.1, 0.1, 0.2, 0.2), in place of Fast R-CNN's normalisation by data statistics.
# - Only the GT class's deltas of positive RoIs are trained: the background's four deltas get exactly zero
#   gradient.
# - The mask branch (4 convs, 2× deconv, 1×1 conv) predicts one 28×28 logit map per class; its target is
#   the matched GT mask cropped by the RoI and resampled with RoIAlign. At inference it runs on the final
#   detections only and reads the channel of the predicted class.
#
# ## Exercises
#
# Worked solutions are in `solutions/06_heads.py` (for teachers). Each check cell says whether your
# answer is right.
#
# ### Exercise 1 — Predict · about 10 min: the pyramid levels at a smaller canonical scale
#
# Section 1 found every RoI of our 128-px images on P2, because Eq. 1's canonical 224 px is bigger than
# our whole image. Lower it: keep $k_0 = 4$ and the clamp to 2..5, but use `canonical_scale = 32`. On
# paper, give the level $k$ of square boxes of sides 8, 16, 23, 31, 45, 64 and 90 px (around the range
# of our GT boxes printed in section 1). Which sides sit exactly on a boundary, and what does the library's `eps` do
# there? Would the heads then read all four levels? Do it by hand; do not call `assign_levels` (the check
# refuses an answer that does).
#
# *Hint:* $\log_2(s/32)$ is an integer for 8, 16, 32, 64; for the others, bracket $s$ between two powers
# of two. Floor, then clamp.

# %%
def my_levels_at_low_scale():
    """-> [k for sides 8, 16, 23, 31, 45, 64, 90 px], each an integer level 2..5 (canonical_scale = 32)."""
    raise NotImplementedError  # your code here


# %%
from mrcnn_teach.exercises.nb06 import check_box_loss_gradient, check_levels_at_low_scale, check_sample_counts

check_levels_at_low_scale(my_levels_at_low_scale);

# %% [markdown]
# ### Exercise 2 — Predict · about 10 min: how many positives and negatives does the sampler keep?
#
# An image has `num_positive` candidate RoIs with IoU ≥ 0.5 and `num_negative` below. With `batch_size`
# RoIs per image and at most `positive_fraction` of them positive, how many of each does the sampler of
# section 5 keep? Return a pair `(num_pos, num_neg)`. Think of an image with only 3 positives, of one
# with very few negatives, and of one with too few of both to fill the batch. Answer without reopening
# `BalancedSampler` (notebook 04) and without calling it: the point is to predict what it does.
#
# *Hint:* the fraction is a cap, not a quota. Decide the positives first; then ask what fills the rest.

# %%
def my_sample_counts(num_positive, num_negative, batch_size, positive_fraction):
    """-> (num_pos, num_neg) kept for one image."""
    raise NotImplementedError  # your code here


# %%
check_sample_counts(my_sample_counts);

# %% [markdown]
# ### Exercise 3 — Derive · about 15 min: the gradient of the box loss, without autograd
#
# Section 6 read the gradient of $L_{box}$ off autograd and found saturated entries of 1/N. Derive it
# yourself. Write `my_box_loss_gradient(box_deltas, labels, regression_targets)` for `box_deltas`
# (N, (K+1)·4), `labels` (N,) with 0 for background and `regression_targets` (N, 4): return the (N, (K+1)·4)
# tensor $\partial L_{box} / \partial\,$`box_deltas` of `roi_heads.box_loss` (smooth-L1 with
# $\beta = 1/9$, summed over the positives' GT-class deltas, divided by N), in closed form. The check
# compares with autograd on cases where the errors are large, small (inside β), and with 91 classes.
#
# Then say in a sentence: why does dividing by N (all sampled RoIs) and not by the number of positives
# make an image with few objects train its boxes more weakly? And what would 10× larger weights than
# (10, 10, 5, 5) do to the share of saturated entries?
#
# *Hint:* smooth-L1 is $0.5\,x^2/\beta$ for $|x| < \beta$ and $|x| - 0.5\,\beta$ beyond: differentiate
# each piece. Only the entries the loss reads can have a gradient.

# %%
def my_box_loss_gradient(box_deltas, labels, regression_targets):
    """-> (N, (K+1)*4): d L_box / d box_deltas, written out by hand."""
    raise NotImplementedError  # your code here


# %%
check_box_loss_gradient(my_box_loss_gradient);

# %% [markdown]
# Next: [07 — Mask loss: per-class sigmoid vs softmax](07_mask_loss.ipynb)
