"""Non-maximum suppression (NMS), written from scratch and without a loop over boxes.

Detectors fire many overlapping boxes on one object. Greedy NMS keeps the best-scoring box, drops
every box that overlaps it by more than ``iou_threshold``, and repeats on what is left. Faster R-CNN
(Sec. 3.3) uses it on the RPN proposals (threshold 0.7) and Mask R-CNN on the final detections, per
class (threshold 0.5).

Greedy NMS looks sequential, but it has an exact vectorised form. Sort the boxes by decreasing score
and let ``S[i, j] = IoU(i, j) > thr and i < j`` ("i can suppress j": strictly upper-triangular).
Greedy NMS keeps box j if and only if no *kept* box before it suppresses it::

    keep[j] = not any_i (S[i, j] and keep[i])                          (*)

Because S is strictly upper-triangular, keep[j] depends only on keep[0..j-1], so (*) has exactly one
solution, and that solution is the greedy result. We find it by fixed-point iteration: start from
"keep everything" and apply (*) to all boxes at once (one boolean matrix op) until nothing changes.

Why this is exact: keep[0] has no predecessors and is final after 1 step; if keep[0..t-1] are final
after t steps, step t+1 computes keep[t] from final values only, so it is final too. More sharply,
a box is final once every box on every suppression chain above it is final, so the loop stops after
(length of the longest chain i1 -> i2 -> ... with S[i_k, i_k+1]) + 1 steps -- a handful in practice,
N in the worst case. And the loop may stop as soon as an iterate repeats: a repeated iterate satisfies
(*), and (*) has only one solution. (This is the "Cluster-NMS" view of Zheng et al. 2020.)

Memory: S is an (N, N) bool matrix (100 MB for N = 10 000); the float IoU is computed a block of rows
at a time so that it never exists in full.
"""

import torch
from torch import Tensor

from .boxes import box_iou

# The IoU matrix is computed a block of rows at a time, about this many entries per block: small
# enough that the float temporaries stay in cache (4 MB each), big enough to be one vectorised op.
_BLOCK_ENTRIES = 2**20


def _check_inputs(boxes: Tensor, scores: Tensor, fn: str) -> None:
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{fn}: boxes must be (N, 4) as (x1, y1, x2, y2), got {tuple(boxes.shape)}")
    if scores.dim() != 1 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(f"{fn}: scores must be (N,) with N = {boxes.shape[0]} boxes, got {tuple(scores.shape)}")


def suppression_matrix(sorted_boxes: Tensor, iou_threshold: float) -> Tensor:
    """S[i, j] = (IoU(i, j) > iou_threshold) and i < j, for boxes sorted by decreasing score: (N, 4) -> (N, N) bool."""
    n = sorted_boxes.shape[0]
    suppresses = torch.zeros(n, n, dtype=torch.bool, device=sorted_boxes.device)  # (N, N)
    rows_per_block = max(1, _BLOCK_ENTRIES // max(n, 1))
    # A block loop to bound memory, not a loop over boxes: each block is one vectorised IoU.
    for start in range(0, n, rows_per_block):
        stop = min(start + rows_per_block, n)
        # Only columns j > i can be suppressed by row i, so start the columns at the block start.
        iou = box_iou(sorted_boxes[start:stop], sorted_boxes[start:])  # (b, N - start)
        rows = torch.arange(start, stop, device=sorted_boxes.device)[:, None]  # (b, 1)
        cols = torch.arange(start, n, device=sorted_boxes.device)[None, :]  # (1, N - start)
        suppresses[start:stop, start:] = (iou > iou_threshold) & (cols > rows)  # (b, N - start)
    return suppresses


def greedy_keep(suppresses: Tensor) -> Tensor:
    """Solve keep[j] = not any_i (S[i, j] and keep[i]) by fixed-point iteration: (N, N) bool -> (N,) bool.

    Returns exactly what greedy NMS keeps (see the module docstring for why).
    """
    keep = torch.ones(suppresses.shape[0], dtype=torch.bool, device=suppresses.device)  # (N,)
    while True:
        # Box j is suppressed if the row of some currently kept box has a True in column j.
        suppressed = suppresses[keep].any(dim=0)  # (N,)
        new_keep = ~suppressed  # (N,)
        if torch.equal(new_keep, keep):
            return keep
        keep = new_keep


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS: (N, 4), (N,) -> indices of the kept boxes (K,) int64, by decreasing score.

    Same result as ``torchvision.ops.nms`` (a box is dropped when IoU > iou_threshold with a kept,
    higher-scoring box; equal scores keep their input order).
    """
    _check_inputs(boxes, scores, "nms")
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)  # (0,)
    # Stable sort: among equal scores the earlier box wins, as in torchvision's kernel.
    order = torch.sort(scores, descending=True, stable=True).indices  # (N,)
    suppresses = suppression_matrix(boxes[order], iou_threshold)  # (N, N) bool
    keep = greedy_keep(suppresses)  # (N,) bool, in score order
    return order[keep]  # (K,)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each category only: (N, 4), (N,), idxs (N,) int64 -> kept indices (K,) int64, by decreasing score.

    The coordinate-offset trick: move the boxes of category c by c * (max_coordinate + 1) along
    both axes. Boxes of different categories then lie in disjoint squares of the plane, never
    overlap, and one plain NMS over everything does all categories at once. This is what
    torchvision does for large inputs (``_batched_nms_coordinate_trick``), with the same offsets, so
    the shifted coordinates are bit-identical to its. (The shift costs float32 precision in the
    IoU -- about 1e-4 relative for offsets near 1e5 -- which can only matter for an IoU within that
    distance of the threshold. Like torchvision, it assumes coordinates >= 0.)
    """
    _check_inputs(boxes, scores, "batched_nms")
    if idxs.shape != scores.shape:
        raise ValueError(f"batched_nms: idxs must be (N,) like scores {tuple(scores.shape)}, got {tuple(idxs.shape)}")
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)  # (0,)
    max_coordinate = boxes.max()  # ()
    offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))  # (N,)
    shifted = boxes + offsets[:, None]  # (N, 4)
    return nms(shifted, scores, iou_threshold)  # (K,)
