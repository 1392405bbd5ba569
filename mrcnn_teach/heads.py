"""The per-RoI heads of Mask R-CNN with FPN (He et al. 2017, Fig. 4, right).

Two parallel branches read the pooled features of each RoI (Sec. 3, "Network Architecture"):

* box branch: RoIAlign 7x7 -> two fully connected layers of 1024 (`BoxHead`, the "2fc" head of FPN
  Sec. 4.2), or four 3x3 convs and one fc (`ConvFCBoxHead`, the "4conv1fc" head of Detectron's Group
  Normalization models, Wu & He 2018, COCO experiments: "These GN models use a 4conv+1fc RoI box head",
  Detectron projects/GN; with frozen BN it scores like 2fc there, 38.8 vs 38.6 box AP; torchvision's
  `maskrcnn_resnet50_fpn_v2` has it too) -> `BoxPredictor`: K+1 class scores (softmax, background
  included) and (K+1) x 4 box deltas (one regression per class, Fast R-CNN Sec. 2.3).
* mask branch: RoIAlign 14x14 -> four 3x3 convs of 256 (`MaskHead`) -> `MaskPredictor`: a 2x2 stride-2
  deconvolution to 28x28 and a 1x1 conv giving one mask logit map *per class* (Sec. 3: "K binary
  masks of resolution m x m"), or a single one for a class-agnostic head.

`num_classes` counts the background, as torchvision does (COCO: 91 = 90 category ids + background).
Layer names say what the layer is; torchvision's names are in brackets:
fc1/fc2 (fc6/fc7), cls_score, bbox_deltas (bbox_pred), convs.i (i.0), deconv (conv5_mask),
mask_logits (mask_fcn_logits).

Normalisation in the heads (`norm="gn"`): the paper's heads have none, because their inputs come from a
pretrained, well-scaled backbone. Trained from scratch, a norm layer after each conv is what He, Girshick
and Dollar 2018 ("Rethinking ImageNet Pre-training", Sec. 3.1) name as the key to training a detector from
random initialisation (GN or SyncBN, there with the GN models' 4conv1fc head); the conv then needs no bias (the norm's
shift replaces it), exactly as torchvision's Conv2dNormActivation builds it.
"""

from torch import Tensor, nn
from torch.nn import functional as F

from .norm import norm_layer


def _head_conv(c_in: int, c_out: int, bias: bool = True) -> nn.Conv2d:
    """3x3 conv, padding 1, with torchvision's head init (He et al. 2015, fan_out; zero bias)."""
    conv = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=bias)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if bias:
        nn.init.zeros_(conv.bias)
    return conv


def _conv_norm_relu(c_in: int, c_out: int, norm) -> nn.Sequential:
    """3x3 conv [+ norm] + ReLU; bias only without a norm. Same layout as torchvision's
    Conv2dNormActivation, so state dicts line up index for index (0 conv, 1 norm)."""
    if norm is None:
        return nn.Sequential(_head_conv(c_in, c_out), nn.ReLU(inplace=True))
    return nn.Sequential(_head_conv(c_in, c_out, bias=False), norm_layer(norm)(c_out), nn.ReLU(inplace=True))


class BoxHead(nn.Module):
    """Two fully connected layers on the flattened 7x7 RoI features: (N, C, 7, 7) -> (N, representation_size)."""

    def __init__(self, in_channels: int, resolution: int = 7, representation_size: int = 1024):
        super().__init__()
        self.fc1 = nn.Linear(in_channels * resolution * resolution, representation_size)
        self.fc2 = nn.Linear(representation_size, representation_size)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(start_dim=1)  # (N, C*7*7)
        x = F.relu(self.fc1(x))  # (N, 1024)
        return F.relu(self.fc2(x))  # (N, 1024)


