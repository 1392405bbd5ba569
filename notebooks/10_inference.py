# %% [markdown]
# # 10 — Inference: from proposals to masks in the image
#
# In training, the second stage of Mask R-CNN sees a few hundred *sampled* RoIs per image and returns
# losses. At test time the same heads get the RPN's proposals and must hand back a short list of
# detections, each with a class, a score, a box and a mask in the caller's pixels (He et al. 2017,
# Sec. 3.1, "Inference"). Between the heads' raw outputs and that list sits the **post-processing**,
# a handful of small steps that decide which boxes survive. This notebook runs every step by hand on
# the trained shapes model, counts the boxes after each one, and checks that the result is exactly
# what `model([image])` returns. Then we follow one mask from its 28×28 grid into the image, hunt for
# the model's mistakes on 100 held-out images, and run the `predict` command line.
#
# **You will learn**
# - the box branch's post-processing in order — softmax over K+1 classes, one decoded box per
#   (proposal, class), score threshold 0.05, NMS per class at 0.5, the top-N cut — with the count after each;
# - why the mask branch runs on the final boxes only, and how the predicted class picks one of its per-class masks;
# - how a 28×28 mask is pasted into the image (a bilinear resize into the box, with a one-pixel zero
#   pad) and binarised at 0.5;
# - how to find failures automatically on held-out images, and which stage each kind comes from;
# - `python -m mrcnn_teach predict`: the same pipeline on an image file.
#
# **Builds on:** [04 — RPN](04_rpn.ipynb) (proposals and NMS), [06 — Box and mask heads](06_heads.ipynb)
# (the K+1 scores, the per-class deltas and masks), [08 — The full model](08_full_model.ipynb)
# (transform and forward pass), [09 — Training](09_training.ipynb) (the model we use).
#
# **Run time:** about 15 s on a 2-core CPU (a good part of it is section 9's command line, which starts a
# fresh Python); the first notebook you run also trains the shared shapes model once, a few minutes (700 steps; `make model` trains it ahead);
# later notebooks load it in a second.

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

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torchvision
from matplotlib.lines import Line2D
from PIL import Image
from torch.nn import functional as F

from mrcnn_teach import cli
from mrcnn_teach import masks as masks_module
from mrcnn_teach import nms as nms_module
from mrcnn_teach.boxes import BoxCoder, box_iou, clip_boxes_to_image, remove_small_boxes
from mrcnn_teach.configs import get_config
from mrcnn_teach.datasets import ShapesDataset
from mrcnn_teach.pretrained import checkpoint_path, trained_shapes_model
from mrcnn_teach.roi_heads import RoIHeads
from mrcnn_teach.transform import ImageTransform, resize_boxes
from mrcnn_teach.visualize import class_color, draw_boxes, draw_instances, to_numpy_image

# %% [markdown]
# ## 1. The model, one held-out image, and the knobs of inference
#
# We use the `shapes_tiny` model trained for 700 steps (notebook 09) and image 1 of the held-out set
# (`seed=1`; training used `seed=0`). It has four objects.

# %%
model = trained_shapes_model()  # eval mode, CPU
rh = model.roi_heads  # the RoIHeads of mrcnn_teach/roi_heads.py
class_names = model.class_names  # ('background', 'square', 'circle', 'triangle')
heldout = ShapesDataset(100, seed=1)
IMAGE_INDEX = 1
image, target = heldout[IMAGE_INDEX]  # (3, 128, 128) in [0, 1], dict of boxes / labels / masks
gt_boxes, gt_labels, gt_masks = target["boxes"], target["labels"], target["masks"]
G = len(gt_boxes)
print_shapes(image=image, gt_boxes=gt_boxes, gt_labels=gt_labels, gt_masks=gt_masks)
print("objects:", [class_names[c] for c in gt_labels.tolist()])
assert image.shape == (3, 128, 128) and gt_boxes.shape == (G, 4) and gt_masks.shape == (G, 128, 128)

# %% [markdown]
# Four numbers steer inference, and all of them live in the model's config. The paper's FPN model
# (Sec. 3.1) scores 1000 proposals per image and runs the mask branch on the 100 highest-scoring
# detections; the score threshold 0.05 and the per-class NMS threshold 0.5 are the values of Detectron
# and torchvision (the paper does not print them). Our small model keeps 100 proposals and at most
# **20** detections per image — a shapes image holds at most four objects. The next cell prints both
# configs side by side; the mask threshold 0.5 is not in either, because the model returns soft masks
# and leaves the threshold to whoever reads them (section 7).

# %%
# NBVAL_CHECK_OUTPUT
cfg, paper_cfg = model.config, get_config("resnet50_fpn")
for key in ("rpn_post_nms_top_n_test", "box_score_thresh", "box_nms_thresh", "box_detections_per_img"):
    print(f"{key:<25} shapes_tiny: {cfg[key]:<6} resnet50_fpn: {paper_cfg[key]}")
assert (rh.score_thresh, rh.nms_thresh, rh.detections_per_img) == (
    cfg["box_score_thresh"], cfg["box_nms_thresh"], cfg["box_detections_per_img"])
assert model.rpn.post_nms_top_n == cfg["rpn_post_nms_top_n_test"]  # eval mode: the test-time value

# %% [markdown]
# ## 2. Where the second stage starts: the RPN's proposals
#
# Everything before the RoI heads is as in notebooks 01–04: normalise and batch the image, run the
# backbone with its FPN, and let the RPN propose boxes. We expect a batch of `(1, 3, 128, 128)` (128 is
# already a multiple of 32, so no padding) and **100 proposals** — the test-time `post_nms_top_n`.

# %%
with torch.no_grad():
    batch, image_sizes, _ = model.transform([image])  # (1, 3, 128, 128)
    features = model.backbone(batch)  # [P2, P3, P4, P5, P6]
    proposal_list, _ = model.rpn(batch, image_sizes, features)  # one (N, 4) tensor per image
proposals = proposal_list[0]  # (N, 4)
N = len(proposals)
print_shapes(batch=batch, features=features, proposals=proposals)
print("image_sizes:", image_sizes)
assert batch.shape == (1, 3, 128, 128) and image_sizes == [(128, 128)]
assert [f.shape[-1] for f in features] == [32, 16, 8, 4, 2]
assert proposals.shape == (cfg["rpn_post_nms_top_n_test"], 4) == (100, 4)

# %% [markdown]
# The proposals pile up on the objects, several per object, with stragglers on the background: the RPN
# is tuned for recall, and the second stage is there to sort them out.

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 4.5), layout="constrained")
draw_instances(axes[0], image, gt_boxes, gt_labels, masks=gt_masks, class_names=class_names)
axes[0].set_title(f"held-out image {IMAGE_INDEX}: ground truth")
draw_boxes(axes[1], image, proposals, color="yellow", linewidth=0.7, alpha=0.8)
axes[1].set(xlim=(-0.5, 127.5), ylim=(127.5, -0.5))  # the whole image, as on the left
axes[1].set_title(f"the RPN's {N} proposals")
fig.suptitle("Input of the second stage: proposals (the RoIs at test time)")
plt.show()

