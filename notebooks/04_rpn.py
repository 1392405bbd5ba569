# %% [markdown]
# # 04 — The Region Proposal Network and its loss
#
# The anchors of the last notebook are guesses laid on a grid. The **Region Proposal Network** (RPN, Faster
# R-CNN, Ren et al. 2015, Sec. 3.1) is the small network that scores every anchor ("is there an object
# here?") and nudges it onto the object. Its best few hundred boxes per image, the **proposals**, are all
# that the second stage looks at when detecting (in training it also gets the ground-truth boxes, notebook
# 06).
#
# **You will learn**
# - the RPN head: one shared 3×3 conv, then *k* objectness logits and *4k* box deltas per position, and
#   why one logit per anchor with a sigmoid is the same model as the paper's two-way softmax;
# - which pyramid levels can learn anything at all on this data, measured: positives per level, and
#   what the trained head does on levels that only ever saw negatives;
# - how anchors are labelled (positive at IoU ≥ 0.7 or as a box's best anchor, negative below 0.3, the
#   rest ignored) and sampled (at random, at most half positive: *not* hard-negative mining);
# - the box encoding (tx, ty, tw, th) with its weights and its clamp, and how the two losses are normalised;
# - how proposals are made (decode, top-k per level, clip, drop tiny boxes, NMS at 0.7, top-N), what the
#   from-scratch NMS computes, and why an object can still be missing from the proposals.
#
# **Builds on:** [02 — FPN](02_fpn.ipynb) (the P2–P6 maps the head slides over) and
# [03 — Anchors](03_anchors.ipynb) (the A anchors it scores, and how well they fit the shapes).
#
# **Run time:** about a minute on a 2-core CPU once the shared shapes model is trained; the first notebook
# you run trains it, 6 to 13 minutes on a 2-core CPU (700 steps; `make model` trains it ahead), and later notebooks load it in a second.

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

import math
import matplotlib.patheffects as path_effects
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from mrcnn_teach import build_maskrcnn
from mrcnn_teach import nms as nms_module
from mrcnn_teach.boxes import BoxCoder, box_iou, clip_boxes_to_image, remove_small_boxes
from mrcnn_teach.datasets import ShapesDataset
from mrcnn_teach.matcher import BalancedSampler, Matcher
from mrcnn_teach.pretrained import trained_shapes_model
from mrcnn_teach.rpn import RegionProposalNetwork, RPNHead, flatten_head_outputs
from mrcnn_teach.visualize import CLASS_COLORS, class_color, draw_boxes

# %% [markdown]
# ## 0. A trained model and 50 held-out images
#
# We study the RPN of the `shapes_tiny` Mask R-CNN trained on the built-in shapes images (the training
# images use data seed 0; the held-out ones here use seed 1). Its RPN settings live in the model's config:
# note the **128** sampled anchors per image (the paper's 256 is for ~1000×600 images with ~20 000 anchors;
# ours are 128×128 with about 4 000) and the 100 proposals kept per image at test time. `MaskRCNN.forward`
# calls the RPN as `self.rpn(batch, image_sizes, features, targets)`: the padded batch (only its size
# matters, for the anchors), each image's size before padding (for clipping), the pyramid [P2..P6], and in
# training the targets. We run the transform, the backbone and the RPN by hand, on all 50 images at once and
# on one of them in detail. A 128×128 image stays 128×128 in the transform, so the boxes are in the pixels
# of the features' image.

# %%
model = trained_shapes_model()  # eval mode, CPU
rpn, cfg = model.rpn, model.config  # the RegionProposalNetwork of mrcnn_teach/rpn.py, the config dict
for key in ("anchor_sizes", "aspect_ratios", "rpn_fg_iou_thresh", "rpn_bg_iou_thresh", "rpn_batch_size_per_image",
            "rpn_positive_fraction", "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test", "rpn_nms_thresh"):
    print(f"{key:<25} {cfg[key]}")

dataset = ShapesDataset(50, seed=1)  # held-out images
with torch.no_grad():
    batch50, sizes50, targets50 = model.transform(*map(list, zip(*[dataset[i] for i in range(50)])))
    features50 = model.backbone(batch50)  # [P2..P6], each (50, 64, h, w)
