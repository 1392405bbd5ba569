# %% [markdown]
# # 04 — The Region Proposal Network and its loss
#
# The anchors of the last notebook are guesses laid on a grid. The **Region Proposal Network**
# (RPN, Faster R-CNN, Ren et al. 2015, Sec. 3.1) is the small network that scores every anchor
# ("is there an object here?") and nudges it onto the object. Its few hundred best boxes per image,
# the **proposals**, are all the second stage of Mask R-CNN ever looks at.
#
# **You will learn**
# - the RPN head: one shared 3×3 conv, then *k* objectness logits and *4k* box deltas per position,
#   and why one logit per anchor with a sigmoid is the same model as the paper's two-way softmax;
# - how anchors are labelled (IoU ≥ 0.7 positive, < 0.3 negative, the rest ignored, plus each object's
#   best anchor) and sampled (128 per image here, at random, at most half positive — *not* hard-negative mining);
# - the box encoding (tx, ty, tw, th) with its weights and its clamp, and how the two RPN losses are normalised;
# - how proposals are made (decode, clip, drop tiny boxes, top-k per level, NMS at 0.7, top-N), and how
#   many of them it takes to find every object.
#
# **Builds on:** [02 — FPN](02_fpn.ipynb) (the P2–P6 maps the head slides over) and
# [03 — Anchors](03_anchors.ipynb) (the A anchors it scores).
#
# **Run time:** about 10 s on a 2-core CPU; the first notebook you run also trains the shared
# shapes model once, about 3 minutes; later notebooks load it in a second.

# %%
from mrcnn_teach.notebook import setup, show_source, print_shapes

setup()

import math
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
import torchvision
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from torch import nn

from mrcnn_teach import nms as nms_module
from mrcnn_teach.boxes import BoxCoder, box_iou, clip_boxes_to_image, remove_small_boxes
from mrcnn_teach.datasets import ShapesDataset
from mrcnn_teach.matcher import BalancedSampler, Matcher
from mrcnn_teach.pretrained import trained_shapes_model
from mrcnn_teach.rpn import RegionProposalNetwork, RPNHead, flatten_head_outputs
from mrcnn_teach.visualize import draw_boxes

# %% [markdown]
# ## 0. A trained model and one held-out image
#
# We study the RPN of the `shapes_tiny` Mask R-CNN trained on the built-in shapes images. We load it
# with the `"teaching"` kernels, so that its NMS is the from-scratch one of `mrcnn_teach/nms.py`
# (by default this preset uses torchvision's compiled NMS, which gives the same result faster).
# The RPN's numbers live in the model's config: note the **128** sampled anchors per image
# (the paper's 256 is for ~1000×600 images with ~20 000 anchors; ours are 128×128 with about 4 000),
# and 100 proposals per image at test time.

# %%
model = trained_shapes_model(kernels="teaching")  # eval mode, CPU
rpn = model.rpn  # the RegionProposalNetwork of mrcnn_teach/rpn.py
cfg = model.config
for key in ("anchor_sizes", "aspect_ratios", "rpn_fg_iou_thresh", "rpn_bg_iou_thresh",
            "rpn_batch_size_per_image", "rpn_positive_fraction", "rpn_pre_nms_top_n_test",
            "rpn_post_nms_top_n_test", "rpn_nms_thresh"):
    value = cfg[key] if key != "aspect_ratios" else cfg[key][0]
    print(f"{key:<25} {value}")
assert rpn.sampler.batch_size_per_image == cfg["rpn_batch_size_per_image"] == 128

# %% [markdown]
# `MaskRCNN.forward` calls the RPN as `self.rpn(batch, image_sizes, features, targets)`: the padded
# batch (only its size matters, for the anchors), each image's size before padding (for clipping),
# the pyramid [P2..P6], and in training the targets. We run the first two stages by hand on one
# held-out image (the training images use `seed=0`, these `seed=1`). A 128×128 image stays 128×128
# in the transform, so its boxes are in the same pixels as the features' image.

# %%
dataset = ShapesDataset(100, seed=1)
image, target = dataset[4]
with torch.no_grad():
    batch, image_sizes, targets = model.transform([image], [target])  # (1, 3, 128, 128)
    features = model.backbone(batch)  # [P2..P6]
gt_boxes = targets[0]["boxes"]  # (G, 4)
print_shapes(batch=batch, P2=features[0], P3=features[1], P4=features[2], P5=features[3], P6=features[4],
             gt_boxes=gt_boxes)