class ConvFCBoxHead(nn.Module):
    """Four 3x3 convs [+ norm] then one fc: (N, C, 7, 7) -> (N, representation_size) ("4conv1fc").

    Convolutions share their weights over the 7x7 grid, so (a hypothesis, not measured here) they may
    learn shape features from fewer examples than a fc layer over all 7*7*C inputs. At equal width the
    head is larger than 2fc, not smaller: its fc has the same 7*7*C inputs, plus four convs.
    """

    def __init__(self, in_channels: int, resolution: int = 7, conv_channels=(256, 256, 256, 256),
                 representation_size: int = 1024, norm=None):
        super().__init__()
        pairs = zip([in_channels, *conv_channels][:-1], conv_channels)  # (c_in, c_out) per conv
        self.convs = nn.ModuleList(_conv_norm_relu(c_in, c_out, norm) for c_in, c_out in pairs)
        self.fc = nn.Linear(conv_channels[-1] * resolution * resolution, representation_size)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.convs:
            x = block(x)  # (N, C', 7, 7)
        return F.relu(self.fc(x.flatten(start_dim=1)))  # (N, representation_size)


class BoxPredictor(nn.Module):
    """Class scores and per-class box deltas: (N, D) -> (N, K+1) logits, (N, (K+1)*4) deltas."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(in_features, num_classes)
        self.bbox_deltas = nn.Linear(in_features, num_classes * 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.flatten(start_dim=1)  # (N, D)
        class_logits = self.cls_score(x)  # (N, K+1)
        box_deltas = self.bbox_deltas(x)  # (N, (K+1)*4), class c's deltas at columns 4c..4c+3
        return class_logits, box_deltas


class MaskHead(nn.Module):
    """The mask branch's FCN trunk: 3x3 conv [+ norm] + ReLU, four times. (N, C, 14, 14) -> (N, 256, 14, 14).

    Padding 1 keeps the 14x14 grid, so each output cell stays aligned with the RoI cell it came from
    (Sec. 3: the mask branch keeps the spatial layout that fc layers would collapse). Without a norm,
    `convs[i]` is the conv itself (torchvision's `mask_head.i.0`); with one, `convs[i]` is
    Sequential(conv, norm, relu), laid out like torchvision's `MaskRCNNHeads(..., norm_layer=...)`.
    """

    def __init__(self, in_channels: int, layers=(256, 256, 256, 256), norm=None):
        super().__init__()
        pairs = list(zip([in_channels, *layers][:-1], layers))  # (c_in, c_out) per conv
        if norm is None:  # the paper's head: bare convs (torchvision's names: mask_head.i.0)
            self.convs = nn.ModuleList(_head_conv(c_in, c_out) for c_in, c_out in pairs)
        else:
            self.convs = nn.ModuleList(_conv_norm_relu(c_in, c_out, norm) for c_in, c_out in pairs)
        self.norm = norm

    def forward(self, x: Tensor) -> Tensor:
        for block in self.convs:
            x = F.relu(block(x)) if self.norm is None else block(x)  # (N, 256, 14, 14); block has its ReLU
        return x


class MaskPredictor(nn.Module):
    """Upsample to 28x28 and predict one mask logit map per class: (N, C, 14, 14) -> (N, K+1, 28, 28).

    class_agnostic=True predicts a single map, (N, 1, 28, 28), shared by all classes (Mask R-CNN Sec. 4.2
    reports class-agnostic masks nearly as good: 29.7 vs 30.3 mask AP).
    """

    def __init__(self, in_channels: int, num_classes: int, dim_reduced: int = 256, class_agnostic: bool = False):
        super().__init__()
        self.class_agnostic = class_agnostic
        self.deconv = nn.ConvTranspose2d(in_channels, dim_reduced, kernel_size=2, stride=2)
        self.mask_logits = nn.Conv2d(dim_reduced, 1 if class_agnostic else num_classes, kernel_size=1)
        # torchvision's init: He-normal weights; the biases keep PyTorch's default init.
        for layer in (self.deconv, self.mask_logits):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.deconv(x))  # (N, 256, 28, 28)
        return self.mask_logits(x)  # (N, K+1, 28, 28), or (N, 1, 28, 28) if class agnostic