i = 4  # the image we follow in detail
image, target = dataset[i]
batch, image_sizes, features = batch50[i:i + 1], sizes50[i:i + 1], [P[i:i + 1] for P in features50]
gt_boxes = targets50[i]["boxes"]  # (G, 4)
print_shapes(batch50=batch50, batch=batch, features=features, gt_boxes=gt_boxes)
assert batch.shape == (1, 3, 128, 128) and gt_boxes.shape == (len(target["boxes"]), 4)
assert [P.shape[-1] for P in features] == [128 // 2 ** l for l in range(2, 7)]  # strides 4..64

# %% [markdown]
# ## 1. The head: a 3×3 conv, then k logits and 4k deltas
#
# Faster R-CNN (Sec. 3.1, Fig. 3) slides a small network over the feature map: a 3×3 convolution with
# ReLU, then two sibling 1×1 convolutions, **cls** (objectness) and **reg** (box deltas), one set of
# outputs for each of the *k* anchors at that position. FPN (Lin et al. 2017, Sec. 4.1) runs the *same*
# head, with the same weights, on every level P2..P6. *k* is the number of anchors per position: a
# level's sizes times its aspect ratios. FPN's own design has one size and three ratios per level;
# `shapes_tiny` has three sizes and one (square) ratio, fitted to the shapes in notebook 03. Both give
# k = 3, and the head cannot tell the difference: it only has k output channels, and which anchor each
# channel stands for is fixed by the anchor generator's order.
#
# > **Common mistake:** "the RPN predicts 9 anchors per position, 3 scales × 3 ratios". That is the
# > single-map RPN of Faster R-CNN (Sec. 3.1.1). On a pyramid each level has its own anchors, so the head
# > sized for 9 would predict anchors that the generator never made (the RPN refuses it with an error
# > naming both counts).

# %%
show_source(RPNHead)

# %% [markdown]
# The anchor generator lays out its anchors level by level, then row, column, and the k anchors of a
# position. `flatten_head_outputs` puts the head's maps in the same order, so that row *i* of the
# objectness and of the deltas belongs to anchor *i*. Per level with an h×w map we expect objectness
# (B, k, h, w) and deltas (B, 4k, h, w), and in all A = k · Σ h·w anchors. (Anchors are rounded to whole
# pixels, notebook 03: the "25-px" anchor is 24 px wide, "51" is 52.)

# %%
show_source(flatten_head_outputs)

# %%
# NBVAL_CHECK_OUTPUT
with torch.no_grad():
    objectness_maps, delta_maps = rpn.head(features)  # [(1, k, h, w)], [(1, 4k, h, w)]
objectness, deltas, num_per_level = flatten_head_outputs(objectness_maps, delta_maps)  # (1, A), (1, A, 4)
anchors = rpn.anchor_generator((128, 128), [P.shape[-2:] for P in features])  # (A, 4)
level = torch.repeat_interleave(torch.arange(5), torch.tensor(num_per_level))  # (A,) level of each anchor
k = rpn.anchor_generator.num_anchors_per_location()[0]
print_shapes(objectness_maps=objectness_maps, delta_maps=delta_maps, objectness=objectness, deltas=deltas)
for l, (P, n) in enumerate(zip(features, num_per_level)):
    print(f"P{l + 2}: {P.shape[-2]:2d} x {P.shape[-1]:2d} positions x k={k} = {n:4d} anchors, "
          f"sizes {cfg['anchor_sizes'][l]} px, aspect ratios {cfg['aspect_ratios'][l]}")
A = anchors.shape[0]
print(f"A = {A} anchors in all")
assert k == len(cfg["anchor_sizes"][0]) * len(cfg["aspect_ratios"][0])  # sizes x ratios
assert A == objectness.shape[1] == k * sum(P.shape[-2] * P.shape[-1] for P in features)
assert deltas.shape == (1, A, 4) and anchors.shape == (A, 4) and level.shape == (A,)

# %% [markdown]
# ## 2. Which levels can learn?
#
# The head is trained only where anchors get labels (section 5 has the rules): positive for IoU ≥ 0.7 with a
# box, or as a box's best anchor; negative below 0.3 with every box. So before looking at the trained model,
# ask the data. For a square anchor of side *a* and a square box of side *s* with the same centre, IoU =
# (min(s, a) / max(s, a))²: to reach 0.7 the two sides must be within a factor 1/√0.7 ≈ 1.2, and to reach
# even 0.3 within 1/√0.3 ≈ 1.8. The shapes are drawn 12–48 px (a side, or a circle's diameter); their boxes,
# measured as √(wh), run beyond that at both ends (8–67 px below: a rotated square's box is up to √2 larger,
# occlusion makes boxes smaller; notebook 03 measured them too). **Predict** before running: which levels
# will ever see a positive anchor? Which will never even see an *ignored* one? Compare each level's sizes
# (printed above) with the boxes.
#
# We label the anchors of 500 training images with the RPN's own rules and count, per level.

# %%
# NBVAL_CHECK_OUTPUT
train_set = ShapesDataset(500, seed=0)  # the first 500 of the 2000 training images
train_boxes = [train_set[j][1]["boxes"] for j in range(len(train_set))]  # 500 x (G_j, 4)
labels_train = torch.stack(rpn.assign_targets(anchors, train_boxes)[0])  # (500, A) in {1, 0, -1}
all_boxes = torch.cat(train_boxes)  # (G, 4)
iou_train = box_iou(all_boxes, anchors)  # (G, A)
best_level = level[iou_train.argmax(dim=1)]  # (G,) level of each box's best anchor
side = (all_boxes[:, 2:] - all_boxes[:, :2]).prod(dim=1).sqrt()  # (G,) sqrt(w h)
print(f"{len(all_boxes)} boxes in {len(train_set)} training images, sides {side.min():.0f}-{side.max():.0f} px; "
      f"{(iou_train.max(dim=1).values >= 0.7).float().mean():.0%} have an anchor at IoU >= 0.7")
print("level  anchors  positive/image  ignored/image  best anchor of (their sides)  highest IoU with any box")
for l in range(5):
    on, mine = labels_train[:, level == l], side[best_level == l]  # (500, A_l), sides of the boxes it is best for
    sides = f"({mine.min():.0f}-{mine.max():.0f} px)" if len(mine) else ""
    print(f"P{l + 2}  {num_per_level[l]:9d} {(on == 1).sum(1).float().mean():12.2f} {(on == -1).sum(1).float().mean():14.1f}"
          f"  {(best_level == l).float().mean():8.0%} {sides:<13}  {iou_train[:, level == l].max():14.2f}")
never = [l for l in range(5) if (labels_train[:, level == l] == 0).all()]  # levels that only see negatives
print(f"only ever negative, in every image: {', '.join(f'P{l + 2}' for l in never) or 'no level'} "
      f"({sum(num_per_level[l] for l in never)} anchors)")
a_min = min(cfg["anchor_sizes"][0])  # the smallest anchor of P2
print(f"IoU of a centred square anchor with the smallest shape (12 px): {a_min} px (P2's smallest) "
      f"{(12 / a_min) ** 2:.2f}; 8 px {(8 / 12) ** 2:.2f}")
assert labels_train.shape == (len(train_set), A) and never  # some level only ever sees negatives
assert (labels_train[:, level == 0] == 1).any() and (12 / a_min) ** 2 < 0.7  # P2 learns; 12 px only as a best anchor

# %% [markdown]
# The table answers the prediction. The small levels do the work: P2 and P3 hold nearly all the positives
# and nearly every box's best anchor, P4 a few, for the largest boxes. Each level is the best fit for the
# boxes whose sides lie near its own anchor sizes (the sides in brackets). In particular the smallest
# anchors *are* positive (the P2 row): its sizes were chosen from the data (notebook 03), so P2's anchors
# reach IoU ≥ 0.7 with boxes of about their own size, and the smallest shapes still get their best anchor
# there, positive through the best-anchor rule (the last line: a centred anchor of P2's smallest size on a
# 12-px shape stays below 0.7). Had the anchors been one size per level at twice the stride (8, 16, 32, 64,
# 128 px, the old design that notebook 03 measured first), the same line gives the most a 12-px box could
# reach on P2 (0.44 < 0.56 for a 16-px anchor): boxes of 12 px and more would find their best anchor on P3
# or higher, P2 would be the best fit only for the few boxes under about 11 px, and would train on negatives
# almost only. The levels named "only ever negative" never get a positive, nor even an ignored anchor: their
# smallest anchor is so much larger than the largest box that the IoU stays below 0.3 (last column), so
# every one of their anchors is a negative in every image. Training teaches them one thing, "background".
#
# So expect the trained head to light up on P2 and P3 over the shapes, P4 over the largest ones at most,
# and the negatives-only levels to stay dark everywhere. For each position we draw the most confident of its k
# anchors, σ(logit), each cell centred on its anchors' centre, and print each level's highest score over
# all 50 held-out images. Before training, the head's last layers are N(0, 0.01²) with zero bias
# (Faster R-CNN Sec. 3.1.3), so every anchor starts near σ(0) = 0.5; we check that on an untrained model.

# %%
fig, axes = plt.subplots(1, 6, figsize=(13, 2.9), layout="constrained")
axes[0].imshow(image.permute(1, 2, 0))
axes[0].set(title="held-out image", xlabel="x (px)", ylabel="y (px)")
for l, obj in enumerate(objectness_maps):
    prob = obj[0].sigmoid().max(dim=0).values  # (h, w): the best of the k anchors at each position
    s = 128 // prob.shape[0]  # stride: anchors are centred on (x * s, y * s)
    shown = axes[l + 1].imshow(prob, vmin=0, vmax=1, cmap="magma",
                               extent=(-s / 2, prob.shape[1] * s - s / 2, prob.shape[0] * s - s / 2, -s / 2))
    axes[l + 1].set(title=f"P{l + 2}: {cfg['anchor_sizes'][l][0]}-{cfg['anchor_sizes'][l][-1]} px", xlabel="x (px)")
fig.colorbar(shown, ax=axes, fraction=0.02, label="max over k of σ(objectness)")
fig.suptitle("Objectness of the trained RPN per pyramid level (anchor sizes in the titles)")
plt.show()

with torch.no_grad():
    objectness50 = flatten_head_outputs(*rpn.head(features50))[0]  # (50, A)
    untrained = build_maskrcnn("shapes_tiny").eval()  # same architecture, initial weights
    p_init = flatten_head_outputs(*untrained.rpn.head(untrained.backbone(batch50[:4])))[0].sigmoid()  # (4, A)
print("highest σ(objectness) per level over the 50 held-out images, trained:",
      "  ".join(f"P{l + 2} {objectness50[:, level == l].sigmoid().max():.3f}" for l in range(5)))
print(f"untrained, on 4 images: every anchor between {p_init.min():.3f} and {p_init.max():.3f}")

# %% [markdown]
# Training pushed almost every anchor far below 0.5, and the levels that only saw negatives learned to say
# "no" everywhere: their highest score over 50 images is tiny. P4, with few positives of its own, still
# scores the largest shapes high; the head's weights are shared by all levels, which plausibly carries over
# what it learned on P2 and P3. One shape stays dim: the triangle half hidden behind the big circle; its
# best covering proposal in section 8 scores 0.213. Section 8 shows what the negatives-only levels cost:
# they still take their share of the pre-NMS candidates (60 of 852 here), though none of the final 100.
#
# ## 3. One logit per anchor, or two?
#
# Faster R-CNN's cls layer outputs **2k** scores per position, a two-class softmax per anchor (object vs
# background); a footnote adds that one logistic output per anchor, **k** scores, would do as well.
#
# > **Common mistake:** building the paper's 2k-channel cls layer and then training it with a binary
# > cross-entropy, the loss of the k-logit version. The two halves do not fit: 2k logits against k labels.
# > Either formulation alone is right, and they are the same model.
#
# With logits (z₀, z₁) for (background, object), the softmax probability of "object" is
#
# $$\mathrm{softmax}(z)_1 = \frac{e^{z_1}}{e^{z_0} + e^{z_1}} = \frac{1}{1 + e^{-(z_1 - z_0)}} = \sigma(z_1 - z_0),$$
#
# so a two-way softmax with cross-entropy is a sigmoid with binary cross-entropy on the one logit
# z = z₁ − z₀. Only the difference matters: adding the same number to both logits changes nothing, so one
# channel of each pair is redundant. On four fixed pairs of logits we expect the two probability columns,
# and the two losses, to agree to every printed digit.

# %%
# NBVAL_CHECK_OUTPUT
z = torch.tensor([[0.0, 2.0], [1.5, -0.5], [3.0, 3.0], [-2.0, 4.0]])  # (4, 2): (background, object) logits
y = torch.tensor([1, 0, 1, 0])  # (4,) object? per anchor
p_softmax = z.softmax(dim=1)[:, 1]  # (4,)
p_sigmoid = torch.sigmoid(z[:, 1] - z[:, 0])  # (4,)
for j in range(4):
    print(f"z = ({z[j, 0]:+.1f}, {z[j, 1]:+.1f})   softmax p(object) = {p_softmax[j]:.4f}"
          f"   sigmoid(z1 - z0) = {p_sigmoid[j]:.4f}")
ce = F.cross_entropy(z, y)  # 2 logits per anchor, softmax cross-entropy
bce = F.binary_cross_entropy_with_logits(z[:, 1] - z[:, 0], y.float())  # 1 logit per anchor, sigmoid BCE
ce_shifted = F.cross_entropy(z + 5.0, y)  # the same constant added to both logits
print(f"softmax cross-entropy {ce:.4f} | sigmoid BCE {bce:.4f} | cross-entropy after z + 5: {ce_shifted:.4f}")
assert torch.allclose(p_softmax, p_sigmoid) and torch.allclose(ce, bce) and torch.allclose(ce, ce_shifted)

# %% [markdown]
# **The library uses k logits and a sigmoid BCE**, like torchvision and Detectron: `RPNHead.objectness` has
# k output channels, and `RegionProposalNetwork.loss` calls `binary_cross_entropy_with_logits`. Section 7
# checks the equivalence once more on the anchors the model is trained on.
#
# ## 4. Box coding: what the deltas mean
#
# The four deltas of an anchor say how to move it onto its object (Faster R-CNN Eq. 2). With
# (x_a, y_a, w_a, h_a) the anchor's **centre**, width and height, and (x, y, w, h) those of the box,
#
# $$t_x = \frac{x - x_a}{w_a},\quad t_y = \frac{y - y_a}{h_a},\quad t_w = \log\frac{w}{w_a},\quad t_h = \log\frac{h}{h_a}.$$
#
# Dividing by the anchor's size makes the offsets scale-free; the log makes "twice as wide" and "half as
# wide" symmetric (±log 2). Decoding inverts it: x = t_x·w_a + x_a, w = w_a·e^{t_w}. The library multiplies
# the targets by fixed **weights** (w_x, w_y, w_w, w_h): (1, 1, 1, 1) in the RPN, (10, 10, 5, 5) in the box
# head, whose inputs already sit close to the objects, so that its small offsets are scaled up to about
# unit size (notebook 06). Decoding divides them out.
#
# > **Common mistake:** reading x and y in Eq. 2 as a box's top-left corner (our boxes are *stored* as
# > corners x1, y1, x2, y2, so the coder converts first). The paper defines them as centres; below we decode
# > corner offsets as if they were centre offsets and land on the wrong box.

# %%
show_source(BoxCoder.encode, BoxCoder.decode, docstring=False)

# %% [markdown]
# Three hand-made anchors and boxes. For the first pair, the anchor (0, 0, 32, 32) has centre (16, 16) and
# size 32; the box (4, 2, 36, 30) has centre (20, 16), width 32 and height 28. So we expect
# t = ((20 − 16)/32, 0, log 1, log(28/32)) = (0.125, 0, 0, −0.1335), ten and five times that with the box
# head's weights, and decoding must give the boxes back. Then the corner mistake: take the anchor
# (0, 0, 32, 32) and a box twice its size with the same top-left corner, (0, 0, 64, 64). Between centres
# t_x = (32 − 16)/32 = 0.5; between corners it would be 0.

# %%
# NBVAL_CHECK_OUTPUT
hand_anchors = torch.tensor([[0.0, 0.0, 32.0, 32.0], [16.0, 8.0, 48.0, 72.0], [40.0, 40.0, 56.0, 48.0]])  # (3, 4)
hand_boxes = torch.tensor([[4.0, 2.0, 36.0, 30.0], [20.0, 20.0, 44.0, 60.0], [30.0, 38.0, 70.0, 52.0]])  # (3, 4)
rpn_coder, head_coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0)), BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
t_rpn, t_head = rpn_coder.encode(hand_boxes, hand_anchors), head_coder.encode(hand_boxes, hand_anchors)  # (3, 4) each
print("RPN weights (1, 1, 1, 1):\n", t_rpn, "\nbox-head weights (10, 10, 5, 5):\n", t_head)
assert torch.allclose(t_rpn[0], torch.tensor([0.125, 0.0, 0.0, math.log(28 / 32)]))
assert torch.allclose(rpn_coder.decode(t_rpn, hand_anchors), hand_boxes, atol=1e-4)
assert torch.allclose(head_coder.decode(t_head, hand_anchors), hand_boxes, atol=1e-4)