assert batch.shape == (1, 3, 128, 128) and image_sizes == [(128, 128)]
for level, P in enumerate(features):
    stride = 4 * 2**level  # P2 has stride 4, P6 stride 64
    assert P.shape == (1, 64, 128 // stride, 128 // stride)

# %% [markdown]
# ## 1. The head: a 3×3 conv, then k logits and 4k deltas
#
# Faster R-CNN (Sec. 3.1, Fig. 3) slides a small network over the feature map: a 3×3 convolution
# with ReLU, then two sibling 1×1 convolutions, **cls** (objectness) and **reg** (box deltas), one
# set of outputs for each of the *k* anchors at that position. FPN (Lin et al. 2017, Sec. 4.1) runs
# the *same* head, with the same weights, on every level P2..P6; each level has anchors of one size
# and three aspect ratios, so **k = 3** (the seed's head defaults to 9, the 3 sizes × 3 ratios of
# single-map Faster R-CNN). Per level with an h×w map we therefore expect objectness (B, 3, h, w) and
# deltas (B, 12, h, w).

# %%
show_source(RPNHead)

# %%
with torch.no_grad():
    objectness_maps, delta_maps = rpn.head(features)  # [(1, k, h, w)], [(1, 4k, h, w)]
k = rpn.anchor_generator.num_anchors_per_location()[0]
print_shapes(objectness=objectness_maps, deltas=delta_maps)
assert k == 3 and rpn.head.objectness.out_channels == k and rpn.head.deltas.out_channels == 4 * k
for P, obj, dlt in zip(features, objectness_maps, delta_maps):
    h, w = P.shape[-2:]
    assert obj.shape == (1, k, h, w), obj.shape
    assert dlt.shape == (1, 4 * k, h, w), dlt.shape

# %% [markdown]
# The anchor generator lays out its anchors level by level, then row, column, and the k anchors of a
# cell. `flatten_head_outputs` puts the head's maps in the same order, so that row *i* of the
# objectness and deltas belongs to anchor *i*. For a 128×128 image the levels are 32², 16², 8², 4²
# and 2² cells, so we expect A = 3 · (1024 + 256 + 64 + 16 + 4) = **4092** anchors.

# %%
show_source(flatten_head_outputs)

# %%
# NBVAL_CHECK_OUTPUT
objectness, deltas, num_per_level = flatten_head_outputs(objectness_maps, delta_maps)  # (1, A), (1, A, 4)
anchors = rpn.anchor_generator((128, 128), [P.shape[-2:] for P in features])  # (A, 4)
A = anchors.shape[0]
for level, (P, n) in enumerate(zip(features, num_per_level)):
    h, w = P.shape[-2:]
    print(f"P{level + 2}: {h:2d} x {w:2d} cells x k={k} = {n:4d} anchors of {cfg['anchor_sizes'][level][0]:3d} px")
print(f"A = {A} anchors in all")
assert A == sum(num_per_level) == 4092
assert objectness.shape == (1, A) and deltas.shape == (1, A, 4) and anchors.shape == (A, 4)

# %% [markdown]
# What did the trained head learn? For each position we take the most confident of its three anchors,
# σ(logit), and draw it per level, each cell centred on its anchors' centre. Expect the small-anchor
# levels (P2: 8 px, P3: 16 px) to light up on the small shapes, P4 (32 px) and P5 (64 px) on the larger
# ones, and P6 (128-px anchors, bigger than any shape) to stay dark.

# %%
fig, axes = plt.subplots(1, 6, figsize=(12, 2.8))
axes[0].imshow(image.permute(1, 2, 0))
axes[0].set_title("held-out image", fontsize=9)
axes[0].set_xlabel("x (px)")
axes[0].set_ylabel("y (px)")
for level, obj in enumerate(objectness_maps):
    prob = obj[0].sigmoid().max(dim=0).values  # (h, w): the best of the k anchors at each position
    h, w = prob.shape
    s = 128 // h  # stride: anchors are centred on (x * s, y * s)
    shown = axes[level + 1].imshow(prob, vmin=0, vmax=1, cmap="magma",
                                   extent=(-s / 2, w * s - s / 2, h * s - s / 2, -s / 2))
    axes[level + 1].set_title(f"P{level + 2}: {cfg['anchor_sizes'][level][0]}-px anchors", fontsize=9)
    axes[level + 1].set_xlabel("x (px)")
fig.colorbar(shown, ax=axes, fraction=0.02, label="max over k of σ(objectness)")
fig.suptitle("Objectness of the trained RPN, per pyramid level", y=1.02)
plt.show()

# %% [markdown]
# ## 2. One logit per anchor, or two? (erratum)
#
# Faster R-CNN's cls layer outputs **2k** scores per position, a two-class softmax per anchor
# (object vs background); the paper notes in a footnote that one logistic output per anchor, **k**
# scores, would do as well. One of the seeds builds the 2k version (`num_anchors * 2` channels) but
# then writes its loss as a binary cross-entropy, which takes one logit per anchor. The two halves do
# not fit together, and PyTorch says so as soon as we try (here on P2, which has 3072 anchors):

# %%
seed_cls_layer = nn.Conv2d(64, 2 * k, kernel_size=1)  # the seed's 2k-channel objectness layer
with torch.no_grad():
    two_k_logits = seed_cls_layer(rpn.head.conv(features[0]))  # (1, 2k, 32, 32)
p2_labels = torch.zeros(num_per_level[0])  # (3072,) one 0/1 label per P2 anchor
try:
    F.binary_cross_entropy_with_logits(two_k_logits.flatten(), p2_labels)
except ValueError as err:
    print("2k logits + BCE:", err)
assert two_k_logits.shape == (1, 2 * k, 32, 32)

# %% [markdown]
# Either formulation is fine on its own; they are the same model. With logits (z₀, z₁) for
# (background, object), the softmax probability of "object" is
#
# $$\mathrm{softmax}(z)_1 = \frac{e^{z_1}}{e^{z_0} + e^{z_1}} = \frac{1}{1 + e^{-(z_1 - z_0)}} = \sigma(z_1 - z_0),$$
#
# so a two-way softmax with cross-entropy is a sigmoid with binary cross-entropy on the single logit
# z = z₁ − z₀. Only the difference matters: adding the same number to both logits changes nothing,
# so one of each pair of the 2k channels is redundant. On four fixed pairs of logits we expect the two
# probability columns, and the two losses, to agree to every printed digit:

# %%
# NBVAL_CHECK_OUTPUT
z = torch.tensor([[0.0, 2.0], [1.5, -0.5], [3.0, 3.0], [-2.0, 4.0]])  # (4, 2): (background, object) logits
y = torch.tensor([1, 0, 1, 0])  # (4,) object? per anchor
p_softmax = z.softmax(dim=1)[:, 1]  # (4,)
p_sigmoid = torch.sigmoid(z[:, 1] - z[:, 0])  # (4,)
for i in range(4):
    print(f"z = ({z[i, 0]:+.1f}, {z[i, 1]:+.1f})   softmax p(object) = {p_softmax[i]:.4f}"
          f"   sigmoid(z1 - z0) = {p_sigmoid[i]:.4f}")
ce = F.cross_entropy(z, y)  # 2 logits per anchor, softmax cross-entropy
bce = F.binary_cross_entropy_with_logits(z[:, 1] - z[:, 0], y.float())  # 1 logit per anchor, sigmoid BCE
ce_shifted = F.cross_entropy(z + 5.0, y)  # the same constant added to both logits
print(f"softmax cross-entropy {ce:.4f} | sigmoid BCE {bce:.4f} | cross-entropy after z + 5: {ce_shifted:.4f}")
assert torch.allclose(p_softmax, p_sigmoid) and torch.allclose(ce, bce) and torch.allclose(ce, ce_shifted)

# %% [markdown]
# **The library uses k logits and a sigmoid BCE**, like torchvision and Detectron: `RPNHead.objectness`
# has k = 3 output channels (above), and `RegionProposalNetwork.loss` calls
# `binary_cross_entropy_with_logits`. In section 6 we check the equivalence once more on the anchors the
# trained model is actually trained on.
#
# ## 3. Box coding: what the deltas mean
#
# The four deltas of an anchor say how to move it onto its object (Faster R-CNN Eq. 2). With
# (x_a, y_a, w_a, h_a) the anchor's **centre**, width and height, and (x, y, w, h) those of the
# ground-truth box,
#
# $$t_x = \frac{x - x_a}{w_a},\quad t_y = \frac{y - y_a}{h_a},\quad t_w = \log\frac{w}{w_a},\quad t_h = \log\frac{h}{h_a}.$$
#
# The seeds write the same formulas with x, y and do not say what they are: they are **centres**,
# not the top-left corner (our boxes are stored as corners x1, y1, x2, y2, so the coder first converts).
# Dividing by the anchor's size makes the offsets scale-free; the log makes "twice as wide" and
# "half as wide" symmetric (±log 2). Decoding inverts it: x = t_x·w_a + x_a, w = w_a·e^{t_w}.
# The library multiplies the targets by fixed **weights** (w_x, w_y, w_w, w_h): (1, 1, 1, 1) in the
# RPN, (10, 10, 5, 5) in the box head, whose proposals already sit close to the objects, so that its
# small offsets are scaled up to about unit size (a loss weight in disguise). Decoding divides them out.

# %%
show_source(BoxCoder.encode, BoxCoder.decode, docstring=False)

# %% [markdown]
# Three hand-made anchors and three boxes. For the first pair: the anchor (0, 0, 32, 32) has centre
# (16, 16) and size 32; the box (4, 2, 36, 30) has centre (20, 16), width 32 and height 28. So we
# expect t = ((20 − 16)/32, 0, log 1, log(28/32)) = (0.125, 0, 0, −0.1335), and ten and five times
# that with the box head's weights. Decoding must give the boxes back.

# %%
# NBVAL_CHECK_OUTPUT
hand_anchors = torch.tensor([[0.0, 0.0, 32.0, 32.0], [16.0, 8.0, 48.0, 72.0], [40.0, 40.0, 56.0, 48.0]])  # (3, 4)
hand_boxes = torch.tensor([[4.0, 2.0, 36.0, 30.0], [20.0, 20.0, 44.0, 60.0], [30.0, 38.0, 70.0, 52.0]])  # (3, 4)
rpn_coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
head_coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
t_rpn = rpn_coder.encode(hand_boxes, hand_anchors)  # (3, 4)
t_head = head_coder.encode(hand_boxes, hand_anchors)  # (3, 4)
print("RPN weights (1, 1, 1, 1):\n", t_rpn)
print("box-head weights (10, 10, 5, 5):\n", t_head)
for coder, t in ((rpn_coder, t_rpn), (head_coder, t_head)):
    back = coder.decode(t, hand_anchors)  # (3, 4)
    assert back.shape == (3, 4) and torch.allclose(back, hand_boxes, atol=1e-4)
print("decode(encode(boxes)) == boxes for both weightings:", True)
assert rpn.box_coder.weights == (1.0, 1.0, 1.0, 1.0)
assert torch.allclose(t_rpn[0], torch.tensor([0.125, 0.0, 0.0, math.log(28 / 32)]))

# %% [markdown]
# Why centres matter: take the anchor (0, 0, 32, 32) and a box twice its size with the same top-left
# corner, (0, 0, 64, 64). Measured between centres, t_x = (32 − 16)/32 = 0.5; measured between corners
# it would be 0. A regressor trained on corner offsets but decoded as centres (or the other way
# round) lands on the wrong box, which the picture shows.

# %%
# NBVAL_CHECK_OUTPUT
anchor_demo = torch.tensor([[0.0, 0.0, 32.0, 32.0]])  # (1, 4)
box_demo = torch.tensor([[0.0, 0.0, 64.0, 64.0]])  # (1, 4)
t_centre = rpn_coder.encode(box_demo, anchor_demo)  # (1, 4)
t_corner = torch.tensor([[(0.0 - 0.0) / 32, (0.0 - 0.0) / 32, math.log(2.0), math.log(2.0)]])  # corners, not centres
wrong_box = rpn_coder.decode(t_corner, anchor_demo)  # (1, 4)
print("targets from centres:", t_centre)
print("targets from corners:", t_corner)
print("decoding the corner targets gives", wrong_box, "instead of", box_demo)
assert torch.allclose(rpn_coder.decode(t_centre, anchor_demo), box_demo)

# %%
fig, ax = plt.subplots(figsize=(7, 4.2))
for box, color, style, name in ((anchor_demo[0], "C0", "-", "anchor"), (box_demo[0], "C2", "-", "target box"),
                                (rpn_coder.decode(t_centre, anchor_demo)[0], "black", "--", "decode(centre targets)"),
                                (wrong_box[0], "C3", ":", "decode(corner targets)")):
    x1, y1, x2, y2 = box.tolist()
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=color, linestyle=style, lw=2, label=name))
ax.set_xlim(-24, 72)
ax.set_ylim(72, -24)  # y down, as in an image
ax.set_aspect("equal")
ax.set_xlabel("x (px)")
ax.set_ylabel("y (px)")
ax.set_title("Box coding: offsets are between centres")
ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
plt.show()

