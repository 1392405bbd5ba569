# %% [markdown]
# # 03 — Anchors
#
# The RPN does not draw boxes from nothing. At every position of every pyramid level it starts from a
# few fixed reference boxes, the *anchors*, and learns two things for each: is there an object here, and
# how must this box move to fit it (Faster R-CNN, Ren et al. 2015, Sec. 3.1). This notebook builds the
# anchors and counts them. It then asks how well they fit the objects of our shapes data before any
# learning: not well, and that explains a rule of the RPN's labelling.
#
# **You will learn**
# - the $k$ anchors of one position: one size per level, three aspect ratios, $w h = s^2$, $h / w = r$,
#   and the rounding to whole pixels that torchvision uses (and we copy)
# - how anchors are laid on each level's stride grid, and how many there are: $A = \sum_l H_l W_l k$
# - why FPN uses $k = 3$ per level where Faster R-CNN used 9, and what 9 per level would cost
# - how close the best anchor comes to each ground-truth box, and why many boxes get no anchor with
#   IoU ≥ 0.7 (the reason for the RPN's "low-quality match" rule)
#
# **Builds on:** [02 — FPN](02_fpn.ipynb) (the levels P2..P6, their sizes and strides)
#
# **Run time:** about 10 s on a 2-core CPU (this notebook does not need the trained model).

# %%
import math

import matplotlib.pyplot as plt
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TorchvisionAnchorGenerator
from torchvision.models.detection.image_list import ImageList

from mrcnn_teach.anchors import AnchorGenerator, make_cell_anchors
from mrcnn_teach.boxes import box_iou
from mrcnn_teach.configs import get_config
from mrcnn_teach.datasets import ShapesDataset
from mrcnn_teach.matcher import Matcher
from mrcnn_teach.notebook import print_shapes, setup, show_source
from mrcnn_teach.rpn import RPNHead

setup()

# %% [markdown]
# ## 1. One size per level, three shapes per size
#
# Faster R-CNN put $k$ anchors at each position of a single feature map. FPN (Lin et al. 2017, Sec. 4.1)
# spreads them over the pyramid: level $P_l$ gets anchors of **one** size $s_l$, in three aspect ratios
# $r = h/w \in \{\tfrac12, 1, 2\}$, so $k = 3$ per position. An anchor of size $s$ and ratio $r$ keeps the
# area $s^2$:
#
# $$w \cdot h = s^2,\quad \frac{h}{w} = r \quad\Longrightarrow\quad w = \frac{s}{\sqrt r},\quad h = s\sqrt r .$$
#
# All the anchors of an image number
#
# $$A = \sum_{l=2}^{6} H_l\, W_l\, k ,$$
#
# where $H_l \times W_l$ is the size of level $l$. Our two configurations use the same ratios and
# different sizes. `resnet50_fpn` follows the paper: 32, 64, 128, 256, 512 px on P2..P6, so every anchor
# is 8 strides wide. `shapes_tiny` uses 8, 16, 32, 64, 128 px for 128-px images with 10–60 px shapes:
# only 2 strides wide. Section 7 shows what that costs. We expect 3 anchors per position on every level.

# %%
for name in ("shapes_tiny", "resnet50_fpn"):
    cfg = get_config(name)
    generator = AnchorGenerator(cfg["anchor_sizes"], cfg["aspect_ratios"])
    print(f"{name:<13} sizes {[s for (s,) in cfg['anchor_sizes']]}, ratios {cfg['aspect_ratios'][0]}, "
          f"k per level {generator.num_anchors_per_location()}")
    assert generator.num_anchors_per_location() == [3, 3, 3, 3, 3]

# %% [markdown]
# ## 2. The $k$ anchors of one position
#
# `make_cell_anchors` builds the $k$ boxes of one level, centred on (0, 0). Read the last line: the
# corners are **rounded to whole pixels**. torchvision does the same, and its trained weights learned
# with these rounded boxes, so we copy it.

# %%
show_source(make_cell_anchors)

