# %% [markdown]
# # 12 — The paper's ablations, in miniature
#
# The Mask R-CNN paper does not only describe a model; its Table 2 takes the model apart. Each row
# changes **one** design choice, retrains, and reports the mask AP on COCO, so that the difference can
# be put down to that choice alone. Three of those rows are about the mask branch that notebooks 05–07
# built: per-class sigmoid masks against a softmax over classes, RoIAlign against RoIPool, and one mask
# per class against a single class-agnostic mask. The library has all three as configuration options.
# This notebook builds each variant, reads the results of a small benchmark that trained every variant
# from scratch on the shapes data with several seeds, sets them beside the paper's numbers, and then
# watches one of the effects happen live.
#
# **You will learn**
# - the three ablations as one config switch each, and what each switch changes in the model (and what
#   it does not);
# - how to read a small ablation benchmark: the mean and spread over seeds, the standard error of a
#   difference, and when a difference is larger than the seed-to-seed noise;
# - our numbers beside the paper's Table 2, and why the gaps need not be the same size on 128-px shapes
#   (RoIs pooled at stride 4 but small, three classes, short training from scratch);
# - live runs from the same seed: RoIAlign against RoIPool, and what a softmax does to a mask branch that
#   has not yet learned the classes; and what happens to a trained model's masks when its RoI layer is
#   swapped for RoIPool.
#
# **Builds on:** [05 — RoIPool vs RoIAlign](05_roi_align.ipynb), [06 — Heads](06_heads.ipynb) (which
# pyramid level an RoI is pooled from), [07 — Mask loss](07_mask_loss.ipynb) (sigmoid vs softmax,
# class-agnostic masks), [09 — Training](09_training.ipynb) (the training step and the recipe),
# [11 — Evaluation](11_evaluation.ipynb) (COCO AP).
#
# **Run time:** about 2.5 minutes on a 2-core CPU, nearly all of it the three live training runs of
# sections 6 and 7; the first notebook you run also trains the shared shapes model once, about 3 minutes;
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

import importlib.util
import json
import math
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Patch, Rectangle
from torch.utils.data import DataLoader

from mrcnn_teach import build_maskrcnn, heads, poolers, roi_heads, roi_ops
from mrcnn_teach.boxes import box_area
from mrcnn_teach.configs import get_config
from mrcnn_teach.datasets import CLASSES, ShapesDataset, collate_fn
from mrcnn_teach.evaluate import evaluate
from mrcnn_teach.masks import paste_masks_in_image, project_masks_on_boxes
from mrcnn_teach.pretrained import trained_shapes_model
from mrcnn_teach.train import build_optimizer, build_scheduler, get_train_config, training_step
from mrcnn_teach.visualize import draw_instances, show_mask_grid

# The benchmark script is not part of the package; load it from the repository: next to the notebooks,
# or beside the installed package (an editable install, e.g. a course folder that nbgrader runs elsewhere).
import mrcnn_teach

BENCHMARKS = next((d for d in (Path("..") / "benchmarks", Path(mrcnn_teach.__file__).resolve().parents[1] / "benchmarks")
                   if (d / "ablations.py").exists()), Path("..") / "benchmarks")
_spec = importlib.util.spec_from_file_location("ablations", BENCHMARKS / "ablations.py")
ablations = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ablations)

# %% [markdown]
# ## 1. Three rows of Table 2, three switches
#
# The paper's ablations (Sec. 4.2) use a ResNet-50-C4 backbone (no FPN: every RoI is pooled from C4, at
# stride 16) and report mask AP on COCO minival. The three rows we reproduce:
#
# | ablation | paper's default | alternative | mask AP (default → alternative) |
# |---|---|---|---|
# | Table 2b: mask loss | a sigmoid per class, only the GT class's mask trained | a softmax over the classes at every pixel | 30.3 → 24.8 |
# | Table 2c: RoI layer | RoIAlign | RoIPool (Fast R-CNN) | 30.3 → 26.9 |
# | Sec. 4.2: masks per RoI | one per class | one for all classes (class-agnostic) | 30.3 → 29.7 |
#
# A fourth row, Table 2d, repeats RoIAlign against RoIPool on C5 features at stride 32; there the gap
# grows to 30.9 against 23.6 (section 5 comes back to it). In the library each alternative is one config
# key, and the benchmark of section 2 names its variants by exactly those keys. The next cell prints the
# keys' defaults in `shapes_tiny` and the benchmark's four variants: the baseline changes nothing, and
# each other variant changes one key.

# %%
# NBVAL_CHECK_OUTPUT
shapes_cfg = get_config("shapes_tiny")
for key in ("mask_loss", "roi_layer", "class_agnostic_masks"):
    print(f"shapes_tiny default  {key:<21} = {shapes_cfg[key]!r}")
print()
for variant, overrides in ablations.VARIANTS.items():
    paper = ablations.PAPER[variant]["AP"]
    print(f"variant {variant:<15} overrides {str(overrides):<32} paper's mask AP {paper}")
assert set(ablations.VARIANTS) == {"baseline", "softmax", "roi_pool", "class_agnostic"}
assert all(len(overrides) <= 1 for overrides in ablations.VARIANTS.values())  # one change at a time

# %% [markdown]
# ### 1.1 `mask_loss="softmax"`: the classes compete for each pixel
#
# Notebook 07 derived both losses. With the paper's sigmoid, an RoI trains only the mask of its own
# class. The softmax variant classifies every pixel of the RoI among the K+1 channels instead: the
# RoI's class where the object is, background elsewhere, so that every channel gets a gradient at every
# pixel:

# %%
show_source(roi_heads.softmax_mask_loss, docstring=False)

# %% [markdown]
# At inference a softmax-trained model must be read the same way: `predict_masks` takes the softmax
# over the channels and then the channel of the predicted class, where the sigmoid model takes the
# sigmoid of that channel alone.

# %%
show_source(roi_heads.RoIHeads.predict_masks, docstring=False)

# %% [markdown]
# ### 1.2 `roi_layer="pool"`: RoIPool in both heads
#
# Notebook 05 built both RoI layers. The pooler of each head runs one of them per pyramid level; the
# switch picks which. The pyramid levels, the output sizes and everything after the pooler stay the
# same. One thing does not change with it: the mask *targets* are still cut out of the GT masks with
# RoIAlign (`mask_loss` calls `kernels.roi_align`), so the RoIPool variant learns to predict exactly
# placed masks from roughly placed features, as in the paper.

# %%
show_source(poolers.MultiLevelRoIAlign.pool)

# %% [markdown]
# ### 1.3 `class_agnostic_masks=True`: one mask per RoI
#
# The mask predictor's last 1×1 convolution has K+1 output channels, or 1. Training and inference then
# read channel 0 for every RoI, whatever its class (notebook 07, section 5).