# %% [markdown]
# **The clamp.** An untrained or diverging regressor can output a huge t_w, and exp overflows float32
# at about 88.7: the box becomes (−∞, +∞), its area ∞, and the IoU of two such boxes ∞/∞ = NaN, which
# then poisons NMS and the loss. `BoxCoder` therefore caps t_w and t_h at log(1000/16) ≈ 4.135 before the
# exp: a box can grow at most 62.5-fold in one decoding. Here is t_w = t_h = 100 decoded on two anchors
# without the cap (`bbox_xform_clip=inf`) and with it; with the cap we expect the 32-px anchors to become
# 2000 px wide, and their IoU to be a number again.

# %%
# NBVAL_CHECK_OUTPUT
huge = torch.tensor([[0.0, 0.0, 100.0, 100.0]]).repeat(2, 1)  # (2, 4) a wild prediction for two anchors
two_anchors = torch.tensor([[0.0, 0.0, 32.0, 32.0], [8.0, 8.0, 40.0, 40.0]])  # (2, 4)
no_clamp = BoxCoder(bbox_xform_clip=math.inf).decode(huge, two_anchors)  # (2, 4)
clamped = rpn_coder.decode(huge, two_anchors)  # (2, 4)
clip = rpn_coder.bbox_xform_clip
print(f"clamp value log(1000/16) = {clip:.4f}, exp of it = {math.exp(clip):.1f}")
print("without the clamp, boxes:", no_clamp.tolist())
print("  their IoU matrix (what NMS would compare):", box_iou(no_clamp, no_clamp).tolist())
print("with the clamp, widths:", [round(w, 1) for w in (clamped[:, 2] - clamped[:, 0]).tolist()],
      "| IoU matrix:", [[round(v, 4) for v in row] for row in box_iou(clamped, clamped).tolist()])
