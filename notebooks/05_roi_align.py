# %% [markdown]
# # 05 — RoIPool vs RoIAlign
#
# The RPN hands us a few hundred proposals of every size and shape. The box head and the mask head
# are fixed-size networks, so each proposal must first be turned into a fixed grid of features,
# for example 7x7. This notebook builds that step twice: Fast R-CNN's **RoIPool**, which rounds
# the box to whole feature cells, and Mask R-CNN's **RoIAlign**, which does not round at all.
#
# **You will learn**
# - what RoI pooling takes and returns: features `(B, C, H, W)` and `K` boxes in, `(K, C, ph, pw)` out;
# - how RoIPool quantises twice, worked through a 6x6 example by hand and against torchvision;
# - RoIAlign in three steps (sample points, bilinear taps, mean per bin), and why it is two small
#   matrix products per RoI, $A\,F\,B^\top$;
# - its two knobs: `sampling_ratio`, and `aligned`, where the right answer depends on the backbone's
#   padding, measured through the library's own ResNet;
# - three experiments that show what the rounding costs: a box sliding by fractions of a cell, a
#   regressor that must read the slide back, and where the gradient goes.
#
# **Builds on:** [01 — Backbone](01_backbone.ipynb) (the ResNet's strides and padding),
# [02 — FPN](02_fpn.ipynb) (feature maps and their strides), [04 — RPN](04_rpn.ipynb) (the proposals
# that become RoIs).
#
# **Run time:** about 25 s on a 2-core CPU (this notebook does not need the trained model).

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

import matplotlib.pyplot as plt
import numpy as np
import torch
import torchvision

from mrcnn_teach import roi_align_fast, roi_ops
from mrcnn_teach.backbone import ResNetBody
from mrcnn_teach.configs import get_config
from mrcnn_teach.visualize import draw_feature_grid, draw_rect, draw_roi_samples, roi_sample_points


def rows_of(t):
    """A 2-D tensor as text, 4 decimals: the notebook's way of printing numbers that are the lesson."""
    return "\n".join("  ".join(f"{v:8.4f}" for v in row) for row in t.tolist())


# %% [markdown]
# Every op in this notebook is called directly, from `mrcnn_teach/roi_ops.py`: the from-scratch
# version, written to be read. A model built by the library runs the faster `"mixed"` kernels by
# default (torchvision's compiled NMS and the RoIAlign of `roi_align_fast.py`, section 10), which give
# the same detections (`tests/test_model_equivalence.py`); so we call the teaching op ourselves rather
# than through a model. Cells marked `# NBVAL_CHECK_OUTPUT` are re-run by the tests, which compare
# their printed output.
#
# ## 1. The job: a box of any size in, a fixed grid out
#
# Both ops take a feature map `(B, C, H, W)`, boxes in **input-image pixels**, and a
# `spatial_scale` (1 / stride) that maps pixels to feature cells. Boxes come either as a list with
# one `(K_i, 4)` tensor per image, or as one `(K, 5)` tensor whose first column names the image; the
# list is turned into the `(K, 5)` form first (`roi_ops._as_rois`, which also checks the input and
# names what is wrong). Below: 2 images, 256 channels, a 16x16 map of stride 8; 3 boxes in the first
# image and 5 in the second. We expect `K = 3 + 5 = 8` RoIs, an output of `(8, 256, 7, 7)`, and a
# batch column `0, 0, 0, 1, 1, 1, 1, 1`.

# %%
# NBVAL_CHECK_OUTPUT
B, C, H, W = 2, 256, 16, 16
features = torch.randn(B, C, H, W)  # (B, C, H, W)  stride 8: a 128 x 128 image
boxes = [torch.tensor([[8.0, 8.0, 60.0, 40.0], [30.0, 50.0, 90.0, 120.0], [0.0, 0.0, 127.0, 127.0]]),  # (3, 4) image 0
         torch.tensor([[10.0, 10.0, 20.0, 20.0]]).repeat(5, 1) + 20 * torch.arange(5.0)[:, None]]  # (5, 4) image 1
K = sum(len(b) for b in boxes)
# The (K, 5) form in one line: prepend each box's image index.
rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], dim=1) for i, b in enumerate(boxes)])  # (K, 5)
pooled = roi_ops.roi_align(features, boxes, output_size=7, spatial_scale=1 / 8, sampling_ratio=2)  # (K, C, 7, 7)
print_shapes(features=features, rois=rois, pooled=pooled)
print("image of each RoI:", rois[:, 0].long().tolist())
assert torch.equal(rois, roi_ops._as_rois(features, boxes, "demo"))
assert pooled.shape == (K, C, 7, 7) and K != B

# %% [markdown]
# > **Common mistake:** "RoIAlign's output is `(B, 256, 7, 7)`." One RoI gives a `(256, 7, 7)`
# > block, and the batch gives `(K, 256, 7, 7)`: the first dimension counts the RoIs of all images
# > together (8 here, for 2 images). The heads never see images, only RoIs: with FPN the paper samples
# > 512 RoIs per image for training and keeps 1000 proposals per image at test time (Mask R-CNN Sec. 3.1).
#
# ## 2. The worked example
#
# A 6x6, one-channel feature map from `torch.manual_seed(1)`, a stride of 32 (`spatial_scale = 1/32`),
# the box (10, 10, 124, 124) in image pixels, and a 2x2 output. The next cell prints the map; cell
# (row 1, column 1) is -1.6091.

# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(1)
x = torch.randn(1, 1, 6, 6)  # (B=1, C=1, H=6, W=6)
box = [torch.tensor([[10.0, 10.0, 124.0, 124.0]])]  # one image, one box (x1, y1, x2, y2) in pixels
scale = 1 / 32
print(rows_of(x[0, 0]))
print("box in feature cells:", [f"{v:.4f}" for v in (box[0][0] * scale).tolist()])
assert x.shape == (1, 1, 6, 6) and box[0].shape == (1, 4)

# %% [markdown]
# In feature cells the box runs from 0.3125 to 3.875 on both axes. A word on coordinates, since
# everything below depends on it: both ops (with `aligned=False`, torchvision's default) treat the
# value `F[i, j]` as sitting at the **point** `(x = j, y = i)` of the scaled box's coordinates. The
# pictures therefore draw cell `(i, j)` as a square centred on that point, and draw the box directly
# in feature coordinates. (Section 7 asks which image point a cell really stands for.)
#
# ## 3. RoIPool: two roundings
#
# RoIPool (Fast R-CNN, Girshick 2015, Sec. 2.1) cuts the box into a `ph x pw` grid of bins and takes
# the **maximum** of each bin. Cells are whole, so the box is rounded twice:
#
# 1. **the box** is snapped to whole cells, $\hat x_1 = \mathrm{round}(x_1 s)$,
#    $\hat x_2 = \mathrm{round}(x_2 s)$ with $s$ = `spatial_scale`; the snapped box covers the
#    $L = \hat x_2 - \hat x_1 + 1$ cells $\hat x_1, \dots, \hat x_2$ (same along y);
# 2. **the bins**: bin $p$ of $P$ has exact edges $pL/P$ and $(p+1)L/P$; the start is rounded down
#    and the end up, so bin $p$ covers cells
#    $\hat x_1 + \lfloor pL/P \rfloor, \dots, \hat x_1 + \lceil (p+1)L/P \rceil - 1$.
#
# Torchvision's kernel rounds like C's `round()`, halves away from zero (2.5 becomes 3), which is
# not what `torch.round` does (2.5 becomes 2). The library's two helpers are below. For our box:
# $0.3125 \to 0$ and $3.875 \to 4$, so the snapped box is cells 0..4, five cells, on each axis. Five
# cells into two bins: exact edges at 0, 2.5 and 5; rounding gives bin 0 = cells `[0, 3)` and bin 1 =
# cells `[2, 5)`. The cell after the helpers computes this with the library, and compares the bins
# with the exact box's bins, which are $3.5625 / 2 = 1.78$ cells wide.

