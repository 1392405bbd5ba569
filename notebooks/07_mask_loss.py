# %% [markdown]
# # 07 — Mask loss: per-class sigmoid vs softmax
#
# Notebook 06 ended with, for each positive RoI, the mask branch's 28×28 logits (one map per class) and
# the target, the RoI's GT mask resampled to 28×28. This notebook is about the loss that
# compares them, $L_{mask}$ (He et al. 2017, Sec. 3), and about the design decision hidden in it: every
# class gets its own independent binary mask, and only the GT class's mask is trained. We compute the loss
# by hand, look at the gradient each channel receives, and compare it with the alternative the paper
# rejected — a softmax over the classes at each pixel.
#
# **You will learn**
# - $L_{mask}$: the mean binary cross-entropy over the $m \times m$ pixels of the GT class's channel only,
#   computed by hand and matched to the library;
# - why, under this loss, every other channel gets exactly zero gradient from an RoI, while a per-pixel
#   softmax sends gradient into every channel and makes the classes compete;
# - two common mistakes about a softmax over the mask channels: the softmax loss is perfectly
#   well-defined (the paper trains it: 24.8 vs 30.3 mask AP), and it is not semantic segmentation;
# - what decoupling looks like in a trained model: a mask for every class, each following the object;
# - class-agnostic masks (N×1×28×28), and what per-class masks cost in memory for 3, 80 and 1000 classes —
#   in a naive head, and in one that computes only the GT class's channel.
#
# **Builds on:** [06 — Box and mask heads](06_heads.ipynb) (mask head, mask targets),
# [05 — RoIPool vs RoIAlign](05_roi_align.ipynb) (how the targets are resampled, and the `aligned` flag).
#
# **Run time:** about 25 s on a 2-core CPU; the first notebook you run also trains the shared shapes
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
from mrcnn_teach.notebook import largest_tensor, setup, show_source, print_shapes

setup()

import functools

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Patch
from torch.nn import functional as F

from mrcnn_teach import build_maskrcnn, heads, masks, roi_heads, roi_ops
from mrcnn_teach.configs import get_config
from mrcnn_teach.datasets import ShapesDataset
from mrcnn_teach.pretrained import trained_shapes_model
from mrcnn_teach.visualize import class_color, draw_boxes, to_numpy_image

# %% [markdown]
# ## 1. $L_{mask}$: binary cross-entropy on one channel
#
# For a positive RoI whose GT class is $k$, the mask branch outputs logits $x^c_{ij}$ for every class $c$
# and pixel $(i, j)$ of the $m \times m$ grid ($m = 28$), and the target is $y_{ij} \in [0, 1]$. The paper
# (Sec. 3) applies a per-pixel sigmoid $\sigma$ and defines $L_{mask}$ as the average binary cross-entropy
# **on the $k$-th mask only** — the other $K - 1$ masks of that RoI do not enter the loss:
#
# $$L_{mask} = -\frac{1}{m^2} \sum_{i,j} \Big[\, y_{ij} \log \sigma(x^k_{ij}) + (1 - y_{ij}) \log\big(1 - \sigma(x^k_{ij})\big) \Big].$$
#
# The library averages this over all positive RoIs of the batch as well, i.e. over $P \cdot m^2$ terms.
# `mask_loss` makes the targets from the RoIs, then calls `sigmoid_mask_loss(mask_logits, targets, labels)`,
# the formula itself. Its docstring already argues the sigmoid-vs-softmax question we work through below.

# %%
show_source(roi_heads.mask_loss, roi_heads.sigmoid_mask_loss)

# %% [markdown]
# ## 2. The loss by hand on a tiny example
#
# Two RoIs, K+1 = 3 channels (background, class 1, class 2 — the library keeps a background channel that
# is never used), a 4×4 mask instead of 28×28, logits drawn with a fixed seed. RoI 0 is of class 1, RoI 1
# of class 2, and we write their binary targets by hand. The computation: pick channel $k$ of each RoI,
# apply the sigmoid, evaluate the formula at each pixel, average. We print RoI 0's 16 per-pixel losses,
# each RoI's mean and the overall mean, and expect PyTorch's `binary_cross_entropy_with_logits` on the
# picked channels — the last line of `sigmoid_mask_loss` — to give the same overall number.

# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(0)
logits = torch.randn(2, 3, 4, 4)  # (P, K+1, m, m) mask logits of 2 positive RoIs
labels = torch.tensor([1, 2])  # (P,) the GT class of each RoI
targets = torch.tensor([[[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]],  # RoI 0: a square
                        [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]]).float()  # RoI 1: a triangle

x = logits[torch.arange(2), labels]  # (P, m, m) channel k of each RoI; the other channels are not read
p = torch.sigmoid(x)  # (P, m, m)
per_pixel = -(targets * torch.log(p) + (1 - targets) * torch.log(1 - p))  # (P, m, m)
by_hand = per_pixel.mean()  # () mean over P * m * m = 32 terms
library_last_line = F.binary_cross_entropy_with_logits(x, targets)  # ()
assert x.shape == p.shape == per_pixel.shape == targets.shape == (2, 4, 4) and by_hand.shape == ()
assert torch.allclose(by_hand, library_last_line)
print("RoI 0, per-pixel BCE of channel 1:")
print(per_pixel[0])
print(f"mean per RoI: {per_pixel[0].mean():.4f} (RoI 0), {per_pixel[1].mean():.4f} (RoI 1)")
print(f"L_mask by hand:                        {by_hand:.4f}")
print(f"binary_cross_entropy_with_logits(x, y): {library_last_line:.4f}")

