# %% [markdown]
# # 02 — Feature Pyramid Network (FPN)
#
# The ResNet body of [notebook 01](01_backbone.ipynb) gives four maps, C2..C5. C2 is sharp (stride 4)
# but has passed through only a few layers; C5 has passed through all of them but is coarse
# (stride 32). The Feature Pyramid Network turns them into five maps P2..P6 with the same number of
# channels, and it lets the deep levels pass on what they know to the sharp ones. The RPN and the RoI heads
# read from these maps and from nothing else.
#
# **You will learn**
# - the three parts of FPN: 1×1 lateral convs, a top-down path (nearest-neighbour upsampling, then add)
#   and a 3×3 output conv on every level, plus P6, which only the RPN uses
# - the size of every level for any input, and why "upsample ×2" fails when a side is not a multiple of 32
# - why every merged map gets its 3×3 conv, measured on the trained model: nearest upsampling leaves
#   steps at block edges, and the 3×3 removes them
# - what the top-down path adds: a P2 position draws on a wider part of the image than C2 alone
#
# **Builds on:** [01 — Backbone](01_backbone.ipynb) (C2..C5 and their strides 4, 8, 16, 32)
#
# **Run time:** about 10 s on a 2-core CPU; the first notebook you run also trains the shared shapes
# model once, about 3 minutes; later notebooks load it in a second.

# %%
import math

import matplotlib.pyplot as plt
import torch
from matplotlib.colors import PowerNorm
import torch.nn.functional as F

from mrcnn_teach import fpn, poolers
from mrcnn_teach.datasets import ShapesDataset
from mrcnn_teach.notebook import print_shapes, setup, show_source
from mrcnn_teach.pretrained import trained_shapes_model

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
# $\mathrm{Up}$ is nearest-neighbour upsampling (the paper keeps it simple on purpose). The paper uses no
# nonlinearity in any of these layers. $d$ is 256 in the paper and in `resnet50_fpn`, and 64 in the
# small `shapes_tiny` model. It is the same on every level because one RPN head and one set of RoI
# heads serve all levels (FPN Sec. 3), so they must all see maps of the same width.
#
# Here is the FPN of the trained shapes model. We expect four 1×1 laterals that take ResNet-18's widths
# 64, 128, 256, 512 to 64, and four 3×3 output convs, 64 → 64: one of each per level.

# %%
model = trained_shapes_model()  # shapes_tiny: ResNet-18 + FPN (d = 64), trained on the shapes data
backbone = model.backbone  # BackboneWithFPN: images -> [P2, P3, P4, P5, P6]
print(backbone.fpn)

# %% [markdown]
# ## 2. The forward pass
#
# This is the code that runs. `merged` is $M_l$ and `outputs` collects $P_l$. The top-down path
# carries the merged maps $M_l$ downwards, not the smoothed $P_l$. The 3×3 convs are side outputs.

# %%
show_source(fpn.FPN.forward)

# %% [markdown]
# We run it on one held-out shapes image (`seed=1`; the model was trained on `seed=0`). The model's
# transform first normalises the image and pads it to a multiple of 32; for our 128×128 images there is
# nothing to pad. We expect $C_l$ with $64 \cdot 2^{l-2}$ channels and side $128 / 2^l$, and every $P_l$
# with 64 channels: 32, 16, 8, 4 pixels wide for P2..P5, and 2 for P6.

# %%
dataset = ShapesDataset(100, seed=1)  # held-out images
image, target = dataset[1]  # (3, 128, 128) in [0, 1]; a square, a circle and two triangles
batch, _, _ = model.transform([image])  # (1, 3, 128, 128), normalised
with torch.no_grad():
    C = backbone.body(batch)  # [C2, C3, C4, C5]
    P = backbone.fpn(C)  # [P2, P3, P4, P5, P6]
print_shapes(images=batch, C2=C[0], C3=C[1], C4=C[2], C5=C[3], P2=P[0], P3=P[1], P4=P[2], P5=P[3], P6=P[4])

