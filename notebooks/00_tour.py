# %% [markdown]
# # 00 — A tour of Mask R-CNN
#
# Mask R-CNN (He, Gkioxari, Dollár and Girshick, 2017) finds every object in an image and gives each
# one a class, a box and a pixel mask. It is Faster R-CNN (Ren et al. 2015) with a third branch: next
# to the branch that classifies a region and refines its box, a small fully convolutional network
# predicts the region's mask (paper, Sec. 3 and Figure 1). This notebook follows one image through a
# trained model, stage by stage, so that you have seen the whole machine before the notebooks that
# follow take it apart, one stage each.
#
# **You will learn**
# - the stages of Mask R-CNN, in the order the data flows through them, and which notebook and which
#   `mrcnn_teach` module teaches each one;
# - the shape of every tensor on the way from an image to pasted instance masks;
# - how `MaskRCNN.forward` is nothing but a composition of its submodules: calling them one by one
#   gives exactly the same detections as `model([image])`;
# - what a trained model's feature maps, proposals and detections look like.
#
# **Builds on:** nothing yet; this is the first notebook. You need PyTorch basics (tensors,
# `nn.Conv2d`, a CNN classifier).
#
# **Run time:** about 90 s on a 2-core CPU (86 s measured on a busy one; most of it scores the
# model on 100 held-out images); the first notebook you run also trains the shared shapes model
# once, 6 to 13 minutes on a 2-core CPU (700 steps; `make model` trains it ahead); later notebooks load it in a second.

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

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import FancyBboxPatch, Patch

from mrcnn_teach.boxes import box_iou
from mrcnn_teach.configs import get_config
from mrcnn_teach.datasets import ShapesDataset
from mrcnn_teach.evaluate import evaluate
from mrcnn_teach.fpn import BackboneWithFPN
from mrcnn_teach.model import MaskRCNN
from mrcnn_teach.poolers import assign_levels
from mrcnn_teach.pretrained import trained_shapes_model
from mrcnn_teach.roi_heads import RoIHeads
from mrcnn_teach.rpn import flatten_head_outputs
from mrcnn_teach.visualize import draw_boxes, draw_instances

torch.set_grad_enabled(False)  # this tour only runs the model forward: no gradients anywhere below
setup()

# %% [markdown]
# ## 1. The pipeline at a glance
#
# Mask R-CNN works in two stages (Sec. 3). The **first stage** looks at the whole image: a ResNet
# *backbone* computes feature maps C2–C5, a *Feature Pyramid Network* (FPN) turns them into a pyramid
# P2–P6 with the same number of channels (256 in the paper, 64 here) at every scale, and the *Region
# Proposal Network* (RPN) scores a fixed set of reference boxes (*anchors*) on every level and moves
# the best of them onto objects: the *proposals*. The **second stage** looks at each proposal on its
# own: *RoIAlign* cuts a fixed-size feature grid out of the pyramid for it, a *box head* says which
# class it is and refines its box, and a *mask head* predicts a 28×28 mask for it, one per class.
# Finally the masks are pasted back into the image. During training the same forward pass returns five
# losses instead of detections.
#
# The diagram below is an expanded version of the paper's Figure 1. Each box names the stage, the
# shape of its output for one 128×128 image with the small model we use (`shapes_tiny`: a ResNet-18,
# 64 FPN channels, 4 classes counting the background) and the notebook that teaches it. The two dark
# red arrows matter most: RoIAlign reads its grids from the **FPN maps** (the proposals only say
# where), and at inference the mask head runs on the **box head's final boxes and classes**, D of
# them, not on the proposals (in training it runs, in parallel with the box head, on the positive
# sampled proposals).

# %%
tiny = get_config("shapes_tiny")
k_tiny = len(tiny["anchor_sizes"][0]) * len(tiny["aspect_ratios"][0])  # anchors per position
# name: (centre x, centre y, height, output on one 128x128 image, notebook, group)
STAGES = {
    "image": (0, 0, 1.25, "(3, 128, 128)", "", "io"),
    "transform": (1, 0, 1.25, "normalise, resize, pad\n(1, 3, 128, 128)", "08", "io"),
    "ResNet body": (2, 0, 1.25, "C2–C5, strides 4–32\n(1, 64, 32, 32) …", "01", "backbone"),
    "FPN": (3, 0, 1.25, "P2–P6, 64 channels\n(1, 64, 32, 32) …", "02", "backbone"),
    "RPN head": (4, 0, 1.25, f"objectness (1, {k_tiny}, 32, 32) …\ndeltas (1, {4 * k_tiny}, 32, 32) …", "04", "rpn"),
    "anchors": (4, -1, 1.25, f"{k_tiny} per position\n(A, 4)", "03", "rpn"),
    "proposals": (3, -1, 1.25, "decode, NMS\n(100, 4)", "04", "rpn"),
    "RoIAlign": (2, -1, 1.25, "7×7 for the box head\n14×14 for the mask head", "05", "heads"),
    "box head": (1, -0.7, 0.75, "(100, 4), (100, 16) → D", "06", "heads"),
    "mask head": (1, -1.3, 0.75, "on D boxes: (D, 4, 28, 28)", "06", "heads"),
    "paste masks": (0, -1, 1.25, "boxes, labels, scores\nmasks (D, 1, 128, 128)", "10", "io"),
}
GROUPS = {"io": ("0.85", "input / output"), "backbone": ("#9ecae1", "backbone (C and P maps)"),
          "rpn": ("#fdd0a2", "first stage: RPN"), "heads": ("#a1d99b", "second stage: RoI heads")}