# %%
show_source(heads.MaskPredictor)

# %% [markdown]
# ### 1.4 The four models side by side
#
# We build the four variants from the same seed and run the parts that differ on held-out image 0, with
# its ground-truth boxes as RoIs. What to expect:
# - RoIPool has no weights, and the softmax loss changes no layer, so these two variants start with
#   **exactly the baseline's weights**: only what is computed with them differs;
# - the class-agnostic model differs only in the mask predictor: its last conv has 1 output channel
#   instead of 4, 3 × (32 + 1) = 99 parameters fewer (and since that conv draws fewer random numbers when
#   it is built, the deconvolution initialised after it gets different ones);
# - the pooled features are `(G, 64, 7, 7)` for the box head and `(G, 64, 14, 14)` for the mask head in
#   every variant, but RoIPool's are different numbers;
# - the mask logits are `(G, 4, 28, 28)`, except `(G, 1, 28, 28)` for the class-agnostic model.

# %%
# NBVAL_CHECK_OUTPUT
val = ShapesDataset(100, seed=1)  # the held-out images (training uses seed=0)
image, target = val[0]
G = len(target["boxes"])
models, outputs = {}, {}
for variant, overrides in ablations.VARIANTS.items():
    torch.manual_seed(0)
    model = build_maskrcnn("shapes_tiny", **overrides).eval()
    with torch.no_grad():
        batch, image_sizes, _ = model.transform([image])  # (1, 3, 128, 128)
        features = model.backbone(batch)  # [P2..P6]
        box_pooled = model.roi_heads.box_roi_align(features, [target["boxes"]], image_sizes)  # (G, 64, 7, 7)
        mask_pooled = model.roi_heads.mask_roi_align(features, [target["boxes"]], image_sizes)  # (G, 64, 14, 14)
        mask_logits = model.roi_heads.mask_logits(features, [target["boxes"]], image_sizes)  # (G, K+1 or 1, 28, 28)
    models[variant] = model
    outputs[variant] = dict(box_pooled=box_pooled, mask_pooled=mask_pooled, mask_logits=mask_logits)
    assert box_pooled.shape == (G, 64, 7, 7) and mask_pooled.shape == (G, 64, 14, 14)

base = models["baseline"].state_dict()
print(f"{G} GT boxes on held-out image 0\n")
print(f"{'variant':<15} {'RoI layer':<9} {'mask loss':<9} {'mask logits':<18} {'parameters':>10}  same weights as baseline?")
for variant, model in models.items():
    state = model.state_dict()
    differ = sorted({k.rsplit(".", 1)[0] for k in base  # the modules whose weights differ
                     if state[k].shape != base[k].shape or not torch.equal(state[k], base[k])})
    same = "all" if not differ else "all but " + ", ".join(differ)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{variant:<15} {model.roi_heads.mask_roi_align.layer:<9} {model.roi_heads.mask_loss:<9} "
          f"{str(tuple(outputs[variant]['mask_logits'].shape)):<18} {n_params:>10,}  {same}")

assert outputs["class_agnostic"]["mask_logits"].shape == (G, 1, 28, 28)
for variant in ("baseline", "softmax", "roi_pool"):
    assert outputs[variant]["mask_logits"].shape == (G, 4, 28, 28)
pool_vs_align = (outputs["roi_pool"]["mask_pooled"] - outputs["baseline"]["mask_pooled"]).abs().max()
print("\nsame weights, same boxes: RoIPool's mask features equal RoIAlign's?", bool(pool_vs_align == 0))

# %% [markdown]
# So each variant is the baseline with one thing changed, and the benchmark trains each of them with the
# same recipe. That is the whole method of an ablation: any difference at the end comes from that one
# change, or from chance. Separating the two is what the seeds are for.
#
# ## 2. The benchmark: how the numbers were made
#
# `benchmarks/ablations.py` trains every variant from scratch with the recipe of the notebooks' cached
# model as it was when the benchmark ran: 500 steps of 8 images, warm-up and step decay, GroupNorm, and the
# first edition's anchors (8–128 px, three ratios; notebook 03 shows why they were refitted). The
# notebooks' cached model is now trained longer with the refitted anchors; the ablations have not been
# re-run with that recipe, so every number in this notebook is the 500-step recipe's. The benchmark runs
# each variant once per seed. The seed decides the initial weights, the order of the training images, the flips and the RoIs
# the samplers draw, so two runs of the same variant end at different APs; each run is scored with COCO
# AP on the same 100 held-out images. One run:

# %%
show_source(ablations.run_one)

# %% [markdown]
# The benchmark's runs are far too long for a notebook (the next cell prints how long each took), so the
# notebook does not train them: it reads the JSON file the benchmark wrote, `benchmarks/results/ablations.json`, which holds the command,
# the machine, every run and the mean and spread per variant (`ablations.summarise`). The next cell
# prints where the numbers come from. (Set the environment variable `MRCNN_TEACH_ABLATIONS` to read
# another results file, for example one you made with `--steps 200 --out ...`.)

# %%
ABLATIONS = Path(os.environ.get("MRCNN_TEACH_ABLATIONS", BENCHMARKS / "results" / "ablations.json"))
results = json.loads(ABLATIONS.read_text())
summary, runs, seeds = results["summary"], results["runs"], results["seeds"]
variants = [v for v in ablations.VARIANTS if v in summary]
print("command:", results["command"])
print("date:   ", results["date"])
print("machine:", results["machine"], "| torch", results["torch"])
print("recipe: ", results["recipe"])
print(f"seeds:   {seeds}; {len(runs)} runs of {sorted({r['steps'] for r in runs})} steps, "
      f"{np.mean([r['seconds'] for r in runs]) / 60:.0f} min per run on average (training + evaluation)")
assert {"command", "date", "machine", "torch", "recipe", "seeds", "variants", "paper_mask_AP", "runs",
        "summary"} <= set(results)
assert variants[0] == "baseline" and len(runs) == len(seeds) * len(variants)
assert all(summary[v]["mask"]["AP"]["n"] == len(seeds) for v in variants)

# %% [markdown]
# ## 3. Ours beside the paper
#
# COCO AP is a fraction in the JSON; the table shows it in percent, like the paper. For each variant:
# the mean over the seeds ± their standard deviation, the change against our baseline in AP points and
# relative to the baseline, and the same two for the paper. Keep in mind that the absolute numbers
# cannot be compared: 128-px shapes on colour gradients and COCO's photographs are different tasks,
# and our models train for minutes, not days. The **relative** changes are the columns to compare.

# %%
def stats(variant, metric="AP"):
    """Our mask `metric` of a variant in percent: (mean, std over seeds, n, the seeds' values)."""
    s = summary[variant]["mask"][metric]
    values = [100 * r["mask"][metric] for r in runs if r["variant"] == variant]
    return 100 * s["mean"], 100 * s["std"], s["n"], values


