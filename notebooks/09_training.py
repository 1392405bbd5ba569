# %% [markdown]
# # 09 — Training
#
# Notebooks 01–08 built every stage of Mask R-CNN and each of its losses. This one trains the whole
# model, from random weights, on the built-in shapes data. Training is one short function run many
# times; most of what makes it work is in the recipe around it (which optimiser, which learning rate
# at which step, which normalisation), and most of what makes it safe to run for hours is in the
# `Trainer` around that (a log, checkpoints, resuming exactly where a run stopped).
#
# **You will learn**
# - the loss: $L$ = the sum of five terms, and why the detection head's two terms alone train neither
#   the RPN nor the mask branch;
# - `training_step`, read whole, then run live for two minutes, with its loss curves, and why a loss can
#   *rise* while the model improves (the number of positive RoIs it is averaged with grows);
# - the recipe: SGD with momentum and weight decay, a linear warm-up and step decay, gradient clipping,
#   and GroupNorm for training from scratch;
# - what the `Trainer` adds, and resumption that gives the same weights, bit for bit on a CPU, as a run
#   that never stopped; the 700-step run behind the model the other notebooks load;
# - in the appendices: the shapes data (masks are the *visible* parts, boxes come from the masks), flip
#   and scale-jitter augmentation, what a checkpoint holds and how it is written, and mixed precision.
#
# **Builds on:** [01 — Backbone](01_backbone.ipynb) (normalisation: frozen BN, BN, GroupNorm),
# [04 — RPN](04_rpn.ipynb) (the RPN's two losses), [06 — Heads](06_heads.ipynb) and
# [07 — Mask loss](07_mask_loss.ipynb) (the heads' three losses), [08 — The full model](08_full_model.ipynb)
# (the model in train mode returns the loss dict).
#
# **Run time:** about 4 to 5 minutes of CPU on a 2-core machine (272 s under nbval on one thread; nearly 10
# minutes of wall time when the machine was shared with other jobs), most of it the live training of
# section 3 and its one-batch overfit; the first
# notebook you run also trains the shared shapes model once, 6 to 13 minutes on a 2-core CPU (700 steps; `make model` trains it ahead); later notebooks load it
# in a second.

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

import copy
import dataclasses
import hashlib
import inspect
import math
import shutil
import tempfile
import time
import json
from pathlib import Path
from unittest import mock

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from mrcnn_teach import build_maskrcnn, pretrained
from mrcnn_teach.checkpoint import load_checkpoint, save_checkpoint
from mrcnn_teach.configs import get_config
from mrcnn_teach.datasets import RandomScaleJitter, ShapesDataset, collate_fn, scale_jitter, tight_boxes
from mrcnn_teach.datasets.shapes import CLASSES, masks_to_boxes, shape_mask, visible_masks
from mrcnn_teach.train import (TRAIN_PRESETS, Trainer, WarmupStepDecay, build_optimizer, build_scheduler,
                               get_train_config, resume_config, train, training_step)
from mrcnn_teach.train_data import steps_per_epoch
from mrcnn_teach.visualize import class_color, draw_instances, plot_losses, read_log

# %% [markdown]
# ## 1. The training loss
#
# The model learns from the built-in shapes data: `ShapesDataset(2000, seed=0)` draws 128×128 images
# with 1 to 4 squares, circles and triangles, in torchvision's detection format (boxes, labels 1..3,
# masks). Appendix A, at the end, shows them, why a mask is
# the *visible* part of its shape, and the augmentations; the rest of the notebook needs only that
# they exist.
#
# In train mode the model returns a dict of five scalar losses (notebook 08). Mask R-CNN's loss on each
# sampled RoI is $L = L_{cls} + L_{box} + L_{mask}$ (Sec. 3); the RPN adds its own two,
#
# $$L = \underbrace{L_{objectness} + L_{rpn\,box}}_{\text{RPN, notebook 04}}
#     + \underbrace{L_{cls} + L_{box}}_{\text{box head, 06}} + \underbrace{L_{mask}}_{\text{07}},$$
#
# each with weight 1, and one backward pass of the sum trains every part at once. That is Faster R-CNN's
# "approximate joint training" (Ren et al. 2015, Sec. 3.2), which torchvision and this library use; the
# Mask R-CNN paper trains its RPN separately for its ablations, for convenience (Sec. 3.1).
#
# **Common mistake: "the total loss is the classification loss plus the box loss".** Those are the
# two terms of the detection head alone: the loss of the box branch only. Trained on it,
# the RPN would learn nothing, because its proposals reach the heads detached (`rpn.py` cuts the graph
# there: no gradient flows back through the proposal boxes), and the mask branch would learn nothing,
# because no term depends on it. We run one forward pass of a fresh model on 4 images and ask, for each
# part, whether its parameters receive a gradient from that two-term loss and from the five-term
# sum. We expect "no" for the RPN and both mask modules under the two-term loss.

# %%
# NBVAL_CHECK_OUTPUT
train_data = ShapesDataset(2000, seed=0)  # the training images (Appendix A)
torch.manual_seed(0)
demo_model = build_maskrcnn("shapes_tiny", num_classes=4).train()
batch = [train_data[i] for i in range(4)]
images, targets = [b[0] for b in batch], [b[1] for b in batch]  # 4 x (3, 128, 128), 4 x dict
parts = {"backbone + FPN": demo_model.backbone, "RPN head": demo_model.rpn,
         "box head": demo_model.roi_heads.box_head, "box predictor": demo_model.roi_heads.box_predictor,
         "mask head": demo_model.roi_heads.mask_head, "mask predictor": demo_model.roi_heads.mask_predictor}


def parts_with_gradient(loss):
    demo_model.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    return {name: any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
            for name, part in parts.items()}


loss_dict = demo_model(images, targets)  # 5 scalar losses
two_terms = loss_dict["loss_classifier"] + loss_dict["loss_box_reg"]  # () the box branch's loss only
full_loss = sum(loss_dict.values())  # () what training_step minimises
two_grads, full_grads = parts_with_gradient(two_terms), parts_with_gradient(full_loss)
print("loss terms:", ", ".join(loss_dict))
print(f"{'part':<16}{'L_cls + L_box only':>22}{'all five terms':>16}")
for name in parts:
    print(f"{name:<16}{'yes' if two_grads[name] else 'NO':>22}{'yes' if full_grads[name] else 'NO':>16}")
assert all(v.shape == () for v in loss_dict.values()) and len(loss_dict) == 5
assert not two_grads["RPN head"] and not two_grads["mask predictor"] and all(full_grads.values())

# %% [markdown]
# ## 2. One training step
#
# Here is everything one iteration does, the function the rest of this notebook runs:

# %%
show_source(training_step)

# %% [markdown]
# Read it top to bottom. `autocast` is a no-op unless mixed precision is asked for (the appendix
# "Mixed precision (AMP)" at the end; the `scaler` branches serve it too).
# The model returns its five losses; their **sum** is the loss. `zero_grad` clears the previous step's
# gradients (PyTorch adds new gradients onto old ones), `backward` fills `p.grad` for every parameter,
# `clip_grad_norm_` rescales the gradients if their global norm is above `grad_clip` (section 4.3), and
# `optimizer.step()` moves the weights. It returns the loss dict and the gradient norm *before*
# clipping, which is what a log wants.
#
# One step on our 4 images, starting from the fresh model. We print the five losses and the gradient
# norm, and check that every trainable tensor received a non-zero gradient (checking that every weight
# *moved* would prove little: weight decay alone moves every weight that is not zero). Two losses can
# be predicted before any training: a fresh binary classifier says $p \approx 0.5$, so
# $L_{objectness} \approx \ln 2 = 0.69$; and with 4 classes nearly uniform, $L_{cls} \approx \ln 4 = 1.39$.
# The mask loss is a binary cross-entropy too, but we do not expect it at $\ln 2$: the cell records
# the mask logits of this forward pass to see why.

# %%
optimizer = build_optimizer(demo_model, get_train_config("shapes_tiny"))  # SGD, lr 0.02, momentum 0.9
mask_logits = []  # the mask predictor's output of this step's forward pass
hook = demo_model.roi_heads.mask_predictor.register_forward_hook(lambda m, i, out: mask_logits.append(out.detach()))
loss_dict, grad_norm = training_step(demo_model, optimizer, images, targets, grad_clip=10.0)
hook.remove()
with_grad = sum(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in demo_model.parameters())
n_params = sum(1 for _ in demo_model.parameters())
for name, value in loss_dict.items():
    print(f"{name:<18} {value.item():.3f}")
print(f"{'sum':<18} {sum(loss_dict.values()).item():.3f}")
print(f"gradient norm before clipping: {grad_norm:.2f}; trainable tensors with a non-zero gradient: "
      f"{with_grad} of {n_params}")
z = mask_logits[0]  # (P, K+1, 28, 28) logits of the positive RoIs
coin_bce = (0.5 * (F.softplus(z) + F.softplus(-z))).mean()  # () BCE of these logits against a 0/1 coin toss
print(f"mask loss {loss_dict['loss_mask']:.3f}, not ln 2 = {math.log(2):.3f}: the fresh logits spread with std "
      f"{z.std():.2f} around {z.mean():.2f}, and against targets of 0 and 1 in equal shares they would give {coin_bce:.3f}")
assert all(v.shape == () for v in loss_dict.values()) and z.shape[1:] == (4, 28, 28)
assert with_grad == n_params  # every trainable tensor got a gradient
assert loss_dict["loss_mask"] > math.log(2) + 0.05 and coin_bce > math.log(2) + 0.05

# %% [markdown]
# The mask logits of a fresh model are not zero: the mask predictor's weights are He-initialised
# (`heads.py`, torchvision's init), so each logit is a random sum with the spread printed above. The
# binary cross-entropy is convex in the logit and smallest, for a 0/1 target in equal shares, at logit
# 0, where it is $\ln 2$; a spread of logits around 0 can only raise the mean (Jensen's inequality).
# So "a fresh mask head starts at $\ln 2$" holds only for logits near zero, which this init does not give.

# %% [markdown]
# ## 3. Training live
#
# Now a loop anyone could write around `training_step`: a DataLoader, the optimiser, the schedule,
# and a line of output every 20 steps. 120 steps of 4 images, 480 different images each seen once. The
# preset's rate of 0.02 is for 8 images per step; by the linear scaling rule (Goyal et al. 2017: the
# learning rate in proportion to the batch) we use 0.01 for 4. The schedule is the recipe of section 4
# in small: a 20-step warm-up, decays at steps 90 and 108.
#
# We also log, at every step, how many RoIs the box head sampled and how many of them were
# **positive** (matched to a shape with IoU ≥ 0.5, notebook 06). The next cell wraps the heads'
# sampler to count them; it changes nothing else (same RoIs, same random draws).