# %% [markdown]
# ## 3. The box branch on every proposal
#
# RoIAlign cuts a 7×7 grid out of the pyramid for each proposal, the box head turns it into one vector,
# and the predictor gives **K+1 class logits** and **(K+1)·4 box deltas** per proposal (notebook 06).
# With K = 3 classes plus background we expect `(100, 4)` and `(100, 16)`.

# %%
show_source(RoIHeads.box_logits)

# %%
with torch.no_grad():
    class_logits, box_deltas = rh.box_logits(features, proposal_list, image_sizes)  # (N, K+1), (N, (K+1)*4)
num_classes = class_logits.shape[1]  # K + 1
K = num_classes - 1
print_shapes(class_logits=class_logits, box_deltas=box_deltas)
assert class_logits.shape == (N, K + 1) == (100, 4)
assert box_deltas.shape == (N, (K + 1) * 4) == (100, 16)

# %% [markdown]
# ## 4. Post-processing, one step at a time
#
# `RoIHeads.postprocess_detections` turns these raw outputs into detections. Read it once; below we run
# it line by line.

# %%
show_source(RoIHeads.postprocess_detections)

# %% [markdown]
# ### 4a. Softmax: K+1 probabilities per proposal
#
# The classifier was trained with a cross-entropy over K+1 classes (notebook 06), so its scores are the
# softmax of the logits: every proposal gets one probability per class, background included, and each
# row sums to 1. A proposal is not assigned one class here: all K foreground probabilities go on to
# the next step.

# %%
scores = F.softmax(class_logits, dim=-1)  # (N, K+1)
print_shapes(scores=scores)
print("row sums: min {:.6f}, max {:.6f}".format(scores.sum(1).min(), scores.sum(1).max()))
print("proposals whose most likely class is background:", int((scores.argmax(1) == 0).sum()), "of", N)
assert scores.shape == (N, K + 1)
assert torch.allclose(scores.sum(dim=1), torch.ones(N), atol=1e-5)

# %% [markdown]
# The picture shows all 400 numbers, one column per proposal, sorted by the proposal's best foreground
# probability. On the left the proposals that sit on an object: one class row is bright. Further right
# the background row takes over.

# %%
best_fg = scores[:, 1:].max(dim=1).values  # (N,)
order = best_fg.argsort(descending=True)  # (N,)
fig, ax = plt.subplots(figsize=(12, 2.8), layout="constrained")
im = ax.imshow(scores[order].T.numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=1)
ax.set_yticks(range(K + 1), [f"{k} {name}" for k, name in enumerate(class_names)])
ax.set_xlabel("proposal, sorted by its best foreground probability")
ax.set_ylabel("class")
ax.set_title(f"Softmax over K+1 = {K + 1} classes for each of the {N} proposals (each column sums to 1)")
fig.colorbar(im, ax=ax, label="probability", pad=0.01)
plt.show()

# %% [markdown]
# ### 4b. One box per (proposal, class)
#
# The box predictor regresses a separate box for each class (class-specific regression, Fast R-CNN
# Sec. 2.2), so each proposal is decoded K+1 times, once with each class's four deltas. The deltas
# are undone with the weights (10, 10, 5, 5) that scaled the training targets (notebook 06):
#
# $$\hat x = x_a + \frac{t_x}{10} w_a,\quad \hat y = y_a + \frac{t_y}{10} h_a,\quad
#   \hat w = w_a \exp\!\Big(\frac{t_w}{5}\Big),\quad \hat h = h_a \exp\!\Big(\frac{t_h}{5}\Big),$$
#
# where $(x_a, y_a, w_a, h_a)$ are the proposal's centre and size. `BoxCoder.decode` takes the deltas as
# `(N, K+1, 4)` and returns boxes of the same shape; the log-size change is capped at
# $\log(1000/16)$ before the `exp`.

# %%
show_source(BoxCoder.decode, docstring=False)

# %% [markdown]
# A check by hand first, on numbers we choose: the proposal (20, 30, 60, 70) has centre (40, 50) and
# size 40×40; the deltas (1, −2, 0.5, 0) move the centre by 0.1·40 = 4 px right and 0.2·40 = 8 px up,
# widen the box by $e^{0.1} = 1.1052$ and keep its height. We expect the box
# (40 + 4 − 22.1034, 50 − 8 − 20, 40 + 4 + 22.1034, 50 − 8 + 20) = (21.8966, 22, 66.1034, 62).

# %%
# NBVAL_CHECK_OUTPUT
coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
one_proposal = torch.tensor([[20.0, 30.0, 60.0, 70.0]])  # (1, 4)
one_delta = torch.tensor([[1.0, -2.0, 0.5, 0.0]])  # (1, 4)
decoded = coder.decode(one_delta, one_proposal)  # (1, 4)
print("decoded box:", [f"{v:.4f}" for v in decoded[0].tolist()])
assert decoded.shape == (1, 4)

# %% [markdown]
# Now every proposal and every class at once. After decoding, the boxes are clipped to the image, the
# background column is dropped (a background box is never reported), and each remaining (proposal, class)
# pair becomes one **candidate detection** with that class's probability as its score. With 100
# proposals and K = 3 we expect 300 candidates.

# %%
deltas = box_deltas.reshape(N, K + 1, 4)  # (N, K+1, 4)
class_boxes = rh.box_coder.decode(deltas, proposals)  # (N, K+1, 4)
class_boxes = clip_boxes_to_image(class_boxes, image_sizes[0])  # (N, K+1, 4) inside the 128 x 128 image
class_ids = torch.arange(K + 1).expand(N, K + 1)  # (N, K+1) the class of each column
cand_boxes = class_boxes[:, 1:].reshape(-1, 4)  # (N*K, 4) background column dropped
cand_scores = scores[:, 1:].reshape(-1)  # (N*K,)
cand_labels = class_ids[:, 1:].reshape(-1)  # (N*K,)
print_shapes(class_boxes=class_boxes, cand_boxes=cand_boxes, cand_scores=cand_scores, cand_labels=cand_labels)
assert class_boxes.shape == (N, K + 1, 4)
assert cand_boxes.shape == (N * K, 4) == (300, 4) and cand_scores.shape == cand_labels.shape == (300,)

# %% [markdown]
# One proposal up close: the one with the highest foreground probability. It becomes three candidates,
# each with its own box and score. The boxes differ a little (each class's regressor has its own idea
# of where a square, a circle or a triangle ends); the scores differ a lot.