paper = results["paper_mask_AP"]
table = {}
print(f"{'':<15}{'ours: mask AP':>16}{'AP50':>15}{'AP75':>15}{'Δ AP':>8}{'rel.':>8}  |"
      f"{'paper AP':>9}{'Δ':>6}{'rel.':>8}")
base_mean = stats("baseline")[0]
for variant in variants:
    cells = []
    for metric in ("AP", "AP50", "AP75"):
        mean, std, n, _ = stats(variant, metric)
        cells.append(f"{mean:5.1f} ± {std:3.1f}")
    delta = stats(variant)[0] - base_mean
    paper_ap, paper_base = paper[variant]["AP"], paper["baseline"]["AP"]
    table[variant] = dict(delta=delta, rel=delta / base_mean, paper_delta=paper_ap - paper_base,
                          paper_rel=(paper_ap - paper_base) / paper_base)
    print(f"{variant:<15}{cells[0]:>16}{cells[1]:>15}{cells[2]:>15}{delta:>+8.1f}{100 * table[variant]['rel']:>+7.1f}%  |"
          f"{paper_ap:>9.1f}{table[variant]['paper_delta']:>+6.1f}{100 * table[variant]['paper_rel']:>+7.1f}%")
assert set(table) == set(variants) and table["baseline"]["delta"] == 0

# %% [markdown]
# The picture: on the left, our mask AP, AP50 and AP75 per variant, the bar at the mean, the error bar
# one standard deviation of the seeds, and each seed's run as a dot; on the right, the change of mask AP
# relative to the baseline, ours (with the standard error of the difference as error bar, explained in
# section 4) beside the paper's.

# %%
# README thumbnail
fig, (ax_ap, ax_rel) = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained",
                                    gridspec_kw={"width_ratios": [1.5, 1]})
x = np.arange(len(variants))
for j, (metric, colour) in enumerate((("AP", "tab:blue"), ("AP50", "tab:green"), ("AP75", "tab:purple"))):
    means = [stats(v, metric)[0] for v in variants]
    stds = [stats(v, metric)[1] for v in variants]
    ax_ap.bar(x + (j - 1) * 0.27, means, width=0.25, yerr=stds, capsize=3, color=colour, alpha=0.55,
              label=f"mask {metric} (mean ± std)")
    for i, v in enumerate(variants):
        dots = stats(v, metric)[3]
        ax_ap.scatter(np.full(len(dots), x[i] + (j - 1) * 0.27), dots, s=14, color="black", zorder=3,
                      label="one seed" if (i, j) == (0, 0) else None)
ax_ap.set_xticks(x, variants)
ax_ap.set(ylabel="mask AP, AP50, AP75 on 100 held-out images (%)", ylim=(0, 100),
          title=f"Our ablation: {len(seeds)} seeds per variant")
ax_ap.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=4)

others = variants[1:]
xo = np.arange(len(others))
se_rel = [100 * math.sqrt(stats("baseline")[1] ** 2 / stats("baseline")[2] + stats(v)[1] ** 2 / stats(v)[2])
          / base_mean for v in others]
ax_rel.bar(xo - 0.2, [100 * table[v]["rel"] for v in others], width=0.4, yerr=se_rel, capsize=3,
           color="tab:blue", alpha=0.7, label="ours (± standard error)")
ax_rel.bar(xo + 0.2, [100 * table[v]["paper_rel"] for v in others], width=0.4, color="tab:gray",
           label="paper (ResNet-50-C4, COCO)")
ax_rel.axhline(0, color="black", linewidth=0.8)
ax_rel.set_xticks(xo, others)
ax_rel.set(ylabel="mask AP change vs baseline (%)", title="Relative change: ours vs the paper")
ax_rel.legend(fontsize=8)
fig.suptitle(f"{results['command']}  ({results['date']}; {results['machine'].split(',')[0]}, "
             f"{results['machine'].split(',')[1].strip()})", fontsize=9)
plt.show()

# %% [markdown]
# ## 4. Which differences are real?
#
# Three runs per variant is a small sample, so we need a rule for when a difference of means is more
# than luck. Let $s_b$ and $s_v$ be the standard deviations of the baseline's and the variant's runs,
# and $n$ the number of seeds of each. The mean of $n$ runs wanders by about $s / \sqrt{n}$, so the
# difference of two such means has the **standard error**
#
# $$\mathrm{SE} = \sqrt{s_b^2 / n_b + s_v^2 / n_v}.$$
#
# We call a difference *resolved* when it is larger than $2\,\mathrm{SE}$. That is a rough rule, not a
# significance test: with 3 seeds the standard deviations are themselves uncertain, and a t-test would
# ask for about $2.8\,\mathrm{SE}$ at the 5% level. A second, model-free view: do the ranges of the seeds
# (lowest to highest run) of the two variants overlap at all? And a third question, about the
# benchmark rather than the variant: if the change were the paper's relative change, applied to our
# baseline, would it be larger than $2\,\mathrm{SE}$, so that three seeds could see it? The next cell
# computes these verdicts from the JSON, for AP, AP50 and AP75, and prints them; the sentences after the
# table are generated from the same numbers.

# %%
def verdict(variant, metric):
    mean_b, std_b, n_b, runs_b = stats("baseline", metric)
    mean_v, std_v, n_v, runs_v = stats(variant, metric)
    delta = mean_v - mean_b
    se = math.sqrt(std_b**2 / n_b + std_v**2 / n_v) if min(n_b, n_v) > 1 else math.nan
    paper_metric = paper[variant].get(metric)
    paper_rel = (paper_metric - paper["baseline"][metric]) / paper["baseline"][metric] if paper_metric else math.nan
    one_seed = math.isnan(se)  # a single run has no spread: nothing to judge a difference against
    return dict(delta=delta, se=se, resolved=None if one_seed else abs(delta) > 2 * se,
                overlap=min(runs_v) <= max(runs_b) and min(runs_b) <= max(runs_v),
                paper_sized=paper_rel * mean_b, same_sign=np.sign(delta) == np.sign(paper_rel),
                visible=None if one_seed else abs(paper_rel * mean_b) > 2 * se)


yes = {True: "yes", False: "no", None: "n/a"}
print(f"{'variant':<15}{'metric':<6}{'Δ (points)':>11}{'2 SE':>6}  {'resolved':<9}{'ranges overlap':<15}"
      f"{'same sign as paper':<19}{'paper-sized Δ':>13}  {len(seeds)} seeds could see it")
