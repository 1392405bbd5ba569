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
# - three loose spots in the seed texts: 81 vs 91 classes, background box deltas, and "(B, 256, 7, 7)".
#
# **Builds on:** [02 — FPN](02_fpn.ipynb) (the levels P2–P5),
# [04 — The Region Proposal Network](04_rpn.ipynb) (the proposals),
# [05 — RoIPool vs RoIAlign](05_roi_align.ipynb) (cutting fixed-size features out of a box).
#
# **Run time:** about 10 s on a 2-core CPU; the first notebook you run also trains the shared shapes
# model once, about 3 minutes; later notebooks load it in a second.

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
# We work with the trained shapes model (500 steps on the built-in shapes data) and its held-out images.
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
# (eval mode keeps 100 proposals per image) and assign each proposal a level. The shapes are 12 to 64 px
# across and the images only 128 px, so $\sqrt{wh}$ of a proposal is below 112 and we expect almost
# **every proposal on P2**. For comparison we also assign the same boxes scaled by 800/128 — the size
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
# On our data the heads read from P2 only: P3–P5 still serve the RPN (its anchors of 16–64 px live
# there), but no RoI is pooled from them. That is not a bug. Eq. 1 was set for COCO images of 800 px,
# where the canonical 224-px RoI is a medium-sized object; our whole image is 128 px, barely more than
# the 112 px at which P3 begins, and its objects are 12–64 px. Scaled to COCO's size the same boxes spread over P2–P4, as the right
# panel shows. (If you wanted our heads to use the coarser levels too, you would lower `canonical_scale`
# in proportion — exercise 1 lets you write the rule yourself.)
#
# ## 2. Pooling RoIs from the pyramid: (N, C, 7, 7), not (B, 256, 7, 7)
#
# `MultiLevelRoIAlign` runs RoIAlign once per level on the RoIs assigned to it and puts the results back
# in the input order. The box branch pools a 7×7 grid, the mask branch a finer 14×14 grid (Fig. 4,
# right). Each pooled RoI has the pyramid's C channels: 256 for resnet50_fpn, 64 for shapes_tiny.

# %%
show_source(poolers.MultiLevelRoIAlign.forward)

# %% [markdown]
# **Erratum.** The seed text gives the RoIAlign output, the input of its detection head, as
# "(B, 256, 7, 7)", B being the batch size; in another place it writes (N, 256, 7, 7) with N the RoIs of
# the whole batch. The second is right. The first axis is not images, it is RoIs: all RoIs of all images,
# stacked (the order of the per-image lists tells which image each came from). With 2 images and 100
# proposals each we expect **(200, 64, 7, 7)** and **(200, 64, 14, 14)**, not (2, 64, 7, 7). (We write N
# for the RoI count, since K is the number of classes here.)

# %%
two_features = [P[:2] for P in features]  # the first 2 images: [P2..P6], each (2, 64, H_l, W_l)
rois = proposals[:2]  # 2 x (100, 4)
with torch.no_grad():
    box_features = model.roi_heads.box_roi_align(two_features, rois, image_sizes[:2])  # (200, 64, 7, 7)
    mask_features = model.roi_heads.mask_roi_align(two_features, rois, image_sizes[:2])  # (200, 64, 14, 14)
N, C = sum(len(r) for r in rois), cfg["fpn_channels"]
assert box_features.shape == (N, C, 7, 7) and mask_features.shape == (N, C, 14, 14)
assert box_features.shape[0] != len(rois)  # the seed's B: the first axis counts RoIs, not images
print_shapes(images=batch[:2], rois_per_image=rois, box_features=box_features, mask_features=mask_features)

# %% [markdown]
# ## 3. The box head: from a 7×7 grid to one vector per RoI
#
# The paper's FPN box head ("2fc", FPN Sec. 4.2; Mask R-CNN Fig. 4 right) flattens the 7×7×C grid and
# applies two fully connected layers of 1024, each with a ReLU. Our small model uses a different head:
# **4conv1fc**, four 3×3 convolutions with GroupNorm and then one fully connected layer. It comes from
# He, Girshick and Dollár, "Rethinking ImageNet Pre-training" (2018), who train detectors from scratch:
# without a pre-trained backbone, convolutions (whose weights are shared across the 7×7 grid) and a
# normalisation layer after each one make the head learn much faster. Our shapes model is trained from
# scratch, so it takes their head (`box_head="4conv1fc"`, `head_norm="gn"` in the config).

# %%
show_source(heads.BoxHead, heads.ConvFCBoxHead)