# %%
p = int(order[0])  # the proposal with the best foreground probability
fig, ax = plt.subplots(figsize=(5.5, 4.5), layout="constrained")
ax.imshow(to_numpy_image(image))
draw_boxes(ax, None, proposals[p][None], color="white", linewidth=1.5)
ax.collections[-1].set_linestyle("--")
handles = [Line2D([], [], color="white", ls="--", lw=1.5, label="proposal")]
for k in range(1, K + 1):
    draw_boxes(ax, None, class_boxes[p, k][None], color=class_color(k), linewidth=2)
    handles.append(Line2D([], [], color=class_color(k), lw=2,
                          label=f"{class_names[k]} box, score {float(scores[p, k]):.2f}"))
x1, y1, x2, y2 = proposals[p].tolist()
ax.set_xlim(max(x1 - 15, 0), min(x2 + 15, 128))
ax.set_ylim(min(y2 + 15, 128), max(y1 - 15, 0))
ax.legend(handles=handles, fontsize=8, loc="lower left", framealpha=0.9)
ax.set_title(f"Proposal {p}: one decoded box per class")
plt.show()
print(f"proposal {p}: background probability {float(scores[p, 0]):.2f}")

# %% [markdown]
# ### 4c. Score threshold 0.05
#
# Most of the 300 candidates are hopeless: a background proposal still gets a small probability for
# every class. Candidates scoring at or below 0.05 are dropped. The heat map above says most columns
# are dark in the three class rows, so we expect well under half to survive. Then boxes that clipping
# squeezed to (almost) nothing are dropped — a box entirely outside the image is clipped to zero width;
# on a 128-px image with proposals inside it we expect none.

# %%
keep = torch.nonzero(cand_scores > rh.score_thresh).squeeze(1)  # (n1,)
boxes1, scores1, labels1 = cand_boxes[keep], cand_scores[keep], cand_labels[keep]  # (n1, 4), (n1,), (n1,)
keep = remove_small_boxes(boxes1, min_size=1e-2)  # (n2,)
boxes2, scores2, labels2 = boxes1[keep], scores1[keep], labels1[keep]  # (n2, 4), (n2,), (n2,)
n1, n2 = len(boxes1), len(boxes2)
print(f"{N * K} candidates -> {n1} score > {rh.score_thresh} -> {n2} not empty")
print("per class after the threshold:", {class_names[k]: int((labels2 == k).sum()) for k in range(1, K + 1)})
assert boxes1.shape == (n1, 4) and scores1.shape == labels1.shape == (n1,)
assert boxes2.shape == (n2, 4) and n2 <= n1 < N * K
assert bool((scores2 > rh.score_thresh).all())

# %% [markdown]
# ### 4d. NMS, per class, at IoU 0.5
#
# Neighbouring proposals on one object decode to nearly the same box, so each object now carries a
# stack of near-copies per class. Greedy NMS (notebook 04) keeps the best box of each stack and drops
# the boxes that overlap a kept one by more than 0.5 — **within each class**. A circle candidate never
# suppresses a square candidate, however much they overlap; each class is treated as its own detector,
# as in Fast R-CNN (Girshick 2015, Sec. 3). The library does all classes in one call by shifting each
# class's boxes into its own region of the plane:

# %%
show_source(nms_module.batched_nms, docstring=False)

# %% [markdown]
# We run the library's from-scratch NMS and check it against torchvision's compiled one (which this
# model uses by default, `kernels="mixed"`). The result is a list of indices, best score first.

# %%
keep_nms = nms_module.batched_nms(boxes2, scores2, labels2, rh.nms_thresh)  # (n3,) by decreasing score
n3 = len(keep_nms)
print(f"{n2} candidates -> {n3} after per-class NMS at {rh.nms_thresh}")
print("per class after NMS:", {class_names[k]: int((labels2[keep_nms] == k).sum()) for k in range(1, K + 1)})
assert keep_nms.shape == (n3,) and n3 <= n2
assert torch.equal(keep_nms, torchvision.ops.batched_nms(boxes2, scores2, labels2, rh.nms_thresh))
assert torch.equal(keep_nms, rh.kernels.batched_nms(boxes2, scores2, labels2, rh.nms_thresh))
assert bool((scores2[keep_nms].diff() <= 0).all())  # sorted by score

# %% [markdown]
# ### 4e. Keep the best `detections_per_img`
#
# Finally the list is cut to the best `detections_per_img`: 100 in the paper, **20** for `shapes_tiny`
# (read from the config above). NMS already sorted by score, so this is a slice. On this image NMS left
# slightly more than 20, so the cut drops the lowest-scoring ones.

# %%
final = keep_nms[: rh.detections_per_img]  # (D,)
det_boxes, det_scores, det_labels = boxes2[final], scores2[final], labels2[final]  # (D, 4), (D,), (D,)
D = len(final)
print(f"{n3} after NMS -> top {rh.detections_per_img}: {D} detections")
print_shapes(det_boxes=det_boxes, det_scores=det_scores, det_labels=det_labels)
assert D == min(rh.detections_per_img, n3)
assert det_boxes.shape == (D, 4) and det_scores.shape == det_labels.shape == (D,)

# %% [markdown]
# The whole funnel in one picture: each box in its class's colour, drawn the more opaque the higher its
# score. From left to right the counts printed above: 300, then the candidates above 0.05, after NMS,
# and the final 20.

# %%
def draw_scored_boxes(ax, boxes, scores_, labels_):
    """Boxes in their class colour, opacity = score, on a pale grey copy of the image."""
    ax.imshow(image.mean(dim=0).numpy(), cmap="gray", vmin=-1, vmax=1.5)  # pale, so every class colour shows
    colours = [(*class_color(c), 0.15 + 0.85 * float(s)) for c, s in zip(labels_.tolist(), scores_)]
    draw_boxes(ax, None, boxes, color=colours, linewidth=1.3, alpha=None)
    ax.set(xlim=(0, 128), ylim=(128, 0))
    ax.set_axis_off()


stages = [(cand_boxes, cand_scores, cand_labels, f"{N * K} candidates\n({N} proposals × {K} classes)"),
          (boxes2, scores2, labels2, f"{n2} with score > {rh.score_thresh}"),
          (boxes2[keep_nms], scores2[keep_nms], labels2[keep_nms], f"{n3} after per-class NMS {rh.nms_thresh}"),
          (det_boxes, det_scores, det_labels, f"{D} kept (top {rh.detections_per_img})")]
fig, axes = plt.subplots(1, 4, figsize=(12, 3.6), layout="constrained")
for ax, (b, s, lab, title) in zip(axes, stages):
    draw_scored_boxes(ax, b, s, lab)
    ax.set_title(title, fontsize=10)
fig.legend(handles=[Line2D([], [], color=class_color(k), lw=2, label=class_names[k]) for k in range(1, K + 1)],
           loc="outside lower center", ncol=K, fontsize=9)
fig.suptitle("The box post-processing funnel (opacity = score)")
plt.show()

