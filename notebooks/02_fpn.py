# %% [markdown]
# # 02 — Feature Pyramid Network (FPN)
#
# The ResNet body of [notebook 01](01_backbone.ipynb) gives four maps, C2..C5. C2 is sharp (stride 4)
# but has passed through only a few layers; C5 has passed through all of them but is coarse
# (stride 32). The Feature Pyramid Network turns them into five maps P2..P6 with the same number of
# channels, and it lets the deep levels pass on what they know to the sharp ones. The RPN and the RoI
# heads read from these maps and from nothing else.
#
# **You will learn**
# - the parts of FPN (Lin et al. 2017, Sec. 3 and Fig. 3): 1×1 laterals, a top-down path
#   (nearest-neighbour upsampling, then add), a 3×3 output conv on every level, and P6, which only the
#   RPN uses; and that the library computes exactly what torchvision's `FeaturePyramidNetwork` computes
# - why the top-down path upsamples to the finer map's exact size, not "×2" (a crash on odd sizes, run)
# - what the 3×3 output conv does to the blocky steps of nearest-neighbour upsampling, measured on the
#   trained model against a fixed blur: it spreads each step over three cells, as any blur would, and it
#   weights the fine lateral above the upsampled maps, which a blur (the same filter on every channel) does not
# - what the top-down path adds: how much wider an image region a P2 position draws on, measured with
#   and without the top-down path and the 3×3
#
# **Builds on:** [01 — Backbone](01_backbone.ipynb) (C2..C5, their strides 4..32, the side rule
# $n \mapsto \lceil n/2 \rceil$, and cell $i$ of a stride-$2^l$ map centred on pixel $i \cdot 2^l$)
#
# **Run time:** about 1–1.5 minutes on a 2-core CPU; the first notebook you run also trains the shared shapes
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
import math
from collections import OrderedDict

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.colors import PowerNorm
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from mrcnn_teach import fpn, poolers
from mrcnn_teach.datasets import ShapesDataset
from mrcnn_teach.notebook import print_shapes, setup, show_source
from mrcnn_teach.pretrained import trained_shapes_model
from mrcnn_teach.visualize import draw_fpn_diagram

setup()

# %% [markdown]
# ## 1. The idea: every level gets the deep features
#
# FPN (Lin et al. 2017, Sec. 3) builds the pyramid top-down. Each $C_l$ first goes through a 1×1 conv
# $L_l$, the *lateral*, which gives it the common width $d$. Then, starting from the coarsest level,
# each merged map is upsampled to the size of the next finer level and added to that level's lateral.
# A 3×3 conv on each merged map gives the output:
#
# $$M_5 = L_5(C_5), \qquad M_l = L_l(C_l) + \mathrm{Up}(M_{l+1})\ \ (l = 4, 3, 2), \qquad
#   P_l = \mathrm{Conv}_{3\times3}(M_l)\ \ (l = 2..5), \qquad P_6 = \mathrm{subsample}_{2}(P_5).$$
#
# $\mathrm{Up}$ is nearest-neighbour upsampling ("for simplicity", says the paper). None of these layers
# has a nonlinearity (the paper found they made little difference). $d$ is 256 in the paper and in
# `resnet50_fpn`, and 64 in the small `shapes_tiny` model. It is the same on every level because one RPN
# head and one set of RoI heads serve all levels (Sec. 3), so all maps must have the same width. One
# detail is left open by the paper: its text speaks of a 3×3 on each *merged* map, and $M_5$ merges
# nothing; the authors' Detectron code, torchvision and this library all give P5 its 3×3 as well.
#
# Here is the FPN of the trained shapes model. We expect four 1×1 laterals that take ResNet-18's widths
# 64, 128, 256, 512 to 64, and four 3×3 output convs, 64 → 64: one of each per level.

# %%
model = trained_shapes_model()  # shapes_tiny: ResNet-18 + FPN (d = 64), trained on the shapes data
backbone = model.backbone  # BackboneWithFPN: images -> [P2, P3, P4, P5, P6]
print(backbone.fpn)

# %% [markdown]
# The whole network as a diagram (after FPN Fig. 1(d) and Fig. 3): the bottom-up ResNet on the left, the
# merged maps $M_l$ in the middle, the outputs $P_l$ on the right. Follow the orange arrows: the top-down
# path carries the merged maps $M_l$ downwards, not the outputs $P_l$. The 3×3 convs are side branches.
# The arrows' "×2 up" is exact only when every side is a multiple of 32: the code upsamples to the finer
# map's size, which section 6 shows is not always "×2".

# %%
fig = draw_fpn_diagram(backbone.fpn.in_channels, backbone.fpn.out_channels)
fig.suptitle("The FPN of the shapes_tiny model (after FPN Figs. 1d and 3)")
plt.show()

# %% [markdown]
# ## 2. The forward pass, and torchvision's
#
# This is the code that runs. `merged` is $M_l$ and `outputs` collects $P_l$.

# %%
show_source(fpn.FPN.forward)

# %% [markdown]
# We run it on one held-out shapes image (`seed=1`; the model was trained on `seed=0`). The model's
# transform first normalises the image, resizes it (shorter side 128: a no-op here) and pads it to a
# multiple of 32; for our 128×128 images there is
# nothing to pad. We expect $C_l$ with $64 \cdot 2^{l-2}$ channels and side $128 / 2^l$, and every $P_l$
# with 64 channels: 32, 16, 8, 4 cells wide for P2..P5, and 2 for P6.

# %%
dataset = ShapesDataset(100, seed=1)  # held-out images
image, target = dataset[1]  # (3, 128, 128) in [0, 1]; a square, a circle and two triangles
batch, _, _ = model.transform([image])  # (1, 3, 128, 128), normalised
with torch.no_grad():
    C = backbone.body(batch)  # [C2, C3, C4, C5]
    P = backbone.fpn(C)  # [P2, P3, P4, P5, P6]
