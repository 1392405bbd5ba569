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
# - how RoIPool quantises twice, worked through the classic 6x6 example by hand and against torchvision;
# - RoIAlign in three steps (sample points, bilinear taps, mean per bin), and its two knobs,
#   `sampling_ratio` and `aligned`;
# - two experiments that show why the rounding matters: a box sliding by fractions of a cell, and
#   where the gradient goes;
# - how the same RoIAlign is made several times faster (two small matrix products per RoI).
#
# **Builds on:** [02 — FPN](02_fpn.ipynb) (feature maps and their strides),
# [04 — RPN](04_rpn.ipynb) (the proposals that become RoIs).
#
# **Run time:** about 10 s on a 2-core CPU.

# %%
from mrcnn_teach.notebook import setup, show_source, print_shapes

setup()

import matplotlib.pyplot as plt
import numpy as np
import torch
import torchvision
from matplotlib.patches import Rectangle

from mrcnn_teach import roi_align_fast, roi_ops


def rows_of(t):
    """A 2-D tensor as text, 4 decimals: the notebook's way of printing numbers that are the lesson."""
    return "\n".join("  ".join(f"{v:8.4f}" for v in row) for row in t.tolist())


# %% [markdown]
# ## 1. The job: a box of any size in, a fixed grid out
#
# Both ops take a feature map `(B, C, H, W)` and boxes in **input-image pixels**, and a
# `spatial_scale` (1 / stride) that maps pixels to feature cells. Boxes come either as a list with
# one `(K_i, 4)` tensor per image, or as one `(K, 5)` tensor whose first column names the image.
# The library turns the list into the `(K, 5)` form first:

# %%
show_source(roi_ops._as_rois)

# %% [markdown]
# So every RoI carries its own image index, and the output has one row per RoI, not per image.
# Below: 2 images, 256 channels, a 16x16 map of stride 8; 3 boxes in the first image and 5 in the
# second. We expect `K = 3 + 5 = 8` RoIs, so an output of `(8, 256, 7, 7)`, and a batch column
# `0, 0, 0, 1, 1, 1, 1, 1`.

# %%
# NBVAL_CHECK_OUTPUT
B, C, H, W = 2, 256, 16, 16
features = torch.randn(B, C, H, W)  # (B, C, H, W)  stride 8: a 128 x 128 image
boxes = [torch.tensor([[8.0, 8.0, 60.0, 40.0], [30.0, 50.0, 90.0, 120.0], [0.0, 0.0, 127.0, 127.0]]),  # (3, 4) image 0
         torch.tensor([[10.0, 10.0, 20.0, 20.0]]).repeat(5, 1) + 20 * torch.arange(5.0)[:, None]]  # (5, 4) image 1
K = sum(len(b) for b in boxes)
rois = roi_ops._as_rois(features, boxes, "demo")  # (K, 5)  [image, x1, y1, x2, y2]
pooled = roi_ops.roi_align(features, boxes, output_size=7, spatial_scale=1 / 8, sampling_ratio=2)  # (K, C, 7, 7)
print_shapes(features=features, rois=rois, pooled=pooled)
print("image of each RoI:", rois[:, 0].long().tolist())
assert rois.shape == (K, 5)
assert pooled.shape == (K, C, 7, 7)

# %% [markdown]
# **Erratum.** The first seed gives RoIAlign's output as "(B, 256, 7, 7) per RoI". That mixes two
# things: one RoI gives a `(256, 7, 7)` block, and the whole batch gives `(K, 256, 7, 7)`, where `K`
# counts the RoIs over all images (with FPN the paper samples 512 RoIs per image for training and
# keeps 1000 proposals per image at test time, Sec. 3.1). The first dimension is not `B`; the check
# below fails for exactly that reason.

# %%
try:
    assert pooled.shape == (B, 256, 7, 7), f"got {tuple(pooled.shape)}: the first dimension counts RoIs (K = {K}), not images (B = {B})"
except AssertionError as err:
    print("seed's shape (B, 256, 7, 7) is wrong:", err)
print("one RoI:", tuple(pooled[0].shape), "  all RoIs of the batch:", tuple(pooled.shape))
assert pooled[0].shape == (256, 7, 7)

# %% [markdown]
# ## 2. The worked example
#
# We follow the second seed's example, with its exact numbers: a 6x6, one-channel feature map from
# `torch.manual_seed(1)`, a stride of 32 (`spatial_scale = 1/32`), the box (10, 10, 124, 124) in
# image pixels, and a 2x2 output. The next cell prints the map; cell (row 1, column 1) is -1.6091.

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
# everything below depends on it: both ops (with `aligned=False`, torchvision's default and the
# seed's) treat the value `F[i, j]` as sitting at the **point** `(x = j, y = i)`. The pictures
# therefore draw cell `(i, j)` as a square centred on that point, and draw the box directly in
# feature coordinates. (Section 7 shows why "centred on the point `j`" is half a cell off.)