# (from, to, side of `from`, side of `to`, label); the two dark red arrows are the ones a reader most often misses
ARROWS = [("image", "transform", "right", "left", ""), ("transform", "ResNet body", "right", "left", ""),
          ("ResNet body", "FPN", "right", "left", ""), ("FPN", "RPN head", "right", "left", ""),
          ("RPN head", "proposals", "bottom", "top", ""), ("anchors", "proposals", "left", "right", ""),
          ("FPN", "RoIAlign", "bottom", "top", "P2–P5"), ("proposals", "RoIAlign", "left", "right", ""),
          ("RoIAlign", "box head", "left", "right", ""), ("RoIAlign", "mask head", "left", "right", ""),
          ("box head", "mask head", "down", "up", ""), ("box head", "paste masks", "left", "right", ""),
          ("mask head", "paste masks", "left", "right", "")]
KEY_ARROWS = {("FPN", "RoIAlign"), ("box head", "mask head")}


def draw_pipeline(ax, width=2.2, dx=2.7, dy=2.3):
    """Boxes and arrows of the pipeline; x, y in STAGES are in units of (dx, dy)."""
    def edge(name, side):  # a point on the left/right edge, or the bottom/top, of a box
        x, y, h = STAGES[name][0] * dx, STAGES[name][1] * dy, STAGES[name][2]
        return {"left": (x - width / 2 - 0.05, y), "right": (x + width / 2 + 0.05, y),
                "bottom": (x - 0.3, y - h / 2 - 0.05), "top": (x + 0.3, y + h / 2 + 0.05),
                "down": (x - 0.75, y - h / 2 - 0.02), "up": (x - 0.75, y + h / 2 + 0.02)}[side]

    for name, (x, y, h, shape, nb, group) in STAGES.items():
        x, y = x * dx, y * dy
        ax.add_patch(FancyBboxPatch((x - width / 2, y - h / 2), width, h, boxstyle="round,pad=0.04",
                                    facecolor=GROUPS[group][0], edgecolor="0.3"))
        tall = h > 1
        ax.text(x, y + (0.3 if tall else 0.14), name, ha="center", va="center", fontsize=9, fontweight="bold")
        ax.text(x, y - (0.2 if tall else 0.16), shape, ha="center", va="center", fontsize=7)
        if nb:
            ax.text(x + width / 2, y + h / 2, f"nb {nb}", ha="right", va="top", fontsize=7, color="white",
                    bbox=dict(facecolor="0.25", edgecolor="none", pad=1.2))
    for a, b, side_a, side_b, label in ARROWS:
        start, end = edge(a, side_a), edge(b, side_b)
        color = "darkred" if (a, b) in KEY_ARROWS else "0.2"
        ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle="-|>", color=color, lw=1.6))
        if label:
            ax.text((start[0] + end[0]) / 2 + 0.12, (start[1] + end[1]) / 2, label, ha="left", va="center",
                    fontsize=7, color=color)
    ax.text(1 * dx, -1 * dy - 1.2, "training instead returns the losses: RPN (nb 04), "
            "L_cls + L_box (nb 06), L_mask (nb 07); the loop: nb 09", ha="center", va="top", fontsize=8,
            color="C3")
    ax.set_xlim(-width / 2 - 0.2, 4 * dx + width / 2 + 0.2)
    ax.set_ylim(-dy - 1.75, 0.85)
    ax.set_aspect("equal")
    ax.set_axis_off()


fig, ax = plt.subplots(figsize=(12, 4.5))
draw_pipeline(ax)
ax.legend(handles=[Patch(facecolor=c, edgecolor="0.3", label=name) for c, name in GROUPS.values()],
          loc="upper center", bbox_to_anchor=(0.5, 0.0), fontsize=8, ncols=4)
ax.set_title("Mask R-CNN stage by stage (the paper's Figure 1, expanded; all of it: nb 08); D = detections")
plt.show()