# %%
show_source(roi_ops._round_half_away, roi_ops._pool_bins)

# %%
# NBVAL_CHECK_OUTPUT
corners = roi_ops._round_half_away(box[0] * scale).long()  # (1, 4)  x1, y1, x2, y2 in whole cells
first, stop = roi_ops._pool_bins(corners[:, 0], corners[:, 2], 2, 6, torch.float32)  # (1, 2), (1, 2)  along x
exact_x1, exact_x2 = (box[0][0, [0, 2]] * scale).tolist()
print(f"exact box x {exact_x1:.4f}..{exact_x2:.4f}, snapped to cells {corners[0, 0].item()}..{corners[0, 2].item()}")
print(f"exact bin width {(exact_x2 - exact_x1) / 2:.4f} cells")
for p in range(2):
    cells = list(range(first[0, p], stop[0, p]))
    print(f"bin {p}: cells {cells}  ({len(cells)} cells)")
assert corners.shape == (1, 4) and first.shape == stop.shape == (1, 2)
assert stop[0, 0] > first[0, 1]  # the two bins overlap

# %% [markdown]
# Each corner moves by up to half a cell, but the window reads all the cells $\hat x_1, \dots, \hat x_2$,
# $L = \hat x_2 - \hat x_1 + 1$ of them. So it is always wider than the exact box, by up to **2 cells**:
# here 5 cells for a box 3.5625 wide. Then the floor and the ceil widen every bin again: each bin of
# the exact box is 1.78 cells wide, and each bin reads 3 cells. At stride 32 half a cell is 16 image
# pixels. Neighbouring bins share at most one cell along an axis, though: bin $p$'s last cell and
# bin $p+1$'s first both come from the same exact edge $e = (p+1)L/P$,
# and $\lceil e \rceil - \lfloor e \rfloor \le 1$.
#
# > **Common mistake:** "5 cells cannot be divided evenly into 2 bins, so one bin gets 2 cells and the
# > other 3." With a floor at the start and a ceil at the end, **both** bins are 3 cells wide and they
# > **overlap** on the middle cell 2. The uneven split computes different numbers than torchvision:

# %%
# NBVAL_CHECK_OUTPUT
F = x[0, 0]  # (6, 6)
uneven = [range(0, 2), range(2, 5)]  # "some larger, some smaller": 2 cells, then 3
uneven_pool = torch.tensor([[F[list(r)][:, list(c)].max() for c in uneven] for r in uneven])  # (2, 2)
reference = torchvision.ops.roi_pool(x, box, output_size=2, spatial_scale=scale)[0, 0]  # (2, 2)
print("uneven bins:\n" + rows_of(uneven_pool))
print("torchvision:\n" + rows_of(reference))
assert uneven_pool.shape == reference.shape == (2, 2)
assert not torch.allclose(uneven_pool, reference)

# %% [markdown]
# The picture shows both roundings. Left: the exact box (dashed) snaps to cells 0..4 (solid). Right:
# the four bins, each 3x3 cells, overlapping on row 2 and column 2; each bin's maximum, which is
# RoIPool's output, is the cell outlined thickly in the bin's colour.

# %%
exact = (box[0][0] * scale).tolist()  # x1, y1, x2, y2 in feature cells
bin_first, bin_stop = first[0].tolist(), stop[0].tolist()  # the same bins along y and x (square box)
colours = {(0, 0): "C2", (0, 1): "C1", (1, 0): "C0", (1, 1): "C3"}
winners = {}  # bin -> (row, column) of its maximum
for py, px in colours:
    window = F[bin_first[py]:bin_stop[py], bin_first[px]:bin_stop[px]]  # (3, 3)
    i, j = divmod(int(window.argmax()), window.shape[1])
    winners[py, px] = (bin_first[py] + i, bin_first[px] + j)

fig, axes = plt.subplots(1, 2, figsize=(11, 5), layout="constrained")
draw_feature_grid(axes[0], F, "RoIPool, rounding 1:\nthe box snaps to whole cells")
draw_rect(axes[0], *exact, color="black", linestyle="--", linewidth=2, label="exact box 0.3125..3.875")
draw_rect(axes[0], -0.5, -0.5, 4.5, 4.5, color="purple", linewidth=2.5, label="snapped: cells 0..4")
axes[0].legend(loc="upper left", bbox_to_anchor=(0, -0.12), ncol=2, fontsize=8)
im = draw_feature_grid(axes[1], F, "RoIPool, rounding 2: 2x2 bins of 3x3 cells,\noverlapping; thick square = the bin's maximum",
              bold=set(winners.values()))
for (py, px), colour in colours.items():
    inset = 0.06 * (1 + py + 2 * px)  # a different inset per bin, so overlapping edges stay visible
    draw_rect(axes[1], bin_first[px] - 0.5 + inset, bin_first[py] - 0.5 + inset, bin_stop[px] - 0.5 - inset,
             bin_stop[py] - 0.5 - inset, color=colour, linewidth=1.5, label=f"bin ({py},{px})")
    wy, wx = winners[py, px]
    draw_rect(axes[1], wx - 0.42, wy - 0.42, wx + 0.42, wy + 0.42, color=colour, linewidth=4)
axes[1].legend(loc="upper left", bbox_to_anchor=(0, -0.12), ncol=4, fontsize=8)
fig.colorbar(im, ax=axes, shrink=0.8, label="feature value")
plt.show()

# %% [markdown]
# That is the whole op: round, bin, take the maximum. For one box and one map it fits in a few lines,
# written to be read (a loop over bins). The library's `roi_pool` does the same for every RoI and
# channel at once, without a loop: it pads each bin's window to the largest bin and masks the padding
# (`mrcnn_teach/roi_ops.py`). We expect the reference, the library and torchvision to agree on the
# example, and on 50 random boxes of a bigger map.

# %%
# NBVAL_CHECK_OUTPUT
def roi_pool_reference(F, box, P, spatial_scale):
    """RoIPool of one box (4,) in pixels on one map F (H, W): -> (P, P)."""
    x1, y1, x2, y2 = roi_ops._round_half_away(box * spatial_scale).long()  # rounding 1: whole cells
    row_first, row_stop = (t[0].tolist() for t in roi_ops._pool_bins(y1[None], y2[None], P, F.shape[0], F.dtype))
    col_first, col_stop = (t[0].tolist() for t in roi_ops._pool_bins(x1[None], x2[None], P, F.shape[1], F.dtype))
    return torch.tensor([[F[r0:r1, c0:c1].max().item() for c0, c1 in zip(col_first, col_stop)]
                         for r0, r1 in zip(row_first, row_stop)])  # (P, P)  rounding 2, then the max


ours_pool = roi_ops.roi_pool(x, box, output_size=2, spatial_scale=scale)  # (1, 1, 2, 2)
tv_pool = torchvision.ops.roi_pool(x, box, output_size=2, spatial_scale=scale)  # (1, 1, 2, 2)
print("RoIPool, reference:\n" + rows_of(roi_pool_reference(F, box[0][0], 2, scale)))
print("RoIPool, library:\n" + rows_of(ours_pool[0, 0]))
print("RoIPool, torchvision:\n" + rows_of(tv_pool[0, 0]))
assert ours_pool.shape == tv_pool.shape == (1, 1, 2, 2)
assert torch.equal(ours_pool, tv_pool) and torch.equal(roi_pool_reference(F, box[0][0], 2, scale), tv_pool[0, 0])
g = torch.Generator().manual_seed(0)
big = torch.randn(1, 1, 16, 16, generator=g)  # (1, 1, 16, 16)  stride 8: a 128-pixel image
corner = 90 * torch.rand(50, 2, generator=g)  # (50, 2)
random_boxes = torch.cat([corner, corner + 4 + 30 * torch.rand(50, 2, generator=g)], dim=1)  # (50, 4)
many_ref = torch.stack([roi_pool_reference(big[0, 0], b, 7, 1 / 8) for b in random_boxes])  # (50, 7, 7)
assert torch.equal(roi_ops.roi_pool(big, [random_boxes], 7, 1 / 8)[:, 0], many_ref)
assert torch.equal(torchvision.ops.roi_pool(big, [random_boxes], 7, 1 / 8)[:, 0], many_ref)
print("50 random boxes, 7x7: reference, library and torchvision agree")

