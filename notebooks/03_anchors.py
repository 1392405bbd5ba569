# %% [markdown]
# # 03 — Anchors
#
# The RPN does not draw boxes from nothing. At every position of every pyramid level it starts from a
# few fixed reference boxes, the *anchors*, and learns two things for each: is there an object here, and
# how must this box move to fit it (Faster R-CNN, Ren et al. 2015, Sec. 3.1). This notebook builds the
# anchors and counts them. Then it asks the question that decides whether a set of anchors is any good
# for a dataset: how close does the best anchor come to each object, before any learning? That
# measurement chose `shapes_tiny`'s anchors, and you can repeat it on any data.
#
# **You will learn**
# - the $k$ anchors of one position, sizes × aspect ratios with $w h = s^2$ and $h / w = r$, and the
#   rounding to whole pixels that torchvision uses (and we copy)
# - where the anchors sit, $(x \cdot \text{stride}, y \cdot \text{stride})$, why that is where the features
#   look, and that anchors crossing the image border are kept (Faster R-CNN dropped them in training)
# - how many there are, $A = \sum_l H_l W_l k$, and why FPN uses $k = 3$ where Faster R-CNN used 9
# - how to measure an anchor design against the data (each GT box's best-anchor IoU), the two things that
#   cap that IoU (the grid offset and the gap between sizes), and how the measurement picked
#   `shapes_tiny`'s anchors
# - what the RPN's low-quality rule adds, and the box it can still leave without a positive anchor
#
# **Builds on:** [02 — FPN](02_fpn.ipynb) (the levels P2..P6, their sizes and strides)
#
# **Run time:** about 30 s on a 2-core CPU (this notebook does not need the trained model).

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
import math

import matplotlib.pyplot as plt
import torch
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator as TorchvisionAnchorGenerator
from torchvision.models.detection.image_list import ImageList

from mrcnn_teach.anchors import AnchorGenerator, anchor_coverage, make_cell_anchors
from mrcnn_teach.backbone import ResNetBody
from mrcnn_teach.boxes import box_iou
from mrcnn_teach.configs import get_config
from mrcnn_teach.datasets import ShapesDataset
from mrcnn_teach.datasets.shapes import MAX_SIZE_128, MIN_SIZE_128
from mrcnn_teach.matcher import Matcher
from mrcnn_teach.notebook import print_shapes, setup, show_source
from mrcnn_teach.rpn import RPNHead

setup()

# %% [markdown]
# ## 1. Sizes and aspect ratios per level
#
# Faster R-CNN put $k$ anchors at each position of one feature map, one per (size, aspect ratio) pair.
# An anchor of size $s$ and ratio $r = h/w$ keeps the area $s^2$:
#
# $$w \cdot h = s^2,\quad \frac{h}{w} = r \quad\Longrightarrow\quad w = \frac{s}{\sqrt r},\quad h = s\sqrt r .$$
#
# FPN (Lin et al. 2017, Sec. 4.1) spreads the sizes over the pyramid. Level $P_l$ gets anchors of a
# **single** size in three ratios $r \in \{\tfrac12, 1, 2\}$, so $k = 3$ per position. `resnet50_fpn`
# follows it: 32, 64, 128, 256 and 512 px on P2..P6, so every anchor is 8 strides wide. A level may also
# hold several sizes, and then $k$ = (sizes per level) × (ratios per level). `shapes_tiny` does that:
# three sizes per level, a factor $2^{1/3}$ apart, and the square ratio only. Section 7 measures why.
# Both designs should give $k = 3$, and both double their sizes from one level to the next.

# %%
for name in ("resnet50_fpn", "shapes_tiny"):
    cfg = get_config(name)
    generator = AnchorGenerator(cfg["anchor_sizes"], cfg["aspect_ratios"])
    print(f"{name:<13} sizes per level {cfg['anchor_sizes']}\n{'':<13} ratios h/w {cfg['aspect_ratios'][0]}, "
          f"k per level {generator.num_anchors_per_location()}")
    assert generator.num_anchors_per_location() == [3] * 5
    for lower, upper in zip(cfg["anchor_sizes"], cfg["anchor_sizes"][1:]):  # one octave per level
        assert all(abs(b - 2 * a) <= 1 for a, b in zip(lower, upper))  # up to rounding to whole pixels

# %% [markdown]
# ## 2. The $k$ anchors of one position
#
# `make_cell_anchors` builds the $k$ boxes of one level, centred on (0, 0). Read the last line: the
# corners are **rounded to whole pixels**. torchvision does the same, and its trained weights learned
# with these rounded boxes, so we copy it.

# %%
show_source(make_cell_anchors)

# %% [markdown]
# Predict before you run the table. For $s = 32$, $r = \tfrac12$ the exact box is 45.25 × 22.63. Its
# half-sides 22.63 and 11.31 round to 23 and 11, which gives a 46 × 22 box of area 1012 instead of 1024.
# `shapes_tiny`'s squares have half-sides $s/2$: whole for 16 and 20, but 12.5 for 25, a tie. PyTorch's
# `round` sends ties to the even neighbour, 12, so the "25-px" anchor is 24 px wide, with 8 % less area.
# The table shows P2 of both configurations, then the largest area change over all their levels.

