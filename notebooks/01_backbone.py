# %% [markdown]
# # 01 — Backbone: ResNet and the feature maps C2–C5
#
# The first box of Mask R-CNN's Figure 1 is a convolutional *backbone* that turns the image into
# feature maps. The paper's best models use a ResNet (He et al. 2016) of depth 50 or 101 with an FPN
# on top (Mask R-CNN Sec. 3, "Network Architecture"); our `shapes_tiny` model uses a ResNet-18. This
# notebook builds the ResNet body of `mrcnn_teach/backbone.py` and looks at what it outputs, and at
# the one part of it that changes between fine-tuning and training from scratch: normalisation.
#
# **You will learn**
# - how ResNet's stem and four stages produce C2, C3, C4, C5 at strides 4, 8, 16, 32, and what their
#   sizes are when the input side is not a multiple of 32 (the conv arithmetic
#   $\lfloor (n + 2p - k)/s \rfloor + 1$ rounds *up*);
# - the basic block (ResNet-18/34) and the bottleneck block (ResNet-50/101), with their channel counts;
# - what the trained backbone's feature maps show compared with a randomly initialised one;
# - why Mask R-CNN freezes BatchNorm when it fine-tunes a pretrained ResNet, why frozen BN is wrong for
#   training from scratch, why ordinary BN breaks with 1–2 images per batch, and what GroupNorm fixes.
#
# **Builds on:** [00 — Tour](00_tour.ipynb) (where the backbone sits in the pipeline).
#
# **Run time:** about 15 s on a 2-core CPU; the first notebook you run also trains the shared shapes
# model once, about 3 minutes; later notebooks load it in a second.

# %%
from mrcnn_teach.notebook import setup, show_source, print_shapes

import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from mrcnn_teach import norm
from mrcnn_teach.backbone import RESNET_SPECS, ResNetBody, Stem, make_stage
from mrcnn_teach.configs import CONFIGS
from mrcnn_teach.datasets import ShapesDataset
from mrcnn_teach.norm import FrozenBatchNorm2d
from mrcnn_teach.pretrained import trained_shapes_model
from mrcnn_teach.transform import ImageTransform

torch.set_grad_enabled(False)  # we only look at forward passes in this notebook
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
# The library keeps the max pool in a `Stem` with conv1 (as torchvision does) and calls the four
# stages `res2` … `res5`. The body's `forward` just runs them in order:

# %%
show_source(ResNetBody.forward)

# %% [markdown]
# The module docstring of `backbone.py` holds the table of stages, strides and channel counts; the
# depth decides the block type and how many blocks each stage stacks (ResNet Table 1):

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
show_source(Stem)

# %%
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
# $n$. The seed tutorial's comments "H/4 … H/32" are true for sides that are multiples of 32 and
# loose otherwise.
#
# Take a 100×75 input (height 100, width 75). Below we trace it through every stride-2 layer with the
# formula, next to the naive $n / \text{stride}$. We expect C5 to be 4×3, not 3.125×2.34 (and not the
# 3×2 that integer division would give).

# %%
def conv_out(n, kernel, stride, padding):
    """Output side of a conv / pool layer: floor((n + 2p - k) / s) + 1."""
    return (n + 2 * padding - kernel) // stride + 1


# The layers that change the size, in order: (name, kernel, stride, padding, C_l it ends).
STRIDED = [("stem conv1 7x7", 7, 2, 3, None), ("stem max pool 3x3", 3, 2, 1, "C2"),
           ("res3.0 conv 3x3", 3, 2, 1, "C3"), ("res4.0 conv 3x3", 3, 2, 1, "C4"),
           ("res5.0 conv 3x3", 3, 2, 1, "C5")]