# %%
def count_sampled_rois(model):
    """Wrap the RoI heads' sampler: each forward pass appends (positive RoIs, all sampled RoIs) of its batch."""
    counts = []
    sample = model.roi_heads.select_training_samples

    def sample_and_count(proposals, targets):
        rois, idxs, labels, regression_targets = sample(proposals, targets)  # labels: per image (N_i,)
        counts.append((sum(int((lab > 0).sum()) for lab in labels), sum(len(lab) for lab in labels)))
        return rois, idxs, labels, regression_targets

    model.roi_heads.select_training_samples = sample_and_count
    return counts


# %% [markdown]
# What to expect: the sum starts near 3 (the three cross-entropies of section 2) and ends well below.
# In the first 20 steps every term falls, the classifier's fastest: with few positive RoIs, calling
# nearly every RoI background is easy. Objectness keeps falling after that, while the classifier and
# box losses climb back for a while, for a reason section 3.1 measures. The gradient norm is
# printed before clipping, so we can count the steps where the clip at 10 fired.

# %%
STEPS, BATCH, LR, WARMUP = 120, 4, 0.01, 20
live_cfg = get_train_config("shapes_tiny", batch_size=BATCH, lr=LR, lr_batch=BATCH,  # LR as given, unscaled
                            warmup_steps=WARMUP)
torch.manual_seed(0)
model = build_maskrcnn(live_cfg.model, num_classes=4).train()
optimizer = build_optimizer(model, live_cfg)
scheduler = build_scheduler(optimizer, live_cfg, total_steps=STEPS)  # LambdaLR(WarmupStepDecay(...))
loader = DataLoader(ShapesDataset(STEPS * BATCH, seed=0), batch_size=BATCH, collate_fn=collate_fn)
counts = count_sampled_rois(model)

history = []
for step, (images, targets) in enumerate(loader, start=1):  # images: 4 x (3, 128, 128)
    lr = optimizer.param_groups[0]["lr"]  # the rate this step uses
    loss_dict, grad_norm = training_step(model, optimizer, images, targets, live_cfg.grad_clip)
    scheduler.step()
    terms = {k: v.item() for k, v in loss_dict.items()}
    positives, sampled = counts[-1]
    history.append({"step": step, "lr": lr, "loss": sum(terms.values()), **terms, "grad_norm": grad_norm,
                    "positives": positives, "sampled": sampled, "shapes": sum(len(t["labels"]) for t in targets)})
    if step == 1 or step % 20 == 0:
        print(f"step {step:3d}  lr {lr:.5f}  loss {history[-1]['loss']:.3f} = "
              + " + ".join(f"{k.removeprefix('loss_')} {v:.3f}" for k, v in terms.items())
              + f"  |grad| {grad_norm:.2f}  positive RoIs {positives}/{sampled}")

# %%
first, last = np.mean([r["loss"] for r in history[:5]]), np.mean([r["loss"] for r in history[-20:]])
norms = np.array([r["grad_norm"] for r in history])  # (120,) before clipping
print(f"mean loss, first 5 steps: {first:.3f}; last 20 steps: {last:.3f}")
print(f"gradient norm: max {norms.max():.2f} (step {norms.argmax() + 1}); the clip at {live_cfg.grad_clip:g} "
      f"fired at {(norms > live_cfg.grad_clip).sum()} of {STEPS} steps")
assert len(history) == STEPS and len(counts) == STEPS
assert history[WARMUP]["lr"] == LR and math.isclose(history[90]["lr"], LR * 0.1)
assert all(r["positives"] >= r["shapes"] for r in history)  # every ground-truth box is itself a positive RoI
assert last < 0.6 * first

# %% [markdown]
# The curves: on the left the total and the five terms (log scale, one point per step, so the noise of
# 4-image batches shows); in the middle the positive RoIs per step beside the box regression loss; on
# the right the gradient norm before clipping, against the clipping threshold.

# %%
steps = [r["step"] for r in history]
fig, (ax_loss, ax_pos, ax_norm) = plt.subplots(1, 3, figsize=(15, 4.2), layout="constrained")
plot_losses(history, log_scale=True, ax=ax_loss)  # every loss* field against step
ax_loss.set_title(f"Live run: losses ({STEPS} steps of {BATCH} images)")
ax_pos.plot(steps, [r["positives"] for r in history], color="C2", label="positive RoIs sampled (left axis)")
ax_pos.set(xlabel="step", ylabel="positive RoIs per batch", title="Positive RoIs and the box loss")
ax_box = ax_pos.twinx()
ax_box.plot(steps, [r["loss_box_reg"] for r in history], color="C1", linestyle="--", label="loss_box_reg (right axis)")
ax_box.set_ylabel("loss_box_reg")
ax_pos.legend(*[sum(x, []) for x in zip(ax_pos.get_legend_handles_labels(), ax_box.get_legend_handles_labels())],
              fontsize=8, loc="lower right")
ax_norm.plot(steps, norms, color="C3", linewidth=0.8, label="gradient norm (before clipping)")
ax_norm.axhline(live_cfg.grad_clip, color="black", linestyle="--", linewidth=1, label=f"clip threshold {live_cfg.grad_clip:g}")
ax_norm.set(xlabel="step", ylabel="global gradient norm", yscale="log", title=f"Gradient norm: clipped at {(norms > live_cfg.grad_clip).sum()} of {STEPS} steps")
ax_norm.set_ylim(1, 20)
ax_norm.legend(fontsize=8, loc="lower center")
plt.show()

# %% [markdown]
# ### 3.1 A loss that rises while the model improves
#
# The box regression loss does not simply fall: after its first drop it climbs back, to about three times
# its starting value, and the classifier loss rises with it, so the total goes up for a while. Nothing
# has gone wrong. Both are averages over the RoIs the heads sampled, and what is being averaged
# changes. $L_{box}$ is the smooth-L1 error **summed over the positive RoIs** and divided by **all**
# sampled RoIs (`fastrcnn_loss`, as in Detectron and torchvision), so at a fixed error per positive it
# grows in proportion to the number of positives. The heads add the ground-truth boxes to the
# proposals (their regression targets are zero), so every shape gives at least one positive; the rest
# are proposals that overlap a shape with IoU ≥ 0.5. In the table below, steps 1–10 have 26.7 positives
# for 10.3 shapes, about 2.6 per shape: the untrained RPN's scores are close to random, and its
# proposals, spread over the image, hit the shapes now and then. Steps 11–20 have fewer, 16.8 for 9.8
# shapes (1.7 per shape): the RPN has first learnt that most anchors are background (objectness falls
# from 0.685 to 0.272 by step 20), and the proposals it ranks highest are not yet the ones on the
# shapes. Then it learns where the shapes are: more proposals land on them, the positives grow towards
# the sampler's cap of a quarter of the RoIs (16 of 64 per image), and the loss grows with them. $L_{cls}$ moves the same way: telling three classes apart on many positives is
# harder than calling nearly everything background. The means over a few windows of the run, with the
# number of shapes per batch for comparison:

# %%
windows = {"steps 1-10": (1, 10), "steps 11-20": (11, 20), "steps 31-50": (31, 50), "steps 101-120": (101, 120)}
print(f"{'':<14}{'shapes':>7}{'positive RoIs':>14}{'of sampled':>11}{'loss_box_reg':>13}{'loss_classifier':>16}{'loss':>7}")
means = {}
for name, (a, b) in windows.items():
    rows = history[a - 1:b]
    means[name] = {k: np.mean([r[k] for r in rows]) for k in ("shapes", "positives", "sampled", "loss_box_reg",
                                                                "loss_classifier", "loss")}
    m = means[name]
    print(f"{name:<14}{m['shapes']:>7.1f}{m['positives']:>14.1f}{m['sampled']:>11.0f}{m['loss_box_reg']:>13.3f}"
          f"{m['loss_classifier']:>16.3f}{m['loss']:>7.3f}")
r_pos_box = np.corrcoef([r["positives"] for r in history], [r["loss_box_reg"] for r in history])[0, 1]
print(f"correlation of positive RoIs and loss_box_reg over the {STEPS} steps: {r_pos_box:.2f}")
assert means["steps 31-50"]["positives"] > 2 * means["steps 11-20"]["positives"]
assert means["steps 31-50"]["loss_box_reg"] > means["steps 11-20"]["loss_box_reg"]

# %% [markdown]
# Between steps 11–20 and 31–50 the positives more than triple, and the box loss climbs with them
# (the correlation over the run is printed last); the total rises too, although objectness and the
# mask loss keep falling. A loss averaged over a sample the model itself chooses is not a fixed
# yardstick: to judge progress, watch a measure whose denominator does not move, such as the error
# *per positive* RoI (Exercise 3 derives it from this log) or the AP on held-out images (notebook 11).
# A run this short does not make a good detector; the model of section 6 trains almost six times as
# many steps, on twice the batch.

# %% [markdown]
# ### 3.2 A learning rate too high: what clipping does and does not save
#
# The clip never fired above. Here is a run where it does: 15 times the rate, with no warm-up. Three
# runs of 12 steps of 2 small images (64×64, so they take seconds), each from the same fresh model on
# the same batches: the rate 0.02 as given, 0.3 with the clip at 10, and 0.3 without a clip. We stop a
# run at its first non-finite loss, as the `Trainer` does, and count the steps where the clip fired.

# %%
small_data = ShapesDataset(24, image_size=64, seed=0)


def short_run(lr, grad_clip, steps=12):
    torch.manual_seed(0)
    net = build_maskrcnn("shapes_tiny", num_classes=4, min_size=64, max_size=64).train()
    sgd = build_optimizer(net, get_train_config("shapes_tiny", lr=lr, lr_batch=None))  # lr as given, no warm-up
    losses, norms = [], []
    for s in range(steps):
        batch_images, batch_targets = collate_fn([small_data[2 * s], small_data[2 * s + 1]])  # 2 x (3, 64, 64)
        terms, norm = training_step(net, sgd, batch_images, batch_targets, grad_clip or math.inf)
        losses.append(sum(terms.values()).item())
        norms.append(norm)
        if not math.isfinite(losses[-1]):
            break
    return losses, norms


hot = {"lr 0.02, clip 10": short_run(0.02, 10.0), "lr 0.3, clip 10": short_run(0.3, 10.0),
       "lr 0.3, no clip": short_run(0.3, None)}
for name, (losses, norms) in hot.items():
    clipped = sum(n > 10.0 for n in norms) if "clip 10" in name else 0
    print(f"{name:<17} steps run {len(losses):>2}  clipped at {clipped:>2}  max |grad| {max(norms):10.3g}  "
          f"largest loss {max(losses):10.3g}  last loss {losses[-1]:.3g}")
assert all(math.isfinite(v) for v in hot["lr 0.3, clip 10"][0]) and not math.isfinite(hot["lr 0.3, no clip"][0][-1])
assert sum(n > 10.0 for n in hot["lr 0.3, clip 10"][1]) > sum(n > 10.0 for n in hot["lr 0.02, clip 10"][1])