verdicts = {}
for variant in others:
    for metric in ("AP", "AP50", "AP75"):
        v = verdicts[variant, metric] = verdict(variant, metric)
        paper_cols = (f"{yes[bool(v['same_sign'])]:<19}{v['paper_sized']:>+13.1f}  {yes[v['visible']]}"
                      if not math.isnan(v["paper_sized"]) else f"{'(paper: AP only)':<19}{'':>13}")
        print(f"{variant:<15}{metric:<6}{v['delta']:>+11.1f}{2 * v['se']:>6.1f}  {yes[v['resolved']]:<9}"
              f"{yes[bool(v['overlap'])]:<15}{paper_cols}")
assert len(verdicts) == 3 * len(others)

print()
for variant in others:
    v = verdicts[variant, "AP"]
    if v["resolved"] is None:
        print(f"- {variant}: mask AP {v['delta']:+.1f} points from a single run each: no spread to judge it by.")
    elif v["resolved"]:
        direction = "below" if v["delta"] < 0 else "above"
        agreement = "the same direction as the paper" if v["same_sign"] else "the opposite direction to the paper"
        print(f"- {variant}: mask AP {abs(v['delta']):.1f} points {direction} the baseline, more than 2 SE: "
              f"resolved at this scale, in {agreement}.")
    else:
        seen = ("a change of the paper's relative size would have been resolved, so the effect here is probably "
                "smaller than the paper's"
                if v["visible"] else "even a change of the paper's relative size would hide in this noise")
        print(f"- {variant}: mask AP {v['delta']:+.1f} points, within 2 SE ({2 * v['se']:.1f}): not resolved with "
              f"{len(seeds)} seeds; {seen}.")

# %% [markdown]
# Read the printed sentences as the result of this notebook; the text here does not know the numbers
# in advance, so it only says how to take them. A resolved difference in the paper's direction
# reproduces the paper's finding in miniature. An unresolved one does not say that the design choice is
# useless: it says that at this scale, with this many seeds, its effect is not larger than the spread
# between runs. Where the last column says that even the paper's relative change would be invisible,
# the benchmark simply cannot answer the question; more seeds can (exercise 1 computes how many). Look at
# AP75 as well as AP: the paper finds RoIAlign's advantage largest at the strict IoU thresholds, because
# alignment is about placing the mask to the pixel.
#
# **Common mistake: "a softmax over the mask channels makes training unstable".** Notebook 07 showed that
# the loss is well defined; the benchmark adds that every softmax run trained to the end without
# diverging and was scored (the table in section 3). That is all it shows: the softmax runs' AP spreads
# from seed to seed far more than the baseline's, so "no run diverged" is not "as stable".
#
# ## 5. Why the gaps need not match the paper's
#
# Our setting differs from the paper's in ways that change each effect, some towards a smaller gap and
# some towards a larger one. This section lists them; it cannot say in advance which wins, and the
# verdicts of section 4 are what was measured.
#
# **RoIPool rounds to the stride.** RoIPool's first rounding snaps each box coordinate to the nearest
# feature cell, moving it by up to half a cell: $s/2$ image pixels at stride $s$ (the second rounding,
# of the bins, adds up to one more cell at each bin edge). On our 128-px images every shape is at most
# 64 px across, far below the 112 px at which FPN's Eq. 1 moves an RoI off P2, so every RoI is pooled from P2
# at stride 4 (notebook 06, section 1): RoIPool moves a box edge by at most 2 px. The paper's Table 2c
# pools from C4 at stride 16 (up to 8 px), and Table 2d from C5 at stride 32 (up to 16 px), where the
# gap grows from 3.4 to 7.3 AP. In pixels, then, our rounding is four times smaller than in Table 2c.
# But a mask is judged relative to its object, and our objects are small. The next cell measures our
# held-out objects: their sizes, their levels, and the bound as a fraction of each object's side
# $\sqrt{wh}$ at the three strides.

# %%
# NBVAL_CHECK_OUTPUT
held_out = [val[i] for i in range(len(val))]  # 100 x (image, target)
gt_boxes = torch.cat([t["boxes"] for _, t in held_out])  # (N_obj, 4) all held-out objects
gt_labels = torch.cat([t["labels"] for _, t in held_out])  # (N_obj,)
side = torch.sqrt(box_area(gt_boxes))  # (N_obj,) sqrt(wh) in pixels
levels = poolers.assign_levels(gt_boxes)  # (N_obj,) 0 = P2
assert gt_boxes.shape == (len(side), 4) and gt_labels.shape == levels.shape == side.shape
print(f"{len(side)} held-out objects, side sqrt(wh) from {side.min():.1f} to {side.max():.1f} px "
      f"(median {side.median():.1f})")
print("FPN level of each (P2, P3, P4, P5):", torch.bincount(levels, minlength=4).tolist())
bound_fraction = {}
for stride, where in ((4, "P2, our heads"), (16, "C4, Table 2c"), (32, "C5, Table 2d")):
    bound_fraction[stride] = (stride / 2) / side  # (N_obj,)
    print(f"stride {stride:>2} ({where}): edge moved by up to {stride / 2:4.1f} px = "
          f"{100 * bound_fraction[stride].median():5.1f}% of the median object's side; "
          f"the median object spans {(side / stride).median():4.1f} cells")

# %% [markdown]
# Two pictures of the same fact. On the left, one held-out shape with its exact box (dashed) and the box
# RoIPool would read after snapping at stride 4 and at stride 16, with the cell grid of stride 16. On
# the right, the bound as a fraction of each object's side, for all held-out objects at the three
# strides.

# %%
example_image, example_target = held_out[3]
box = example_target["boxes"][0]  # (4,) a circle
x1, y1, x2, y2 = box.tolist()
fig, (ax_img, ax_frac) = plt.subplots(1, 2, figsize=(11, 4.8), layout="constrained")
ax_img.imshow(example_image.permute(1, 2, 0).numpy(), extent=(0, 128, 128, 0))  # pixel i covers [i, i+1)
for g in range(0, 129, 16):
    ax_img.axhline(g, color="white", linewidth=0.6, alpha=0.8)
    ax_img.axvline(g, color="white", linewidth=0.6, alpha=0.8)
ax_img.add_patch(Rectangle(box[:2].tolist(), *(box[2:] - box[:2]).tolist(), fill=False, color="black",
                           linestyle="--", linewidth=2, label="exact GT box"))
for stride, colour in ((4, "tab:green"), (16, "tab:red")):
    snapped = roi_ops._round_half_away(box / stride) * stride  # (4,) corners on the stride grid
    ax_img.add_patch(Rectangle(snapped[:2].tolist(), *(snapped[2:] - snapped[:2]).tolist(), fill=False,
                               color=colour, linewidth=2, label=f"RoIPool's box at stride {stride}"))