# %%
# NBVAL_CHECK_OUTPUT
H, W = 100, 75
h, w, stride = H, W, 1
expected = {}
print(f"{'layer':<19}{'k':>3}{'s':>3}{'p':>3}{'out h x w':>12}   {'naive H/stride x W/stride':>26}")
for name, k, s, p, level in STRIDED:
    h, w, stride = conv_out(h, k, s, p), conv_out(w, k, s, p), stride * s
    print(f"{name:<19}{k:>3}{s:>3}{p:>3}{f'{h} x {w}':>12}   {f'{H / stride:g} x {W / stride:g}':>26}"
          + (f"   -> {level}" if level else ""))
    if level:
        expected[level] = (h, w)

# %% [markdown]
# The 1×1 stride-2 projection on the shortcut of each stage's first block must land on the same size
# as the 3×3 branch, or the residual sum `out += identity` would fail. With $k=1, p=0$ the formula
# gives $\lfloor (n-1)/2 \rfloor + 1 = \lceil n/2 \rceil$ as well:

# %%
# NBVAL_CHECK_OUTPUT
for n in (25, 13, 7, 19, 10, 5):
    print(f"n = {n:>2}: 3x3/s2/p1 -> {conv_out(n, 3, 2, 1)}, 1x1/s2/p0 -> {conv_out(n, 1, 2, 0)}")
    assert conv_out(n, 3, 2, 1) == conv_out(n, 1, 2, 0) == -(-n // 2)

# %% [markdown]
# Now the real thing: a random ResNet-18 body on a (1, 3, 100, 75) input. Its shapes must be the ones
# the formula predicted, with ResNet-18's channels 64, 128, 256, 512.

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
# The same picture for every input side from 64 to 160: the true side of C3 and C5 (solid steps) and
# the naive $n/8$, $n/32$ (dashed). The steps sit on or above the lines: a partial window at the border
# still produces an output pixel.

# %%
sides = np.arange(64, 161)
fig, ax = plt.subplots(figsize=(8, 4))
for level, color in ((3, "C0"), (5, "C3")):
    true_side = [conv_out(conv_out(n, 7, 2, 3), 3, 2, 1) for n in sides]  # stem: stride 4
    for _ in range(level - 2):  # one stride-2 3x3 conv per stage after res2
        true_side = [conv_out(n, 3, 2, 1) for n in true_side]
    ax.step(sides, true_side, where="post", color=color, label=f"C{level}: true side")
    ax.plot(sides, sides / 2**level, "--", color=color, label=f"C{level}: naive n / {2**level}")
ax.axvline(100, color="0.5", lw=0.8)
ax.annotate("n = 100: C3 is 13, C5 is 4", (100, 13), xytext=(106, 17), fontsize=8,
            arrowprops=dict(arrowstyle="->", color="0.4"))
ax.set_xlabel("input side n (pixels)")
ax.set_ylabel("feature-map side (pixels)")
ax.set_title("Feature-map side vs input side: ResNet rounds up, ceil(n / stride)")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# Inside Mask R-CNN this rarely shows: the transform pads every batch to a multiple of 32
# (notebook 00), so C_l is exactly $H / 2^l$. It matters whenever the backbone runs on its own or
# with `size_divisible=1`, and it is why the FPN upsamples each coarser map to the *exact* size of the
# finer one instead of "×2" ([02 — FPN](02_fpn.ipynb)): for our 100×75 input, C5 upsampled ×2 is 8×6,
# but C4 is 7×5.
#
# **Erratum (seed, stage 1).** The seed builds its first stage as `Sequential(conv1, bn1, relu,
# maxpool)` and comments its output as `(B, 64, H/4, W/4)`. The stride 4 is right, because the max
# pool is inside. But ResNet's *conv1* stage ends at stride 2 (Table 1: 112×112 for a 224×224 input);
# the pool is the first layer of conv2_x. So that "stage1" spans conv1 and part of conv2, its output is
# $\lceil\lceil H/2\rceil/2\rceil$, 25×19 for our input rather than 25×18.75, and it is not "C1". We
# run it:

# %%
seed_stage1 = nn.Sequential(stem.conv1, stem.bn1, nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1))
out = seed_stage1(torch.randn(1, 3, H, W))
print_shapes(seed_stage1_output=out)
print(f"seed comment H/4 x W/4 = {H / 4:g} x {W / 4:g}; conv1 alone gives "
      f"{conv_out(H, 7, 2, 3)} x {conv_out(W, 7, 2, 3)} (stride 2)")