# %% [markdown]
# Does the rounding matter? For the box head, more than is often said. Mask R-CNN's Table 2d
# (ResNet-50-C5, stride 32) swaps RoIPool for RoIAlign and gains 5.8 points of **box** AP (28.2 → 34.0),
# not only mask AP (23.6 → 30.9); Table 3 still finds +1.1 box AP (36.2 → 37.3) for Faster R-CNN with
# FPN, where most boxes are pooled from fine levels (a comparison with the FPN paper's published
# model, not a controlled ablation; the paper credits the gap to RoIAlign). For a 28x28 mask the
# misalignment is worse still: Sec. 3 of the paper is built around it.
#
# ## 4. RoIAlign, step 1: sample points
#
# RoIAlign (Mask R-CNN, He et al. 2017, Sec. 3) keeps every coordinate as it is. Along x (y is the
# same), with the box from $x_1 s$ to $x_2 s$ in feature cells, its width $w = x_2 s - x_1 s$ and
# $P$ bins, each bin is exactly $w/P$ wide, and holds $G$ samples, each at the centre of one of $G$
# equal slices of the bin:
#
# $$x_{p,g} = x_1 s + p\,\frac{w}{P} + \left(g + \tfrac12\right)\frac{w}{P\,G}, \qquad p = 0..P-1,\ g = 0..G-1 .$$
#
# $G$ is `sampling_ratio` (samples per bin along each axis, so $G^2$ per bin). `_roi_geometry` gives the
# box in feature cells (with one legacy rule: with `aligned=False` a RoI is never narrower than one
# cell), and `_sample_positions` computes the formula (below). For our box, $w = 3.5625$ and a bin
# is $1.78125$ cells wide. With $G = 1$ the samples sit at the bin centres,
# $0.3125 + 0.890625 = 1.203125$ and $1.203125 + 1.78125 = 2.984375$; with $G = 2$ at a quarter and
# three quarters of each bin.

# %%
show_source(roi_ops._sample_positions)

# %%
# NBVAL_CHECK_OUTPUT
rois1 = roi_ops._as_rois(x, box, "example")  # (1, 5)
batch, start_x, start_y, width_roi, height_roi = roi_ops._roi_geometry(rois1, scale, aligned=False)  # (1,) x5
print(f"start_x {start_x.item():.4f}  width_roi {width_roi.item():.4f}  bin width {width_roi.item() / 2:.6f}")
for ratio in (1, 2):
    xs, exists = roi_ops._sample_positions(start_x, width_roi, 2, torch.tensor([ratio]), ratio)  # (1, 2, G), (1, 1, G)
    print(f"sampling_ratio {ratio}: x of the samples, one row per bin\n" + rows_of(xs[0]))
    assert xs.shape == (1, 2, ratio) and exists.shape == (1, 1, ratio)

# %% [markdown]
# ## 5. RoIAlign, step 2: bilinear taps
#
# A sample rarely lands on a cell, so it reads the map by **bilinear interpolation** from the four
# cells around it. With $x_0 = \lfloor x \rfloor$, $u = x - x_0$, and $y_0$, $v$ the same along y:
#
# $$f(x, y) = (1-u)(1-v)\,F_{y_0,x_0} + u(1-v)\,F_{y_0,x_0+1} + (1-u)v\,F_{y_0+1,x_0} + uv\,F_{y_0+1,x_0+1}.$$
#
# The weight of a cell is (weight of its row) x (weight of its column), so the library works one
# axis at a time: `_bilinear_taps` turns positions into the two neighbouring cells and their weights
# $(1-u, u)$, and applies torchvision's border rules (a sample more than one cell off the map reads
# 0; one on the last row or column reads that row or column only), below.
#
# The first sample, at $x = y = 1.203125$, lies between cells 1 and 2 on both axes with
# $u = v = 0.203125$, so it reads cells (1,1), (1,2), (2,1), (2,2) with weights
# $0.796875^2$, $0.796875 \cdot 0.203125$ (twice) and $0.203125^2$. Bilinear interpolation by hand
# should then give -0.8546 for bin (0, 0).

# %%
show_source(roi_ops._bilinear_taps)

# %%
# NBVAL_CHECK_OUTPUT
xs, exists = roi_ops._sample_positions(start_x, width_roi, 2, torch.tensor([1]), 1)  # (1, 2, 1), (1, 1, 1)
index, weight = roi_ops._bilinear_taps(xs, exists, 6)  # (1, 2, 1, 2) x2  one axis: 2 neighbours per sample
for p in range(2):
    print(f"bin {p}: neighbours {index[0, p, 0].tolist()}  weights", [f"{w:.6f}" for w in weight[0, p, 0].tolist()])
assert index.shape == weight.shape == (1, 2, 1, 2)
u = v = 0.203125  # the first sample is this far past cell 1, along x and along y
f1, f2, f3, f4 = F[1, 1].item(), F[1, 2].item(), F[2, 1].item(), F[2, 2].item()  # top-left, top-right, bottom-left, bottom-right
by_hand = (1 - u) * (1 - v) * f1 + u * (1 - v) * f2 + (1 - u) * v * f3 + u * v * f4
print(f"f1..f4 = {f1:.4f} {f2:.4f} {f3:.4f} {f4:.4f};  bilinear by hand: {by_hand:.4f}")

# %% [markdown]
# Where the samples fall, for `sampling_ratio` 1 (one sample per bin, at its centre) and 2 (2x2 = 4
# per bin). The grey lines join the first sample to the four cells it reads. Unlike RoIPool's, the
# bins are exact quarters of the exact box: they share no **area**. They do share **cells**: with one
# sample per bin, bin 0 reads cells 1 and 2 along x and bin 1 reads cells 2 and 3 (the neighbours
# printed above). And a sample near the box's edge reads cells whose centres lie outside the box: with
# `sampling_ratio=2` the first sample, at 0.758, reads cell (0, 0), whose centre is outside the box.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 5), layout="constrained")
draw_roi_samples(axes[0], F, rois1, scale, 2, 1, "RoIAlign, sampling_ratio=1:\nthe first sample reads cells (1..2, 1..2)")
im = draw_roi_samples(axes[1], F, rois1, scale, 2, 2, "RoIAlign, sampling_ratio=2: the first sample\nreads cell (0, 0), outside the box")
for ax in axes:
    ax.legend(loc="upper left", bbox_to_anchor=(0, -0.12), ncol=2, fontsize=8)
fig.colorbar(im, ax=axes, shrink=0.8, label="feature value")
plt.show()

# %% [markdown]
# ## 6. RoIAlign, step 3: the mean per bin — two matrix products
#
# A bin's output is the average of its $G_h \times G_w$ samples ($G_h$, $G_w$: `sampling_ratio` along y
# and x; equal unless adaptive; the paper allows max or average;
# torchvision, like Detectron, averages). Because a sample's weight on cell $(i, j)$ is (weight of row
# $i$) x (weight of column $j$), and a bin's samples form a grid, the bin's mean factors too:
#
# $$\text{out}[p, q] = \sum_{i, j} A_{p,i}\, F_{i,j}\, B_{q,j}, \qquad \text{out} = A\,F\,B^\top,$$
#
# where row $p$ of $A$ (shape $P \times H$) holds the mean weight that the samples of bin row $p$ put
# on each map row, and $B$ ($P \times W$) does the same for columns. RoIAlign of one box is two matrix
# products; the whole op for one box and one map, from the helpers above:

# %%
def axis_matrix(start, length, P, G, size):
    """One axis of RoIAlign: -> (P, size), row p = the mean weight bin p's G samples put on each cell."""
    pos, exists = roi_ops._sample_positions(start, length, P, torch.tensor([G]), G)  # (1, P, G), (1, 1, G)
    index, weight = roi_ops._bilinear_taps(pos, exists, size)  # (1, P, G, 2) x2
    matrix = torch.zeros(P, size).scatter_add_(1, index[0].reshape(P, 2 * G), weight[0].reshape(P, 2 * G))  # (P, size)
    return matrix / G


def roi_align_reference(F, box, P, spatial_scale, G):
    """RoIAlign (aligned=False) of one box (4,) in pixels on one map F (H, W): -> (P, P)."""
    _, start_x, start_y, width, height = roi_ops._roi_geometry(torch.cat([torch.zeros(1), box])[None], spatial_scale, False)
    A = axis_matrix(start_y, height, P, G, F.shape[0])  # (P, H)
    Bm = axis_matrix(start_x, width, P, G, F.shape[1])  # (P, W)
    return A @ F @ Bm.T  # (P, P)


# %% [markdown]
# The library's `roi_align` computes the same sums for all RoIs and channels at once, by one gather
# of every tapped cell (`mrcnn_teach/roi_ops.py`; section 10 shows a faster way). With one sample per
# bin the mean is that sample, so for bin (0, 0) the reference, the library, torchvision and the hand
# computation must all read -0.8546; the whole output should be [[-0.8546, 0.3236], [0.2177, 0.0546]].

# %%
# NBVAL_CHECK_OUTPUT
A_example = axis_matrix(start_y, height_roi, 2, 1, 6)  # (2, 6)  the same along x: the box is square
ours_align = roi_ops.roi_align(x, box, output_size=2, spatial_scale=scale, sampling_ratio=1)  # (1, 1, 2, 2)
tv_align = torchvision.ops.roi_align(x, box, output_size=2, spatial_scale=scale, sampling_ratio=1)  # (1, 1, 2, 2)
ref_align = roi_align_reference(F, box[0][0], 2, scale, 1)  # (2, 2)
print("A (one row per bin, one column per map row):\n" + rows_of(A_example))
print(f"bin (0,0): reference {ref_align[0, 0]:.4f}, library {ours_align[0, 0, 0, 0]:.4f}, "
      f"torchvision {tv_align[0, 0, 0, 0]:.4f}, by hand {by_hand:.4f}")
print("RoIAlign, library:\n" + rows_of(ours_align[0, 0]))
print("RoIPool on the same box:\n" + rows_of(ours_pool[0, 0]))
assert ours_align.shape == tv_align.shape == (1, 1, 2, 2) and A_example.shape == (2, 6)
assert torch.allclose(ours_align, tv_align, atol=1e-6) and torch.allclose(ref_align, tv_align[0, 0], atol=1e-6)
assert abs(ours_align[0, 0, 0, 0].item() - by_hand) < 1e-5
many_align = torch.stack([roi_align_reference(big[0, 0], b, 7, 1 / 8, 2) for b in random_boxes])  # (50, 7, 7)
assert torch.allclose(torchvision.ops.roi_align(big, [random_boxes], 7, 1 / 8, 2)[:, 0], many_align, atol=1e-5)

# %% [markdown]
# The two ops disagree on every bin, and not by a little: RoIPool's maximum over a rounded window and
# RoIAlign's interpolated average read different features. The network learns on top of either; what
# matters is which one keeps the features where the box is. Sections 8 and 9 make that visible.
#
# ## 7. The two knobs: `sampling_ratio` and `aligned`
#
# ### `sampling_ratio`: how many points per bin
#
# `sampling_ratio` $= G$ counts samples per bin **along each axis**, so a bin averages $G^2$ points.
# A value `<= 0` (the default of both `roi_align`s) means *adaptive*: $G = \lceil w / P \rceil$,
# about one sample per feature cell, different for every RoI.
#
# > **Common mistake:** "the paper's default `sampling_ratio` is 4." The paper (Sec. 3 and its
# > footnote) samples **four regular points per bin** — 2x2, which is `sampling_ratio=2` — and notes
# > that one point at the bin centre is nearly as good. `sampling_ratio=4` would average 4x4 = 16
# > points per bin. Torchvision's Mask R-CNN, like this library's configs, uses `sampling_ratio=2`.
#
# The adaptive rule costs more the larger the box: with a 7x7 output, a box 50 cells wide gets
# $\lceil 50/7 \rceil = 8$ samples per axis, 64 per bin, while a fixed ratio keeps 4 for every box. The
# cell counts both for our box, reads torchvision's setting, and lists $G$ for a few box widths (in cells):

# %%
# NBVAL_CHECK_OUTPUT
for ratio in (1, 2, 4, 0):
    gh, gw = roi_ops._sampling_grid(height_roi, width_roi, 2, 2, ratio)  # (1,), (1,)
    name = f"sampling_ratio={ratio}" + (" (adaptive: ceil(3.5625 / 2) = 2)" if ratio <= 0 else "")
    print(f"{name:<47} {gh.item()} x {gw.item()} = {gh.item() * gw.item():2d} points per bin")
    assert gh.shape == gw.shape == (1,)
tv_model = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
for head, pool in (("box", tv_model.roi_heads.box_roi_pool), ("mask", tv_model.roi_heads.mask_roi_pool)):
    print(f"torchvision Mask R-CNN, {head} head: RoIAlign to {pool.output_size}, sampling_ratio={pool.sampling_ratio}")
del tv_model
widths = torch.tensor([1.0, 3.0, 7.0, 7.5, 20.0, 50.0])  # (6,)  box widths in feature cells
g_adaptive, _ = roi_ops._sampling_grid(widths, widths, 7, 7, 0)  # (6,)
g_fixed, _ = roi_ops._sampling_grid(widths, widths, 7, 7, 2)  # (6,)
print("width (cells)   adaptive G  points/bin   fixed G=2  points/bin")
for w_, ga, gf in zip(widths.tolist(), g_adaptive.tolist(), g_fixed.tolist()):
    print(f"{w_:12.1f}   {ga:10d}  {ga * ga:10d}   {gf:9d}  {gf * gf:10d}")
assert g_adaptive.shape == g_fixed.shape == (6,)

# %% [markdown]
# What do the extra points buy? A box about 8.5 cells wide on a smooth 12x12 map, 2x2 output: adaptive
# sampling puts $\lceil 8.5/2 \rceil = 5$ samples per axis in a bin (25 points), the fixed ratio 2
# (4 points). The titles give both outputs: on a smooth map the 21 extra points move them little.

# %%
yy, xx = torch.meshgrid(torch.arange(12.0), torch.arange(12.0), indexing="ij")  # (12, 12) x2
smooth = torch.sin(0.6 * xx) + torch.cos(0.45 * yy)  # (12, 12)  a smooth feature map
big_roi = torch.tensor([[0.0, 1.2, 2.0, 9.7, 10.3]])  # (1, 5)  image 0, box in cells (spatial_scale 1)
outputs = {r: roi_ops.roi_align(smooth[None, None], big_roi, 2, 1.0, r)[0, 0] for r in (0, 2)}  # (2, 2) each


def as_text(t):
    return "[" + ", ".join("[" + ", ".join(f"{v:.2f}" for v in row) + "]" for row in t.tolist()) + "]"


fig, axes = plt.subplots(1, 2, figsize=(11, 5.2), layout="constrained")
draw_roi_samples(axes[0], smooth, big_roi, 1.0, 2, 0, f"adaptive, sampling_ratio=0 (5 x 5 per bin)\noutput {as_text(outputs[0])}",
               values=False, vmax=2, taps=False)