anchor_demo, box_demo = torch.tensor([[0.0, 0.0, 32.0, 32.0]]), torch.tensor([[0.0, 0.0, 64.0, 64.0]])  # (1, 4) each
t_centre = rpn_coder.encode(box_demo, anchor_demo)  # (1, 4)
t_corner = torch.tensor([[0.0 / 32, 0.0 / 32, math.log(2.0), math.log(2.0)]])  # offsets between top-left corners
wrong_box = rpn_coder.decode(t_corner, anchor_demo)  # (1, 4)
print("targets from centres:", t_centre, "| from corners:", t_corner)
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
ax.set(xlabel="x (px)", ylabel="y (px)", title="Box coding: offsets are between centres")
ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
plt.show()

# %% [markdown]
# **The clamp.** An untrained or diverging regressor can output a huge t_w, and exp overflows float32 at
# about 88.7: the box becomes (−∞, +∞), its area ∞, and the IoU of two such boxes ∞/∞ = NaN, which then
# poisons NMS and the loss. `BoxCoder` therefore caps t_w and t_h at log(1000/16) ≈ 4.135 before the exp
# (torchvision's `BoxCoder` uses the same cap): a box can grow at most 62.5-fold in one decoding. Here is
# t_w = t_h = 100 decoded on two anchors without the cap and with it; with it we expect the 32-px anchors
# to become 2000 px wide, and their IoU to be a number again.

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
# ## 5. Matching: which anchors are objects
#
# Faster R-CNN Sec. 3.1.2 labels each anchor from its IoU with the ground-truth boxes. Positive are
# "(i) the anchor/anchors with the highest Intersection-over-Union (IoU) overlap with a ground-truth box, or
# (ii) an anchor that has an IoU overlap higher than 0.7 with any ground-truth box"; negative is "a
# non-positive anchor if its IoU ratio is lower than 0.3 for all ground-truth boxes"; the rest are ignored.
# At the exact thresholds the paper's words and the code differ: torchvision's `Matcher` makes an anchor
# positive at IoU **≥ 0.7** ("greater than or equal to", its docstring; `matched_vals < high_threshold` is
# what it excludes) and negative below 0.3, and the library copies it, so an IoU of exactly 0.7 is positive
# here but would be ignored by the paper's "higher than".
#
# > **Common mistake:** "negatives are anchors with IoU ≤ 0.3". The paper says *lower than* 0.3, and so do
# > torchvision and the library (a strict `<`): an anchor at exactly 0.3 is ignored. Exercise 1 has one.
#
# Rule (i) is the **low-quality rule**: without it an object that no anchor covers at 0.7 would have no
# positive anchor, and the RPN would never learn to propose it. Two details of how torchvision applies it
# (and the library, `allow_low_quality_matches=True`): every anchor *tied* for a box's best IoU is
# positive, and such an anchor learns from *its own* best box, which is another box when it overlaps that
# one more (notebook 03, section 8, builds a box left with no positive anchor this way). Faster R-CNN also
# ignored anchors that cross the image border in training (Sec. 3.3); torchvision and the library keep
# them. `Matcher` returns, per anchor, the index of its box or −1 (background) / −2 (ignored);
# `assign_targets` turns that into labels 1 / 0 / −1.

# %%
show_source(Matcher.__call__, RegionProposalNetwork.assign_targets, docstring=False)

