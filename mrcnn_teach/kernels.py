"""Switch between the teaching ops and torchvision's compiled kernels.

The detector calls NMS and RoIAlign through a ``Kernels`` bundle instead of importing them
directly. With ``TEACHING`` it runs the from-scratch, vectorised PyTorch code of this package
(``nms.py``, ``roi_ops.py``) -- the code the notebooks explain. With ``TORCHVISION`` it runs
torchvision's C++/CUDA kernels, which compute the same results (the tests check this) much
faster. ``MIXED`` takes the faster of each on a CPU: torchvision's NMS and our RoIAlign.
``MaskRCNN.set_kernels(name)`` swaps the bundle on every submodule that has one.
"""

from dataclasses import dataclass
from typing import Callable

import torchvision

from . import nms as _nms
from . import roi_align_fast as _roi_align_fast
from . import roi_ops as _roi_ops


@dataclass(frozen=True)
class Kernels:
    """A named set of the ops that have a compiled twin in torchvision."""

    name: str
    nms: Callable  # (boxes (N,4), scores (N,), iou_threshold) -> keep (K,) int64
    batched_nms: Callable  # (boxes (N,4), scores (N,), idxs (N,), iou_threshold) -> keep (K,) int64
    roi_align: Callable  # (input (B,C,H,W), boxes, output_size, spatial_scale, sampling_ratio, aligned) -> (K,C,ph,pw)
    roi_pool: Callable  # (input (B,C,H,W), boxes, output_size, spatial_scale) -> (K,C,ph,pw); for the RoIPool ablation


TEACHING = Kernels("teaching", _nms.nms, _nms.batched_nms, _roi_ops.roi_align, _roi_ops.roi_pool)
TORCHVISION = Kernels("torchvision", torchvision.ops.nms, torchvision.ops.batched_nms, torchvision.ops.roi_align,
                      torchvision.ops.roi_pool)
# The fastest set for training on a CPU: torchvision's compiled greedy NMS, but this package's fast
# RoIAlign, whose windowed separable form (two small matrix products per RoI, roi_align_fast.py)
# runs forward + backward several times faster than torchvision's CPU kernel (benchmarks/README.md).
MIXED = Kernels("mixed", torchvision.ops.nms, torchvision.ops.batched_nms, _roi_align_fast.roi_align,
                torchvision.ops.roi_pool)

_BY_NAME = {k.name: k for k in (TEACHING, TORCHVISION, MIXED)}


def get_kernels(name_or_kernels) -> Kernels:
    """"teaching" | "torchvision" | "mixed" | a Kernels instance (returned as is) -> Kernels."""
    if isinstance(name_or_kernels, Kernels):
        return name_or_kernels
    if isinstance(name_or_kernels, str) and name_or_kernels in _BY_NAME:
        return _BY_NAME[name_or_kernels]
    raise ValueError(f"unknown kernels {name_or_kernels!r}: expected one of {sorted(_BY_NAME)} or a Kernels instance")