ax_img.set(title=f"held-out image 3, its {CLASSES[int(example_target['labels'][0])]}: the box RoIPool reads\n"
                 "(zoomed; white grid: stride-16 cells)", xlabel="x (pixels)", ylabel="y (pixels)",
           xlim=(x1 - 24, x2 + 24), ylim=(y2 + 24, y1 - 24))
ax_img.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
ax_frac.boxplot([100 * bound_fraction[s].numpy() for s in (4, 16, 32)], showfliers=True)
ax_frac.set_xticks([1, 2, 3], ["stride 4\n(P2: ours)", "stride 16\n(C4: Table 2c)", "stride 32\n(C5: Table 2d)"])
ax_frac.set_yscale("log")
ax_frac.set(ylabel="bound on the edge shift / object side (%)",
            title=f"RoIPool's snapping bound on our {len(side)} held-out objects")
ax_frac.grid(axis="y", alpha=0.3)
plt.show()

# %% [markdown]
# At stride 4 the snapped box hugs the object; at stride 16 a shape of our size would span about two
# cells, and snapping could move an edge by a large part of it. Relative to the object, 2 px on our median
# shape of 30 px is about what 8 px are on a 120-px object at stride 16. So the small stride alone does
# not promise a small effect here: the RoIs are small too. Where the rounding shows first is at strict
# IoU thresholds, so compare the AP75 rows of section 4 with the AP50 rows.
#
# **The softmax: fewer competitors, but a young mask branch.** With the softmax loss every pixel is a
# choice among K+1 channels. COCO has K = 80 classes, many of them alike (cat and dog, car and truck);
# the shapes have K = 3 that look nothing alike, so there is less to compete. That pushes the gap down.
# Two things push it up. Our models are trained from scratch for only a few hundred steps, and with the softmax the
# mask branch has to learn the classes itself, at every pixel, while the sigmoid variant leaves that to
# the box branch's classifier. And at inference a pixel joins the mask only if its class channel gets
# more than half of the probability: as long as the mask branch is unsure *which* shape it sees, the
# object's probability is shared among the classes, and no share may reach one half. Section 7 watches
# this happen.
#
# **Class-specific masks have little to specialise on.** A per-class mask lets the network keep a shape
# prior per class. The paper's own gap is only 0.6 AP (2% relative) on COCO's 80 classes; our three
# classes are a square, a circle and a triangle, whose outline the mask head can read off the RoI's
# features directly. There is little reason to expect a gap larger than the seed noise here.
#
# ## 6. Live: RoIAlign against RoIPool, from the same seed
#
# The benchmark's runs are too long for a notebook, but a short one shows the mechanism. We train two
# `shapes_tiny` models from scratch, identical except `roi_layer`: the same initial weights (section 1.4
# showed they are equal), the same 150 batches of 8 training images in the same order, the preset's
# learning rate of 0.02 for 8 images, a 20-step warm-up and the usual decays at 75% and 90% of the run.
# Only the RoIs the samplers draw differ, once the two models' proposals differ.
#
# What to expect: both mask losses fall from about 0.8 to about 0.4. RoIPool's features are misaligned
# by up to 2 px, so its mask loss should end a little higher, by a few hundredths: a small effect for a
# short run, but one that should not change sign along the way. Each run took about 80 s of CPU time on
# our 2-core test machine.

# %%
STEPS, BATCH, LR, WARMUP = 150, 8, 0.02, 20
live_cfg = get_train_config("shapes_tiny", batch_size=BATCH, lr=LR, warmup_steps=WARMUP)


def train_from_scratch(**overrides):
    """150 steps of `training_step` from seed 0; returns the model (eval mode) and the per-step losses."""
    torch.manual_seed(0)
    model = build_maskrcnn("shapes_tiny", num_classes=4, **overrides).train()
    optimizer = build_optimizer(model, live_cfg)
    scheduler = build_scheduler(optimizer, live_cfg, total_steps=STEPS)
    loader = DataLoader(ShapesDataset(STEPS * BATCH, seed=0), batch_size=BATCH, collate_fn=collate_fn)
    history = []
    for images, targets in loader:  # images: 8 x (3, 128, 128)
        loss_dict, _ = training_step(model, optimizer, images, targets, live_cfg.grad_clip)
        scheduler.step()
        history.append({k: v.item() for k, v in loss_dict.items()})
    return model.eval(), history


live, cpu_seconds = {}, {}
for layer in ("align", "pool"):
    start = time.process_time()
    live[layer] = train_from_scratch(roi_layer=layer)
    cpu_seconds[layer] = time.process_time() - start
    last = np.mean([h["loss_mask"] for h in live[layer][1][-30:]])
    print(f"roi_layer={layer!r:<8} {STEPS} steps in {cpu_seconds[layer]:.0f} s of CPU time; "
          f"mask loss, mean of the last 30 steps: {last:.3f}")
assert all(len(history) == STEPS for _, history in live.values())

# %% [markdown]
# A training loss is measured on different RoIs in the two runs (each model's own proposals), and one
# step's loss is noisy. So we also score both models the same way on held-out images: the mask branch
# gets each object's **ground-truth box and class**, which takes detection out of the comparison, and we
# compute the mask loss against the GT mask and the IoU between the pasted mask (probability > 0.5) and
# the GT mask. The next cell prints both averages for 40 held-out images; by the expectation above,
# RoIAlign should have the lower loss and the higher IoU.

# %%
@torch.no_grad()
def masks_for_gt_boxes(model, image, target):
    """The mask branch on the GT boxes and classes: (mask logits (G, C, 28, 28), pasted probs (G, 128, 128))."""
    batch, image_sizes, _ = model.transform([image])  # (1, 3, 128, 128)
    features = model.backbone(batch)  # [P2..P6]
    logits = model.roi_heads.mask_logits(features, [target["boxes"]], image_sizes)  # (G, C, 28, 28)
    probs = model.roi_heads.predict_masks(features, [target["boxes"]], [target["labels"]], image_sizes)[0]  # (G, 1, 28, 28)
    return logits, paste_masks_in_image(probs, target["boxes"], image.shape[-2:])[:, 0]  # (G, 128, 128)


def mask_iou(probs, gt_masks):
    """(G, H, W) probabilities, (G, H, W) 0/1 -> (G,) IoU of the masks thresholded at 0.5."""
    pred, gt = probs > 0.5, gt_masks.bool()
    return (pred & gt).sum(dim=(1, 2)) / (pred | gt).sum(dim=(1, 2)).clamp(min=1)