# %%
# NBVAL_CHECK_OUTPUT
print("config         size  ratio   exact w x h       rounded w x h   area / s^2")
for name in ("resnet50_fpn", "shapes_tiny"):
    cfg = get_config(name)
    worst = (1.0, None)  # (area / s^2, where): no change yet
    for level, (sizes, ratios) in enumerate(zip(cfg["anchor_sizes"], cfg["aspect_ratios"])):
        cell = make_cell_anchors(sizes, ratios)  # (k, 4) x1y1x2y2 centred on (0, 0), ratio-major
        w, h = cell[:, 2] - cell[:, 0], cell[:, 3] - cell[:, 1]  # (k,), (k,)
        s = torch.tensor(sizes, dtype=torch.float32).repeat(len(ratios))  # (k,) the size of each row
        r = torch.tensor(ratios).repeat_interleave(len(sizes))  # (k,) the ratio of each row
        area = w * h / s**2  # (k,)
        for i in range(len(cell)) if level == 0 else []:
            print(f"{name:<13} {s[i]:>5.0f}  {r[i]:>5}  {s[i] / r[i].sqrt():>7.2f} x {s[i] * r[i].sqrt():<7.2f}"
                  f"  {w[i]:>6.0f} x {h[i]:<6.0f}  {area[i]:>10.4f}")
        i = int((area - 1).abs().argmax())
        if abs(area[i] - 1) > abs(worst[0] - 1):
            worst = (float(area[i]), f"size {s[i]:.0f}, ratio {r[i]:g} on P{level + 2}")
    print(f"{name:<13} largest change over all levels: area / s^2 = {worst[0]:.4f} ({worst[1]})")
assert make_cell_anchors((25,), (1.0,)).tolist() == [[-12.0, -12.0, 12.0, 12.0]]  # 12.5 rounds to even

# %% [markdown]
# The same numbers come out of torchvision's `AnchorGenerator.generate_anchors`. We check every level of
# both configurations.

# %%
for name in ("resnet50_fpn", "shapes_tiny"):
    cfg = get_config(name)
    reference = TorchvisionAnchorGenerator(cfg["anchor_sizes"], cfg["aspect_ratios"])
    for sizes, ratios in zip(cfg["anchor_sizes"], cfg["aspect_ratios"]):
        assert torch.equal(make_cell_anchors(sizes, ratios), reference.generate_anchors(sizes, ratios))
print("cell anchors equal torchvision's on all 10 levels")

# %% [markdown]
# ## 3. Laying the anchors on the stride grid
#
# `AnchorGenerator.forward` copies the cell anchors to every position $(x, y)$ of each level and puts
# their centre at $(x \cdot \text{stride}, y \cdot \text{stride})$: the top-left pixel of the cell, not
# its middle $((x + \tfrac12)\,\text{stride}, \dots)$. The stride is `H // h`, an integer division (more
# on that in section 4). The rows are ordered by level, then row $y$, then column $x$, then the $k$
# anchors of the cell. The RPN head's outputs are flattened in the same order, so anchor $i$ and
# prediction $i$ belong together.

# %%
show_source(AnchorGenerator.forward)

# %% [markdown]
# **Why $x \cdot \text{stride}$?** An anchor should sit where the feature that scores it looks. Output
# $i$ of a layer with kernel $k$, stride $s$ and padding $p$ (here $k$ and $s$ are the layer's kernel and
# stride, not the anchor count and size) reads inputs $i s - p, \dots, i s - p + k - 1$,
# centred on $i s + \tfrac{k-1}{2} - p$. That is $i s$ exactly when $p = \tfrac{k-1}{2}$. If every layer
# pads so, position $i$ of a map of stride $2^l$ is centred on input pixel $i \cdot 2^l$ (by induction
# over the layers; [notebook 01](01_backbone.ipynb), section 5, computes the receptive fields and
# measures them). The cell checks this for every convolution of both bodies, and for the stem's
# max pool (3 × 3, stride 2, padding 1, in `backbone.py`).

# %%
layers = {(3, 2, 1)}  # the stem's max pool: kernel, stride, padding
for depth in (18, 50):
    layers |= {(m.kernel_size[0], m.stride[0], m.padding[0])
               for m in ResNetBody(depth, norm="gn").modules() if isinstance(m, nn.Conv2d)}
print("(kernel, stride, padding) of every conv and pool of ResNet-18 and -50:", sorted(layers))
assert all(p == (k - 1) / 2 for k, s, p in layers)  # every layer centred: no shift, strides multiply

# %% [markdown]
# FPN keeps that centre: its lateral 1 × 1 convs and its 3 × 3 output convs (padding 1) are centred
# too. Two fine points move it a little: a pixel index $i s$ covers $[i s, i s + 1)$ in the
# coordinates of boxes, so an anchor at $i s$ sits half a pixel up and left of that pixel's middle. And
# the top-down path adds the coarser level by nearest upsampling, which hands fine position $i$ the
# coarse position $\lfloor i/2 \rfloor$, centred on $2\lfloor i/2 \rfloor s$: on $i s$ for even $i$, one
# stride to the left for odd $i$ (and the coarser levels' shares of the sum, further still).
#
# We run the generator for one 128 × 128 `shapes_tiny` image. Its levels are 32, 16, 8, 4 and 2
# positions wide (notebook 02). We expect $3\,(32^2 + 16^2 + 8^2 + 4^2 + 2^2) = 4092$ anchors, and the
# first three to be P2's 16-, 20- and 24-px squares centred on pixel (0, 0), three quarters outside the
# image.