# %% [markdown]
# What does the rounding change? For $s = 32$, $r = \tfrac12$ the exact box is 45.25 × 22.63. Its
# half-sides 22.63 and 11.31 round to 23 and 11, which gives a 46 × 22 box of area 1012 instead of 1024.
# For the small `shapes_tiny` anchors rounding matters more. $s = 8$, $r = \tfrac12$ gives 11.31 × 5.66,
# which rounds to 12 × 6 = 72 px², 12.5 % more than $8^2$. The ratio can drift too: $s = 16$,
# $r = \tfrac12$ becomes 22 × 12, not quite 1:2. The table lists every anchor shape of the two
# configurations.

# %%
# NBVAL_CHECK_OUTPUT
print("config         size  ratio   exact w x h      rounded w x h   area / s^2")
for name in ("shapes_tiny", "resnet50_fpn"):
    cfg = get_config(name)
    for (size,), ratios in zip(cfg["anchor_sizes"], cfg["aspect_ratios"]):
        cell = make_cell_anchors((size,), ratios)  # (3, 4) x1y1x2y2 centred on (0, 0)
        assert cell.shape == (3, 4)
        for r, (x1, y1, x2, y2) in zip(ratios, cell.tolist()):
            w, h = size / math.sqrt(r), size * math.sqrt(r)
            print(f"{name:<13} {size:>5}  {r:>5}  {w:>7.2f} x {h:<7.2f}  {x2 - x1:>6.0f} x {y2 - y1:<6.0f}"
                  f"  {(x2 - x1) * (y2 - y1) / size**2:>10.4f}")

# %% [markdown]
# The same numbers come out of torchvision's `AnchorGenerator.generate_anchors`. We check every level of
# both configurations.

# %%
for name in ("shapes_tiny", "resnet50_fpn"):
    cfg = get_config(name)
    reference = TorchvisionAnchorGenerator(cfg["anchor_sizes"], cfg["aspect_ratios"])
    for sizes, ratios in zip(cfg["anchor_sizes"], cfg["aspect_ratios"]):
        assert torch.equal(make_cell_anchors(sizes, ratios), reference.generate_anchors(sizes, ratios))
print("cell anchors equal torchvision's on all 10 levels")

# %% [markdown]
# ## 3. Laying the anchors on the stride grid
#
# `AnchorGenerator.forward` copies the cell anchors to every position $(x, y)$ of each level. It puts
# their centre at $(x \cdot \text{stride}, y \cdot \text{stride})$: the top-left pixel of the cell, not
# its middle $((x + \tfrac12)\,\text{stride}, \dots)$. That matches where the features are.
# [Notebook 02](02_fpn.ipynb) measured that position $i$ of $P_l$ is driven by the pixels around
# $i \cdot 2^l$. The stride is `H // h`, an integer division (more on that in section 4). The order of
# the rows is level, then row $y$, then column $x$, then the $k$ ratios. The RPN head's outputs are
# flattened in the same order, so anchor $i$ and prediction $i$ belong together.

# %%
show_source(AnchorGenerator.forward)

# %% [markdown]
# We run it for one 128 × 128 `shapes_tiny` image. Its levels are 32, 16, 8, 4 and 2 positions wide
# (notebook 02). We expect $3\,(32^2 + 16^2 + 8^2 + 4^2 + 2^2) = 4092$ anchors, and the first three to
# be the $s = 8$ cell anchors centred at pixel (0, 0), half outside the image.