# %%
iou = box_iou(gt_boxes, anchors)  # (G, A)
matched_idxs = rpn.matcher(iou)  # (A,) in {0..G-1, -1, -2}
(labels,), (matched_boxes,) = rpn.assign_targets(anchors, [gt_boxes])  # (A,), (A, 4)
best_iou = iou.max(dim=0).values  # (A,) each anchor's best IoU
positive, negative, ignored = labels == 1, labels == 0, labels == -1  # (A,) bool each
low_quality = positive & (best_iou < 0.7)  # positive only through the best-anchor rule
print(f"positive {int(positive.sum())} (IoU >= 0.7: {int((positive & ~low_quality).sum())}, "
      f"best anchor of a box only: {int(low_quality.sum())}) | negative {int(negative.sum())} "
      f"| ignored {int(ignored.sum())}")
for g, box in enumerate(gt_boxes):
    w, h = (box[2:] - box[:2]).tolist()
    print(f"  box {g} ({model.class_names[targets50[i]['labels'][g]]}): {w:.0f} x {h:.0f} px, best anchor IoU "
          f"{iou[g].max():.2f} on P{int(level[iou[g].argmax()]) + 2}, anchors learning from it: {int((matched_idxs == g).sum())}")
assert int(positive.sum() + negative.sum() + ignored.sum()) == A
assert torch.equal(positive, matched_idxs >= 0) and torch.equal(ignored, matched_idxs == Matcher.BETWEEN_THRESHOLDS)

# %% [markdown]
# The picture shows the image in grey so that the labels stand out: each ground-truth box in its class's
# colour, every positive anchor (solid where IoU ≥ 0.7, dashed where only the best-anchor rule made it
# positive), every ignored anchor, and 40 of the ~4000 negatives drawn at random.

# %%
gen = torch.Generator().manual_seed(0)
neg_idx = torch.nonzero(negative).squeeze(1)  # (Q,)
neg_show = neg_idx[torch.randperm(len(neg_idx), generator=gen)[:40]]  # (40,)
grey = image.mean(dim=0, keepdim=True).expand(3, -1, -1) * 0.6  # (3, H, W) dimmed grey: any colour shows on it
halo = [path_effects.withStroke(linewidth=3.5, foreground="black")]  # a dark edge around a line
gt_colors = [class_color(c) for c in targets50[i]["labels"].tolist()]
fig, axes = plt.subplots(1, 2, figsize=(10, 5.2))
draw_boxes(axes[0], grey, anchors[positive & ~low_quality], color="white", linewidth=1.5)
draw_boxes(axes[0], None, anchors[low_quality], color="white", linewidth=1.5)
axes[0].collections[-1].set_linestyle((0, (3, 2)))
draw_boxes(axes[1], grey, anchors[ignored], color=CLASS_COLORS[8], linewidth=0.8, alpha=0.8)
draw_boxes(axes[1], None, anchors[neg_show], color=CLASS_COLORS[9], linewidth=1.0)
for ax in axes:
    for lines in ax.collections:
        lines.set_path_effects(halo if ax is axes[0] else [])
    draw_boxes(ax, None, gt_boxes, color=gt_colors, linewidth=2.5)
    ax.collections[-1].set_path_effects(halo)
    ax.set_xlim(-8, 136)
    ax.set_ylim(136, -8)
axes[0].set_title(f"{int(positive.sum())} positives: {int((positive & ~low_quality).sum())} by IoU, "
                  f"{int(low_quality.sum())} by the best-anchor rule", fontsize=10)
axes[1].set_title(f"{int(ignored.sum())} ignored, and 40 of {int(negative.sum())} negatives", fontsize=10)
handles = [Line2D([], [], color="0.7", lw=2.5, label="ground truth, in its class colour"),
           Line2D([], [], color="white", lw=1.5, label="positive, IoU >= 0.7"),
           Line2D([], [], color="white", lw=1.5, ls=(0, (3, 2)), label="positive, best anchor of a box"),
           Line2D([], [], color=CLASS_COLORS[8], lw=1.5, label="ignored, 0.3 <= IoU < 0.7"),
           Line2D([], [], color=CLASS_COLORS[9], lw=1.5, label="negative, IoU < 0.3 (sample)")]
fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, facecolor="0.35", labelcolor="white")
fig.suptitle("RPN anchor labels on a held-out image")
fig.subplots_adjust(bottom=0.14, top=0.87, wspace=0.05)
plt.show()

# %% [markdown]
# ## 6. The balanced random sampler
#
# Thousands of negatives against a handful of positives would drown the positives in the loss. Faster
# R-CNN (Sec. 3.1.3) therefore trains each image on a mini-batch of anchors **sampled at random**: up to
# half positive, the rest negative (more negatives when there are too few positives). The paper uses 256
# per image, `shapes_tiny` 128 (its config above); ignored anchors are never sampled. We expect
# min(64, positives) positives per image and negatives for the rest of the 128.
#
# > **Common mistake:** "the RPN uses hard-negative mining: it keeps the negatives with the highest loss,
# > three for each positive". That is SSD's rule (Liu et al. 2016, Sec. 2.2), not the RPN's.
#
# We can see which rule the library follows. On 16 held-out images we compute the objectness BCE of
# *every* negative anchor under the trained model, rank the negatives by it, and look where the sampled ones
# fall. Hard mining would take the top of the ranking; a uniform sample spreads over all of it, and since
# most negatives are easy, its losses look like those of all negatives: tiny.

# %%
show_source(BalancedSampler.__call__, docstring=False)

# %%
batch16, sizes16, targets16, features16 = batch50[:16], sizes50[:16], targets50[:16], [P[:16] for P in features50]
with torch.no_grad():
    objectness16, deltas16, _ = flatten_head_outputs(*rpn.head(features16))  # (16, A), (16, A, 4)
labels16, matched16 = rpn.assign_targets(anchors, [t["boxes"] for t in targets16])  # 16 x (A,), 16 x (A, 4)
torch.manual_seed(0)
pos16, neg16 = map(torch.stack, rpn.sampler(labels16))  # (16, A) bool each
labels16 = torch.stack(labels16)  # (16, A)
loss16 = F.binary_cross_entropy_with_logits(objectness16, labels16.clamp(min=0), reduction="none")  # (16, A)
is_neg = labels16 == 0  # (16, A)
order = loss16.masked_fill(~is_neg, -1.0).argsort(dim=1, descending=True)  # (16, A) negatives first, hardest first
rank = torch.empty_like(order).scatter_(1, order, torch.arange(A).expand(16, -1))  # (16, A) 0 = hardest negative
hard = is_neg & (rank < 3 * pos16.sum(dim=1, keepdim=True))  # (16, A) what SSD would take: 3 per positive
rank_fraction = (rank.float() / is_neg.sum(dim=1, keepdim=True))[neg16]  # (2048 - P,) 0 = hardest, 1 = easiest
print(f"positives per image: {pos16.sum(1).tolist()}; sampled per image: {(pos16 | neg16).sum(1).unique().tolist()}")
print(f"mean BCE of all {int(is_neg.sum())} negatives: {loss16[is_neg].mean():.4f} | of the {int(neg16.sum())} "
      f"sampled: {loss16[neg16].mean():.4f} | of the {int(hard.sum())} hardest: {loss16[hard].mean():.4f}")
print(f"mean rank of the sampled negatives: {rank_fraction.mean():.2f} of the way down (a uniform sample: about 0.5)")
assert torch.equal(pos16.sum(1), (labels16 == 1).sum(1).clamp(max=64)) and ((pos16 | neg16).sum(1) == 128).all()
assert 0.4 < rank_fraction.mean() < 0.6  # spread over the ranking, not its top

# %%
r = rank[0][is_neg[0]].sort().values  # (Q,) ranks 0..Q-1 of image 0's negatives
sorted_loss = loss16[0][is_neg[0]].sort(descending=True).values  # (Q,) their losses, hardest first
picked = rank[0][neg16[0]]  # (num_neg,) ranks of the sampled negatives
n_hard = int(hard[0].sum())
fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), layout="constrained")
axes[0].plot(r + 1, sorted_loss, color="0.3", lw=1, label=f"all {len(r)} negatives, hardest first")
axes[0].axvspan(1, n_hard + 1, color="C3", alpha=0.25, label=f"hard-negative mining would take these {n_hard}")
axes[0].scatter(picked + 1, sorted_loss[picked], s=10, color="C0", zorder=3,
                label=f"the {len(picked)} negatives the library sampled")