im = draw_roi_samples(axes[1], smooth, big_roi, 1.0, 2, 2, f"fixed, sampling_ratio=2 (2 x 2 per bin)\noutput {as_text(outputs[2])}",
                    values=False, vmax=2, taps=False)
for ax in axes:
    ax.legend(loc="upper left", bbox_to_anchor=(0, -0.12), ncol=2, fontsize=8)
fig.colorbar(im, ax=axes, shrink=0.8, label="feature value")
plt.show()
print(f"largest difference between the two outputs: {(outputs[0] - outputs[2]).abs().max():.3f} "
      f"(the map spans {smooth.min():.2f} .. {smooth.max():.2f})")

# %% [markdown]
# ### `aligned`: which image point does cell `j` stand for?
#
# RoIAlign needs a rule that turns an image coordinate into a position on the feature map. Take
# continuous image coordinates, in which pixel $i$ covers $[i, i+1)$ and has its centre at $i + \tfrac12$.
#
# - `aligned=False` (the original RoIAlign; torchvision's default, its Mask R-CNN and this library's
#   configs): image point $x$ is map position $x/s$, so cell $j$ stands for the image point $s\,j$.
# - `aligned=True` (Detectron2's default): $x/s - \tfrac12$. `_roi_geometry` moves the box, and with it
#   every sample, by $-\tfrac12$ cell, and drops the one-cell minimum width. Cell $j$ then stands for
#   $s(j + \tfrac12)$, the centre of the $s$ pixels $sj \dots s(j+1)-1$.
#
# The second rule is right if cell $j$ is a symmetric summary of exactly those $s$ pixels, for
# example their average. Whether it is depends on the network that made the map.
#
# > **Common mistake:** "`aligned=False` reads the map half a cell too far right and down." The usual
# > demonstration: an image whose every pixel holds its own centre's x coordinate, a feature map that
# > averages each $s \times s$ block of it, and a box read out over this ramp. `aligned=True` returns
# > the box's centre exactly, `aligned=False` one half cell too far:

# %%
# NBVAL_CHECK_OUTPUT
strides = (4, 8, 16, 32)
ramp_box = [torch.tensor([[64.0, 64.0, 160.0, 160.0]])]  # (1, 4)  centre x = 112 image pixels
ramp_image = (torch.arange(256.0) + 0.5).expand(1, 1, 256, 256)  # (1, 1, 256, 256)  pixel x holds x + 0.5
for s in strides:
    averaged = torch.nn.functional.avg_pool2d(ramp_image, s)  # (1, 1, 256/s, 256/s)  cell j holds s*j + s/2
    read = {a: roi_ops.roi_align(averaged, ramp_box, 1, 1 / s, 2, aligned=a).item() - 112 for a in (False, True)}
    print(f"stride {s:2d}: aligned=False off by {read[False]:+5.1f} px, aligned=True off by {read[True]:+5.1f} px")
    assert abs(read[True]) < 1e-3 and abs(read[False] - s / 2) < 1e-3

# %% [markdown]
# The test is circular: it builds the features with the very pixel model that `aligned=True` assumes.
# A ResNet does not average blocks. A layer with kernel $k$, stride $t$ and padding $p$ centres its
# output $j$ on input index $t\,j - p + \tfrac{k-1}{2}$, and every layer of the library's ResNet pads
# by $\tfrac{k-1}{2}$ (the 7x7 conv by 3, the 3x3 max pool and the 3x3 convs by 1, the 1x1 convs by 0;
# see `Stem` in `backbone.py` and torchvision's blocks), which centres output $j$ on input index
# $t\,j$. Composed, cell $j$ at stride $s$ is centred on pixel $s\,j$, the continuous point
# $s\,j + \tfrac12$ — not $s\,j + \tfrac s2$.
#
# We can measure it without assuming a pixel model. The receptive field of a cell is where in the
# image its value comes from: the gradient of the cell with respect to the image. Its centre is the
# mean pixel position weighted by the gradient's size. Below, for the middle cell of each level, for
# the library's ResNet (depth from the `shapes_tiny` config, random weights, and frozen batch norm,
# the identity at initialisation, in place of the config's group norm, whose per-image statistics
# would spread a little gradient over the whole image) and, as the baseline, for the $s \times s$
# average pool, which must come out at $s\,j + \tfrac s2$.