# %%
cfg = get_config("shapes_tiny")
generator = AnchorGenerator(cfg["anchor_sizes"], cfg["aspect_ratios"])
image_size = (128, 128)
feature_sizes = [(128 // 2**level, 128 // 2**level) for level in range(2, 7)]  # P2..P6
all_anchors = generator(image_size, feature_sizes)  # (A, 4)
print_shapes(anchors=all_anchors)
print("first three (P2, position (0, 0)):", all_anchors[:3].tolist())
assert all_anchors.shape == (4092, 4)

# %% [markdown]
# We split the anchors by level and check that the centres sit on the grid $x \cdot \text{stride}$.
# Then we compare with torchvision's `AnchorGenerator` on the same sizes: equal, bit for bit.

# %%
counts = [h * w * 3 for h, w in feature_sizes]  # anchors per level
per_level = all_anchors.split(counts)  # 5 x (h*w*3, 4)
for level, (h, w), level_anchors in zip(range(2, 7), feature_sizes, per_level):
    stride = 2**level
    grid = level_anchors.reshape(h, w, 3, 4)  # (h, w, k, 4): row y, column x, ratio
    assert grid.shape == (h, w, 3, 4)
    centre_x = (grid[..., 0] + grid[..., 2]) / 2  # (h, w, 3)
    centre_y = (grid[..., 1] + grid[..., 3]) / 2  # (h, w, 3)
    assert torch.equal(centre_x, (torch.arange(w) * stride).float()[None, :, None].expand(h, w, 3))
    assert torch.equal(centre_y, (torch.arange(h) * stride).float()[:, None, None].expand(h, w, 3))

reference = TorchvisionAnchorGenerator(cfg["anchor_sizes"], cfg["aspect_ratios"])
theirs = reference(ImageList(torch.zeros(1, 3, *image_size), [image_size]),
                   [torch.zeros(1, 64, h, w) for h, w in feature_sizes])[0]  # (A, 4)
assert torch.equal(all_anchors, theirs)
print("centres on the grid x * stride on every level; anchors equal torchvision's")

# %% [markdown]
# ## 4. How many anchors?
#
# The count is the lesson here. For `shapes_tiny` at 128 × 128 we derived 4092. For `resnet50_fpn` take
# an 800 × 1088 batch (a 4:3 photo resized to a shorter side of 800 and padded to a multiple of 32). Its
# levels are 200 × 272, 100 × 136, 50 × 68, 25 × 34 and $\lceil 25/2 \rceil \times 17 = 13 \times 17$, so
#
# $$A = 3\,(54400 + 13600 + 3400 + 850 + 221) = 3 \cdot 72471 = 217413 .$$
#
# The table also prints the stride the generator uses, `H // h`. For P6 at 800 px it is
# $800 // 13 = 61$, not 64: P6's 13 rows of anchors span 0..732 rather than 0..768. That is torchvision's
# rule, and its weights were trained with it, so the library keeps it.

# %%
# NBVAL_CHECK_OUTPUT
def anchor_table(name, H, W):
    cfg = get_config(name)
    generator = AnchorGenerator(cfg["anchor_sizes"], cfg["aspect_ratios"])
    sizes = [(math.ceil(H / 2**level), math.ceil(W / 2**level)) for level in range(2, 7)]  # P2..P6
    total = generator((H, W), sizes).shape[0]  # A
    print(f"{name} at {H} x {W}")
    print("  level  size   h x w       stride (y, x)   anchors")
    for level, (h, w), (s,) in zip(range(2, 7), sizes, cfg["anchor_sizes"]):
        print(f"  P{level}   {s:>5}   {h:>3} x {w:<4}   ({H // h:>2}, {W // w:>2})        {h * w * 3:>7,}")
    print(f"  total A = {total:,}")
    assert total == sum(h * w * 3 for h, w in sizes)
    return total


assert anchor_table("shapes_tiny", 128, 128) == 4092
assert anchor_table("resnet50_fpn", 800, 1088) == 217413

# %% [markdown]
# ## 5. What the anchors look like
#
# First the 15 anchors of one position, pixel (64, 64), which lies on the grid of every level. We draw
# them over a training image with one colour per level, and the image's GT boxes dashed black. We
# expect five nested groups, each twice the size of the previous one, each group a wide, a square and a
# tall box. P6's 128-px anchors are as large as the image.

# %%
train_set = ShapesDataset(300, seed=0)  # the model's training images
image, target = train_set[0]  # (3, 128, 128); target["boxes"] (G, 4)

fig, ax = plt.subplots(figsize=(6, 6))
ax.imshow(image.permute(1, 2, 0), extent=(0, 128, 128, 0))
for i, (x1, y1, x2, y2) in enumerate(target["boxes"].tolist()):
    ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.5, ls="--", color="black",
                               label="GT boxes" if i == 0 else None))