# %%
B, H, W = batch.shape[0], batch.shape[-2], batch.shape[-1]
for level, C_l in zip(range(2, 6), C):
    assert C_l.shape == (B, 64 * 2 ** (level - 2), H // 2**level, W // 2**level), (level, C_l.shape)
for level, P_l in zip(range(2, 7), P):
    assert P_l.shape == (B, 64, H // 2**level, W // 2**level), (level, P_l.shape)

# %% [markdown]
# ## 3. The pyramid of one image
#
# We draw each level as the length of its 64-dimensional feature vector at every position: bright where
# the features respond strongly. Every map is stretched over the 128×128 image, so the axes are image
# pixels throughout. We expect P2 (32×32) to trace the shapes' outlines. Each coarser level halves the
# resolution. By P5 (4×4) one cell covers 32 pixels, about the size of a whole shape.

# %%
fig, axes = plt.subplots(2, 3, figsize=(10, 6.4), layout="constrained")
axes = axes.flatten()
axes[0].imshow(image.permute(1, 2, 0))
axes[0].set_title("input image (3, 128, 128)")
for ax, level, P_l in zip(axes[1:], range(2, 7), P):
    strength = P_l[0].norm(dim=0)  # (h, w): length of each position's feature vector
    im = ax.imshow(strength, cmap="viridis", extent=(0, 128, 128, 0))
    ax.set_title(f"P{level}: {P_l.shape[-2]}×{P_l.shape[-1]}, stride {2**level}")
    fig.colorbar(im, ax=ax, shrink=0.8, label="feature-vector length")
for ax in axes:
    ax.set_xlabel("x (image px)")
    ax.set_ylabel("y (image px)")
fig.suptitle("The pyramid P2..P6 of the trained FPN for one held-out image")
plt.show()

# %% [markdown]
# ## 4. P6 is for the RPN only
#
# FPN Sec. 4.1 adds one more level for the RPN. P6 is P5 subsampled with stride 2, so that the largest
# anchors (512 px in the paper) have a level of their own. The library writes it as a max pool with
# kernel 1 and stride 2, which keeps every other pixel (torchvision does the same). So P6 should equal
# `P5[..., ::2, ::2]` exactly. The RoI heads pool from P2..P5 only (FPN Sec. 4.2). That is why the seed
# can list the FPN's output as P2..P5: that is what the RoI heads see. The RPN sees five levels.

# %%
P5, P6 = P[3], P[4]
assert P6.shape == (B, 64, math.ceil(P5.shape[-2] / 2), math.ceil(P5.shape[-1] / 2))
assert torch.equal(P6, P5[..., ::2, ::2])  # kernel-1 max pool = plain subsampling
print("P6 == P5[..., ::2, ::2]:", torch.equal(P6, P5[..., ::2, ::2]))
print("levels the RoI heads pool from:", poolers.NUM_POOLED_LEVELS, "(P2..P5)")

# %% [markdown]
# ## 5. The size of each level for any input
#
# A stride-2 layer with padding (ResNet's 7×7 conv1, its 3×3 max pool, the first 3×3 conv of res3, res4
# and res5, and P6's pool) maps a side of $n$ pixels to $\lceil n/2 \rceil$: the last, partial window
# still gives an output. Take $H = 100$. It goes 100 → 50 (conv1) → 25 (max pool) = C2, then 13, 7, 4
# for C3, C4, C5, and 2 for P6. For $W = 130$ it goes 130 → 65 → 33, then 17, 9, 5 and 3. We run the
# trained backbone on a 100×130 input and expect exactly these sides.

# %%
# NBVAL_CHECK_OUTPUT
odd = torch.zeros(1, 3, 100, 130)  # neither side is a multiple of 32
with torch.no_grad():
    C_odd = backbone.body(odd)  # [C2..C5]
    P_odd = backbone.fpn(C_odd)  # [P2..P6]
for level, C_l in zip(range(2, 6), C_odd):
    print(f"C{level}: {tuple(C_l.shape)}")
for level, P_l in zip(range(2, 7), P_odd):
    print(f"P{level}: {tuple(P_l.shape)}")

# %%
assert [tuple(c.shape[-2:]) for c in C_odd] == [(25, 33), (13, 17), (7, 9), (4, 5)]
assert [tuple(p.shape) for p in P_odd] == [(1, 64, 25, 33), (1, 64, 13, 17), (1, 64, 7, 9), (1, 64, 4, 5),
                                           (1, 64, 2, 3)]

# %% [markdown]
# The `resnet50_fpn` FPN has the same structure. Only its widths differ: C2..C5 have 256, 512, 1024 and
# 2048 channels, and $d = 256$. We feed it random maps of the sizes above (running the ResNet-50 body is
# not needed to check the FPN's shapes). We expect the same sides as above, with 256 channels.

# %%
fpn50 = fpn.FPN([256, 512, 1024, 2048], out_channels=256)  # the resnet50_fpn FPN (random weights)
C50 = [torch.randn(1, c, *C_l.shape[-2:]) for c, C_l in zip(fpn50.in_channels, C_odd)]  # (1, c_l, h_l, w_l)
with torch.no_grad():
    P50 = fpn50(C50)
print_shapes(P2=P50[0], P3=P50[1], P4=P50[2], P5=P50[3], P6=P50[4])
assert [tuple(p.shape) for p in P50] == [(1, 256, 25, 33), (1, 256, 13, 17), (1, 256, 7, 9), (1, 256, 4, 5),
                                         (1, 256, 2, 3)]

# %% [markdown]
# Inside Mask R-CNN, the transform pads every batch to a multiple of 32 (`size_divisible=32` in
# `mrcnn_teach/transform.py`), so P2..P5 are exactly $H/4 .. H/32$ there. P6 is $\lceil H/64 \rceil$ and is still
# uneven for common sizes: an 800-pixel side gives P5 = 25 and P6 = 13. The FPN module itself does not
# know about the padding, and it should not have to.
#
# ## 6. Erratum: "upsample ×2" fails on odd sizes
#
# The seed's FPN upsamples every merged map with `interpolate(scale_factor=2)`. That is right only when
# each level is exactly twice the next. For our 100×130 input, C5's lateral is 4×5 and doubles to 8×10,
# but C4's lateral is 7×9. The addition cannot line them up. Below is the seed's rule, written with the
# trained model's own laterals so that only the upsampling differs. We expect a `RuntimeError`.
# PyTorch compares sizes from the last dimension backwards, so it names the widths first, 9 against 10;
# the heights, 7 against 8, are just as wrong.

# %%
def merge_times_two(laterals):
    """The seed's top-down rule: M_l = L_l(C_l) + upsample(M_{l+1}, x2). laterals = [L2, L3, L4, L5]."""
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
# row $i$. So rows 0, 1 and 2 are each copied twice and the last row only once. That last row is exactly
# the one whose copy would have covered image pixels beyond the input's edge. On a 4-row ramp we expect
# `0 0 1 1 2 2 3`.

# %%
# NBVAL_CHECK_OUTPUT
ramp = torch.arange(4.0).reshape(1, 1, 4, 1)  # (1, 1, 4, 1): rows 0, 1, 2, 3
print("size=(7, 1):     ", F.interpolate(ramp, size=(7, 1), mode="nearest").flatten().tolist())
print("scale_factor=2:  ", F.interpolate(ramp, scale_factor=2, mode="nearest").flatten().tolist())

# %% [markdown]
# When every side is a multiple of 32 the two rules are the same operation. On our 128×128 image the
# seed's merged maps should equal, bit for bit, the maps the library hands to its 3×3 convs. We catch
# those with forward pre-hooks on the output convs: they see a conv's input before it runs.

# %%
def merged_maps(fpn_module, features):
    """The merged maps [M2..M5] that FPN.forward passes to its 3x3 output convs, caught with hooks."""
    caught = {}
    hooks = [conv.register_forward_pre_hook(lambda module, inputs, i=i: caught.__setitem__(i, inputs[0]))
             for i, conv in enumerate(fpn_module.output)]
    with torch.no_grad():
        fpn_module(features)
    for hook in hooks:
        hook.remove()
    return [caught[i] for i in range(len(fpn_module.output))]  # [(B, d, h_l, w_l)]


M = merged_maps(backbone.fpn, C)  # [M2, M3, M4, M5] of the 128x128 image
with torch.no_grad():
    M_seed = merge_times_two([conv(c) for conv, c in zip(backbone.fpn.lateral, C)])
for level, (m_lib, m_seed) in zip(range(2, 6), zip(M, M_seed)):
    assert m_lib.shape == m_seed.shape == (B, 64, H // 2**level, W // 2**level)
    assert torch.equal(m_lib, m_seed)
print("128x128: the seed's merged maps equal the library's on all four levels")

# %% [markdown]
# ## 7. Erratum: a 3×3 conv on every merged map, not only on two
#
# The seed's FPN passes P3 and P4 through a 3×3 conv on the way out, but hands back P2 and P5 as they
# are. FPN Sec. 3 puts the 3×3 on *every* merged map, and gives the reason: it reduces the
# aliasing that upsampling causes. Let us see from the code's structure what is left in the seed's P2.
# The top-down path adds unsmoothed maps, in the seed and in the library alike, so unrolling it gives
#
# $$M_2 = L_2(C_2) + \mathrm{Up}_{\times2} L_3(C_3) + \mathrm{Up}_{\times4} L_4(C_4) + \mathrm{Up}_{\times8} L_5(C_5).$$
#
# Nearest-neighbour upsampling by a factor $b$ copies each value into a $b\times b$ block. So the last
# three terms are constant on 2×2, 4×4 and 8×8 blocks and jump at the block edges. The seed's P2 *is*
# $M_2$, jumps included. The library's P2 is $\mathrm{Conv}_{3\times3}(M_2)$: every output pixel mixes
# its neighbours on both sides of a block edge, and training can learn to smooth the jumps away.
# (For P5 nothing was upsampled, so there is nothing to smooth. But the seed's P5 is then a bare 1×1
# projection of C5, a different kind of feature from its neighbours, fed to the same shared RPN head.)
#
# First we check the unrolled sum on the trained model: the four terms, each resized to P2's size, must
# add up to the $M_2$ that the hooks caught.

# %%
with torch.no_grad():
    laterals = [conv(c) for conv, c in zip(backbone.fpn.lateral, C)]  # [L2..L5], (1, 64, h_l, w_l)
terms = [F.interpolate(lat, size=M[0].shape[-2:], mode="nearest") for lat in laterals]  # 4 x (1, 64, 32, 32)
for t in terms:
    assert t.shape == M[0].shape == (B, 64, 32, 32)
assert torch.allclose(sum(terms), M[0], atol=1e-5)
# inside a 2x2 block, the upsampled L3 term has the same value in all four pixels
assert torch.equal(terms[1][..., 0::2, 0::2], terms[1][..., 1::2, 1::2])
print("M2 = L2 + Up2(L3) + Up4(L4) + Up8(L5): max error",
      f"{(sum(terms) - M[0]).abs().max().item():.1e}")

# %% [markdown]
# The picture shows the four terms, their sum (the seed's P2) and the library's P2. We expect visible
# 2, 4 and 8 pixel blocks in the upsampled terms, the same blocks faintly in the sum, and none in P2.
# One P2 pixel is 4 image pixels, so an 8×8 block of P2 pixels is 32×32 image pixels.

# %%
panels = [("L2(C2)", terms[0]), ("Up×2 L3(C3)", terms[1]), ("Up×4 L4(C4)", terms[2]),
          ("Up×8 L5(C5)", terms[3]), ("sum M2 = seed's P2", M[0]), ("P2 = 3×3 conv of M2", P[0])]
fig, axes = plt.subplots(2, 3, figsize=(10, 6.4), layout="constrained")
for ax, (name, t) in zip(axes.flatten(), panels):
    im = ax.imshow(t[0].norm(dim=0), cmap="viridis")  # (32, 32) feature-vector length
    ax.set_title(name)
    ax.set_xlabel("x (P2 px)")
    ax.set_ylabel("y (P2 px)")
    fig.colorbar(im, ax=ax, shrink=0.8, label="feature-vector length")
fig.suptitle("What P2 is made of: the four terms of M2 (top row, bottom left), M2, and P2")
plt.show()

# %% [markdown]
# Now a number for "steps at block edges". Take the squared difference between each pair of neighbouring
# columns, summed over rows and channels. In a map with no block structure, the column pairs that
# straddle a $b$-pixel block edge (every $b$-th pair) hold about their share of that energy: 15 of 31
# pairs for $b=2$, 7 for $b=4$, 3 for $b=8$. We measure the seed's P2 ($M_2$) and the library's P2 over
# 8 held-out images. We expect $M_2$ to put clearly more than the fair share on block edges, and P2 about
# its share.

# %%
def edge_share(maps, block):
    """Share of the horizontal-difference energy of maps (B, d, h, w) that lies on block edges."""
    energy = (maps[..., 1:] - maps[..., :-1]).pow(2).sum(dim=(0, 1, 2))  # (w-1,): pair (j-1, j) for j = 1..w-1
    on_edge = torch.arange(1, maps.shape[-1]) % block == 0  # (w-1,) pairs that straddle a block edge
    return (energy[on_edge].sum() / energy.sum()).item(), on_edge.float().mean().item()


images8 = [dataset[i][0] for i in range(8)]
batch8, _, _ = model.transform(images8)  # (8, 3, 128, 128)
with torch.no_grad():
    C8 = backbone.body(batch8)
    P8 = backbone.fpn(C8)
M8 = merged_maps(backbone.fpn, C8)
assert batch8.shape == (8, 3, 128, 128) and M8[0].shape == P8[0].shape == (8, 64, 32, 32)
print("block  fair share   seed's P2 (M2)   library P2")
for block in (2, 4, 8):
    seed_share, fair = edge_share(M8[0], block)
    lib_share, _ = edge_share(P8[0], block)
    print(f"{block:>5}  {fair:>10.1%}  {seed_share:>15.1%}  {lib_share:>11.1%}")

# %% [markdown]
# The seed's P2 puts far more than the fair share of its changes on the block edges. Those are the steps
# of nearest-neighbour upsampling. After the trained 3×3 conv the block edges hold about their fair share
# (a little less): the steps are gone. A detector reading the seed's P2 would find C5's 32-pixel grid
# (8 cells of P2) printed into every object's features.
#
# ## 8. What the top-down path adds: context
#
# Why merge at all? $L_2(C_2)$ alone is what P2 would be without the top-down path. Its values depend
# mostly on a small patch of the image. P2 also receives $\mathrm{Up}\,L_5(C_5)$, which was computed
# from a much wider region. We can measure how wide with the *effective receptive field* (Luo et al.
# 2016). Take one position of a map, sum its features, and backpropagate to the input. The gradient's
# magnitude per pixel says how much that pixel moves this position. (GroupNorm in the shapes model mixes
# statistics over the whole image, so every pixel has a small effect; what matters is where the bulk
# lies.) We expect $L_2(C_2)$'s gradient to be concentrated near the position, P2's to reach clearly
# further, and P5's to spread over most of the image.

# %%
rows, cols = torch.meshgrid(torch.arange(128.0) + 0.5, torch.arange(128.0) + 0.5, indexing="ij")  # pixel centres


def input_gradient(which, images):
    """|d (sum of the features at the centre position of map `which`) / d image|, summed over RGB: (128, 128)."""
    x = images.clone().requires_grad_(True)  # (1, 3, 128, 128)
    C_x = backbone.body(x)
    maps = {"L2(C2)": lambda: backbone.fpn.lateral[0](C_x[0])}
    maps.update({f"P{lv}": (lambda lv=lv: backbone.fpn(C_x)[lv - 2]) for lv in range(2, 7)})
    out = maps[which]()  # (1, d, h, w)
    h, w = out.shape[-2:]
    out[0, :, h // 2, w // 2].sum().backward()
    return x.grad[0].abs().sum(0)  # (128, 128)


def half_mass_radius(grad):
    """Half-side (px) of the smallest square around the gradient's centre of mass that holds 50% of it."""
    weights = grad / grad.sum()  # (128, 128)
    cy, cx = (weights * rows).sum(), (weights * cols).sum()
    dist = torch.maximum((rows - cy).abs(), (cols - cx).abs()).flatten()  # (128*128,) square distance
    order = dist.argsort()
    inside = weights.flatten()[order].cumsum(0)  # mass within the first k pixels
    return dist[order][int((inside >= 0.5).nonzero()[0])].item(), cy.item(), cx.item()


fig, axes = plt.subplots(1, 3, figsize=(12, 4.2), layout="constrained")
for ax, which in zip(axes, ["L2(C2)", "P2", "P5"]):
    grad = input_gradient(which, batch)  # (128, 128)
    assert grad.shape == (128, 128)
    radius, cy, cx = half_mass_radius(grad)
    im = ax.imshow(grad / grad.max(), cmap="magma", norm=PowerNorm(0.5, vmin=0, vmax=1))
    ax.add_patch(plt.Rectangle((cx - radius, cy - radius), 2 * radius, 2 * radius, fill=False, color="cyan"))
    ax.set_title(f"{which}: half the gradient\nwithin ±{radius:.0f} px of the centre")
    ax.set_xlabel("x (image px)")
    ax.set_ylabel("y (image px)")
    fig.colorbar(im, ax=ax, shrink=0.85, label="|gradient| / max (square-root scale)")
fig.suptitle("Which input pixels move the centre position of a map (cyan: the square holding half the gradient)")
plt.show()

# %% [markdown]
# One image is noisy, so we average over the 8 held-out images. We also print the gradient's centre of
# mass. The centre position of every map is cell 16 of P2, 8 of P3, 4 of P4 and 2 of P5, which lies at
# pixel $i \cdot 2^l = 64$ in all of them. We expect the centre of mass near 64 rather than near
# $(i + \tfrac12)\,2^l$ (66 for P2, up to 80 for P5). [Notebook 03](03_anchors.ipynb) centres its
# anchors on exactly these points.

# %%
print("map      50% radius (px)   centre of mass (y, x)")
for which in ["L2(C2)", "P2", "P3", "P4", "P5"]:  # (P6's centre cell is P5's centre cell, subsampled)
    stats = torch.tensor([half_mass_radius(input_gradient(which, batch8[i:i + 1])) for i in range(8)])  # (8, 3)
    radius, cy, cx = stats.mean(0).tolist()
    print(f"{which:<8} {radius:>10.1f}        ({cy:5.1f}, {cx:5.1f})")

# %% [markdown]
# Half of what moves a position of $L_2(C_2)$ comes from within about ±10 px. For P2 it is about twice
# as far, because of the top-down path, and the coarser levels reach further still. So P2 keeps C2's
# 4-pixel grid, which small objects need, and gains context from the deep levels. That is the point of
# FPN (Sec. 3): every level of the pyramid carries strong features.
#
# ## Summary
#
# - FPN maps C2..C5 to P2..P5 with $d$ channels each: a 1×1 lateral per level, a top-down path that
#   upsamples the coarser merged map (nearest neighbour) and adds it to the lateral, and a 3×3 conv on
#   **every** merged map. P6 is P5 subsampled with stride 2 and is used only by the RPN; the RoI heads
#   pool from P2..P5.
# - A stride-2 layer maps a side $n$ to $\lceil n/2 \rceil$. For a 100×130 input the levels are 25×33,
#   13×17, 7×9, 4×5 and 2×3, so "upsample ×2" gives 8 rows where the lateral has 7 and crashes. The
#   library upsamples to the lateral's exact size, which is the same operation when the sides are
#   multiples of 32.
# - Without the 3×3 conv (the seed's P2), the steps of nearest-neighbour upsampling stay in the map. We
#   measured them on the trained model: block edges hold far more than their share of the changes in
#   $M_2$, and about their share after the conv.
# - The top-down path gives P2 about twice the effective receptive field of C2 alone, at the same 4-pixel
#   resolution.
#
# ## Exercises
#
# Worked solutions (for teachers) are in `solutions/02_fpn.py`.
#
# **Exercise 1.** Write `pyramid_sizes(H, W)` that returns the sizes `[(h2, w2), ..., (h6, w6)]` of P2..P6
# for an input of H×W pixels that is *not* padded. The check runs the real backbone on inputs of its own
# choosing.

# %%
def pyramid_sizes(H, W):
    raise NotImplementedError  # your code here


from mrcnn_teach.exercises.nb02 import check_fpn_num_params, check_pyramid_sizes, check_top_down_merge

check_pyramid_sizes(pyramid_sizes);

# %% [markdown]
# **Exercise 2.** Write the top-down merge of two levels: `top_down_merge(coarse, lateral)` takes the
# coarser merged map (B, d, h, w) and the finer level's lateral (B, d, h', w'), where h' is 2h or 2h − 1,
# and returns the merged map of the finer level. The check compares it with the library's FPN on odd and
# even sizes.

# %%
def top_down_merge(coarse, lateral):
    raise NotImplementedError  # your code here


check_top_down_merge(top_down_merge);

# %% [markdown]
# **Exercise 3.** Count the learnable parameters of `FPN(in_channels, d)` with a formula (no model):
# `fpn_num_params(in_channels, d)`. Then use it to answer: for `resnet50_fpn`, what share of the FPN's
# parameters are in the 3×3 output convs, and how many parameters does the seed's version (3×3 convs on
# two levels only) leave out?

# %%
def fpn_num_params(in_channels, d):
    raise NotImplementedError  # your code here


check_fpn_num_params(fpn_num_params);

# %% [markdown]
# Next: [03 — Anchors](03_anchors.ipynb)