# %% [markdown]
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
# not what `torch.round` does (2.5 becomes 2). The library's two helpers:

# %%
show_source(roi_ops._round_half_away, roi_ops._pool_bins)

# %% [markdown]
# For our box: $0.3125 \to 0$ and $3.875 \to 4$, so the snapped box is cells 0..4, five cells, on
# each axis. Five cells into two bins: exact edges at 0, 2.5 and 5; rounding gives bin 0 = cells
# `[0, 3)` and bin 1 = cells `[2, 5)`. The next cell computes this with the library and prints
# `first` (inclusive) and `stop` (exclusive) of each bin.

# %%
# NBVAL_CHECK_OUTPUT
corners = roi_ops._round_half_away(box[0] * scale).long()  # (1, 4)  x1, y1, x2, y2 in whole cells
first, stop = roi_ops._pool_bins(corners[:, 0], corners[:, 2], 2, 6, torch.float32)  # (1, 2), (1, 2)  along x
print("snapped box (cells):", corners[0].tolist())
for p in range(2):
    cells = list(range(first[0, p], stop[0, p]))
    print(f"bin {p}: cells {cells}  ({len(cells)} cells)")
assert corners.shape == (1, 4) and first.shape == stop.shape == (1, 2)

# %% [markdown]
# **Erratum.** The second seed says the 5x5 snapped region "cannot be evenly divided", so that some
# sub-regions come out larger and some smaller. That is not what torchvision does: with a floor at
# the start and a ceil at the end, **both** bins are 3 cells wide and they **overlap** on the middle
# cell 2 (the right picture below draws both bins around it). An uneven split — say cells 0..1 and 2..4 — is a
# plausible reading of the seed; running it shows it does not reproduce torchvision's numbers:

# %%
F = x[0, 0]  # (6, 6)
uneven = [range(0, 2), range(2, 5)]  # what "some larger, some smaller" would be: 2 cells, then 3
uneven_pool = torch.tensor([[F[list(r)][:, list(c)].max() for c in uneven] for r in uneven])  # (2, 2)
reference = torchvision.ops.roi_pool(x, box, output_size=2, spatial_scale=scale)[0, 0]  # (2, 2)
assert uneven_pool.shape == reference.shape == (2, 2)
try:
    assert torch.allclose(uneven_pool, reference), (
        f"uneven bins give\n{rows_of(uneven_pool)}\nbut torchvision gives\n{rows_of(reference)}")
except AssertionError as err:
    print("the uneven split is wrong:", err)

# %% [markdown]
# The picture shows both roundings. Left: the exact box (dashed) snaps to cells 0..4 (solid). Right:
# the four bins, each 3x3 cells, overlapping on row 2 and column 2; a star marks each bin's
# maximum, which is RoIPool's output.

# %%
def draw_map(ax, F, title, vmax=2.5, cmap="coolwarm", values=True, points=False):
    """A feature map with cell (i, j) centred on the point (j, i); values written in, points marked if asked."""
    im = ax.imshow(F, cmap=cmap, vmin=-vmax, vmax=vmax)
    for (i, j), v in np.ndenumerate(np.asarray(F)):
        if values:  # below the centre when the points are drawn, so that both stay readable
            ax.text(j, i + (0.3 if points else 0), f"{v:.2f}", ha="center", va="center", fontsize=7)
        if points:
            ax.plot(j, i, marker="+", color="black", markersize=6)
    ax.set_xticks(range(F.shape[1]))
    ax.set_yticks(range(F.shape[0]))
    ax.set_xlabel("x (feature cells)")
    ax.set_ylabel("y (feature cells)")
    ax.set_title(title)
    return im


def draw_box(ax, x1, y1, x2, y2, **style):
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, **style))


exact = (box[0][0] * scale).tolist()  # x1, y1, x2, y2 in feature cells
fig, axes = plt.subplots(1, 2, figsize=(11, 5), layout="constrained")
draw_map(axes[0], F, "RoIPool, rounding 1:\nthe box snaps to whole cells")
draw_box(axes[0], *exact, color="black", linestyle="--", linewidth=2, label="exact box 0.3125..3.875")
draw_box(axes[0], -0.5, -0.5, 4.5, 4.5, color="purple", linewidth=2.5, label="snapped: cells 0..4")
axes[0].legend(loc="upper left", bbox_to_anchor=(0, -0.12), ncol=2, fontsize=8)