# %% [markdown]
# Where each stage lives in the library, and where it is taught:
#
# | stage | what it computes | module | notebook |
# |---|---|---|---|
# | transform | normalise, resize (shorter side 800, longer ≤ 1333; here both 128), pad to a multiple of 32 | `transform.py` | [08 — The full model](08_full_model.ipynb) |
# | ResNet body | C2, C3, C4, C5 at strides 4, 8, 16, 32 | `backbone.py`, `norm.py` | [01 — Backbone](01_backbone.ipynb) |
# | FPN | P2–P5 by a top-down pathway with lateral connections, P6 by subsampling P5 | `fpn.py` | [02 — FPN](02_fpn.ipynb) |
# | anchors | k boxes per position of every level (here 3 sizes × 1 ratio) | `anchors.py` | [03 — Anchors](03_anchors.ipynb) |
# | RPN | objectness and box deltas per anchor; decode, NMS → proposals | `rpn.py`, `boxes.py`, `nms.py`, `matcher.py` | [04 — RPN](04_rpn.ipynb) |
# | RoIAlign | a 7×7 or 14×14 feature grid per RoI, from the level its size selects | `roi_ops.py`, `poolers.py` | [05 — RoIAlign](05_roi_align.ipynb) |
# | heads | class scores, per-class box deltas, per-class 28×28 mask logits | `heads.py`, `roi_heads.py` | [06 — Heads](06_heads.ipynb) |
# | mask loss | per-pixel sigmoid BCE on the ground-truth class's mask | `roi_heads.py`, `masks.py` | [07 — Mask loss](07_mask_loss.ipynb) |
# | full model | the composition, its input/output contract, the configurations | `model.py`, `configs.py` | [08 — The full model](08_full_model.ipynb) |
# | training | the loss of both stages, SGD with warm-up and step decay | `train.py` | [09 — Training](09_training.ipynb) |
# | inference | score threshold, per-class NMS, masks pasted into the image | `roi_heads.py`, `masks.py`, `transform.py` | [10 — Inference](10_inference.ipynb) |
# | evaluation | box and mask AP, as COCO computes it | `evaluate.py` | [11 — Evaluation](11_evaluation.ipynb) |

# %% [markdown]
# ## 2. A trained model and one held-out image
#
# `trained_shapes_model()` returns the `shapes_tiny` Mask R-CNN trained on the built-in shapes data
# (squares, circles and triangles on a coloured background), in eval mode; the cell prints for how
# many steps. It is small: a ResNet-18 body, narrow heads, and K = 3 object classes. Like torchvision,
# the library counts the background as class 0, so `num_classes` is K+1 = 4.
# The next cell prints the parameter count of each of its four parts; the backbone holds most of them.

# %%
from mrcnn_teach.pretrained import DEFAULT_STEPS

model = trained_shapes_model()
print(f"shapes_tiny, trained for {DEFAULT_STEPS} steps")

# %%
# NBVAL_CHECK_OUTPUT
print("classes:", model.class_names)
for name in ("backbone", "rpn", "roi_heads", "transform"):
    part = getattr(model, name)
    print(f"{name:<10} {type(part).__name__:<22} {sum(p.numel() for p in part.parameters()):>10,} parameters")

# %% [markdown]
# The image comes from the held-out split (`seed=1`; training used `seed=0`). Its target holds one
# box `(x1, y1, x2, y2)`, one label and one full-size binary mask per object.

# %%
dataset = ShapesDataset(100, seed=1)
image, target = dataset[12]
print_shapes(image=image, boxes=target["boxes"], labels=target["labels"], masks=target["masks"])
G = len(target["labels"])
assert image.shape == (3, 128, 128)
assert target["boxes"].shape == (G, 4) and target["masks"].shape == (G, 128, 128)

# %%
fig, ax = plt.subplots(figsize=(4, 4))
draw_instances(ax, image, target["boxes"], target["labels"], masks=target["masks"],
               class_names=model.class_names)
ax.set_title(f"held-out image 12: ground truth ({G} objects)")
plt.show()

# %% [markdown]
# `MaskRCNN.forward` is the whole of Figure 1 in five lines: `transform`, `backbone`, `rpn`,
# `roi_heads`, and `transform.postprocess` at inference. The rest of this notebook calls those
# parts one at a time, and inside each part its own submodules, and checks the shapes on the way.

# %%
show_source(MaskRCNN.forward)

# %% [markdown]
# ## 3. Transform: a list of images becomes one batch
#
# The model takes a *list* of `(3, H, W)` images in [0, 1], because real images differ in size. The
# transform normalises each with the ImageNet mean and standard deviation, resizes it so its shorter
# side is `min_size` (800 in the paper, Sec. 3.1; 128 here) unless that would make the longer side
# exceed `max_size` (1333; 128 here), which then wins; so our image keeps its size. It pads the
# batch with zeros to a multiple of 32, so that every pyramid level tiles it exactly. It returns the
# batch and each image's size before padding. [08 — The full model](08_full_model.ipynb) covers it.

# %%
images = [image]
batch, image_sizes, _ = model.transform(images)  # (B, 3, H, W)
B, _, H, W = batch.shape
print_shapes(batch=batch)
print("image_sizes:", image_sizes)
assert batch.shape == (1, 3, 128, 128) and image_sizes == [(128, 128)]

# %% [markdown]
# ## 4. Backbone: C2–C5 (notebook 01)
#
# `model.backbone` is a `BackboneWithFPN` with two parts, `body` (the ResNet) and `fpn`:

# %%
show_source(BackboneWithFPN.forward)

# %% [markdown]
# The ResNet body returns the last feature map of each of its four stages, named C2, C3, C4, C5 after
# ResNet's stages conv2_x … conv5_x (FPN paper, Sec. 3). The stem (a stride-2 7×7 conv and a stride-2
# max-pool) brings the image to stride 4; conv2_x keeps it, and each later stage halves the resolution
# and doubles the channels, so C_l has stride 2^l: for a 128×128 batch we expect 32×32, 16×16, 8×8 and
# 4×4 maps with ResNet-18's 64, 128, 256 and 512 channels. [01 — Backbone](01_backbone.ipynb) builds
# the ResNet and shows what happens when the side is not a multiple of 32.