print_shapes(images=batch, C2=C[0], C3=C[1], C4=C[2], C5=C[3], P2=P[0], P3=P[1], P4=P[2], P5=P[3], P6=P[4])
B, H, W = batch.shape[0], batch.shape[-2], batch.shape[-1]
for level, C_l in zip(range(2, 6), C):
    assert C_l.shape == (B, 64 * 2 ** (level - 2), H // 2**level, W // 2**level), (level, C_l.shape)
for level, P_l in zip(range(2, 7), P):
    assert P_l.shape == (B, 64, H // 2**level, W // 2**level), (level, P_l.shape)

# %% [markdown]
# torchvision builds the same network as `torchvision.ops.FeaturePyramidNetwork` with
# `extra_blocks=LastLevelMaxPool()`, which is what its `resnet_fpn_backbone` passes by default. Its
# convs are named `inner_blocks.i.0` (our `lateral.i`) and `layer_blocks.i.0` (our `output.i`). We copy
# the trained weights into it and compare both on the image above and on C2..C5 of a 100×130 input,
# whose sides are not multiples of 32. We expect equality bit for bit: the same operations in the same
# order.

# %%
tv_fpn = FeaturePyramidNetwork(backbone.fpn.in_channels, backbone.fpn.out_channels, extra_blocks=LastLevelMaxPool())
names = {"lateral": "inner_blocks", "output": "layer_blocks"}
renamed = {}
for key, value in backbone.fpn.state_dict().items():
    block, i, param = key.split(".")  # e.g. lateral.0.weight
    renamed[f"{names[block]}.{i}.0.{param}"] = value  # e.g. inner_blocks.0.0.weight
tv_fpn.load_state_dict(renamed)  # strict: every tensor has its counterpart, and no tensor is left over
with torch.no_grad():
    C_odd = backbone.body(torch.rand(1, 3, 100, 130))  # [C2..C5] of an input whose sides are not multiples of 32
    P_odd = backbone.fpn(C_odd)  # [P2..P6]
    for ours, features in ((P, C), (P_odd, C_odd)):
        theirs = list(tv_fpn(OrderedDict((f"C{level}", c) for level, c in zip(range(2, 6), features))).values())
        assert len(theirs) == len(ours) == 5
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
print("torchvision's FeaturePyramidNetwork + LastLevelMaxPool: equal on all 5 levels, for 128x128 and 100x130")

# %% [markdown]
# ## 3. The pyramid of one image
#
# We draw each level as the length of its 64-dimensional feature vector at every position, rescaled
# so that each level runs from its smallest length (0) to its largest (1): one colour scale serves all.
# Every map is stretched over the 128×128 image, so the axes are image pixels throughout. The shapes are filled areas of colour, so we
# expect them to show as filled bright regions, not outlines: sharp in P2 (one cell per 4 pixels), then
# coarser on each level, until in P5 (4×4) one cell covers 32 pixels, about the size of a whole shape.

# %%
fig, axes = plt.subplots(1, 5, figsize=(15, 3.6), layout="constrained")
axes[0].imshow(image.permute(1, 2, 0))
axes[0].set_title("input image (3, 128, 128)")
for ax, level, P_l in zip(axes[1:], range(2, 6), P):
    strength = P_l[0].norm(dim=0)  # (h, w): length of each position's feature vector
    strength = (strength - strength.min()) / (strength.max() - strength.min())  # 0..1 on every level
    im = ax.imshow(strength, cmap="viridis", vmin=0, vmax=1, extent=(0, 128, 128, 0))
    ax.set_title(f"P{level}: {P_l.shape[-2]}×{P_l.shape[-1]}, stride {2**level}")
for ax in axes:
    ax.set_xlabel("x (image px)")
axes[0].set_ylabel("y (image px)")
fig.colorbar(im, ax=axes[1:].tolist(), shrink=0.85, label="feature-vector length\n(level's min = 0, max = 1)")
fig.suptitle("The pyramid P2..P5 of the trained FPN for one held-out image (P6 is P5's even cells)")
plt.show()

# %% [markdown]
# In P2 the shapes come out as filled regions, not outlines, as expected. From P3 on they are hard to
# make out: P3 is patchy, and P4 and P5 are mostly bright in the middle and dark at the corners, a
# pattern set more by the image's borders than by the shapes. In P2 the shapes
# are not all equally bright: a feature vector's length is not an objectness score, only a sign that
# something is there. What the RPN reads from these maps is learned by its own head (notebook 04).
#
# ## 4. P6 is for the RPN only
#
# FPN Sec. 4.1 adds one more level for the RPN. P6 is P5 subsampled with stride 2, so that the largest
# anchors (512 px in the paper) have a level of their own. The library writes it as a max pool with
# kernel 1 and stride 2, which keeps every other cell (torchvision's `LastLevelMaxPool` does the same, and
# the check above compared P6 too). So P6 should equal `P5[..., ::2, ::2]` exactly. The RoI heads pool
# from P2..P5 only (FPN Sec. 4.2).

# %%
P5, P6 = P[3], P[4]
assert P6.shape == (B, 64, math.ceil(P5.shape[-2] / 2), math.ceil(P5.shape[-1] / 2))
assert torch.equal(P6, P5[..., ::2, ::2])  # kernel-1 max pool = plain subsampling
print("P6 == P5[..., ::2, ::2]:", torch.equal(P6, P5[..., ::2, ::2]))
print("levels the RoI heads pool from:", poolers.NUM_POOLED_LEVELS, "(P2..P5)")

# %% [markdown]
# > **Common mistake:** "the RPN takes the pyramid [P2, P3, P4, P5]". Those are the levels the *RoI
# > heads* pool from. The RPN runs on five levels, one anchor size (or set of sizes) per level, and the
# > largest anchors sit on P6. The anchor generator is built for five levels and refuses four maps:

# %%
anchor_sizes = model.rpn.anchor_generator.sizes  # one tuple of sizes per level, P2..P6
print("anchor sizes per level:", dict(zip(["P2", "P3", "P4", "P5", "P6"], anchor_sizes)))
try:
    model.rpn.anchor_generator((H, W), [tuple(P_l.shape[-2:]) for P_l in P[:4]])  # P2..P5 only
except ValueError as err:
    print("ValueError:", err)

# %% [markdown]
# Dropping the last sizes instead would make the code run, and leave the model without anchors of the
# sizes printed for P6: the largest objects would be left to anchors half their size.
#
# ## 5. The size of each level, for any input
#
# [Notebook 01](01_backbone.ipynb) (section 3) showed that each stride-2 layer maps a side $n$ to
# $\lceil n/2 \rceil$, so C2..C5 of our 100×130 input are 25×33, 13×17, 7×9 and 4×5. The FPN keeps each
# level's size, and P6 halves P5 once more, rounding up. We expect P2..P6 of sides
# $\lceil n / 2^l \rceil$.

# %%
# NBVAL_CHECK_OUTPUT
for level, P_l in zip(range(2, 7), P_odd):
    print(f"P{level}: {tuple(P_l.shape)}")
assert [tuple(p.shape[-2:]) for p in P_odd] == [(math.ceil(100 / 2**lv), math.ceil(130 / 2**lv)) for lv in range(2, 7)]

# %% [markdown]
# Inside Mask R-CNN, the transform pads every batch to a multiple of 32 (`size_divisible=32` in
# `mrcnn_teach/transform.py`), so P2..P5 are exactly $H/4 .. H/32$ there. P6 is $\lceil H/64 \rceil$ and is
# still uneven for common sizes: an 800-pixel side gives P5 = 25 and P6 = 13. The FPN module itself does
# not know about the padding, and it should not have to.
#
# ## 6. Upsample to the finer map's size, not "×2"
#
# > **Common mistake:** writing the top-down step as `F.interpolate(merged, scale_factor=2)`. That is
# > right only when each level is exactly twice the next. For our 100×130 input, C5's lateral is 4×5 and
# > doubles to 8×10, but C4's lateral is 7×9, and the addition cannot line them up. Below is that rule,
# > with the trained model's own laterals so that only the upsampling differs. We expect a `RuntimeError`.
# > PyTorch compares sizes from the last dimension backwards, so it names the widths first, 9 against 10;
# > the heights, 7 against 8, are just as wrong.

# %%
def merge_times_two(laterals):
    """The "x2" top-down rule: M_l = L_l(C_l) + upsample(M_{l+1}, x2). laterals = [L2, L3, L4, L5]."""
    merged = [laterals[-1]]  # M5
    for lateral in reversed(laterals[:-1]):
        merged.insert(0, lateral + F.interpolate(merged[0], scale_factor=2, mode="nearest"))  # M_l
    return merged  # [M2, M3, M4, M5]


with torch.no_grad():
    laterals_odd = [conv(c) for conv, c in zip(backbone.fpn.lateral, C_odd)]  # [(1, 64, h_l, w_l)]
try:
    merge_times_two(laterals_odd)
except RuntimeError as err:
    print("RuntimeError:", err)

# %% [markdown]
# The library upsamples to the lateral's exact size instead: `F.interpolate(merged, size=lateral.shape[-2:])`.
# Nearest-neighbour resizing from 4 to 7 rows reads source row $\lfloor i \cdot 4/7 \rfloor$ for output
# row $i$. On a 4-row ramp we expect `0 0 1 1 2 2 3`: rows 0, 1 and 2 are each copied twice and the last
# row once, which is what "×2" gives with its last row cut off. (The second line below doubles both
# sides of the (4, 1) ramp, so its 16 values are 8 rows of two equal columns: read every other value,
# `0 0 1 1 2 2 3 3`, 8 rows where the lateral has 7.)

# %%
# NBVAL_CHECK_OUTPUT
ramp = torch.arange(4.0).reshape(1, 1, 4, 1)  # (1, 1, 4, 1): rows 0, 1, 2, 3
print("size=(7, 1):     ", F.interpolate(ramp, size=(7, 1), mode="nearest").flatten().tolist())
print("scale_factor=2:  ", F.interpolate(ramp, scale_factor=2, mode="nearest").flatten().tolist())

# %% [markdown]
# So coarse cell $i$ covers fine cells $2i$ and $2i+1$ on every size, and the fine cell that the cut
# copy would have covered lies beyond the input's edge. When every side is a multiple of 32 the two rules
# are the same operation. On our 128×128 image the "×2" merged maps should equal, bit for bit, the maps
# the library hands to its 3×3 convs. `fpn.merged_maps` catches those with forward pre-hooks on the
# output convs (a pre-hook sees a module's input before it runs).

# %%
M = fpn.merged_maps(backbone.fpn, C)  # [M2, M3, M4, M5] of the 128x128 image, as FPN.forward made them
with torch.no_grad():
    M_times_two = merge_times_two([conv(c) for conv, c in zip(backbone.fpn.lateral, C)])
for level, (m_lib, m_x2) in zip(range(2, 6), zip(M, M_times_two)):
    assert m_lib.shape == m_x2.shape == (B, 64, H // 2**level, W // 2**level)
    assert torch.equal(m_lib, m_x2)
print("128x128: the x2 rule's merged maps equal the library's on all four levels")

# %% [markdown]
# ## 7. The 3×3 output conv and the steps of upsampling
#
# > **Common mistake:** an FPN with the 3×3 on P3 and P4 only, handing back P2 $= M_2$ and
# > P5 $= L_5(C_5)$ as they are. FPN Sec. 3 appends the 3×3 to every merged map, "to reduce the aliasing
# > effect of upsampling" (here: the blocky steps that nearest-neighbour copies leave at the edges of
# > each coarse cell's block), and torchvision and the library also give P5 one. What would that variant's
# > P2 carry?
#
# The top-down path adds unsmoothed maps, so unrolling it gives
#
# $$M_2 = L_2(C_2) + \mathrm{Up}_{\times2} L_3(C_3) + \mathrm{Up}_{\times4} L_4(C_4) + \mathrm{Up}_{\times8} L_5(C_5).$$
#
# Nearest-neighbour upsampling by a factor $b$ copies each value into a $b\times b$ block. So the last
# three terms are constant on 2×2, 4×4 and 8×8 blocks and jump at the block edges. In the variant, P2
# *is* $M_2$, jumps included. The library's P2 is $\mathrm{Conv}_{3\times3}(M_2)$. First we check the
# unrolled sum on the trained model: the four terms, each resized to P2's size, must add up to the $M_2$
# that `merged_maps` caught.

# %%
with torch.no_grad():
    laterals = [conv(c) for conv, c in zip(backbone.fpn.lateral, C)]  # [L2..L5], (1, 64, h_l, w_l)
terms = [F.interpolate(lat, size=M[0].shape[-2:], mode="nearest") for lat in laterals]  # 4 x (1, 64, 32, 32)
assert all(t.shape == M[0].shape == (B, 64, 32, 32) for t in terms)
assert torch.allclose(sum(terms), M[0], atol=1e-5)
assert torch.equal(terms[3][..., 0:8, 0:8], terms[3][..., :1, :1].expand(-1, -1, 8, 8))  # one C5 cell = 8x8 block
print("M2 = L2 + Up2(L3) + Up4(L4) + Up8(L5): max error", f"{(sum(terms) - M[0]).abs().max().item():.1e}")

# %% [markdown]
# How would we know what the 3×3 does to the jumps? A first measure: take the squared difference between
# each pair of neighbouring columns, summed over rows and channels, and ask what share of it sits on the
# pairs that straddle a $b$-cell block edge. We leave out two columns and rows at each border: the
# conv's zero padding makes steps of its own there. But any blur lowers this share. A fixed
# $[1,1,1]/3$ filter turns a unit step into three steps of $1/3$: the edge pair then holds a third of
# the change energy instead of all of it, and the step's full height is intact. So we measure three
# maps over 8 held-out images: $M_2$, a fixed 3×3 box blur of $M_2$ (nothing learned), and the trained
# P2. If the 3×3 did more than blur, P2 should stand apart from the box blur.

# %%
def box_blur(maps):
    """A fixed 3x3 mean filter on every channel of (B, d, h, w): nothing learned."""
    return F.avg_pool2d(F.pad(maps, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


def edge_share(maps, block):
    """Share of the interior column-difference energy of (B, d, h, w) that sits on pairs straddling a block edge."""
    energy = (maps[..., 2:-2, 1:] - maps[..., 2:-2, :-1]).pow(2).sum(dim=(0, 1, 2))  # (w-1,): pair (j-1, j)
    j = torch.arange(1, maps.shape[-1])  # (w-1,)
    inner = (j >= 3) & (j <= maps.shape[-1] - 3)  # pairs away from the zero-padded border
    on_edge = (j % block == 0) & inner
    return (energy[on_edge].sum() / energy[inner].sum()).item(), (on_edge.sum() / inner.sum()).item()  # share, fair share


# %%
batch8, _, _ = model.transform([dataset[i][0] for i in range(8)])  # (8, 3, 128, 128)
with torch.no_grad():
    C8 = backbone.body(batch8)
    P8 = backbone.fpn(C8)
M8 = fpn.merged_maps(backbone.fpn, C8)
assert M8[0].shape == P8[0].shape == (8, 64, 32, 32)
print("block  fair share   M2 (no 3x3)   box blur of M2   P2 (trained 3x3)")
shares = {}
for block in (2, 4, 8):
    (m2, fair), (blur, _), (p2, _) = edge_share(M8[0], block), edge_share(box_blur(M8[0]), block), edge_share(P8[0], block)
    shares[block] = (m2, blur, p2)
    print(f"{block:>5}  {fair:>10.1%}  {m2:>12.1%}  {blur:>15.1%}  {p2:>17.1%}")
assert all(m2 > 1.5 * blur for m2, blur, _ in shares.values())  # the steps are there in M2 ...
assert all(abs(p2 - blur) < 0.05 for _, blur, p2 in shares.values())  # ... and P2 scores like a plain blur

# %% [markdown]
# $M_2$ puts far more than the fair share of its changes on the block edges: those are the steps. But P2
# and the box blur score alike on every block size, so this measure cannot tell the trained conv from a
# filter that learned nothing. It shows that the changes were spread out, not that the steps are gone.
#
# Let us look at one step itself. The FPN has no nonlinearity, so
# $P_2 = \mathrm{Conv}(L_2) + \mathrm{Conv}(\mathrm{Up}_{\times2}L_3) + \mathrm{Conv}(\mathrm{Up}_{\times4}L_4) + \mathrm{Conv}(\mathrm{Up}_{\times8}L_5) + \text{bias}$,
# and we can follow the C5 term alone through the conv: its part of P2 is exactly
# $\mathrm{Conv}(\mathrm{Up}_{\times8}L_5)$. (A row of the whole $M_2$ would mix it with everything else: at column 16 every upsampled term has a
# block edge, and $L_2(C_2)$ changes at every cell.) We take the row of the 8 images where the C5 term
# jumps most across the 8-cell edge between columns 15 and 16, and plot each map's change along the
# direction of its jump (a 64-vector), as a share of that map's whole jump. We expect the step to jump
# within one pair of cells, the box blur to spread it over three, and the trained 3×3 to do something
# of its own.

# %%
conv2 = backbone.fpn.output[0]  # P2's 3x3 conv


def no_bias(maps):
    """P2's 3x3 conv without its bias: the linear part, which we can apply to each term of M2 on its own."""
    return F.conv2d(maps, conv2.weight, padding=1)


with torch.no_grad():
    step = F.interpolate(backbone.fpn.lateral[3](C8[3]), size=(32, 32), mode="nearest")  # Up8 L5(C5), (8, 64, 32, 32)
    jumps = (step[:, :, 4::8, 16] - step[:, :, 4::8, 15]).norm(dim=1)  # (8, 4): image, block row
    n, block_row = divmod(int(jumps.argmax()), 4)
    row, cols = 8 * block_row + 4, torch.arange(11, 22)  # a row in the middle of its blocks


def along_jump(maps, of):
    """Change of maps[n, :, row, cols] from its first value, along the jump of `of` over the same cells."""
    v, u = maps[n, :, row, cols], of[n, :, row, cols]  # (64, 11) each
    jump = u[:, -1] - u[:, 0]  # (64,)
    return (jump @ (v - v[:, :1])) / jump.dot(jump)  # (11,): 0 on the left, 1 where `of` has fully jumped


with torch.no_grad():
    alone = {"Up×8 L5(C5), the step": along_jump(step, step), "box blur of it": along_jump(box_blur(step), box_blur(step)),
             "trained 3×3 of it": along_jump(no_bias(step), no_bias(step))}  # name -> (11,) profile
    height = (no_bias(step)[n, :, row, 21] - no_bias(step)[n, :, row, 11]).norm() / jumps[n, block_row]

# %%
fig, ax = plt.subplots(figsize=(7.5, 4.2), layout="constrained")
for (name, y), colour, marker, ls, size in zip(alone.items(), ("C0", "C7", "C2"), ("o", "s", "^"), ("-", "--", "-"), (6, 9, 6)):
    ax.plot(cols, y, marker=marker, color=colour, ls=ls, markersize=size, label=name)
ax.axvline(15.5, color="0.5", ls=":", label="8-cell block edge")
ax.set_xlabel("column of P2 (1 column = 4 image px)")
ax.set_ylabel("change along the term's jump\n(1 = its whole jump)")
ax.legend(loc="upper left")
ax.set_title(f"The C5 term of P2 across an 8-cell edge (image {n}, P2 row {row}):\n"
             "the 3×3 turns a one-cell step into a three-cell ramp, as a box blur does")
plt.show()

# %%
def ramp(profile):
    """The jumps of a profile on the pairs (14, 15), (15, 16), (16, 17), and how many pairs jump at all."""
    pairs = profile.diff()  # (10,): jump on (c, c + 1) for c = 11..20
    return pairs[3:6], int((pairs.abs() > 0.02).sum())


(trained_jumps, trained_pairs), (box_jumps, box_pairs) = ramp(alone["trained 3×3 of it"]), ramp(alone["box blur of it"])
assert ramp(alone["Up×8 L5(C5), the step"])[1] == 1 and trained_pairs == box_pairs == 3  # one jump -> three
print(f"The C5 step jumps on 1 pair of cells; after the box blur on {box_pairs} "
      f"({', '.join(f'{v:.2f}' for v in box_jumps)} of the jump), after the trained 3x3 on {trained_pairs} "
      f"({', '.join(f'{v:.2f}' for v in trained_jumps)}). The trained 3x3 keeps {height:.2f}x the step's height.")

# %% [markdown]
# So the trained 3×3 does to the C5 step what a blur does: a ramp over three pairs of cells instead of
# one jump, with the shares and the height printed above. The step is moved, not removed: P2 still
# changes by the whole (conv-mapped) height of the step, only over three cells. A 3×3 conv cannot do
# otherwise: it sees three cells, and across an 8-cell step it could only shrink the step by mapping the
# jump's 64-vector near zero, which would also erase C5's information in those channels
# (Exercise 2 works out exactly what any 3×3 does to a step).
#
# Does the trained conv do anything the blur does not? The four terms of $M_2$ come from four different
# 1×1 laterals, so they live in different channel directions, and a conv that mixes channels can weight
# them differently. We measure each term's share of the change energy (as above, interior pairs), before
# the conv, after the box blur, and after the trained conv.

# %%
def change_energy(maps):
    """Interior column-difference energy of (B, d, h, w), as in edge_share."""
    return (maps[..., 2:-2, 3:-2] - maps[..., 2:-2, 2:-3]).pow(2).sum().item()


with torch.no_grad():
    laterals8 = [lat(c) for lat, c in zip(backbone.fpn.lateral, C8)]  # [L2..L5] of the 8 images
    terms8 = [F.interpolate(lat, size=(32, 32), mode="nearest") for lat in laterals8]  # 4 x (8, 64, 32, 32)
    table = {name: [change_energy(f(t)) for t in terms8]
             for name, f in [("M2", lambda t: t), ("box", box_blur), ("P2", no_bias)]}
print("term           share in M2   after box blur   after trained 3x3   gain: box   gain: trained 3x3")
for k, name in enumerate(["L2(C2)", "Up×2 L3(C3)", "Up×4 L4(C4)", "Up×8 L5(C5)"]):
    m2, box, p2 = (table[key][k] / sum(table[key]) for key in ("M2", "box", "P2"))
    print(f"{name:<13}  {m2:>10.1%}  {box:>15.1%}  {p2:>18.1%}  {table['box'][k] / table['M2'][k]:>9.2f}x"
          f"  {table['P2'][k] / table['M2'][k]:>17.2f}x")
gain_L2, gain_L5 = (table["P2"][k] / table["M2"][k] for k in (0, 3))
assert gain_L2 > 2 * gain_L5  # the trained conv favours the fine lateral ...
assert table["box"][0] / table["M2"][0] < 2 * table["box"][3] / table["M2"][3]  # ... a blur much less

# %% [markdown]
# The box blur damps every term's changes by a similar factor (a lone step keeps a third of its energy,
# as worked out above), so the shares move only a little. The trained conv moves them much further: it
# multiplies the change energy of the fine lateral $L_2(C_2)$ about four times as much as that of the C5
# term (4.83x against 1.20x in the "gain" columns), so in P2 the blocky terms carry a smaller share of
# what changes from cell to cell. The box blur does not do that: it treats every channel alike, so it can only weight the
# terms by how their changes are laid out in space. Is the trained conv's re-weighting its spatial
# pattern, or its mixing of channels? Adding up the kernel's 9 taps gives a 64×64 matrix that mixes channels and ignores space. We
# apply it to the changes of $L_2(C_2)$ (neighbour differences) and to the jumps of the C5 term.

# %%
W_sum = conv2.weight.sum(dim=(2, 3))  # (64, 64): the 3x3 with its 9 taps added up, channels only
L2_changes = laterals8[0].diff(dim=-1).movedim(1, -1).reshape(-1, 64)  # (8*32*31, 64) neighbour differences
C5_jumps = laterals8[3].diff(dim=-1).movedim(1, -1).reshape(-1, 64)  # (8*4*3, 64): Up8 L5(C5)'s jumps
channel_gain = [((v @ W_sum.T).pow(2).sum() / v.pow(2).sum()).item() for v in (L2_changes, C5_jumps)]
channel_ratio, whole_ratio = channel_gain[0] / channel_gain[1], gain_L2 / gain_L5
print(f"channels only: L2's changes x{channel_gain[0]:.2f}, C5's jumps x{channel_gain[1]:.2f}, ratio "
      f"{channel_ratio:.1f} (the whole 3x3, from the table: {whole_ratio:.1f})")
assert 1.5 < channel_ratio < whole_ratio  # the channel mix alone favours L2, but less than the whole conv

# %% [markdown]
# The channel mix alone already favours the changes of $L_2(C_2)$ over C5's jumps, by less than the
# whole conv does (line above). So much of the re-weighting is in *which channel directions* the conv
# amplifies: the four laterals write their terms into different directions of the 64 channels, and
# the trained conv has learned to amplify the fine lateral's. The rest comes from how the kernel's taps
# are laid out in space, which treats a lone step differently from changes at every cell.
#
# What the 3×3 really does, on this model: it spreads each upsampling step over three cells, as any
# blur would, and it re-weights the four terms, the fine lateral up and the upsampled maps down. It does
# not remove the steps. Whether that "reduces aliasing" enough to matter for detection would take two
# training runs, with and without it, which this notebook does not make. The variant without the 3×3
# on P2 keeps the raw steps and gets no re-weighting; its P5 is a bare 1×1 projection of C5, a
# different kind of feature from its neighbours, fed to the same shared RPN head.
#
# ## 8. What the top-down path adds: context
#
# Why merge at all? $L_2(C_2)$ alone is what P2 would be without the top-down path. Its values depend
# mostly on a small patch of the image. P2 also receives $\mathrm{Up}\,L_5(C_5)$, which was computed
# from a much wider region. We can measure how wide with the *effective receptive field* (Luo et al.
# 2016): take one position of a map, sum its features, and backpropagate to the input; the gradient's
# magnitude per pixel says how much that pixel moves this position. (GroupNorm in the shapes model mixes
# statistics over the whole image, so every pixel has a small effect; what matters is where the bulk
# lies.) We expect $L_2(C_2)$'s gradient to be concentrated near the position, P2's to reach clearly
# further, and P5's to spread over most of the image.

# %%
rows, cols_px = torch.meshgrid(torch.arange(128.0) + 0.5, torch.arange(128.0) + 0.5, indexing="ij")  # pixel centres
lateral, output = backbone.fpn.lateral, backbone.fpn.output
MAPS = {"L2(C2)": lambda C_x: lateral[0](C_x[0]),  # P2 without the top-down path and without the 3x3
        "3x3 of L2(C2)": lambda C_x: output[0](lateral[0](C_x[0])),  # without the top-down path
        "M2": lambda C_x: sum(F.interpolate(lat(c), size=C_x[0].shape[-2:], mode="nearest")
                              for lat, c in zip(lateral, C_x)),  # without the 3x3 (the unrolled sum above)
        **{f"P{lv}": (lambda C_x, lv=lv: backbone.fpn(C_x)[lv - 2]) for lv in range(2, 6)}}


def input_gradient(which, images, cell=None):
    """|d (sum of the features at one position of map `which`) / d image|, summed over RGB: (128, 128).
    cell: (row, col) of that position; the map's centre cell if None."""
    x = images.clone().requires_grad_(True)  # (1, 3, 128, 128)
    out = MAPS[which](backbone.body(x))  # (1, d, h, w)
    cy, cx = cell if cell is not None else (out.shape[-2] // 2, out.shape[-1] // 2)
    out[0, :, cy, cx].sum().backward()
    return x.grad[0].abs().sum(0)  # (128, 128)


# %%
def half_mass_radius(grad):
    """Half-side (px) of the smallest square around the gradient's centre of mass that holds 50% of it,
    and that centre of mass (y, x)."""
    weights = grad / grad.sum()  # (128, 128)
    cy, cx = (weights * rows).sum(), (weights * cols_px).sum()
    dist = torch.maximum((rows - cy).abs(), (cols_px - cx).abs()).flatten()  # (128*128,) square distance
    order = dist.argsort()
    inside = weights.flatten()[order].cumsum(0)  # mass within the first k pixels
    return dist[order][int((inside >= 0.5).nonzero()[0])].item(), cy.item(), cx.item()


fig, axes = plt.subplots(1, 3, figsize=(12, 4.2), layout="constrained")
for ax, which in zip(axes, ["L2(C2)", "P2", "P5"]):
    grad = input_gradient(which, batch)  # (128, 128)
    radius, cy, cx = half_mass_radius(grad)
    im = ax.imshow(grad / grad.max(), cmap="magma", norm=PowerNorm(0.5, vmin=0, vmax=1))
    ax.add_patch(plt.Rectangle((cx - radius, cy - radius), 2 * radius, 2 * radius, fill=False, color="cyan"))
    ax.set_title(f"{which}: half the gradient\nwithin ±{radius:.0f} px of the centre")
    ax.set_xlabel("x (image px)")
axes[0].set_ylabel("y (image px)")
fig.colorbar(im, ax=axes.tolist(), shrink=0.85, label="|gradient| / max (square-root scale)")
fig.suptitle("Which input pixels move the centre position of a map (cyan: the square holding half the gradient)")
plt.show()

# %% [markdown]
# One image is noisy, so we average over the 8 held-out images. Two controls separate the two things
# that P2 adds to $L_2(C_2)$: "3x3 of L2(C2)" is P2 without the top-down path, and $M_2$ is P2 without
# its 3×3. The 3×3 alone widens the theoretical field by only ±4 pixels (one P2 cell on each side), so we
# expect it to change little, and the top-down path to do most of the widening.

# %%
radii = {}
for which in MAPS:  # (P6's cells are P5's even cells)
    radii[which] = sum(half_mass_radius(input_gradient(which, batch8[i:i + 1]))[0] for i in range(8)) / 8
print("map              50% radius (px), mean of 8 images")
for which, radius in radii.items():
    print(f"{which:<16} {radius:>6.1f}")
assert radii["M2"] > 1.5 * radii["L2(C2)"] and radii["P5"] > radii["P4"] > radii["P3"] > radii["P2"]
assert abs(radii["3x3 of L2(C2)"] - radii["L2(C2)"]) < 0.2 * radii["L2(C2)"] < radii["P2"] - radii["L2(C2)"]
assert radii["P2"] < radii["M2"]  # the 3x3 pulls P2 back towards its fine lateral

# %%
print(f"The 3x3 alone: {radii['L2(C2)']:.1f} -> {radii['3x3 of L2(C2)']:.1f} px. The top-down path alone: "
      f"{radii['L2(C2)']:.1f} -> {radii['M2']:.1f} px ({radii['M2'] / radii['L2(C2)']:.1f}x). Both (P2): "
      f"{radii['P2']:.1f} px ({radii['P2'] / radii['L2(C2)']:.1f}x L2(C2), {radii['P2'] / radii['3x3 of L2(C2)']:.1f}x "
      f"the 3x3 of L2(C2)).")

# %% [markdown]
# The widening is the top-down path's doing: the 3×3 on its own moves the radius little, while adding
# the upsampled deep terms multiplies it (line above). P2 reaches noticeably less far than $M_2$ (15.2
# against 19.5 px): its 3×3
# weights the fine lateral up and the deep terms down, as section 7 measured. So P2 keeps C2's 4-pixel
# grid, which small objects need, and gains context from the deep levels. That is the point of FPN
# (Sec. 3): every level of the pyramid carries strong features.
#
# Where is a position's field *centred*? Notebook 01 (section 5) worked it out from the layers: every
# stride-2 layer of ResNet has padding $\lfloor k/2 \rfloor$ and maps cell $i$ to input cell $2i$, so cell
# $i$ of a stride-$2^l$ map is centred on pixel $i \cdot 2^l$, and the 1×1 laterals and padded 3×3 convs
# keep that centre. Nearest upsampling does not quite keep it (fine cell $2i+1$ gets coarse cell $i$,
# centred one fine cell away), so the rule is exact for P5 and for the lateral term of P2..P4. The
# gradient's centre of mass is a poor probe of it. For the centre cell of every
# map, $i \cdot 2^l = 64$ is also the image centre, so the probe cannot tell the rule from a pull
# towards the middle. An off-centre cell can: P5's cell (1, 1) is centred on pixel 32 by the rule
# (coordinate 32.5 in the pixel-centre coordinates the centre of mass uses), and a
# pull towards the middle would put its gradient's mass nearer 64.

# %%
centres = torch.tensor([half_mass_radius(input_gradient("P5", batch8[i:i + 1], cell=(1, 1)))[1:] for i in range(8)])
cy, cx = centres.mean(0).tolist()  # mean centre of mass over the 8 images
print(f"P5 cell (1, 1): centred on pixel 32 (rule i * 2^l); its gradient's centre of mass: ({cy:.1f}, {cx:.1f})")
assert cy > 32 + 5 and cx > 32 + 5  # pulled towards the image centre

# %% [markdown]
# The centre of mass is pulled well towards the image centre. P5's effective field is wide (its radius
# in the table above), so the image's top and left edges cut off the part of it beyond pixel 0, and the
# gradient is larger where the image has structure, which lies mostly away from the borders. So the
# gradient's centre of mass says where the image moves a cell, not where its field is centred; the
# centre is a property of the layers. [Notebook 03](03_anchors.ipynb) centres its anchors on the points
# $i \cdot 2^l$.
#
# ## Summary
#
# - FPN maps C2..C5 to P2..P5 with $d$ channels each: a 1×1 lateral per level, a top-down path that
#   upsamples the coarser merged map (nearest neighbour) and adds it to the lateral, and a 3×3 conv on
#   **every** level. P6 is P5 subsampled with stride 2 and is used only by the RPN; the RoI heads pool
#   from P2..P5. The library's FPN equals torchvision's `FeaturePyramidNetwork` with `LastLevelMaxPool`,
#   bit for bit.
# - The top-down path upsamples to the finer map's exact size. "×2" gives 8 rows where a 100-row
#   input's lateral has 7, and crashes; on multiples of 32 the two rules are the same operation.
# - Nearest-neighbour upsampling leaves steps at block edges. The 3×3 does not remove them: it spreads
#   each over three cells, as a fixed box blur does (and a share-of-change measure cannot tell the two
#   apart). What the trained 3×3 adds is a re-weighting of the terms, the fine lateral up and the
#   upsampled maps down, in good part by mixing channels; a blur, the same filter on every channel,
#   does not. Whether this helps detection would take a training run without it.
# - The top-down path, not the 3×3, widens what a P2 position sees (the effective receptive fields of
#   section 8), at the same 4-pixel grid; P2's 3×3 pulls it back part of the way, towards the fine
#   lateral. The field's centre is pixel $i \cdot 2^l$, fixed by the layers (exactly for P5); the
#   gradient's centre of mass drifts towards the image's content.
#
# ## Exercises
#
# Worked solutions (for teachers) are in `solutions/02_fpn.py`.
#
# ### Exercise 1 — Predict · about 10 min: how far one C5 cell reaches
#
# Add 1 to every channel of one cell of C5 and run the FPN again. Which cells of P2..P6 change? Work it
# out on paper from the equations of section 1 (mind what the top-down path carries downwards, and what
# the 3×3 and P6's subsampling do at the map's border), then write `changed_cells(row, col, h5, w5)`: for
# C5 cell (`row`, `col`) of an `h5` × `w5` C5, with every finer level exactly twice as large, return
# `{level: (first_row, last_row, first_col, last_col)}` for levels 2..6, inclusive ranges in that level's
# cells. The check perturbs a real FPN on cases of its own, corners included. Start with C5 cell (1, 2)
# of a 4×4 C5 (our 128×128 images) on paper.
#
# *Hint:* follow the change level by level: $M_5$, then $P_5$ and $P_6$; $M_4$, then $P_4$; and so on.

# %%
def changed_cells(row, col, h5, w5):
    raise NotImplementedError  # your code here


# %%
from mrcnn_teach.exercises.nb02 import check_changed_cells, check_step_jumps, check_top_down

check_changed_cells(changed_cells);

# %% [markdown]
# ### Exercise 2 — Derive · about 15 min: what any 3×3 does to a step
#
# Section 7 saw the trained 3×3 turn one step into a ramp over three pairs of cells. Show that every 3×3
# conv spreads a step over at most three pairs of cells, and with what heights. Take a map that is $a$
# (a vector of $d_{in}$ channels) on columns $< j$ and
# $a + \delta$ on columns $\ge j$, the same in every row, and a conv `F.conv2d(x, weight, bias, padding=1)`
# with `weight` of shape $(d_{out}, d_{in}, 3, 3)$. Away from the border, which neighbour differences of
# the output are not zero, and what are they? Write `step_jumps(weight, delta)` that returns them from the
# weight alone (no convolution), as a $(3, d_{out})$ tensor: the jumps on the pairs $(j-2, j-1)$,
# $(j-1, j)$ and $(j, j+1)$. The check runs `F.conv2d` on steps of its own. (The three jumps add up to
# the step's whole height after the conv; your formula says when a 3×3 can make it vanish.)
#
# *Hint:* `F.conv2d` does not flip its kernel (it is a cross-correlation). The map is the same in every
# row, so the kernel's three rows act as one.

# %%
def step_jumps(weight, delta):
    raise NotImplementedError  # your code here


# %%
check_step_jumps(step_jumps);

# %% [markdown]
# ### Exercise 3 — Debug · about 15 min: a top-down path that is right on 128×128 images
#
# A colleague writes the top-down path without `F.interpolate`: each coarser merged map is doubled with
# `repeat_interleave` and cut to the lateral's size. It gives the library's merged maps on every 128×128
# image, and on a 100×130 image it runs without an error. Find what goes wrong there, and write
# `top_down(laterals)` that returns the library's $[M_2, M_3, M_4, M_5]$ on every size. The check compares
# it with `fpn.merged_maps` on odd and even sizes. Keep `repeat_interleave` (no `F.interpolate`: that
# is the library's own line, section 2) and fix the cut.
#
# *Hint:* on a 7-row lateral and a 4-row coarser map, write down which coarse row each of the 7 rows
# receives, in the library (section 6) and in the buggy copy.

# %%
def buggy_top_down(laterals):
    """[L2, L3, L4, L5] -> [M2, M3, M4, M5]: M5 = L5, M_l = L_l + (M_{l+1} doubled, cut to L_l's size)."""
    merged = [laterals[-1]]  # M5
    for lateral in reversed(laterals[:-1]):
        h, w = lateral.shape[-2:]
        up = merged[0].repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)  # (B, d, 2h', 2w')
        merged.insert(0, lateral + up[..., -h:, -w:])  # (B, d, h, w)
    return merged  # [M2, M3, M4, M5]


# %%
def top_down(laterals):
    raise NotImplementedError  # your code here


# %%
check_top_down(top_down);

# %% [markdown]
# Next: [03 — Anchors](03_anchors.ipynb)
