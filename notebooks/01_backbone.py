# %% [markdown]
# # 01 — Backbone: ResNet and the feature maps C2–C5
#
# Mask R-CNN starts with a convolutional *backbone* that turns the image into feature maps (in
# Figure 1, everything before RoIAlign). The paper evaluates ResNet (He et al. 2016) and ResNeXt
# backbones of depth 50 or 101, with or without an FPN (Mask R-CNN Sec. 3, "Network Architecture");
# its best results use ResNeXt-101-FPN. Our `shapes_tiny` model uses a ResNet-18. This
# notebook builds the ResNet body of `mrcnn_teach/backbone.py`, measures what each of its outputs
# sees, and ends with the two settings that change between fine-tuning an ImageNet ResNet and
# training from scratch: the normalisation layers, and which stages are trained at all
# (`trainable_layers`).
#
# **You will learn**
# - how ResNet's stem and four stages produce C2, C3, C4, C5 at strides 4, 8, 16, 32, and their sizes
#   when the input side is not a multiple of 32 (every stride-2 layer rounds *up*);
# - the basic block (ResNet-18/34) and the bottleneck (ResNet-50/101): channels, parameters and
#   multiply-accumulates, counted;
# - the receptive field of each C_l and where it is centred, computed and then measured;
# - what a trained backbone's feature maps show next to a random one's;
# - why frozen BatchNorm is right for fine-tuning and wrong from scratch (activations and gradients
#   at initialisation, measured through depth), why BatchNorm fails with 1–2 images per batch, what
#   GroupNorm fixes;
# - which stages torchvision and Detectron freeze when they fine-tune, why, and what it saves.
#
# **Builds on:** [00 — Tour](00_tour.ipynb) (where the backbone sits in the pipeline).
#
# **Run time:** about 40 s on a 2-core CPU; the first notebook you run also trains the shared shapes
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
from mrcnn_teach.notebook import setup, show_source, print_shapes

import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor, _validate_trainable_layers
from torchvision.models.resnet import BasicBlock, Bottleneck

from mrcnn_teach import norm
from mrcnn_teach.backbone import RESNET_SPECS, STAGE_NAMES, ResNetBody, Stem, make_stage
from mrcnn_teach.configs import CONFIGS
from mrcnn_teach.datasets import ShapesDataset
from mrcnn_teach.datasets.shapes import MAX_SIZE_128, MIN_SIZE_128
from mrcnn_teach.norm import FrozenBatchNorm2d
from mrcnn_teach.pretrained import trained_shapes_model
from mrcnn_teach.transform import ImageTransform

torch.set_grad_enabled(False)  # forward passes only, except where a cell turns gradients on
setup()

# %% [markdown]
# ## 1. The ResNet body: a stem and four stages
#
# ResNet (He et al. 2016, Table 1) has five stages. *conv1* is a 7×7 convolution with stride 2; *conv2_x*
# starts with a 3×3 max pool of stride 2 and then stacks residual blocks; *conv3_x*, *conv4_x* and
# *conv5_x* each start with a block of stride 2. FPN (Lin et al. 2017, Sec. 3) names the output of the
# last block of conv2_x … conv5_x **C2, C3, C4, C5**: the index is the stage, and C_l has stride
# $2^l$ relative to the input. conv1's output (stride 2) is not used: it is big and has seen little.
#
# The library keeps the max pool with conv1 in a `Stem` (torchvision runs it before `layer1` too;
# Detectron2 calls the same module `BasicStem`) and calls the four
# stages `res2` … `res5`. The body's `forward` runs them in order; the depth decides the block type
# and how many blocks each stage stacks (ResNet Table 1), and the module docstring of `backbone.py`
# holds the table of stages, strides and channel counts.

# %%
show_source(ResNetBody.forward)

# %%
# NBVAL_CHECK_OUTPUT
for depth, (block, counts) in RESNET_SPECS.items():
    print(f"ResNet-{depth:<4} {block.__name__:<11} blocks per stage res2..res5: {counts}")

# %% [markdown]
# ## 2. The stem: conv1 and the max pool
#
# The stem is a 7×7 conv (64 channels, stride 2, padding 3), a norm layer, a ReLU and a 3×3 max pool
# (stride 2, padding 1). Each stride-2 layer halves the side, so the stem's output has stride 4: for a
# 128×128 image we expect 64×64 after conv1 and 32×32 after the pool.

# %%
display(show_source(Stem))
torch.manual_seed(0)
stem = Stem(nn.BatchNorm2d).eval()
x = torch.randn(2, 3, 128, 128)  # (B, 3, H, W)
after_conv1 = F.relu(stem.bn1(stem.conv1(x)))  # (B, 64, H/2, W/2)
after_pool = stem(x)  # (B, 64, H/4, W/4)
print_shapes(x=x, after_conv1=after_conv1, after_pool=after_pool)
assert after_conv1.shape == (2, 64, 64, 64)
assert after_pool.shape == (2, 64, 32, 32)

# %% [markdown]
# ## 3. Conv arithmetic: what "H/4 … H/32" means for an odd-sized input
#
# A convolution or pooling layer with kernel $k$, stride $s$ and padding $p$ maps a side of $n$ pixels to
#
# $$n_{\text{out}} = \left\lfloor \frac{n + 2p - k}{s} \right\rfloor + 1 .$$
#
# Every stride-2 layer of ResNet has $p = \lfloor k/2 \rfloor$ (7×7 with $p=3$, 3×3 with $p=1$, and the
# 1×1 shortcut projection with $p=0$), and for all of them the formula gives $\lceil n/2 \rceil$. So
# the side of C_l is $n$ halved and *rounded up* $l$ times, which equals $n / 2^l$ only when $2^l$ divides
# $n$: shape comments such as `(B, 64, H/4, W/4)` are exact for sides that are multiples of 32 and
# loose otherwise.
#
# Take a 100×75 input (height 100, width 75). Below we trace it through every stride-2 layer with the
# formula, next to the naive $n / \text{stride}$, and check on the way that the 1×1 stride-2 projection
# of each stage's shortcut lands on the same side as the 3×3 branch (or the residual sum would fail).
# We expect C5 to be 4×3, not 3.125×2.34 (and not the 3×2 that integer division would give).

# %%
# NBVAL_CHECK_OUTPUT
def conv_out(n, kernel, stride, padding):
    """Output side of a conv / pool layer: floor((n + 2p - k) / s) + 1."""
    return (n + 2 * padding - kernel) // stride + 1


