"""Load torchvision's Mask R-CNN weights (e.g. the COCO file a user downloaded) into our model.

The two models have the same parts with different names: ours use the paper's (`res2..res5` for
conv2_x..conv5_x, `lateral`/`output` for the FPN's 1x1 and 3x3 convs, `objectness`/`deltas` for
the RPN's two outputs), torchvision's use its history (`layer1`, `inner_blocks`, `fc6`, ...).
`TORCHVISION_TO_OURS` is the whole dictionary between them, one rule per line. It accepts both
naming schemes torchvision has used: the current one (convs wrapped as `conv.0.0`) and the one in
the original COCO checkpoint `maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth` (`mask_fcn1`, bare convs).
"""

from __future__ import annotations

import os
import re

import torch
from torch import nn

# (torchvision pattern, our replacement). The first rule that matches a key wins.
TORCHVISION_TO_OURS: list[tuple[str, str]] = [
    (r"^backbone\.body\.(conv1|bn1)\.", r"backbone.body.stem.\1."),
    (r"^backbone\.body\.layer(\d)\.", lambda m: f"backbone.body.res{int(m.group(1)) + 1}."),
    (r"^backbone\.fpn\.inner_blocks\.(\d)\.(?:0\.)?", r"backbone.fpn.lateral.\1."),
    (r"^backbone\.fpn\.layer_blocks\.(\d)\.(?:0\.)?", r"backbone.fpn.output.\1."),
    (r"^rpn\.head\.conv\.(?:0\.0\.)?", r"rpn.head.conv.0."),
    (r"^rpn\.head\.cls_logits\.", r"rpn.head.objectness."),
    (r"^rpn\.head\.bbox_pred\.", r"rpn.head.deltas."),
    (r"^roi_heads\.box_head\.fc6\.", r"roi_heads.box_head.fc1."),
    (r"^roi_heads\.box_head\.fc7\.", r"roi_heads.box_head.fc2."),
    (r"^roi_heads\.box_predictor\.cls_score\.", r"roi_heads.box_predictor.cls_score."),
    (r"^roi_heads\.box_predictor\.bbox_pred\.", r"roi_heads.box_predictor.bbox_deltas."),
    (r"^roi_heads\.mask_head\.(\d)\.0\.", r"roi_heads.mask_head.convs.\1."),
    (r"^roi_heads\.mask_head\.mask_fcn(\d)\.", lambda m: f"roi_heads.mask_head.convs.{int(m.group(1)) - 1}."),
    (r"^roi_heads\.mask_predictor\.conv5_mask\.", r"roi_heads.mask_predictor.deconv."),
    (r"^roi_heads\.mask_predictor\.mask_fcn_logits\.", r"roi_heads.mask_predictor.mask_logits."),
]


def torchvision_key_to_ours(key: str) -> str | None:
    """Our parameter name for one of torchvision's, or None when no rule knows it."""
    for pattern, replacement in TORCHVISION_TO_OURS:
        new, count = re.subn(pattern, replacement, key)
        if count:
            return new
    return None


def convert_torchvision_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    converted, unknown = {}, []
    for key, value in state_dict.items():
        new_key = torchvision_key_to_ours(key)
        if new_key is None:
            unknown.append(key)
        else:
            converted[new_key] = value
    if unknown:
        raise KeyError(f"{len(unknown)} key(s) of the torchvision state dict have no counterpart here: {unknown}")
    return converted


def load_torchvision_weights(model: nn.Module, state_dict_or_path: dict | str | os.PathLike) -> nn.Module:
    """Load a torchvision `maskrcnn_resnet50_fpn` state dict (or a path to one) into `model`.

    Raises with the full lists when keys are missing or unexpected, and when a shape differs
    (typically `num_classes`: build the model with the checkpoint's number of classes, then
    replace the predictors).
    """
    if isinstance(state_dict_or_path, (str, os.PathLike)):
        state_dict = torch.load(state_dict_or_path, map_location="cpu", weights_only=True)
    else:
        state_dict = state_dict_or_path
    if "model" in state_dict and isinstance(state_dict["model"], dict):
        state_dict = state_dict["model"]  # a training checkpoint wrapping the weights
    converted = convert_torchvision_state_dict(state_dict)

    ours = model.state_dict()
    mismatched = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(ours[k].shape)}"
        for k, v in converted.items() if k in ours and ours[k].shape != v.shape
    ]
    if mismatched:
        raise ValueError("shape mismatch between the weights and the model:\n  " + "\n  ".join(mismatched))

    result = model.load_state_dict(converted, strict=False)
    # BatchNorm's step counter is bookkeeping, not a weight: files made with frozen BN lack it.
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    unexpected = [k for k in result.unexpected_keys if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise KeyError(f"weights do not fit the model. missing: {missing}; unexpected: {unexpected}")
    return model