axes[0].set(xscale="log", yscale="log", xlabel="rank of the negative by its loss, 1 = hardest (log scale)",
            ylabel="objectness BCE", title="One image: sampled negatives lie anywhere in the ranking")
axes[0].legend(fontsize=8, loc="lower left")
bins = torch.linspace(-6, 1, 36)
axes[1].hist(loss16[is_neg].log10(), bins=bins, density=True, histtype="step", color="0.3", lw=1.5, label="all negatives")
axes[1].hist(loss16[neg16].log10(), bins=bins, density=True, alpha=0.6, color="C0", label="sampled (library)")
axes[1].hist(loss16[hard].log10(), bins=bins, density=True, alpha=0.6, color="C3", label="hardest 3 per positive (SSD)")
axes[1].set(xlabel="log10 objectness BCE of a negative anchor", ylabel="density",
            title="16 images: random sampling is not hard mining")
axes[1].legend(fontsize=8)
plt.show()

# %% [markdown]
# The blue histogram sits on the grey one: the library's negatives are a fair sample of all negatives,
# mostly easy ones. Hard mining would train only on the red ones, anchors on object edges and look-alikes.
# Random sampling needs no ranking by loss and does not let a few ambiguous anchors dominate; the cap on
# positives does the balancing.
#
# ## 7. The two losses and how they are normalised
#
# Faster R-CNN's Eq. 1 sums a classification term over the mini-batch and a regression term over the
# positives only (p_i* = 1 for a positive, 0 otherwise):
#
# $$L = \frac{1}{N_{cls}} \sum_i L_{cls}(p_i, p_i^*) + \lambda \frac{1}{N_{reg}} \sum_i p_i^* \, L_{reg}(t_i, t_i^*).$$
#
# What N_cls, N_reg and λ are is where versions differ. The paper: N_cls = 256 (the mini-batch), N_reg ≈
# 2400 (the number of anchor *positions*) and λ = 10. The library does what torchvision and Detectron do:
# the BCE is **averaged over the sampled anchors**, and the smooth-L1 loss (β = 1/9) is **summed over the
# sampled positives and divided by the number of sampled anchors** (positives and negatives), with λ = 1.
#
# > **Common mistake:** reading N_reg as "the number of positives", the anchors the sum runs over. That
# > makes the box term as many times larger as there are sampled anchors per positive; we measure it below.
#
# In training mode the RPN needs targets and returns its two losses. We switch only `model.rpn` to
# training mode and run it on the 16 images after seeding the generator as in section 6: the sampler is
# the only random step, so it draws the same sample. Then we recompute both losses by hand from that sample.

# %%
show_source(RegionProposalNetwork.loss, docstring=False)

# %%
rpn.train()  # training mode: targets required, losses returned
torch.manual_seed(0)
with torch.no_grad():
    _, losses = rpn(batch16, sizes16, features16, targets16)
rpn.eval()
sampled = pos16 | neg16  # (16, A)
regression_targets = rpn.box_coder.encode(torch.cat(matched16), anchors.repeat(16, 1)).view(16, A, 4)  # (16, A, 4)
loss_obj = F.binary_cross_entropy_with_logits(objectness16[sampled], labels16[sampled])  # mean over sampled
box_sum = F.smooth_l1_loss(deltas16[pos16], regression_targets[pos16], beta=1 / 9, reduction="sum")
n_pos, n_sampled = int(pos16.sum()), int(sampled.sum())
print({name: round(float(v), 4) for name, v in losses.items()})
print(f"by hand: BCE over {n_sampled} sampled anchors {loss_obj:.4f} | smooth-L1 summed over {n_pos} positives "
      f"/ {n_sampled} sampled {box_sum / n_sampled:.4f}")
print(f"divided by the {n_pos} positives instead: {box_sum / n_pos:.4f}, {n_sampled / n_pos:.0f} times larger")
n_positions = 16 * A // k  # anchor positions in the 16 images
print(f"the paper's lambda / N_reg, lambda = 10, N_reg = {n_positions} positions: {10 * box_sum / n_positions:.4f}")
two_way = torch.stack([torch.zeros_like(objectness16), objectness16], dim=-1)  # (16, A, 2): logits (0, z)
ce_two_way = F.cross_entropy(two_way[sampled], labels16[sampled].long())  # section 3's softmax view
print(f"2 logits (0, z) + softmax cross-entropy {ce_two_way:.6f} = 1 logit + sigmoid BCE {losses['loss_objectness']:.6f}")
assert torch.allclose(losses["loss_objectness"], loss_obj) and torch.allclose(ce_two_way, loss_obj)
assert torch.allclose(losses["loss_rpn_box_reg"], box_sum / n_sampled)

# %% [markdown]
# The library's normalisation and the paper's λ/N_reg give box losses of a similar size; dividing by the
# positives makes the box term larger by the printed factor, since only a few of the 128 sampled anchors per
# image are positive (a handful of objects, a few positive anchors each).
#
# ## 8. From A scored anchors to 100 proposals
#
# At test time the RPN turns its predictions into proposals (Faster R-CNN Sec. 3.3, with the per-level cut
# of FPN/Detectron): decode every anchor's deltas into a box; keep the `pre_nms_top_n` highest-scoring boxes
# **per level** (300 here); clip them to the image; drop boxes under `min_size` on a side (a score
# threshold, 0.0 here, does nothing); run NMS at IoU 0.7 within each level; keep the `post_nms_top_n` best
# over all levels (100 here). The numbers are a choice: the paper trains its detector on 2000 proposals per
# image, torchvision's FPN model keeps 2000 in training and 1000 at test, `shapes_tiny` 300 and 100 (its
# images have at most 4 objects). The per-level cut gives every level min(300, A_l) slots, so that the many
# small P2 anchors cannot crowd out the few large ones. It protects every level, including those that
# section 2 found only ever negative.
#
# Each step by hand on our image, counting boxes per level as we go. The NMS is the library's from-scratch
# one, called explicitly: the model's default kernels use torchvision's compiled NMS, which gives the same
# result faster, so `rpn(...)` itself must return exactly our boxes.

# %%
show_source(RegionProposalNetwork.propose, docstring=False)

# %%
pre_n, post_n = rpn.pre_nms_top_n, rpn.post_nms_top_n  # eval-mode values
boxes_all = rpn.box_coder.decode(deltas[0], anchors)  # (A, 4) one decoded box per anchor
starts = [sum(num_per_level[:l]) for l in range(5)]
top_idx = torch.cat([objectness[0, s:s + n].topk(min(pre_n, n)).indices + s
                     for s, n in zip(starts, num_per_level)])  # (K,) anchor indices, the best of each level
cand = clip_boxes_to_image(boxes_all[top_idx], image_sizes[0])  # (K, 4) inside the image
big = remove_small_boxes(cand, rpn.min_size)  # (K1,)
cand, cand_anchor = cand[big], top_idx[big]  # (K1, 4), (K1,) each candidate and the anchor it came from
cand_scores, cand_levels = objectness[0, cand_anchor].sigmoid(), level[cand_anchor]  # (K1,), (K1,)
keep = nms_module.batched_nms(cand, cand_scores, cand_levels, rpn.nms_thresh)  # (K2,) the teaching NMS, by score
final = keep[:post_n]  # (N,) indices into the candidates
with torch.no_grad():
    proposals, rpn_losses = rpn(batch, image_sizes, features)  # the model's RPN (torchvision's NMS), eval mode
print(f"pre_nms_top_n = {pre_n}, nms_thresh = {rpn.nms_thresh}, post_nms_top_n = {post_n}")
print("level  anchors  top-k  after NMS  in the final 100  best score")
for l in range(5):
    print(f"P{l + 2}  {num_per_level[l]:9d} {int((level[top_idx] == l).sum()):6d} {int((cand_levels[keep] == l).sum()):10d}"
          f" {int((cand_levels[final] == l).sum()):16d}   {cand_scores[cand_levels == l].max():.3f}")
print(f"all    {A:7d} {len(top_idx):6d} {len(keep):10d} {len(final):16d}")
print(f"{', '.join(f'P{l + 2}' for l in never)} (only ever negative in training): "
      f"{int(torch.isin(level[top_idx], torch.tensor(never)).sum())} of the {len(top_idx)} top-k slots, "
      f"{int(torch.isin(cand_levels[final], torch.tensor(never)).sum())} of the final {len(final)} proposals")