# %%
# NBVAL_CHECK_OUTPUT
C2, C3, C4, C5 = model.backbone.body(batch)
print_shapes(C2=C2, C3=C3, C4=C4, C5=C5)
for level, (C, channels) in enumerate(zip((C2, C3, C4, C5), (64, 128, 256, 512)), start=2):
    assert C.shape == (B, channels, H // 2**level, W // 2**level)

# %% [markdown]
# ## 5. FPN: P2–P6 (notebook 02)
#
# C2 is sharp but has seen little context; C5 has seen the whole image but at a stride of 32. The FPN
# (Lin et al. 2017, Sec. 3) gives every level both: a 1×1 *lateral* conv brings each C_l to the same
# width (256 in the paper, 64 here), a *top-down* pathway adds the upsampled coarser level to it, and a
# 3×3 conv smooths the sum. P6 is P5 subsampled by 2, used only for the RPN's largest anchors
# (FPN Sec. 4.1). We expect five maps with 64 channels each, at strides 4 to 64.
# [02 — FPN](02_fpn.ipynb) takes it apart.

# %%
# NBVAL_CHECK_OUTPUT
features = model.backbone.fpn([C2, C3, C4, C5])  # [P2, P3, P4, P5, P6]
P2, P3, P4, P5, P6 = features
print_shapes(P2=P2, P3=P3, P4=P4, P5=P5, P6=P6)
d = model.backbone.out_channels
for level, P in enumerate(features, start=2):
    assert P.shape == (B, d, H // 2**level, W // 2**level)
assert d == 64

# %% [markdown]
# What do these maps respond to? Below, for the three finest levels, the channel with the largest
# spatial variance, its magnitude scaled to [0, 1] per map (one shared colour bar). C5, P5 (4×4) and
# P6 (2×2) are left out: at a stride of 32 or 64 a whole shape is one or two cells. On C2, C3 and P2
# the strongest channel follows the shapes and their edges; at stride 16 (C4, P4) a shape is a blob
# of a few cells, and the strongest channel need not be about the shapes at all.

# %%
def strongest_channel(fmap):
    """(1, C, h, w) -> (h, w): the channel with the largest spatial variance, |.| scaled to [0, 1]."""
    fmap = fmap[0]
    channel = fmap.flatten(1).var(dim=1).argmax()
    m = fmap[channel].abs()
    return m / m.max().clamp(min=1e-12)


fig, axes = plt.subplots(2, 4, figsize=(10, 5), layout="constrained")
for row, maps in enumerate([[("C2", C2), ("C3", C3), ("C4", C4)], [("P2", P2), ("P3", P3), ("P4", P4)]]):
    axes[row, 0].imshow(image.permute(1, 2, 0))
    axes[row, 0].set_title("input (128×128)")
    for ax, (name, fmap) in zip(axes[row, 1:], maps):
        im = ax.imshow(strongest_channel(fmap), cmap="magma", vmin=0, vmax=1)
        ax.set_title(f"{name}: {fmap.shape[-2]}×{fmap.shape[-1]}, stride {H // fmap.shape[-2]}")
for ax in axes.flat:
    ax.set_xticks([]), ax.set_yticks([])
fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="|activation| / max of the map")
fig.suptitle("Backbone (top) and FPN (bottom) maps of the trained model: strongest channel per level")
plt.show()

# %% [markdown]
# ## 6. Anchors (notebook 03)
#
# The RPN does not predict boxes from nothing: it scores and adjusts a fixed set of *anchors*, k
# reference boxes centred at every position of every level (Faster R-CNN Sec. 3.1.1). The FPN paper
# gives each level one size (32² to 512² on P2–P6) and three aspect ratios 1:2, 1:1, 2:1, so k = 3
# (FPN Sec. 4.1). `shapes_tiny` keeps k = 3 but spends it differently, because its objects are small
# and nearly square: three sizes per level, a third of an octave apart, and the square ratio only
# ([03 — Anchors](03_anchors.ipynb) designs them from the data). The cell reads them from the model.
# Either way the count is $A = \sum_l h_l\, w_l\, k$ over the five levels.

# %%
# NBVAL_CHECK_OUTPUT
anchor_generator = model.rpn.anchor_generator
feature_sizes = [tuple(P.shape[-2:]) for P in features]
anchors = anchor_generator((H, W), feature_sizes)  # (A, 4) x1y1x2y2 in batch pixels
print("anchor sizes per level (px):", anchor_generator.sizes)
print("aspect ratios per level:    ", anchor_generator.aspect_ratios)
k = len(anchor_generator.sizes[0]) * len(anchor_generator.aspect_ratios[0])  # sizes x ratios
per_level = [h * w * k for h, w in feature_sizes]
print("anchors per position:", k, "  per level:", per_level, "-> A =", sum(per_level))
print_shapes(anchors=anchors)
A = anchors.shape[0]
assert anchor_generator.num_anchors_per_location() == [k] * 5
assert anchors.shape == (A, 4) and A == k * (32**2 + 16**2 + 8**2 + 4**2 + 2**2)

# %% [markdown]
# ## 7. RPN: objectness, deltas, proposals (notebook 04)
#
# One small head, shared by all levels, predicts for every anchor an *objectness* logit (object or
# not) and four *deltas* $(t_x, t_y, t_w, t_h)$ that move and stretch it (Faster R-CNN Sec. 3.1.2):
# a box centre $x = x_a + t_x w_a$ and width $w = w_a e^{t_w}$, the same for $y$ and $h$. So per level we
# expect maps of shape (B, k, h, w) and (B, 4k, h, w).

# %%
objectness_maps, delta_maps = model.rpn.head(features)  # [(B, k, h, w)], [(B, 4k, h, w)]
for (h, w), obj, dlt in zip(feature_sizes, objectness_maps, delta_maps):
    assert obj.shape == (B, k, h, w) and dlt.shape == (B, 4 * k, h, w)
print_shapes(objectness=objectness_maps, deltas=delta_maps)

# %% [markdown]
# The maps are flattened into the anchors' order (level, row, column, anchor), the deltas decoded into
# one box per anchor, and `propose` keeps the best: the top-scoring anchors per level, clipped to the
# image, after non-maximum suppression within each level (NMS, IoU 0.7) and at most `post_nms_top_n`
# (100 here, 1000 in the paper) per image. These are the calls of `RegionProposalNetwork.forward` at
# inference:

# %%
objectness, deltas, num_per_level = flatten_head_outputs(objectness_maps, delta_maps)  # (B, A), (B, A, 4)
boxes_per_anchor = model.rpn.box_coder.decode(deltas.reshape(B * A, 4), anchors.repeat(B, 1)).view(B, A, 4)
proposals, proposal_scores = model.rpn.propose(boxes_per_anchor, objectness, image_sizes, num_per_level)
N = proposals[0].shape[0]
print_shapes(objectness=objectness, deltas=deltas, boxes_per_anchor=boxes_per_anchor,
             proposals=proposals, proposal_scores=proposal_scores)
assert objectness.shape == (B, A) and deltas.shape == (B, A, 4) and boxes_per_anchor.shape == (B, A, 4)
assert proposals[0].shape == (N, 4) and proposal_scores[0].shape == (N,) and N <= model.rpn.post_nms_top_n

# the same as running the whole RPN module
proposals_rpn, _ = model.rpn(batch, image_sizes, features)
assert torch.equal(proposals_rpn[0], proposals[0])

# %% [markdown]
# The proposals come sorted by objectness. The 15 best already hug the shapes, often several per
# object: the second stage will sort them out. (Their colour scale spans only their own scores, so
# that the best and the fifteenth look different.)

# %%
top = 15
scores_top = proposal_scores[0][:top]
fig, axes = plt.subplots(1, 2, figsize=(9, 4.5), layout="constrained")
draw_boxes(axes[0], image, proposals[0], color="yellow", linewidth=0.6, alpha=0.6)
axes[0].set_title(f"all {N} proposals")
norm = plt.Normalize(float(scores_top.min()), float(scores_top.max()))
colors = plt.cm.viridis(norm(scores_top.numpy()))
draw_boxes(axes[1], image, proposals[0][:top], color=colors, linewidth=1.5)
axes[1].set_title(f"top {top} proposals, coloured by objectness")
fig.colorbar(plt.cm.ScalarMappable(cmap="viridis", norm=norm), ax=axes[1],
             shrink=0.8, label="objectness probability (top 15 only)")
fig.suptitle("RPN output on the held-out image")
plt.show()

# %% [markdown]
# ## 8. RoIAlign: a fixed-size grid per proposal (notebook 05)
#
# Every proposal has its own size, but the heads need a fixed input. RoIAlign (Sec. 3) divides the
# box into 7×7 *bins*, never rounding a coordinate, and gives each bin the average of a few
# bilinearly interpolated samples (2×2 per bin here, `sampling_ratio`, printed below; the paper's
# Figure 3 draws four sampling points per bin too). It reads from the pyramid level chosen by the box size (FPN Eq. 1):
# $\ell = \lfloor 4 + \log_2(\sqrt{wh}/224) \rfloor$, clamped to 2–5 (the FPN paper calls the level $k$;
# here $k$ is already the number of anchors per position). A box reads from P2 unless
# $\sqrt{wh} \ge 112$ pixels; the shapes' boxes are at most 67 px on a side (`datasets/shapes.py`),
# so we expect every proposal of a shape to read from P2, and a (N, 64, 7, 7) tensor for the N proposals.
# [05 — RoIAlign](05_roi_align.ipynb) derives it from RoIPool.

# %%
roi_heads = model.roi_heads
show_source(RoIHeads.box_logits, RoIHeads.mask_logits)

# %%
box_features = roi_heads.box_roi_align(features, proposals, image_sizes)  # (N, C, 7, 7)
levels = assign_levels(proposals[0]) + 2  # (N,) pyramid level 2..5 of each proposal
print_shapes(box_features=box_features)
print("bins:", roi_heads.box_roi_align.output_size, " samples per bin:",
      f"{roi_heads.box_roi_align.sampling_ratio}×{roi_heads.box_roi_align.sampling_ratio}")
print("proposals per level P2..P5:", torch.bincount(levels - 2, minlength=4).tolist())
assert box_features.shape == (N, d, 7, 7)

# %% [markdown]
# ## 9. Heads: class, box and mask (notebook 06)
#
# The box head turns each 7×7 grid into a vector (here four 3×3 convs and one fully connected layer of
# 1024; the paper's ResNet-FPN model uses two fully connected layers), and the predictor maps it to
# K+1 = 4 class logits and box deltas for each class: 4K in Fast R-CNN (Sec. 2.3), (K+1)·4 = 16 in
# torchvision and here. The background column of the deltas is never used; torchvision keeps it so
# that class c's deltas sit at columns 4c–4c+3.

# %%
box_vectors = roi_heads.box_head(box_features)  # (N, 1024)
class_logits, box_deltas = roi_heads.box_predictor(box_vectors)  # (N, K+1), (N, (K+1)*4)
num_classes = model.num_classes
print_shapes(box_vectors=box_vectors, class_logits=class_logits, box_deltas=box_deltas)
assert box_vectors.shape == (N, 1024)
assert class_logits.shape == (N, num_classes) and box_deltas.shape == (N, num_classes * 4)

# %% [markdown]
# At inference each (proposal, class) pair is a candidate: softmax score, box decoded with that
# class's deltas, a score threshold (0.05) and per-class NMS (IoU 0.5). What remains are the D
# detections. [10 — Inference](10_inference.ipynb) counts the survivors of each step.

# %%
det_boxes, det_scores, det_labels = roi_heads.postprocess_detections(class_logits, box_deltas, proposals,
                                                                     image_sizes)  # per image (D, 4), (D,), (D,)
D = det_boxes[0].shape[0]
print_shapes(det_boxes=det_boxes, det_scores=det_scores, det_labels=det_labels)
assert det_boxes[0].shape == (D, 4) and det_scores[0].shape == (D,) and det_labels[0].shape == (D,)

# %% [markdown]
# The mask branch runs on these D final boxes, not on the proposals (Sec. 3.1, "Inference"): RoIAlign
# at 14×14, four 3×3 convs (32 channels here, 256 in `resnet50_fpn`), a 2×2 stride-2 deconvolution
# to 28×28 and a 1×1 conv. The paper's mask branch has K outputs, one per object class; the library,
# like torchvision, has K+1, and the background's map is never trained (the loss only reads the
# ground-truth class's map of positive RoIs) and never read. Only the detected class's map is kept,
# through a sigmoid: the class comes from the box branch, the mask branch only says which pixels
# (Sec. 3, decoupling; [07 — Mask loss](07_mask_loss.ipynb) shows why it is trained with a per-pixel sigmoid).

# %%
mask_features = roi_heads.mask_roi_align(features, det_boxes, image_sizes)  # (D, C, 14, 14)
mask_hidden = roi_heads.mask_head(mask_features)  # (D, 32, 14, 14)
mask_logits = roi_heads.mask_predictor(mask_hidden)  # (D, K+1, 28, 28)
rows = torch.arange(D)
mask_probs = mask_logits[rows, det_labels[0]].sigmoid()[:, None]  # (D, 1, 28, 28) of the detected class
print_shapes(mask_features=mask_features, mask_hidden=mask_hidden, mask_logits=mask_logits, mask_probs=mask_probs)
assert mask_features.shape == (D, d, 14, 14) and mask_hidden.shape == (D, 32, 14, 14)
assert mask_logits.shape == (D, num_classes, 28, 28) and mask_probs.shape == (D, 1, 28, 28)
assert torch.equal(mask_probs, roi_heads.predict_masks(features, det_boxes, det_labels, image_sizes)[0])

# %% [markdown]
# ## 10. Postprocess: back to the image (notebook 10)
#
# The boxes are scaled back to the caller's image size (here unchanged) and each 28×28 mask is
# resized into its box and pasted into an empty full-size image. We expect (D, 1, 128, 128)
# probabilities; a pixel belongs to the object where the probability exceeds 0.5.

# %%
detections = [dict(boxes=det_boxes[0], labels=det_labels[0], scores=det_scores[0], masks=mask_probs)]
original_sizes = [tuple(img.shape[-2:]) for img in images]
result = model.transform.postprocess(detections, image_sizes, original_sizes)[0]
print_shapes(**result)
assert result["masks"].shape == (D, 1, 128, 128) and result["boxes"].shape == (D, 4)

# %% [markdown]
# ## 11. The full model gives the same answer (notebook 08)
#
# Everything above was `MaskRCNN.forward` unrolled. Calling the model itself must give bit-identical
# detections. ([08 — The full model](08_full_model.ipynb) makes the same kind of check against
# torchvision's own `maskrcnn_resnet50_fpn`.)

# %%
output = model(images)[0]
for key in ("boxes", "labels", "scores", "masks"):
    assert torch.equal(output[key], result[key]), key
print(f"step by step == model([image]) for boxes, labels, scores and masks ({D} detections)")

# %% [markdown]
# The model keeps every detection scoring above 0.05; a picture usually shows those of at least 0.5.
# On the left the ground truth, on the right the model's detections with their pasted masks. Masks
# are drawn tinted in their class colour; where the shape's own colour shows through (the yellow-green
# pixels at the base of the upper triangle), the predicted mask missed those pixels.

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 4.5), layout="constrained")
draw_instances(axes[0], image, target["boxes"], target["labels"], masks=target["masks"],
               class_names=model.class_names)