im = draw_map(axes[1], F, "RoIPool, rounding 2:\n2x2 bins of 3x3 cells, overlapping; max per bin (stars)")
colours = {(0, 0): "tab:green", (0, 1): "tab:orange", (1, 0): "tab:blue", (1, 1): "tab:red"}
bin_first, bin_stop = first[0].tolist(), stop[0].tolist()  # the same bins along y and x (square box)
for (py, px), colour in colours.items():
    inset = 0.08 * (1 + py + 2 * px)  # a different inset per bin, so overlapping edges stay visible
    y0, y1_ = bin_first[py] - 0.5 + inset, bin_stop[py] - 0.5 - inset
    x0, x1_ = bin_first[px] - 0.5 + inset, bin_stop[px] - 0.5 - inset
    draw_box(axes[1], x0, y0, x1_, y1_, color=colour, linewidth=2, label=f"bin ({py},{px})")
    window = F[bin_first[py]:bin_stop[py], bin_first[px]:bin_stop[px]]  # (3, 3)
    i, j = divmod(int(window.argmax()), window.shape[1])
    axes[1].plot(bin_first[px] + j, bin_first[py] + i, marker="*", markersize=16, color=colour, markeredgecolor="black")
axes[1].legend(loc="upper left", bbox_to_anchor=(0, -0.12), ncol=4, fontsize=8)
fig.colorbar(im, ax=axes, shrink=0.8, label="feature value")
plt.show()

# %% [markdown]
# The whole op is `roi_pool`: round the corners, make the bins, gather every bin's window (padded
# to the largest bin and masked) and take the maximum. It has no loop over RoIs or bins.

# %%
show_source(roi_ops.roi_pool, docstring=False)

# %% [markdown]
# Running ours and torchvision's on the example, we expect the four stars of the picture:
# 1.6871, 0.4676, 2.0242, 2.3571.

# %%
# NBVAL_CHECK_OUTPUT
ours_pool = roi_ops.roi_pool(x, box, output_size=2, spatial_scale=scale)  # (1, 1, 2, 2)
tv_pool = torchvision.ops.roi_pool(x, box, output_size=2, spatial_scale=scale)  # (1, 1, 2, 2)
print("RoIPool, ours:\n" + rows_of(ours_pool[0, 0]))
print("RoIPool, torchvision:\n" + rows_of(tv_pool[0, 0]))
assert ours_pool.shape == tv_pool.shape == (1, 1, 2, 2)
assert torch.equal(ours_pool, tv_pool)

# %% [markdown]
# Each output came from a window that starts up to half a cell away from the exact box and is up to
# half a cell too wide — at stride 32 that is up to 16 image pixels. A classifier barely notices. A
# 28x28 mask drawn from these features does: Mask R-CNN Sec. 3 calls this the *misalignment*.
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
# $G$ is `sampling_ratio` (samples per bin along each axis, so $G^2$ per bin). Three helpers
# compute this: the box in feature cells (`_roi_geometry`), $G$ per RoI (`_sampling_grid`) and the
# positions (`_sample_positions`).

# %%
show_source(roi_ops._roi_geometry, roi_ops._sampling_grid, roi_ops._sample_positions)

# %% [markdown]
# For our box, $w = 3.5625$ and a bin is $1.78125$ cells wide. With $G = 1$ the samples sit at the
# bin centres, $0.3125 + 0.890625 = 1.203125$ and $1.203125 + 1.78125 = 2.984375$; with $G = 2$
# at a quarter and three quarters of each bin.

# %%
# NBVAL_CHECK_OUTPUT
rois1 = roi_ops._as_rois(x, box, "example")  # (1, 5)
batch, start_x, start_y, width_roi, height_roi = roi_ops._roi_geometry(rois1, scale, aligned=False)  # (1,) x5
print(f"start_x {start_x.item():.4f}  width_roi {width_roi.item():.4f}  bin width {width_roi.item() / 2:.6f}")
for ratio in (1, 2):
    grid_w = torch.tensor([ratio])  # (1,)
    xs, exists = roi_ops._sample_positions(start_x, width_roi, 2, grid_w, ratio)  # (1, 2, G), (1, 1, G)
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
# 0; one on the last row or column reads that row or column only).

# %%
show_source(roi_ops._bilinear_taps)

# %% [markdown]
# The first sample, at $x = y = 1.203125$, lies between cells 1 and 2 on both axes with
# $u = v = 0.203125$, so it reads cells (1,1), (1,2), (2,1), (2,2) with weights
# $0.796875^2$, $0.796875 \cdot 0.203125$ (twice) and $0.203125^2$.