# The layers that change the size, in order: (name, kernel, stride, padding, C_l it ends).
STRIDED = [("stem conv1 7x7", 7, 2, 3, None), ("stem max pool 3x3", 3, 2, 1, "C2"),
           ("res3.0 conv 3x3", 3, 2, 1, "C3"), ("res4.0 conv 3x3", 3, 2, 1, "C4"),
           ("res5.0 conv 3x3", 3, 2, 1, "C5")]
H, W = 100, 75
h, w, stride = H, W, 1
expected = {}
print(f"{'layer':<19}{'k':>3}{'s':>3}{'p':>3}{'out h x w':>12}   {'naive H/stride x W/stride':>26}")
for name, k, s, p, level in STRIDED:
    if name.startswith("res"):  # the shortcut's 1x1 projection, stride 2, padding 0, must agree
        assert (conv_out(h, 1, 2, 0), conv_out(w, 1, 2, 0)) == (conv_out(h, k, s, p), conv_out(w, k, s, p))
    h, w, stride = conv_out(h, k, s, p), conv_out(w, k, s, p), stride * s
    print(f"{name:<19}{k:>3}{s:>3}{p:>3}{f'{h} x {w}':>12}   {f'{H / stride:g} x {W / stride:g}':>26}"
          + (f"   -> {level}" if level else ""))
    if level:
        expected[level] = (h, w)

# %% [markdown]
# A partial window at the border still produces an output cell, hence the rounding up. Now the real
# thing: a random ResNet-18 body on a (1, 3, 100, 75) input. Its shapes must be the ones the formula
# predicted, with ResNet-18's channels 64, 128, 256, 512.

# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(0)
body18 = ResNetBody(depth=18, norm="gn").eval()
C2, C3, C4, C5 = body18(torch.randn(1, 3, H, W))
print_shapes(C2=C2, C3=C3, C4=C4, C5=C5)
for C, level, channels in zip((C2, C3, C4, C5), ("C2", "C3", "C4", "C5"), body18.out_channels):
    assert C.shape == (1, channels, *expected[level]), (level, C.shape)