assert torch.isinf(no_clamp).all() and torch.isnan(box_iou(no_clamp, no_clamp)).all()
assert torch.isfinite(clamped).all() and torch.isfinite(box_iou(clamped, clamped)).all()

# %% [markdown]
# ## 4. Matching: which anchors are objects
#
# Faster R-CNN Sec. 3.1.2 labels each anchor from its IoU with the ground-truth boxes:
# **positive** if its IoU with some box is ≥ 0.7, **negative** if its IoU is < 0.3 with every box,
# **ignored** in between (neither label would be safe). One of the seeds writes "≤ 0.3" for the
# negatives; the paper says "lower than 0.3" and the library uses a strict `<`. A second rule makes
# the anchor(s) with the highest IoU for each ground-truth box positive **whatever that IoU is** — the
# "low-quality" rule. Without it, an object that no anchor covers at 0.7 would have no positive anchor
# and the RPN would never learn to propose it. `Matcher` returns, per anchor, the index of its box or
# −1 (background) / −2 (ignored); `assign_targets` turns that into labels 1 / 0 / −1.

# %%
show_source(Matcher.__call__, RegionProposalNetwork.assign_targets, docstring=False)

# %%
iou = box_iou(gt_boxes, anchors)  # (G, A)
matched_idxs = rpn.matcher(iou)  # (A,) in {0..G-1, -1, -2}
(labels,), (matched_boxes,) = rpn.assign_targets(anchors, [gt_boxes])  # (A,), (A, 4)
best_iou = iou.max(dim=0).values  # (A,) each anchor's best IoU
positive, negative, ignored = labels == 1, labels == 0, labels == -1  # (A,) bool each
low_quality = positive & (best_iou < 0.7)  # positive only through the second rule
print_shapes(iou=iou, matched_idxs=matched_idxs, labels=labels, matched_boxes=matched_boxes)
print(f"positive {int(positive.sum())} (IoU >= 0.7: {int((positive & ~low_quality).sum())}, "
      f"best anchor of a box: {int(low_quality.sum())}) | negative {int(negative.sum())} "
      f"| ignored {int(ignored.sum())}")
for g, box in enumerate(gt_boxes):
    w, h = (box[2:] - box[:2]).tolist()
    print(f"  box {g}: {w:.0f} x {h:.0f} px, best anchor IoU {iou[g].max():.2f}, anchors with IoU >= 0.7: "
          f"{int((iou[g] >= 0.7).sum())}")
assert iou.shape == (len(gt_boxes), A) and matched_idxs.shape == labels.shape == (A,) and matched_boxes.shape == (A, 4)
assert int(positive.sum() + negative.sum() + ignored.sum()) == A
assert torch.equal(positive, matched_idxs >= 0) and torch.equal(ignored, matched_idxs == Matcher.BETWEEN_THRESHOLDS)

# %% [markdown]
# In this image only one box has an anchor at IoU ≥ 0.7; the other three get their single positive
# from the low-quality rule alone. That is typical for `shapes_tiny`: each level has one anchor size,
# sizes double from level to level and centres step by the stride, so a shape whose size falls between
# two anchor sizes, or whose centre falls between two anchor centres, overlaps no anchor at 0.7. Over
# the 100 held-out images, the fraction of objects with no anchor at IoU ≥ 0.7 is

# %%
all_gt = [dataset[i][1]["boxes"] for i in range(len(dataset))]  # 100 x (G_i, 4)
best_per_box = torch.cat([box_iou(g, anchors).max(dim=1).values for g in all_gt])  # (total G,)
print(f"{int((best_per_box < 0.7).sum())} of {len(best_per_box)} objects "
      f"({(best_per_box < 0.7).float().mean():.0%}) would have no positive anchor without the low-quality rule")
assert best_per_box.shape == (sum(len(g) for g in all_gt),)

# %% [markdown]
# The picture: ground-truth boxes, every positive anchor (solid where IoU ≥ 0.7, dotted where only the
# low-quality rule made it positive), every ignored anchor, and 40 of the ~4000 negatives drawn at random.

# %%
gen = torch.Generator().manual_seed(0)
neg_idx = torch.nonzero(negative).squeeze(1)  # (Q,)
neg_show = neg_idx[torch.randperm(len(neg_idx), generator=gen)[:40]]  # (40,)
fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
draw_boxes(axes[0], image, anchors[positive & ~low_quality], color="lime", linewidth=2)
draw_boxes(axes[0], None, anchors[low_quality], color="lime", linewidth=2)
axes[0].collections[-1].set_linestyle(":")
draw_boxes(axes[0], None, gt_boxes, color="white", linewidth=1.5)
axes[0].set_title(f"{int(positive.sum())} positives: {int((positive & ~low_quality).sum())} by IoU, "
                  f"{int(low_quality.sum())} by the best-anchor rule", fontsize=10)
draw_boxes(axes[1], image, anchors[neg_show], color="red", linewidth=0.7)
draw_boxes(axes[1], None, anchors[ignored], color="orange", linewidth=0.7, alpha=0.7)
draw_boxes(axes[1], None, gt_boxes, color="white", linewidth=1.5)
axes[1].set_title(f"{int(ignored.sum())} ignored, and 40 of {int(negative.sum())} negatives", fontsize=10)
for ax in axes:
    ax.set_xlim(-8, 136)
    ax.set_ylim(136, -8)
handles = [Line2D([], [], color="white", lw=1.5, label="ground truth"),
           Line2D([], [], color="lime", lw=2, label="positive, IoU >= 0.7"),
           Line2D([], [], color="lime", lw=2, ls=":", label="positive, best anchor of a box"),
           Line2D([], [], color="orange", lw=1, label="ignored, 0.3 <= IoU < 0.7"),
           Line2D([], [], color="red", lw=1, label="negative, IoU < 0.3 (sample)")]
fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, facecolor="0.6")
fig.suptitle("RPN anchor labels on a held-out image")
fig.subplots_adjust(bottom=0.12, top=0.86)
plt.show()

# %% [markdown]
# ## 5. The balanced random sampler (erratum: no hard-negative mining)
#
# Thousands of negatives against a handful of positives would drown the positives in the loss. Faster
# R-CNN (Sec. 3.1.3) therefore trains each image on a mini-batch of anchors **sampled at random**:
# up to half positive, the rest negative (more negatives when there are too few positives). The paper
# uses 256 per image; `shapes_tiny` uses 128 (its config above). Ignored anchors are never sampled.
# We expect min(64, positives) positives and the rest of the 128 negatives: our image has only 4
# positives, so 4 + 124. (On the shapes data, with about one positive per object, the 50 % cap never
# binds: the mini-batch is mostly negatives.)

# %%
show_source(BalancedSampler.__call__, docstring=False)

# %%
torch.manual_seed(0)
(pos_mask,), (neg_mask,) = rpn.sampler([labels])  # (A,) bool each
num_pos, num_neg = int(pos_mask.sum()), int(neg_mask.sum())
print(f"sampled {num_pos} positives + {num_neg} negatives = {num_pos + num_neg} anchors")
assert pos_mask.shape == neg_mask.shape == (A,)
assert num_pos == min(64, int(positive.sum())) and num_pos + num_neg == 128
assert (labels[pos_mask] == 1).all() and (labels[neg_mask] == 0).all() and not (pos_mask & neg_mask).any()

# %% [markdown]
# One seed says instead that the RPN uses **hard-negative mining**: keep the negatives with the highest
# loss, three for each positive. That is SSD's rule (Liu et al. 2016, Sec. 2.2), not the RPN's. We can
# see which rule the library follows: on 16 held-out images, compute the objectness BCE of *every*
# negative anchor under the trained model, sort them, and look where the sampled negatives fall. Hard
# mining would take the top of the sorted list; a uniform random sample spreads over the whole list
# and, since most negatives are easy, its losses look like those of all negatives — tiny.

# %%
with torch.no_grad():
    batch16, sizes16, targets16 = model.transform(*map(list, zip(*[dataset[i] for i in range(16)])))
    features16 = model.backbone(batch16)  # [P2..P6], each (16, 64, h, w)
    objectness16, deltas16, _ = flatten_head_outputs(*rpn.head(features16))  # (16, A), (16, A, 4)
labels16, matched16 = rpn.assign_targets(anchors, [t["boxes"] for t in targets16])  # 16 x (A,), 16 x (A, 4)
torch.manual_seed(0)
pos16, neg16 = rpn.sampler(labels16)  # 16 x (A,) bool each
labels16_t = torch.stack(labels16)  # (16, A)
anchor_loss = F.binary_cross_entropy_with_logits(objectness16, labels16_t.clamp(min=0), reduction="none")  # (16, A)

sampled_loss, hardest_loss, all_neg_loss, rank_fraction = [], [], [], []
for i in range(16):
    neg_losses = anchor_loss[i][labels16[i] == 0]  # (Q_i,) every negative
    order = neg_losses.argsort(descending=True)  # (Q_i,) hardest first
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))  # (Q_i,) rank of each negative, 0 = hardest
    picked = neg16[i][labels16[i] == 0]  # (Q_i,) bool: sampled by the library
    sampled_loss.append(neg_losses[picked])
    hardest_loss.append(neg_losses[order[: 3 * int(pos16[i].sum())]])  # SSD: 3 negatives per positive
    all_neg_loss.append(neg_losses)
    rank_fraction.append(rank[picked].float() / len(order))
sampled_loss, hardest_loss, all_neg_loss = map(torch.cat, (sampled_loss, hardest_loss, all_neg_loss))
rank_fraction = torch.cat(rank_fraction)
print(f"mean BCE of all {len(all_neg_loss)} negatives:        {all_neg_loss.mean():.4f}")
print(f"mean BCE of the {len(sampled_loss)} sampled negatives:      {sampled_loss.mean():.4f}")
print(f"mean BCE of the {len(hardest_loss)} hardest (3 per positive): {hardest_loss.mean():.4f}")
print(f"mean loss rank of the sampled negatives: {rank_fraction.mean():.2f} of the way down "
      "(0 = hardest; a uniform sample gives about 0.5)")
assert anchor_loss.shape == (16, A) and labels16_t.shape == (16, A)
assert 0.4 < rank_fraction.mean() < 0.6  # uniform, not the top of the list

# %%
i = 0  # the first of the 16 images, in detail
neg_losses = anchor_loss[i][labels16[i] == 0]  # (Q,)
order = neg_losses.argsort(descending=True)  # (Q,)
picked_rank = torch.nonzero(neg16[i][labels16[i] == 0][order]).squeeze(1)  # ranks of the sampled negatives
n_hard = 3 * int(pos16[i].sum())
fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
axes[0].plot(neg_losses[order], color="0.3", lw=1, label=f"all {len(order)} negatives, sorted")
axes[0].axvspan(0, n_hard, color="C3", alpha=0.25, label=f"hard-negative mining would take these {n_hard}")
axes[0].scatter(picked_rank, neg_losses[order][picked_rank], s=10, color="C0", zorder=3,
                label=f"the {len(picked_rank)} negatives the library sampled")
axes[0].set_yscale("log")
axes[0].set_xlabel("rank of the negative anchor by its loss (0 = hardest)")
axes[0].set_ylabel("objectness BCE")
axes[0].set_title("One image: sampled negatives lie anywhere in the list")
axes[0].legend(fontsize=8)
bins = torch.linspace(-6, 1, 36)
axes[1].hist(all_neg_loss.log10(), bins=bins, density=True, histtype="step", color="0.3", lw=1.5, label="all negatives")
axes[1].hist(sampled_loss.log10(), bins=bins, density=True, alpha=0.6, color="C0", label="sampled (library)")
axes[1].hist(hardest_loss.log10(), bins=bins, density=True, alpha=0.6, color="C3", label="hardest 3 per positive (SSD)")
axes[1].set_xlabel("log10 objectness BCE of a negative anchor")
axes[1].set_ylabel("density")
axes[1].set_title("16 images: random sampling is not hard mining")
axes[1].legend(fontsize=8)
plt.show()