# %%
# NBVAL_CHECK_OUTPUT
xs, exists = roi_ops._sample_positions(start_x, width_roi, 2, torch.tensor([1]), 1)  # (1, 2, 1), (1, 1, 1)
index, weight = roi_ops._bilinear_taps(xs, exists, 6)  # (1, 2, 1, 2) x2  one axis: 2 neighbours per sample
print("bin 0: neighbours", index[0, 0, 0].tolist(), " weights", [f"{w:.6f}" for w in weight[0, 0, 0].tolist()])
print("bin 1: neighbours", index[0, 1, 0].tolist(), " weights", [f"{w:.6f}" for w in weight[0, 1, 0].tolist()])
taps_2d = weight[0, 0, 0][:, None] * weight[0, 0, 0][None, :]  # (2, 2)  weight of cells (1..2, 1..2) for bin (0, 0)
print("bin (0,0): weights of cells rows 1-2 x columns 1-2\n" + rows_of(taps_2d))
assert index.shape == weight.shape == (1, 2, 1, 2) and taps_2d.shape == (2, 2)

# %% [markdown]
# The seed does the first bin by hand. Here it is, with the formula above and nothing else; we
# expect -0.8546.

# %%
# NBVAL_CHECK_OUTPUT
u = v = 0.203125  # the first sample is this far past cell 1, along x and along y
f1, f2 = x[0, 0, 1, 1].item(), x[0, 0, 1, 2].item()  # top-left, top-right neighbour
f3, f4 = x[0, 0, 2, 1].item(), x[0, 0, 2, 2].item()  # bottom-left, bottom-right
by_hand = (1 - u) * (1 - v) * f1 + u * (1 - v) * f2 + (1 - u) * v * f3 + u * v * f4
print(f"f1..f4 = {f1:.4f} {f2:.4f} {f3:.4f} {f4:.4f}")
print(f"bilinear by hand: {by_hand:.4f}")

# %% [markdown]
# Where the samples fall, for `sampling_ratio` 1 (one sample per bin, at its centre) and 2 (2x2 = 4
# per bin). The thin grey lines join the first sample to the four cells it reads. Unlike RoIPool,
# the bins are exact quarters of the exact box and share no cell.

# %%
def sample_grid(rois, scale, pooled, ratio, aligned=False):
    """All sample points of the first RoI, from the library's own helpers: -> xs (P, G), ys (P, G)."""
    _, sx, sy, w, h = roi_ops._roi_geometry(rois, scale, aligned)  # (1,) x4
    gh, gw = roi_ops._sampling_grid(h, w, pooled, pooled, ratio)  # (1,), (1,)
    xs, _ = roi_ops._sample_positions(sx, w, pooled, gw, int(gw.max()))  # (1, P, G)
    ys, _ = roi_ops._sample_positions(sy, h, pooled, gh, int(gh.max()))  # (1, P, G)
    return xs[0], ys[0], (sx.item(), sy.item(), sx.item() + w.item(), sy.item() + h.item())


def draw_roi_align(ax, F, rois, scale, pooled, ratio, title, values=True, vmax=2.5, taps=True):
    im = draw_map(ax, F, title, vmax=vmax, values=values, points=values)
    xs, ys, (bx1, by1, bx2, by2) = sample_grid(rois, scale, pooled, ratio)
    draw_box(ax, bx1, by1, bx2, by2, color="black", linewidth=2, label="exact box")
    for k in range(1, pooled):  # the exact bin edges, inside the box
        ex, ey = bx1 + k * (bx2 - bx1) / pooled, by1 + k * (by2 - by1) / pooled
        ax.plot([ex, ex], [by1, by2], color="black", linestyle=":", linewidth=1.2)
        ax.plot([bx1, bx2], [ey, ey], color="black", linestyle=":", linewidth=1.2)
    gx, gy = np.meshgrid(xs.flatten().numpy(), ys.flatten().numpy())
    per_bin = gx.size // pooled**2
    ax.scatter(gx, gy, s=30, color="gold", edgecolor="black", zorder=3,
               label=f"{per_bin} sample{'s' if per_bin > 1 else ''} per bin")
    if taps:  # the four cells that the first sample reads
        x0, y0 = xs[0, 0].item(), ys[0, 0].item()
        for i in (int(np.floor(y0)), int(np.floor(y0)) + 1):
            for j in (int(np.floor(x0)), int(np.floor(x0)) + 1):
                ax.plot([x0, j], [y0, i], color="dimgray", linewidth=1.2)
    ax.set_xlim(-0.5, F.shape[1] - 0.5)
    ax.set_ylim(F.shape[0] - 0.5, -0.5)
    return im


fig, axes = plt.subplots(1, 2, figsize=(11, 5), layout="constrained")
draw_roi_align(axes[0], F, rois1, scale, 2, 1, "RoIAlign, sampling_ratio=1")
im = draw_roi_align(axes[1], F, rois1, scale, 2, 2, "RoIAlign, sampling_ratio=2")
for ax in axes:
    ax.legend(loc="upper left", bbox_to_anchor=(0, -0.12), ncol=2, fontsize=8)
fig.colorbar(im, ax=axes, shrink=0.8, label="feature value")
plt.show()