def score_on_gt_boxes(model, images=range(40)):
    """Held-out mask loss and per-object mask IoU with the GT boxes as RoIs."""
    losses, ious = [], []
    for i in images:
        image, target = held_out[i]
        logits, probs = masks_for_gt_boxes(model, image, target)
        G = len(target["boxes"])
        assert logits.shape[0] == G and probs.shape == (G, 128, 128)
        losses.append(roi_heads.mask_loss(logits, [target["boxes"]], [target["masks"]], [target["labels"]],
                                          [torch.arange(G)]).item())
        ious.append(mask_iou(probs, target["masks"]))
    return float(np.mean(losses)), torch.cat(ious)


live_scores = {layer: score_on_gt_boxes(model) for layer, (model, _) in live.items()}
for layer, (loss, ious) in live_scores.items():
    print(f"roi_layer={layer!r:<8} held-out mask loss {loss:.3f}   mean mask IoU {ious.mean():.3f} "
          f"over {len(ious)} objects")
better = (live_scores["align"][1] > live_scores["pool"][1]).float().mean()
print(f"objects whose mask is better with RoIAlign: {100 * better:.0f}%")

# %% [markdown]
# The training curves. One step's loss jumps with its batch, so each curve is smoothed with a moving
# average over 15 steps (the raw losses are drawn faintly). On the right, the difference of the smoothed
# curves, RoIPool minus RoIAlign: above zero where RoIPool's mask loss is higher.

# %%
def smooth(values, window=15):
    """Moving average, shorter at the start (no padding): (T,) -> (T,)."""
    values = np.asarray(values)
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    start = np.maximum(np.arange(1, len(values) + 1) - window, 0)
    return (cumulative[1:] - cumulative[start]) / (np.arange(1, len(values) + 1) - start)


mask_curves = {layer: np.array([h["loss_mask"] for h in history]) for layer, (_, history) in live.items()}
steps = np.arange(1, STEPS + 1)
fig, (ax_loss, ax_diff) = plt.subplots(1, 2, figsize=(12, 4.2), layout="constrained")
for layer, colour, name in (("align", "tab:blue", "RoIAlign"), ("pool", "tab:red", "RoIPool")):
    ax_loss.plot(steps, mask_curves[layer], color=colour, alpha=0.25, linewidth=0.8)
    ax_loss.plot(steps, smooth(mask_curves[layer]), color=colour, linewidth=2, label=f"{name} (15-step mean)")
ax_loss.set(xlabel="step (8 images each)", ylabel="mask loss (BCE)", title="Mask loss, same seed, same data")
ax_loss.legend()
difference = smooth(mask_curves["pool"]) - smooth(mask_curves["align"])
ax_diff.plot(steps, difference, color="black")
ax_diff.fill_between(steps, difference, 0, where=difference > 0, color="tab:red", alpha=0.3,
                     label="RoIPool higher")
ax_diff.fill_between(steps, difference, 0, where=difference <= 0, color="tab:blue", alpha=0.3,
                     label="RoIAlign higher")
ax_diff.axhline(0, color="gray", linewidth=0.8)
ax_diff.set(xlabel="step", ylabel="smoothed mask loss: RoIPool − RoIAlign",
            title="The difference of the smoothed curves")
ax_diff.legend()
plt.show()
late = difference[-50:]
print(f"last 50 steps: RoIPool's smoothed mask loss is higher on {np.mean(late > 0) * 100:.0f}% of them, "
      f"by {late.mean():+.3f} on average")

# %% [markdown]
# The two curves lie almost on top of each other for the first few dozen steps, while both models learn
# the easy part (where the objects are); what the difference does later is what the last printed line
# measures. Now the masks themselves, on three held-out images, both models given the GT boxes and
# classes. Differences of a pixel or two are hard to see in a coloured overlay, so each panel shows the
# *errors*: green where the predicted mask and the GT mask agree, red where the mask covers pixels the
# object does not (false positives), blue where it misses pixels of the object (false negatives).

# %%
ERROR_COLOURS = {"agree": (0.15, 0.65, 0.15), "mask only": (0.9, 0.1, 0.1), "GT only": (0.1, 0.3, 0.95)}


def draw_mask_errors(ax, image, probs, gt_masks, title):
    """Agreement / false-positive / false-negative pixels of all objects of one image over a faded image."""
    pred, gt = probs > 0.5, gt_masks.bool()  # (G, H, W) x2
    faded = 0.6 + 0.4 * image.mean(dim=0, keepdim=True).expand(3, -1, -1)  # (3, H, W) light grey version
    picture = faded.permute(1, 2, 0).clone()  # (H, W, 3)
    for name, pixels in (("agree", pred & gt), ("mask only", pred & ~gt), ("GT only", ~pred & gt)):
        picture[pixels.any(dim=0)] = torch.tensor(ERROR_COLOURS[name])  # errors drawn last win
    ax.imshow(picture.numpy())
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def error_legend(fig):
    fig.legend(handles=[Patch(color=c, label=name if name != "agree" else "mask and GT agree")
                        for name, c in ERROR_COLOURS.items()], loc="lower center", ncol=3, fontsize=9,
               bbox_to_anchor=(0.5, -0.05))


fig, axes = plt.subplots(3, 3, figsize=(9, 9.3), layout="constrained")
for row, i in enumerate((2, 5, 9)):
    image, target = held_out[i]
    draw_instances(axes[row, 0], image, target["boxes"], target["labels"], None, target["masks"], CLASSES)
    axes[row, 0].set_title(f"held-out image {i}: ground truth", fontsize=9)
    axes[row, 0].set_axis_off()
    for col, (layer, name) in enumerate((("align", "RoIAlign"), ("pool", "RoIPool")), start=1):
        _, probs = masks_for_gt_boxes(live[layer][0], image, target)  # (G, 128, 128)
        iou = mask_iou(probs, target["masks"]).mean()
        draw_mask_errors(axes[row, col], image, probs, target["masks"], f"{name}, {STEPS} steps: mean IoU {iou:.2f}")
error_legend(fig)
fig.suptitle("Live runs: masks for the ground-truth boxes, pixel by pixel", fontsize=11)
plt.show()

# %% [markdown]
# ## 7. Live: the softmax in a young mask branch
#
# Section 5 argued that a softmax mask branch that has not yet learned the classes splits each object's
# probability among them. One more run from the same seed, the same 150 batches, with
# `mask_loss="softmax"` instead of the RoI layer changed, lets us look. We score it on the same 40
# held-out images with the GT boxes and classes, reading its masks two ways:
# - the library's reading (`predict_masks`): the probability of the RoI's class, kept where above 0.5;
# - "object or not": one minus the background's probability, kept where above 0.5, which ignores
#   *which* foreground class gets the probability.
#
# And at the pixels inside each object (by its 28×28 target), the share of the foreground probability
# that goes to the object's own class. If the mask branch knows the object from the background but not
# yet its class, the second reading will be much better than the first, and the share well below 1.