axes[0].set_title("ground truth")
draw_instances(axes[1], image, output["boxes"], output["labels"], output["scores"], output["masks"],
               class_names=model.class_names, score_thresh=0.5)
axes[1].set_title("detections with score ≥ 0.5 (mask: probability > 0.5)")
fig.suptitle(f"Mask R-CNN (shapes_tiny, {DEFAULT_STEPS} training steps) on held-out image 12")
plt.show()

# %% [markdown]
# How good is this model? The next cell scores it on all the held-out images with COCO's AP at an
# IoU of 0.5 ([11 — Evaluation](11_evaluation.ipynb) explains the measure), and lists what went
# wrong on this one image: detections scoring ≥ 0.5 that match no ground-truth object of their
# class at IoU ≥ 0.5, and objects that no such detection found.

# %%
metrics = evaluate(model, dataset, batch_size=10)
print(f"on {len(dataset)} held-out images: box AP50 {metrics['bbox']['AP50']:.2f}, "
      f"mask AP50 {metrics['segm']['AP50']:.2f}, mask AP (IoU 0.5:0.95) {metrics['segm']['AP']:.2f}")
shown = output["scores"] >= 0.5  # (D,) the detections drawn above
iou = box_iou(output["boxes"][shown], target["boxes"])  # (D', G)
same_class = output["labels"][shown, None] == target["labels"][None, :]  # (D', G)
hit = (iou >= 0.5) & same_class  # (D', G)
names = model.class_names
for i in torch.nonzero(~hit.any(dim=1)).flatten().tolist():
    best = int(iou[i].argmax())
    print(f"false detection: {names[output['labels'][shown][i]]} {output['scores'][shown][i]:.2f}, on the "
          f"{names[target['labels'][best]]} (IoU {iou[i, best]:.2f})")