# %%
cfg = get_config("shapes_tiny")
generator = AnchorGenerator(cfg["anchor_sizes"], cfg["aspect_ratios"])
k = generator.num_anchors_per_location()[0]  # 3 on every level
image_size = (128, 128)
feature_sizes = [(128 // 2**level, 128 // 2**level) for level in range(2, 7)]  # P2..P6
all_anchors = generator(image_size, feature_sizes)  # (A, 4)
print_shapes(anchors=all_anchors)
print("first three (P2, position (0, 0)):", all_anchors[:3].tolist())
assert all_anchors.shape == (4092, 4)

# %% [markdown]
# **Anchors across the border.** Faster R-CNN (Sec. 3.3) ignores every anchor that crosses the image
# border during training: the paper reports that without this, their large and hard-to-correct
# errors keep training from converging. At test time it keeps them and clips the proposals to the image.
# torchvision does not drop them in training: `RegionProposalNetwork.assign_targets_to_anchors` matches
# every anchor against the GT boxes, and the only clipping is of proposals (`clip_boxes_to_image` in
# `filter_proposals`). The library does the same (notebook 04). How much would the paper's rule drop
# here? We count the anchors not wholly inside the image, level by level.

# %%
per_level_count = [h * w * k for h, w in feature_sizes]  # anchors per level
inside = ((all_anchors[:, :2] >= 0) & (all_anchors[:, 2:] <= 128)).all(dim=1)  # (A,) wholly in the image
for level, keep in zip(range(2, 7), inside.split(per_level_count)):
    print(f"P{level}: {int((~keep).sum()):>4} of {keep.numel():>4} anchors cross the border ({(~keep).float().mean():.0%})")
crossing = 1 - inside.float().mean()
print(f"all levels: {crossing:.0%} of the {len(all_anchors)} anchors; Faster R-CNN's training would ignore them")
assert not inside[-per_level_count[-1]:].any()  # no P6 anchor fits in a 128-px image

# %% [markdown]
# With the paper's rule, P6 would never be trained on these 128-px images, and P5 hardly. Keeping every
# anchor lets the large levels learn at all on small images.
#
# Next we split the anchors by level and check that the centres sit on the grid $x \cdot \text{stride}$.
# Then we compare with torchvision's `AnchorGenerator` on the same design: equal, bit for bit.

# %%
per_level = all_anchors.split(per_level_count)  # 5 x (h*w*k, 4)
for level, (h, w), level_anchors in zip(range(2, 7), feature_sizes, per_level):
    stride = 2**level
    grid = level_anchors.reshape(h, w, k, 4)  # (h, w, k, 4): row y, column x, anchor
    assert grid.shape == (h, w, k, 4)
    centre_x = (grid[..., 0] + grid[..., 2]) / 2  # (h, w, k)
    centre_y = (grid[..., 1] + grid[..., 3]) / 2  # (h, w, k)
    assert torch.equal(centre_x, (torch.arange(w) * stride).float()[None, :, None].expand(h, w, k))
    assert torch.equal(centre_y, (torch.arange(h) * stride).float()[:, None, None].expand(h, w, k))

reference = TorchvisionAnchorGenerator(cfg["anchor_sizes"], cfg["aspect_ratios"])
theirs = reference(ImageList(torch.zeros(1, 3, *image_size), [image_size]),
                   [torch.zeros(1, 64, h, w) for h, w in feature_sizes])[0]  # (A, 4)
assert torch.equal(all_anchors, theirs)
print("centres on the grid x * stride on every level; anchors equal torchvision's")

# %% [markdown]
# ## 4. How many anchors?
#
# For `shapes_tiny` at 128 × 128 we derived 4092. For `resnet50_fpn` take an 800 × 1088 batch (a 4:3
# photo resized to a shorter side of 800 and padded to a multiple of 32). Its levels are 200 × 272,
# 100 × 136, 50 × 68, 25 × 34 and $\lceil 25/2 \rceil \times 17 = 13 \times 17$, so
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
    print("  level  sizes            h x w       stride (y, x)   anchors")
    for level, (h, w), s, k in zip(range(2, 7), sizes, cfg["anchor_sizes"], generator.num_anchors_per_location()):
        print(f"  P{level}    {str(s):<15}  {h:>3} x {w:<4}   ({H // h:>2}, {W // w:>2})        {h * w * k:>7,}")
    print(f"  total A = {total:,}")
    return total


assert anchor_table("shapes_tiny", 128, 128) == 4092
assert anchor_table("resnet50_fpn", 800, 1088) == 217413

# %% [markdown]
# ## 5. What the anchors look like
#
# First the 15 anchors of one position, pixel (64, 64), which lies on the grid of every level. We draw
# them over a training image with one colour per level, and its GT boxes dashed black. We expect five
# nested groups of three squares, each group twice the size of the one before. P5's and P6's are as large
# as the image or larger (P5's 128-px square lies on the image's border), so the left panel zooms out; the right one zooms in on P2 and P3.

# %%
train_set = ShapesDataset(300, seed=0)  # the first 300 of the model's 2000 training images
image, target = train_set[0]  # (3, 128, 128); target["boxes"] (G, 4)
centre = torch.tensor([64.0, 64.0])
fig, axes = plt.subplots(1, 2, figsize=(11, 5.4), layout="constrained")
for ax, (lo, hi), levels in [(axes[0], (-150, 280), range(2, 7)), (axes[1], (28, 100), (2, 3))]:
    ax.imshow(image.permute(1, 2, 0), extent=(0, 128, 128, 0))
    ax.add_patch(plt.Rectangle((0, 0), 128, 128, fill=False, color="0.3", lw=1))  # the image's border
    for i, (x1, y1, x2, y2) in enumerate(target["boxes"].tolist()):
        ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.5, ls="--", color="black",
                                   label="GT boxes" if i == 0 else None))
    for level in levels:
        level_anchors = per_level[level - 2]  # (h*w*k, 4)
        here = level_anchors[((level_anchors[:, :2] + level_anchors[:, 2:]) / 2 == centre).all(dim=1)]  # (k, 4)
        assert here.shape == (k, 4)
        widths = ", ".join(f"{v:.0f}" for v in (here[:, 2] - here[:, 0]).tolist())  # after rounding
        for i, (x1, y1, x2, y2) in enumerate(here.tolist()):
            ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.8, color=f"C{level - 2}",
                                       label=f"P{level} (stride {2**level}): {widths} px" if i == 0 else None))
    ax.plot(64, 64, "w+", ms=10)
    ax.set(xlim=(lo, hi), ylim=(hi, lo), xlabel="x (image px)", ylabel="y (image px)")
    ax.legend(loc="lower left", fontsize=8)