assert len(top_idx) == sum(min(pre_n, n) for n in num_per_level) and rpn_losses == {}
assert torch.equal(proposals[0], cand[final])  # the teaching NMS gives the model's own proposals

# %% [markdown]
# The negatives-only levels keep their top-k slots whatever they score, but NMS and the final cut are by
# score, so with the scores section 2 measured they contribute few or no final proposals: a per-level cut
# protects a level's *candidates*, not its place among the 100.
#
# **NMS**, from scratch in `mrcnn_teach/nms.py`. Greedy NMS sorts the boxes by score and walks down the list,
# keeping a box unless a box kept before it overlaps it by IoU > 0.7; torchvision's compiled CPU kernel
# does exactly that, one box after the other. The library computes the same answer differently. With the boxes
# sorted, let S[i, j] = "IoU(i, j) > 0.7 and i comes before j" (an N×N boolean matrix). Then greedy keeps j
# if and only if no *kept* i has S[i, j], and `greedy_keep` solves that by iterating
# keep ← not any(S[keep], over the rows), starting from "keep everything", until the answer repeats. Since
# S only points forward, keep[j] depends on the boxes before j alone, so the equation has one solution (the
# greedy one), and after t passes the first t boxes are final (the module docstring has the proof).
#
# What "without a loop over boxes" means, exactly:
# - **vectorised:** the IoU matrix and S (`suppression_matrix`, one `box_iou` per block of rows; the blocks
#   only bound memory, and up to 1024 boxes there is one), and each pass, one boolean gather and `any` over
#   the N×N matrix, O(N²) work;
# - **not vectorised:** the sort, and the Python `while` loop over the passes. It makes at most (the number
#   of links in the longest suppression chain, i suppresses j, which suppresses l, ...) + 1 passes: a
#   handful in practice, N in the worst case, which is then O(N³) work against the greedy walk's O(N²). It
#   trades work for fewer sequential steps, which can pay on a GPU, where one big matrix operation costs
#   little more than a small one; on the CPU the model's default, torchvision's walk, is the faster.
#
# `batched_nms` runs it per level by shifting each level's boxes far apart, so that boxes of different
# levels never overlap.
#
# Below the source we count the passes on our candidates, doing what `batched_nms` and `greedy_keep` do,
# with a counter. The first pass keeps only the boxes that no higher-scoring box overlaps, kept or not, so
# it keeps too few; the next gives back the boxes whose only suppressors were themselves suppressed, and
# so on until nothing changes.

# %%
show_source(nms_module.greedy_keep)

# %%
order = torch.sort(cand_scores, descending=True, stable=True).indices  # (K1,)
shift = (cand_levels[order] * (cand.max() + 1))[:, None]  # (K1, 1) batched_nms's offset per level
S = nms_module.suppression_matrix(cand[order] + shift, rpn.nms_thresh)  # (K1, K1) bool: i suppresses j
kept, history = torch.ones(len(order), dtype=torch.bool), []  # (K1,)
while True:  # greedy_keep's loop
    new_kept = ~S[kept].any(dim=0)  # (K1,)
    history.append(int(new_kept.sum()))
    if torch.equal(new_kept, kept):
        break
    kept = new_kept
print(f"{len(order)} candidates, {int(S.sum())} suppressing pairs; boxes kept after each pass: {history}")
print(f"{len(history)} passes of an {len(order)} x {len(order)} matrix (a loop over boxes would take {len(order)} steps)")
assert torch.equal(order[kept], keep)  # the same boxes, in the same order, as batched_nms

# %% [markdown]
# Now what NMS does to one object. The boxes decoded from neighbouring anchors, and from the k anchors of
# one position, land on the same object with slightly different coordinates, so each object collects a
# stack of near-copies. For each object we count the candidates with IoU ≥ 0.5 before NMS, after it, and in
# the final 100. Then the biggest stack's eight best boxes, one per panel in score order, with its score;
# a dropped box is drawn with the kept box that dropped it.

# %%
kept_by_nms = torch.zeros(len(cand), dtype=torch.bool)  # (K1,)
kept_by_nms[keep] = True
on_object = box_iou(gt_boxes, cand) >= 0.5  # (G, K1)
before, after = on_object.sum(dim=1), (on_object & kept_by_nms).sum(dim=1)  # (G,) each
in_final = torch.zeros(len(cand), dtype=torch.bool)  # (K1,)
in_final[final] = True
for g in range(len(gt_boxes)):
    print(f"object {g}: {int(before[g]):3d} candidates at IoU >= 0.5 before NMS, {int(after[g]):2d} after NMS, "
          f"{int((on_object[g] & in_final).sum()):2d} in the final {post_n}")
# who dropped whom: greedy drops j at the first kept, higher-scoring box of its level with IoU > threshold
position = torch.empty_like(order).scatter_(0, order, torch.arange(len(order)))  # (K1,) place in score order
suppresses = ((box_iou(cand, cand) > rpn.nms_thresh) & (cand_levels[:, None] == cand_levels[None, :])
              & (position[:, None] < position[None, :]) & kept_by_nms[:, None])  # (K1, K1) kept i drops j
suppressor = torch.where(suppresses, position[:, None], len(order)).argmin(dim=0)  # (K1,) for dropped boxes
assert torch.equal(suppresses.any(dim=0), ~kept_by_nms)  # every dropped box has a kept suppressor

# %%
g = int(before.argmax())  # the object with the biggest stack
stack = torch.nonzero(on_object[g]).squeeze(1)  # (M,) its candidates
stack = stack[position[stack].argsort()]  # (M,) by decreasing score
number = {int(j): n + 1 for n, j in enumerate(stack)}  # the stack's boxes numbered by score
x1, y1, x2, y2 = gt_boxes[g].tolist()
fig, axes = plt.subplots(2, 4, figsize=(11, 6.4), layout="constrained")
for ax, j in zip(axes.flat, stack[:8].tolist()):
    by = int(suppressor[j])  # for a dropped box: the kept box that dropped it
    draw_boxes(ax, grey, gt_boxes[g:g + 1], color=[gt_colors[g]], linewidth=1.5)
    ax.collections[-1].set_linestyle((0, (4, 3)))
    if not kept_by_nms[j]:
        draw_boxes(ax, None, cand[by:by + 1], color="white", linewidth=1.2)
        ax.collections[-1].set(linestyle=(0, (2, 2)), path_effects=halo)
    draw_boxes(ax, None, cand[j:j + 1], color="yellow", linewidth=2.5)
    ax.collections[-1].set_path_effects(halo)
    fate = "kept" if kept_by_nms[j] else (f"dropped by {f'#{number[by]}' if by in number else 'a box off the object'}"
                                          f" (IoU {box_iou(cand[j:j + 1], cand[by:by + 1])[0, 0]:.2f})")
    ax.set(xlim=(x1 - 14, x2 + 14), ylim=(y2 + 14, y1 - 14))
    ax.set_title(f"#{number[j]}  P{int(cand_levels[j]) + 2}  score {cand_scores[j]:.3f}\n{fate}", fontsize=9,
                 fontweight="normal", color="black" if kept_by_nms[j] else "C3")
fig.legend(handles=[Line2D([], [], color="yellow", lw=2.5, path_effects=halo, label="the candidate"),
                    Line2D([], [], color="white", lw=1.2, ls=(0, (2, 2)), path_effects=halo, label="the kept box that dropped it"),
                    Line2D([], [], color=gt_colors[g], lw=1.5, ls=(0, (4, 3)), label="ground truth")],
           loc="outside lower center", ncol=3, fontsize=9, facecolor="0.6")
fig.suptitle(f"NMS at {rpn.nms_thresh} on object {g}: its {len(stack)} candidates keep {int(after[g])}; "
             f"the best {min(8, len(stack))}, by score")
plt.show()

# %% [markdown]
# NMS thins the stack, but only so far: the threshold 0.7 is deliberately lenient. It removes the closest
# near-copies (the paper: NMS "substantially reduces the number of proposals" without harming the final
# accuracy, Sec. 3.3) and keeps boxes that differ a little, since any of them may be the better start for
# the box head; the second stage cleans up with its own NMS per class at 0.5 (notebook 10). And it runs
# within each level, as torchvision's RPN does (`batched_nms` with the level as category): a box is only
# ever dropped by a box of its own level, so near-copies from two levels can both survive.
#
# The picture matterport's `inspect_model` notebook made popular: where did each proposal start? For each
# object, the best-scoring final proposal that covers it (IoU ≥ 0.5), with the anchor it was decoded from
# and an arrow from the anchor's centre to the proposal's (the centres move by under 3 px in x and in y, so
# the arrows are little more than their heads); the titles give the IoU with the object before and after the
# deltas.