# %%
start = time.process_time()
softmax_model, softmax_history = train_from_scratch(mask_loss="softmax")
cpu_seconds["softmax"] = time.process_time() - start
print(f"mask_loss='softmax'  {STEPS} steps in {cpu_seconds['softmax']:.0f} s of CPU time; cross-entropy, mean of "
      f"the last 30 steps: {np.mean([h['loss_mask'] for h in softmax_history[-30:]]):.3f}")


@torch.no_grad()
def softmax_readings(model, images=range(40)):
    """Mask IoU of the two readings, and the own class's share of the foreground probability inside objects."""
    ious = {"class probability > 0.5": [], "1 - background > 0.5": []}
    shares = []
    for i in images:
        image, target = held_out[i]
        logits, _ = masks_for_gt_boxes(model, image, target)  # (G, K+1, 28, 28)
        probs = logits.softmax(dim=1)  # (G, K+1, 28, 28)
        rows = torch.arange(len(target["labels"]))  # (G,)
        p_class, p_object = probs[rows, target["labels"]], 1 - probs[:, 0]  # (G, 28, 28) x2
        for name, m in zip(ious, (p_class, p_object)):
            pasted = paste_masks_in_image(m[:, None], target["boxes"], image.shape[-2:])[:, 0]  # (G, 128, 128)
            ious[name].append(mask_iou(pasted, target["masks"]))
        inside = project_masks_on_boxes(target["masks"], target["boxes"], rows, 28) >= 0.5  # (G, 28, 28)
        shares.append((p_class / p_object)[inside])
    return {name: torch.cat(v) for name, v in ious.items()}, torch.cat(shares)


readings, own_share = softmax_readings(softmax_model)
print(f"sigmoid model of section 6 (RoIAlign): mean mask IoU {live_scores['align'][1].mean():.3f}")
for name, ious in readings.items():
    print(f"softmax model, {name:<24}: mean mask IoU {ious.mean():.3f}")
print(f"inside the objects, the own class gets {100 * own_share.median():.0f}% of the foreground probability "
      f"(median over {len(own_share)} pixels; 10% to 90% range {100 * own_share.quantile(0.1):.0f}% to "
      f"{100 * own_share.quantile(0.9):.0f}%)")
assert all(v.shape == live_scores["align"][1].shape for v in readings.values())

# %% [markdown]
# The channels of one RoI, the triangle of held-out image 2: the sigmoid model's mask probability, then
# the softmax model's four channels (each pixel's four values add up to 1). The own class's channel is
# the one the library reads.

# %%
image, target = held_out[2]
g = int(torch.nonzero(target["labels"] == CLASSES.index("triangle"))[0])  # the triangle's index
sigmoid_logits, _ = masks_for_gt_boxes(live["align"][0], image, target)  # (G, K+1, 28, 28)
softmax_logits, _ = masks_for_gt_boxes(softmax_model, image, target)  # (G, K+1, 28, 28)
channels = torch.cat([sigmoid_logits[g, target["labels"][g]].sigmoid()[None],
                      softmax_logits[g].softmax(dim=0)])  # (5, 28, 28)
assert channels.shape == (5, 28, 28)
fig = show_mask_grid(channels, ["sigmoid model:\ntriangle mask"] + [f"softmax model:\n{c}" for c in CLASSES],
                     ncols=5, kind="probs", size=2.0)
fig.suptitle("One triangle RoI after 150 steps: sigmoid mask vs the softmax's four channels", fontsize=10)
plt.show()

# %% [markdown]
# Compare the printed IoUs of the two readings and the share (one third is what a branch that cannot tell
# the three classes apart at all would give). Where the "object or not" reading is close
# to the sigmoid model while the class reading lags, the softmax branch has learned the object's extent
# but not yet its class, and the threshold of one half removes what it knows. That is the coupling of
# Table 2b in its plainest form: the sigmoid variant never asks the mask branch for the class. With longer
# training the softmax branch can learn the classes too; how far it had got after the benchmark's runs is
# the softmax row of section 3.
#
# ## 8. Swapping the RoI layer of a trained model
#
# A different, faster experiment, which needs no training: take the cached model (trained 700 steps
# **with RoIAlign**) and switch both of its poolers to RoIPool. The weights stay the same; the features
# they receive are now rounded to whole cells. This is **not** the ablation: the paper's RoIPool model
# was trained with RoIPool and learned to live with its rounding, while this network never saw such
# features. What it shows is how sensitive a trained mask head is to where its features come from: it
# learned to place mask edges from RoIAlign's exact samples, and a shift of a pixel or two moves them.
# We expect the masks to get worse, for most objects, both with GT boxes as RoIs (only the mask branch's
# pooler matters then) and in COCO AP of the whole detector (both poolers matter).

# %%
trained = trained_shapes_model()
scores = {}
for layer in ("align", "pool"):
    trained.roi_heads.box_roi_align.layer = layer  # the pooler of the box head (7x7)
    trained.roi_heads.mask_roi_align.layer = layer  # and of the mask head (14x14)
    _, ious = score_on_gt_boxes(trained, images=range(len(val)))
    coco = evaluate(trained, val, batch_size=8)
    scores[layer] = dict(ious=ious, coco=coco)
    print(f"layer={layer!r:<8} mean mask IoU on the GT boxes {ious.mean():.3f} (median {ious.median():.3f});  "
          f"COCO mask AP {100 * coco['segm']['AP']:.1f}, AP50 {100 * coco['segm']['AP50']:.1f}, "
          f"AP75 {100 * coco['segm']['AP75']:.1f};  box AP {100 * coco['bbox']['AP']:.1f}")
trained.roi_heads.box_roi_align.layer = trained.roi_heads.mask_roi_align.layer = "align"  # put it back
worse = (scores["pool"]["ious"] < scores["align"]["ious"]).float().mean()
print(f"objects whose mask IoU drops with RoIPool: {100 * worse:.0f}% of {len(scores['align']['ious'])}")
assert scores["align"]["ious"].shape == scores["pool"]["ious"].shape == (len(side),)

# %% [markdown]
# Per object: each dot is one held-out object, its mask IoU with RoIAlign (x) and after the swap (y).
# Dots below the diagonal lost accuracy. After it, four held-out images, their mask errors (colours as in
# section 6) before and after the swap.

# %%
fig, ax = plt.subplots(figsize=(5.5, 4.8), layout="constrained")
for k in (1, 2, 3):
    chosen = gt_labels == k  # (N_obj,) the objects of class k
    ax.scatter(scores["align"]["ious"][chosen], scores["pool"]["ious"][chosen], s=12, alpha=0.6, label=CLASSES[k])
ax.plot([0, 1], [0, 1], color="black", linewidth=0.8, label="no change")
ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mask IoU, trained layer (RoIAlign)",
       ylabel="mask IoU after swapping in RoIPool", title="Trained with RoIAlign, run with RoIPool")