axes[0].set_title("All 15 anchors of pixel (64, 64); grey: the 128-px image")
axes[1].set_title("Zoom: P2's and P3's anchors")
fig.suptitle("The anchors of one position: 5 levels × 3 sizes, each a factor 2^(1/3) apart (shapes_tiny)")
plt.show()

# %% [markdown]
# Now the density. For each level we mark every anchor centre and draw the three anchors of the position
# (64, 64). Each panel shows a window 16 strides wide around that position, so it zooms out by 2 from one
# level to the next. Size and spacing both double too, so we expect the same picture five times, with
# an image that shrinks: P2's window is full of positions, while on P6 the whole image holds only 4.

# %%
fig, axes = plt.subplots(1, 5, figsize=(14, 3.4), layout="constrained")
for ax, level, level_anchors, (h, w) in zip(axes, range(2, 7), per_level, feature_sizes):
    stride, half = 2**level, 8 * 2**level  # the window: 8 strides either side of (64, 64)
    ax.imshow(image.permute(1, 2, 0), extent=(0, 128, 128, 0), alpha=0.6)
    ax.add_patch(plt.Rectangle((0, 0), 128, 128, fill=False, color="0.3", lw=1))
    ys, xs = torch.meshgrid(torch.arange(h) * stride, torch.arange(w) * stride, indexing="ij")  # (h, w)
    ax.plot(xs.flatten(), ys.flatten(), ".", color=f"C{level - 2}", ms=3, label="anchor centres")
    pick = ((64 // stride) * w + 64 // stride) * k  # first anchor of position (64, 64)
    for x1, y1, x2, y2 in level_anchors[pick:pick + k].tolist():
        ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.5, color=f"C{level - 2}"))
    ax.set(xlim=(64 - half, 64 + half), ylim=(64 + half, 64 - half), xlabel="x (image px)")
    ax.set_title(f"P{level}: stride {stride}, {h}×{w} positions\n{h * w * k:,} anchors", fontsize=9)
axes[0].set_ylabel("y (image px)")
axes[0].legend(loc="lower left", fontsize=7)
fig.suptitle("Anchor centres per level (dots) and the 3 anchors of (64, 64); each window is 16 strides wide")
plt.show()

# %% [markdown]
# ## 6. How many anchors per position: 3, not 9
#
# > **Common mistake:** "the RPN puts 3 scales × 3 aspect ratios = 9 anchors at every position of
# > every FPN level." Nine is Faster R-CNN's number (Ren et al. 2015, Sec. 3.1.1). That RPN reads a
# > single map (VGG-16's conv5, stride 16), so one position must offer every object size there: 128²,
# > 256² and 512² px, each in three ratios. With FPN the pyramid covers scale: its Sec. 4.1 gives each
# > level one size in three ratios, $k = 3$, 15 anchor shapes over the pyramid. (Nine per level does
# > exist, in RetinaNet (Lin et al., "Focal Loss", 2017, Sec. 4), which gives each level the sizes
# > $2^0, 2^{1/3}, 2^{2/3}$ times its base size, each in the three ratios. `shapes_tiny` takes those
# > three sizes and drops two of the ratios: $k = 3$ again.)
#
# What would 9 per position cost `resnet50_fpn`? Take the natural extension: every level keeps its size
# $s_l$ and adds the octaves on either side, $\{s_l/2,\ s_l,\ 2s_l\}$. For the 800 × 1088 batch we expect
# 3 × 217,413 = 652,239 anchors. The sizes would also overlap: 64-px anchors would sit on P2, P3 and P4.
# 64 is P3's own size (8 strides, like every FPN anchor); the P2 copy repeats it on a grid with 4× as
# many positions, and the P4 copy on a grid coarser than the 8-stride rule. The table counts the anchors
# of each size on each level.

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
print("\nanchors of each size on each level, k = 9 (3 ratios per size):")
print("size  " + "".join(f"{'P' + str(level):>9}" for level in range(2, 7)) + "    levels")
for s in sorted({s for level in octave_sizes for s in level}):
    row = [h * w * 3 if s in level_sizes else 0 for (h, w), level_sizes in zip(sizes, octave_sizes)]
    print(f"{s:>4}  " + "".join(f"{n:>9,}" for n in row) + f"    {sum(n > 0 for n in row)}")
assert A9 == 3 * 217413

# %% [markdown]
# Sizes 64, 128 and 256 would each sit on three levels, and 32 and 512 on two. Most copies of a size are
# on the finest of its levels, tiled far more densely than a box of that size needs. The RPN head also
# grows with $k$: its objectness conv has $k$ output channels and its delta conv $4k$. One head is
# shared by all levels, so $k$ must be the same on every level.

# %%
for k_head in (3, 9):
    head = RPNHead(256, k_head)
    print(f"k = {k_head}: objectness conv -> {head.objectness.out_channels} channels, "
          f"deltas conv -> {head.deltas.out_channels} channels")
    assert (head.objectness.out_channels, head.deltas.out_channels) == (k_head, 4 * k_head)

# %% [markdown]
# ## 7. How well do the anchors fit the objects?
#
# The RPN learns from anchors labelled by IoU with the ground truth (Faster R-CNN Sec. 3.1.2): positive
# at IoU ≥ 0.7 with some GT box, negative below 0.3 with all of them, ignored in between. So the first
# question about a design is: for each GT box, how high is the IoU of its best anchor? Below 0.7 the box
# has no positive anchor by the threshold (section 8 shows what rescues it). First, the boxes. The
# shapes are drawn 12–48 px (side, or a circle's diameter), but a rotated square's box is wider than the
# square and a partly hidden shape's box smaller, so we measure them, as sides $\sqrt{w h}$.