# %%
fig, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
for (name, (losses, _)), style in zip(hot.items(), ("-", "--", ":")):
    finite = [v for v in losses if math.isfinite(v)]
    ax.plot(range(1, len(finite) + 1), finite, style, marker="o", markersize=3, linewidth=1.5, label=name)
no_clip = hot["lr 0.3, no clip"][0]
ax.annotate(f"NaN at step {len(no_clip)}", xy=(len(no_clip) - 1, no_clip[-2]), xytext=(len(no_clip) + 0.5, no_clip[-2] / 10),
            arrowprops=dict(arrowstyle="->", color="C2"), color="C2", fontsize=9)
ax.set(yscale="log", xlabel="step", ylabel="loss (sum of the five terms)",
       title="A rate 15x too high: the clip keeps the loss finite, not low")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# The printed lines are the lesson. At 0.02 the gradient norm stays below the cap and the clip is a
# no-op. At 0.3 without a clip, each step overshoots, the next gradient is larger, and within a few
# steps the loss overflows to NaN. With the clip, every gradient SGD receives has norm at most 10; with
# momentum 0.9 the velocity can add up to $10 / (1 - 0.9) = 100$ of it (section 4.1), so a step is at
# most about $0.3 \times 100 = 30$ long (plus the small weight-decay term). That bound keeps the run
# finite, but the clip fires at most steps and the loss jumps by orders of magnitude: a clip is a
# seat belt against a rare bad batch, not a cure for a wrong rate. The cure is the rate itself, and
# the warm-up of section 4.2 for the first steps.

# %% [markdown]
# ### 3.3 Overfitting one batch: the first check of a new setup
#
# Before any long run, train on one batch, the same few images every step, until the loss is small. A
# model that cannot memorise four images has a bug, not a tuning problem: targets in the wrong
# coordinates, a frozen layer, a learning rate that never leaves zero. What to expect: the total falls to
# a small fraction of its start and the RPN's terms almost to zero; the mask loss cannot reach zero, because
# its soft 28×28 targets set a floor (notebook 07's BCE floor).

# %%
OVERFIT_STEPS = 100
one_cfg = get_train_config("shapes_tiny", batch_size=BATCH, lr=LR, lr_batch=BATCH, warmup_steps=10, hflip=0.0)
torch.manual_seed(0)
one_model = build_maskrcnn(one_cfg.model, num_classes=4).train()
one_optimizer = build_optimizer(one_model, one_cfg)
one_scheduler = build_scheduler(one_optimizer, one_cfg, total_steps=10**6)  # warm-up, then a flat rate
images, targets = collate_fn([ShapesDataset(BATCH, seed=0)[i] for i in range(BATCH)])  # one batch, kept
one_history = []
for step in range(OVERFIT_STEPS):
    loss_dict, _ = training_step(one_model, one_optimizer, images, targets, one_cfg.grad_clip)
    one_scheduler.step()
    one_history.append({k: float(v.detach()) for k, v in loss_dict.items()})
for step in (1, 20, 50, OVERFIT_STEPS):
    terms = one_history[step - 1]
    print(f"step {step:3d}: loss {sum(terms.values()):.3f}  " + "  ".join(f"{k.removeprefix('loss_')} {v:.3f}"
                                                                     for k, v in terms.items()))
first, last = (sum(one_history[i].values()) for i in (0, -1))
assert last < 0.2 * first and one_history[-1]["loss_objectness"] < 0.05 and one_history[-1]["loss_mask"] > 0.05

# %% [markdown]
# ## 4. The recipe
#
# The paper trains on COCO for 160k iterations of 16 images (8 GPUs, 2 images each), with SGD at
# learning rate 0.02, divided by 10 at iteration 120k, weight decay 0.0001 and momentum 0.9 (Sec. 3.1,
# "Training"). The library's presets keep the optimiser and place the decays at fractions of the run,
# so one rule serves runs of any length. A preset's `lr` is the rate for a total batch of `lr_batch`
# images; a run with another total batch (GPUs × images per GPU) uses `lr × batch / lr_batch`, the
# linear scaling rule of Goyal et al. (2017), computed by `scaled_lr` and printed when training starts.
# On one GPU with 2 images, `resnet50_fpn`'s 0.02 for 16 images becomes 0.0025. The next cell prints the
# paper's recipe beside the two presets (`resnet50_fpn` is torchvision's COCO recipe, `shapes_tiny` ours
# for the CPU).

# %%
# NBVAL_CHECK_OUTPUT
paper = dict(model="ResNet-50/101-FPN", batch_size=16, lr=0.02, lr_batch=16, momentum=0.9, weight_decay=1e-4,
             warmup_steps="-", milestones="120k of 160k (0.75)", grad_clip="-", norm="frozen BN")
print(f"{'':<14}{'paper':>22}{'resnet50_fpn':>20}{'shapes_tiny':>20}")
for key in paper:
    row = [paper[key]]
    for name in ("resnet50_fpn", "shapes_tiny"):
        preset = TRAIN_PRESETS[name]
        value = get_config(preset.model)["norm"] if key == "norm" else getattr(preset, key)
        row.append(tuple(round(m, 3) for m in value) if key == "milestones" else value)
    print(f"{key:<14}" + "".join(f"{str(v):>22}" if i == 0 else f"{str(v):>20}" for i, v in enumerate(row)))
assert TRAIN_PRESETS["shapes_tiny"].milestones == (0.75, 0.9)

# %% [markdown]
# ### 4.1 SGD with momentum and weight decay
#
# `build_optimizer` hands every trainable parameter to PyTorch's SGD:

# %%
show_source(build_optimizer)

# %% [markdown]
# PyTorch's SGD keeps a velocity $v$ per parameter. With gradient $g_t$, weight decay $\lambda$,
# momentum $\mu$ and learning rate $\eta_t$:
#
# $$v_{t+1} = \mu\, v_t + (g_t + \lambda w_t), \qquad w_{t+1} = w_t - \eta_t\, v_{t+1}, \qquad v_0 = 0 .$$
#
# Weight decay is the gradient of $\frac{\lambda}{2}\lVert w \rVert^2$ added to $g$; momentum makes the
# step an exponential average of past gradients, which smooths the noise of small batches. Two steps on a
# two-number "model" with the loss $w_0 + 2 w_1$ (so $g = (1, 2)$ at every step): the cell computes
# the formula by hand and runs `torch.optim.SGD`, and we expect the same numbers.

# %%
# NBVAL_CHECK_OUTPUT
w = torch.nn.Parameter(torch.tensor([1.0, -1.0]))  # (2,)
sgd = torch.optim.SGD([w], lr=0.1, momentum=0.9, weight_decay=1e-4)
w_hand, v_hand = torch.tensor([1.0, -1.0]), torch.zeros(2)  # (2,), (2,)
g = torch.tensor([1.0, 2.0])  # (2,) gradient of w0 + 2 w1
for t in range(2):
    sgd.zero_grad()
    (w[0] + 2 * w[1]).backward()
    sgd.step()
    v_hand = 0.9 * v_hand + (g + 1e-4 * w_hand)  # (2,)
    w_hand = w_hand - 0.1 * v_hand  # (2,)
    print(f"step {t + 1}: torch.optim.SGD w = ({w[0]:.6f}, {w[1]:.6f}),  by hand w = ({w_hand[0]:.6f}, {w_hand[1]:.6f})")
assert w.shape == w_hand.shape == (2,) and torch.allclose(w.detach(), w_hand)

# %% [markdown]
# The second step moves 1.9 times as far as the first (0.19 instead of 0.1 per unit of gradient): that
# is momentum building up. Over many steps with a constant gradient the step tends to $\eta / (1 - \mu)$,
# ten times the plain step.
#
# ### 4.2 The learning rate: linear warm-up, then step decay
#
# A freshly initialised network can produce large, badly aimed gradients in its first steps; at full
# learning rate they can throw the weights somewhere it never recovers from. A **linear warm-up**
# (Goyal et al. 2017) starts at a small fraction $\alpha$ of the rate and ramps to the full rate over
# $W$ steps. Later, **step decay** divides the rate by 10 at fixed points of the run, here 75% and 90%
# (the paper's single decay at 120k of 160k is also at 75%). With base rate $\eta_0$, total $T$ steps,
# milestones $m_j = \mathrm{round}(f_j T)$ and $\gamma = 0.1$, the rate at optimizer step $s$ (0-based) is
#
# $$\eta(s) = \eta_0 \cdot \Big(\alpha + (1 - \alpha)\frac{s}{W} \text{ if } s < W \text{ else } 1\Big)
#   \cdot \gamma^{\,|\{j \,:\, m_j \le s\}|} .$$
#
# `WarmupStepDecay` is that formula, as a callable object that `torch.optim.lr_scheduler.LambdaLR`
# multiplies into the base rate (an object rather than a lambda so that a checkpoint can save it):

# %%
show_source(WarmupStepDecay)

# %% [markdown]
# The `shapes_tiny` preset: 2000 images in batches of 8 is 250 steps per epoch; 12 epochs make 3000
# steps, so we expect milestones at steps 2250 and 2700 and a warm-up of 100 steps from
# $0.001 \cdot 0.02 = 0.00002$. The preset also has a 10-minute budget: after a few timed steps, the
# `Trainer` fits the whole schedule into the steps that will fit (`fit_to_budget`: milestones at the same
# fractions, warm-up at most 10% of the run). How many steps fit depends on the machine and its load:
# on the 2-core CPU of `benchmarks/README.md` ten minutes bought 905 to 1545 steps on 2026-11-22 and
# 549 on a busier 2026-12-01; the next cell fits the schedule to 900 steps, as an example. The cached
# model of section 6 runs a fixed 700 steps with the full 100-step warm-up (its schedule spans 3 whole
# epochs, 750 steps, and stops at step 700: section 6). The next cell prints the three
# schedules' key steps (0-based optimizer steps) and the rate at each.

# %%
# NBVAL_CHECK_OUTPUT
preset = TRAIN_PRESETS["shapes_tiny"]
per_epoch = steps_per_epoch(preset.train_images, preset, world_size=1)
full_run = WarmupStepDecay(preset.epochs * per_epoch, preset.warmup_steps, preset.warmup_factor,
                           preset.milestones, preset.gamma)
fitted_run = copy.deepcopy(full_run)
fitted_run.fit_to_budget(900)  # what the Trainer does once it has timed a few steps
cached_cfg = pretrained.train_config(pretrained.DEFAULT_STEPS)  # the cached model's recipe (section 6): no budget, nothing fitted
cached_run = WarmupStepDecay(cached_cfg.epochs * steps_per_epoch(cached_cfg.train_images, cached_cfg, 1),
                             cached_cfg.warmup_steps, cached_cfg.warmup_factor, cached_cfg.milestones,
                             cached_cfg.gamma)