# %% [markdown]
# Now the whole `mask_loss`, targets included. In training it does not receive the 4×4 targets; it makes
# them itself from the image's GT masks and the RoIs (`project_masks_on_boxes`, notebook 06). We draw the
# same two objects as 16×16 GT masks, give each RoI a box around its object, and let the library do
# everything. Its targets come out soft (values between 0 and 1) where a 4×4 bin straddles the object's
# border; the formula is the same with soft $y$. We expect the library's loss to equal our by-hand
# formula applied to those targets.

# %%
# NBVAL_CHECK_OUTPUT
r, c = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")  # (16, 16) row, column
gt_masks = torch.stack([(r >= 4) & (r < 12) & (c >= 4) & (c < 12),  # GT 0: a square
                        (r >= 4) & (r < 14) & (c >= 2) & (c - 2 <= r - 4)]).to(torch.uint8)  # GT 1: a triangle
gt_labels = torch.tensor([1, 2])  # (G,)
rois = torch.tensor([[2.0, 2.0, 14.0, 14.0], [2.0, 4.0, 14.0, 14.0]])  # (P, 4) one box around each object
matched = torch.tensor([0, 1])  # (P,) RoI n learns from GT matched[n]

loss_library = roi_heads.mask_loss(logits, [rois], [gt_masks], [gt_labels], [matched])  # ()
soft_targets = masks.project_masks_on_boxes(gt_masks, rois, matched, 4)  # (P, 4, 4)
y = soft_targets
loss_by_hand = -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()  # () same x, p as above
assert gt_masks.shape == (2, 16, 16) and soft_targets.shape == (2, 4, 4) and loss_library.shape == ()
assert torch.allclose(loss_library, loss_by_hand)
print("targets made by the library (RoIAlign of each GT mask, 4x4):")
print(soft_targets.numpy().round(2))
print(f"mask_loss (library): {loss_library:.4f}    by hand on these targets: {loss_by_hand:.4f}")

# %% [markdown]
# The square sits in the middle of its box, yet its target (printed above) is lopsided: 0.25 in the
# top-left corner, 0.03 in the bottom-right. That is not a bug but RoIAlign's `aligned=False`
# ([05](05_roi_align.ipynb), section 7), which torchvision and this library use to crop the targets: it
# puts pixel $i$'s value at position $i$, not at the pixel's centre $i + \tfrac12$, so each sample reads
# the mask half a pixel right of and below where it sits, and the object comes out shifted half a pixel
# up and left in its target. We crop the same square with `aligned=True` and expect a symmetric target.

# %%
# NBVAL_CHECK_OUTPUT
crops = {a: masks.project_masks_on_boxes(gt_masks[:1], rois[:1], matched[:1], 4,
                                         roi_align=functools.partial(roi_ops.roi_align, aligned=a))[0]
         for a in (False, True)}  # (4, 4) each: the square's target
for a, crop in crops.items():
    print(f"aligned={a}: top-left corner {crop[0, 0]:.3f}, bottom-right corner {crop[-1, -1]:.3f}")
    print(crop.numpy().round(3))
assert torch.equal(crops[False], soft_targets[0])  # the library's targets are the aligned=False crop
assert torch.allclose(crops[True], crops[True].flip(0, 1))  # symmetric under a half-turn
assert not torch.allclose(crops[False], crops[False].flip(0, 1))

# %% [markdown]
# With `aligned=True` the corners are equal (one of each corner bin's 3×3 samples falls on the square)
# and so are the edges. The library keeps torchvision's `aligned=False` for the targets, so that its
# trained weights mean the same as torchvision's; the shift is half a pixel of the image, whatever the
# RoI's size.

# %% [markdown]
# ## 3. Which channels get a gradient?
#
# Differentiate $L_{mask}$ with respect to a logit. The sigmoid and the cross-entropy combine into the
# simplest possible form, for the GT channel $k$:
#
# $$\frac{\partial L_{mask}}{\partial x^k_{ij}} = \frac{\sigma(x^k_{ij}) - y_{ij}}{P\,m^2}, \qquad
#   \frac{\partial L_{mask}}{\partial x^c_{ij}} = 0 \quad \text{for } c \ne k.$$
#
# The other channels do not appear in the loss, so their gradient is not small — it is exactly zero.
#
# The alternative is the FCN recipe for semantic segmentation: a **softmax over the channels at each
# pixel** and a multinomial cross-entropy. For a per-RoI mask that means: each pixel of RoI $n$ gets a
# class target — the RoI's class $k$ where the target mask is on, background (channel 0) where it is
# off — and the loss is $-\frac{1}{P m^2} \sum_{n,i,j} \log \mathrm{softmax}(x_{n,ij})_{t_{n,ij}}$.
# This is our reading of the paper's "softmax" ablation; the paper does not spell out how it treats
# background pixels. Its gradient reaches **every** channel:
#
# $$\frac{\partial L}{\partial x^c_{ij}} = \frac{\mathrm{softmax}(x_{ij})_c - [c = t_{ij}]}{P\,m^2}
#   \quad \text{for all } c.$$
#
# Every channel that is not the target is pushed *down* in proportion to its probability: the classes
# compete for each pixel. The library has this loss as an option, `mask_loss="softmax"` in the config,
# for the measured ablation of notebook 12; here is its source:

# %%
show_source(roi_heads.softmax_mask_loss)

# %% [markdown]
# It takes the same arguments as `sigmoid_mask_loss`, `(mask_logits, targets, labels)`, and `mask_loss`
# calls one or the other. We let autograd confirm both formulas on the tiny example: with BCE we expect
# non-zero gradient sums only in channel 1 for RoI 0 and channel 2 for RoI 1; with softmax, in all three.

# %%
# NBVAL_CHECK_OUTPUT
grads = {}
for name, loss_fn in (("sigmoid BCE", roi_heads.sigmoid_mask_loss), ("softmax CE", roi_heads.softmax_mask_loss)):
    x_ = logits.clone().requires_grad_(True)  # (P, K+1, m, m)
    loss = loss_fn(x_, targets, labels)
    loss.backward()
    grads[name] = x_.grad  # (P, K+1, m, m)
    assert x_.grad.shape == (2, 3, 4, 4)
    print(f"{name}: loss {loss.item():.4f}; sum of |gradient| per channel (background, class 1, class 2)")
    for n in range(2):
        sums = x_.grad[n].abs().sum(dim=(1, 2))  # (K+1,)
        print(f"    RoI {n} (class {int(labels[n])}):  " + "  ".join(f"{s:.4f}" for s in sums.tolist()))

# the closed forms above, checked against autograd
P, m = 2, 4
expected_bce = torch.zeros_like(logits)
expected_bce[torch.arange(2), labels] = (torch.sigmoid(x) - targets) / (P * m * m)
class_map = torch.where(targets >= 0.5, labels[:, None, None], 0)  # (P, m, m)
expected_softmax = (logits.softmax(dim=1) - F.one_hot(class_map, 3).permute(0, 3, 1, 2)) / (P * m * m)
assert torch.allclose(grads["sigmoid BCE"], expected_bce, atol=1e-7)
assert torch.allclose(grads["softmax CE"], expected_softmax, atol=1e-7)
print("both closed forms match autograd")

# %% [markdown]
# The same on a real RoI. We take held-out image 40 of the shapes data — two circles and a square that
# overlap — and run the trained model's mask branch on the GT boxes (as if they were proposals), giving
# 4 channels of 28×28 logits per object. We look at the second circle, the one nothing hides, and draw
# the gradient each channel receives under the two losses. Expect the top row (sigmoid BCE) to be blank
# except in the circle channel; in the bottom row (softmax) the square and triangle channels get positive
# gradient (gradient descent lowers them) wherever the softmax gives them some probability, inside the
# circle and outside it, while the circle channel is raised inside and the background channel mostly
# outside.

# %%
model = trained_shapes_model()
class_names = model.class_names
image, target = ShapesDataset(100, seed=1)[40]
with torch.no_grad():
    batch, image_sizes, _ = model.transform([image])  # (1, 3, 128, 128)
    features = model.backbone(batch)  # [P2..P6]
    real_logits = model.roi_heads.mask_logits(features, [target["boxes"]], image_sizes)  # (G, 4, 28, 28)
real_targets = masks.project_masks_on_boxes(target["masks"], target["boxes"],
                                            torch.arange(len(target["boxes"])), 28)  # (G, 28, 28)
G = len(target["boxes"])
assert real_logits.shape == (G, model.num_classes, 28, 28) and real_targets.shape == (G, 28, 28)
print("objects in image 40:", [class_names[int(k)] for k in target["labels"]])

n = 1  # the second circle
one_logits, one_label, one_target = real_logits[n:n + 1], target["labels"][n:n + 1], real_targets[n:n + 1]
real_grads = {}
for name, loss_fn in (("sigmoid BCE", roi_heads.sigmoid_mask_loss), ("softmax CE", roi_heads.softmax_mask_loss)):
    x_ = one_logits.clone().requires_grad_(True)  # (1, 4, 28, 28)
    loss_fn(x_, one_target, one_label).backward()
    real_grads[name] = x_.grad[0]  # (4, 28, 28)
    assert x_.grad.shape == (1, 4, 28, 28)
print_shapes(one_roi_logits=one_logits, target=one_target, gradient_per_roi=real_grads["softmax CE"])