# %% [markdown]
# The blue histogram sits on top of the grey one: the library's negatives are a fair sample of all
# negatives, mostly easy ones. Hard mining would train only on the red ones, a few hundred anchors on
# object edges and look-alikes. Random sampling is simpler (no ranking by loss) and does not let a few
# ambiguous anchors dominate; the cap on positives does the balancing.
#
# ## 6. The two losses and how they are normalised
#
# Faster R-CNN's Eq. 1 sums a classification term over the mini-batch and a regression term over the
# positives only (p_i* = 1 for a positive, 0 otherwise):
#
# $$L = \frac{1}{N_{cls}} \sum_i L_{cls}(p_i, p_i^*) + \lambda \frac{1}{N_{reg}} \sum_i p_i^* \, L_{reg}(t_i, t_i^*).$$
#
# What N_cls, N_reg and λ are is where versions differ. The paper: N_cls = 256 (the mini-batch),
# N_reg ≈ 2400 (the number of anchor *positions*) and λ = 10. The seeds write 1/N_reg as "the number
# of samples", which a reader easily takes to be the number of positives, the anchors the sum runs over.
# The library does what torchvision and Detectron do: the BCE is **averaged over the sampled anchors**,
# and the smooth-L1 loss (β = 1/9) is **summed over the sampled positives and divided by the number of
# sampled anchors** (positives + negatives), with λ = 1. Dividing by all sampled anchors instead of the
# positives makes the box term ≥ 2 times smaller (at most half the sample is positive); it plays the
# role of the paper's λ/N_reg.

# %%
show_source(RegionProposalNetwork.loss, docstring=False)

# %% [markdown]
# In training mode the RPN needs targets and returns its two losses. We switch only `model.rpn` to
# training mode (the backbone stays as it is) and run it on the 16 images, seeding the generator
# first: the only random step is the sampler, so reseeding it identically reproduces the same sample,
# the one we drew in section 5. Then we recompute both losses by hand from those anchors.

# %%
rpn.train()  # training mode: targets required, losses returned (and the training top-n numbers)
torch.manual_seed(0)
with torch.no_grad():
    _, losses = rpn(batch16, sizes16, features16, targets16)
rpn.eval()
regression_targets = rpn.box_coder.encode(torch.cat(matched16), anchors.repeat(16, 1))  # (16A, 4)
pos_flat, neg_flat = torch.cat(pos16), torch.cat(neg16)  # (16A,) bool each
sampled_flat = pos_flat | neg_flat  # (16A,)
z_flat, labels_flat, deltas_flat = objectness16.reshape(-1), labels16_t.reshape(-1), deltas16.reshape(-1, 4)
loss_obj = F.binary_cross_entropy_with_logits(z_flat[sampled_flat], labels_flat[sampled_flat])  # mean over sampled
box_sum = F.smooth_l1_loss(deltas_flat[pos_flat], regression_targets[pos_flat], beta=1 / 9, reduction="sum")
n_pos, n_sampled = int(pos_flat.sum()), int(sampled_flat.sum())
print({name: round(float(v), 4) for name, v in losses.items()})
print(f"by hand: BCE over {n_sampled} sampled anchors {loss_obj:.4f} | smooth-L1 summed over {n_pos} positives "
      f"/ {n_sampled} sampled {box_sum / n_sampled:.4f}")