schedules = {"preset, 12 epochs": full_run, "fitted to ~900 steps": fitted_run,
             f"cached model, {pretrained.DEFAULT_STEPS} steps": cached_run}
for name, schedule in schedules.items():
    lrs = {s: preset.lr * schedule(s) for s in (0, schedule.warmup_steps // 2, schedule.warmup_steps,
                                                *schedule.milestone_steps)}
    print(f"{name:<24} T={schedule.total_steps:<5} W={schedule.warmup_steps:<4} "
          f"milestones={schedule.milestone_steps}  lr at " + ", ".join(f"{s}: {v:.5f}" for s, v in lrs.items()))
assert per_epoch == 250 and full_run.milestone_steps == [2250, 2700]
assert cached_run.total_steps == 750 and cached_run.milestone_steps == [562, 675]  # 3 epochs; stops at 700

# %% [markdown]
# The same three schedules drawn over their runs (log scale, so each decay is one equal step down), and
# the first 150 steps on a linear scale, where the warm-up is a straight ramp. The preset and the
# cached model share their 100-step warm-up, so on the right the dashed line lies on the wide one.

# %%
fig, (ax_all, ax_warm) = plt.subplots(1, 2, figsize=(12, 4), layout="constrained")
styles = [dict(linewidth=3, alpha=0.5), dict(linewidth=1.2), dict(linewidth=1.5, linestyle="--", color="black")]
for (name, schedule), style in zip(schedules.items(), styles):
    steps = np.arange(schedule.total_steps)
    lr = np.array([preset.lr * schedule(int(s)) for s in steps])
    ax_all.plot(steps, lr, label=name, **style)
    ax_warm.plot(steps[:150], lr[:150], label=name, **style)
ax_all.set_yscale("log")
ax_all.set_title("WarmupStepDecay: whole runs")
ax_warm.set_title("The warm-up (first 150 steps): preset and cached model coincide")
for ax in (ax_all, ax_warm):
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ### 4.3 Gradient clipping
#
# `clip_grad_norm_` treats all gradients as one long vector $g$ and, if its norm is above $c$, scales
# every one of them by the same factor: $g \leftarrow g \cdot c / \lVert g \rVert$. The direction of
# the step is kept, only its length is capped. The paper uses no clipping; with a large batch and
# ImageNet-initialised weights it rarely needs any. Training from scratch with a few images per step, an
# unlucky early batch can produce a huge gradient, and one such step can ruin a run (the `Trainer` stops
# with an error at the first non-finite loss). A cap of 10 costs nothing when gradients are normal: the live run of section 3 printed how
# often it fired (its largest norm and the count of clipped steps). Two
# parameter tensors with gradients $(3, 4)$ and $(12,)$ have a global norm of
# $\sqrt{9 + 16 + 144} = 13$; clipped to 6.5 we expect every gradient halved.

# %%
# NBVAL_CHECK_OUTPUT
a, b = torch.zeros(2, requires_grad=True), torch.zeros(1, requires_grad=True)
a.grad, b.grad = torch.tensor([3.0, 4.0]), torch.tensor([12.0])  # (2,), (1,)
norm_before = torch.nn.utils.clip_grad_norm_([a, b], max_norm=6.5)
norm_after = torch.cat([a.grad, b.grad]).norm()
print(f"norm before {norm_before:.4f}, after {norm_after:.4f}; gradients now "
      f"({a.grad[0]:.4f}, {a.grad[1]:.4f}) and ({b.grad[0]:.4f},)")
assert a.grad.shape == (2,) and b.grad.shape == (1,) and torch.isclose(norm_after, torch.tensor(6.5))

# %% [markdown]
# ### 4.4 Normalisation for training from scratch: GroupNorm everywhere
#
# The paper fine-tunes a ResNet pretrained on ImageNet and freezes its BatchNorm layers as fixed affine
# maps. Nothing can be downloaded here, so `shapes_tiny` starts from random weights, and notebook 01
# (section 6) showed why neither BatchNorm option works then: frozen BN holds identity statistics
# ($\mu = 0$, $\sigma = 1$) forever, which leaves the network unnormalised for good, and ordinary BN
# estimates its statistics from the batch, which is noisy with 8 small images per step (and means
# different things on each GPU). GroupNorm (Wu & He 2018) normalises each image over groups of channels,
# independent of the batch size, and learns its scale and shift. "Rethinking ImageNet Pre-training"
# (He, Girshick & Dollár 2018) trained Mask R-CNN from scratch this way — GroupNorm in the backbone and
# the FPN, and GroupNorm heads, with a box head of four convolutions and one fc layer ("4conv1fc") — and
# matched fine-tuned models given a longer schedule. `shapes_tiny` takes the same choices; on the
# 10-minute shapes budget the GN heads lifted mask AP50 from 0.86 to 0.92 (the comment in
# `configs.py`; benchmarks/README.md). The settings side by side, and the normalisation layers of the
# model of section 2; we expect GroupNorm only:

# %%
# NBVAL_CHECK_OUTPUT
for key in ("depth", "norm", "trainable_layers", "box_head", "head_norm"):
    print(f"{key:<17} resnet50_fpn: {str(get_config('resnet50_fpn')[key]):<11} shapes_tiny: {get_config('shapes_tiny')[key]}")
norm_layers = {}
for module in demo_model.modules():
    if "Norm" in type(module).__name__:
        norm_layers[type(module).__name__] = norm_layers.get(type(module).__name__, 0) + 1
print("normalisation layers in shapes_tiny:", norm_layers)
assert set(norm_layers) == {"GroupNorm"}

# %% [markdown]
# ## 5. The Trainer
#
# `train.train(cfg, out_dir)` builds a `Trainer` and runs the same step in a loop, with what a long run
# needs added:
#
# - **data**: the training set wrapped in `SeededTransforms` (random horizontal flips, Fast R-CNN's and
#   torchvision's default, and scale jitter if `scale_jitter` is set, Appendix A.2), one DataLoader per epoch from
#   `make_loader` (section 5.1 says why);
# - **the schedule**: `LambdaLR(WarmupStepDecay)` stepped after every update, fitted to a time budget if
#   there is one;
# - **a log**: one JSON line per step in `log.jsonl`: step, epoch, lr, the loss and its five terms, the
#   gradient norm, images per second, time;
# - **checkpoints** at the end of every epoch and when the run stops, written atomically (Appendix B);
# - **stops**: the end of the schedule, `max_steps`, the time budget, Ctrl-C (which saves first), or a
#   non-finite loss (which stops before the bad update and names the step and terms);
# - **mixed precision** (`--amp`) on a GPU and **several GPUs** (`torchrun`), section 7 and the appendix "Mixed precision (AMP)".
#
# Its own step is `training_step` with those additions:

# %%
show_source(Trainer.train_step)

# %% [markdown]
# A short run: 80 images, batches of 4, one epoch, so 20 steps with a 5-step warm-up and decays at
# steps 15 and 18. `quiet=True` turns off the progress bar and messages; `evaluate=False` skips the
# COCO evaluation (notebook 11). Everything goes into a temporary directory. We expect it to stop with
# `done` after 20 steps, and the directory to hold the config, the log and one checkpoint.

# %%
trainer_cfg = get_train_config("shapes_tiny", train_images=80, batch_size=4, epochs=1, lr=0.01,
                               warmup_steps=5, max_minutes=None, workers=0, device="cpu")
workdir = tempfile.TemporaryDirectory()  # cleaned up at the end of the notebook
run_dir = Path(workdir.name) / "trainer_run"
result = train(trainer_cfg, run_dir, evaluate=False, quiet=True)
print("stopped:", result["stopped"], "| steps:", result["step"], "| epochs done:", result["epoch"])
print("files:", sorted(p.name for p in run_dir.iterdir()))
assert (result["stopped"], result["step"]) == ("done", 20)

# %% [markdown]
# The log, read back with `visualize.read_log`. We print the fields of one record: the
# same as the live loop's, plus images per second and time (`plot_losses` draws every `loss*` field).

# %%
# NBVAL_CHECK_OUTPUT
log = read_log(run_dir / "log.jsonl")
print(len(log), "records; fields:", list(log[0]))
assert [r["step"] for r in log] == list(range(1, 21))

# %% [markdown]
# ### 5.1 Resuming exactly
#
# "Exactly" means: train $k$ steps, stop, start a new process from the checkpoint, train $k$ more, and
# get the same weights, to the last bit, as one run of $2k$ steps. Restoring the weights and the optimizer
# is not enough. Three more choices make it hold (train.py and train_data.py):
#
# 1. **The data order** of epoch $e$ is a permutation drawn from a generator seeded with (seed, $e$), not
#    from the global RNG; a run resumed in the middle of an epoch rebuilds that epoch's order and skips
#    the batches it already trained on (`make_loader`, `SkipFirst`).
# 2. **Each image's flip** is drawn from a generator seeded with (seed, epoch, index) (`SeededTransforms`),
#    so it does not depend on which DataLoader worker loads the image, or how many images that worker
#    loaded before.
# 3. **The global RNG**, from which the RPN's and the RoI heads' samplers draw their random
#    positives and negatives (notebook 04), is saved in the checkpoint and restored last, after building
#    the model (which draws random numbers too); data loading never touches it.
#
# The experiment, with tiny settings so that it takes seconds: 8 images in batches of 2 (4 steps per
# epoch), two epochs in the schedule, $k = 3$. Run A stops after 3 steps, in the middle of epoch 0; we
# scramble every generator of this process, then resume it (a fresh `Trainer`, as a new process would)
# until step 6, which crosses into epoch 1 with a new order and new flips. Run B does 6 steps in one
# go. We expect every one of the model's tensors and every momentum buffer to be `torch.equal`.

# %%
tiny = get_train_config("shapes_tiny", train_images=8, val_images=4, batch_size=2, epochs=2, warmup_steps=2,
                        max_minutes=None, workers=0, device="cpu")
k = 3
dir_a, dir_b = Path(workdir.name) / "run_a", Path(workdir.name) / "run_b"

part = train(dataclasses.replace(tiny, max_steps=k), dir_a, evaluate=False, quiet=True)  # A: steps 1..3
stopped = load_checkpoint(dir_a / "checkpoint.pt")
shutil.copy(dir_a / "checkpoint.pt", Path(workdir.name) / f"step{k}.pt")  # kept for the control below
print(f"run A stopped ({part['stopped']}) at step {stopped['step']}: epoch {stopped['epoch']}, "
      f"step {stopped['step_in_epoch']} of {steps_per_epoch(8, tiny, 1)} in it")

torch.manual_seed(12345), np.random.seed(12345)  # the checkpoint's RNG states must undo this
rest = train(resume_config(stopped, max_steps=2 * k), dir_a, resume=dir_a / "checkpoint.pt",
             evaluate=False, quiet=True)  # A: steps 4..6