# %% [markdown]
# ## 6. RoIAlign, step 3: the mean per bin, and the whole op
#
# A bin's output is the average of its $G_h \times G_w$ samples (the paper allows max or average;
# torchvision, like Detectron, averages). `roi_align` chains the three steps for all RoIs at once:
# one gather reads every tapped cell, a weighted sum makes the samples, a mean makes the bins.

# %%
show_source(roi_ops.roi_align, docstring=False)

# %% [markdown]
# Now the seed's RoIAlign numbers, `sampling_ratio=1`: ours, torchvision's and, for bin (0, 0), the
# hand computation, side by side. With one sample per bin the mean is that sample, so all three must
# read -0.8546; the full output should be [[-0.8546, 0.3236], [0.2177, 0.0546]].

# %%
# NBVAL_CHECK_OUTPUT
ours_align = roi_ops.roi_align(x, box, output_size=2, spatial_scale=scale, sampling_ratio=1)  # (1, 1, 2, 2)
tv_align = torchvision.ops.roi_align(x, box, output_size=2, spatial_scale=scale, sampling_ratio=1)  # (1, 1, 2, 2)
print("bin     ours    torchvision  by hand")
for py in range(2):
    for px in range(2):
        hand = f"{by_hand:8.4f}" if (py, px) == (0, 0) else "       -"
        print(f"({py},{px})  {ours_align[0, 0, py, px]:7.4f}   {tv_align[0, 0, py, px]:7.4f}    {hand}")
print("RoIPool  on the same box:\n" + rows_of(ours_pool[0, 0]))
print("RoIAlign on the same box:\n" + rows_of(ours_align[0, 0]))
assert ours_align.shape == tv_align.shape == (1, 1, 2, 2)
assert torch.allclose(ours_align, tv_align, atol=1e-6)
assert abs(ours_align[0, 0, 0, 0].item() - by_hand) < 1e-5

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
# **Erratum.** The second seed says the paper's default `sampling_ratio` is 4. The paper (Sec. 3 and
# its footnote) samples **four regular points per bin** — 2x2, which is `sampling_ratio=2` — and notes
# that one point at the bin centre is nearly as good and that more points bring little. Torchvision's
# Mask R-CNN, like this library's configs, uses `sampling_ratio=2`. `sampling_ratio=4` would average
# 4x4 = 16 points per bin. (The first seed's "sample at 4 positions" is right.) Counted with the
# library's `_sampling_grid` for our box, and read from torchvision's model:

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

# %% [markdown]
# The adaptive rule costs more the larger the box: with a 7x7 output, a box 50 cells wide gets
# $\lceil 50/7 \rceil = 8$ samples per axis, 64 per bin, while a fixed ratio keeps 4 for every box.
# The table lists $G$ for a few box widths (in feature cells):

# %%
# NBVAL_CHECK_OUTPUT
widths = torch.tensor([1.0, 3.0, 7.0, 7.5, 20.0, 50.0])  # (6,)  box widths in feature cells
g_adaptive, _ = roi_ops._sampling_grid(widths, widths, 7, 7, 0)  # (6,)
g_fixed, _ = roi_ops._sampling_grid(widths, widths, 7, 7, 2)  # (6,)
print("width (cells)   adaptive G  points/bin   fixed G=2  points/bin")
for w_, ga, gf in zip(widths.tolist(), g_adaptive.tolist(), g_fixed.tolist()):
    print(f"{w_:12.1f}   {ga:10d}  {ga * ga:10d}   {gf:9d}  {gf * gf:10d}")
assert g_adaptive.shape == g_fixed.shape == (6,)

# %% [markdown]
# The picture: a box about 8.5 cells wide on a smooth 12x12 map, 2x2 output. Adaptive sampling puts
# $\lceil 8.5/2 \rceil = 5$ samples per axis in a bin (25 points), the fixed ratio 2 (4 points).

# %%
yy, xx = torch.meshgrid(torch.arange(12.0), torch.arange(12.0), indexing="ij")  # (12, 12) x2
smooth = torch.sin(0.6 * xx) + torch.cos(0.45 * yy)  # (12, 12)  a smooth feature map
big_roi = torch.tensor([[0.0, 1.2, 2.0, 9.7, 10.3]])  # (1, 5)  image 0, box in cells (spatial_scale 1)
fig, axes = plt.subplots(1, 2, figsize=(11, 5), layout="constrained")
draw_roi_align(axes[0], smooth, big_roi, 1.0, 2, 0, "adaptive: sampling_ratio=0 (5 x 5 per bin)", values=False, vmax=2, taps=False)
im = draw_roi_align(axes[1], smooth, big_roi, 1.0, 2, 2, "fixed: sampling_ratio=2 (2 x 2 per bin)", values=False, vmax=2, taps=False)
for ax in axes:
    ax.legend(loc="upper left", bbox_to_anchor=(0, -0.12), ncol=2, fontsize=8)