for j in torch.nonzero(~hit.any(dim=0)).flatten().tolist():
    print(f"missed: the {names[target['labels'][j]]}")
print(f"this image: {int(hit.any(dim=1).sum())} of {int(shown.sum())} shown detections right, "
      f"{int(hit.any(dim=0).sum())} of {G} objects found")

# %% [markdown]
# NMS runs per class, so a box of one class never suppresses a box of another class on the same
# object: a model unsure between circle and square may report both. (This is a property of the
# method; nothing above prints it for this image.)
# [06 — Heads](06_heads.ipynb) shows how the class scores are made.
#
# From the anchors to the picture, each stage throws most of its input away. The funnel below counts
# what this image kept at each step; the arithmetic of the first two steps is notebook 04's.

# %%
pre_nms = sum(min(model.rpn.pre_nms_top_n, n) for n in num_per_level)  # top-k per level, before NMS
candidates = int((class_logits.softmax(dim=1)[:, 1:] > roi_heads.score_thresh).sum())  # (proposal, class) pairs, strict as in postprocess
funnel = {"anchors": A, "top-k per level\n(before NMS)": pre_nms, "proposals\n(after NMS)": N,
          "(proposal, class)\nabove score 0.05": candidates, "detections\n(after class NMS)": D,
          "shown (score ≥ 0.5)": int(shown.sum())}