whole = train(dataclasses.replace(tiny, max_steps=2 * k), dir_b, evaluate=False, quiet=True)  # B: steps 1..6
print("run A resumed to step", rest["step"], "| run B ran to step", whole["step"])
assert stopped["step_in_epoch"] == k and rest["step"] == whole["step"] == 2 * k

# %%
# NBVAL_CHECK_OUTPUT
a, b = load_checkpoint(dir_a / "checkpoint.pt"), load_checkpoint(dir_b / "checkpoint.pt")
weights_equal = [torch.equal(a["model"][key], b["model"][key]) for key in b["model"]]
momenta_equal = [torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
                 for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values())]
log_a, log_b = read_log(dir_a / "log.jsonl"), read_log(dir_b / "log.jsonl")
print(f"model tensors equal: {sum(weights_equal)} of {len(weights_equal)}")
print(f"momentum buffers equal: {sum(momenta_equal)} of {len(momenta_equal)}")
print("logged losses equal at steps", [ra["step"] for ra, rb in zip(log_a, log_b) if ra["loss"] == rb["loss"]])
assert all(weights_equal) and all(momenta_equal) and len(weights_equal) == len(b["model"])

# %% [markdown]
# A control for choice 3: the same resume from the step-3 checkpoint, but with `restore_rng_state`
# switched off, so steps 4–6 run with whatever state the global generator happens to be in. The same
# data arrive in the same order with the same flips, but the samplers pick other anchors and RoIs. We
# expect the weights to differ from run B.

# %%
dir_c = Path(workdir.name) / "run_c"
torch.manual_seed(12345)
with mock.patch("mrcnn_teach.train.restore_rng_state", lambda state: None):
    train(resume_config(stopped, max_steps=2 * k), dir_c, resume=Path(workdir.name) / f"step{k}.pt",
          evaluate=False, quiet=True)
c = load_checkpoint(dir_c / "checkpoint.pt")
differ = [key for key in b["model"] if not torch.equal(c["model"][key], b["model"][key])]
largest = max((c["model"][key] - b["model"][key]).abs().max().item() for key in differ)
print(f"without the RNG state: {len(differ)} of {len(b['model'])} tensors differ from run B "
      f"(largest difference {largest:.1e})")
assert len(differ) > 0

# %% [markdown]
# **Common mistake: "resuming gives the same weights bit for bit, on any machine".** It holds here
# because this run is on a CPU, where every operation it uses gives the same bits every time. On a GPU
# it does not hold, and the code does not claim it there: the backward pass of RoIAlign adds the
# gradient of every sampling point into the feature map with atomic additions (torchvision's CUDA
# kernel; this library's `scatter_add_`/`index_add_` are atomic on CUDA too), whose order changes from
# run to run, and floating-point addition is not associative; cuDNN may also pick non-deterministic
# convolution algorithms. The library never calls `torch.use_deterministic_algorithms(True)` nor sets
# `torch.backends.cudnn.deterministic`, so two GPU runs from the same checkpoint agree at first to the
# last few bits and then drift apart. What resuming on a GPU keeps is the *run*: the same data order,
# flips, sampler states, schedule and momentum, so the result is as good as one that never stopped, not
# identical to it.

# %% [markdown]
# ## 6. The model the other notebooks use
#
# Notebooks 00–08 and 10–12 call `pretrained.trained_shapes_model()`. On its first call it trains
# `shapes_tiny` with this recipe, caches the checkpoint and its log, and every later call loads them.
# The recipe is the preset with a fixed number of steps instead of a time budget, so the run is the
# same on every machine that runs it:

# %%
show_source(pretrained.train_config)

# %% [markdown]
# 700 steps of 8 images are 5600 images, 2.8 epochs of the 2000. `train_config` lets the schedule span
# whole epochs (3 epochs, 750 steps) and stops training at step 700, so the decays at 75% and 90% of the
# schedule fall at optimizer steps 562 and 675, and the last 25 steps of the schedule are never run.
# `pretrained.training_log()` returns the log of that run (it trains the model first if it is not cached
# yet). The log counts completed steps from 1, so the first record at a lower rate is one past each
# milestone. The next cell prints the recipe's schedule, a few records of the log, and the mean loss over
# four windows of the run.

# %%
N = pretrained.DEFAULT_STEPS
cached_log = pretrained.training_log(N)  # cached_cfg and cached_run are from section 4.2
m1, m2 = cached_run.milestone_steps
print(f"epochs {cached_cfg.epochs}, batch {cached_cfg.batch_size}, warm-up {cached_run.warmup_steps}, "
      f"milestones {cached_run.milestone_steps}, {len(cached_log)} logged steps")
for r in cached_log:
    if r["step"] in (1, 100, 200, m1, m1 + 1, m2, m2 + 1, N):
        print(f"step {r['step']:3d}  lr {r['lr']:.5f}  loss {r['loss']:.3f}")
windows = {"first 5 steps": (1, 5), "end of warm-up": (91, 100), "100 steps before the first decay": (m1 - 99, m1),
           f"after the decays ({m2 + 1}-{N})": (m2 + 1, N)}
for name, (a, b) in windows.items():
    print(f"mean loss, {name:<34} {np.mean([r['loss'] for r in cached_log[a - 1:b]]):.3f}")
box_early, box_later = (np.mean([r['loss_box_reg'] for r in cached_log[a - 1:b]]) for a, b in ((1, 20), (51, 70)))
print(f"mean loss_box_reg, steps 1-20: {box_early:.3f}; steps 51-70: {box_later:.3f}")
assert len(cached_log) == N and [r["step"] for r in cached_log] == list(range(1, N + 1))
assert cached_log[m1]["lr"] < cached_log[m1 - 1]["lr"]  # step m1 + 1 is the first at the lower rate

# %%
fig, (ax_loss, ax_terms) = plt.subplots(1, 2, figsize=(12, 4.2), layout="constrained")
steps = np.array([r["step"] for r in cached_log])
total = np.array([r["loss"] for r in cached_log])
smooth = np.convolve(total, np.ones(20) / 20, mode="valid")  # running mean over 20 steps
ax_loss.plot(steps, total, color="0.75", linewidth=0.8, label="loss, per step")
ax_loss.plot(steps[19:], smooth, color="black", linewidth=2, label="loss, mean of 20 steps")
for m in cached_run.milestone_steps:
    ax_loss.axvline(m + 0.5, color="C3", linestyle="--", linewidth=1)  # logged step m + 1 is the first at the lower rate
ax_loss.text(cached_run.milestone_steps[0], ax_loss.get_ylim()[1] * 0.9, " lr / 10 ", color="C3", ha="right")
ax_loss.set_xlabel("step")
ax_loss.set_ylabel("loss")
ax_loss.set_title(f"Cached model: total loss ({N} steps of 8 images)")
ax_loss.legend(fontsize=8)
ax_loss.grid(alpha=0.3)
plot_losses([{k: v for k, v in r.items() if k != "loss"} for r in cached_log], log_scale=True, ax=ax_terms)
ax_terms.set_title("Cached model: the five terms")
plt.show()

# %% [markdown]
# The total falls fast in the first steps, then stalls and even rises for a while, around steps
# 40–70, while the box regression loss grows (the printed means): section 3.1's effect, as the RPN's
# proposals start to land on the shapes and the positives multiply. At the full rate it then falls
# slowly, with the noise of 8-image batches about as large as the progress; after the first decay the
# mean drops to a lower level and stays there (the windows printed above). Among the terms, objectness
# and the RPN's box loss become small early; the classifier, the box regression and the mask loss make
# up most of what remains. Notebook 11 measures what this model's AP is on the held-out images.

# %% [markdown]
# ### 6.1 Held-out AP against step
#
# The training loss is measured on each batch's own sampled RoIs, and section 3.1 showed it rising
# while the model improves. What the run is for is the AP on images it never trains on.
# `benchmarks/val_ap_by_step.py` re-ran this very recipe, stopping every 100 steps (each stop is an
# exact resume, section 5.1, so the stops do not change the run) and scoring each checkpoint with COCO
# AP on the 100 held-out images the other notebooks use. It takes the training time plus seven
# evaluations, too long for a notebook, so the next cell reads the JSON file it wrote, with the mean
# training loss of the cached run's log over each stretch of 100 steps beside it. The benchmark ran with
# one thread and the cached model with two: sums taken in another order round differently, and over 700
# steps the two runs drift apart (the printed largest weight difference), so the last row is the same run
# as the one-thread tuning row of benchmarks/README.md and differs from the cached model's AP (notebook 11)
# by up to about 0.02. On one machine with one thread count, the stops do not change the run.

# %%
BENCHMARKS = next((d for d in (Path("..") / "benchmarks", Path(pretrained.__file__).resolve().parents[1] / "benchmarks")
                   if (d / "val_ap_by_step.py").exists()), Path("..") / "benchmarks")
by_step = json.loads((BENCHMARKS / "results" / "val_ap_by_step.json").read_text())
rows = by_step["rows"]
print(f"{by_step['command']}  ({by_step['date']}, {by_step['machine']}); largest weight difference at step "
      f"{N} from the cached model: {by_step['max_weight_difference_to_cached_model']:.2g}")
print(f"{'steps':>9} {'mean loss':>10} {'box AP50':>9} {'mask AP50':>10} {'mask AP':>8}")
for prev, row in zip([0] + [r["step"] for r in rows], rows):
    window = np.mean([r["loss"] for r in cached_log[prev:row["step"]]])
    print(f"{prev + 1:>4}-{row['step']:<4} {window:10.3f} {row['box_AP50']:9.3f} {row['mask_AP50']:10.3f} "
          f"{row['mask_AP']:8.3f}")
rising = [r["step"] for r, nxt in zip(rows, rows[1:]) if nxt["mask_AP"] < r["mask_AP"]]
print(f"mask AP falls between two stops after step(s) {rising}" if rising else
      "mask AP rises from every stop to the next")
assert [r["step"] for r in rows][-1] == N and rows[-1]["mask_AP"] > rows[0]["mask_AP"]

# %%
fig, ax = plt.subplots(figsize=(8, 4), layout="constrained")
stops = [r["step"] for r in rows]
for key, colour, label in (("box_AP50", "C0", "box AP50"), ("mask_AP50", "C2", "mask AP50"),
                           ("mask_AP", "C1", "mask AP (IoU 0.5:0.95)")):
    ax.plot(stops, [r[key] for r in rows], "o-", color=colour, label=label)
for m in cached_run.milestone_steps:
    ax.axvline(m + 0.5, color="C3", linestyle="--", linewidth=1)
ax.text(cached_run.milestone_steps[0], 0.05, "lr / 10 ", color="C3", ha="right")
ax.set_xlabel("training step")
ax.set_ylabel("AP on the 100 held-out images")
ax.set_ylim(0, 1)
ax.set_title("The cached model's recipe: held-out AP every 100 steps")
ax.legend(loc="upper left", fontsize=9)
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# At the scale of 100-step means the training loss and the held-out AP move together: both improve from
# every stop to the next (the printed line and the table). What only the validation curve tells is what the
# improvement is worth, in the measure the model is judged by: more than a tenth of AP per 100 steps early
# on, a few hundredths after the first decay, and whether it has levelled off. Here it has not quite, so
# more steps would still pay a little (benchmarks/README.md: 800 steps score 0.01–0.02 more AP50 than 700,
# for 14% more time). The loss's short rises of section 3.1 last a few tens of steps, too brief to show at
# this resolution.