assert out.shape == (1, 64, 25, 19) == (1, 64, *expected["C2"])

# %% [markdown]
# ## 4. Residual blocks: basic (ResNet-18) and bottleneck (ResNet-50)
#
# A residual block computes $\mathbf{y} = \mathcal{F}(\mathbf{x}) + \mathbf{x}$ (ResNet Eq. 1): the layers
# only learn the *change* to their input, which keeps very deep networks trainable. When the block
# changes the size or the width, the shortcut becomes a 1×1 projection, $\mathbf{y} = \mathcal{F}(\mathbf{x})
# + W_s \mathbf{x}$ (Eq. 2; `downsample` in the code). The library borrows torchvision's two blocks so
# that its parameter names match torchvision's ImageNet checkpoints:
#
# - **basic block** (ResNet-18/34): 3×3 conv → norm → ReLU → 3×3 conv → norm, add, ReLU;
#   width in = width out.
# - **bottleneck** (ResNet-50/101, ResNet Sec. 4.1): 1×1 conv that *reduces* the width to `planes`,
#   3×3 conv at that width, 1×1 conv that *expands* it 4× (`expansion = 4`). The expensive 3×3 conv runs
#   on a quarter of the channels, so a stage can be four times wider at about the same cost.
#   (torchvision, and hence we, put the stride on the 3×3 conv, the "ResNet v1.5" variant; the 2016
#   paper put it on the first 1×1.)

# %%
show_source(BasicBlock.forward, Bottleneck.forward)

# %% [markdown]
# `make_stage` stacks the blocks of one stage; only the first may change stride and width, and it
# gets the projection shortcut:

# %%
show_source(make_stage)

# %% [markdown]
# The first block of res3 in each network, layer by layer. We expect ResNet-18's block to go
# 64 → 128 → 128 with two 3×3 convs, and ResNet-50's to go 256 → 128 → 128 → 512 (1×1, 3×3, 1×1),
# each with a 1×1 stride-2 projection on the shortcut. Then the parameters of that first block and of
# the second one, which keeps the width and has no projection.

# %%
# NBVAL_CHECK_OUTPUT
def describe_block(block):
    for name, module in block.named_modules():
        if isinstance(module, nn.Conv2d):
            k, s = module.kernel_size[0], module.stride[0]
            print(f"    {name:<13} {k}x{k} conv, stride {s}: {module.in_channels:>4} -> {module.out_channels:>4}")


def num_params(module):
    return sum(p.numel() for p in module.parameters())


torch.manual_seed(0)
body50 = ResNetBody(depth=50, norm="gn").eval()
for name, body in (("ResNet-18", body18), ("ResNet-50", body50)):
    print(f"{name}, res3[0] ({type(body.res3[0]).__name__}):")
    describe_block(body.res3[0])
    print(f"    parameters: res3[0] {num_params(body.res3[0]):,}, res3[1] {num_params(body.res3[1]):,}")

# %% [markdown]
# The first block pays for its projection shortcut (256 × 512 weights in ResNet-50). The typical block,
# res3[1], shows the point of the bottleneck: it carries a 512-wide map with slightly fewer parameters
# than the basic block spends on a 128-wide one. Over the whole body, C2–C5 are 4× wider in
# ResNet-50: 256, 512, 1024, 2048 channels instead of 64, 128, 256, 512. We run ResNet-50 on a small
# 128×128 input and assert every shape:

# %%
# NBVAL_CHECK_OUTPUT
C50 = body50(torch.randn(1, 3, 128, 128))
print_shapes(C2=C50[0], C3=C50[1], C4=C50[2], C5=C50[3])
for level, (C, channels) in enumerate(zip(C50, (256, 512, 1024, 2048)), start=2):
    assert C.shape == (1, channels, 128 // 2**level, 128 // 2**level)
for name, body in (("ResNet-18", body18), ("ResNet-50", body50)):
    print(f"{name}: C2..C5 channels {body.out_channels}, {sum(p.numel() for p in body.parameters()):,} parameters")

# %% [markdown]
# **Erratum (seed, pretrained weights).** The seed loads its backbone with
# `torchvision.models.resnet50(pretrained=True)`. That argument has been deprecated since torchvision
# 0.13; the current API is `resnet50(weights=ResNet50_Weights.IMAGENET1K_V1)` (or `weights="DEFAULT"`).
# Either one *downloads* about 100 MB of ImageNet weights, which these notebooks never do. Building the
# network without weights is free, and the old argument still warns:

# %%
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    tv_resnet50 = torchvision.models.resnet50(pretrained=False)  # random weights, nothing downloaded
for w in caught:
    print("torchvision says:", w.message)
assert any("deprecated" in str(w.message) for w in caught)

# %% [markdown]
# Our `ResNetBody(50)` holds the same tensors as torchvision's ResNet-50 minus its classifier, only
# the stage names differ (`layer1` is our `res2`, `conv1`/`bn1` sit in our `stem`). So an ImageNet state
# dict that you download yourself loads after a renaming; for a whole torchvision Mask R-CNN
# checkpoint, `mrcnn_teach.load_torchvision_weights(model, path)` does it.

# %%
# NBVAL_CHECK_OUTPUT
def torchvision_name(ours):
    """res2.0.conv1.weight -> layer1.0.conv1.weight; stem.conv1.weight -> conv1.weight."""
    if ours.startswith("stem."):
        return ours[len("stem."):]
    stage, rest = ours.split(".", 1)
    return f"layer{int(stage[3:]) - 1}.{rest}"


ours = ResNetBody(depth=50, norm="frozen_bn").state_dict()
theirs = {k: v for k, v in tv_resnet50.state_dict().items()
          if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
renamed = {torchvision_name(k): v.shape for k, v in ours.items()}
assert renamed == {k: v.shape for k, v in theirs.items()}
print(f"{len(ours)} tensors, names and shapes match torchvision's resnet50 (without fc)")

# %% [markdown]
# ## 5. What a trained backbone sees
#
# Shape is only half the story. Below, the same held-out shapes image goes through the ResNet-18 body
# of the trained `shapes_tiny` model (500 steps of Mask R-CNN training from scratch) and through a
# freshly initialised one, and we look at C3 (128 channels, 16×16): the six channels with the largest
# spatial variance, each scaled to [0, 1]. Random convolutions are not blind, they already respond to
# colour and contrast, so both rows see the shapes. Look for the difference: the trained channels
# are clean object maps with a dark background, while the random ones are speckled and also respond
# to the background's colour gradient and the image border.

# %%
model = trained_shapes_model()
trained_body = model.backbone.body
torch.manual_seed(1)
random_body = ResNetBody(depth=18, norm="gn").eval()

image, target = ShapesDataset(100, seed=1)[3]
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
# ## 6. Normalisation: frozen BN, BN and GroupNorm
#
# Every conv in the body is followed by a normalisation layer. Which one is not a detail: it is the
# difference between a backbone that trains and one that does not. `norm.py` offers three:

# %%
show_source(norm.norm_layer, norm._group_norm)

# %% [markdown]
# ### 6.1 Frozen BatchNorm is a fixed affine map
#
# BatchNorm (Ioffe & Szegedy 2015) normalises each channel with a mean $\mu$ and variance $\sigma^2$ and
# then scales and shifts it with learned $\gamma, \beta$:
# $y = \gamma \,(x - \mu)/\sqrt{\sigma^2 + \epsilon} + \beta$. In training, $\mu, \sigma^2$ come from
# the current batch; at test time from running averages. Mask R-CNN fine-tunes an ImageNet ResNet
# with 2 images per GPU (Sec. 3.1), far too few for batch statistics, so Detectron and torchvision
# *freeze* the ImageNet $\mu, \sigma^2, \gamma, \beta$. What is left is a per-channel
# $y = x \cdot \text{scale} + \text{shift}$ with no trainable parameter at all:

# %%
show_source(FrozenBatchNorm2d.forward)

# %% [markdown]
# A trained BatchNorm in eval mode and a FrozenBatchNorm2d loaded from its state dict compute the same
# function, in train mode or not. We give a BatchNorm made-up statistics and check:

# %%
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
# ### 6.2 Frozen BN from scratch: no normalisation at all
#
# A model trained from scratch has no ImageNet statistics to freeze. Built fresh, a
# `FrozenBatchNorm2d` holds $\mu = 0, \sigma^2 = 1, \gamma = 1, \beta = 0$ and keeps them forever: every
# norm layer is the identity, and the network is a ResNet *without* normalisation. Nothing then
# controls the scale of the activations. Each residual block adds its branch to its input,
# $\mathbf{y} = \mathcal{F}(\mathbf{x}) + \mathbf{x}$, so the variance grows block after block, and the
# deeper the network the larger the output.
#
# We measure it: the standard deviation of the activations after the stem and after every residual
# block, for a ResNet-50 and a ResNet-101 with frozen identity BN and with GroupNorm (same seeds, same
# 4 shapes images at 128×128). We expect GroupNorm to stay near 1 and frozen BN to grow
# through depth, most in the long res4 stage (6 blocks in ResNet-50, 23 in ResNet-101).

# %%
transform = ImageTransform(min_size=128, max_size=128)
images = [ShapesDataset(100, seed=1)[i][0] for i in range(64)]
X = transform.batch_images([transform.normalize(im) for im in images])  # (64, 3, 128, 128)
assert X.shape == (64, 3, 128, 128)


def block_stds(body, x):
    """Std of the activations after the stem and after every residual block -> list, and stage ends."""
    x = body.stem(x)
    stds, ends = [x.std().item()], []
    for stage in ("res2", "res3", "res4", "res5"):
        for block in getattr(body, stage):
            x = block(x)
            stds.append(x.std().item())
        ends.append(len(stds) - 1)
    return stds, ends


curves = {}
for depth in (50, 101):
    for kind in ("frozen_bn", "gn"):
        torch.manual_seed(0)
        curves[(depth, kind)] = block_stds(ResNetBody(depth, norm=kind).eval(), X[:4])
for (depth, kind), (stds, ends) in curves.items():
    print(f"ResNet-{depth:<3} {kind:<9} std of C2..C5: " + "  ".join(f"{stds[e]:9.2f}" for e in ends))

# %%
fig, ax = plt.subplots(figsize=(9, 4.5))
styles = {"frozen_bn": "-", "gn": "--"}
for (depth, kind), (stds, ends) in curves.items():
    color = "C3" if depth == 101 else "C0"
    ax.semilogy(stds, styles[kind], color=color, marker=".", label=f"ResNet-{depth}, {kind}")
    for level, e in enumerate(ends if kind == "frozen_bn" else [], start=2):
        ax.annotate(f"C{level}", (e, stds[e]), textcoords="offset points", xytext=(2, 4), fontsize=7, color=color)
ax.set_xlabel("position in the network (0 = stem, then one point per residual block)")
ax.set_ylabel("std of the activations (log scale)")
ax.set_title("Activation scale through depth: frozen identity BN (solid) vs GroupNorm (dashed)")
ax.legend(fontsize=8)
ax.grid(alpha=0.3, which="both")
plt.show()

# %% [markdown]
# With frozen identity BN the activations first shrink (the stem's output std is about 0.2) and then
# grow by a roughly constant factor per block: to about 8 at C5 of ResNet-50 and to thousands in the
# 23 blocks of ResNet-101's res4. Such scales feed the FPN and the heads, whose first gradients are
# then huge or tiny depending on the depth, and since the frozen layers have no parameters, training
# can never learn to rescale a channel: the backbone stays unnormalised for good. GroupNorm keeps every
# block within a small factor of 1 (each branch is normalised; only the residual sums add a little).
#
# Frozen BN is not the problem; frozen *identity* statistics are. If we give the frozen layers real
# statistics, measured on data the way an ImageNet checkpoint carries them, the scale is fine again. We
# run a BatchNorm ResNet-50 (same seed, hence the same conv weights) once in train mode with
# `momentum=None` (running averages = this batch's statistics), copy its state into the frozen-BN model,
# and measure again:

# %%
torch.manual_seed(0)
bn50 = ResNetBody(50, norm="bn")
for m in bn50.modules():
    if isinstance(m, nn.BatchNorm2d):
        m.momentum = None  # cumulative average: after one batch, exactly that batch's statistics
        m.reset_running_stats()
bn50.train()(X[:4])
torch.manual_seed(0)
calibrated = ResNetBody(50, norm="frozen_bn").eval()
calibrated.load_state_dict(bn50.state_dict())
assert torch.equal(calibrated.stem.conv1.weight, bn50.stem.conv1.weight)  # same convs as above
stds, ends = block_stds(calibrated, X[:4])
print("ResNet-50 frozen_bn with measured statistics, std of C2..C5: " + "  ".join(f"{stds[e]:.2f}" for e in ends))
assert max(stds) < 3

# %% [markdown]
# ### 6.3 BatchNorm with tiny batches
#
# Then why not ordinary BatchNorm, which learns its $\gamma, \beta$ and normalises with batch
# statistics? Because a detector's batch is 1–2 large images per GPU, and the statistics of 1–2 images
# are noisy. Three symptoms.
#
# **The output of an image depends on its batch-mates.** In train mode BN normalises image 0 with the
# mean and variance of the whole batch, so the same image gets different features when its partner
# changes. GroupNorm (Wu & He 2018) normalises each image on its own, over 32 groups of channels, so
# its output cannot depend on the batch. We feed held-out image 0 with two different partners through
# a fresh ResNet-18 in train mode and measure how much its C2–C5 change (norm of the difference over
# the norm). We expect a change for BN that grows with depth, and exactly 0 for GN.

# %%
torch.manual_seed(0)
bodies = {kind: ResNetBody(18, norm=kind).train() for kind in ("bn", "gn")}
for kind, body in bodies.items():
    with_1, with_2 = body(X[[0, 1]]), body(X[[0, 2]])
    change = [((a[0] - b[0]).norm() / a[0].norm()).item() for a, b in zip(with_1, with_2)]
    print(f"{kind}: image 0's C2..C5 change by " + "  ".join(f"{c:6.1%}" for c in change))
    if kind == "gn":
        assert max(change) < 1e-5

# %% [markdown]
# The change grows with depth because every BN layer adds its own error and the next layers amplify
# it. **With one image and a small input, BN cannot run at all:** for a 32×32 image C5 is 1×1, so the
# last BN layers see a single value per channel and cannot compute a variance.

# %%
tiny = torch.randn(1, 3, 32, 32)
try:
    bodies["bn"](tiny)
except ValueError as err:
    print("BatchNorm, train mode:", err)
C5_gn = bodies["gn"](tiny)[-1]
print_shapes(GroupNorm_C5=C5_gn)
assert C5_gn.shape == (1, 512, 1, 1)

# %% [markdown]
# **The statistics are noisy, and test time uses other ones.** How far are a batch's mean and
# standard deviation from those of many images? We take the conv outputs that the last norm layer of
# each stage of the trained model normalises (captured with forward hooks on 64 held-out images),
# draw 1000 random batches of each size b, and measure the error of the batch mean in units of the
# channel's standard deviation (left) and the relative error of the batch standard deviation (right).
# An average over b images should err like $1/\sqrt{b}$ (a little less at b = 16, which is already a
# quarter of our 64 images). In training BN divides by the batch's
# numbers; at test time it switches to running averages, which approach the values over all images
# (error 0 on these plots). So the two panels are also how far the test-time normalisation is from
# what the network saw during training. We expect both to be largest at 1–2 images, the batch size of
# detection.

# %%
pre_norm = {}
hooks = [getattr(trained_body, stage)[-1].bn2.register_forward_pre_hook(
    lambda module, inputs, stage=stage: pre_norm.__setitem__(stage, inputs[0]))
    for stage in ("res2", "res3", "res4", "res5")]
trained_body(X)
for h in hooks:
    h.remove()
print_shapes(**pre_norm)
for level, (stage, a) in enumerate(pre_norm.items(), start=2):
    assert a.shape == (64, trained_body.out_channels[level - 2], 128 // 2**level, 128 // 2**level)

# %%
def batch_statistics(a, b, draws, generator):
    """Per-channel mean and std of `draws` random batches of b images of a (N, C, h, w): (draws, C) each.

    All images have the same size, so a batch's mean is the mean of its images' means, and its variance
    is E[x^2] - E[x]^2 over the batch: per-image averages are all we need.
    """
    image_mean = a.mean(dim=(2, 3))  # (N, C)
    image_mean_sq = a.pow(2).mean(dim=(2, 3))  # (N, C)
    idx = torch.stack([torch.randperm(len(a), generator=generator)[:b] for _ in range(draws)])  # (draws, b)
    mean = image_mean[idx].mean(dim=1)  # (draws, C)
    var = image_mean_sq[idx].mean(dim=1) - mean**2  # (draws, C), the biased variance BN normalises with
    return mean, var.clamp(min=0).sqrt()


batch_sizes = (1, 2, 4, 8, 16)
generator = torch.Generator().manual_seed(0)
mean_error, std_error = {}, {}
for stage, a in pre_norm.items():
    mu, sigma = batch_statistics(a, len(a), 1, generator)  # (1, C) over all 64 images
    mean_error[stage], std_error[stage] = [], []
    for b in batch_sizes:
        mean_b, std_b = batch_statistics(a, b, 1000, generator)  # (1000, C)
        mean_error[stage].append(((mean_b - mu) / sigma).pow(2).mean().sqrt().item())  # RMS over draws, channels
        std_error[stage].append((std_b / sigma - 1).pow(2).mean().sqrt().item())

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
for level, stage in enumerate(pre_norm, start=2):
    axes[0].loglog(batch_sizes, mean_error[stage], "o-", label=f"{stage} (normalised into C{level})")
    axes[1].loglog(batch_sizes, std_error[stage], "o-", label=f"{stage} (normalised into C{level})")
for ax, errors in zip(axes, (mean_error, std_error)):
    reference = errors["res2"][0] / np.sqrt(np.array(batch_sizes))
    ax.loglog(batch_sizes, reference, "k:", label=r"$\propto 1/\sqrt{b}$")
    ax.set_xlabel("images per batch b")
    ax.set_xticks(batch_sizes, [str(b) for b in batch_sizes])
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
axes[0].set_title("error of the batch mean")
axes[0].set_ylabel("RMS of (batch mean − mean) / std")
axes[1].set_title("error of the batch standard deviation")
axes[1].set_ylabel("RMS of batch std / std − 1")
fig.suptitle("Batch statistics of 128×128 shapes images (the trained model's pre-norm activations)")
plt.show()

# %% [markdown]
# With 1–2 images per batch every BN layer shifts its channels by about a tenth of a standard deviation
# and rescales them by a similar fraction, differently at every step; at test time the same network
# normalises with other numbers than the ones it was trained with. Over some 20 norm layers that adds
# up, as the batch-mate experiment above showed. On ImageNet, Wu & He (2018, abstract) report 10.6%
# lower error for a ResNet-50 with GroupNorm than with BN when both are trained with 2 images per batch.
#
# ### 6.4 Which norm when
#
# | situation | norm | why |
# |---|---|---|
# | fine-tune a pretrained ResNet, 1–2 images per GPU (the paper, torchvision's `resnet50_fpn`) | `frozen_bn` | keeps ImageNet's statistics; batch statistics would be noise |
# | from scratch, large batches (or BN synchronised across GPUs) | `bn` | statistics of many images are accurate |
# | from scratch, small batches (`shapes_tiny`: 8 images on a CPU) | `gn` | per image, batch-size independent |
#
# He, Girshick and Dollár (2018, "Rethinking ImageNet Pre-training") train Mask R-CNN from scratch with
# GroupNorm or synchronised BN; `shapes_tiny` follows them:

# %%
# NBVAL_CHECK_OUTPUT
for name, cfg in CONFIGS.items():
    print(f"{name:<13} depth {cfg['depth']:>3}, norm {cfg['norm']!r:<11}, trainable stages {cfg['trainable_layers']}")
assert type(trained_body.res2[0].bn1) is nn.GroupNorm

# %% [markdown]
# ## Summary
#
# - The ResNet body is a stem (7×7 conv stride 2 + 3×3 max pool stride 2) and four stages res2–res5
#   whose outputs C2–C5 have strides 4, 8, 16, 32 (widths 64–512 for ResNet-18, 256–2048 for ResNet-50).
# - Every stride-2 layer maps a side $n$ to $\lceil n/2 \rceil$ by $\lfloor (n+2p-k)/s \rfloor + 1$, so
#   "H/4 … H/32" means rounded up: 100×75 gives C2 25×19 and C5 4×3. Mask R-CNN pads to a multiple
#   of 32 so the sizes are exact inside the model.
# - A basic block is two 3×3 convs; a bottleneck is 1×1 reduce, 3×3, 1×1 expand ×4, so ResNet-50's
#   stages are 4× wider at a similar cost. Our parameter names match torchvision's ResNet.
# - The seed's `resnet50(pretrained=True)` is deprecated (use `weights=...`) and downloads; we build
#   without weights, and the seed's "stage1" is conv1 plus the max pool of conv2_x, at stride 4.
# - Frozen BN is a fixed affine map: right for pretrained statistics, but with the identity
#   statistics of a fresh model it leaves the network unnormalised and the activation scale drifts
#   with depth. BN needs many images per batch; with 1–2 its statistics are noisy, an image's features
#   depend on its batch-mates, and test time differs from training. GroupNorm has none of these
#   problems, which is why `shapes_tiny` uses it.

# %% [markdown]
# ## Exercises
#
# Worked solutions, for teachers, are in `solutions/01_backbone.py`. Each check compares your answer
# with the library on inputs you did not choose.
#
# **Exercise 1.** Write `c_sizes(H, W)` returning the `(h, w)` of C2, C3, C4, C5 for an input of any
# size, using the conv arithmetic of section 3 (or the rounding rule it led to).

# %%
from mrcnn_teach.exercises.nb01 import check_bottleneck_params, check_c_sizes, check_fold_bn


def c_sizes(H, W):
    raise NotImplementedError  # your code here


check_c_sizes(c_sizes);

# %% [markdown]
# **Exercise 2.** Fold a BatchNorm into a fixed affine map. Write `fold_bn(bn)` that takes an
# `nn.BatchNorm2d` (eval mode) and returns `(scale, shift)`, two `(C,)` tensors such that
# `x * scale[:, None, None] + shift[:, None, None]` equals `bn(x)`.

# %%
def fold_bn(bn):
    raise NotImplementedError  # your code here


check_fold_bn(fold_bn);

# %% [markdown]
# **Exercise 3.** Count the parameters of a bottleneck block by hand. Write
# `bottleneck_params(in_channels, planes, stride)`: the number of parameters of the first block that
# `make_stage(Bottleneck, in_channels, planes, num_blocks, stride, nn.BatchNorm2d)` builds (convs have
# no bias; each BatchNorm has a weight and a bias per channel; remember the projection shortcut when
# the stride or the width changes). Check yourself: res3[0] of ResNet-50 printed above.

# %%
def bottleneck_params(in_channels, planes, stride):
    raise NotImplementedError  # your code here


check_bottleneck_params(bottleneck_params);

# %% [markdown]
# Next: [02 — FPN](02_fpn.ipynb)