assert A > pre_nms >= N and N * (num_classes - 1) >= candidates >= D >= int(shown.sum())
fig, ax = plt.subplots(figsize=(8, 3.2), layout="constrained")
bars = ax.barh(list(funnel)[::-1], list(funnel.values())[::-1], color="#fdd0a2", edgecolor="0.3")
ax.bar_label(bars, padding=3, fontsize=8)
ax.set_xscale("log")
ax.set_xlim(1, 3 * A)
ax.set_xlabel("boxes kept (log scale)")
ax.set_title("From anchors to detections on held-out image 12")
plt.show()

# %% [markdown]
# ## 12. Training: the same pass returns losses (notebooks 04, 06, 07, 09)
#
# In train mode `model(images, targets)` runs the same stages but returns the multi-task loss of
# Sec. 3, $L = L_{cls} + L_{box} + L_{mask}$, plus the RPN's two terms: five scalars whose sum is
# minimised. The RPN labels anchors against the ground truth (notebook 04), the RoI heads sample
# proposals and score them (notebook 06), and the mask loss compares 28×28 logits with the ground
# truth mask cut out of each positive RoI (notebook 07); [09 — Training](09_training.ipynb) runs the
# loop that minimises them. We switch to train mode for one call and back.

# %%
model.train()
losses = model(images, [target])
model.eval()
print(sorted(losses))
assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"}
assert all(loss.shape == () for loss in losses.values())