# %% [markdown]
# Both heads end in a vector of `representation_size` = 1024 per RoI. Their sizes are very different:
# the 2fc head's first layer alone connects 7·7·256 = 12544 inputs to 1024 outputs. We build the paper's
# head for C = 256 and the shapes head as configured (C = 64, convs of 32 channels), and count weights.

# %%
# NBVAL_CHECK_OUTPUT
paper_box_head = heads.BoxHead(256, 7, 1024)  # resnet50_fpn: "2fc"
tiny_box_head = heads.ConvFCBoxHead(64, 7, (32, 32, 32, 32), 1024, norm="gn")  # shapes_tiny: "4conv1fc"
with torch.no_grad():
    v_paper = paper_box_head(torch.zeros(3, 256, 7, 7))  # (3, 1024)
    v_tiny = tiny_box_head(torch.zeros(3, 64, 7, 7))  # (3, 1024)
assert v_paper.shape == v_tiny.shape == (3, 1024)
for name, head in (("2fc (resnet50_fpn)", paper_box_head), ("4conv1fc (shapes_tiny)", tiny_box_head)):
    print(f"{name:<24} {sum(p.numel() for p in head.parameters()):>11,} parameters")
    for child_name, child in head.named_children():
        print(f"    {child_name:<8} {sum(p.numel() for p in child.parameters()):>11,}")

# %% [markdown]
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
# **Erratum: 81 or 91 classes?** The seed writes its COCO heads with 81 outputs: 80 categories plus
# background. torchvision's COCO models (and our `resnet50_fpn` config) have `num_classes=91`. Both are
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
for label, K1 in (("seed (80 + background)", 81), ("torchvision / resnet50_fpn", paper_cfg["num_classes"])):
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
#    the RPN's 0.7/0.3 there is no ignored band in between;
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
# In our run the trained RPN, whose NMS already removed near-duplicates, leaves only 10 to 16 candidates
# with IoU ≥ 0.5 per image (GT boxes included), so the sampler keeps every one of them and negatives fill
# the rest of the 64. With COCO's crowded images and 2000 proposals the 25% cap is what usually binds.
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
draw_boxes(ax1, four[0][0], s_rois[0], color=["tab:green" if p else "tab:red" for p in pos0.tolist()],
           linewidth=0.7)
ax1.set_title(f"image 0: {int(pos0.sum())} positives (green),\n{int((~pos0).sum())} negatives (red)")
plt.show()

# %% [markdown]
# The IoU histogram has a clean cut at 0.5 (the dashed line): positives right of it, negatives left.
# The spike at IoU 1 holds the appended GT boxes and proposals that already fit.
#
# **The box-coding weights (10, 10, 5, 5).** The regression target of a positive RoI is the delta
# $(t_x, t_y, t_w, t_h)$ that moves it onto its GT box. Proposals that already overlap a GT box by IoU ≥ 0.5
# need only small corrections, so raw deltas are small numbers; Fast R-CNN (Sec. 2.3) normalised them to
# unit variance with statistics of the data. Detectron and torchvision replace that by fixed weights that
# multiply the raw deltas: 10 for the centre, 5 for the log-size. We compare the spread of the targets of
# our positive RoIs with both codings: the weighted ones are by definition 10× and 5× the raw ones, which
# should bring their standard deviations near 1.

# %%
pos_rois = torch.cat([r[lab > 0] for r, lab in zip(s_rois, s_labels)])  # (P, 4)
pos_gt = torch.cat([t["boxes"][i[lab > 0]] for t, i, lab in zip(targets4, s_idxs, s_labels)])  # (P, 4)
weighted = BoxCoder(cfg["bbox_reg_weights"]).encode(pos_gt, pos_rois)  # (P, 4)
raw = BoxCoder((1.0, 1.0, 1.0, 1.0)).encode(pos_gt, pos_rois)  # (P, 4)
assert weighted.shape == raw.shape == (len(pos_rois), 4)
assert torch.allclose(weighted, torch.cat([t[lab > 0] for t, lab in zip(s_targets, s_labels)]))
print(f"{len(pos_rois)} positive RoIs; std of the regression targets (tx, ty, tw, th):")
print("  weights (1, 1, 1, 1)  :", raw.std(dim=0))
print("  weights (10, 10, 5, 5):", weighted.std(dim=0))

# %% [markdown]
# ## 6. The box loss, and the background deltas that never learn
#
# The classifier learns from every sampled RoI (cross-entropy over K+1 classes). The box regressor learns
# only from positives, and only through the deltas **of the RoI's GT class**: the loss indexes
# `deltas[positive, labels[positive]]`, a (P, 4) slice of the (N, K+1, 4) tensor.