# %%
train_boxes = [train_set[i][1]["boxes"] for i in range(len(train_set))]  # 300 x (G_i, 4)
gt_boxes = torch.cat(train_boxes)  # (G, 4)
G = gt_boxes.shape[0]
w, h = gt_boxes[:, 2] - gt_boxes[:, 0], gt_boxes[:, 3] - gt_boxes[:, 1]  # (G,), (G,)
side = (w * h).sqrt()  # (G,)
q = torch.tensor([0.0, 0.05, 0.5, 0.95, 1.0])
print(f"shapes drawn {MIN_SIZE_128:.0f}-{MAX_SIZE_128:.0f} px; {G} GT boxes in {len(train_set)} images")
print("box side sqrt(wh), min / 5% / median / 95% / max:", [round(v, 1) for v in side.quantile(q).tolist()], "px")
print("aspect ratio h/w,  min / 5% / median / 95% / max:", [round(v, 2) for v in (h / w).quantile(q).tolist()])
assert 6 <= side.min() and side.max() <= 67.5  # the range datasets/shapes.py states for 2000 images

# %% [markdown]
# Between the 5 % and the 95 % quantiles (nine boxes in ten) the boxes are nearly square, and their
# sides span about a factor 4. `anchor_coverage` is the measurement: it lays a design's anchors on a 128-px image and takes,
# for every GT box, the best IoU over all of them. Every image has the same anchors, so the boxes of all
# images are pooled in one call.

# %%
show_source(anchor_coverage)

# %% [markdown]
# We measure five designs. Predict the order before you run it: which helps more, a larger base size,
# a second size per octave, or two more aspect ratios? The first row is FPN's design (one size per
# level, three ratios) with its sizes divided by 4, 8..128 px, so each anchor is 2 strides wide instead
# of FPN's 8 (`shapes_tiny`'s anchors until this measurement). The
# last row is `shapes_tiny`'s. The `P2..P6` columns give the share of GT boxes whose best anchor is on
# each level.

# %%
# NBVAL_CHECK_OUTPUT
def octaves(base, per_octave):
    """Sizes base * 2^(l + i / per_octave), i < per_octave, on P2..P6 (l = 0..4), rounded."""
    return tuple(tuple(round(base * 2 ** (l + i / per_octave)) for i in range(per_octave)) for l in range(5))


RATIOS3, SQUARE = ((0.5, 1.0, 2.0),) * 5, ((1.0,),) * 5
designs = {"one size, 2 strides (8..128)": (octaves(8, 1), RATIOS3),
           "one size, 4 strides (16..256)": (octaves(16, 1), RATIOS3),
           "2 sizes/octave from 16": (octaves(16, 2), RATIOS3),
           "3 sizes/octave from 16, 3 ratios": (octaves(16, 3), RATIOS3),
           "3 sizes/octave from 16, square": (octaves(16, 3), SQUARE)}
assert designs["3 sizes/octave from 16, square"] == (cfg["anchor_sizes"], cfg["aspect_ratios"])
fits = {name: anchor_coverage(gt_boxes, *design) for name, design in designs.items()}
print(f"{'design':34s} {'k':>2} {'A':>6} {'>=0.7':>6} {'>=0.5':>6} {'median':>6}    P2   P3   P4   P5   P6")
for name, fit in fits.items():
    levels = " ".join(f"{(fit.best_level == l).float().mean():4.0%}" for l in range(5))
    k_design = len(designs[name][0][0]) * len(designs[name][1][0])  # sizes x ratios per position
    print(f"{name:34s} {k_design:>2} {fit.num_anchors:>6,} {fit.covered:>6.0%} "
          f"{(fit.best_iou >= 0.5).float().mean():>6.0%} {fit.best_iou.median():>6.2f}  {levels}")
assert not (fits["3 sizes/octave from 16, square"].best_level >= 3).any()  # P5, P6: nobody's best anchor

# %% [markdown]
# Read the `>=0.7` column. Doubling the base size (row 2) helps, but one size per level stays poor
# whatever its base. A second size per octave helps much more, and a third more still. Three ratios
# triple the anchors for almost nothing, since the boxes are square. Under `shapes_tiny`'s design no box
# has its best anchor on P5 or P6. Those levels cost few anchors, but they still take proposal slots in the RPN (notebook 04).
#
# Two things cap a box's best IoU, and `box_iou` on hand-placed squares shows each:
#
# - **Grid offset.** A box the exact size of an anchor can sit between grid points, half a stride off in
#   $x$ and in $y$. The cost depends on how many strides wide the anchor is. Exercise 1 asks for the
#   formula.
# - **The gap between sizes.** Take a square box of side $b$ centred on an anchor of side $s < b$: its
#   IoU is $s^2/b^2$. A box midway between two neighbouring sizes $s$ and $s'$ on a log scale, with side
#   $b = \sqrt{s s'}$, has IoU $s / s'$ with both, however well it is centred. With one size per level,
#   $s' = 2s$ and the box gets at most $(1/\sqrt2)^2 = 0.5$. With three sizes per octave, $s' = 2^{1/3} s$
#   and it gets $2^{-1/3} = 0.79$, before the sizes are rounded (the last line printed below uses P3's 32 and 40:
#   IoU 0.80).

# %%
# NBVAL_CHECK_OUTPUT
def square(cx, cy, side):
    return torch.tensor([[cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]])  # (1, 4)


for size, stride in [(8, 4), (16, 4), (24, 4), (128, 16)]:
    off_grid = square(64 + stride / 2, 64 + stride / 2, size)  # half a stride off in x and y
    print(f"{size:>3}-px square anchor, stride {stride:>2} ({size / stride:.0f} strides wide): a box of its size "
          f"half a stride off has IoU {box_iou(off_grid, square(64, 64, size)).item():.3f}")