# %% [markdown]
# ### 4f. The same as `model([image])`
#
# That was all of `postprocess_detections`. The full model runs the same code, so its boxes, labels and
# scores must be **bit-identical** to ours (the image keeps its size, so mapping the boxes back to the
# caller's pixels — next section — multiplies them by exactly 1).

# %%
with torch.no_grad():
    output = model([image])[0]
print_shapes(**output)
assert torch.equal(output["boxes"], det_boxes)
assert torch.equal(output["labels"], det_labels)
assert torch.equal(output["scores"], det_scores)
print(f"step by step == model([image]): {D} boxes, labels and scores identical")

# %% [markdown]
# **Common mistake: "post-processing is deltas, softmax, per-class NMS".** That list is right as far as
# it goes, but it leaves out the two steps that set how many detections come out: the
# 0.05 score threshold (which removed most of the 300 candidates here) and the `detections_per_img` cut.
#
# ## 5. Back to the caller's pixels: `transform.postprocess`
#
# The heads work in the resized image the transform made (shorter side `min_size`). `postprocess`
# scales the boxes back to the size of the image the caller passed in, and pastes the masks there
# (section 7; we leave the masks out for now). Our image is 128×128 and stays 128×128, so the ratio is 1.
# To see the step do something, suppose the caller had passed a 256×256 image: the transform would
# shrink it to 128×128, and postprocess must **double** every coordinate.

# %%
show_source(ImageTransform.postprocess, resize_boxes)

# %%
detections = [dict(boxes=det_boxes, labels=det_labels, scores=det_scores)]  # no masks yet
as_256 = model.transform.postprocess(detections, image_sizes, [(256, 256)])[0]
print_shapes(**as_256)
print("first box at 128 px:", [f"{v:.2f}" for v in det_boxes[0].tolist()])
print("first box at 256 px:", [f"{v:.2f}" for v in as_256["boxes"][0].tolist()])
assert as_256["boxes"].shape == (D, 4)
assert torch.allclose(as_256["boxes"], 2 * det_boxes)
assert torch.equal(as_256["labels"], det_labels) and torch.equal(as_256["scores"], det_scores)

# %% [markdown]
# ## 6. Masks: the mask branch runs on the final boxes only
#
# In training the mask branch sees the positive sampled RoIs, in parallel with the box branch. At test
# time the paper (Sec. 3.1, Inference) runs it **after** the box post-processing, on the final
# detection boxes only: that is fewer RoIs (here 20 instead of 100 proposals; in the paper 100 instead
# of 1000) and better ones, refined boxes instead of raw proposals, which the paper says makes inference
# both faster and more accurate. The branch predicts K+1 masks per box (one per class; channel 0,
# background, is never trained); the class the **box branch** predicted picks the one that is used.
# The mask branch is never asked which class it is looking at — that is the decoupling of Sec. 3.

# %%
show_source(RoIHeads.predict_masks, RoIHeads.mask_logits)

# %% [markdown]
# By hand: the mask branch on the D = 20 final boxes gives `(20, 4, 28, 28)` logits; picking each
# detection's own class channel and a sigmoid gives `(20, 28, 28)` probabilities, the same as
# `predict_masks`, which returns them as `(20, 1, 28, 28)`.

# %%
with torch.no_grad():
    mask_logits = rh.mask_logits(features, [det_boxes], image_sizes)  # (D, K+1, 28, 28)
    det_masks_28 = rh.predict_masks(features, [det_boxes], [det_labels], image_sizes)[0]  # (D, 1, 28, 28)
rows = torch.arange(D)  # (D,)
mask_probs = mask_logits[rows, det_labels].sigmoid()  # (D, 28, 28) the predicted class's channel
print_shapes(mask_logits=mask_logits, mask_probs=mask_probs, predict_masks=det_masks_28)
assert mask_logits.shape == (D, K + 1, 28, 28) and mask_probs.shape == (D, 28, 28)
assert det_masks_28.shape == (D, 1, 28, 28)
assert torch.equal(mask_probs[:, None], det_masks_28)

# %% [markdown]
# All K+1 channels of the best detection, as probabilities. The kept channel (framed) belongs to the
# class the classifier chose; the others are what the mask branch would have drawn had the box been a
# different class, and channel 0 is untrained noise.

# %%
d = 0  # the best-scoring detection
fig, axes = plt.subplots(1, K + 2, figsize=(12, 2.9), layout="constrained")
x1, y1, x2, y2 = det_boxes[d].tolist()
axes[0].imshow(to_numpy_image(image))
draw_boxes(axes[0], None, det_boxes[d][None], color=class_color(int(det_labels[d])), linewidth=2)
axes[0].set_xlim(x1 - 8, x2 + 8)
axes[0].set_ylim(y2 + 8, y1 - 8)
axes[0].set_title(f"detection {d}: {class_names[int(det_labels[d])]} {float(det_scores[d]):.2f}", fontsize=9)
for k in range(K + 1):
    ax = axes[k + 1]
    im = ax.imshow(mask_logits[d, k].sigmoid().numpy(), cmap="viridis", vmin=0, vmax=1)
    kept = k == int(det_labels[d])
    ax.set_title(f"channel {k}: {class_names[k]}" + ("\n(kept)" if kept else ""), fontsize=9,
                 color="red" if kept else "black")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set(color="red" if kept else "gray", linewidth=3 if kept else 0.5)
for ax in axes[:1]:
    ax.set_xticks([])
    ax.set_yticks([])
fig.colorbar(im, ax=axes[1:].tolist(), label="sigmoid(mask logit)", shrink=0.9)
fig.suptitle("The mask branch predicts one 28×28 mask per class; the box branch's class picks one")
plt.show()

# %% [markdown]
# In the saved run the square and circle channels draw a triangle too: on shapes this simple the mask
# branch has mostly learned "the object inside the box", whatever the channel. The paper likewise finds a
# single class-agnostic mask nearly as good as K class-specific ones (Sec. 4.2: 29.7 vs 30.3 mask AP).
#
# ## 7. Pasting the 28×28 mask into the image
#
# The last step turns each 28×28 mask, which lives in its box's own coordinates, into a mask over the
# whole image. It is usually described as: take the predicted class's mask, resize it with bilinear
# interpolation to the size of the predicted box, put it at the box's place in the image, and binarise
# it at 0.5. **That is right**, and it is what the paper says (Sec. 3.1: the $m \times m$ floating-point
# mask is resized to the RoI size and binarised at 0.5). Three details make it precise:
#
# 1. the box is the final detection box **in the caller's image pixels** (after section 5's
#    `resize_boxes`), not the proposal and not the resized image's box;
# 2. like torchvision, `masks.py` first **pads** the 28×28 mask with a ring of zeros (30×30) and grows
#    the box by 30/28 about its centre, so the 28 inner cells still cover exactly the box and the zero
#    ring falls just outside it; the grown box is cut to whole pixels (truncation), and the padded mask
#    is resized to `x2 − x1 + 1` by `y2 − y1 + 1` pixels. The mask thus fades to 0 across the box edge
#    instead of stopping in a hard step;
# 3. the model returns the pasted **probabilities**; the 0.5 threshold is applied by the reader (the
#    evaluation in notebook 11, `draw_instances`), as in torchvision.
#
# The library pastes all masks with one batched matrix product (a bilinear resize is separable, and its
# weight matrices are zero outside the box):

