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


# The layers with one output per class: K + 1 class scores, 4 box deltas per class, one mask per class
# (Mask R-CNN Sec. 3; torchvision's COCO file has 91 classes, background and the 10 unused ids included).
# Everything before them -- backbone, FPN, RPN (it knows only "object or not"), the box head's and mask
# head's hidden layers -- does not depend on the classes, so fine-tuning keeps it.
PREDICTOR_LAYERS = ("roi_heads.box_predictor.cls_score", "roi_heads.box_predictor.bbox_deltas",
                    "roi_heads.mask_predictor.mask_logits")


def _some(keys: list[str], n: int = 8) -> str:
    """The first n keys of a long list, and how many more there are."""
    return f"{keys[:n]}" + (f" and {len(keys) - n} more" if len(keys) > n else "")


def convert_torchvision_state_dict(state_dict: dict[str, torch.Tensor],
                                   source: str = "the torchvision state dict") -> dict[str, torch.Tensor]:
    converted, unknown = {}, []
    for key, value in state_dict.items():
        new_key = torchvision_key_to_ours(key)
        if new_key is None:
            unknown.append(key)
        else:
            converted[new_key] = value
    if unknown:
        raise KeyError(f"{len(unknown)} key(s) of {source} have no counterpart here (is it a torchvision "
                       f"maskrcnn_resnet50_fpn state dict?): {_some(unknown)}")
    return converted


def load_torchvision_weights(model: nn.Module, state_dict_or_path: dict | str | os.PathLike,
                             new_predictors: bool = False) -> nn.Module:
    """Load a torchvision `maskrcnn_resnet50_fpn` state dict (or a path to one) into `model`.

    Raises with the full lists when keys are missing or unexpected, and when a shape differs
    (typically `num_classes`). For fine-tuning on other classes, build the model with your number of
    classes and pass new_predictors=True: the PREDICTOR_LAYERS whose shapes differ keep the model's
    fresh initialisation, every other tensor comes from the file.
    """
    source = "the given state dict"
    if isinstance(state_dict_or_path, (str, os.PathLike)):
        source = os.fspath(state_dict_or_path)
        if not os.path.isfile(source):
            raise FileNotFoundError(f"weights file not found: {source}")
        try:
            state_dict = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated, not a torch file, or a pickle with code in it
            from .checkpoint import why_unreadable

            raise ValueError(f"{source} is not a readable torch weights file: {why_unreadable(source, err)}") from err
    else:
        state_dict = state_dict_or_path
    if not isinstance(state_dict, dict):
        raise ValueError(f"{source} holds a {type(state_dict).__name__}, not a state dict (parameter name -> tensor)")
    if str(state_dict.get("format", "")).startswith("mrcnn_teach.checkpoint"):
        raise ValueError(f"{source} is an mrcnn_teach checkpoint, not torchvision weights: rebuild its model with "
                         "mrcnn_teach.checkpoint.model_from_checkpoint(path)")
    if "model" in state_dict and isinstance(state_dict["model"], dict):
        state_dict = state_dict["model"]  # a training checkpoint wrapping the weights
    not_tensors = [k for k, v in state_dict.items() if not torch.is_tensor(v)]
    if not_tensors:
        raise ValueError(f"{source} is not a state dict (parameter name -> tensor): "
                         f"{_some(not_tensors)} are not tensors")
    converted = convert_torchvision_state_dict(state_dict, source)

    ours = model.state_dict()
    fresh = []
    if new_predictors:
        fresh = [k for k, v in converted.items()
                 if k.rsplit(".", 1)[0] in PREDICTOR_LAYERS and k in ours and ours[k].shape != v.shape]
        converted = {k: v for k, v in converted.items() if k not in fresh}
    mismatched = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(ours[k].shape)}"
        for k, v in converted.items() if k in ours and ours[k].shape != v.shape
    ]
    if mismatched:
        hint = ("" if new_predictors or not all(m.startswith(PREDICTOR_LAYERS) for m in mismatched) else
                "\n(another number of classes: to fine-tune, pass new_predictors=True and the class layers start afresh)")
        raise ValueError(f"shape mismatch between the weights in {source} and the model:\n  " + "\n  ".join(mismatched)
                         + hint)

    result = model.load_state_dict(converted, strict=False)
    # BatchNorm's step counter is bookkeeping, not a weight: files made with frozen BN lack it.
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked") and k not in fresh]
    unexpected = [k for k in result.unexpected_keys if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        hint = ""
        if missing and all(k.startswith("roi_heads.mask_") for k in missing):
            hint = " (no mask head: Faster R-CNN weights? Mask R-CNN needs maskrcnn_resnet50_fpn's)"
        raise KeyError(f"the weights in {source} do not fit the model{hint}. missing: {_some(missing)}; "
                       f"unexpected: {_some(unexpected)}")
    return model


def fine_tuning_builder(weights: dict | str | os.PathLike):
    """A `build` for `train.train(cfg, out, build=...)`: the named model with torchvision's weights in
    every layer but the predictors, which start afresh for the data's number of classes."""
    def build(name: str, **overrides) -> nn.Module:
        from .configs import build_maskrcnn

        return load_torchvision_weights(build_maskrcnn(name, **overrides), weights, new_predictors=True)

    return build