# %% [markdown]
# ## Summary
#
# - Mask R-CNN = ResNet body (C2–C5) → FPN (P2–P6) → RPN on anchors (proposals) → RoIAlign →
#   box head (class, box) in parallel with a mask head (one 28×28 mask per class) → paste.
# - For a 128×128 image: C2–C5 are 32², 16², 8², 4² at strides 4–32; P2–P6 add P6 at stride 64;
#   k anchors per position (sizes × ratios of the level; §6 prints them) give A anchors; at most 100
#   proposals; 7×7 bins (of 2×2 samples) for the box head, 14×14 for the mask head, 28×28 mask logits
#   per class (K+1 of them, background included), the detected class's pasted to 128×128.
# - RoIAlign reads the FPN maps at the proposals' boxes; the mask head runs on the box head's D final
#   detections at inference, on the positive proposals in training.
# - `MaskRCNN.forward` is a plain composition: calling `transform`, `backbone.body`, `backbone.fpn`,
#   the RPN's head, anchors, decoding and `propose`, the RoI heads' poolers, heads and predictors,
#   and `transform.postprocess` by hand gives bit-identical output.
# - In train mode the same pass returns five losses instead of detections.

# %% [markdown]
# ## Exercises
#
# Worked solutions, for teachers, are in `solutions/00_tour.py`. Each check cell prints whether your
# answer agrees with the library on inputs you did not choose.
#
# ### Exercise 1 — Predict · about 10 min: the shapes of a bigger variant
#
# Take `shapes_tiny` and change three things: 128 FPN channels, three aspect ratios (1:2, 1:1, 2:1) on
# top of its three sizes per level, and 5 object classes. Feed it a batch of **two** images already
# padded to **(H, W) = (96, 160)**, with 100 proposals per image and 7 detections in all. Work out on
# paper, without running the model, the shapes of: P6; the RPN objectness map on P2 and its delta map
# on P6; the number of anchors per image; the class logits and box deltas of the box predictor; the
# mask logits. Return them from `predict_shapes()` as a dict with the keys `"P6"`, `"objectness_P2"`,
# `"deltas_P6"`, `"anchors"` (an int), `"class_logits"`, `"box_deltas"`, `"mask_logits"`.
#
# *Hint:* 96/32 = 3 is odd: what does a stride-2 subsampling do to a side of 3? The
# second stage puts the RoIs of both images in one batch, and every "per class" count includes the
# background.

# %%
def predict_shapes():
    raise NotImplementedError  # your code here


# %%
from mrcnn_teach.exercises.nb00 import check_variant_shapes

check_variant_shapes(predict_shapes);

# %% [markdown]
# ### Exercise 2 — Debug · about 15 min: deltas that are right with one anchor per position
#
# The RPN head's delta map has 4k channels per level; `flatten_head_outputs` lays them out in the
# anchors' order (level, row, column, anchor), one row of 4 deltas per anchor. The copy below gives
# the right shapes, and even the right values for a model with k = 1, but with k = 3 it pairs the
# anchors with the wrong deltas. Find the bug, explain what it mixes up, and write the fixed
# `my_flatten` (same arguments, same three results) without calling `flatten_head_outputs`: the
# check compares your answer with it, so calling it proves nothing.
#
# *Hint:* build a delta map whose channel c holds the number c everywhere and flatten it: the first
# row should read 0, 1, 2, 3. Which channel holds $t_x$ of anchor 1?

# %%
def buggy_flatten(objectness_maps, delta_maps):
    """[(B, k, h, w)], [(B, 4k, h, w)] -> objectness (B, A), deltas (B, A, 4), [h*w*k] per level (has a bug)."""
    flat_objectness, flat_deltas, num_per_level = [], [], []
    for obj, dlt in zip(objectness_maps, delta_maps):
        B, k, h, w = obj.shape
        flat_objectness.append(obj.permute(0, 2, 3, 1).reshape(B, h * w * k))  # (B, h*w*k)
        flat_deltas.append(dlt.view(B, 4, k, h, w).permute(0, 3, 4, 2, 1).reshape(B, h * w * k, 4))  # (B, h*w*k, 4)
        num_per_level.append(h * w * k)
    return torch.cat(flat_objectness, dim=1), torch.cat(flat_deltas, dim=1), num_per_level


# %%
def my_flatten(objectness_maps, delta_maps):
    raise NotImplementedError  # your code here


# %%
from mrcnn_teach.exercises.nb00 import check_flatten

check_flatten(my_flatten);

# %% [markdown]
# ### Exercise 3 — Derive · about 20 min: the tour for two images of different sizes
#
# Sections 3–10 unrolled the model for one 128×128 image. Write `detect_by_hand(model, images)` for
# any list of images and show that it returns what `model(images)` returns. The check runs it on a
# freshly built `shapes_tiny` and two images, 128×128 and 64×96 (which the transform resizes),
# and forbids calling `model`, `model.rpn` or `model.roi_heads` as a whole: call their parts, as the
# tour did (`model.roi_heads.box_logits` and `predict_masks` may be used).
#
# *Hint:* which of the tour's tensors are shared by all images of a batch, and which come as one per
# image? Into which size must each image's masks be pasted?

# %%
def detect_by_hand(model, images):
    raise NotImplementedError  # your code here


# %%
from mrcnn_teach.exercises.nb00 import check_unrolled

check_unrolled(detect_by_hand);

# %% [markdown]
# Next: [01 — Backbone](01_backbone.ipynb)