fig.colorbar(im, ax=axes, shrink=0.8, label="feature value")
plt.show()

# %% [markdown]
# ### `aligned`: the half-cell shift
#
# Where is feature cell `j` in the image? At stride $s$ it summarises pixels $sj$ to $s(j+1)$, so its
# centre is at image coordinate $s(j + \tfrac12)$ (pixel $i$ spans $[i, i+1)$). An image coordinate
# $x$ therefore lies at cell position $x/s - \tfrac12$, not at $x/s$. The original RoIAlign (what
# torchvision's Mask R-CNN and its weights use, `aligned=False`) leaves out the $-\tfrac12$ and reads
# the map **half a cell too far right and down**. `aligned=True` (Detectron2's correction) subtracts
# it: `_roi_geometry` moves the box by -0.5 cell, and with it every sample point; it also drops the
# legacy rule that widens a RoI to at least one cell.
#
# We can measure the error. Make an image in which every pixel holds the x coordinate of its own
# centre, and let the feature map at stride $s$ be the average over each cell, so that cell `j` holds
# the image coordinate of its centre, $s(j+\tfrac12)$. RoIAlign of a box over this linear ramp should return the
# box's centre x. We expect `aligned=True` to be exact and `aligned=False` to be off by $s/2$ pixels:
# 2 px on P2 (stride 4), 16 px on P5 (stride 32).

# %%
# NBVAL_CHECK_OUTPUT
ramp_box = [torch.tensor([[64.0, 64.0, 160.0, 160.0]])]  # (1, 4)  centre x = 112 image pixels
strides = (4, 8, 16, 32)
bias = {False: [], True: []}
for stride in strides:
    cells = 256 // stride
    ramp = (stride * (torch.arange(cells, dtype=torch.float32) + 0.5)).expand(1, 1, cells, cells)  # (1, 1, n, n)
    for aligned in (False, True):
        read = roi_ops.roi_align(ramp, ramp_box, 1, 1 / stride, 2, aligned=aligned)  # (1, 1, 1, 1)
        assert read.shape == (1, 1, 1, 1)
        bias[aligned].append(read.item() - 112.0)
    print(f"stride {stride:2d}: aligned=False reads x = {112 + bias[False][-1]:8.4f} (off by {bias[False][-1]:+.4f} px),"
          f"  aligned=True reads {112 + bias[True][-1]:8.4f} (off by {bias[True][-1]:+.4f} px)")

# %% [markdown]
# When does it matter? The shift is a constant half cell, so it matters in proportion to how large
# half a cell is next to the object: a 32-pixel object pooled at stride 32 would be read 16 px off,
# half its size. FPN's level rule (FPN paper, Eq. 1) sends small boxes to fine levels, which keeps half
# a cell small next to the box: a 32-pixel box goes to P2 (2 px off), a 224-pixel box to P4 (8 px off).
# A network trained with either convention learns around a constant shift, so what matters most is to
# run a model with the convention it was trained with. Left: the sample points of our example move by -0.5 cell; right: the measured shift.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), layout="constrained", gridspec_kw={"width_ratios": [1.1, 1]})
draw_map(axes[0], F, "aligned=True moves every sample by -0.5 cell", values=False, points=True)
for aligned, colour in ((False, "white"), (True, "gold")):
    xs_, ys_, (bx1, by1, bx2, by2) = sample_grid(rois1, scale, 2, 2, aligned)
    draw_box(axes[0], bx1, by1, bx2, by2, color="black", linewidth=1.5, linestyle="-" if aligned else "--",
             label=f"box, aligned={aligned}")
    gx, gy = np.meshgrid(xs_.flatten().numpy(), ys_.flatten().numpy())
    axes[0].scatter(gx, gy, s=40, zorder=3, facecolor=colour, edgecolor="black", label=f"samples, aligned={aligned}")
axes[0].legend(loc="upper left", bbox_to_anchor=(0, -0.12), ncol=2, fontsize=8)
positions = np.arange(len(strides))
bars = axes[1].bar(positions - 0.2, bias[False], width=0.4, label="aligned=False")
axes[1].bar_label(bars, fmt="%+.0f px")
bars = axes[1].bar(positions + 0.2, bias[True], width=0.4, label="aligned=True")
axes[1].bar_label(bars, fmt="%+.0f px")
axes[1].set_xticks(positions, [f"stride {s}" for s in strides])
axes[1].set_xlabel("feature level")
axes[1].set_ylabel("error of the read-out x (image pixels)")
axes[1].set_title("Reading a linear ramp: the shift is half a cell")
axes[1].legend()
plt.show()