# %% [markdown]
# ## 7. Full runs from the command line
#
# These commands are not run here; each writes into its `--out` directory `train_config.json`,
# `log.jsonl` (the format of section 5), `checkpoint.pt` and, after the held-out evaluation,
# `metrics.json`.
#
# The `shapes_tiny` preset with its 10-minute budget (the schedule is fitted to the steps that fit),
# then COCO AP on 100 held-out images:
#
# ```bash
# python -m mrcnn_teach train --config shapes_tiny --out runs/shapes
# ```
#
# Continue a stopped run exactly (section 5.1); the time budget counts again for this invocation:
#
# ```bash
# python -m mrcnn_teach train --resume runs/shapes/checkpoint.pt
# ```
#
# The demo: the same training (starting again in `runs/demo`), then the evaluation, and two pictures,
# `predictions.png` (ground truth beside predictions on held-out images) and `losses.png`:
#
# ```bash
# make demo        # = python -m mrcnn_teach demo --out runs/demo
# ```
#
# On a GPU, mixed precision (the appendix "Mixed precision (AMP)"). A GPU finishes the preset's 12 epochs (3000 steps) well
# inside the budget:
#
# ```bash
# python -m mrcnn_teach train --config shapes_tiny --out runs/shapes_gpu --amp
# ```
#
# Several GPUs on one machine: `torchrun` starts N processes, one per GPU. Each holds a full copy of the
# model and reads its own slice of every epoch (`DistributedSampler`); after each backward pass the
# gradients are averaged across the processes (`DistributedDataParallel`), so every copy takes the same
# SGD step. Only process 0 writes the log and checkpoints. `--batch-size` is per process, so the total
# batch is N × 8 and the steps per epoch shrink N-fold; the learning rate is scaled with the
# total batch for you (`scaled_lr`, printed when training starts: 0.02 × 4 × 8 / 8 = 0.08 here). GroupNorm needs nothing extra here, unlike BatchNorm, whose
# statistics would differ on every GPU.
#
# ```bash
# torchrun --nproc_per_node=4 -m mrcnn_teach train --config shapes_tiny --out runs/ddp --amp
# ```
#
# `python -m mrcnn_teach train --help` lists every option; `--set KEY=VALUE` changes any `TrainConfig`
# field, e.g. `--set train_images=500`.

# %% [markdown]
# ## Summary
#
# - The loss is the plain sum of five terms: two of the RPN, two of the box head, one of the mask head.
#   The detection head's two terms alone leave the RPN and the mask branch untrained. A fresh mask head
#   starts above $\ln 2$, because its He-initialised logits are spread out.
# - `training_step` is forward, sum, `zero_grad`, backward, clip the global gradient norm, SGD step.
# - A loss averaged over sampled RoIs is not a fixed yardstick: the box and classifier losses rise while
#   the positives multiply, as the RPN learns where the shapes are.
# - The recipe: SGD with momentum 0.9 and weight decay 1e-4; the linear scaling rule for the rate; a
#   linear warm-up, then the rate divided by 10 at 75% and 90% of the run (`WarmupStepDecay`); gradient
#   norm clipped at 10, a seat belt that a healthy run rarely touches; GroupNorm in the backbone and the
#   heads, because we train from scratch.
# - The `Trainer` adds a JSON-lines log, atomic checkpoints, stops that save, AMP and multi-GPU. With
#   seeded epoch orders, per-image seeded flips and the saved global RNG, a resumed run on a CPU is
#   equal, bit for bit, to one that never stopped; on a GPU, atomic additions make it equal only in
#   distribution.
# - The model the other notebooks load is this recipe run for 700 steps of 8 images, with the flip as
#   its only augmentation: Fast R-CNN's and torchvision's default, not something the Mask R-CNN paper
#   states (Appendix A).

# %% [markdown]
# ## Exercises
#
# Worked solutions are in `solutions/09_training.py` (for teachers). The checks also run cases the
# notebook does not show, and refuse an answer that calls the library function that would give it.
#
# ### Exercise 1 — Predict · about 15 min: the learning rate of a whole run at step s
#
# A run without a time budget is described by the number of training images, the number of processes
# (GPUs) and its `TrainConfig`. Work out, first on paper for COCO train2017 (118,287 images) on 8 GPUs
# with 2 images each, `lr=0.02` for `lr_batch=16`, 12 epochs, warm-up 1000 steps from factor 0.001 and
# milestones at 8/12 and 11/12: how many steps per epoch and in all, at which steps the two decays
# fall, and the rate at step 500. Then write `my_lr(step, num_images, world_size, cfg)` for any run: the
# rate SGD uses at optimizer step `step` (0-based). It combines three things of this notebook: the
# linear scaling rule (section 4; `lr_batch=None` means the rate as given), the steps per epoch when
# `DistributedSampler` gives every process the same number of images (it repeats a few to pad) and the
# last batch may be short, and `WarmupStepDecay`'s formula (section 4.2). The formula's body you have
# seen in section 4.2's source; what is new is the run around it: its length, from the steps per
# epoch (which place every milestone), and the base rate the scaling rule gives. The check refuses an
# answer that calls `WarmupStepDecay`, `scaled_lr`, `steps_per_epoch`, `build_optimizer`,
# `build_scheduler` or a `DistributedSampler`.
#
# *Hint:* total steps = epochs × steps per epoch, and the milestones are `round(fraction × total)`,
# so an error in the steps per epoch moves every decay.

# %%
def my_lr(step, num_images, world_size, cfg):
    raise NotImplementedError  # your code here


# %%
from mrcnn_teach.exercises.nb09 import check_box_loss_per_positive, check_clip, check_jitter_boxes, check_run_lr

check_run_lr(my_lr);

# %% [markdown]
# ### Exercise 2 — Debug · about 10 min: a gradient clip that bends the step
#
# `buggy_clip_grad_norm` below is meant to do what `torch.nn.utils.clip_grad_norm_` does (section 4.3):
# return the global norm of all the gradients before clipping and, if it is above `max_norm`, scale
# every gradient by the same factor. It clips, and on a model with one weight tensor it is even right,
# but it changes the direction of the step. Find the bug, say what it does to a network whose head has
# much larger gradients than its backbone, and write the fixed `my_clip_grad_norm(parameters, max_norm)`
# (parameters whose `.grad` is None are frozen: skip them), without calling torch's clipping functions.
#
# *Hint:* compute the factor from one norm over all tensors, and only ever shrink.

# %%
def buggy_clip_grad_norm(parameters, max_norm):
    """Should: the global gradient norm before clipping; every gradient scaled by max_norm / norm if above."""
    norms = []
    for p in parameters:
        if p.grad is None:
            continue
        norm = p.grad.norm()  # () this tensor's norm
        norms.append(norm)
        if norm > max_norm:
            p.grad.mul_(max_norm / norm)
    return torch.stack(norms).norm()  # () the global norm before clipping


ga, gb = torch.zeros(2, requires_grad=True), torch.zeros(1, requires_grad=True)
ga.grad, gb.grad = torch.tensor([3.0, 4.0]), torch.tensor([12.0])  # (2,), (1,) global norm 13
print("buggy: norm", float(buggy_clip_grad_norm([ga, gb], 6.5)), "gradients", ga.grad.tolist(), gb.grad.tolist())

# %%
def my_clip_grad_norm(parameters, max_norm):
    raise NotImplementedError  # your code here


# %%
check_clip(my_clip_grad_norm);

# %% [markdown]
# ### Exercise 3 — Derive · about 10 min: the box error per positive RoI, over windows of steps
#
# Section 3.1 argued that `loss_box_reg` rises because it is summed over the positive RoIs and divided
# by all the sampled ones. Write `my_per_positive(history, window)`: from records with the keys
# `loss_box_reg`, `positives` and `sampled` (as the live run logged them), cut the records into windows
# of `window` consecutive steps (the last one may be shorter) and return, per window, the smooth-L1
# error summed over the 4 coordinates of one positive RoI, on average over **all the positive RoIs of
# the window**: a step with 60 positives counts six times as much as one with 10, and a step with none
# adds nothing (every window has at least one). `window=1` gives the value of each step. Then plot it
# for the live run's `history` with `window=10` beside the window means of `loss_box_reg`: does the
# error per positive fall over the steps where the loss rose? What would a log of this number have
# told you at step 40?
#
# *Hint:* undo the division by all sampled RoIs to get each step's summed error; add the errors and the
# positives over the window before you divide. The mean of the steps' own ratios weighs every step
# the same, which is not what is asked.

# %%
def my_per_positive(history, window):
    raise NotImplementedError  # your code here


# %%
check_box_loss_per_positive(my_per_positive);

# %% [markdown]
# ### Exercise 4 — Predict · about 15 min: boxes through scale jitter
#
# A dataset without masks still needs its boxes moved with the image. Write
# `my_jitter_boxes(boxes, image_size, scale, offset)` for Appendix A.2's formula (read Appendix
# A.2, after the exercises, first) with the window the
# image's own size `(H, W)`: scale, shift by `offset = (top, left)`, clip to the window, and drop the
# boxes left with no width or height. One detail decides the last decimals: the resized image has
# `round(H * scale)` rows, so the scale really applied is `round(H * scale) / H` (and likewise for the
# width). The check compares your boxes with `scale_jitter`'s on targets without masks.
#
# *Hint:* one box worked through, as a check on your order of coordinates: image 128×128, $s = 2$,
# window at (top, left) = (30, 40). The box $(x_1, y_1, x_2, y_2) = (10, 20, 50, 60)$ scales to
# $(20, 40, 100, 120)$, shifts by (left, top, left, top) to $(-20, 10, 60, 90)$ and clips to
# $(0, 10, 60, 90)$. A box that ends up with $x_1 = x_2$ or $y_1 = y_2$ after the clip is dropped.

# %%
def my_jitter_boxes(boxes, image_size, scale, offset):
    raise NotImplementedError  # your code here


# %%
check_jitter_boxes(my_jitter_boxes);

# %% [markdown]
# Next: [10 — Inference](10_inference.ipynb)