for s, s_next in [(32, 64), (32, 40)]:
    between = square(64, 64, math.sqrt(s * s_next))
    print(f"a {math.sqrt(s * s_next):.1f}-px square centred between the {s}- and {s_next}-px anchors: IoU "
          f"{box_iou(between, square(64, 64, s)).item():.3f} and {box_iou(between, square(64, 64, s_next)).item():.3f}")

# %% [markdown]
# The picture puts both effects against the data. For square boxes of every side from 4 to 100 px it
# draws the best-anchor IoU, once for a box centred on (64, 64), a point of every level's grid (the upper
# curve), and once averaged over box centres spread across a 16-px cell (the lower curve). Below it are
# the sides of the GT boxes. Expect a sawtooth whose teeth sit at the anchor sizes.

# %%
sides = torch.logspace(math.log10(4), math.log10(100), 160)  # (S,) box sides, px
offsets = torch.arange(0, 16, 2.0)  # (8,) sub-cell positions, px
cx, cy = torch.meshgrid(64 + offsets, 64 + offsets, indexing="ij")  # (8, 8) box centres
fig, (ax, ax_hist) = plt.subplots(2, 1, figsize=(9, 6), sharex=True, height_ratios=(2, 1), layout="constrained")
for (name, colour), label in [(("one size, 2 strides (8..128)", "C3"), "8..128 px, one size per level"),
                              (("3 sizes/octave from 16, square", "C0"), "shapes_tiny: 3 sizes per octave")]:
    centred = anchor_coverage(torch.cat([square(64, 64, b) for b in sides]), *designs[name]).best_iou  # (S,)
    spread = torch.cat([torch.stack([cx - b / 2, cy - b / 2, cx + b / 2, cy + b / 2], -1).reshape(-1, 4)
                        for b in sides])  # (S * 64, 4)
    mean = anchor_coverage(spread, *designs[name]).best_iou.reshape(len(sides), -1).mean(dim=1)  # (S,)
    ax.plot(sides, centred, color=colour, lw=1.5, label=f"{label}: box centred on a grid point")
    ax.plot(sides, mean, color=colour, lw=1.5, ls="--", label=f"{label}: mean over positions")
ax.axhline(0.7, color="0.4", lw=1, ls=":")
ax.text(4.2, 0.71, "0.7: positive from here", fontsize=8, color="0.3")
ax.set(xscale="log", ylim=(0, 1.02), ylabel="IoU with the best anchor",
       title="Best-anchor IoU of a square box against its side: teeth at the anchor sizes")
ax.legend(fontsize=8, loc="lower right")
ax_hist.hist(side, bins=torch.logspace(math.log10(4), math.log10(100), 40), color="0.6", edgecolor="white")
ax_hist.set(xlabel="box side sqrt(wh), px (log scale)", ylabel="GT boxes",
            title=f"The sides of the {G} GT boxes of {len(train_set)} training images")
ax_hist.set_xticks([4, 8, 16, 32, 64, 100], ["4", "8", "16", "32", "64", "100"])
plt.show()
in_range = (sides >= min(cfg["anchor_sizes"][0])) & (sides <= side.max())  # smallest anchor .. largest box
low = int(centred[in_range].argmin())  # centred: the last design drawn, shapes_tiny's
print(f"shapes_tiny, box centred on a grid point, sides {min(cfg['anchor_sizes'][0])}-{side.max():.0f} px: "
      f"lowest best-anchor IoU {centred[in_range][low]:.3f}, at a side of {sides[in_range][low]:.1f} px")

# %% [markdown]
# The old design's teeth are an octave apart. Between them its centred curve falls to 0.5, and its
# mean curve stays under 0.7 everywhere. Three sizes per octave put the teeth closer: from the smallest
# anchor (16 px) to the largest box the centred curve stays above 0.7, and its lowest point (printed
# under the picture) lies between the 24- and 32-px anchors. That gap is a factor 4/3, wider than $2^{1/3} \approx 1.26$, because 25 px
# rounded down to 24 (section 2): a box midway gets at most 24/32 = 0.75 there (the 160 sampled sides miss the exact
# midpoint, 27.7 px, so the printed minimum is 0.762). The mean curve clears 0.7
# over most of the data's range.
# It drops below 0.7 only under about 14.5 px, where boxes are smaller than any anchor. At 16 px the mean
# is still about 0.79, but a box half a stride off gets only 0.62, because the 16-px anchor is only 4
# strides of P2 wide (Exercise 1).
#
# Now the real boxes. The histograms show each GT box's best IoU for the old design, for
# `shapes_tiny`'s, and for `resnet50_fpn`'s (FPN's 32..512 px, the boxes scaled × 6.25 as its transform
# would, 128 → 800 px; torchvision's anchors equal ours, section 3).

# %%
cfg50 = get_config("resnet50_fpn")
fit_r50 = anchor_coverage(gt_boxes * 6.25, cfg50["anchor_sizes"], cfg50["aspect_ratios"], (800, 800))
assert fit_r50.num_anchors == 3 * (200**2 + 100**2 + 50**2 + 25**2 + 13**2)  # 159,882
fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained", sharey=True)
bins = torch.linspace(0, 1, 41)
for ax, fit, title in [(axes[0], fits["one size, 2 strides (8..128)"], "8..128 px, one size per level"),
                       (axes[1], fits["3 sizes/octave from 16, square"], "shapes_tiny: 16..406 px, 3 per octave"),
                       (axes[2], fit_r50, "resnet50_fpn: 32..512 px, images at 800 px")]:
    below = int((fit.best_iou < 0.7).sum())
    ax.hist(fit.best_iou, bins=bins, color="C0", edgecolor="white")
    ax.axvline(0.7, color="C2", lw=2, label="0.7: positive from here")
    ax.axvline(0.3, color="C3", lw=2, label="0.3: negative below")
    ax.set_title(f"{title}\n{below} of {G} GT boxes ({below / G:.0%}) have no anchor at IoU ≥ 0.7", fontsize=9)
    ax.set_xlabel("IoU of the GT box with its best anchor")