# %%
show_source(roi_heads.box_loss)

# %% [markdown]
# **Erratum: the background deltas.** The seed's box head regresses 81·4 deltas, four per class
# *including background*. So does this library (and torchvision): `bbox_deltas` has (K+1)·4 outputs, to
# keep the column of class c at 4c. But the background's four columns are dead weight. A background RoI
# has no box to regress to, so no RoI ever selects column block 0, and at inference
# `postprocess_detections` drops it too. Autograd confirms it on a tiny batch with fixed random outputs:
# 8 RoIs, K+1 = 4 classes, labels 0, 0, 1, 2, 3, 0, 2, 1. We expect a zero gradient in block 0 for every
# RoI, and in each positive RoI's row a non-zero gradient only in its own class's block.

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
# resize in one call, sampled exactly like the features. A proposal that cuts off part of the object
# gives a target that is cut off too; one that is larger shows background margins; the border comes out
# soft (values between 0 and 1) where a sample point falls between object and background pixels.

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
# the 28×28 target, and what the trained model predicts in the GT class's channel.

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
# ## Summary
#
# - Each RoI is pooled from one pyramid level, $k = \lfloor 4 + \log_2(\sqrt{wh}/224) \rfloor$ clamped to
#   2..5 (plus a $10^{-6}$ guard against round-off). On 128-px images every object is smaller than 112 px,
#   so the heads read from P2 only; at COCO's 800 px the same boxes spread over P2–P4.
# - Pooled RoIs are (N, C, 7, 7) for the box branch and (N, C, 14, 14) for the mask branch, with N the
#   RoIs of the whole batch — not (B, 256, 7, 7).
# - The box head turns 7×7×C into 1024 numbers (2fc in the paper; 4conv1fc + GroupNorm for training from
#   scratch, as in shapes_tiny); the predictor gives K+1 class logits and (K+1)·4 deltas.
# - COCO: 81 = 80 categories + background; torchvision's 91 = background + one slot per COCO id 1..90,
#   10 of which are unused.
# - Training RoIs: proposals + GT boxes, matched at IoU 0.5, 512 sampled per image (shapes_tiny: 64) with at
#   most 25% positives; box targets scaled by (10, 10, 5, 5) to about unit spread.
# - Only the GT class's deltas of positive RoIs are trained: the background's four deltas get exactly zero
#   gradient.
# - The mask branch (4 convs, 2× deconv, 1×1 conv) predicts one 28×28 logit map per class; its target is
#   the matched GT mask cropped by the RoI and resampled with RoIAlign.
#
# ## Exercises
#
# Worked solutions are in `solutions/06_heads.py` (for teachers).
#
# **1. FPN level assignment.** Write `my_assign_levels(boxes)` for boxes (N, 4) in x1y1x2y2 pixels,
# returning the FPN level k (an integer 2..5, not an index) of each box by Eq. 1 with $k_0 = 4$, 224 and
# the clamp. The check compares with the library on boxes you have not seen, including boxes exactly on a
# boundary.

# %%
def my_assign_levels(boxes):
    raise NotImplementedError  # your code here


# %%
from mrcnn_teach.exercises.nb06 import check_assign_levels, check_gt_class_deltas, check_sample_counts

check_assign_levels(my_assign_levels);

# %% [markdown]
# **2. The deltas of the GT class.** Given `box_deltas` (N, (K+1)·4) and `labels` (N,) with 0 for
# background, return the (P, 4) deltas that the box loss trains: for each positive RoI, in order, the four
# columns of its own class.

# %%
def my_gt_class_deltas(box_deltas, labels):
    raise NotImplementedError  # your code here


# %%
check_gt_class_deltas(my_gt_class_deltas);

# %% [markdown]
# **3. How many positives and negatives?** An image has `num_positive` RoIs with IoU ≥ 0.5 and
# `num_negative` below. With `batch_size` RoIs per image and at most `positive_fraction` of them positive,
# how many of each does the sampler keep? Return a pair `(num_pos, num_neg)`. Think of an image with only
# 3 positives, and of one with very few negatives.

# %%
def my_sample_counts(num_positive, num_negative, batch_size, positive_fraction):
    raise NotImplementedError  # your code here


# %%
check_sample_counts(my_sample_counts);

# %% [markdown]
# Next: [07 — Mask loss: per-class sigmoid vs softmax](07_mask_loss.ipynb)