# %% [markdown]
# ## 8. The experiment: slide a box by fractions of a cell
#
# Move a box 4 cells wide from 0 to 2 cells to the right in 40 equal steps (stride 8, so one step is
# 0.4 image pixels) over a smooth map that falls from left to right, and watch output bin (0, 0).
# The box's left edge starts at cell 1.0 and rounds to the next cell when it passes 1.5 and 2.5, at
# shifts 0.5 and 1.5. RoIPool's window moves only then, so we expect its output to stay flat and
# **jump** twice (3 distinct values). RoIAlign's samples move with the box, so its output should
# change a little at every step, with no jump.

# %%
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
im = draw_map(axes[0], wave[0, 0], "smooth map and the box at shifts 0, 1, 2", vmax=1.6, values=False)
for s, colour in ((0, "black"), (20, "darkviolet"), (40, "darkgreen")):
    x1_, y1_, x2_, y2_ = (slid[s, 1:] / stride).tolist()
    draw_box(axes[0], x1_, y1_, x2_, y2_, color=colour, linewidth=2, label=f"shift {shifts[s]:.0f} cell(s)")
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
# gets features that change a little. RoIPool's features ignore moves smaller than half a cell and
# then change all at once — for a 28x28 mask, half a cell of stride 32 is 16 pixels. The paper
# measures the cost (Table 2c, 2d): replacing RoIPool by RoIAlign raises mask AP by about 3 points on
# a stride-16 backbone and by about 7 points on a stride-32 one.
#
# ## 9. Where the gradient goes
#
# Training sends gradients back through these ops into the FPN. Take the gradient of the sum of all
# outputs with respect to the feature map, for our example. RoIPool's maximum passes the gradient to
# **one cell per bin** (the star of section 3; a cell that wins two overlapping bins would get 2).
# RoIAlign passes each sample's share to its four neighbours with the bilinear weights, so the gradient
# is **spread**, and each bin's gradient sums to 1. We expect RoIPool's map to hold four 1s (total 4),
# and RoIAlign's (`sampling_ratio=1`) to give cell (1,1), which only the first sample reads, the
# weight 0.6350 printed in section 5 (total 4 as well).

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
    draw_box(ax, *exact, color="black", linestyle="--", linewidth=1.5)
    ax.set_title(f"{name}\n{int((g != 0).sum())} cells receive gradient")
    ax.set_xlabel("x (feature cells)")
    ax.set_ylabel("y (feature cells)")
fig.colorbar(im, ax=axes, shrink=0.8, label="d(sum of outputs) / d(feature)")
plt.show()

# %% [markdown]
# RoIPool trains four cells of this box and ignores the rest; a small change of the box can hand the
# whole gradient to another cell. RoIAlign's gradient covers the box and moves smoothly with it — the
# same smoothness as in section 8, seen from the backward side.
#
# ## 10. How to make it fast
#
# The RoIAlign above is written to be read: every sample gathers its four cells, a 7x7 output with 2x2
# samples per bin reads 784 feature vectors per RoI, even for a RoI that covers only 5x5 cells, and
# the backward pass scatters into every one of them. `roi_align_fast.py` computes the very same
# numbers by regrouping the sums. The sample points of a RoI lie on an axis-aligned grid, the bilinear
# weights factor into (row weight) x (column weight), and a bin's mean factors into a mean over its
# sample rows times a mean over its sample columns. So, per RoI and channel,
#
# $$\text{pooled} = A \; F[\text{rows}, \text{cols}] \; B^\top, \qquad (P_h \times S_h)(S_h \times S_w)(S_w \times P_w),$$
#
# where `rows` are the $S_h$ map rows the RoI's samples touch (its *support*), row $p$ of $A$ holds the
# mean weight that bin row $p$ puts on each of them, and $B$ does the same for columns. One gather
# reads each RoI's window once, and two batched matrix products do the rest. This is what the
# `"mixed"` kernel set (`kernels.py`) uses to train on a CPU.

# %%
show_source(roi_align_fast._separable_pool)

# %% [markdown]
# For our example (`sampling_ratio=1`): the two row samples, at 1.203125 and 2.984375, touch rows 1,
# 2, 3, so we expect $A$ = [[0.7969, 0.2031, 0], [0, 0.0156, 0.9844]], the same for $B$ (the box is
# square), and $A F B^\top$ equal to the RoIAlign output of section 6.