# %% [markdown]
# ## Appendix A. The training data and its augmentation
#
# ### A.0 The shapes
#
# `ShapesDataset` draws its images on demand: image `i` is a function of `(seed, i)` only, so it is the
# same on every machine and in every DataLoader worker, and nothing is downloaded. Training uses
# `seed=0`, the held-out images `seed=1`. Each image has 1 to 4 squares, circles and triangles on a
# colour gradient, with a little noise. An item is `(image, target)` in torchvision's detection format:
# the image `(3, 128, 128)` in [0, 1]; `boxes (N, 4)` as `x1, y1, x2, y2` in pixels, `labels (N,)` in
# 1..3 (0 is background), `masks (N, 128, 128)` of 0/1, and `image_id`, `area`, `iscrowd`, which COCO
# evaluation needs (notebook 11). The next cell prints the shapes for image 0, which holds three shapes.

# %%
# NBVAL_CHECK_OUTPUT
train_data = ShapesDataset(2000, seed=0)
image, target = train_data[0]
N = len(target["labels"])
print_shapes(image=image, **target)
print("classes of its shapes:", [CLASSES[label] for label in target["labels"].tolist()])
assert image.shape == (3, 128, 128) and 0.0 <= image.min() and image.max() <= 1.0
assert target["boxes"].shape == (N, 4) and target["labels"].shape == (N,)
assert target["masks"].shape == (N, 128, 128) and target["area"].shape == (N,)

# %% [markdown]
# Eight training images with their annotations drawn the way every notebook draws instances: a
# translucent mask, the box, and the class name, one colour per class.

# %%
# README thumbnail
fig, axes = plt.subplots(2, 4, figsize=(11, 6), layout="constrained")
for i, ax in enumerate(axes.flat):
    image_i, target_i = train_data[i]
    draw_instances(ax, image_i, target_i["boxes"], target_i["labels"], masks=target_i["masks"],
                   class_names=CLASSES)
    ax.set_title(f"image {i}: {len(target_i['labels'])} shapes", fontsize=9)
fig.suptitle("Shapes training images (seed 0): ground-truth masks, boxes and classes")
plt.show()

# %% [markdown]
# ### A.1 Occlusion: masks are what is visible
#
# Shapes are painted one after the other, so a shape painted later covers the ones under it (the
# painter's algorithm). The annotation follows the picture: the mask of shape $i$ is the set of pixels
# it covers that no later shape covers,
#
# $$M_i^{\text{visible}} = M_i \wedge \neg\,(M_{i+1} \vee M_{i+2} \vee \dots \vee M_{N}),$$
#
# which makes the masks of one image disjoint. A shape with less than 20% of its area (or fewer than
# 10 pixels) left visible is dropped from the scene altogether, so every painted pixel belongs to an
# annotated shape. `visible_masks` computes the formula for all shapes at once, with a cumulative OR
# taken from the last shape backwards:

# %%
show_source(visible_masks)

# %% [markdown]
# A toy case first: two 3×3 squares on a 6×6 grid, the second painted over the bottom-right corner of
# the first. We expect the first square to lose the one pixel they share and the second to keep all 9.

# %%
# NBVAL_CHECK_OUTPUT
full = np.zeros((2, 6, 6), dtype=bool)  # (N, H, W) in painting order
full[0, 1:4, 1:4] = True  # painted first
full[1, 3:6, 3:6] = True  # painted second, on top
visible = visible_masks(full)  # (N, H, W)
for i in range(2):
    print(f"shape {i}: full area {full[i].sum()}, visible area {visible[i].sum()}")
    print(visible[i].astype(int))
assert visible.shape == full.shape == (2, 6, 6)
assert not (visible[0] & visible[1]).any()  # disjoint

# %% [markdown]
# Now a real one. In training image 29 the first shape, a triangle, is partly covered by the shapes
# painted after it. We rebuild its full outline with `shape_mask` and compare it with the annotation.
# The box of a shape is the tight box of its **visible** mask (`masks_to_boxes`), so we expect the
# annotated box to be narrower than the box of the full triangle, and to equal the box of the visible
# mask exactly.

# %%
index = 29
scene_image, scene_visible, scene_shapes = train_data.scene(index)  # (H, W, 3), (N, H, W) bool, N shapes
scene_full = np.stack([shape_mask(s, 128, 128) for s in scene_shapes])  # (N, H, W) before occlusion
_, target_29 = train_data[index]
hidden = 0  # the triangle, painted first
box_full = masks_to_boxes(scene_full[hidden:hidden + 1])[0]  # (4,)
box_visible = masks_to_boxes(scene_visible[hidden:hidden + 1])[0]  # (4,)
print(f"shape {hidden} ({CLASSES[scene_shapes[hidden].label]}): full area {scene_full[hidden].sum()} px, "
      f"visible {scene_visible[hidden].sum()} px ({scene_visible[hidden].sum() / scene_full[hidden].sum():.0%})")
print("box of the full shape:   ", box_full.tolist())
print("box of the visible mask: ", box_visible.tolist())
print("annotated box:           ", target_29["boxes"][hidden].tolist())
assert scene_full.shape == scene_visible.shape == target_29["masks"].shape == (len(scene_shapes), 128, 128)
assert torch.equal(target_29["masks"].bool(), torch.from_numpy(scene_visible))
assert torch.equal(target_29["boxes"], torch.from_numpy(masks_to_boxes(scene_visible)))

# %%
fig, axes = plt.subplots(1, 3, figsize=(11, 4), layout="constrained")
draw_instances(axes[0], scene_image, target_29["boxes"], target_29["labels"], masks=target_29["masks"],
               class_names=CLASSES)
axes[0].set_title(f"image {index}: annotations\n(the triangle partly under the square)", fontsize=10)
for ax, mask, box, name in ((axes[1], scene_full[hidden], box_full, "full shape (not annotated)"),
                            (axes[2], scene_visible[hidden], box_visible, "visible mask = the target")):
    ax.imshow(scene_image * 0.35 + 0.65, interpolation="nearest")  # the picture, faded
    ax.imshow(np.ma.masked_where(~mask, mask), cmap="autumn", alpha=0.8, interpolation="nearest")
    x1, y1, x2, y2 = box
    ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="black", linewidth=1.5))
    ax.set_title(f"{name}\nbox x1..x2 = {x1:.0f}..{x2:.0f}", fontsize=10)
    ax.set_xlabel("x (pixels)")
    ax.set_ylabel("y (pixels)")
plt.show()

# %% [markdown]
# Why the visible part: the network can only see what is painted, and a mask target that included the
# hidden pixels would ask it to mark pixels that show another shape. COCO's masks are the visible
# parts too (predicting the hidden extent is a different task, *amodal* segmentation), and so are its
# boxes.

# %% [markdown]
# ### A.2 Augmentation: a flip, and scale jitter
#
# **Common mistake: "the paper's only training augmentation is a horizontal flip".** The Mask R-CNN
# paper's training recipe (Sec. 3.1, "Training") resizes every image so that its shorter side is 800
# pixels and names no augmentation at all. Where it does augment, it augments *scale*: the keypoint
# model of Sec. 5 and the enhanced COCO results of Appendix B sample the shorter side at random from
# [640, 800] pixels, and the Cityscapes model of Appendix A from [800, 1024]. The horizontal flip comes
# from the code the paper was built in: Fast R-CNN (Girshick 2015, Sec. 2.3) flips each training image
# with probability 0.5 and uses no other augmentation, Detectron does the same by default
# (`TRAIN.USE_FLIPPED`), and so does torchvision's detection reference recipe (`references/detection`,
# `RandomHorizontalFlip(0.5)`). The `Trainer` follows them: a flip on half the images, the default.
#
# A flip says nothing about size, and a network learns the sizes it is shown: the shapes are drawn
# 12–48 px wide, and a model trained on them alone finds only half of the shapes drawn 72–96 px wide
# and names only half of those right (`benchmarks/README.md` has the counts).
#
# **Large-scale jitter** (Ghiasi et al. 2021, "Simple Copy-Paste") resizes each training image by a
# random factor $s$ and then cuts a window of the original size out of the result, padding where the
# resized image is smaller. The model's input stays 128×128; the objects in it are $s$ times as large.
# With the window's corner at $(\text{top}, \text{left})$ in the resized image, a point moves as
#
# $$x' = s\,x - \text{left}, \qquad y' = s\,y - \text{top},$$
#
# a positive offset crops, a negative one pads. The image, its masks and its boxes must move together:
#
# - the image is resized bilinearly, with antialiasing when it shrinks;
# - each mask is resized the same way as a soft mask and thresholded at 0.5;
# - each box is re-derived as the tight box of its new mask: a crop that cuts a corner off a triangle
#   leaves a box smaller than the old box clipped to the window;
# - a shape with no pixel left in the window is dropped, with its label.

# %%
shown = show_source(scale_jitter)
branch, rest = shown.code.index('    elif "boxes" in target:'), shown.code.index("    else:\n        return image, target")
shown.code = (shown.code[:branch] + '    elif "boxes" in target:  # no masks: scaled, shifted, clipped (Exercise 4)\n'
              "        ...\n" + shown.code[rest:])
shown.where += ", the boxes-without-masks branch left out"
shown

# %% [markdown]
# Image 0 again: a square whose box is 36 px wide, between two triangles 31 and 26 px wide. We run three
# settings. At $s = 0.5$ with the window at $(-32, -32)$ the whole image shrinks to 64×64 in the middle of
# the window: all three shapes stay, about half as wide, with about a quarter of their area. $s = 1$ at
# $(0, 0)$ changes nothing. At $s = 2$ with the window at $(60, 100)$ the window sees the part of the
# original with $x \in [50, 114)$ and $y \in [30, 94)$: the square (x 55–91, y 37–73) stays whole and 72 px
# wide, the triangle on the right is cut by the window's edge, and the triangle on the left (x 14–40) is
# outside and dropped.

# %%
# NBVAL_CHECK_OUTPUT
settings = [(0.5, (-32, -32)), (1.0, (0, 0)), (2.0, (60, 100))]  # (s, (top, left))
print("original: labels", target["labels"].tolist(), " box widths",
      (target["boxes"][:, 2] - target["boxes"][:, 0]).tolist(), " areas", target["area"].tolist())
jittered = {}
for s, offset in settings:
    image_s, target_s = scale_jitter(image, target, s, offset)  # (3, 128, 128), K <= N shapes
    jittered[s] = (image_s, target_s)
    K = len(target_s["labels"])
    widths = target_s["boxes"][:, 2] - target_s["boxes"][:, 0]  # (K,)
    print(f"s={s}, (top, left)={offset}: labels {target_s['labels'].tolist()}  box widths {widths.tolist()}"
          f"  areas {target_s['area'].tolist()}")
    assert image_s.shape == (3, 128, 128) and target_s["masks"].shape == (K, 128, 128)
    assert target_s["boxes"].shape == (K, 4) and target_s["area"].shape == (K,) and K <= N
    assert torch.equal(target_s["boxes"], tight_boxes(target_s["masks"]))  # boxes come from the masks
assert len(jittered[0.5][1]["labels"]) == N and len(jittered[2.0][1]["labels"]) == N - 1