assert body18.out_channels == [64, 128, 256, 512]
assert C5.shape[-2:] == (4, 3) and (H // 32, W // 32) == (3, 2)  # integer division would be wrong

# %% [markdown]
# Inside Mask R-CNN this rarely shows: the transform pads every batch to a multiple of 32
# (notebook 00), so C_l is exactly $H / 2^l$. It matters whenever the backbone runs on its own or
# with `size_divisible=1`, and it is why the FPN upsamples each coarser map to the *exact* size of the
# finer one instead of "×2" ([02 — FPN](02_fpn.ipynb)): for our 100×75 input, C5 upsampled ×2 is 8×6,
# but C4 is 7×5.
#
# > **Common mistake:** calling the stem's output "C1". ResNet's conv1 stage ends at stride 2 (Table 1:
# > 112×112 for a 224×224 input); the max pool is the first layer of conv2_x, so the stem's stride-4
# > output is the input of res2, already C2's size, and FPN's pyramid has no C1 at all.

# %% [markdown]
# ## 4. Residual blocks: basic (ResNet-18) and bottleneck (ResNet-50)
#
# A residual block computes $\mathbf{y} = \mathcal{F}(\mathbf{x}) + \mathbf{x}$ (ResNet Eq. 1): the layers
# only learn the *change* to their input, which keeps very deep networks trainable. When the block
# changes the size or the width, the shortcut becomes a 1×1 projection, $\mathbf{y} = \mathcal{F}(\mathbf{x})
# + W_s \mathbf{x}$ (Eq. 2; `downsample` in the code). The library borrows torchvision's two blocks so
# that its parameter names match torchvision's ImageNet checkpoints:
#
# - **basic block** (ResNet-18/34): 3×3 conv → norm → ReLU → 3×3 conv → norm, add, ReLU. Every block
#   but the first of a stage keeps the width; the first of res3, res4 and res5 doubles it (64 → 128 in
#   res3[0]) and halves the side, with the projection on its shortcut.
# - **bottleneck** (ResNet-50/101, ResNet Sec. 4.1): 1×1 conv that *reduces* the width to `planes`,
#   3×3 conv at that width, 1×1 conv that *expands* it 4× (`expansion = 4`). The expensive 3×3 conv runs
#   on a quarter of the channels. (torchvision, and hence we, put the stride on the 3×3 conv, the
#   "ResNet v1.5" variant; the 2016 paper put it on the first 1×1.)
#
# `make_stage` stacks the blocks of one stage; only the first may change stride and width, and it
# gets the projection shortcut:

# %%
show_source(BasicBlock.forward, Bottleneck.forward, make_stage)

# %% [markdown]
# The first block of res3 in each network, layer by layer. We expect ResNet-18's block to go
# 64 → 128 → 128 with two 3×3 convs, and ResNet-50's to go 256 → 128 → 128 → 512 (1×1, 3×3, 1×1),
# each with a 1×1 stride-2 projection on the shortcut. Then the cost of that first block and of the
# second one, which keeps the width and has no projection: parameters, and multiply-accumulates
# (MACs) of the convs for a 128×128 image, where res3 reads the 32×32 C2. A conv's MACs are its
# weight count times the number of output cells; `FlopCounterMode` counts them for us (2 FLOPs each).

# %%
# NBVAL_CHECK_OUTPUT
def describe_block(block):
    for name, module in block.named_modules():
        if isinstance(module, nn.Conv2d):
            k, s = module.kernel_size[0], module.stride[0]
            print(f"    {name:<13} {k}x{k} conv, stride {s}: {module.in_channels:>4} -> {module.out_channels:>4}")


def num_params(module):
    return sum(p.numel() for p in module.parameters())


def macs(module, x):
    """Multiply-accumulates of the convs (and linear layers) in one forward pass of `module` on x."""
    with FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops() // 2


torch.manual_seed(0)
body50 = ResNetBody(depth=50, norm="gn").eval()
cost = {}
for name, body in (("ResNet-18", body18), ("ResNet-50", body50)):
    print(f"{name}, res3[0] ({type(body.res3[0]).__name__}):")
    describe_block(body.res3[0])
    C2_in = torch.randn(1, body.out_channels[0], 32, 32)  # (1, C2 channels, 32, 32)
    C3_in = body.res3[0](C2_in)  # (1, C3 channels, 16, 16): the input of res3[1]
    cost[name] = [(num_params(b), macs(b, x)) for b, x in ((body.res3[0], C2_in), (body.res3[1], C3_in))]
    for block, (n, m) in zip(("res3[0]", "res3[1]"), cost[name]):
        print(f"    {block}: {n:>9,} parameters, {m / 1e6:6.1f} M MACs")
(p18, m18), (p50, m50) = cost["ResNet-18"][1], cost["ResNet-50"][1]
print(f"res3[1]: the bottleneck carries 4x the channels with {p50 / p18:.2f}x the parameters "
      f"and {m50 / m18:.2f}x the MACs of the basic block")

# %% [markdown]
# The typical block, res3[1], is the point of the bottleneck: it carries a 512-wide map for slightly
# less than the basic block spends on a 128-wide one, in parameters and in arithmetic alike (the last
# line). Its first block costs more, for two reasons you can read off the listing: the projection
# shortcut (256 × 512 weights), and, in ResNet v1.5, the first 1×1 conv running on the 32×32 input
# before the stride-2 3×3 halves it. Over the whole body, C2–C5 are 4× wider in ResNet-50: 256, 512,
# 1024, 2048 channels instead of 64, 128, 256, 512, and it stacks 16 blocks where ResNet-18 has 8. We
# run it on the 128×128 input, assert every shape, and count the whole body:

# %%
# NBVAL_CHECK_OUTPUT
x128 = torch.randn(1, 3, 128, 128)  # (1, 3, 128, 128)
C50 = body50(x128)
print_shapes(C2=C50[0], C3=C50[1], C4=C50[2], C5=C50[3])
for level, (C, channels) in enumerate(zip(C50, (256, 512, 1024, 2048)), start=2):
    assert C.shape == (1, channels, 128 // 2**level, 128 // 2**level)
for name, body in (("ResNet-18", body18), ("ResNet-50", body50)):
    print(f"{name}: C2..C5 channels {body.out_channels}, {num_params(body) / 1e6:.1f} M parameters, "
          f"{macs(body, x128) / 1e9:.2f} G MACs for a 128x128 image")

# %% [markdown]
# > **Common mistake:** `torchvision.models.resnet50(pretrained=True)`, as many tutorials still write.
# > That argument has been deprecated since torchvision 0.13; the current API is
# > `resnet50(weights=ResNet50_Weights.IMAGENET1K_V1)` (or `weights="DEFAULT"`). Either one *downloads*
# > about 100 MB of ImageNet weights, which these notebooks never do; building the network without
# > weights is free, and the old argument still warns (below).
#
# Our `ResNetBody(50)` holds the same tensors as torchvision's ResNet-50 minus its classifier; only
# the stage names differ (`layer1` is our `res2`, `conv1`/`bn1` sit in our `stem`). So an ImageNet state
# dict that you download yourself loads after a renaming; for a whole torchvision Mask R-CNN
# checkpoint, `mrcnn_teach.load_torchvision_weights(model, path)` does it.

# %%
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    tv_resnet50 = torchvision.models.resnet50(pretrained=False)  # random weights, nothing downloaded
print("torchvision says:", caught[0].message)
assert any("deprecated" in str(w.message) for w in caught)


def torchvision_name(ours):
    """res2.0.conv1.weight -> layer1.0.conv1.weight; stem.conv1.weight -> conv1.weight."""
    if ours.startswith("stem."):
        return ours[len("stem."):]
    stage, rest = ours.split(".", 1)
    return f"layer{int(stage[3:]) - 1}.{rest}"


ours = ResNetBody(depth=50, norm="frozen_bn").state_dict()
theirs = {k: v for k, v in tv_resnet50.state_dict().items()
          if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
assert {torchvision_name(k): v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
print(f"{len(ours)} tensors, names and shapes match torchvision's resnet50 (without fc)")

# %% [markdown]
# ## 5. What each C_l can see: receptive field and centre
#
# A cell of C_l depends on a square of input pixels, its *receptive field*. Walk the layers from the
# input: with $j$ the stride reached so far (the input-pixel distance between two neighbouring cells),
# a layer $(k, s, p)$ widens the field by $(k-1)\,j$ pixels, moves the centre of cell 0 by
# $\left(\tfrac{k-1}{2} - p\right) j$, and multiplies $j$ by $s$:
#
# $$r \leftarrow r + (k-1)\,j, \qquad c_0 \leftarrow c_0 + \left(\tfrac{k-1}{2} - p\right) j, \qquad
# j \leftarrow j\,s \qquad (\text{start: } r = 1,\ c_0 = 0,\ j = 1).$$
#
# Every layer of ResNet has an odd $k$ and $p = \lfloor k/2 \rfloor = \tfrac{k-1}{2}$, so $c_0$ never
# moves: **cell $i$ of C_l is centred on input pixel $i \cdot 2^l$** (in the continuous coordinates
# of boxes, where pixel $x$ covers $[x, x+1)$, that is the point $i \cdot 2^l + \tfrac12$). In a
# residual block the field is the union of the branch's and the shortcut's; the shortcut is a 1×1
# conv or nothing, so the branch decides. Below: the layers of the main path, read from the modules.

# %%
# NBVAL_CHECK_OUTPUT
def receptive_fields(body):
    """{C_l: (r, j, c0)}: field size, stride and centre of cell 0 (input pixels), by the recursion above."""
    layers = [("stem", body.stem.conv1), ("stem", nn.MaxPool2d(3, stride=2, padding=1))]  # conv1, pool
    layers += [(stage, m) for stage in STAGE_NAMES[1:] for name, m in getattr(body, stage).named_modules()
               if isinstance(m, nn.Conv2d) and "downsample" not in name]  # each block's branch, in order
    r, j, c0, fields = 1, 1, 0.0, {}
    for stage, m in layers:
        k, s, p = (v if isinstance(v, int) else v[0] for v in (m.kernel_size, m.stride, m.padding))
        r, c0, j = r + (k - 1) * j, c0 + ((k - 1) / 2 - p) * j, j * s
        if stage != "stem":
            fields[f"C{int(stage[3:])}"] = (r, j, c0)  # the last assignment per stage wins: its output
    return fields


fields = {depth: receptive_fields(ResNetBody(depth, norm="frozen_bn")) for depth in (18, 50, 101)}
for depth, f in fields.items():
    print(f"ResNet-{depth:<4}" + "  ".join(f"{lv}: {r:>4} px (stride {j:>2}, c0 = {c0:g})"
                                          for lv, (r, j, c0) in f.items()))

# %% [markdown]
# Now measure it, on the library's ResNet-18 (the body of `shapes_tiny`, which notebooks 02 and 03
# rely on). A NaN spreads through every multiply and add (0 × NaN is NaN), through ReLU and through
# max pooling, so NaN input pixels mark exactly the cells that depend on them, whatever the weights.
# (Frozen BN keeps it local; GroupNorm would spread a NaN over the whole map through its statistics.)
# We use a strip of 1×512 pixels, so that only the horizontal direction counts, and ask for the middle
# cell of each map: does a NaN in columns 0..x reach it? The answer flips from no to yes at the first
# column of its field, so bisection finds that column in 9 runs instead of 512; the last column
# likewise, with NaN in columns x..511. We expect the width $r$ of the table and the centre
# $i \cdot 2^l$.

# %%
# NBVAL_CHECK_OUTPUT
strip, probe_body = 512, ResNetBody(18, norm="frozen_bn").eval()
columns = torch.arange(strip)


def reaches(level, nan_columns):
    """Does a NaN in the input columns nan_columns ((strip,) bool) reach the middle cell of C_level?"""
    C = torch.where(nan_columns, float("nan"), 0.0).expand(1, 3, 1, strip)  # (1, 3, 1, strip)
    for stage in STAGE_NAMES[:level]:  # stem, res2, ... up to res{level}: C_level, (1, channels, 1, w)
        C = getattr(probe_body, stage)(C)
    return bool(C[0, :, 0, C.shape[-1] // 2].isnan().any())


def first_true(test):
    """Bisection: the smallest x in 0..strip-1 with test(x) True, for a test that is False, then True."""
    lo, hi = 0, strip - 1
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if test(mid) else (mid + 1, hi)
    return lo


for level, (r, j, c0) in zip(range(2, 6), fields[18].values()):
    first = first_true(lambda x: reaches(level, columns <= x))  # NaN in 0..x
    last = first_true(lambda x: not reaches(level, columns > x))  # NaN in x+1..511 no longer reaches
    i = (strip // j) // 2  # the middle cell
    print(f"C{level}: cell {i:>3} sees columns {first:>3}..{last:>3}: {last - first + 1:>3} px, "
          f"centred on {(first + last) / 2:g} = {i} x {j}")
    assert last - first + 1 == r and (first + last) / 2 == i * j

# %% [markdown]
# The measured fields are exactly the computed ones (the assert), and centred on $i \cdot 2^l$. They
# are *theoretical* fields: most of the weight sits near the centre, and notebook 02 measures the
# much smaller *effective* field. Drawn on a 128×128 training image, for the cell nearest the centre
# of each map and for the corner cell (0, 0) of C3:

# %%
image, _ = ShapesDataset(100, seed=1)[3]  # a held-out shapes image, (3, 128, 128)
fig, ax = plt.subplots(figsize=(6.4, 6.4))
ax.imshow(image.permute(1, 2, 0), extent=(0, 128, 128, 0))
for n, (level, (r, j, c0)) in enumerate(fields[18].items()):
    i = (64 // j) * j + 0.5  # centre of the cell nearest the image centre, in box coordinates
    ax.add_patch(plt.Rectangle((i - r / 2, i - r / 2), r, r, fill=False, color=f"C{n}", lw=2,
                               label=f"{level}: {r} px field, cells {j} px apart"))
r3 = fields[18]["C3"][0]
padding_share = 1 - ((r3 + 1) / 2 / r3) ** 2  # the corner cell's field: centred on pixel (0, 0)
ax.add_patch(plt.Rectangle((0.5 - r3 / 2, 0.5 - r3 / 2), r3, r3, fill=False, color="C1", lw=1.5, ls="--",
                           label=f"C3, corner cell (0, 0): {padding_share:.0%} of it is padding"))
ax.add_patch(plt.Rectangle((0, 0), 128, 128, fill=False, color="k", lw=1))
ax.set_xlim(-160, 288), ax.set_ylim(288, -160)
ax.set_xlabel("x (input pixels)"), ax.set_ylabel("y (input pixels)")
ax.set_title("Receptive fields of ResNet-18's C2..C5 on a 128×128 image")
ax.legend(loc="lower left", fontsize=8)
plt.show()
print(f"shapes are drawn {MIN_SIZE_128:g}-{MAX_SIZE_128:g} px (side, or a circle's diameter)")

# %% [markdown]
# A C2 cell sees about one shape (their sizes are printed above); a C3 cell most of the image (99 of
# its 128 px a side); C4 and C5 cells see more than the image, so at this input size a large part of
# their field is zero padding, and so is most of the field of any corner cell. Padding is something
# every filter can detect, which shows in the next section. The centre rule is what [notebook 03](03_anchors.ipynb) builds on:
# it places the anchors of level $l$ on the points $i \cdot 2^l$, half a pixel from the centres above
# (torchvision does the same).

# %% [markdown]
# ## 6. What a trained backbone sees
#
# Shape is only half the story. Below, the same held-out shapes image goes through the ResNet-18 body
# of the trained `shapes_tiny` model (Mask R-CNN trained from scratch on shapes) and through a freshly
# initialised one, and we look at C3 (128 channels, 16×16): the six channels with the largest spatial
# variance, each scaled to [0, 1]. Random convolutions are not blind: they already respond to colour
# and contrast, so both rows see the shapes. Look for two things. First, what differs: several trained
# channels are compact object maps on a dark background; the random ones are speckled and also follow
# the background's colour gradient. Second, what does not: in both rows some channels light up along
# the frame of the map. That is the zero padding of section 5, which every conv reads as an edge at the
# image border, trained or not; training does not remove it.

# %%
model = trained_shapes_model()
trained_body = model.backbone.body
torch.manual_seed(1)
random_body = ResNetBody(depth=18, norm="gn").eval()

batch, _, _ = model.transform([image])  # (1, 3, 128, 128), normalised
maps = {"trained": trained_body(batch), "random": random_body(batch)}  # name -> [C2, C3, C4, C5]
for name, Cs in maps.items():
    for level, C in enumerate(Cs, start=2):
        assert C.shape == (1, trained_body.out_channels[level - 2], 128 // 2**level, 128 // 2**level)

# %%
num_channels = 6
fig, axes = plt.subplots(2, num_channels + 1, figsize=(12, 4.2), layout="constrained")
for row, (name, Cs) in enumerate(maps.items()):
    C3 = Cs[1][0]  # (128, 16, 16)
    strongest = C3.flatten(1).var(dim=1).argsort(descending=True)[:num_channels]
    axes[row, 0].imshow(image.permute(1, 2, 0))
    axes[row, 0].set_title("input (128×128)")
    axes[row, 0].set_ylabel(f"{name} backbone", fontsize=11, fontweight="bold")
    for col, channel in enumerate(strongest.tolist(), start=1):
        m = C3[channel].abs()
        im = axes[row, col].imshow(m / m.max(), cmap="magma", vmin=0, vmax=1)
        axes[row, col].set_title(f"C3 channel {channel}", fontsize=9)
for ax in axes.flat:
    ax.set_xticks([]), ax.set_yticks([])
fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="|activation| / max of the map")
fig.suptitle("C3 (16×16) of a trained (top) and a random (bottom) ResNet-18: the 6 strongest channels")
plt.show()

# %% [markdown]
# ## 7. Normalisation: frozen BN, BN and GroupNorm
#
# Every conv in the body is followed by a normalisation layer. Which one is not a detail: it is the
# difference between a backbone that trains and one that does not. `norm.py` offers three.
#
# ### 7.1 Frozen BatchNorm is a fixed affine map
#
# BatchNorm (Ioffe & Szegedy 2015) normalises each channel with a mean $\mu$ and variance $\sigma^2$ and
# then scales and shifts it with learned $\gamma, \beta$:
# $y = \gamma \,(x - \mu)/\sqrt{\sigma^2 + \epsilon} + \beta$. In training, $\mu, \sigma^2$ come from
# the current batch; at test time from running averages. Mask R-CNN fine-tunes an ImageNet ResNet
# with 2 images per GPU (Sec. 3.1), far too few for batch statistics, so Detectron and torchvision
# *freeze* the ImageNet $\mu, \sigma^2, \gamma, \beta$. What is left is a per-channel
# $y = x \cdot \text{scale} + \text{shift}$ with no trainable parameter at all (`norm_layer` below
# picks one of the three kinds by name). A trained BatchNorm in eval mode and a FrozenBatchNorm2d
# loaded from its state dict compute the same function, in train mode or not. We give a BatchNorm
# made-up statistics and check:

# %%
display(show_source(norm.norm_layer, norm._group_norm, FrozenBatchNorm2d.forward))
torch.manual_seed(0)
bn = nn.BatchNorm2d(8).eval()
bn.running_mean.uniform_(-1, 1)
bn.running_var.uniform_(0.5, 2)
bn.weight.data.uniform_(0.5, 1.5)
bn.bias.data.uniform_(-0.5, 0.5)
frozen = FrozenBatchNorm2d(8)
frozen.load_state_dict(bn.state_dict())  # num_batches_tracked is dropped
x = torch.randn(4, 8, 5, 5)  # (B, C, h, w)
y_bn, y_frozen = bn(x), frozen.train()(x)  # train() makes no difference to the frozen one
print_shapes(x=x, y_bn=y_bn, y_frozen=y_frozen)
print("largest difference:", f"{(y_bn - y_frozen).abs().max():.1e}")
print("trainable parameters: BatchNorm2d", sum(p.numel() for p in bn.parameters()),
      "| FrozenBatchNorm2d", sum(p.numel() for p in frozen.parameters()))
assert y_frozen.shape == x.shape and torch.allclose(y_bn, y_frozen, atol=1e-6)

# %% [markdown]
# ### 7.2 Frozen BN from scratch: no normalisation at all
#
# A model trained from scratch has no ImageNet statistics to freeze. Built fresh, a
# `FrozenBatchNorm2d` holds $\mu = 0, \sigma^2 = 1, \gamma = 1, \beta = 0$ and keeps them forever: every
# norm layer is the identity, and the network is a ResNet *without* normalisation.
#
# > **Common mistake:** "without normalisation the network can never learn to rescale a channel". It
# > can: scaling the filter of output channel $c$ scales channel $c$, so the convs can learn any scale
# > a norm layer could. What is missing is a good *starting point*. ResNet's standard initialisation
# > (He et al. 2015, which the library uses) gives a residual branch an output of about the scale of
# > its input, and the block then *adds* the two: $\operatorname{Var}(\mathbf{x} +
# > \mathcal{F}(\mathbf{x})) \approx 2 \operatorname{Var}(\mathbf{x})$, so the activations grow by about
# > $\sqrt 2$ per block, and the gradients flowing back grow the same way. Training then starts with
# > gradients whose scale depends on the depth by orders of magnitude, and a learning rate that suits
# > one end of the network is far off for the other. Fixup
# > (Zhang, Dauphin & Ma 2019) trains ResNets with no normalisation layer at all by changing only the
# > initialisation; its main rule is to start the last layer of every residual branch at zero, so that
# > each block starts as the identity.
#
# We measure it at initialisation, for a ResNet-101 (23 blocks in res4) with frozen identity BN, with
# frozen identity BN and Fixup's zero rule, and with GroupNorm (same seed, one shapes image, 128×128):
# the standard deviation of the activations after the stem and after every block, and of the
# gradient that the loss $L = \langle C_5, \mathbf{g} \rangle$ ($\mathbf{g}$ a fixed random tensor, so
# $\partial L / \partial C_5 = \mathbf{g}$ has standard deviation 1 at the output) sends back to each of
# them. We expect frozen BN to grow block after block in both directions, the other two not to.

# %%
transform = ImageTransform(min_size=128, max_size=128)
X = transform.batch_images([transform.normalize(ShapesDataset(100, seed=1)[i][0]) for i in range(3)])
assert X.shape == (3, 3, 128, 128)


def block_scales(body, x):
    """Std of the activations after the stem and after every block, and of dL/d(them) for L = <C5, g>."""
    with torch.enable_grad():
        h = body.stem(x).requires_grad_()  # a leaf, so that its gradient is kept
        acts, ends = [h], []
        for stage in STAGE_NAMES[1:]:
            for block in getattr(body, stage):
                h = block(h)
                h.retain_grad()
                acts.append(h)
            ends.append(len(acts) - 1)  # the index of C2, C3, C4, C5
        g = torch.randn(h.shape, generator=torch.Generator().manual_seed(0))  # (B, C5 channels, h, w)
        (h * g).sum().backward()
    return [a.std().item() for a in acts], [a.grad.std().item() for a in acts], ends


def zero_last_conv_of_each_branch(body):  # Fixup's first rule (its other rules are left out here)
    for block in body.modules():
        if isinstance(block, (BasicBlock, Bottleneck)):
            nn.init.zeros_(block.conv3.weight if isinstance(block, Bottleneck) else block.conv2.weight)
    return body

# %%
variants = {"frozen BN (identity)": lambda: ResNetBody(101, norm="frozen_bn"),
            "frozen BN + Fixup's zero rule": lambda: zero_last_conv_of_each_branch(ResNetBody(101, norm="frozen_bn")),
            "GroupNorm": lambda: ResNetBody(101, norm="gn")}
scales = {}
for name, build in variants.items():
    torch.manual_seed(0)  # the same conv weights in all three (the zero rule then overwrites some)
    scales[name] = block_scales(build().eval(), X[:1])
ends = scales["GroupNorm"][2]
res4 = slice(ends[1] + 1, ends[2] + 1)  # the blocks of res4
for name, (act, grad, _) in scales.items():
    growth = (act[ends[2]] / act[ends[1]]) ** (1 / (ends[2] - ends[1]))
    print(f"{name:<30} std of C2..C5: " + " ".join(f"{act[e]:9.3g}" for e in ends)
          + f" | gradient at the stem / at C5: {grad[0] / grad[-1]:8.3g} | growth per res4 block: {growth:.2f}")
assert scales["frozen BN (identity)"][0][-1] > 100 * scales["GroupNorm"][0][-1]

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), layout="constrained", sharex=True)
for n, (name, (act, grad, _)) in enumerate(scales.items()):
    axes[0].semilogy(act, ".-", color=f"C{n}", label=name)
    axes[1].semilogy(grad, ".-", color=f"C{n}", label=name)
starts = [0] + [e + 1 for e in ends[:-1]]  # the first block of res2..res5
for ax in axes:
    for k, (a, b) in enumerate(zip(starts, ends)):
        ax.axvspan(a - 0.5, b + 0.5, color="0.92" if k % 2 else "0.97", zorder=0)
        ax.text((a + b) / 2, 1.02, f"res{k + 2}", transform=ax.get_xaxis_transform(), ha="center", fontsize=8)
    ax.set_xlabel("position in ResNet-101 (0 = stem output, then one point per residual block)")
    ax.grid(alpha=0.3, which="major")
axes[0].set_ylabel("std of the activations (log scale)")
axes[1].set_ylabel("std of dL/d(activation) (log scale)")
axes[0].legend(fontsize=8, loc="upper left")
fig.suptitle("At initialisation: activations (left) and gradients (right) through depth, three ways to start", y=1.06)
plt.show()

# %% [markdown]
# With frozen identity BN both curves grow by a roughly constant factor per block (1.49 per res4 block
# for the activations, printed above, near $\sqrt 2$; the gradient curve falls at about the same
# slope); the gradient reaching the stem is orders of magnitude larger than the one leaving C5.
# With Fixup's zero rule every branch starts at zero, each block passes its input on unchanged, and
# only the four projection shortcuts change the scale: both curves are flat, with the very same
# "missing" normalisation. So the trouble is the starting point, not a lack of what the network can
# express. GroupNorm keeps every block within about 0.7–3, with a drop at the first block of res3,
# res4 and res5: there the
# shortcut is a projection with *its own* norm layer, so both summands are normalised and the scale
# restarts, while within a stage the un-normalised identity path adds up block after block.
#
# Frozen BN with *identity* statistics is the worst case. A checkpoint carries real statistics,
# measured on data; we make some: we run a BatchNorm ResNet-101 (same seed, hence the same conv weights)
# once in train mode on two images, with `momentum=None` (running averages = this batch's statistics),
# copy its state into the frozen-BN model, and measure again. We expect the activations to keep their
# scale now; compare the gradient ratio with the three printed above.

# %%
torch.manual_seed(0)
bn101 = ResNetBody(101, norm="bn", trainable_layers=5)  # trainable_layers: section 8 (default 3); 5 = no stage frozen
for m in bn101.modules():
    if isinstance(m, nn.BatchNorm2d):
        m.momentum = None  # cumulative average: after one batch, exactly that batch's statistics
        m.reset_running_stats()
bn101.train()(X[:2])
torch.manual_seed(0)
calibrated = ResNetBody(101, norm="frozen_bn").eval()
calibrated.load_state_dict(bn101.state_dict())
assert torch.equal(calibrated.res5[0].conv1.weight, bn101.res5[0].conv1.weight)  # same convs as above
act, grad, _ = block_scales(calibrated, X[:1])
print("ResNet-101 frozen BN with measured statistics, std of C2..C5: " + "  ".join(f"{act[e]:.2f}" for e in ends)
      + f" | gradient at the stem / at C5: {grad[0] / grad[-1]:.3g}")
assert max(act) < 10

# %% [markdown]
# The activations now keep their scale through all four stages. The gradient still grows towards the
# stem: less than with identity statistics, far more than with GroupNorm (the ratios printed). Real
# statistics fix the forward pass of a random network, not its backward pass; fine-tuning starts from
# convs that were trained together with their statistics, which this network lacks. From scratch,
# frozen BN has nothing right to freeze.
#
# ### 7.3 BatchNorm with tiny batches
#
# Then why not ordinary BatchNorm, which learns its $\gamma, \beta$ and normalises with batch
# statistics? Because a detector's batch is 1–2 large images per GPU, and the statistics of 1–2 images
# are noisy.
#
# **The output of an image depends on its batch-mates.** In train mode BN normalises image 0 with the
# mean and variance of the whole batch, so the same image gets different features when its partner
# changes. GroupNorm (Wu & He 2018) normalises each image on its own, over 32 groups of channels, so
# its output cannot depend on the batch. We feed image 0 with two different partners through
# a fresh ResNet-18 in train mode and measure how much its C2–C5 change (norm of the difference over
# the norm). We expect a change for BN that grows with depth, and exactly 0 for GN.
#
# **With one image and a small input, BN cannot run at all:** for a 32×32 image C5 is 1×1, so the
# last BN layers see a single value per channel and cannot compute a variance. The cell tries that too.

# %%
torch.manual_seed(0)
bodies = {kind: ResNetBody(18, norm=kind, trainable_layers=5).train() for kind in ("bn", "gn")}
for kind, body in bodies.items():
    with_1, with_2 = body(X[[0, 1]]), body(X[[0, 2]])
    change = [((a[0] - b[0]).norm() / a[0].norm()).item() for a, b in zip(with_1, with_2)]
    print(f"{kind}: image 0's C2..C5 change by " + "  ".join(f"{c:6.1%}" for c in change))
    if kind == "gn":
        assert max(change) < 1e-5
tiny = torch.randn(1, 3, 32, 32)  # (1, 3, 32, 32): C5 is 1x1
try:
    bodies["bn"](tiny)
except ValueError as err:
    print("BatchNorm, train mode:", err)
C5_gn = bodies["gn"](tiny)[-1]
print_shapes(GroupNorm_C5=C5_gn)
assert C5_gn.shape == (1, 512, 1, 1)

# %% [markdown]
# The change grows with depth because every BN layer adds its own error and the next layers amplify
# it. And the statistics are noisy in themselves: the mean of $b$ images errs from the mean over all
# images by the images' spread over $\sqrt b$, largest at the 1–2 images of detection; at test time BN
# then normalises with running averages, other numbers than it trained with. On ImageNet, Wu & He
# (2018, abstract) report 10.6% lower error for a ResNet-50 with GroupNorm than with BN when both are
# trained with 2 images per batch.

# %% [markdown]
# ## 8. Which stages train: `trainable_layers`
#
# The second setting that changes with pretrained weights is which stages learn at all.
# `ResNetBody(trainable_layers=k)` (default 3) trains only the last $k$ of (stem, res2, res3, res4,
# res5) and freezes the others; torchvision's `_resnet_fpn_extractor` does the same with
# `requires_grad`, stage for stage (the library also makes sure no batch statistics move in a frozen
# stage, see Exercise 2), and its
# `maskrcnn_resnet50_fpn` picks $k$ with `_validate_trainable_layers`: 3 when it starts from ImageNet
# weights (the stem and res2 frozen), and all 5 from scratch, where it ignores, with a warning, any
# value you pass.
# Detectron says it the other way round, `FREEZE_AT = 2`: freeze the stem and the first residual stage.
# We check our stages against torchvision's and ask its validator:

# %%
# NBVAL_CHECK_OUTPUT
total = num_params(ResNetBody(50, norm="frozen_bn", trainable_layers=5))
for k in range(6):
    ours = ResNetBody(50, norm="frozen_bn", trainable_layers=k)
    tv = torchvision.models.resnet50(weights=None, norm_layer=torchvision.ops.FrozenBatchNorm2d)
    _resnet_fpn_extractor(tv, k)  # sets requires_grad on tv's parameters, in place
    trained = {torchvision_name(n) for n, p in ours.named_parameters() if p.requires_grad}
    assert trained == {n for n, p in tv.named_parameters() if p.requires_grad and not n.startswith("fc.")}
    stages = [s for s in STAGE_NAMES if any(p.requires_grad for p in getattr(ours, s).parameters())]
    n = sum(p.numel() for p in ours.parameters() if p.requires_grad)
    print(f"k = {k}: trains {', '.join(stages) or 'nothing':<30} {n / 1e6:5.1f} M of {total / 1e6:.1f} M parameters")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    print("torchvision's k: pretrained", _validate_trainable_layers(True, None, 5, 3),
          "| from scratch", _validate_trainable_layers(False, None, 5, 3),
          "| from scratch, asked for 3:", _validate_trainable_layers(False, 3, 5, 3))
assert len(caught) == 1 and "no effect" in str(caught[0].message)

# %% [markdown]
# Why freeze what ImageNet trained? Fast R-CNN (Girshick 2015, Sec. 4.5, "Which layers to fine-tune?")
# measured it: in its smaller networks conv1 is generic, and learning it or not makes no meaningful
# difference to mAP ("a well-known fact", it says); for VGG16, fine-tuning from conv2_1 instead of
# conv3_1 gained only 0.3 points and trained 1.3× slower, and fine-tuning conv1_1 too ran out of GPU
# memory. The first stages are generic, and they work on the largest maps, so they are the most
# expensive to train. That second reason we can measure: a training step of ResNet-50 on
# torchvision's usual batch of 2 images of 800×1344, on PyTorch's `meta` device (shapes only, no
# arithmetic, so it costs nothing). Nothing before res3 needs a gradient when k = 3, so autograd
# neither stores those activations nor runs the backward pass through them.

# %%
# NBVAL_CHECK_OUTPUT
def training_step_cost(k, images=(2, 3, 800, 1344)):
    """(forward + backward MACs, bytes that autograd saves for the backward pass) of one step."""
    with torch.device("meta"):
        body = ResNetBody(50, norm="frozen_bn", trainable_layers=k)
        x = torch.empty(images)  # (2, 3, 800, 1344)
    saved = []
    with torch.enable_grad(), FlopCounterMode(display=False) as counter, torch.autograd.graph.saved_tensors_hooks(
            lambda t: saved.append(t.numel() * t.element_size()) or t, lambda t: t):
        sum(C.sum() for C in body(x)).backward()
    return counter.get_total_flops() // 2, sum(saved)


step = {k: training_step_cost(k) for k in (5, 3)}
for k, (m, b) in step.items():
    print(f"k = {k}: {m / 1e9:6.1f} G MACs, {b / 2**30:5.2f} GiB saved for backward")
print(f"k = 3 against k = 5: {step[3][0] / step[5][0]:.0%} of the arithmetic, {step[3][1] / step[5][1]:.0%} of the memory")
assert step[3][0] < step[5][0] and step[3][1] < step[5][1]

# %% [markdown]
# Freezing two of the five stages cuts the cost of a step by the share printed above, at (by Fast
# R-CNN's measurement) almost no cost in accuracy. From scratch there is nothing to keep: frozen random
# filters would stay random, which is why torchvision trains all five stages then, and so does
# `shapes_tiny`. The two settings are independent but for one detail. The norm layers decide how every
# stage normalises (frozen BN fixes the statistics in all five stages, whatever $k$); $k$ decides whose
# convs learn. The detail: with ordinary BatchNorm, `requires_grad=False` alone does not freeze a stage,
# and Exercise 2 asks you what else is needed.
#
# | situation | norm | `trainable_layers` | why |
# |---|---|---|---|
# | fine-tune a pretrained ResNet, 1–2 images per GPU (the paper, torchvision's `resnet50_fpn`) | `frozen_bn` | 3 | ImageNet's statistics kept, batch statistics would be noise; the generic, costly stem and res2 frozen |
# | from scratch, large batches (or BN synchronised across GPUs) | `bn` | 5 | statistics of many images are accurate; nothing to keep |
# | from scratch, small batches (`shapes_tiny`: 8 images on a CPU) | `gn` | 5 | per image, batch-size independent |
#
# He, Girshick and Dollár (2018, "Rethinking ImageNet Pre-training") train Mask R-CNN from scratch with
# GroupNorm or synchronised BN; `shapes_tiny` follows them:

# %%
# NBVAL_CHECK_OUTPUT
for name, cfg in CONFIGS.items():
    print(f"{name:<13} depth {cfg['depth']:>3}, norm {cfg['norm']!r:<11}, trainable stages {cfg['trainable_layers']}")
assert type(trained_body.res2[0].bn1) is nn.GroupNorm and trained_body.trainable_layers == 5

# %% [markdown]
# ## Summary
#
# - The ResNet body is a stem (7×7 conv stride 2 + 3×3 max pool stride 2) and four stages res2–res5
#   whose outputs C2–C5 have strides 4, 8, 16, 32 (widths 64–512 for ResNet-18, 256–2048 for ResNet-50).
#   There is no C1: the stem's output is already at C2's stride.
# - Every stride-2 layer maps a side $n$ to $\lceil n/2 \rceil$ by $\lfloor (n+2p-k)/s \rfloor + 1$, so
#   "H/4 … H/32" means rounded up: 100×75 gives C2 25×19 and C5 4×3. Mask R-CNN pads to a multiple
#   of 32 so the sizes are exact inside the model.
# - A basic block is two 3×3 convs; a bottleneck is 1×1 reduce, 3×3, 1×1 expand ×4. Its typical block
#   carries 4× the channels for about the parameters and multiply-accumulates of a basic block; the
#   first block of a stage pays for its projection shortcut. Our parameter names match torchvision's.
# - Cell $i$ of C_l sees a square of $r_l$ pixels centred on pixel $i \cdot 2^l$, because every layer
#   pads by $\lfloor k/2 \rfloor$; for ResNet-18 the fields of C4 and C5 are larger than a 128-px image.
#   Computed with $r \leftarrow r + (k-1)j$, measured with NaN probes.
# - Frozen BN is a fixed affine map: right for pretrained statistics. With the identity statistics of
#   a fresh model the network is unnormalised; the convs could learn any scale, but from the standard
#   initialisation activations and gradients grow about $\sqrt2$ per block (Fixup's zero rule fixes
#   both; measured statistics fix the activations). BN needs many images per batch: with 1–2, an image's features
#   depend on its batch-mates, and BN cannot run on a 1×1 map. GroupNorm has neither problem, which is
#   why `shapes_tiny` uses it.
# - `trainable_layers = 3` (torchvision's default with ImageNet weights; Detectron's `FREEZE_AT = 2`)
#   freezes the stem and res2: generic layers on the largest maps, whose training costs much and buys
#   little (Fast R-CNN Sec. 4.5). From scratch all five stages train.

# %% [markdown]
# ## Exercises
#
# Worked solutions, for teachers, are in `solutions/01_backbone.py`. Each check runs the library on
# inputs you did not choose and says whether your answer is right.
#
# ### Exercise 1 — Predict · about 10 min: a shortcut that rounds down
#
# ResNet-D (He et al. 2019, "Bag of Tricks for Image Classification", Sec. 4, "Model Tweaks") changes the projection
# shortcut of the first block of res3, res4 and res5: instead of a 1×1 conv with stride 2, it is a
# 2×2 average pool with stride 2 (`nn.AvgPool2d(2, stride=2)`, PyTorch's defaults: no padding,
# `ceil_mode=False`), followed by a 1×1 conv with stride 1. Everything else is our ResNet-18. Work out
# on paper what this does to an input of H × W, then write `resnet_d_sizes(H, W)`: the `(h, w)` of C2,
# C3, C4, C5, or `None` if the forward pass fails. The check builds this network and runs it, on
# sizes you do not see. Then say in one sentence which input sides it accepts, and why library
# implementations of ResNet-D pass `ceil_mode=True` to that pool.
#
# *Hint:* apply the size formula of section 3 to the pool, and compare it with the 3×3 branch
# beside it for an odd side.

# %%
def resnet_d_sizes(H, W):
    raise NotImplementedError  # your code here


# %%
from mrcnn_teach.exercises.nb01 import check_bottleneck_cost, check_freeze_stages, check_resnet_d_sizes

check_resnet_d_sizes(resnet_d_sizes);

# %% [markdown]
# ### Exercise 2 — Debug · about 15 min: a frozen stage that keeps moving
#
# A colleague fine-tunes an ImageNet ResNet with ordinary BatchNorm (large batches, so `norm="bn"`) and
# freezes its first stages with `buggy_freeze_stages`. The gradients of the frozen stages are indeed
# `None`, and yet after training, the stem no longer computes what the checkpoint's stem computed.
# Find out why, and write `my_freeze_stages(body, k)` that freezes the first $5 - k$ stages for good:
# after any number of training steps, each frozen stage computes the same function as before, in
# train mode and in eval mode; the last $k$ stages train as usual, BatchNorm included. Do not call
# `mrcnn_teach.backbone.freeze_stages` or `norm.freeze_batchnorm`: they are the solution (the check
# refuses them).
#
# *Hint:* run `body.stem` twice in train mode on two different batches, and look at
# `body.stem.bn1.running_mean` before and after. `FrozenBatchNorm2d` is imported above.

# %%
def buggy_freeze_stages(body, k):
    """Train only the last k of (stem, res2, res3, res4, res5); the others must stay exactly as loaded."""
    for i, name in enumerate(("stem", "res2", "res3", "res4", "res5")):
        getattr(body, name).requires_grad_(i >= 5 - k)
    return body


# %%
def my_freeze_stages(body, k):
    raise NotImplementedError  # your code here


# %%
check_freeze_stages(my_freeze_stages);

# %% [markdown]
# ### Exercise 3 — Predict · about 10 min: what a bottleneck costs
#
# Work out by hand the parameters and the multiply-accumulates of the first block that
# `make_stage(Bottleneck, in_channels, planes, num_blocks, stride, nn.BatchNorm2d)` builds, on an input of
# h × w cells, and write `bottleneck_cost(in_channels, planes, stride, h, w)` returning both. Convs have
# no bias; each BatchNorm has a weight and a bias per channel; a conv costs its number of weights at
# every output cell; count the convs only. Mind where torchvision puts the stride (section 4), and
# the projection shortcut when the stride or the width changes. Check yourself first on res3[0] of
# ResNet-50 from section 4 (there, h = w = 32), then on the cases the check runs, some with odd sides.
# Use arithmetic only: no module, no `FlopCounterMode` (that is how the check computes the answer,
# and it refuses them). Then: by how much would res3[0]'s arithmetic shrink if the stride sat on the
# first 1×1 conv, as in the 2016 paper, and why might torchvision accept that cost?
#
# *Hint:* the output side is the one from section 3, $\lceil n / s \rceil$. For the last question,
# torchvision's comment above `class Bottleneck` says what v1.5 buys.

# %%
def bottleneck_cost(in_channels, planes, stride, h, w):
    raise NotImplementedError  # your code here


# %%
check_bottleneck_cost(bottleneck_cost);

# %% [markdown]
# Next: [02 — FPN](02_fpn.ipynb)