ax.legend(loc="upper left")
plt.show()

# %%
fig, axes = plt.subplots(2, 4, figsize=(12, 6.6), layout="constrained")
for col, i in enumerate((1, 4, 7, 12)):
    image, target = held_out[i]
    for row, layer in enumerate(("align", "pool")):
        trained.roi_heads.mask_roi_align.layer = layer
        _, probs = masks_for_gt_boxes(trained, image, target)  # (G, 128, 128)
        name = "RoIAlign (trained)" if layer == "align" else "RoIPool (swapped)"
        draw_mask_errors(axes[row, col], image, probs, target["masks"],
                         f"image {i}, {name}\nmean IoU {mask_iou(probs, target['masks']).mean():.2f}")
trained.roi_heads.mask_roi_align.layer = "align"
error_legend(fig)
fig.suptitle("The trained model's masks for the GT boxes, before and after the swap", fontsize=11)
plt.show()

# %% [markdown]
# The swapped model's errors sit at the object borders: each mask is misplaced or mis-sized by a pixel or
# two. That costs a big object little IoU and a small one a lot, and it costs far more at the strict IoU
# threshold of AP75 than at AP50 (compare the two lines printed above). Alignment is a matter of pixels,
# and AP75 is the metric that counts them.
#
# Set this beside the benchmark. The next line prints the change of mask AP from the swap and from
# training with RoIPool (the benchmark's mean, section 3). A network trained with RoIPool can adapt to the
# rounding (its mask head learns from features that are off by up to half a cell), while one trained with
# RoIAlign relies on exact alignment, so we expect the swap to cost more. The paper's Table 2c measures
# the adapted case, and so does our benchmark.

# %%
swap_change = 100 * (scores["pool"]["coco"]["segm"]["AP"] - scores["align"]["coco"]["segm"]["AP"])
print(f"mask AP change, swapping RoIPool into the trained model: {swap_change:+.1f} points; "
      f"training with RoIPool (benchmark, mean of {len(seeds)} seeds): {table['roi_pool']['delta']:+.1f} points")

# %% [markdown]
# ## Summary
#
# - An ablation changes one design choice and keeps everything else: in the library each of the paper's
#   three mask-branch ablations is one config key (`mask_loss="softmax"`, `roi_layer="pool"`,
#   `class_agnostic_masks=True`), and the variants start from the same weights except the class-agnostic
#   mask predictor, whose mask logits are `(N, 1, 28, 28)` instead of `(N, K+1, 28, 28)`.
# - The benchmark (`benchmarks/ablations.py`) trains each variant from scratch with several seeds and
#   saves every run, the mean and spread per variant, the command and the machine in a JSON file; the
#   notebook reads it rather than training for hours.
# - A difference of means is judged against the standard error of the difference,
#   $\sqrt{s_b^2/n_b + s_v^2/n_v}$; the verdicts of section 4 say which of our differences are resolved
#   with this many seeds and which are within the seed-to-seed noise.
# - The paper's gaps come from COCO with a stride-16 (or 32) backbone, 80 classes and long training. On
#   128-px shapes every RoI is pooled from P2 at stride 4, where RoIPool moves a box edge by at most 2 px,
#   but the objects are small, so relative to the object the shift is not much smaller; the softmax has
#   only three classes to couple, but a short from-scratch run leaves its mask branch unsure of them;
#   class-specific shape priors have little to add. Which way each gap moves is measured, not assumed.
# - Live, from the same seed, RoIPool and RoIAlign train to close mask losses in 150 steps; the held-out
#   mask loss and IoU with GT boxes, and the smoothed difference of the curves, show by how much.
# - A softmax mask branch must learn the classes as well as the masks. Read the library's way (the own
#   class's probability above one half), its masks suffer while it is unsure of the class, even where it
#   already separates object from background; section 7 prints both readings side by side.
# - Swapping RoIPool into a model trained with RoIAlign lowers its mask IoU and mask AP: a trained mask
#   head depends on the alignment it was trained with, which is why an ablation retrains instead.
#
# ## Exercises
#
# Worked solutions are in `solutions/12_ablations.py` (for teachers). Each check cell says whether your
# answer is right.
#
# **Exercise 1 — how many seeds?** Two variants have the same seed-to-seed standard deviation `std`,
# and the true difference of their mean APs is `difference`. With `n` seeds each, the standard error of
# the difference of the means is $\mathrm{std}\cdot\sqrt{2/n}$. Write `my_seeds_needed(difference, std, k)`
# that returns the smallest `n` for which `|difference|` is larger than `k` standard errors. Then use it:
# with our baseline's standard deviation, how many seeds would the benchmark need to resolve a gap of the
# paper's class-agnostic size (2% of our baseline's AP) at `k = 2`?

# %%
def my_seeds_needed(difference, std, k=2.0):
    raise NotImplementedError  # your code here


# %%
from mrcnn_teach.exercises.nb12 import check_mask_logit_shape, check_seeds_needed, check_snap_error

check_seeds_needed(my_seeds_needed);

# %% [markdown]
# **Exercise 2 — predict the mask logits.** Write `my_mask_logit_shape(overrides, num_rois, num_classes)`
# that returns, without building a model, the shape of the mask logits that the `shapes_tiny` model built
# with `overrides` (one of the benchmark's variants, a dict like `{"roi_layer": "pool"}`) and
# `num_classes` (background included) gives for `num_rois` RoIs. The check builds the models and
# compares, for `num_classes` 4 and 91.

# %%
def my_mask_logit_shape(overrides, num_rois, num_classes):
    raise NotImplementedError  # your code here


# %%
check_mask_logit_shape(my_mask_logit_shape);

# %% [markdown]
# **Exercise 3 — RoIPool's snapping error.** Write `my_snap_error(boxes, stride)` that takes boxes
# `(K, 4)` in image pixels and returns `(K,)`: for each box, the largest distance in image pixels by which
# RoIPool's first rounding moves one of its four coordinates (each coordinate goes to the nearest cell,
# `round(x / stride)`, which in pixels is `round(x / stride) * stride`). Does the way halves are rounded
# matter for the distance? Then apply it to `gt_boxes` of section 5 at stride 4: how far below the bound
# of 2 px is the typical object?

# %%
def my_snap_error(boxes, stride):
    raise NotImplementedError  # your code here


# %%
check_snap_error(my_snap_error);

# %% [markdown]
# Next: [13 — Your own data](13_your_own_data.ipynb): a COCO folder of your own, inspected, trained on and evaluated.
# Or back to the start: [00 — Tour](00_tour.ipynb), which follows one image
# through the whole trained model. To train and evaluate a model yourself in one command, run `make demo`
# (10 minutes on a CPU; the README explains what it writes and how to train on your own COCO-format data).