print(f"divided by the {n_pos} positives instead (one reading of the seed): {box_sum / n_pos:.4f}")
n_positions = 16 * sum(n // k for n in num_per_level)  # anchor positions in the 16 images
print(f"the paper's lambda / N_reg, with lambda = 10 and N_reg = {n_positions} anchor positions: "
      f"{10 * box_sum / n_positions:.4f}")
assert regression_targets.shape == (16 * A, 4) and pos_flat.shape == (16 * A,)
assert n_sampled == 16 * 128
assert torch.allclose(losses["loss_objectness"], loss_obj)
assert torch.allclose(losses["loss_rpn_box_reg"], box_sum / n_sampled)

# %% [markdown]
# The library's normalisation and the paper's λ/N_reg give box losses of the same size; dividing by the
# positives would make the box term dominate, about 40 times larger here, since only ~3 of the 128
# sampled anchors per image are positive.
#
# And the softmax view of section 2 on these same 2048 sampled anchors: the library's logit z becomes the
# pair (0, z), and the seed's two-way softmax cross-entropy gives exactly the library's BCE.

# %%
two_way = torch.stack([torch.zeros_like(z_flat), z_flat], dim=1)  # (16A, 2): (background, object)
ce_two_way = F.cross_entropy(two_way[sampled_flat], labels_flat[sampled_flat].long())
print(f"2 logits + softmax cross-entropy {ce_two_way:.6f} | 1 logit + sigmoid BCE {losses['loss_objectness']:.6f}")
assert two_way.shape == (16 * A, 2) and torch.allclose(ce_two_way, losses["loss_objectness"])

# %% [markdown]
# ## 7. From 4092 scored anchors to 100 proposals
#
# At test time the RPN turns its predictions into proposals (Faster R-CNN Sec. 3.3, with the per-level
# cut of FPN/Detectron): decode every anchor's deltas into a box; keep the `pre_nms_top_n` highest-scoring
# boxes **per level** (300 here); clip them to the image; drop boxes narrower than `min_size`; run NMS at
# IoU 0.7 within each level; keep the `post_nms_top_n` best over all levels (100 here). The seed's
# "1000 in training, 300 at test" is one example: the paper trains its detector on 2000 proposals,
# torchvision's FPN model uses 2000/1000 per image, and `shapes_tiny` 300/100. The per-level cut keeps
# the 3072 small P2 anchors from crowding out the few large ones. Before the cut we expect
# min(300, A_l) boxes per level: 300 + 300 + 192 + 48 + 12 = 852.

# %%
show_source(RegionProposalNetwork.propose, docstring=False)

# %%
# NBVAL_CHECK_OUTPUT
pre_n, post_n = rpn.pre_nms_top_n, rpn.post_nms_top_n  # eval-mode values
cut_per_level = [min(pre_n, n) for n in num_per_level]
print(f"pre_nms_top_n = {pre_n}, post_nms_top_n = {post_n}, nms_thresh = {rpn.nms_thresh}")
print("anchors per level:", num_per_level, "-> kept before NMS:", cut_per_level, "=", sum(cut_per_level))
assert sum(cut_per_level) == 852

# %% [markdown]
# Now each step by hand on our image, counting boxes as we go, and at the end the same boxes must come
# out of `rpn(...)` itself.

# %%
boxes_all = rpn.box_coder.decode(deltas[0], anchors)  # (A, 4) one decoded box per anchor
top_idx, level_of, start = [], [], 0
for level, n in enumerate(num_per_level):
    idx = objectness[0, start:start + n].topk(min(pre_n, n)).indices + start  # (k_l,) best of this level
    top_idx.append(idx)
    level_of.append(torch.full((len(idx),), level))
    start += n
top_idx, level_of = torch.cat(top_idx), torch.cat(level_of)  # (852,), (852,)
cand = clip_boxes_to_image(boxes_all[top_idx], image_sizes[0])  # (852, 4) inside the image
cand_scores = objectness[0, top_idx].sigmoid()  # (852,)
big = remove_small_boxes(cand, rpn.min_size)  # (K1,)
cand, cand_scores, cand_levels = cand[big], cand_scores[big], level_of[big]  # (K1, 4), (K1,), (K1,)
keep = nms_module.batched_nms(cand, cand_scores, cand_levels, rpn.nms_thresh)  # (K2,) by decreasing score
final = cand[keep[:post_n]]  # (N, 4)
with torch.no_grad():
    proposals, rpn_losses = rpn(batch, image_sizes, features)  # eval mode: no targets, no losses
print(f"decoded {len(boxes_all)} -> top-k per level {len(top_idx)} -> clipped and big enough {len(cand)} "
      f"-> after NMS {len(keep)} -> top {post_n}: {len(final)} proposals")
assert boxes_all.shape == (A, 4) and top_idx.shape == (852,) and len(cand) <= 852
assert len(keep) <= len(cand) and final.shape == (min(post_n, len(keep)), 4)
assert rpn_losses == {} and len(proposals) == 1 and torch.equal(proposals[0], final)
assert torch.equal(keep, torchvision.ops.batched_nms(cand, cand_scores, cand_levels, rpn.nms_thresh))

# %% [markdown]
# **NMS**, written from scratch in `mrcnn_teach/nms.py`: sort by score, and drop every box whose IoU
# with a kept, higher-scoring box exceeds the threshold. The library computes the greedy answer without a
# loop over boxes, from the matrix "box i would suppress box j" (the module docstring explains why the
# fixed point it iterates to is exactly the greedy result); the last assert above checks it against
# torchvision's compiled kernel. `batched_nms` runs it per level by shifting each level's boxes far apart.

# %%
show_source(nms_module.nms, nms_module.greedy_keep, docstring=False)

# %% [markdown]
# Before and after. The decoded boxes of neighbouring anchors, and of the anchors of one position, land
# on the same object with slightly different coordinates, so each object collects a stack of
# near-copies. NMS keeps the best box of each stack and drops the copies that overlap it by more than
# 0.7. We count, per object, the candidates with IoU ≥ 0.5 before NMS, after it, and after the final
# top-100 cut, and draw the object with the biggest stack. Expect NMS to thin every stack; the top-N cut
# can in addition drop an object whose boxes all score low (the recall curve of section 8 measures how often).

# %%
kept_by_nms = torch.zeros(len(cand), dtype=torch.bool)  # (K1,)
kept_by_nms[keep] = True
in_final = torch.zeros(len(cand), dtype=torch.bool)  # (K1,)
in_final[keep[:post_n]] = True
on_object = box_iou(gt_boxes, cand) >= 0.5  # (G, K1)
before = on_object.sum(dim=1)  # (G,) candidates on each object before NMS
after = (on_object & kept_by_nms).sum(dim=1)  # (G,) ... kept by NMS
final_count = (on_object & in_final).sum(dim=1)  # (G,) ... among the final proposals
for g in range(len(gt_boxes)):
    print(f"object {g}: {int(before[g]):3d} boxes at IoU >= 0.5 before NMS, {int(after[g]):2d} after NMS, "
          f"{int(final_count[g]):2d} in the top {post_n}")
assert on_object.shape == (len(gt_boxes), len(cand)) and before.shape == after.shape == final_count.shape
assert (after <= before).all() and (final_count <= after).all()

# %%
g = int(before.argmax())  # the object with the biggest stack
on_g = on_object[g]  # (K1,)
x1, y1, x2, y2 = gt_boxes[g].tolist()
fig, axes = plt.subplots(1, 3, figsize=(12, 4.3))
panels = ((cand, f"{len(cand)} candidates (top-k per level)", 0.25, (-2, 130, 130, -2)),
          (cand[on_g], f"object {g}, before NMS: {int(before[g])} boxes", 0.8, (x1 - 20, x2 + 20, y2 + 20, y1 - 20)),
          (cand[on_g & kept_by_nms], f"object {g}, after NMS 0.7: {int(after[g])} boxes", 0.8,
           (x1 - 20, x2 + 20, y2 + 20, y1 - 20)))
for ax, (boxes, title, alpha, (left, right, bottom, top)) in zip(axes, panels):
    draw_boxes(ax, image, boxes, color="magenta", linewidth=0.8, alpha=alpha)
    draw_boxes(ax, None, gt_boxes, color="black", linewidth=1.5)
    ax.collections[-1].set_linestyle("--")
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    ax.set_title(title, fontsize=10)
fig.legend(handles=[Line2D([], [], color="magenta", lw=1, label="candidate (panels 2-3: IoU >= 0.5 with the object)"),
                    Line2D([], [], color="black", lw=1.5, ls="--", label="ground truth")],
           loc="lower center", ncol=2, fontsize=8)
fig.suptitle("Non-maximum suppression thins each object's stack of near-identical boxes")
fig.subplots_adjust(bottom=0.1, top=0.85)
plt.show()

# %% [markdown]
# ## 8. How many proposals does it take? Recall against N
#
# The RPN's job is **recall**: every object should be covered by some proposal, because the second
# stage can only refine and classify what it is given. For 50 held-out images we let the RPN return up
# to 300 proposals (in score order) and ask, for each N, which fraction of the objects has a proposal
# among the first N with IoU ≥ 0.5, and ≥ 0.7. With at most 4 objects per image we expect recall at
# 0.5 to saturate after a few dozen proposals; at 0.7 it should stay lower, since that asks for a tight box.

# %%
with torch.no_grad():
    batch50, sizes50, targets50 = model.transform(*map(list, zip(*[dataset[i] for i in range(50, 100)])))
    features50 = model.backbone(batch50)
    rpn.post_nms_top_n_test = 300  # let more through for the curve ...
    proposals50, _ = rpn(batch50, sizes50, features50)  # 50 x (N_i, 4), by decreasing score
    rpn.post_nms_top_n_test = cfg["rpn_post_nms_top_n_test"]  # ... and back to the model's 100
N_MAX = 300
best_so_far = []  # per object: best IoU among the first N proposals, N = 1..300
for props, t in zip(proposals50, targets50):
    run = box_iou(t["boxes"], props).cummax(dim=1).values  # (G, N_i)
    pad = run[:, -1:].expand(-1, N_MAX - run.shape[1])  # (G, 300 - N_i): no more proposals, no change
    best_so_far.append(torch.cat([run, pad], dim=1))  # (G, 300)
best_so_far = torch.cat(best_so_far)  # (total G, 300)
recall = {t: (best_so_far >= t).float().mean(dim=0) for t in (0.5, 0.7)}  # (300,) each
print(f"{len(best_so_far)} objects; proposals per image after NMS: min {min(len(p) for p in proposals50)}, "
      f"max {max(len(p) for p in proposals50)}")
for n in (1, 10, 20, 50, 100, 300):
    print(f"N = {n:3d}: recall@0.5 = {recall[0.5][n - 1]:.3f}  recall@0.7 = {recall[0.7][n - 1]:.3f}")
assert batch50.shape == (50, 3, 128, 128) and len(proposals50) == 50
assert all(p.shape[1] == 4 and len(p) <= 300 for p in proposals50)
assert best_so_far.shape == (sum(len(t["boxes"]) for t in targets50), N_MAX)
assert rpn.post_nms_top_n == 100

# %%
fig, ax = plt.subplots(figsize=(7, 4))
n_axis = torch.arange(1, N_MAX + 1)
for t, color in ((0.5, "C0"), (0.7, "C1")):
    ax.plot(n_axis, recall[t], color=color, lw=2, label=f"IoU >= {t}")
ax.axvline(cfg["rpn_post_nms_top_n_test"], color="0.4", ls="--", lw=1, label="the model's 100 proposals")
ax.set_xscale("log")
ax.set_ylim(0, 1.02)
ax.set_xlabel("number of proposals kept per image, N (log scale)")
ax.set_ylabel("recall (fraction of objects found)")
ax.set_title("Recall of the trained RPN's proposals on 50 held-out images")
ax.legend()
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# At IoU 0.5 the trained RPN finds almost every object within a few dozen proposals, so the model's
# 100 are plenty. At 0.7 the curve levels off much lower: the proposals are roughly right but loose.
# Remember that on this data most objects have no anchor at 0.7 to start from, so the regression has
# to do the work, and after 500 training steps it does it only partly. That is fine for the two-stage
# design: the box head refines each proposal again (notebook 06), and for it IoU 0.5 is what counts as
# a positive RoI.
#
# ## Summary
#
# - The RPN head is one 3×3 conv + ReLU and two 1×1 convs, shared by every pyramid level: **k = 3**
#   objectness logits and **4k = 12** deltas per position, 4092 anchors for a 128×128 image.
# - A two-way softmax per anchor (the paper's 2k outputs) equals a sigmoid of the logit difference, so
#   the library keeps one logit per anchor and a sigmoid BCE; the seed's 2k head with a BCE loss does not fit.
# - Anchors are positive at IoU ≥ 0.7 **or** as an object's best anchor, negative at IoU < 0.3, ignored in
#   between; on the shapes data the best-anchor rule supplies most of the positives.
# - Each image contributes a **random** sample (128 here, 256 in the paper) with at most half positives.
#   The sampled negatives are spread over all losses, unlike SSD's hard-negative mining.
# - Deltas are offsets between **centres** scaled by the anchor's size, and log size ratios; weights (1, 1, 1, 1)
#   for the RPN, (10, 10, 5, 5) for the box head, and a clamp at log(1000/16) keeps exp finite.
# - The BCE is averaged over the sampled anchors; the smooth-L1 (β = 1/9) is summed over the positives
#   and divided by the number of *sampled* anchors, as in torchvision.
# - Proposals: decode → top-k per level → clip → drop tiny → NMS 0.7 per level → top-N; the recall curve
#   shows how many proposals the second stage needs to see every object.
#
# ## Exercises
#
# Worked solutions, for teachers, are in `solutions/04_rpn.py`.
#
# **1. Label the anchors.** Write `my_rpn_labels(iou)` that takes a (G, N) IoU matrix and returns (N,)
# labels: 1.0 positive, 0.0 negative, −1.0 ignored, with thresholds 0.7 and 0.3 and the low-quality rule
# (every anchor whose IoU equals a box's best IoU is positive, ties included). Use no loop over anchors.

# %%
from mrcnn_teach.exercises.nb04 import check_box_encoding, check_rpn_labels, check_rpn_losses


def my_rpn_labels(iou):
    raise NotImplementedError  # your code here


_ = check_rpn_labels(my_rpn_labels)

# %% [markdown]
# **2. Encode boxes.** Write `my_encode(boxes, anchors)` returning the (N, 4) targets (tx, ty, tw, th) of
# section 3 with weights (1, 1, 1, 1), from (x1, y1, x2, y2) boxes. Remember which x and y the formulas mean.

# %%
def my_encode(boxes, anchors):
    raise NotImplementedError  # your code here


_ = check_box_encoding(my_encode)

# %% [markdown]
# **3. The RPN losses.** Write `my_rpn_losses(objectness, deltas, labels, regression_targets, pos_mask, neg_mask)`
# for one image: objectness (A,) logits, deltas and regression_targets (A, 4), labels (A,) in {1, 0, −1},
# and the sampler's two (A,) masks. Return `(loss_objectness, loss_box)` normalised as the library does.
# Then: how much larger would `loss_box` be if you divided by the positives, for a sample of 20 positives
# among 128?

# %%
def my_rpn_losses(objectness, deltas, labels, regression_targets, pos_mask, neg_mask):
    raise NotImplementedError  # your code here


_ = check_rpn_losses(my_rpn_losses)

# %% [markdown]
# Next: [05 — RoIAlign](05_roi_align.ipynb)