# %%
show_source(masks_module.paste_masks_in_image, masks_module.expand_boxes)

# %% [markdown]
# The geometry by hand for a box we choose, (10.3, 20.6, 38.3, 48.6): 28×28 px, centre (24.3, 34.6).
# Grown by 30/28 its half-size is 14·30/28 = 15, so the grown box is (9.3, 19.6, 39.3, 49.6), cut to
# whole pixels (9, 19, 39, 49). The padded 30×30 mask is resized to 39 − 9 + 1 = 31 pixels each way
# and placed with its corner at pixel (9, 19).

# %%
# NBVAL_CHECK_OUTPUT
box = torch.tensor([[10.3, 20.6, 38.3, 48.6]])  # (1, 4)
grown = masks_module.expand_boxes(box, (28 + 2) / 28)  # (1, 4)
whole = grown.to(torch.int64)  # (1, 4)
print("grown box:", [f"{v:.4f}" for v in grown[0].tolist()])
print("whole pixels:", whole[0].tolist(), "-> resized to",
      int(whole[0, 3] - whole[0, 1] + 1), "x", int(whole[0, 2] - whole[0, 0] + 1), "pixels")
assert grown.shape == whole.shape == (1, 4)

# %% [markdown]
# Now the real masks: pasting the D probabilities into the 128×128 image must give exactly the masks of
# `model([image])`, and the same numbers as torchvision's one-mask-at-a-time `paste_masks_in_image`
# (up to float rounding, since the library multiplies matrices where torchvision calls `F.interpolate`).

# %%
pasted = masks_module.paste_masks_in_image(det_masks_28, det_boxes, (128, 128))  # (D, 1, 128, 128)
from torchvision.models.detection.roi_heads import paste_masks_in_image as tv_paste_masks

tv_pasted = tv_paste_masks(det_masks_28, det_boxes, (128, 128), padding=1)  # (D, 1, 128, 128)
binary = pasted[:, 0] > 0.5  # (D, 128, 128) the final instance masks
print_shapes(pasted=pasted, binary=binary)
print(f"largest difference to torchvision: {float((pasted - tv_pasted).abs().max()):.1e}")
assert pasted.shape == tv_pasted.shape == (D, 1, 128, 128) and binary.shape == (D, 128, 128)
assert torch.equal(pasted, output["masks"])
assert torch.allclose(pasted, tv_pasted, atol=1e-5)

# %% [markdown]
# What the pad changes. A plain reading of "resize to the box" — interpolate the 28×28 mask straight to
# the whole-pixel box, no pad — spreads the 28 cells over the truncated box plus one pixel, where the
# padded paste spreads them over the exact box; and where the mask touches the box edge, the plain
# version keeps the edge cells at full strength up to the edge. The two disagree by a fraction of a
# pixel, so their 0.5 decisions differ along the object's outline. We paste our best detection both
# ways and count the pixels decided differently; we expect a broken one-pixel line along the outline,
# a few dozen pixels out of several hundred.

# %%
def paste_without_pad(mask_28, box, size):
    """'Resize the 28x28 mask to the box' taken literally: whole-pixel box, no zero ring. (28, 28) -> (h, w)."""
    x1, y1, x2, y2 = box.to(torch.int64).tolist()
    h, w = y2 - y1 + 1, x2 - x1 + 1
    resized = F.interpolate(mask_28[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]  # (h, w)
    out = torch.zeros(size)  # (H, W)
    out[y1:y1 + h, x1:x1 + w] = resized[: size[0] - y1, : size[1] - x1]
    return out


naive = paste_without_pad(det_masks_28[d, 0], det_boxes[d], (128, 128))  # (128, 128)
differs = (naive > 0.5) != binary[d]  # (128, 128)
print(f"detection {d}: {int(binary[d].sum())} mask pixels with the pad, {int((naive > 0.5).sum())} without; "
      f"{int(differs.sum())} pixels decided differently")
assert naive.shape == differs.shape == (128, 128)

# %% [markdown]
# The whole journey of the best detection's mask: its 28×28 probabilities in box coordinates; pasted
# into the image (the detection box solid, the grown box dotted) — still soft, fading across the box
# edge; binarised at 0.5 with the ground-truth outline for comparison; and the rim where skipping the
# pad would change the answer.

# %%
gt_match = int(box_iou(det_boxes[d][None], gt_boxes).argmax())  # the GT object under detection d
x1, y1, x2, y2 = det_boxes[d].tolist()
view = dict(xlim=(x1 - 6, x2 + 6), ylim=(y2 + 6, y1 - 6))
fig, axes = plt.subplots(1, 4, figsize=(12, 3.4), layout="constrained")
im = axes[0].imshow(det_masks_28[d, 0].numpy(), cmap="viridis", vmin=0, vmax=1)
axes[0].set(title="28×28 mask (box coordinates)", xlabel="mask column", ylabel="mask row")
axes[1].imshow(pasted[d, 0].numpy(), cmap="viridis", vmin=0, vmax=1)
draw_boxes(axes[1], None, det_boxes[d][None], color="white", linewidth=1.2)
draw_boxes(axes[1], None, masks_module.expand_boxes(det_boxes[d][None], 30 / 28), color="white", linewidth=1.0)
axes[1].collections[-1].set_linestyle(":")
axes[1].set(title="pasted soft mask", **view)
axes[2].imshow(to_numpy_image(image))
axes[2].imshow(np.where(binary[d].numpy(), 1.0, np.nan), cmap="autumn", alpha=0.6, vmin=0, vmax=1)
axes[2].contour(gt_masks[gt_match].numpy(), levels=[0.5], colors="white", linewidths=1.2)
axes[2].set(title="> 0.5 (white: GT outline)", **view)
axes[3].imshow(differs.numpy(), cmap="gray_r")
axes[3].set(title=f"no pad: {int(differs.sum())} pixels flip", **view)
for ax in axes[1:]:
    ax.set_axis_on()
    ax.set(xlabel="x (image pixels)", ylabel="y (image pixels)")
fig.colorbar(im, ax=axes[:2].tolist(), label="mask probability", shrink=0.85)
fig.suptitle(f"Detection {d} ({class_names[int(det_labels[d])]}): from 28×28 to the image")
plt.show()

# %% [markdown]
# ## 8. A gallery of failures on 100 held-out images
#
# The model was trained for only 700 steps of 8 images, so it still makes mistakes. Instead of looking for them by eye we
# let code find them: run the model on all 100 held-out images, keep the detections a user would see
# (score ≥ 0.5, the default of the `predict` command), binarise their masks at 0.5, and compare with the
# ground truth. Four kinds of failure, and the stage each one points to:
#
# | failure | test | stage to blame |
# |---|---|---|
# | **wrong class** | a detection has box IoU ≥ 0.5 with an object of another class, and < 0.5 with every object of its own class | the classifier |
# | **merged neighbours** | a detection covers ≥ 70% of the boxes of two or more objects but has IoU < 0.5 with each of them | the RPN proposed the group, NMS cannot remove it |
# | **cut-off or bad mask** | right class and box IoU ≥ 0.5, but mask IoU more than 0.2 below box IoU | the box if much of the object lies outside it (the paste cuts the mask off at the box), else the mask head |
# | **missed object** | no detection of any class at IoU ≥ 0.5 | RPN recall if no proposal reaches IoU 0.5, else the classifier's score |
#
# We run the stages separately so that the proposals are kept for the last test. (One batch of 100
# images; the batched convolutions add up in a different order than for one image, so these numbers can
# differ from single-image runs in the last bits.)

# %%
SCORE, IOU = 0.5, 0.5
pairs = [heldout[i] for i in range(len(heldout))]
images100 = [im_ for im_, _ in pairs]
targets100 = [t for _, t in pairs]
with torch.no_grad():
    batch100, sizes100, _ = model.transform(images100)  # (100, 3, 128, 128)
    features100 = model.backbone(batch100)
    proposals100, _ = model.rpn(batch100, sizes100, features100)  # 100 x (100, 4)
    dets100, _ = model.roi_heads(features100, proposals100, sizes100)
    outputs100 = model.transform.postprocess(dets100, sizes100, [tuple(im_.shape[-2:]) for im_ in images100])
assert batch100.shape == (100, 3, 128, 128) and len(outputs100) == 100
assert all(p_.shape == (100, 4) for p_ in proposals100)
assert all(o["masks"].shape[1:] == (1, 128, 128) for o in outputs100)

# %% [markdown]
# Three small helpers (how much of a box lies inside another, the IoU of binary masks, how much of a
# mask lies outside a box) and one loop over the images that applies the table's tests. It prints how
# many of each kind it finds, then splits two of them further. With a classifier this young, expect the
# wrong classes to dominate.


# %%
def covered_fraction(boxes_a, boxes_b):
    """Fraction of each box b's area that lies inside each box a: (A, 4), (B, 4) -> (A, B)."""
    top_left = torch.max(boxes_a[:, None, :2], boxes_b[None, :, :2])  # (A, B, 2)
    bottom_right = torch.min(boxes_a[:, None, 2:], boxes_b[None, :, 2:])  # (A, B, 2)
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=2)  # (A, B)
    area_b = (boxes_b[:, 2:] - boxes_b[:, :2]).prod(dim=1)  # (B,)
    return inter / area_b[None, :]  # (A, B)