axes[0].legend(fontsize=8, loc="upper left")
axes[0].set_ylabel("number of GT boxes")
fig.suptitle(f"How well the best anchor fits each GT box ({len(train_set)} training images)")
plt.show()

# %% [markdown]
# FPN's own design, on the same boxes at 800 px, leaves many without an anchor at 0.7, with a pile just
# above 0.5: the gap between sizes, since its anchors are 8 strides wide and the grid offset costs them
# little. `shapes_tiny`'s design moves most boxes past 0.7 with the same $k = 3$ and the same
# 4,092 anchors as the old 8..128 design.
#
# ## 8. The low-quality rule, and the box it can still miss
#
# Faster R-CNN's labelling has a second rule (Sec. 3.1.2): the anchor with the highest IoU for a GT box
# (all of them, if several tie) is positive too, whatever its IoU. The paper keeps it for the rare boxes
# the threshold leaves without a positive. The library's `Matcher` applies it with
# `allow_low_quality_matches=True`; notebook 04 takes it apart. We count, over the same 300 images, the
# GT boxes that get at least one positive anchor, without and with the rule.

# %%
def boxes_with_a_positive(matcher, anchors):
    """How many GT boxes of the 300 images get at least one positive anchor from `matcher`."""
    covered = 0
    for gt in train_boxes:  # (G_i, 4)
        matched = matcher(box_iou(gt, anchors))  # (A,) GT index, or -1 / -2
        covered += int(torch.bincount(matched[matched >= 0], minlength=len(gt)).gt(0).sum())
    return covered


without_rule = boxes_with_a_positive(Matcher(0.7, 0.3, allow_low_quality_matches=False), all_anchors)
with_rule = boxes_with_a_positive(Matcher(0.7, 0.3, allow_low_quality_matches=True), all_anchors)
print(f"GT boxes with >= 1 positive anchor: {without_rule} of {G} without the rule, {with_rule} of {G} with it")
assert without_rule == int((fits["3 sizes/octave from 16, square"].best_iou >= 0.7).sum()) and with_rule == G

# %% [markdown]
# Every box has a positive anchor with the rule. It is tempting to conclude that the rule guarantees
# one. It does not. The `Matcher` hands each GT box's best anchor back to *that anchor's* best GT box,
# the one it overlaps most (the docstring of `Matcher` in `matcher.py` says so, and torchvision's
# `Matcher.set_low_quality_matches_` does the same; the paper says only that such an anchor is positive,
# not which box it learns). When two boxes overlap, one box's best anchor may overlap the other box
# more. Then the first box gets nothing from the rule,
# and nothing from the threshold unless another anchor passes 0.7 for it. It happens in our data:
# image 460 of the same training set (one of 2000, beyond the 300 above) has such a pair.

# %%
image_460, target_460 = ShapesDataset(2000, seed=0)[460]  # image i depends only on (seed, i)
gt_460 = target_460["boxes"]  # (G, 4)
iou_460 = box_iou(gt_460, all_anchors)  # (G, A)
matched = Matcher(0.7, 0.3, allow_low_quality_matches=True)(iou_460)  # (A,) GT index, or -1 / -2
positives = torch.bincount(matched[matched >= 0], minlength=len(gt_460))  # (G,) positive anchors per GT
loser = int(positives.argmin())
best = int(iou_460[loser].argmax())  # the loser's best anchor
thief = int(iou_460[:, best].argmax())  # the GT box that anchor goes to
print("positive anchors per GT box:", positives.tolist())
print(f"GT {loser}'s best anchor {all_anchors[best].tolist()}: IoU {iou_460[loser, best]:.3f} with GT {loser}, "
      f"{iou_460[thief, best]:.3f} with GT {thief}")
print(f"GT {loser}'s other anchors reach at most IoU {iou_460[loser].topk(2).values[1]:.3f}")
area = (gt_460[:, 2] - gt_460[:, 0]) * (gt_460[:, 3] - gt_460[:, 1])  # (G,)
print(f"areas: GT {loser} {area[loser]:.0f} px^2, GT {thief} {area[thief]:.0f} px^2")
assert positives[loser] == 0 and thief != loser  # a box left without a positive anchor, rule or not
assert area[loser] < area[thief]  # here the smaller box loses (Exercise 3 asks for the other way round)

# %%
fig, ax = plt.subplots(figsize=(5.5, 5.5))
ax.imshow(image_460.permute(1, 2, 0), extent=(0, 128, 128, 0))
for g, (colour, what) in {loser: ("C3", "no positive anchor"), thief: ("C2", "takes the anchor")}.items():
    x1, y1, x2, y2 = gt_460[g].tolist()
    ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=2.5, color=colour,
                               label=f"GT {g}: {what}"))
x1, y1, x2, y2 = all_anchors[best].tolist()
ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=2, ls="--", color="white",
                           label=f"GT {loser}'s best anchor (IoU {iou_460[loser, best]:.2f} / {iou_460[thief, best]:.2f})"))
ax.set(xlabel="x (image px)", ylabel="y (image px)")
ax.set_title(f"Training image 460: GT {loser} loses its best anchor to GT {thief}")
ax.legend(loc="lower left", fontsize=8)
plt.show()