for level, level_anchors, (s,) in zip(range(2, 7), per_level, cfg["anchor_sizes"]):
    centres = (level_anchors[:, :2] + level_anchors[:, 2:]) / 2  # (N_l, 2)
    here = level_anchors[(centres == 64).all(dim=1)]  # (3, 4): the anchors of position (64, 64)
    assert here.shape == (3, 4)
    for i, (x1, y1, x2, y2) in enumerate(here.tolist()):
        ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.8, color=f"C{level - 2}",
                                   label=f"P{level}: size {s}, stride {2**level}" if i == 0 else None))
ax.plot(64, 64, "w+", ms=10)
ax.set_xlim(-32, 160)
ax.set_ylim(160, -32)
ax.set_xlabel("x (image px)")
ax.set_ylabel("y (image px)")
ax.set_title("The 15 anchors of pixel (64, 64): 3 per level (shapes_tiny)")
ax.legend(loc="lower left", fontsize=8)
plt.show()

# %% [markdown]
# Now the density. For each level we mark every anchor centre and draw the three anchors of one position.
# We expect dense small anchors on P2 (1024 positions, stride 4) and a handful of large ones on P6
# (4 positions). Every level has the same ratio of size to stride (2 in `shapes_tiny`), so on every level
# the anchors of neighbouring positions overlap by the same fraction.

# %%
fig, axes = plt.subplots(1, 5, figsize=(12, 3.2), layout="constrained")
for ax, level, level_anchors, (h, w), (s,) in zip(axes, range(2, 7), per_level, feature_sizes, cfg["anchor_sizes"]):
    stride = 2**level
    ax.imshow(image.permute(1, 2, 0), extent=(0, 128, 128, 0), alpha=0.5)
    ys, xs = torch.meshgrid(torch.arange(h) * stride, torch.arange(w) * stride, indexing="ij")  # (h, w)
    ax.plot(xs.flatten(), ys.flatten(), ".", color=f"C{level - 2}", ms=2 if level == 2 else 4, label="centres")
    pick = (h // 2 * w + w // 2) * 3  # first anchor of the position nearest the middle
    for x1, y1, x2, y2 in level_anchors[pick:pick + 3].tolist():
        ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.5, color=f"C{level - 2}"))
    ax.set_xlim(-8, 136)
    ax.set_ylim(136, -8)
    ax.set_title(f"P{level}: {h}×{w} positions, stride {stride}\n{h * w * 3:,} anchors of size {s}", fontsize=9)
    ax.set_xlabel("x (image px)")
axes[0].set_ylabel("y (image px)")
axes[0].legend(loc="lower left", fontsize=7)
fig.suptitle("Anchor centres per level (dots) and the 3 anchors of one position (boxes), shapes_tiny")
plt.show()

# %% [markdown]
# ## 6. Erratum: "3 scales × 3 ratios = 9" belongs to a single-level RPN
#
# The seed writes $k = 9$: 3 scales × 3 aspect ratios at every position of every FPN level. Nine is
# Faster R-CNN's number (Ren et al. 2015, Sec. 3.1.1). That RPN reads a single map (VGG's conv5, stride
# 16), so one position must offer every object size there: 128², 256² and 512², each in three ratios.
# With FPN the pyramid covers scale. FPN Sec. 4.1 gives each level a single scale, because the head
# slides over every level anyway, and keeps the three ratios: $k = 3$, 15 anchor shapes over the pyramid.
#
# What would 9 per position on all five levels cost? Take the natural extension: every level keeps its
# size $s_l$ and adds the octaves on either side, $\{s_l/2,\ s_l,\ 2s_l\}$. For the 800 × 1088 batch we
# expect 3 × 217,413 = 652,239 anchors. The sizes would also overlap: 64-px anchors would sit on P2, P3
# and P4. The P2 copy alone has $4^2 = 16$ times as many positions as the P4 copy, which is the level
# whose grid suits that size. The table counts the anchors of each size on each level.