# %% [markdown]
# The widths halve to within a pixel (15 of 31, 19 of 36, 13 of 26) and the areas fall to about a
# quarter; at $s = 2$ the square is 72 px wide and the cut triangle keeps only the part inside the
# window. The same three, drawn, and one random draw of the training transform:

# %%
torch.manual_seed(3)
random_image, random_target = RandomScaleJitter((0.5, 2.0))(image, target)
panels = [("original (s = 1)", image, target)] + \
    [(f"s = {s}, (top, left) = {offset}", *jittered[s]) for s, offset in settings if s != 1.0] + \
    [("a random draw of RandomScaleJitter", random_image, random_target)]
fig, axes = plt.subplots(1, 4, figsize=(13, 3.8), layout="constrained")
for ax, (title, image_p, target_p) in zip(axes, panels):
    draw_instances(ax, image_p, target_p["boxes"], target_p["labels"], masks=target_p["masks"], class_names=CLASSES)
    ax.set_title(f"{title}\n{len(target_p['labels'])} shapes", fontsize=9)
fig.suptitle("Large-scale jitter: the image is resized by s, then cropped or padded (mean colour) back to 128 x 128")
plt.show()
assert random_image.shape == (3, 128, 128)

# %% [markdown]
# The training transform draws $s$ and the window. $\log s$ is uniform, so enlarging by 2 and shrinking
# by 2 are equally likely (a uniform $s$ on $[0.5, 2]$ would enlarge two times in three); the window's
# corner is uniform over every position that keeps it inside the resized image, or the resized image
# inside it. Both come from torch's generator, which `SeededTransforms` seeds per image (section 5.1),
# so a resumed run redraws the same jitter.

# %%
show_source(RandomScaleJitter.get_params)

# %%
jitter = RandomScaleJitter((0.5, 2.0))
torch.manual_seed(0)
draws = [jitter.get_params(128, 128) for _ in range(4000)]
scales = torch.tensor([s for s, _ in draws])  # (4000,)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), layout="constrained")
axes[0].hist(scales.numpy(), bins=40, color="tab:blue")
axes[0].set(title="s drawn: dense near 0.5, thin near 2 ...", xlabel="scale factor s", ylabel="count")
axes[1].hist(scales.log2().numpy(), bins=40, color="tab:orange")
axes[1].set(title="... because log2 s is uniform on [-1, 1]: half shrink, half grow", xlabel="log2 s",
           ylabel="count")
plt.show()
print(f"s in [{scales.min():.3f}, {scales.max():.3f}], median {scales.median():.3f}; "
      f"{(scales < 1).float().mean():.0%} of the images shrink")
assert scales.shape == (4000,) and 0.5 <= scales.min() and scales.max() <= 2.0
assert abs(scales.median() - 1.0) < 0.05

# %% [markdown]
# ### A.3 What scale jitter buys
#
# `TrainConfig(scale_jitter=(0.6, 2.5))` turns it on; `None`, the default, leaves it off.
# `benchmarks/shapes_budget.py` trains for ten CPU minutes and scores the model on two held-out sets: the
# usual one, and the same scenes drawn with `ShapesDataset(..., size_range=(6, 96))`, shapes from half the
# smallest to twice the largest training size. Measured on a 2-core CPU, one run per row
# (`benchmarks/README.md` has the commands and more runs):
#
# | recipe, 10 CPU minutes | usual set: mask AP50 | 0.5×–2× set: mask AP50 |
# | --- | ---: | ---: |
# | flip only (the `shapes_tiny` preset) | 0.950 | 0.615 |
# | flip + scale jitter 0.6–2.5× | 0.913 | 0.690 |
# | the same again, on a busier machine (fewer steps fitted: 1283, not 1490) | 0.882 | 0.645 |
# | trained on 6–96 px shapes (a ceiling, not an augmentation) | 0.914 | 0.821 |
#
# The two jitter rows are the same recipe run twice: they differ by 0.045 on the 0.5×–2× set (partly
# because the second fitted fewer steps), more than the second one gains over the flip (0.03). So from these runs jitter's gain on other sizes is
# suggestive, within the run-to-run spread, while its cost on the usual set (0.04–0.07) and the
# ceiling's lead are not. In the benchmark's count, jitter finds half again as many of the largest shapes, but in a run this short it pays for that on the
# sizes it was trained on: the same steps now cover a wider range. That is why the preset keeps the flip
# only; turn jitter on (`--set "scale_jitter=(0.6, 2.5)"`) when your objects come in other sizes than
# your training images show. The last row is a model that saw the other sizes in training: even it stays
# well under the usual set's figures, because large shapes also hide more of each other.
#
# The model the other notebooks load (section 6) is trained with the flip only.

# %% [markdown]
# ## Appendix B. Checkpoints: what they hold, and atomic writes
#
# ### B.1 What a checkpoint holds
#
# Weights alone would let us *use* the model, but not *continue* the run as if it had never stopped. For
# that we also need the SGD momentum buffers, where the schedule stands, how far into which epoch we got,
# and the state of every random number generator. The next cell loads the checkpoint of the `Trainer` run of section 5 and
# prints each key with what it is for; it stopped at the end of its only epoch, so we expect step 20,
# epoch 1 (the number of epochs completed) and step 0 within the next one.

# %%
# NBVAL_CHECK_OUTPUT
ckpt = load_checkpoint(run_dir / "checkpoint.pt")
what = {
    "format": "a version tag; load_checkpoint refuses other files",
    "model": "the weights (state_dict)",
    "model_name": "the preset the model was built from",
    "model_overrides": "keyword changes to that preset",
    "model_config": "the model's full config dict, so it can be rebuilt alone",
    "train_config": "the TrainConfig as a dict",
    "class_names": "names of the labels, background first",
    "optimizer": "SGD state: a momentum buffer per parameter",
    "scheduler": "LambdaLR state, WarmupStepDecay's fields included",
    "scaler": "the AMP loss scale (empty without --amp)",
    "epoch": "epochs completed",
    "step": "optimizer steps completed",
    "step_in_epoch": "steps done in the current epoch",
    "total_steps": "length of the schedule",
    "elapsed": "training seconds so far",
    "world_size": "how many processes trained",
    "rng": "generator states (torch, CUDA, numpy, python), one per process",
}
for key in ckpt:
    print(f"{key:<16} {what.get(key, '?')}")
print(f"\nstep {ckpt['step']}, epoch {ckpt['epoch']}, step_in_epoch {ckpt['step_in_epoch']}; "
      f"{len(ckpt['model'])} weight tensors, {len(ckpt['optimizer']['state'])} momentum buffers; "
      f"rng of {list(ckpt['rng'][0])}")
assert list(ckpt) == list(what)
assert ckpt["model"]["backbone.body.stem.conv1.weight"].shape == (64, 3, 7, 7)

# %% [markdown]
# ### B.2 Atomic writes
#
# A checkpoint is written to a temporary file in the same directory, flushed to disk, and only then
# renamed over the old one with `os.replace`. A rename within one filesystem is atomic: a reader sees
# the old file or the new one, never half of one. A crash, a full disk or a Ctrl-C in the middle of the
# write leaves the previous checkpoint as it was, and the temporary file is removed:

# %%
show_source(save_checkpoint)

# %% [markdown]
# We try it: `torch.save` is replaced for one call by a function that writes a few bytes and then fails
# the way a full disk does. We expect the error to reach us, the old checkpoint to be byte for byte
# unchanged and still loadable, and no temporary file to be left behind.

# %%
checkpoint_file = run_dir / "checkpoint.pt"
digest_before = hashlib.sha256(checkpoint_file.read_bytes()).hexdigest()


def save_that_fails(obj, f):
    f.write(b"the first bytes of a new checkpoint")
    raise OSError("No space left on device (simulated)")


with mock.patch.object(torch, "save", save_that_fails):
    try:
        save_checkpoint({**ckpt, "step": 999}, checkpoint_file)
    except OSError as err:
        print("save_checkpoint raised:", err)
unchanged = hashlib.sha256(checkpoint_file.read_bytes()).hexdigest() == digest_before
print("old checkpoint unchanged:", unchanged, "| it loads, step", load_checkpoint(checkpoint_file)["step"])
print("files:", sorted(p.name for p in run_dir.iterdir()))
assert unchanged and sorted(p.name for p in run_dir.iterdir()) == ["checkpoint.pt", "log.jsonl", "train_config.json"]

# %%
workdir.cleanup()  # the temporary runs of section 5 and Appendix B are no longer needed

# %% [markdown]
# ## Mixed precision (AMP)
#
# On a GPU, `--amp` (CUDA only) trains in mixed precision. `training_step` (section 2) runs the forward
# pass under `torch.autocast`, which does the convolutions and matrix products in float16, on the GPU's
# tensor cores, and keeps the reductions and the losses in float32. A `GradScaler` multiplies the loss
# by a large factor before `backward`, so that small float16 gradients do not round to zero, divides
# the gradients back (`unscale_`) before clipping, so the clip sees the true norm, and skips a step whose
# gradients overflowed to inf, shrinking its factor (the `scaler` lines of `training_step`). The
# `Trainer` turns AMP on only when the device is CUDA; on a CPU it prints a note and trains in float32:

# %%
amp_lines = [line.strip() for line in inspect.getsource(Trainer.__init__).splitlines() if "amp" in line or "scaler" in line]
print("\n".join(amp_lines))  # the lines of Trainer.__init__ that set AMP up
assert any("GradScaler" in line for line in amp_lines)

# %% [markdown]
# The two facts AMP rests on can be seen on any machine. Under `autocast` a convolution's output comes
# out in the low-precision type (on a CPU autocast uses bfloat16; on a GPU the Trainer asks for
# float16), while its weights stay float32. And float16 has few exponent bits: its smallest positive
# number is about $6 \times 10^{-8}$, so a gradient of $10^{-8}$ becomes 0, while the same gradient
# times the scaler's usual starting factor $2^{16}$ survives and divides back to within 0.03%
# (float16 keeps about 3 significant digits).

# %%
# NBVAL_CHECK_OUTPUT
conv = torch.nn.Conv2d(3, 8, 3)
with torch.autocast("cpu", dtype=torch.bfloat16):
    y = conv(torch.rand(1, 3, 16, 16))  # (1, 8, 14, 14)
print(f"under autocast: weights {conv.weight.dtype}, output {y.dtype}, shape {tuple(y.shape)}")
tiny_grad, scale = torch.tensor(1e-8), 2.0 ** 16  # () a small gradient; GradScaler's default init_scale
print(f"1e-8 in float16: {tiny_grad.half().item():g}; scaled by 2^16 first: {(tiny_grad * scale).half().item():.4g}, "
      f"unscaled in float32: {(tiny_grad * scale).half().float().item() / scale:.4g}")
assert y.dtype == torch.bfloat16 and conv.weight.dtype == torch.float32 and y.shape == (1, 8, 14, 14)
assert tiny_grad.half().item() == 0 and abs((tiny_grad * scale).half().float().item() / scale - 1e-8) < 1e-10