def mask_ious(masks_a, masks_b):
    """IoU of every pair of binary masks: (A, H, W), (B, H, W) -> (A, B)."""
    a, b = masks_a.flatten(1).float(), masks_b.flatten(1).float()  # (A, HW), (B, HW)
    inter = a @ b.T  # (A, B)
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter  # (A, B)
    return inter / union.clamp(min=1)  # (A, B)


def outside_fraction(mask, box):
    """Fraction of a binary mask's pixels whose centres lie outside the box: (H, W), (4,) -> float."""
    ys = torch.arange(mask.shape[0]) + 0.5  # (H,) pixel centres
    xs = torch.arange(mask.shape[1]) + 0.5  # (W,)
    inside = ((ys >= box[1]) & (ys <= box[3]))[:, None] & ((xs >= box[0]) & (xs <= box[2]))[None, :]  # (H, W)
    return float((mask & ~inside).sum() / mask.sum().clamp(min=1))


failures = {"wrong class": [], "merged neighbours": [], "cut-off or bad mask": [], "missed object": []}
for i, (out, tgt, props) in enumerate(zip(outputs100, targets100, proposals100)):
    shown = out["scores"] >= SCORE  # (D_i,) what a user sees
    boxes_i, labels_i, scores_i = out["boxes"][shown], out["labels"][shown], out["scores"][shown]
    masks_i = out["masks"][shown][:, 0] > 0.5  # (d, H, W)
    gb, gl, gm = tgt["boxes"], tgt["labels"], tgt["masks"].bool()  # (G, 4), (G,), (G, H, W)
    iou = box_iou(boxes_i, gb)  # (d, G)
    same = labels_i[:, None] == gl[None, :]  # (d, G)
    miou = mask_ious(masks_i, gm)  # (d, G)
    cover = covered_fraction(boxes_i, gb)  # (d, G)
    found_right = ((iou >= IOU) & same).any(dim=0)  # (G,) objects that also have a right-class detection
    for j in range(len(boxes_i)):
        det = dict(image=i, box=boxes_i[j], label=int(labels_i[j]), score=float(scores_i[j]), mask=masks_i[j])
        right = (iou[j] >= IOU) & same[j]  # (G,) objects this detection gets right
        if not right.any() and ((iou[j] >= IOU) & ~same[j]).any():
            g = int((iou[j] * ~same[j]).argmax())
            failures["wrong class"].append({**det, "gt": [g], "severity": det["score"],
                                            "duplicate": bool(found_right[g]),
                                            "note": f"{class_names[det['label']]} {det['score']:.2f} on a "
                                                    f"{class_names[int(gl[g])]}\n(box IoU {float(iou[j, g]):.2f})"})
        many = torch.nonzero(cover[j] >= 0.7).squeeze(1)  # (m,) objects mostly inside this box
        if len(many) >= 2 and float(iou[j].max()) < IOU:
            failures["merged neighbours"].append({**det, "gt": many.tolist(), "severity": det["score"],
                                                  "note": f"{class_names[det['label']]} {det['score']:.2f} over "
                                                          f"{len(many)} objects\n(best box IoU {float(iou[j].max()):.2f})"})
        if right.any():
            g = int((iou[j] * right).argmax())
            gap = float(iou[j, g] - miou[j, g])
            if gap > 0.2:
                failures["cut-off or bad mask"].append({**det, "gt": [g], "severity": gap, "box_iou": float(iou[j, g]),
                                                 "mask_iou": float(miou[j, g]),
                                                 "outside": outside_fraction(gm[g], boxes_i[j])})
    for g in range(len(gb)):
        if not (iou[:, g] >= IOU).any():
            best_proposal = box_iou(props, gb[g][None])[:, 0]  # (N,)
            failures["missed object"].append(dict(image=i, gt=[g], severity=-float(best_proposal.max()),
                                                  proposal=props[int(best_proposal.argmax())],
                                                  proposal_iou=float(best_proposal.max())))