# %%
# NBVAL_CHECK_OUTPUT
H, W = 800, 1088
sizes = [(math.ceil(H / 2**level), math.ceil(W / 2**level)) for level in range(2, 7)]  # P2..P6
octave_sizes = [(s // 2, s, 2 * s) for (s,) in get_config("resnet50_fpn")["anchor_sizes"]]  # 3 scales per level
nine = AnchorGenerator(octave_sizes, ((0.5, 1.0, 2.0),) * 5)
assert nine.num_anchors_per_location() == [9] * 5
A9 = nine((H, W), sizes).shape[0]
print(f"k = 3 (FPN): {3 * sum(h * w for h, w in sizes):>9,} anchors")
print(f"k = 9:       {A9:>9,} anchors")
all_sizes = sorted({s for level in octave_sizes for s in level})
print("\nanchors of each size on each level, k = 9 (3 ratios per size):")
print("size  " + "".join(f"{'P' + str(level):>9}" for level in range(2, 7)) + "    levels")
for s in all_sizes:
    row = [h * w * 3 if s in level_sizes else 0 for (h, w), level_sizes in zip(sizes, octave_sizes)]
    print(f"{s:>4}  " + "".join(f"{n:>9,}" for n in row) + f"    {sum(n > 0 for n in row)}")
assert A9 == 3 * 217413

# %% [markdown]
# Sizes 64, 128 and 256 would each sit on three levels, and 32 and 512 on two. Most copies of a size are
# on the finest of its levels.
# There they are tiled far more densely than a box of that size needs, and they repeat what the level
# built for that size already offers. The RPN head also grows with $k$: its objectness conv has $k$
# output channels and its delta conv $4k$. With one head shared by all levels, $k$ must be the same on
# every level.

# %%
for k in (3, 9):
    head = RPNHead(256, k)
    print(f"k = {k}: objectness conv -> {head.objectness.out_channels} channels, "
          f"deltas conv -> {head.deltas.out_channels} channels")
    assert (head.objectness.out_channels, head.deltas.out_channels) == (k, 4 * k)

# %% [markdown]
# ## 7. How well do the anchors fit the objects?
#
# The RPN learns from anchors labelled by IoU with the ground truth (Faster R-CNN Sec. 3.1.2). An anchor
# is positive at IoU ≥ 0.7 with some GT box, negative below 0.3 with all of them, and ignored in between.
# A GT box whose best anchor stays under 0.7 would teach the RPN nothing positive. How often does that
# happen? For every GT box of 300 training images we take the best IoU over all 4092 anchors
# (`box_iou`). For comparison we do the same with `resnet50_fpn`'s anchors, on the same boxes scaled
# × 6.25 as its transform would (128 → 800 px).

# %%
train_boxes = [train_set[i][1]["boxes"] for i in range(len(train_set))]  # 300 x (G_i, 4)
gt_boxes = torch.cat(train_boxes)  # (G, 4)
best_tiny = box_iou(gt_boxes, all_anchors).max(dim=1).values  # (G,)

cfg50 = get_config("resnet50_fpn")
anchors_800 = AnchorGenerator(cfg50["anchor_sizes"], cfg50["aspect_ratios"])(
    (800, 800), [(math.ceil(800 / 2**level),) * 2 for level in range(2, 7)])  # (159882, 4)
best_r50 = torch.cat([box_iou(chunk, anchors_800).max(dim=1).values
                      for chunk in (gt_boxes * 6.25).split(100)])  # (G,)
G = gt_boxes.shape[0]
assert gt_boxes.shape == (G, 4) and best_tiny.shape == best_r50.shape == (G,)
assert anchors_800.shape == (159882, 4)
print(f"{G} GT boxes in 300 images, sides {(gt_boxes[:, 2:] - gt_boxes[:, :2]).min():.0f} to "
      f"{(gt_boxes[:, 2:] - gt_boxes[:, :2]).max():.0f} px")

# %% [markdown]
# The histogram shows each GT box's best IoU, with the 0.3 and 0.7 thresholds marked. Given section 5
# (`shapes_tiny`'s anchors are only 2 strides wide), expect the left panel to sit mostly below 0.7.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained", sharey=True)
bins = torch.linspace(0, 1, 41)
for ax, best, title in [(axes[0], best_tiny, "shapes_tiny anchors (8..128 px), 128-px images"),
                        (axes[1], best_r50, "resnet50_fpn anchors (32..512 px), images at 800 px")]:
    below = int((best < 0.7).sum())
    ax.hist(best, bins=bins, color="C0", edgecolor="white")
    ax.axvline(0.7, color="C2", lw=2, label="0.7: positive from here")
    ax.axvline(0.3, color="C3", lw=2, label="0.3: negative below")
    ax.set_title(f"{title}\n{below} of {G} GT boxes ({below / G:.0%}) have no anchor with IoU ≥ 0.7", fontsize=9)
    ax.set_xlabel("IoU of the GT box with its best anchor")
    ax.legend(fontsize=8, loc="upper left")
axes[0].set_ylabel("number of GT boxes")
fig.suptitle("How well the best anchor fits each GT box (300 training images)")
plt.show()

# %% [markdown]
# Most GT boxes have no anchor at IoU ≥ 0.7 in `shapes_tiny`, and many do not even with the paper's
# anchors. Two things limit the best IoU, and `box_iou` on hand-placed boxes shows each:
#
# - **Grid offset.** A box the exact size and shape of an anchor can still sit between grid points,
#   half a stride off in $x$ and in $y$. For `shapes_tiny` (size = 2 strides) we expect that to cost
#   a lot, down to about 0.4, which is where the left histogram starts. For `resnet50_fpn`
#   (size = 8 strides) it costs little.
# - **Scale gap.** Sizes double from level to level. A square box of side $s\sqrt2$ centred on a grid
#   point has IoU $s^2 / 2s^2 = 0.5$ with the $s$ anchor and $2s^2 / 4s^2 = 0.5$ with the $2s$ anchor.
#   No anchor of either level can reach 0.7, whatever the grid. This is why the right histogram starts
#   at 0.5, with a pile of boxes just above it.

# %%
# NBVAL_CHECK_OUTPUT
def square(cx, cy, side):
    return torch.tensor([[cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]])  # (1, 4)


# Square anchors on P4 (stride 16): shapes_tiny's are 32 px (2 strides), resnet50_fpn's 128 px (8 strides).
for name, size in [("shapes_tiny", 32), ("resnet50_fpn", 128)]:
    stride = 16
    square_anchors = AnchorGenerator(((size,),), ((1.0,),))((128, 128), [(8, 8)])  # (64, 4)
    off_grid = square(64 + stride / 2, 64 + stride / 2, size)  # half a stride off in x and y
    iou = box_iou(off_grid, square_anchors).max().item()
    print(f"{name:<13} {size:>3}-px square, half a stride ({stride // 2} px) off in x and y: "
          f"best IoU with a {size}-px square anchor {iou:.4f}")
for s in (32, 64):
    between = square(64, 64, s * math.sqrt(2))
    print(f"square of side {s}*sqrt(2) = {s * math.sqrt(2):.2f} px on a grid point: IoU with the {s}-px anchor "
          f"{box_iou(between, square(64, 64, s)).item():.4f}, with the {2 * s}-px anchor "
          f"{box_iou(between, square(64, 64, 2 * s)).item():.4f}")

# %% [markdown]
# So the 0.7 threshold alone would leave most of our GT boxes without a single positive anchor, and the
# RPN would never learn to propose them. Faster R-CNN's labelling (Sec. 3.1.2) has a second rule for
# this: **each GT box's best anchor is positive too**, whatever its IoU. The library's `Matcher` takes
# it as `allow_low_quality_matches=True`; notebook 04 takes it apart. Here we count, over the same 300
# images, how many GT boxes end up with at least one positive anchor, with and without the rule. We
# expect 100 without it (the boxes right of 0.7 in the left histogram) and all of them with it.

# %%
def boxes_with_a_positive(matcher):
    """How many GT boxes of the 300 images get at least one positive anchor from `matcher`."""
    covered = 0
    for gt in train_boxes:  # (G_i, 4)
        matched = matcher(box_iou(gt, all_anchors))  # (A,) GT index, or -1 / -2
        assert matched.shape == (all_anchors.shape[0],)
        covered += int(torch.bincount(matched[matched >= 0], minlength=len(gt)).gt(0).sum())
    return covered


without_rule = boxes_with_a_positive(Matcher(0.7, 0.3, allow_low_quality_matches=False))
with_rule = boxes_with_a_positive(Matcher(0.7, 0.3, allow_low_quality_matches=True))
print(f"GT boxes with >= 1 positive anchor: {without_rule} of {G} without the rule, {with_rule} of {G} with it")
assert without_rule == int((best_tiny >= 0.7).sum()) and with_rule == G

# %% [markdown]
# ## Summary
#
# - Each pyramid level has anchors of one size in three ratios ($k = 3$). An anchor of size $s$ and ratio
#   $r = h/w$ is $s/\sqrt r$ wide and $s\sqrt r$ high, with its corners rounded to whole pixels, exactly as
#   torchvision does (a 46 × 22 box for $s = 32$, $r = \tfrac12$).
# - Anchors are centred on $(x \cdot \text{stride}, y \cdot \text{stride})$ and ordered level → row →
#   column → ratio, the order of the RPN head's outputs. The stride is `H // h`, which makes P6's stride
#   61 for an 800-pixel side.
# - $A = \sum_l H_l W_l k$: 4,092 anchors for a 128 × 128 `shapes_tiny` image, 217,413 for an 800 × 1088
#   `resnet50_fpn` batch.
# - The seed's "3 scales × 3 ratios = 9" is single-level Faster R-CNN. With FPN's pyramid, 9 per level
#   would triple the anchors (652,239), put each size on three levels, and make most copies the densely
#   tiled, redundant ones.
# - Most of our GT boxes have no anchor at IoU ≥ 0.7 (grid offset and the factor-2 scale gap). Only the
#   rule "each GT's best anchor is positive" gives every GT box a positive anchor.
#
# ## Exercises
#
# Worked solutions (for teachers) are in `solutions/03_anchors.py`.
#
# **Exercise 1.** Generate the anchors of one level yourself: `level_anchors(size, aspect_ratios, stride,
# h, w)` returns an (h·w·k, 4) tensor in the library's order (row, column, ratio), with the library's
# centres and rounding. The check compares it with `AnchorGenerator` on levels of its own choosing,
# including ratios other than ½, 1, 2.

# %%
def level_anchors(size, aspect_ratios, stride, h, w):
    raise NotImplementedError  # your code here


from mrcnn_teach.exercises.nb03 import check_count_anchors, check_level_anchors, check_worst_case_iou

check_level_anchors(level_anchors);

# %% [markdown]
# **Exercise 2.** Count anchors without generating them: `count_anchors(H, W, k)` for a batch padded to
# H × W (multiples of 32) with $k$ anchors per position on each of P2..P6. The check runs a real
# backbone for the level sizes and the library's generator for the count.

# %%
def count_anchors(H, W, k=3):
    raise NotImplementedError  # your code here


check_count_anchors(count_anchors);

# %% [markdown]
# **Exercise 3.** Find the grid-offset cost in closed form: `worst_case_iou(size, stride)` returns the
# IoU between a square box of side `size` placed half a stride off in $x$ and $y$ and a square anchor of
# the same size (assume stride ≤ size). Then check it against section 7's printout: which stride would
# `shapes_tiny`'s 32-px anchors need for this worst case to stay above 0.7?

# %%
def worst_case_iou(size, stride):
    raise NotImplementedError  # your code here


check_worst_case_iou(worst_case_iou);

# %% [markdown]
# Next: [04 — RPN](04_rpn.ipynb)