# %%
def receptive_field(net, image, level):
    """Middle cell j of net(image)[level]: -> |d cell / d image| summed per pixel column (W,), its centre - s*j (px)."""
    image = image.clone().requires_grad_()
    feature = net(image)[level]  # (1, C, h, w)
    j = feature.shape[-1] // 2
    grad, = torch.autograd.grad(feature[0, :, feature.shape[-2] // 2, j].sum(), image)  # (1, 3, H, W)
    profile = grad.abs().sum(dim=(0, 1, 2))  # (W,)  how strongly each column of pixels moves cell j
    pixels = torch.arange(image.shape[-1]) + 0.5  # (W,)  continuous x of the pixel centres
    return profile, ((profile * pixels).sum() / profile.sum()).item() - strides[level] * j


torch.manual_seed(0)
resnet = ResNetBody(depth=get_config("shapes_tiny")["depth"], norm="frozen_bn", trainable_layers=5).eval()
block_average = lambda image: [torch.nn.functional.avg_pool2d(image, s) for s in strides]  # noqa: E731
images = torch.randn(3, 1, 3, 32, 512)  # 3 random images, wide enough along x (the axis we measure) for a stride-32 cell's whole field
measured = torch.tensor([[receptive_field(resnet, im, lv)[1] for lv in range(4)] for im in images]).mean(dim=0)  # (4,)
baseline = torch.tensor([receptive_field(block_average, images[0], lv)[1] for lv in range(4)])  # (4,)
print("stride   ResNet: cell j centred at   s x s average   aligned=False assumes   aligned=True assumes")
for s, m, b in zip(strides, measured.tolist(), baseline.tolist()):
    print(f"{s:6d}   s*j {m:+5.1f} px {'':14s} s*j {b:+5.1f} px   s*j  +0.0 px {'':10s} s*j {s / 2:+5.1f} px")
assert torch.allclose(baseline, torch.tensor(strides) / 2, atol=1e-3)  # the measure finds the block centre ...
assert ((measured - 0.5).abs() < (measured - torch.tensor(strides) / 2).abs() / 3).all()  # ... the ResNet's is near s*j + 1/2

# %% [markdown]
# By the same measure that condemned `aligned=False`, for this backbone it is `aligned=False` that is
# nearly right: its point is $\tfrac12$ px from where the ResNet's cell is centred, and `aligned=True`'s
# is $\tfrac{s-1}{2}$ px on the other side, 1.5 px at stride 4 and 15.5 px at stride 32. (The
# measured centres scatter around $s\,j + \tfrac12$ by up to about a pixel: random weights are not
# exactly symmetric, and a stride-32 field is hundreds of pixels wide.) Two more things move the
# centre. The FPN's top-down path copies coarse cell $m$ into fine cells $2m$ and $2m+1$ by
# nearest-neighbour upsampling, so on the P levels that RoIAlign reads, many cells carry coarse
# components centred one or more fine cells up and to the left of them, and the offset varies from
# cell to cell. And a trained network's kernels are not symmetric, so training itself moves the
# centres. Detectron2, which made `aligned=True` its default, says as much in its own documentation
# of the flag (`detectron2/layers/roi_align.py`, the class `ROIAlign`):
#
# > "The difference does not make a difference to the model's performance if ROIAlign is used
# > together with conv layers."
#
# It gives no measurement. A plausible reason, a hypothesis: the heads are always trained on features
# read the same way, so an offset of a fraction of a cell that stays the same is learned around, like
# the centre shifts that training makes anyway. What a trained model has never seen is a change of
# convention after training: every read then moves by half a cell (2 px at stride 4, 16 px at stride
# 32), away from where its heads learned to look. **Run a model with the convention its weights were
# trained with.**
# Where the pixel model does hold exactly — a map that averages $s \times s$ blocks, or the image or a
# mask itself at stride 1 — `aligned=True` is the right rule. (Torchvision, and this library after it,
# crop the ground-truth masks into mask targets with `aligned=False`, half a pixel off: notebook 07.)
#
# Left: what the flag does to the sample points of our example. Right: the receptive field of one
# stride-16 cell of the ResNet against that of the 16x16 average, with the two conventions' points.

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained", gridspec_kw={"width_ratios": [1, 1.25]})
draw_feature_grid(axes[0], F, "aligned=True moves every sample by -0.5 cell", values=False, points=True)
for aligned, colour in ((False, "white"), (True, "gold")):
    xs_, ys_, (bx1, by1, bx2, by2) = roi_sample_points(rois1, scale, 2, 2, aligned)
    draw_rect(axes[0], bx1, by1, bx2, by2, color="black", linewidth=1.5, linestyle="-" if aligned else "--",
             label=f"box, aligned={aligned}")
    gx, gy = np.meshgrid(xs_.flatten().numpy(), ys_.flatten().numpy())
    axes[0].scatter(gx, gy, s=40, zorder=3, facecolor=colour, edgecolor="black", label=f"samples, aligned={aligned}")
axes[0].legend(loc="upper left", bbox_to_anchor=(0, -0.12), ncol=2, fontsize=8)
s, level = 16, strides.index(16)
for name, net, colour in (("ResNet cell", resnet, "C0"), ("16 x 16 average", block_average, "C1")):
    profile = torch.stack([receptive_field(net, im, level)[0] for im in images]).mean(dim=0)  # (512,)  over the 3 images
    pixels = torch.arange(len(profile)) + 0.5 - s * (len(profile) // s // 2)  # (512,)  pixel centres, relative to s*j
    axes[1].plot(pixels, profile / profile.max(), color=colour, label=f"receptive field: {name}")
axes[1].axvline(0, color="black", linestyle="--", label="aligned=False's point: s*j")
axes[1].axvline(s / 2, color="C3", linestyle="--", label=f"aligned=True's point: s*j + {s // 2}")
axes[1].plot(measured[level].item(), 1.04, marker="v", markersize=10, color="C0", linestyle="none",
             label=f"ResNet field's centre: s*j {measured[level].item():+.1f} px")
axes[1].set_xlim(-120, 120)
axes[1].set_ylim(0, 1.1)
axes[1].set_xlabel("image x - s*j (pixels), stride s = 16")
axes[1].set_ylabel("|d cell / d image|, summed per column (max = 1)")
axes[1].set_title("A ResNet cell is centred on pixel s*j, not on its block's centre")
axes[1].legend(loc="upper left", fontsize=8)
plt.show()

# %% [markdown]
# ## 8. The experiment: slide a box by fractions of a cell
#
# Move a box 4 cells wide from 0 to 2 cells to the right in 40 equal steps (stride 8, so one step is
# 0.4 image pixels) over a smooth map that falls from left to right, and watch output bin (0, 0).
# The box's left edge starts at cell 1.0 and rounds to the next cell when it passes 1.5 and 2.5, at
# shifts 0.5 and 1.5 (its right edge, at 5.0, crosses 5.5 and 6.5 at the same shifts). RoIPool's
# window moves only then, so we expect its output to stay flat and **jump** twice (3 distinct values).
# RoIAlign's samples move with the box, so its output should change a little at every step.

# %%
# NBVAL_CHECK_OUTPUT
yy, xx = torch.meshgrid(torch.arange(10.0), torch.arange(10.0), indexing="ij")  # (10, 10) x2
wave = (torch.cos(0.33 * xx) + 0.5 * torch.cos(0.5 * yy))[None, None]  # (1, 1, 10, 10)  falls smoothly along x
stride = 8
shifts = torch.linspace(0, 2, 41)  # (41,)  in cells
slid = torch.stack([torch.tensor([0.0, 8.0, 12.0, 40.0, 44.0]) + torch.tensor([0, 1, 0, 1, 0]) * stride * s
                    for s in shifts])  # (41, 5)  one RoI per shift, x1 and x2 moved
slide_pool = roi_ops.roi_pool(wave, slid, 2, 1 / stride)  # (41, 1, 2, 2)
slide_align = roi_ops.roi_align(wave, slid, 2, 1 / stride, sampling_ratio=2)  # (41, 1, 2, 2)
assert slid.shape == (41, 5) and slide_pool.shape == slide_align.shape == (41, 1, 2, 2)
for name, out in (("RoIPool ", slide_pool), ("RoIAlign", slide_align)):
    track = out[:, 0, 0, 0]  # (41,)  bin (0, 0)
    print(f"{name}: {len(torch.unique(track))} distinct values over 41 positions, "
          f"largest change between neighbouring steps {track.diff().abs().max():.3f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), layout="constrained", gridspec_kw={"width_ratios": [1, 1.2]})
im = draw_feature_grid(axes[0], wave[0, 0], "smooth map and the box at shifts 0, 1, 2", vmax=1.6, values=False)
for s, colour in ((0, "black"), (20, "darkviolet"), (40, "darkgreen")):
    x1_, y1_, x2_, y2_ = (slid[s, 1:] / stride).tolist()
    draw_rect(axes[0], x1_, y1_, x2_, y2_, color=colour, linewidth=2, label=f"shift {shifts[s]:.0f} cell(s)")
axes[0].legend(loc="upper left", bbox_to_anchor=(0, -0.12), ncol=3, fontsize=8)
fig.colorbar(im, ax=axes[0], shrink=0.8, label="feature value")
axes[1].plot(shifts, slide_pool[:, 0, 0, 0], "o-", markersize=3, drawstyle="steps-post", label="RoIPool")
axes[1].plot(shifts, slide_align[:, 0, 0, 0], "o-", markersize=3, label="RoIAlign (sampling_ratio=2)")
axes[1].set_xlabel("box shift to the right (feature cells)")
axes[1].set_ylabel("output of bin (0, 0)")
axes[1].set_title("Sliding the box: RoIPool jumps, RoIAlign glides")
axes[1].legend()
plt.show()

# %% [markdown]
# RoIAlign's curve is piecewise linear, with a bend wherever a sample crosses a cell centre
# (bilinear interpolation is linear between cells), but it never jumps: a box that moves a little
# gets features that change a little. RoIPool's features change only when an edge of the box crosses
# a half-cell mark, and then all at once. RoIPool's curve lies higher because it takes each bin's
# maximum, RoIAlign its mean; only the shape of the curves matters here.
#
# The box head has to read offsets like these back: its regression says how far the proposal is from
# the object. A toy version of that job: recover the shift from the 2x2 output. From RoIPool's output
# no regressor can do better than answering the middle of each flat step, since it only ever sees the
# 3 distinct outputs. From RoIAlign's we fit a plain linear regressor (4 numbers and a bias, least
# squares) on every other shift and test it on the others.

# %%
# NBVAL_CHECK_OUTPUT
_, step = torch.unique(slide_pool.flatten(1), dim=0, return_inverse=True)  # (41,)  which distinct output each shift gives
step_middle = torch.zeros(int(step.max()) + 1).index_add_(0, step, shifts) / torch.bincount(step)  # (n,)
pool_rms = (shifts - step_middle[step]).pow(2).mean().sqrt().item()  # the best any function of RoIPool's output can do
design = torch.cat([slide_align.flatten(1), torch.ones(41, 1)], dim=1).double()  # (41, 5)  4 outputs and a bias
train, test = slice(0, None, 2), slice(1, None, 2)  # 21 shifts to fit, 20 to test
coef = torch.linalg.lstsq(design[train], shifts[train, None].double()).solution  # (5, 1)
align_rms = (design[test] @ coef - shifts[test, None]).pow(2).mean().sqrt().item()
print(f"best possible from RoIPool's output: RMS error {pool_rms:.3f} cells ({pool_rms * stride:.1f} px at stride {stride})")
print(f"linear regressor on RoIAlign's output: RMS error {align_rms:.3f} cells on the shifts it was not fitted on")
assert step_middle.shape == (3,) and pool_rms > 10 * align_rms

# %% [markdown]
# At stride 8 RoIPool's floor is under 2 pixels; at stride 32 the same fraction of a cell would be four
# times as many. That is a plausible part of Table 2d's box AP gain (section 3), and of the mask AP
# gains of Table 2c (about +3 points at stride 16: 26.9 → 30.3) and Table 2d (+7.3 points at stride 32:
# 23.6 → 30.9) — a hypothesis: the paper measures the gains, not their cause.
#
# ## 9. Where the gradient goes
#
# Training sends gradients back through these ops into the FPN. Take the gradient of the sum of all
# outputs with respect to the feature map, for our example. RoIPool's maximum passes the gradient to
# **one cell per bin** (the thick squares of section 3; a cell that wins two overlapping bins would get 2).
# RoIAlign passes each sample's share to its four neighbours with the bilinear weights, so the
# gradient is **spread**. We expect RoIPool's map to hold four 1s, and RoIAlign's (`sampling_ratio=1`)
# to give cell (1,1), which only the first sample reads, its weight $0.796875^2 = 0.6350$.

# %%
# NBVAL_CHECK_OUTPUT
def input_gradient(op, **kwargs):
    """d(sum of op's outputs) / d(feature map), for the example map and box: (6, 6)."""
    leaf = x.clone().requires_grad_()
    op(leaf, box, output_size=2, spatial_scale=scale, **kwargs).sum().backward()
    return leaf.grad[0, 0]


grads = {"RoIPool": (input_gradient(roi_ops.roi_pool), input_gradient(torchvision.ops.roi_pool)),
         "RoIAlign, sampling_ratio=1": (input_gradient(roi_ops.roi_align, sampling_ratio=1),
                                        input_gradient(torchvision.ops.roi_align, sampling_ratio=1)),
         "RoIAlign, sampling_ratio=2": (input_gradient(roi_ops.roi_align, sampling_ratio=2),
                                        input_gradient(torchvision.ops.roi_align, sampling_ratio=2))}
for name, (ours_g, tv_g) in grads.items():
    assert ours_g.shape == tv_g.shape == (6, 6)
    assert torch.allclose(ours_g, tv_g, atol=1e-6), name
    print(f"{name}: {int((ours_g != 0).sum())} cells get gradient, total {ours_g.sum():.4f}")
print("RoIPool gradient:\n" + rows_of(grads["RoIPool"][0]))
print("RoIAlign (sampling_ratio=1) gradient:\n" + rows_of(grads["RoIAlign, sampling_ratio=1"][0]))

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 4.4), layout="constrained")
for ax, (name, (g, _)) in zip(axes, grads.items()):
    im = ax.imshow(g, cmap="Greens", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(g.numpy()):
        if v != 0:
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v > 0.6 else "black")
    draw_rect(ax, *exact, color="black", linestyle="--", linewidth=1.5)
    ax.set_title(f"{name}\n{int((g != 0).sum())} cells receive gradient")
    ax.set_xlabel("x (feature cells)")
    ax.set_ylabel("y (feature cells)")
fig.colorbar(im, ax=axes, shrink=0.8, label="d(sum of outputs) / d(feature)")
plt.show()

# %% [markdown]
# RoIPool trains four cells of this box and ignores the rest; a small change of the box can hand a
# bin's whole gradient to another cell. RoIAlign's gradient reaches every cell that a sample taps: the
# cells under the box and, where a sample lies within a cell of the box's edge, a rim of cells outside
# it (rows 0 and 4 and columns 0 and 4 with `sampling_ratio=2`: cell (0, 0) is the one the first
# sample reads in section 5, and cell 4's centre lies just past the box's edge at 3.875). It
# moves smoothly with the box — the smoothness of section 8, seen from the backward side.
#
# ## 10. (Optional) How to make it fast
#
# This section is about speed, not about what RoIAlign computes; skip it on a first reading.
# The library's `roi_align` is written to be read: every sample gathers its four cells, so a 7x7 output
# with 2x2 samples per bin reads 784 feature vectors per RoI, even for a RoI that covers only 5x5
# cells, and the backward pass scatters into every one of them. `roi_align_fast.py` computes
# $A\,F\,B^\top$ of section 6 instead, with $A$ and $B$ cut down to the rows and columns the RoI's samples
# touch (its *support*): one gather reads each RoI's window once, and two batched matrix products do
# the rest. This is what the `"mixed"` kernel set uses, the models' default.
#
# Below, its heart, then two checks. For our example (`sampling_ratio=1`) the samples touch rows 1, 2,
# 3, so the fast kernel's $A$ should be section 6's $A$ with only those three columns kept. And on a
# realistic batch (4 images, 64 channels, a 32x32 map at stride 4, 256 RoIs of 8 to 60 pixels, 7x7
# output, `sampling_ratio=2`, `aligned=True`), the plain, the fast and torchvision's RoIAlign must
# agree, forward and backward. Last, the point of it: forward + backward time on that batch (median of
# 3 runs on this machine; the numbers vary between machines and runs). We expect the fast form to beat
# the plain one several times over, and on a CPU also torchvision's compiled kernel.

# %%
show_source(roi_align_fast._separable_pool)

# %%
# NBVAL_CHECK_OUTPUT
rows, count_h, A_fast = roi_align_fast._interpolation_matrix(start_y, height_roi, 2, torch.tensor([1]), 6)  # (1, Sh), (1,), (1, 2, Sh)
print("support rows", rows[0].tolist(), "\nA of the fast kernel:\n" + rows_of(A_fast[0]))
assert torch.allclose(A_fast[0], A_example[:, rows[0]]) and A_example[:, rows[0]].sum() == A_example.sum()
g = torch.Generator().manual_seed(0)
feats = torch.randn(4, 64, 32, 32, generator=g)  # (B, C, H, W)
size = 8 + 52 * torch.rand(256, 2, generator=g)  # (256, 2)  RoI width, height in pixels
corner = (128 - size) * torch.rand(256, 2, generator=g)  # (256, 2)
many = torch.cat([torch.randint(4, (256, 1), generator=g).float(), corner, corner + size], dim=1)  # (256, 5)
kernels = {"plain": roi_ops.roi_align, "fast": roi_align_fast.roi_align, "torchvision": torchvision.ops.roi_align}
results = {}
for name, op in kernels.items():
    leaf = feats.clone().requires_grad_()
    out = op(leaf, many, 7, 1 / 4, 2, True)  # (256, 64, 7, 7)
    out.backward(torch.ones_like(out) / out.numel())
    results[name] = (out.detach(), leaf.grad)
    assert out.shape == (256, 64, 7, 7) and leaf.grad.shape == feats.shape
for name in ("fast", "torchvision"):
    same_out = torch.allclose(results[name][0], results["plain"][0], atol=1e-5)
    same_grad = torch.allclose(results[name][1], results["plain"][1], atol=1e-8)
    print(f"{name:<11} vs plain: outputs agree {same_out}, input gradients agree {same_grad}")
    assert same_out and same_grad

# %%
import time


def seconds(op, repeats=3):
    times = []
    for _ in range(repeats + 1):  # the first run warms up
        leaf = feats.clone().requires_grad_()
        start = time.perf_counter()
        op(leaf, many, 7, 1 / 4, 2, True).sum().backward()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[repeats // 2]


timings = {name: seconds(op) for name, op in kernels.items()}
for name, t in timings.items():
    print(f"{name:<11} {1000 * t:7.1f} ms   ({t / timings['fast']:.1f}x the fast one)")

# %% [markdown]
# ## Summary
#
# - RoI pooling turns `K` boxes of any size (over all images of the batch) into `(K, C, ph, pw)`;
#   the first dimension counts RoIs, not images.
# - RoIPool rounds twice: the box to whole cells (each corner moves up to half a cell; the window of
#   cells read is wider than the box by up to 2 cells), then the bins (floor at the start, ceil at
#   the end: bins of 3 cells that overlap, where the exact bins are 1.78 cells wide), and takes the
#   maximum of each bin. Ours equals torchvision's.
# - RoIAlign rounds nothing: exact bins, $G \times G$ regular samples per bin, bilinear interpolation
#   from the 4 neighbouring cells, the mean per bin. For one box it is $A\,F\,B^\top$; its bins share no
#   area but do share cells, and its samples read a rim of cells just outside the box.
# - The paper's "4 points per bin" is `sampling_ratio=2` (2x2), torchvision's Mask R-CNN setting;
#   `sampling_ratio<=0` adapts $G = \lceil w/P \rceil$ to the box.
# - `aligned` decides which image point cell $j$ stands for: $s\,j$ (`False`) or $s(j+\tfrac12)$
#   (`True`). Which is closer depends on the backbone: for the library's padded ResNet a cell is centred
#   at $s\,j + \tfrac12$, so `False` is off by ½ px and `True` by $\tfrac{s-1}{2}$ px (the
#   "half a cell too far" demonstration is circular: it averages pixel blocks, the model `True`
#   assumes). Detectron2 says the choice makes no difference to performance with conv layers; run a
#   model with the convention it was trained with.
# - Sliding a box: RoIPool's output jumps and hides the shift from a regressor, RoIAlign's moves
#   smoothly; backward, RoIPool feeds one cell per bin, RoIAlign spreads the gradient bilinearly.
#   Mask R-CNN measures the gain on box AP as well as mask AP (Table 2d, Table 3).
#
# ## Exercises
#
# Worked solutions are in `solutions/05_roi_align.py` (for teachers). Each check cell says whether
# your answer is right.
#
# ### Exercise 1 — Predict · about 10 min: RoIPool after a 0.49-cell shift
#
# Take the worked example of section 2 (the 6x6 map, stride 32, the box (10, 10, 124, 124), a 2x2
# output) and move the box along x by 0.49 cell, 15.68 pixels: once to the right, (25.68, 10, 139.68, 124),
# and once to the left, (-5.68, 10, 108.32, 124). Work out on paper, with the map printed in section 2,
# RoIPool's 2x2 output for each. Does a shift of less than half a cell leave RoIPool's output unchanged?
# Don't call roi_pool (ours or torchvision's): read the values off the map printed in section 2.
#
# *Hint:* snap each edge first (which of them crosses a half-cell mark?), then cut the snapped box into
# 2 bins with the floor/ceil rule of section 3, and take the maximum of each bin.

# %%
def my_shifted_roipool():
    """-> (output after the shift to the right, output after the shift to the left), each [[b00, b01], [b10, b11]]."""
    raise NotImplementedError  # your code here


# %%
from mrcnn_teach.exercises.nb05 import check_aligned_roi_align, check_bin_gradient_sums, check_shifted_roipool

check_shifted_roipool(my_shifted_roipool);

# %% [markdown]
# ### Exercise 2 — Derive · about 15 min: what each bin's gradient sums to
#
# Write `my_bin_gradient_sums(features, boxes, output_size, spatial_scale, sampling_ratio)`: for RoIAlign
# (`roi_ops.roi_align`, `aligned=False`) on `features` `(B, 1, H, W)` and `boxes` `(K, 5)`, return the
# `(K, ph, pw)` tensor whose entry `[k, p, q]` is the sum over the whole map of the gradient of output
# bin `(p, q)` of RoI `k`: $\sum_{i,j} \partial\,\text{out}[k, 0, p, q] / \partial F[b_k, 0, i, j]$.
# `output_size`: an int or a pair `(ph, pw)`. Section 9 took the gradient of the sum of all outputs at
# once; here each bin needs its own. The check tries boxes inside the map and boxes that hang off it,
# one of them entirely.
#
# Then explain, in a sentence of your own: why is the sum 1 for a bin inside the map (write down the
# weights of one sample, and use section 6's $A\,F\,B^\top$)? When is it smaller, and what does such a
# bin's output then read? What does each bin's gradient sum to for RoIPool?
#
# *Hint:* one backward pass per bin works.

# %%
def my_bin_gradient_sums(features, boxes, output_size, spatial_scale, sampling_ratio):
    """-> (K, ph, pw): for each output bin of roi_ops.roi_align, the sum of its gradient over the feature map."""
    raise NotImplementedError  # your code here


# %%
check_bin_gradient_sums(my_bin_gradient_sums);

# %% [markdown]
# ### Exercise 3 — Debug · about 15 min: an `aligned=True` RoIAlign that is right at stride 1
#
# `buggy_roi_align_aligned` below is a compact RoIAlign for one image with `aligned=True`, written
# differently from the library: each sample's interpolation weights on all cells of an axis come from
# the "hat" $\max(0, 1 - |x - j|)$, and one `einsum` does the weighted sums. It should equal
# `torchvision.ops.roi_align(features[None], [boxes], output_size, spatial_scale, sampling_ratio, aligned=True)`.
# It does at `spatial_scale=1`, and nowhere else. Find the bug and write the fixed `my_roi_align_aligned`.
# Then say how far off (in image pixels) the buggy version reads at stride 32.
#
# *Hint:* compare it with torchvision at `spatial_scale` 1 and 1/8, on a box over a ramp like the one
# of section 7; then reread the two bullet points at the start of "`aligned`: which image point...".

# %%
def buggy_roi_align_aligned(features, boxes, output_size, spatial_scale, sampling_ratio):
    """RoIAlign, aligned=True, of one image: features (C, H, W), boxes (K, 4) in pixels -> (K, C, P, P).

    Should equal torchvision.ops.roi_align(features[None], [boxes], output_size, spatial_scale,
    sampling_ratio, aligned=True); sampling_ratio must be > 0.
    """
    _, height, width = features.shape
    P, G = output_size, sampling_ratio
    x1, y1, x2, y2 = ((boxes - 0.5) * spatial_scale).unbind(dim=1)  # (K,) x4  the box in feature cells
    steps = (torch.arange(P * G) + 0.5) / (P * G)  # (P*G,)  sample k sits at the centre of the k-th of P*G slices

    def weights(low, high, size):  # samples from low to high -> (K, P*G, size): each sample's weight on each cell
        pos = low[:, None] + steps * (high - low)[:, None]  # (K, P*G)
        on_map = ((pos >= -1) & (pos <= size))[..., None]  # (K, P*G, 1)  more than a cell off the map reads 0
        pos = pos.clamp(0, size - 1)[..., None]  # (K, P*G, 1)  within a cell of the border reads the border
        return (1 - (pos - torch.arange(size)).abs()).clamp(min=0) * on_map  # (K, P*G, size)

    samples = torch.einsum("kah,chw,kbw->kcab", weights(y1, y2, height), features, weights(x1, x2, width))  # (K, C, P*G, P*G)
    return samples.unflatten(3, (P, G)).unflatten(2, (P, G)).mean(dim=(3, 5))  # (K, C, P, P)


# %%
def my_roi_align_aligned(features, boxes, output_size, spatial_scale, sampling_ratio):
    """The fixed buggy_roi_align_aligned."""
    raise NotImplementedError  # your code here


# %%
check_aligned_roi_align(my_roi_align_aligned);

# %% [markdown]
# Next: [06 — Box and mask heads](06_heads.ipynb)