# %%
fig, axes = plt.subplots(2, 5, figsize=(12, 4.8), layout="constrained")
class_map_img = torch.where(one_target[0] >= 0.5, one_label[0], 0)  # (28, 28)
palette = np.array([(0.15, 0.15, 0.15)] + [class_color(k) for k in range(1, 4)])  # (K+1, 3) RGB per class
axes[0, 0].imshow(one_target[0].numpy(), cmap="gray", vmin=0, vmax=1)
axes[0, 0].set_title("target y (circle channel)\nwhite 1, black 0", fontsize=9)
axes[1, 0].imshow(palette[class_map_img.numpy()])
axes[1, 0].set_title("softmax target: class per pixel\n(green circle, grey background)", fontsize=9)
for row, name in enumerate(("sigmoid BCE", "softmax CE")):
    g = real_grads[name].numpy()  # (4, 28, 28)
    vmax = float(np.abs(g).max())
    for ch in range(4):
        ax = axes[row, ch + 1]
        im = ax.imshow(g[ch], cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        nonzero = "all zero" if not g[ch].any() else f"max |g| {np.abs(g[ch]).max():.1e}"
        ax.set_title(f"{name}: channel {ch}\n{class_names[ch]} ({nonzero})", fontsize=9)
    fig.colorbar(im, ax=axes[row, 1:].tolist(), shrink=0.85, label="d loss / d logit")
for ax in axes.flat:
    ax.set_axis_off()
fig.suptitle("Gradient per mask channel for one circle RoI (red: descent lowers the logit; blue: raises it)",
             fontsize=10)
plt.show()

# %% [markdown]
# With the sigmoid, the circle RoI teaches the circle mask and nothing else: what the square channel
# says about this RoI is none of its business. With the softmax, the same RoI also trains the square and
# triangle channels, to be *low* on this object: it lowers them over the whole RoI, most strongly inside
# the circle, where this model's square and triangle channels are high (they draw the circle too, as the
# next picture shows). The mask branch now has to decide the class at each pixel, which is the
# classifier's job.
# (The faint checkerboard in the softmax row comes from the mask predictor's 2×2 deconvolution with
# stride 2: each 14×14 cell becomes a 2×2 block of output pixels, and the four pixels of a block get four
# different kernel weights, so the logits — and the softmax's gradient — alternate from pixel to pixel.)
#
# ### What the trained model's channels draw
#
# What decoupling gives a trained model: every channel answers "which pixels, *if this object were of
# class c*?" A channel is trained only on RoIs of its own class — the square channel has never been
# asked to draw a circle — and the background channel is never trained at all. Does a channel
# still draw an object of another class? We run the trained model on the GT boxes of all 100 held-out
# images (as RoIs, as above), read the box classifier's class for each, and measure the IoU of every
# channel's mask with the target (both cut at 0.5), in particular where the classifier picks a wrong
# shape: the mask of the class it picks is the one that would be pasted.

# %%
held_out = [ShapesDataset(100, seed=1)[i] for i in range(100)]  # (image, target) pairs
gt_boxes = [t["boxes"] for _, t in held_out]
with torch.no_grad():
    batch_all, sizes_all, _ = model.transform([im for im, _ in held_out])  # (100, 3, 128, 128)
    features_all = model.backbone(batch_all)  # [P2..P6]
    probs_all = model.roi_heads.box_logits(features_all, gt_boxes, sizes_all)[0].softmax(dim=1)  # (G, K+1)
    masks_all = torch.sigmoid(model.roi_heads.mask_logits(features_all, gt_boxes, sizes_all))  # (G, K+1, 28, 28)
targets_all = torch.cat([masks.project_masks_on_boxes(t["masks"], t["boxes"], torch.arange(len(t["boxes"])), 28)
                         for _, t in held_out])  # (G, 28, 28)
on, inside = masks_all >= 0.5, targets_all[:, None] >= 0.5  # (G, K+1, 28, 28), (G, 1, 28, 28)
iou_all = (on & inside).sum(dim=(2, 3)) / (on | inside).sum(dim=(2, 3))  # (G, K+1) every channel's mask
gt_class = torch.cat([t["labels"] for _, t in held_out])  # (G,)
called = probs_all.argmax(dim=1)  # (G,) the box classifier's class
rows = torch.arange(len(gt_class))  # (G,)
wrong = (called != gt_class) & (called > 0)  # (G,) called another shape
print(f"{len(gt_class)} GT boxes; the classifier calls {int((called != gt_class).sum())} of them wrong: "
      f"{int(wrong.sum())} another shape, {int((called == 0).sum())} background")
print(f"on the {int(wrong.sum())} called another shape, mean mask IoU: "
      f"{iou_all[rows, gt_class][wrong].mean():.2f} at the GT class, "
      f"{iou_all[rows, called][wrong].mean():.2f} at the class the classifier picked")
assert iou_all[rows, called][wrong].mean() > 0.5  # the wrong class's mask still follows the object

# %% [markdown]
# The picture shows two RoIs channel by channel: the circle above, and the box whose wrong class the
# classifier is surest of (its probabilities in the titles). The background column shows the
# deconvolution's checkerboard raw, as a channel that was never trained does.

# %%
first = sum(len(b) for b in gt_boxes[:40])  # where image 40's boxes start in the concatenation
shown = [first + 1, int(torch.where(wrong, probs_all[rows, called], 0).argmax())]  # the circle, the surest mistake
image_of = torch.cat([torch.full((len(b),), i) for i, b in enumerate(gt_boxes)])  # (G,)
fig, axes = plt.subplots(2, 5, figsize=(12, 5.2), layout="constrained")
for row, g in enumerate(shown):
    k, picked = int(gt_class[g]), int(called[g])
    axes[row, 0].imshow(targets_all[g].numpy(), cmap="gray", vmin=0, vmax=1)
    axes[row, 0].set_title(f"image {int(image_of[g])}: target ({class_names[k]})\n"
                           f"classifier picks {class_names[picked]} ({probs_all[g, picked]:.2f})", fontsize=9)
    for c in range(4):
        axes[row, c + 1].imshow(masks_all[g, c].numpy(), cmap="gray", vmin=0, vmax=1)
        role = "GT class" if c == k else f"p = {probs_all[g, c]:.2f}"
        note = "(never trained)" if c == 0 else f"({role}; IoU {iou_all[g, c]:.2f})"
        axes[row, c + 1].set_title(f"σ(x) of channel {c}: {class_names[c]}\n{note}", fontsize=9,
                                   color=class_color(c) if c else "black")
for ax in axes.flat:
    ax.set_axis_off()
fig.suptitle("Decoupled masks: the trained model's mask of every class for the same RoI (white 1, black 0)",
             fontsize=10)
plt.show()

# %% [markdown]
# Every foreground channel draws the object in the box, whatever its own class: in the first row the
# square and triangle channels draw a circle, though neither was ever trained to draw one (a circle
# inside a square's box is only ever a 0 in the square channel's target; IoUs in the titles). The mask
# branch learnt to segment *the object in the box*, and the channel's class changes the map little. So
# when the classifier picks the wrong shape, the mask that gets pasted is about as good as the GT class's
# would have been: the two mean IoUs printed above are close. (These are GT boxes used as
# RoIs; a detection's box differs a little.) The second row is a failure, and the mask branch shares it:
# a square that the classifier takes for a circle, and every channel draws a rounder blob than the
# square — the picked class's mask is no worse than the GT class's, and no better. With a softmax, the
# picked class's channel would have been trained to say "not here" on objects of the other classes.
# What decoupling cannot save is a box the classifier calls background: it is dropped, mask and all.
#
# ## 4. Common mistake: "a softmax over the mask channels is ill-defined"
#
# It is often said that a softmax over the mask channels would be invalid and ill-defined, because only
# one channel is supervised, and that it would produce wrong gradients and unstable training. What that
# gets right is the design choice: Mask R-CNN deliberately predicts independent per-class masks and lets the box branch's classifier pick
# the one to use; the paper calls this *decoupling* mask and class prediction, and its ablation (Table 2b,
# ResNet-50-C4 on COCO) measures it at **30.3 mask AP for the per-class sigmoid against 24.8 for a
# per-pixel softmax** — the paper's numbers, not ours.
#
# The reason is loose, though. A softmax with cross-entropy does not need a target for each channel; it
# needs a target *class* for each pixel, and every RoI provides one (its class on the object,
# background elsewhere). The other channels are then supervised too — their target is "not this pixel's
# class", so they are pushed down, as the gradients above show. That is a well-defined loss with exact
# gradients; the paper trains such a variant and gets its 24.8. Nothing is ill-defined about it: it is
# worse because it makes the classes compete. We run both losses on the same logits — the tiny example,
# and the same example with every logit pushed to +50 or −50 (a network that is very sure and often
# wrong) — and expect finite numbers everywhere; PyTorch evaluates both losses in log space.

# %%
# NBVAL_CHECK_OUTPUT
extreme = torch.where(torch.rand(logits.shape, generator=torch.Generator().manual_seed(1)) > 0.5, 50.0, -50.0)
cases = {"tiny example": (logits, labels, targets),
         "tiny example, logits +-50": (extreme, labels, targets)}
for name, (lg, lb, tg) in cases.items():
    l_sig, l_soft = roi_heads.sigmoid_mask_loss(lg, tg, lb), roi_heads.softmax_mask_loss(lg, tg, lb)
    assert l_sig.shape == l_soft.shape == () and torch.isfinite(l_sig) and torch.isfinite(l_soft)
    print(f"{name:<26} sigmoid BCE {l_sig.item():9.4f}   softmax CE {l_soft.item():9.4f}")

# %% [markdown]
# And on the trained model's real RoI (computed from the trained weights, so not byte-for-byte the same
# on every machine). The two numbers are not to be compared: they are different losses, and the softmax
# one also runs over the background channel, which this sigmoid-trained model never trained. What matters
# here is that both are finite.

# %%
l_sig = roi_heads.sigmoid_mask_loss(one_logits, one_target, one_label)
l_soft = roi_heads.softmax_mask_loss(one_logits, one_target, one_label)
assert torch.isfinite(l_sig) and torch.isfinite(l_soft)
print(f"real circle RoI: sigmoid BCE {l_sig.item():.4f}   softmax CE {l_soft.item():.4f}")

# %% [markdown]
# **Common mistake: "a per-RoI softmax is semantic segmentation".** The argument goes that training the mask
# branch with a softmax would require merging overlapping instances into one class map per pixel, as in
# semantic segmentation, and that this would destroy the separation of instances. That conflates two things. Semantic
# segmentation labels the pixels of the *whole image* by class: two touching circles become one "circle"
# region, and no RoIs are involved. The paper's softmax variant stays per RoI: its class map is built from
# **the one GT instance the RoI is matched to**, exactly like the sigmoid target; another object inside
# the same box is background for this RoI, whatever its class. Nothing is merged.
#
# The picture shows it for the *first* circle of image 40, half hidden by the square that lies on top of
# it; its box contains most of the square. (b) the sigmoid target: only the visible part of this circle;
# (c) the per-RoI softmax class map — the same instance, labelled with its class, the square's pixels
# background; (d) a semantic segmentation map of the same window: every pixel gets the class of whatever
# covers it, so the square appears as "square", and the second circle, which reaches into the window's
# bottom-right corner (rows 22–27, columns 25–27), is painted "circle" there, where (c) has background.
# (The colours in (a) are the image's own; the legend's class colours apply to (c) and (d).)
# The trained model's mask for this occluded circle is one of its weaker ones, which is why we did not use
# it for the gradients above.

# %%
occluded = 0  # the first circle, partly under the square
occ_target, occ_label = real_targets[occluded], target["labels"][occluded]  # (28, 28), ()
# semantic segmentation of the whole image: every pixel gets the class of the object covering it
semantic = torch.zeros(128, 128, dtype=torch.int64)  # (H, W) 0 = background
for k, mask in zip(target["labels"], target["masks"]):
    semantic[mask.bool()] = k  # visible masks do not overlap
one_hot = F.one_hot(semantic, 4).permute(2, 0, 1).float()  # (K+1, H, W)
semantic_crop = masks.project_masks_on_boxes(one_hot, target["boxes"][occluded].repeat(4, 1),
                                             torch.arange(4), 28).argmax(dim=0)  # (28, 28) same window
per_roi_map = torch.where(occ_target >= 0.5, occ_label, 0)  # (28, 28)
assert semantic.shape == (128, 128) and semantic_crop.shape == per_roi_map.shape == (28, 28)

fig, axes = plt.subplots(1, 4, figsize=(12, 3.6), layout="constrained")
draw_boxes(axes[0], image, target["boxes"][occluded:occluded + 1], color="white", linewidth=1.5)
axes[0].set_title("(a) image 40 and the RoI of the\nfirst circle (under the square)", fontsize=9)
axes[1].imshow(occ_target.numpy(), cmap="gray", vmin=0, vmax=1)
axes[1].set_title("(b) sigmoid target:\nthe matched instance's mask", fontsize=9)
axes[2].imshow(palette[per_roi_map.numpy()])
axes[2].set_title("(c) per-RoI softmax target:\nsame instance, as a class map", fontsize=9)
axes[3].imshow(palette[semantic_crop.numpy()])
axes[3].set_title("(d) semantic segmentation of\nthe same window (not Mask R-CNN)", fontsize=9)
for ax in axes:
    ax.set_axis_off()
fig.legend(handles=[Patch(color=palette[k], label=class_names[k]) for k in range(4)], loc="lower center",
           ncol=4, fontsize=8, bbox_to_anchor=(0.62, -0.06))
plt.show()

# %% [markdown]
# (c) is (b) cut at 0.5 and labelled with the RoI's class; only the loss applied to them differs. (d) is a
# different task.
# So the conclusion that a softmax would turn Mask R-CNN into a semantic segmentation network
# does not follow; the real cost of the softmax is the coupling of section 3, and the paper's gap of
# 5.5 mask AP measures it. Notebook 12 runs such an ablation on our own model and data.
#
# ## 5. Class-agnostic masks and what per-class masks cost
#
# Since the classifier picks the class anyway, one can go further and predict a **single** mask per RoI,
# for whatever class it is: the mask predictor's last 1×1 conv then has one output channel, the logits are
# N×1×28×28, and `mask_loss` and inference read channel 0 for every RoI (the `channel = ...` line of
# `sigmoid_mask_loss`, section 1). The paper reports this nearly as good: 29.7 mask AP against 30.3 for
# per-class masks (Sec. 4.2, ResNet-50-C4). In the library it is one config key, `class_agnostic_masks`.
# We build a shapes_tiny model with it (random weights: we look at shapes only) and expect (3, 1, 28, 28)
# for the 3 objects of image 40, where the per-class model gives (3, 4, 28, 28). `mask_loss` takes these
# logits unchanged, reading channel 0 whatever each RoI's class; its value is an untrained head's and
# shows only that the loss runs.

# %%
print("class_agnostic_masks in shapes_tiny:", get_config("shapes_tiny")["class_agnostic_masks"])
agnostic = build_maskrcnn("shapes_tiny", class_agnostic_masks=True).eval()
with torch.no_grad():
    agnostic_logits = agnostic.roi_heads.mask_logits(agnostic.backbone(batch), [target["boxes"]],
                                                     image_sizes)  # (G, 1, 28, 28)
agnostic_loss = roi_heads.mask_loss(agnostic_logits, [target["boxes"]], [target["masks"]], [target["labels"]],
                                    [torch.arange(G)])  # () channel 0 for every RoI
assert agnostic.roi_heads.mask_predictor.mask_logits.out_channels == 1
assert agnostic_logits.shape == (G, 1, 28, 28) and real_logits.shape == (G, 4, 28, 28)
assert agnostic_loss.shape == () and torch.isfinite(agnostic_loss)
print_shapes(per_class_logits=real_logits, agnostic_logits=agnostic_logits)
print(f"mask_loss of the untrained agnostic head on image 40's 3 objects: {agnostic_loss.item():.4f}")

# %% [markdown]
# The memory of the logits tensor grows with the number of channels. The library (like torchvision) makes
# K+1 channels, background included. We count float32 bytes for N = 100 RoIs (the detections per image at
# inference, `box_detections_per_img`) and N = 512 (for instance 4 training images × 128 positives, the
# most a 512-RoI sample with 25% positives can have), for K = 3 (shapes), 80 (COCO) and 1000 classes
# (LVIS-sized vocabularies). Training needs as much again for the logits' gradient. Two columns more: the
# deconvolution's output (N, C, 28, 28) with resnet50_fpn's C = 256, which every head builds whatever K
# is, and a *gathered* head, explained below the table. The arithmetic first, then one row measured: the
# largest tensor a real `MaskPredictor` allocates (`largest_tensor` watches every operation).

# %%
# NBVAL_CHECK_OUTPUT
MiB, C = 2**20, get_config("resnet50_fpn")["mask_dim_reduced"]  # C = 256 channels into the 1x1 conv
print(f"{'N':>4} {'K':>5}  {'per-class (N, K+1, 28, 28)':>27}  {'agnostic (N, 1, 28, 28)':>24}  "
      f"{'gathered':>10}  {'deconv (N, C, 28, 28)':>22}")
table = {}
for N in (100, 512):
    for K in (3, 80, 1000):
        per_class = N * (K + 1) * 28 * 28 * 4  # bytes, float32
        agnostic_bytes = N * 1 * 28 * 28 * 4
        gathered = N * C * 4 + N * 28 * 28 * 4  # the GT class's 1x1 weights per RoI, then one map per RoI
        table[N, K] = (per_class, agnostic_bytes, gathered)
        print(f"{N:>4} {K:>5}  {per_class / MiB:>23.2f} MiB  {agnostic_bytes / MiB:>20.2f} MiB  "
              f"{gathered / MiB:>6.2f} MiB  {N * C * 28 * 28 * 4 / MiB:>18.2f} MiB")

predictor = heads.MaskPredictor(in_channels=8, num_classes=80 + 1, dim_reduced=8)  # K = 80, tiny trunk
with torch.no_grad():
    out, shape, nbytes = largest_tensor(predictor, torch.zeros(100, 8, 14, 14))  # (100, 81, 28, 28)
assert out.shape == shape == (100, 81, 28, 28) and nbytes == table[100, 80][0]
print(f"measured: the largest tensor MaskPredictor builds for N = 100, K = 80 is {shape}, {nbytes / MiB:.2f} MiB")

# %% [markdown]
# At K = 1000 and 512 RoIs the per-class logits take 1.5 GiB — but only in a **naive** head, which
# computes every channel and then reads one. The 1×1 conv gives channel $c$ at each pixel as
# $w_c \cdot f + b_c$ from the pixel's C features $f$, and only channel $k$ of each RoI enters the loss.
# So a head can gather the row $w_k$ of each RoI first — C numbers — and compute one 28×28 map per RoI:
# N×C weights plus N×28×28 logits, the *gathered* column, the same for every K, and the same loss and
# gradients (the other channels get zero gradient anyway). What every head builds, whatever K is, is the
# deconvolution's output (last column), larger than the per-class logits up to K ≈ C. Memory aside, the
# class-agnostic head has an argument of its own: its one mask is trained by every RoI, whereas a
# per-class mask is trained only by its class's RoIs, few for the rare classes of a large vocabulary (a
# hypothesis; the paper measures agnostic masks on COCO only, 29.7 vs 30.3). Exercise 3 builds the
# gathered head and measures what memory argument is left.
#
# ## Summary
#
# - $L_{mask}$ is the mean per-pixel binary cross-entropy between the sigmoid of the GT class's channel
#   and the RoIAlign-resampled GT mask, over the positive RoIs; the other channels are not in the loss.
# - Under it, every non-GT channel gets exactly zero gradient from an RoI: masks of different classes never
#   compete, and the box branch's classifier alone decides the class (decoupling, Sec. 3).
# - A per-pixel softmax with cross-entropy on a per-RoI class map is well-defined and finite; it sends
#   gradient into every channel and pushes the other classes down. The paper measures the cost:
#   24.8 vs 30.3 mask AP (Table 2b). It is still instance segmentation — semantic segmentation is a
#   different task.
# - Trained with the sigmoid loss, every class's channel draws the object in the box: a detection with
#   the wrong class still gets a mask about as good as its right class's (the mean IoUs of section 3).
# - Class-agnostic masks (N×1×28×28, `class_agnostic_masks=True`) are nearly as good (29.7 vs 30.3 in the
#   paper). The per-class logits grow with K only in a naive head: gathering the GT class's 1×1 weights
#   first computes one map per RoI, whatever K is.
#
# ## Exercises
#
# Worked solutions are in `solutions/07_mask_loss.py` (for teachers). Each check cell says whether
# your answer is right.
#
# ### Exercise 1 — Derive · about 15 min: what the target channel gains, the others lose
#
# Take the softmax loss of section 3, `roi_heads.softmax_mask_loss`, on P RoIs with K+1 channels of
# m×m logits. At each pixel call $t_{ij}$ its target class (the RoI's class where the target is ≥ 0.5,
# background elsewhere) and $p_{ij} = \mathrm{softmax}(x_{ij})_{t_{ij}}$ that class's probability. Write
# `my_softmax_push(p_target)`: given **only** these probabilities, a `(P, m, m)` tensor, return two
# `(P, m, m)` tensors: `up`, minus the loss's gradient on channel $t_{ij}$ (what gradient descent adds to
# the target class's logit, per unit of learning rate), and `down`, the sum of the gradient over the
# other K channels (what descent takes from them together). You get neither the logits nor K: derive
# both from section 3's gradient formula. The check compares them with autograd of `softmax_mask_loss`
# on random logits, for several K.
#
# Then compare `up` and `down`, and say in a sentence what that means for the competition between
# classes. What is the sum of the gradient over the channels under the sigmoid loss?
#
# *Hint:* write the gradient of one channel $c \ne t_{ij}$ at a pixel, then sum it over those K
# channels; what is left to know about the other channels' probabilities? The loss is a mean over
# $P m^2$ terms.

# %%
def my_softmax_push(p_target):
    """p_target (P, m, m), each pixel's target-class probability -> (up, down), each (P, m, m): minus the
    softmax loss's gradient on the target channel, and the other channels' gradient summed."""
    raise NotImplementedError  # your code here


# %%
from mrcnn_teach.exercises.nb07 import check_bce_floor, check_gathered_mask_loss, check_softmax_push

check_softmax_push(my_softmax_push);

# %% [markdown]
# ### Exercise 2 — Derive · about 10 min: the lowest mask loss on soft targets
#
# Predict first: can any logits bring $L_{mask}$ to 0 on the 4×4 targets of section 2 (the soft ones
# the library made)? Then write `my_bce_floor(targets)`: for targets `(P, m, m)` in [0, 1], return the
# lowest value that $L_{mask}$ (the mean BCE over the $P m^2$ pixels) can take or approach, for any
# logits (its infimum). Say which logits reach it, or approach it where $y$ is 0 or 1. Last, compute it
# for the trained model's circle RoI, `my_bce_floor(one_target)`, and compare it with that RoI's loss
# printed in section 4: how much of that loss could a better model remove?
#
# *Hint:* minimise one pixel's $-y \log p - (1 - y) \log(1 - p)$ over $p$. Real targets have many pixels
# with $y$ exactly 0 or 1: `torch.xlogy` computes $y \log y$ with $0 \log 0 = 0$.

# %%
def my_bce_floor(targets):
    """targets (P, m, m) in [0, 1] -> () the lowest mean binary cross-entropy any logits can reach or approach."""
    raise NotImplementedError  # your code here


# %%
check_bce_floor(my_bce_floor);

# %% [markdown]
# ### Exercise 3 — Design · about 20 min: a mask head that computes one channel per RoI
#
# Section 5 claims that a head can gather the GT class's 1×1 weights and never build the (P, K+1, 28, 28)
# logits. Build it: `my_gathered_mask_loss(mask_features, predictor, targets, labels)` takes the mask
# head's output `(P, C, 14, 14)` (before the predictor), a `heads.MaskPredictor` (its layers:
# `predictor.deconv`, then a ReLU, then the 1×1 conv `predictor.mask_logits`, weight `(K+1, C', 1, 1)` and
# bias `(K+1,)`), targets `(P, 28, 28)` and labels `(P,)`, and returns the same loss as
# `roi_heads.sigmoid_mask_loss(predictor(mask_features), targets, labels)`, with the same gradients for
# the features and for every weight. The check runs it with K+1 = 301 channels and refuses any tensor
# larger than the deconvolution's output, so calling `predictor(...)` or its 1×1 conv, for all RoIs or one
# RoI at a time, fails.
#
# Then measure, for 100 RoIs, K = 1000 and C = C' = 32 (shapes_tiny's mask head), on random inputs:
#
#     f, pred = torch.randn(100, 32, 14, 14), heads.MaskPredictor(32, 1001, 32)  # features, predictor
#     t, l = torch.rand(100, 28, 28), torch.randint(1, 1001, (100,))  # targets, labels
#
# and compare `largest_tensor(my_gathered_mask_loss, f, pred, t, l)` with the naive head's
# `largest_tensor(lambda: roi_heads.sigmoid_mask_loss(pred(f), t, l))` (each returns the loss, then the
# largest tensor's shape and bytes). Is the per-class head's memory then an argument for class-agnostic
# masks? What does the gathered head cost at inference, where the labels are the predicted classes?
#
# *Hint:* channel $c$ of the 1×1 conv at one pixel is $w_c \cdot f + b_c$; index the weight and the bias
# with `labels`, then one `torch.einsum` over C' does all the dot products.

# %%
def my_gathered_mask_loss(mask_features, predictor, targets, labels):
    """-> () L_mask of predictor(mask_features), computing only channel labels[n] of each RoI n."""
    raise NotImplementedError  # your code here


# %%
check_gathered_mask_loss(my_gathered_mask_loss);

# %% [markdown]
# Next: [08 — The full model](08_full_model.ipynb)