# %%
covering = box_iou(gt_boxes, cand[final]) >= 0.5  # (G, N)
fig, axes = plt.subplots(1, len(gt_boxes), figsize=(3.1 * len(gt_boxes), 3.8), layout="constrained", squeeze=False)
for g, ax in enumerate(axes[0]):
    gx1, gy1, gx2, gy2 = gt_boxes[g].tolist()
    draw_boxes(ax, grey, gt_boxes[g:g + 1], color=[gt_colors[g]], linewidth=1.2)
    ax.collections[-1].set_linestyle((0, (4, 3)))
    ax.set(xlim=(gx1 - 16, gx2 + 16), ylim=(gy2 + 16, gy1 - 16))
    if not covering[g].any():
        ax.set_title(f"object {g}: no proposal\nat IoU >= 0.5 (section 9)", fontsize=9, fontweight="normal")
        continue
    j = final[int(covering[g].nonzero()[0])]  # the best-scoring covering proposal (final is in score order)
    a = anchors[cand_anchor[j]]  # (4,) the anchor it was decoded from
    for box, style in ((a, (0, (1.5, 1.5))), (cand[j], "-")):
        draw_boxes(ax, None, box[None], color="white", linewidth=1.8)
        ax.collections[-1].set(linestyle=style, path_effects=halo)
    c_a, c_p = (a[:2] + a[2:]) / 2, (cand[j, :2] + cand[j, 2:]) / 2  # (2,) each: the two centres
    ax.annotate("", xy=c_p.tolist(), xytext=c_a.tolist(), arrowprops=dict(arrowstyle="->", color="white", lw=1.5, path_effects=halo))
    ax.set(xlim=(gx1 - 16, gx2 + 16), ylim=(gy2 + 16, gy1 - 16))  # (drawing without an image re-fits them)
    iou_a, iou_p = box_iou(torch.stack([a, cand[j]]), gt_boxes[g:g + 1])[:, 0].tolist()
    moved = (c_p - c_a).tolist()  # [dx, dy] of the centre
    ax.set_title(f"object {g}: P{int(level[cand_anchor[j]]) + 2}, {a[2] - a[0]:.0f}-px anchor\n"
                 f"centre moved ({moved[0]:+.1f}, {moved[1]:+.1f}) px\n"
                 f"IoU {iou_a:.2f} -> {iou_p:.2f}, score {cand_scores[j]:.3f}", fontsize=9, fontweight="normal")
fig.legend(handles=[Line2D([], [], color="0.3", lw=1.8, ls=ls, label=name) for ls, name in
                    (((0, (1.5, 1.5)), "anchor"), ("-", "refined proposal"), ((0, (4, 3)), "ground truth"))],
           loc="outside lower center", ncol=3, fontsize=9)
fig.suptitle("Anchor → refined proposal: each object's best-scoring proposal and the anchor it came from")
plt.show()

# %% [markdown]
# The deltas move each anchor's centre by a few pixels and rescale it, and the IoU with the object rises
# from the anchor's to the proposal's (the titles). This is the regression the smooth-L1 term trains.
#
# ## 9. How many proposals does it take? Recall against N
#
# The RPN's job is **recall**: every object should be covered by some proposal, because the second stage can
# only refine and classify what it is given. For the 50 held-out images we let every box that survives NMS
# through (465–577 per image, in score order), look at the first 300, and ask, for each N, which fraction of
# the objects has a proposal among the first N with IoU ≥ 0.5, and ≥ 0.7. With at most 4 objects per image
# we expect recall at 0.5 to saturate after a few dozen proposals; at 0.7 it should stay lower, since that
# asks for a tight box.

# %%
N_MAX = 300
rpn.post_nms_top_n_test = 10**6  # let every box that survives NMS through, for the curve ...
with torch.no_grad():
    proposals50, _ = rpn(batch50, sizes50, features50)  # 50 x (N_i, 4), by decreasing score
rpn.post_nms_top_n_test = cfg["rpn_post_nms_top_n_test"]  # ... and back to the model's 100
best_so_far = []  # per object: the best IoU among the first N proposals, N = 1..300
for props, t in zip(proposals50, targets50):
    run = box_iou(t["boxes"], props[:N_MAX]).cummax(dim=1).values  # (G, min(N_i, 300))
    best_so_far.append(torch.cat([run, run[:, -1:].expand(-1, N_MAX - run.shape[1])], dim=1))  # (G, 300)
best_so_far = torch.cat(best_so_far)  # (objects, 300)
recall = {t: (best_so_far >= t).float().mean(dim=0) for t in (0.5, 0.7)}  # (300,) each
print(f"{len(best_so_far)} objects; boxes per image after NMS: {min(map(len, proposals50))} to {max(map(len, proposals50))}")
for n in (1, 10, 20, 50, 100, 300):
    print(f"N = {n:3d}: recall@0.5 = {recall[0.5][n - 1]:.3f}  recall@0.7 = {recall[0.7][n - 1]:.3f}")
assert best_so_far.shape == (sum(len(t["boxes"]) for t in targets50), N_MAX) and rpn.post_nms_top_n == post_n

# %%
fig, ax = plt.subplots(figsize=(7, 4))
for t, color in ((0.5, "C0"), (0.7, "C4")):
    ax.plot(torch.arange(1, N_MAX + 1), recall[t], color=color, lw=2, label=f"IoU >= {t}")
ax.axvline(post_n, color="0.4", ls="--", lw=1, label=f"the model's {post_n} proposals")
ax.set(xscale="log", ylim=(0, 1.02), xlabel="number of proposals kept per image, N (log scale)",
       ylabel="recall (fraction of objects found)", title="Recall of the trained RPN's proposals, 50 held-out images")
ax.legend()
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# At IoU 0.5 the trained RPN finds nearly every object within a few dozen proposals, so the model's 100 are
# plenty; at 0.7 the curve rises more slowly and stops just short, at 0.98 (3 of 126 objects have no tight
# proposal in the top 100, listed below): the first proposals are often loose, and the box head refines
# each one again (notebook 06), for which IoU 0.5 is what counts as a positive RoI.
#
# **Which objects are lost before stage 2, and why?** The second stage can never detect an object that no
# one of the 100 proposals covers, and it trains on RoIs at IoU ≥ 0.5 (notebook 06). For every object of
# the 50 images that has no proposal at IoU ≥ 0.5 in the top 100, and then for those without a *tight* one
# (IoU ≥ 0.7), we ask: did any anchor's decoded box cover it at that IoU? If so, we follow the best-scoring
# one through the pipeline and name the step that dropped it: the per-level top-k, NMS, or the final top 100.

# %%
with torch.no_grad():
    deltas50 = flatten_head_outputs(*rpn.head(features50))[1]  # (50, A, 4)
lost = {0.5: 0, 0.7: 0}
for t_iou in lost:
    for n, (props, t) in enumerate(zip(proposals50, targets50)):  # props: every box that survived NMS, by score
        decoded = clip_boxes_to_image(rpn.box_coder.decode(deltas50[n], anchors), sizes50[n])  # (A, 4)
        for g in torch.nonzero(box_iou(t["boxes"], props[:post_n]).max(dim=1).values < t_iou).flatten().tolist():
            lost[t_iou] += 1
            box, w_h = t["boxes"][g], (t["boxes"][g, 2:] - t["boxes"][g, :2]).tolist()  # (4,), [w, h]
            iou_d = box_iou(box[None], decoded)[0]  # (A,) IoU of every anchor's decoded box with the object
            print(f"IoU {t_iou}: image {n}, object {g} ({model.class_names[t['labels'][g]]}, {w_h[0]:.0f} x {w_h[1]:.0f} px): "
                  f"best anchor IoU {box_iou(box[None], anchors).max():.2f}, best decoded box IoU {iou_d.max():.2f}")
            if iou_d.max() < t_iou:
                print(f"    no anchor's box reaches IoU {t_iou}: the regression never produced one")
                continue
            a = int(torch.where(iou_d >= t_iou, objectness50[n], -math.inf).argmax())  # best-scoring covering box
            l, score = int(level[a]), float(objectness50[n, a].sigmoid())
            rank = int((objectness50[n, level == l] > objectness50[n, a]).sum())  # 0 = the best of its level
            place = torch.nonzero((props == decoded[a]).all(dim=1)).flatten()  # where it sits after NMS, if it does
            step = (f"cut by the top-{pre_n} of P{l + 2} (it ranks {rank})" if rank >= pre_n else "dropped by NMS"
                    if len(place) == 0 else f"kept by NMS, but {int(place[0]) + 1}th by score: cut by the top {post_n}")
            print(f"    its best-scoring covering box (IoU {iou_d[a]:.2f}, P{l + 2}) scores {score:.4f}: {step}")
    print(f"{lost[t_iou]} of {len(best_so_far)} objects have no proposal at IoU >= {t_iou} in the top {post_n}")