# %%
# NBVAL_CHECK_OUTPUT
grid_1 = torch.tensor([1])  # (1,)  sampling_ratio 1
rows, count_h, A = roi_align_fast._interpolation_matrix(start_y, height_roi, 2, grid_1, 6)  # (1, Sh), (1,), (1, 2, Sh)
cols, count_w, Bm = roi_align_fast._interpolation_matrix(start_x, width_roi, 2, grid_1, 6)  # (1, Sw), (1,), (1, 2, Sw)
window = F[rows[0]][:, cols[0]]  # (Sh, Sw)  the RoI's support
print("support rows", rows[0].tolist(), " columns", cols[0].tolist())
print("A =\n" + rows_of(A[0]))
print("A F B^T =\n" + rows_of(A[0] @ window @ Bm[0].T))
assert rows.shape == (1, 3) and A.shape == (1, 2, 3) and Bm.shape == (1, 2, 3) and window.shape == (3, 3)
assert torch.allclose(A[0] @ window @ Bm[0].T, ours_align[0, 0], atol=1e-6)

# %% [markdown]
# On a realistic batch (4 images, 64 channels, a 32x32 map at stride 4, 256 RoIs of 8 to 60 pixels,
# 7x7 output, `sampling_ratio=2`, `aligned=True`), the plain, the fast and torchvision's RoIAlign must
# agree, forward and backward:

# %%
# NBVAL_CHECK_OUTPUT
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

# %% [markdown]
# And the point of it, forward + backward time on that batch (median of 3 runs on this machine; the
# numbers vary between machines and runs). We expect the fast form to beat the plain one several
# times over, and on a CPU also torchvision's compiled kernel.

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
# - RoIPool rounds twice: the box to whole cells (0.3125..3.875 becomes cells 0..4), then the bins
#   (floor at the start, ceil at the end: two bins of 3 cells overlapping on the middle one), and takes
#   the maximum of each bin. Ours equals torchvision's: [[1.6871, 0.4676], [2.0242, 2.3571]].
# - RoIAlign rounds nothing: exact bins, $G \times G$ regular samples per bin, bilinear interpolation
#   from the 4 neighbouring cells, the mean per bin. Ours, torchvision's and the hand computation agree:
#   [[-0.8546, 0.3236], [0.2177, 0.0546]].
# - The paper's "4 points per bin" is `sampling_ratio=2` (2x2), torchvision's Mask R-CNN setting;
#   `sampling_ratio<=0` adapts $G = \lceil w/P \rceil$ to the box.
# - `aligned=False` reads the map half a cell (stride/2 pixels) too far right and down; `aligned=True`
#   removes that shift. Use the convention the weights were trained with.
# - Sliding a box: RoIPool's output jumps, RoIAlign's moves smoothly; backward, RoIPool feeds one cell
#   per bin, RoIAlign spreads the gradient bilinearly over the box.
# - The same RoIAlign is two small matrix products per RoI, $A\,F\,B^\top$ (`roi_align_fast.py`),
#   which is several times faster on a CPU.
#
# ## Exercises
#
# Worked solutions are in `solutions/05_roi_align.py` (for teachers). Each check cell says whether
# your answer is right.
#
# **Exercise 1 — bilinear interpolation of one point.** Write `my_bilinear(feature, y, x)` that
# returns the value of a 2-D map `feature` (H, W) at row `y`, column `x` (floats with
# `0 <= y <= H-1`, `0 <= x <= W-1`), with cell (i, j) at the point (i, j) as in section 5. Mind the
# last row and column: there the "next" cell does not exist, and the point reads that row or column
# only. Do not call `roi_align` or `grid_sample`.

# %%
def my_bilinear(feature, y, x):
    raise NotImplementedError  # your code here


# %%
from mrcnn_teach.exercises.nb05 import check_bilinear, check_sample_positions, check_snap

check_bilinear(my_bilinear);

# %% [markdown]
# **Exercise 2 — RoIPool's first rounding.** Write `my_snap(boxes, spatial_scale)` that maps boxes
# `(K, 4)` in image pixels to whole feature cells `(K, 4)`, as an integer tensor, the way torchvision's
# kernel does. Careful with halves: what does `torch.round(torch.tensor(2.5))` give, and what does C's
# `round(2.5)` give?

# %%
def my_snap(boxes, spatial_scale):
    raise NotImplementedError  # your code here


# %%
check_snap(my_snap);

# %% [markdown]
# **Exercise 3 — the sample positions of a bin.** Write `my_sample_positions(x1, x2, spatial_scale,
# pooled, sampling_ratio)` that returns a `(pooled, sampling_ratio)` tensor: row `p` holds the x
# coordinates (feature cells, `aligned=False`) of the samples of bin `p`. One detail from
# `_roi_geometry`: with `aligned=False` a RoI narrower than one cell is widened to one cell (its start
# stays put). Check your function on the example first: `my_sample_positions(10, 124, 1/32, 2, 1)`
# should give [[1.203125], [2.984375]].

# %%
def my_sample_positions(x1, x2, spatial_scale, pooled, sampling_ratio):
    raise NotImplementedError  # your code here


# %%
check_sample_positions(my_sample_positions);

# %% [markdown]
# Next: [06 — Box and mask heads](06_heads.ipynb)