# %% [markdown]
# In the picture, GT 1 (red box) is the bright-green shape mostly hidden behind the olive circle, GT 2;
# only its lower-right edge shows. The RPN is never taught to propose that box in this image: its regression and objectness losses see
# only the other box there. It takes two heavily overlapping objects of about the same size, which is
# why it is rare. The 300 images above have none; that every box got a positive anchor there is a
# property of the data, not a guarantee of the rule.
#
# ## Summary
#
# - A level's anchors are its sizes × its aspect ratios, $w = s/\sqrt r$, $h = s\sqrt r$, corners rounded
#   to whole pixels as torchvision does (25 px becomes 24: 12.5 rounds to even). FPN: one size per level
#   in three ratios; `shapes_tiny`: three sizes per level, square. Both $k = 3$.
# - Anchors are centred on $(x \cdot \text{stride}, y \cdot \text{stride})$, the receptive-field centre of
#   a position of a network whose layers all pad by $(k-1)/2$, and ordered level → row → column → anchor,
#   the order of the RPN head's outputs. Anchors that cross the border are kept; Faster R-CNN ignored
#   them in training, which at 128 px would silence P6.
# - $A = \sum_l H_l W_l k$: 4,092 anchors for a 128 × 128 `shapes_tiny` image, 217,413 for an 800 × 1088
#   `resnet50_fpn` batch. "3 scales × 3 ratios = 9" is single-level Faster R-CNN (and RetinaNet).
# - A design is measured by each GT box's best-anchor IoU. Two things cap it: the grid offset (an anchor
#   a few strides wide loses much half a stride off) and the gap between sizes (a box midway between
#   sizes a factor $q$ apart gets at most $1/q$: 0.5 an octave apart). Three sizes per octave, square,
#   lifted the share of boxes with an anchor at 0.7 from a small minority to most, at the same A.
# - The low-quality rule gives the uncovered boxes a positive anchor, but not always: a box whose best
#   anchor overlaps another box more gets none (training image 460).
#
# ## Exercises
#
# Worked solutions (for teachers) are in `solutions/03_anchors.py`.
#
# ### Exercise 1 — Predict · about 10 min: how fine must the grid be?
#
# A square box of the anchor's own size $s$ can sit half a stride, $t/2$ for a stride $t$, off the nearest
# anchor centre in $x$ and in $y$ (the middle of a grid cell), and that is its worst place. Work out on paper the largest
# stride at which such a box still reaches IoU ≥ `min_iou` with the anchor, and write it as
# `max_stride(size, min_iou)`. The check compares it with a search over hand-placed boxes. Then read it
# the other way: how many strides wide must an anchor be to stay ≥ 0.7 anywhere on its grid? Section 7's
# half-stride table checks that reading: which of its anchors pass 0.7, and how many strides wide are they?
#
# *Hint:* two $s \times s$ squares shifted by $(d, d)$ (here $d = t/2$) overlap in an $(s - d) \times (s - d)$ square; the
# union is the two areas minus the overlap. Solve IoU = `min_iou` for the overlap first.

# %%
def max_stride(size, min_iou):
    raise NotImplementedError  # your code here


# %%
from mrcnn_teach.exercises.nb03 import check_anchor_design, check_max_stride, check_stolen_pair

check_max_stride(max_stride);

# %% [markdown]
# ### Exercise 2 — Design · about 25 min: coverage on a budget
#
# `shapes_tiny` spends $k = 3$ anchors per position. Design anchors with **$k \le 2$** (at most 2,728
# anchors per image, two thirds of the cost) that still give **at least 82 %** of the shapes data's GT
# boxes an anchor at IoU ≥ 0.7, and beat the plain `octaves(16, 2)` square design (81 %): copying it from
# section 7 is not enough, tune the base and the factor between the two sizes. `my_anchor_design()` returns `(anchor_sizes, aspect_ratios)`, five tuples
# each (P2..P6), with the same $k$ on every level (one RPN head is shared by all levels). Measure your
# candidates with `anchor_coverage(gt_boxes, sizes, ratios)` in a cell of your own; the check measures
# your design on the 300 training images above, and the course's hidden test on 300 other images. Then
# defend the choice in two sentences: where do the boxes you lose lie (the sawtooth picture), and what
# did the budget cost against `shapes_tiny`'s design?
#
# *Hint:* section 7's table says where $k$ is best spent on these boxes (sizes or ratios), and which
# levels hold the best anchors. Sizes need not be a power of 2 apart, nor start at 4 strides.

# %%
def my_anchor_design():
    raise NotImplementedError  # your code here


# %%
check_anchor_design(my_anchor_design);

# %% [markdown]
# ### Exercise 3 — Derive · about 15 min: the larger box loses
#
# In image 460 the box that lost its anchor was the (slightly) smaller one (section 8 prints the areas).
# Show that size does not protect a box. Build two GT boxes in a 128 × 128 image, every side 12–67 px
# (12 px is the smallest shape drawn, 67 px the largest box side in section 7), such that under `shapes_tiny`'s anchors and the RPN's
# `Matcher` (0.7 / 0.3, low-quality rule) **box 0, the larger one** (in area), gets no positive anchor. `stolen_pair()` returns them as a (2, 4) tensor.
# Then answer in a sentence: a Matcher that let each box keep its own best anchor would save box 0;
# what would it cost box 1 in your pair?
#
# *Hint:* box 0 must get no anchor at 0.7 of its own, so give it a side in a dip of section 7's
# sawtooth, and its best anchor must fit box 1 better. Start from box 1 equal to one anchor. Check your
# pair with the `Matcher` as section 8 does before you run the check.

# %%
def stolen_pair():
    raise NotImplementedError  # your code here


# %%
check_stolen_pair(stolen_pair);

# %% [markdown]
# Next: [04 — RPN](04_rpn.ipynb)