assert all(lost[t] == int((best_so_far[:, post_n - 1] < t).sum()) for t in lost)

# %% [markdown]
# The count at IoU 0.5 is the one that decides what stage 2 can find: the box head takes RoIs from 0.5 up as
# positives and refines them, so an object with a loose proposal is not lost. The list at 0.7 shows the two
# ways a *tight* proposal goes missing. "The regression never produced one": no anchor's decoded box fits
# the object that well, which happens where the best anchor already fits badly (a box far from square meets
# only square anchors here; a hypothesis worth testing with a second aspect ratio). "Dropped by NMS": a
# tight box existed, but a looser box of its level scored higher and overlapped it by more than 0.7. NMS
# ranks by objectness, not by fit, so it keeps the better-*scored* box; the box head has to repair the fit.

# %% [markdown]
# ## Summary
#
# - The RPN head is one 3×3 conv + ReLU and two 1×1 convs, shared by every pyramid level: **k** objectness
#   logits and **4k** deltas per position, k = the level's anchor sizes × aspect ratios (3 × 1 here, 1 × 3
#   in FPN). A two-way softmax per anchor equals a sigmoid of the logit difference, so one logit per anchor
#   and a sigmoid BCE is the same model with half the channels.
# - A level learns only from the anchors the data makes positive. On the shapes, P2 and P3 get nearly all
#   the positives; the largest levels get none, not even an ignored anchor, and learn only "background".
# - Anchors are positive at IoU ≥ 0.7 (torchvision's ≥; the paper says "higher than") **or** as a box's best
#   anchor (ties included, each learning from its own best box), negative below 0.3, ignored in between.
# - Each image trains on a **random** sample (128 here, 256 in the paper) with at most half positives; the
#   sampled negatives are a fair sample of all negatives, unlike SSD's hard-negative mining.
# - Deltas are offsets between **centres** scaled by the anchor's size, and log size ratios; weights
#   (1, 1, 1, 1) for the RPN, (10, 10, 5, 5) for the box head; a clamp at log(1000/16) keeps exp finite.
#   The BCE is averaged over the sampled anchors; the smooth-L1 (β = 1/9) is summed over the positives and
#   divided by the number of *sampled* anchors, as in torchvision.
# - Proposals: decode → top-k per level → clip → drop tiny → NMS 0.7 per level → top-N. The per-level cut
#   gives every level its slots, even levels that never learned to find anything. NMS at 0.7 is lenient on
#   purpose. The from-scratch version solves greedy NMS as a fixed point: a Python loop over a few passes
#   (at most the longest suppression chain + 1), each one vectorised over the whole N×N matrix, instead of
#   a loop over boxes. Recall at IoU 0.5 saturates within the 100 proposals; of the objects still missing,
#   none at 0.5; the 3 at 0.7 are listed with the step that lost them.
#
# ## Exercises
#
# Worked solutions (for teachers) are in `solutions/04_rpn.py`. Each check cell says whether your answer
# is right.
#
# ### Exercise 1 — Predict · about 10 min: label eight anchors by hand
#
# Three ground-truth boxes and eight anchors a0..a7 have these IoUs (`LABEL_IOU` in `mrcnn_teach.exercises.nb04`):
#
# | | a0 | a1 | a2 | a3 | a4 | a5 | a6 | a7 |
# |---|---|---|---|---|---|---|---|---|
# | box 0 | 0.70 | 0.82 | 0.30 | 0.29 | 0.00 | 0.10 | 0.60 | 0.69 |
# | box 1 | 0.10 | 0.40 | 0.05 | 0.00 | 0.55 | 0.55 | 0.00 | 0.00 |
# | box 2 | 0.00 | 0.00 | 0.00 | 0.10 | 0.00 | 0.00 | 0.45 | 0.25 |
#
# With the RPN's rules (0.7 / 0.3 and the best-anchor rule, as the library applies them), work out on paper
# each anchor's label (1 positive, 0 negative, −1 ignored), the box each anchor learns from (−1 if it is
# not positive), and which boxes no anchor learns from (don't run Matcher on it: the point is to predict).
# `my_labels()` returns the three lists.
#
# *Hint:* take the rules in the order `Matcher.__call__` applies them, and watch a6: which box is it the
# best anchor *of*, and which box does it overlap *most*?

# %%
def my_labels():
    """-> (labels [8] of a0..a7 in 1 / 0 / -1, learns_from [8]: box index or -1, orphans: boxes no anchor learns from)."""
    raise NotImplementedError  # your code here


# %%
from mrcnn_teach.exercises.nb04 import check_anchor_labels

check_anchor_labels(my_labels);

# %% [markdown]
# ### Exercise 2 — Derive · about 15 min: a suppression chain
#
# Section 8 counted the passes of the library's NMS loop, and saw that its first pass, "drop every box that
# a higher-scoring box overlaps by more than the threshold, kept or not", keeps too few boxes (that one pass
# alone is YOLACT's "Fast NMS", Bolya et al. 2019, which accepts the difference for speed).
# `one_pass_nms(boxes, scores, iou_threshold)` in `mrcnn_teach.exercises.nb04` is that one pass. Build five
# boxes and their scores on which greedy NMS at 0.7 (`nms_module.nms`) keeps **three** boxes and the one
# pass keeps **one**. Then count on paper how many passes `greedy_keep`'s loop makes on your boxes (the
# last pass, which only finds that nothing changed, counts), and return it too.
#
# *Hint:* two boxes of width w side by side, shifted by d along x, have IoU (w − d)/(w + d). Make each box
# overlap the next one by more than 0.7 and the one after it by less.

# %%
def my_chain():
    """-> (boxes (5, 4) x1y1x2y2, scores (5,), passes: an int)."""
    raise NotImplementedError  # your code here


# %%
from mrcnn_teach.exercises.nb04 import check_suppression_chain

check_suppression_chain(my_chain);

# %% [markdown]
# ### Exercise 3 — Design · about 20 min: one top-k over all levels
#
# Single-map Faster R-CNN ranks all its anchors together; FPN's RPN (and the library) takes the
# `pre_nms_top_n` best of *each* level. Write `my_global_top_k(objectness, num_per_level, pre_nms_top_n)`:
# for (B, A) logits, the (B, K) indices of the K best anchors of each image over all levels at once, with K
# = Σ_l min(pre_nms_top_n, A_l), as many candidates as the per-level cut keeps. The check tests it on
# made-up logits. Then measure, in a cell of your own: put your function in place of the per-level cut in
# section 8's by-hand cell (`top_idx = my_global_top_k(objectness, num_per_level, pre_n)[0]`) and count the
# candidates per level (copy the cell, drop its two asserts, and rerun section 8 afterwards if you go back
# to it). **Predict first:** which levels lose candidates (all of them?), and do the final 100 still cover
# the same objects at IoU ≥ 0.5, and with how many proposals per level? Then defend a choice for COCO, where
# the P6 anchors (512 px in `resnet50_fpn`) do match large objects.
#
# *Hint:* `torch.topk` works along one dimension; which dimension holds all the levels of one image?

# %%
def my_global_top_k(objectness, num_per_level, pre_nms_top_n):
    """(B, A) logits, [A_l] per level, an int -> (B, K) indices of the K best anchors over all levels."""
    raise NotImplementedError  # your code here


# %%
from mrcnn_teach.exercises.nb04 import check_global_top_k

check_global_top_k(my_global_top_k);

# %% [markdown]
# Next: [05 — RoIAlign](05_roi_align.ipynb)