num_objects = sum(len(t["boxes"]) for t in targets100)
num_shown = sum(int((o["scores"] >= SCORE).sum()) for o in outputs100)
print(f"100 images, {num_objects} objects, {num_shown} detections with score >= {SCORE}")
for kind, found in failures.items():
    print(f"  {kind:<20} {len(found):4d}")
duplicates = sum(f["duplicate"] for f in failures["wrong class"])
print(f"  wrong class on an object that also has a right-class detection: {duplicates}, "
      f"on an object with none: {len(failures['wrong class']) - duplicates}")
for f in failures["cut-off or bad mask"]:
    print(f"  bad mask, image {f['image']:2d}: box IoU {f['box_iou']:.2f}, mask IoU {f['mask_iou']:.2f}, "
          f"{100 * f['outside']:3.0f}% of the object outside the box")
missed = failures["missed object"]
by_rpn = sum(m["proposal_iou"] < IOU for m in missed)
print(f"  missed objects with no proposal at IoU >= {IOU} (RPN recall): {by_rpn}; "
      f"with one, but scored < {SCORE} (classifier): {len(missed) - by_rpn}")

# %% [markdown]
# For each kind we draw the worst case: the highest-scoring wrong-class and merged detections, the
# largest gap between box and mask IoU, and the missed object whose best proposal came least close.
# Top row: the ground truth around the spot; bottom row: what the model reported there (for the missed
# object: the best of its 100 proposals, dashed yellow).

# %%
worst = {kind: max(found, key=lambda f: f["severity"]) for kind, found in failures.items() if found}
assert set(worst) == set(failures), "every kind of failure should occur at least once in 100 images"


def region(boxes, margin=10):
    """The (xlim, ylim) that show all `boxes` (n, 4) with a margin, y pointing down."""
    lo = (boxes[:, :2].min(dim=0).values - margin).clamp(min=0)
    hi = (boxes[:, 2:].max(dim=0).values + margin).clamp(max=128)
    return (float(lo[0]), float(hi[0])), (float(hi[1]), float(lo[1]))


fig, axes = plt.subplots(2, 4, figsize=(12, 6.4), layout="constrained")
for col, (kind, f) in enumerate(worst.items()):
    img, tgt = pairs[f["image"]]
    gts = torch.tensor(f["gt"])
    shown_box = f["box"] if "box" in f else f["proposal"]
    xlim, ylim = region(torch.cat([tgt["boxes"][gts], shown_box[None]]))
    draw_instances(axes[0, col], img, tgt["boxes"], tgt["labels"], masks=tgt["masks"], class_names=class_names)
    axes[0, col].set_title(f"{kind}\nimage {f['image']}: ground truth", fontsize=10)
    ax = axes[1, col]
    if "box" in f:
        draw_instances(ax, img, f["box"][None], torch.tensor([f["label"]]), torch.tensor([f["score"]]),
                       f["mask"][None], class_names=class_names)
    else:
        draw_boxes(ax, img, f["proposal"][None], color="yellow", linewidth=1.5)
        ax.collections[-1].set_linestyle("--")
    draw_boxes(ax, None, tgt["boxes"][gts], color="white", linewidth=1.0)
    ax.collections[-1].set_linestyle(":")
    if kind == "wrong class" or kind == "merged neighbours":
        note = f["note"]
    elif kind == "cut-off or bad mask":
        note = (f"{class_names[f['label']]} {f['score']:.2f}: box IoU {f['box_iou']:.2f}, mask IoU "
                f"{f['mask_iou']:.2f}\n{100 * f['outside']:.0f}% of the object outside the box")
    else:
        note = f"best proposal IoU {f['proposal_iou']:.2f}:\nno detection at IoU >= {IOU}"
    ax.set_title(note, fontsize=8.5)
    for a in axes[:, col]:
        a.set_xlim(*xlim)
        a.set_ylim(*ylim)
fig.legend(handles=[Line2D([], [], color="black", ls=":", lw=1, label="GT box of the object(s) concerned"),
                    Line2D([], [], color="gold", ls="--", lw=1.5, label="best proposal (missed object)")],
           loc="outside lower center", ncol=2, fontsize=9)
fig.suptitle(f"The worst failure of each kind on 100 held-out images (detections with score ≥ {SCORE})")
plt.show()

# %% [markdown]
# What each column says, and which stage to blame (the cases are picked by the code, so the words below
# describe the saved run):
#
# - **Wrong class — the classifier.** The box is good (IoU ≥ 0.5 with the object) and so is the mask,
#   but the softmax put most of its mass on the wrong class. It is the most common failure of the
#   700-step model, and nearly all of these detections are second guesses: they sit on an object that
#   is *also* detected with its right class (the two counts printed above). NMS runs per class, so a
#   circle box cannot suppress the square box on the same object (section 4d). Longer training
#   sharpens the classifier; a class-agnostic NMS would only hide the symptom. The mask is still the
#   object's own shape: in the saved run the circle channel draws a square.
# - **Merged neighbours — the box classifier.** A proposal that spans several neighbouring objects is
#   nothing unusual: the RPN proposes many boxes around every group, and most of them are discarded.
#   This one survived because the box head, which sees object-like features inside it, gave it a high
#   class score instead of calling it background; NMS cannot help, since the large box overlaps each
#   object's own, tighter box by less than 0.5. It is rare for this model (the count above).
# - **Cut-off or bad mask — the box, or the mask head.** The box is right (IoU ≥ 0.5) but the mask is
#   not. When a large share of the object lies outside the predicted box, the box is to blame: the paste
#   puts zeros outside the box (section 7), so the mask is cut off at its edge. The printed list gives the
#   share outside the box for every case: in the worst case of the saved run most of the object lies
#   outside a box that barely reaches IoU 0.5, so the box is to blame; where only a few percent lie
#   outside, the mask head itself painted the wrong pixels, usually where one shape hides part of another.
# - **Missed object — RPN recall (or a low score).** No reported detection covers the object. When none of
#   the 100 proposals reaches IoU 0.5 with it, the second stage never had a chance: the heads can only
#   refine and classify what the RPN proposes (notebook 04, recall against N). Most missed objects,
#   though, did have a proposal (the last printed line), and failed at the score threshold of 0.5: no
#   class's probability reached it.
#
# ## 9. The `predict` command line
#
# The package has a command line (`python -m mrcnn_teach`, see `cli.py`) whose `predict` command runs a
# saved checkpoint on image files. Its source is short: read the images, load the model, run it on each
# image, draw the detections with `score >= --score-thresh` (default 0.5), and save `NAME.png` into the
# `--out` folder.

# %%
show_source(cli.cmd_predict)

