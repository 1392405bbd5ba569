"""Mask R-CNN: the whole of Figure 1 of the paper, composed from the stages in this package.

    images --transform--> batch (B, 3, H, W)
           --backbone (ResNet body + FPN)--> [P2, P3, P4, P5, P6]
           --rpn (anchors, objectness, deltas, NMS)--> proposals, one (N_i, 4) tensor per image
           --roi_heads (RoIAlign, box head, mask head)--> detections (boxes, labels, scores, masks)
           --transform.postprocess--> boxes and pasted masks in the caller's image frame

The input/output contract is torchvision's `MaskRCNN`, so the two can be swapped in a training
loop or an evaluation script:

- train mode, `model(images, targets)` returns a dict of named losses; the total loss is their sum;
- eval mode, `model(images)` returns one dict per image with `boxes` (D, 4), `labels` (D,),
  `scores` (D,) and `masks` (D, 1, H, W) holding probabilities (threshold at 0.5 to binarise).
"""

from __future__ import annotations

from torch import Tensor, nn

from .kernels import Kernels, get_kernels
from .transform import check_inputs, match_dtype, warn_once


class MaskRCNN(nn.Module):
    def __init__(self, backbone: nn.Module, rpn: nn.Module, roi_heads: nn.Module, transform: nn.Module):
        super().__init__()
        self.transform = transform  # ImageTransform
        self.backbone = backbone  # BackboneWithFPN: images -> [P2..P6]
        self.rpn = rpn  # RegionProposalNetwork
        self.roi_heads = roi_heads  # RoIHeads: box and mask branches

    @property
    def num_classes(self) -> int:
        """K + 1: the foreground classes plus background (label 0)."""
        return self.roi_heads.box_predictor.cls_score.out_features

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        if self.training and targets is None:
            raise ValueError("in training mode the model needs targets: model(images, targets)")
        if not self.training and targets is not None:
            warn_once("eval targets", "the model is in eval mode: it ignores the targets and returns detections "
                      "(call model.train() for the losses; warned once)")
        weight = next(self.parameters())
        image_mean = self.transform.image_mean
        check_inputs(images, targets if self.training else None, self.num_classes, device=weight.device,
                     max_size=self.transform.max_size, pixel_max=255.0 if max(image_mean) > 1 else 1.0)
        images = match_dtype(images, weight.dtype)  # e.g. float64 images for a float32 model
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]

        batch, image_sizes, targets = self.transform(images, targets)  # (B, 3, H, W)
        features = self.backbone(batch)  # [P2, P3, P4, P5, P6], each (B, C, H/s, W/s)
        proposals, rpn_losses = self.rpn(batch, image_sizes, features, targets)  # list of (N_i, 4)
        detections, roi_losses = self.roi_heads(features, proposals, image_sizes, targets)

        if self.training:
            return {**rpn_losses, **roi_losses}
        return self.transform.postprocess(detections, image_sizes, original_sizes)

    def set_kernels(self, kernels: str | Kernels) -> MaskRCNN:
        """Switch NMS and RoIAlign between the teaching ops and torchvision's compiled kernels.

        The results are the same (tests/test_model_equivalence.py checks it); the compiled ones are
        faster. Every submodule that carries a `kernels` attribute gets the new set.
        """
        kernels = get_kernels(kernels)
        for module in self.modules():
            if hasattr(module, "kernels"):
                module.kernels = kernels
        return self