# %% [markdown]
# We save our held-out image as a PNG in a temporary folder, point the command at the cached checkpoint
# of the trained model (`mrcnn_teach.pretrained.checkpoint_path()`), and run it in a fresh Python process,
# exactly as from a terminal. For each input image it writes two files named after it: `NAME.png`, the
# picture, and `NAME.json`, every detection (box, class, score, mask area) for a program to read. It
# refuses an `--out` folder that holds the input PNG, since the picture would overwrite it; we use a
# separate `preds/` folder. The printed text hides the temporary folder and the cache folder behind
# `<tmp>` and `<cache>`.

# %%
ckpt = checkpoint_path()  # the cached checkpoint trained_shapes_model() loaded
assert ckpt.exists()
pixels = (image.permute(1, 2, 0) * 255).round().to(torch.uint8)  # (128, 128, 3) what a PNG can hold
with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    png, out_dir = tmp / "shapes_1.png", tmp / "preds"
    Image.fromarray(pixels.numpy()).save(png)
    command = [sys.executable, "-m", "mrcnn_teach", "predict", "--checkpoint", str(ckpt), str(png), "--out", str(out_dir)]
    # The notebook's inline plotting backend must not leak into the child process: plain Agg there.
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "MPLBACKEND": "Agg"})

    def hide(text):
        return text.replace(str(tmp), "<tmp>").replace(str(ckpt.parent), "<cache>").strip()

    print("$", hide(" ".join(["python"] + command[1:])))
    print("exit code:", result.returncode)
    print(hide(result.stdout))
    if result.stderr.strip():
        print("stderr:", hide(result.stderr))
    written = sorted(f.name for f in out_dir.iterdir())
    print("files in <tmp>/preds:", written)
    picture = np.asarray(Image.open(out_dir / "shapes_1.png").convert("RGB"))  # (h, w, 3)
    listed = json.loads((out_dir / "shapes_1.json").read_text())
print("shapes_1.json:", {k: listed[k] for k in ("image", "height", "width")}, f"and {len(listed['detections'])} detections;")
for det in listed["detections"][:3]:
    print("   ", det)
assert result.returncode == 0 and written == ["shapes_1.json", "shapes_1.png"]
assert picture.ndim == 3 and picture.shape[2] == 3

# %% [markdown]
# The command saw the PNG's 8-bit pixels, not our float image, so we check it against the model on the
# same pixels: the title of its picture should count as many instances as the next line, and the JSON
# should list every detection the model returns.

# %%
with torch.no_grad():
    from_png = model([pixels.permute(2, 0, 1).float() / 255])[0]
print(f"model on the PNG's pixels: {int((from_png['scores'] >= 0.5).sum())} detections with score >= 0.5")
assert from_png["masks"].shape[1:] == (1, 128, 128)
assert len(listed["detections"]) == len(from_png["scores"])  # the JSON lists every detection, as the model returns them

# %%
fig, ax = plt.subplots(figsize=(6, 6.2), layout="constrained")
ax.imshow(picture)
ax.set_axis_off()
ax.set_title("What `predict` wrote: preds/shapes_1.png", fontsize=11)
plt.show()

# %% [markdown]
# ## Summary
#
# - Test-time post-processing of the box branch, on one image: 100 proposals → K+1 softmax probabilities
#   each → one decoded, clipped box per (proposal, class): 300 candidates → score > 0.05 → NMS per class at
#   IoU 0.5 → the best `detections_per_img` (100 in the paper, 20 for `shapes_tiny`). Done by hand, it is
#   bit-identical to `model([image])`.
# - Per-class NMS treats each class as its own detector: boxes of different classes never suppress each
#   other, which is why one object can come out as a circle *and* a triangle.
# - `transform.postprocess` scales the boxes back to the caller's image size.
# - The mask branch runs on the final boxes only (Sec. 3.1): fewer, better RoIs. It predicts one 28×28
#   mask per class, and the class chosen by the box branch picks the one used.
# - Pasting: resize the 28×28 probabilities bilinearly into the box in the caller's pixels — after padding
#   them with a ring of zeros and growing the box by 30/28, as torchvision does — then threshold at 0.5.
#   The usual description is right; the pad moves the 0.5 boundary by a fraction of a pixel. The model
#   returns the soft masks.
# - On 100 held-out images the 700-step model's most common failure is a second guess under the wrong
#   class (the classifier, and per-class NMS); boxes over merged neighbours (the box classifier), bad masks
#   (a cut-off box, or the mask head) and missed objects (RPN recall, or a low score) also occur.
# - `python -m mrcnn_teach predict --checkpoint CKPT IMAGE... --out DIR` writes one annotated PNG per image.
#
# ## Exercises
#
# Worked solutions are in `solutions/10_inference.py` (for teachers).
#
# **1. Per-class NMS with a loop.** Write `my_per_class_nms(boxes, scores, labels, iou_threshold)` for
# boxes (N, 4), scores (N,), labels (N,): run the library's plain `nms_module.nms` on the boxes of each
# class separately, and return the kept indices into the input (int64), sorted by decreasing score — the
# same answer as `nms_module.batched_nms`, without the coordinate trick.

# %%
def my_per_class_nms(boxes, scores, labels, iou_threshold):
    raise NotImplementedError  # your code here


# %%
from mrcnn_teach.exercises.nb10 import check_decode_class, check_paste_one_mask, check_per_class_nms

check_per_class_nms(my_per_class_nms);

# %% [markdown]
# **2. Decode the boxes of one class.** Write `my_decode_class(box_deltas, proposals, k)`: `box_deltas` is
# the box predictor's output (N, (K+1)·4), `proposals` (N, 4), `k` a class. Return the (N, 4) boxes of
# class k, decoded with the weights (10, 10, 5, 5), with the log-size changes `dw`, `dh` capped at
# $\log(1000/16)$ before the `exp` (as `BoxCoder.decode` does). No clipping.

# %%
def my_decode_class(box_deltas, proposals, k):
    raise NotImplementedError  # your code here


# %%
check_decode_class(my_decode_class);

# %% [markdown]
# **3. Paste one mask and binarise it.** Write `my_paste_one_mask(mask, box, image_size)`: `mask` is one
# 28×28 probability map, `box` (4,) a float box in image pixels, `image_size` (h, w). Return the (h, w)
# boolean instance mask: pad the mask with one ring of zeros, grow the box by 30/28 about its centre, cut
# it to whole pixels with `.to(torch.int64)`, resize the padded mask with
# `F.interpolate(..., mode="bilinear", align_corners=False)` to `x2 − x1 + 1` by `y2 − y1 + 1` pixels, paste
# it at `(x1, y1)` — clipped to the image, since boxes can stick out — and threshold at 0.5.

# %%
def my_paste_one_mask(mask, box, image_size):
    raise NotImplementedError  # your code here


# %%
check_paste_one_mask(my_paste_one_mask);

# %% [markdown]
# Next: [11 — Evaluation](11_evaluation.ipynb)
