"""Checks for the exercises of notebooks/04_rpn.ipynb (RPN labels, box encoding, RPN losses).

Each check calls the student's function on inputs of our choosing and compares it with the
library: `Matcher` for the labels, `BoxCoder` for the encoding, `RegionProposalNetwork.loss` for
the losses.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from ..boxes import BoxCoder, box_iou
from ..matcher import Matcher
from ..rpn import RegionProposalNetwork
from . import close, need_function, run_check


def _random_boxes(n: int, generator: torch.Generator, size: float = 128.0) -> torch.Tensor:
    """(n, 4) valid x1y1x2y2 boxes inside a size x size image, 4..64 px on a side."""
    xy = torch.rand(n, 2, generator=generator) * (size - 64)  # (n, 2)
    wh = 4 + torch.rand(n, 2, generator=generator) * 60  # (n, 2)
    return torch.cat([xy, xy + wh], dim=1)  # (n, 4)


def _reference_labels(iou: torch.Tensor) -> torch.Tensor:
    matched = Matcher(0.7, 0.3, allow_low_quality_matches=True)(iou)  # (N,)
    labels = (matched >= 0).float()  # (N,)
    labels[matched == Matcher.BETWEEN_THRESHOLDS] = -1.0
    return labels


def _iou_cases() -> list[torch.Tensor]:
    # By hand: anchor 0 is positive at 0.75; anchor 1 sits exactly on 0.3 (ignored: negatives are < 0.3);
    # anchor 2 is negative; GT 1's best IoU 0.45 is shared by anchors 3 and 4 (a tie: both positive),
    # and anchor 5 sits exactly on 0.7 (positive).
    by_hand = torch.tensor([[0.75, 0.30, 0.29, 0.50, 0.10, 0.70],
                            [0.10, 0.20, 0.20, 0.45, 0.45, 0.00]])  # (2, 6)
    g = torch.Generator().manual_seed(4)
    cases = [by_hand]
    for num_gt, num_anchors in ((1, 50), (3, 400), (5, 1000)):
        gt = _random_boxes(num_gt, g)  # (G, 4)
        anchors = torch.cat([_random_boxes(num_anchors - num_gt, g),
                             gt + torch.randn(num_gt, 4, generator=g)], dim=0)  # (N, 4), a few close to the GT
        cases.append(box_iou(gt, anchors))  # (G, N)
    return cases


def check_rpn_labels(answer) -> bool:
    """answer(iou (G, N)) -> (N,) labels 1 / 0 / -1 (thresholds 0.7 / 0.3 and the low-quality rule)."""

    def compare():
        need_function(answer)
        for case, iou in enumerate(_iou_cases()):
            expected = _reference_labels(iou)  # (N,)
            got = answer(iou.clone())
            assert isinstance(got, torch.Tensor), f"return a tensor, got {type(got).__name__}"
            assert got.shape == expected.shape, f"expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
            wrong = torch.nonzero(got.float() != expected).squeeze(1)  # (W,)
            if wrong.numel():
                n = int(wrong[0])
                column = ", ".join(f"{v:.2f}" for v in iou[:, n].tolist())
                raise AssertionError(
                    f"case {case}: {wrong.numel()} of {expected.numel()} anchors wrong; anchor {n} has IoUs "
                    f"[{column}] with the boxes, expected label {expected[n]:.0f}, got {float(got[n]):.0f}"
                )

    return run_check("RPN anchor labels", compare)


def check_box_encoding(answer) -> bool:
    """answer(boxes (N, 4), anchors (N, 4)) -> (N, 4) deltas (tx, ty, tw, th), weights (1, 1, 1, 1)."""

    def compare():
        need_function(answer)
        g = torch.Generator().manual_seed(40)
        boxes, anchors = _random_boxes(64, g), _random_boxes(64, g)  # (64, 4) each
        expected = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0)).encode(boxes, anchors)  # (64, 4)
        got = answer(boxes.clone(), anchors.clone())
        assert isinstance(got, torch.Tensor), f"return a tensor, got {type(got).__name__}"
        assert got.shape == expected.shape, f"expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
        for j, name in enumerate(("tx", "ty", "tw", "th")):
            if not close(got[:, j], expected[:, j], atol=1e-4):
                n = int((got[:, j] - expected[:, j]).abs().argmax())
                raise AssertionError(f"{name} is off: for box {boxes[n].tolist()} and anchor {anchors[n].tolist()} "
                                     f"expected {expected[n, j]:.4f}, got {float(got[n, j]):.4f}")

    return run_check("box encoding", compare)


def _loss_inputs(seed: int):
    g = torch.Generator().manual_seed(seed)
    num = 600
    objectness = torch.randn(num, generator=g) * 3  # (A,)
    deltas = torch.randn(num, 4, generator=g) * 0.5  # (A, 4)
    regression_targets = torch.randn(num, 4, generator=g) * 0.5  # (A, 4)
    labels = torch.randint(-1, 2, (num,), generator=g).float()  # (A,) in {-1, 0, 1}
    labels[:8] = 1.0  # enough positives whatever the draw
    pos_candidates = torch.nonzero(labels == 1).squeeze(1)
    neg_candidates = torch.nonzero(labels == 0).squeeze(1)
    num_pos = {0: 20, 1: 64, 2: 7}[seed % 3]
    pos = pos_candidates[torch.randperm(len(pos_candidates), generator=g)[:num_pos]]
    neg = neg_candidates[torch.randperm(len(neg_candidates), generator=g)[: 128 - len(pos)]]
    pos_mask = torch.zeros(num, dtype=torch.bool)
    neg_mask = torch.zeros(num, dtype=torch.bool)
    pos_mask[pos] = True
    neg_mask[neg] = True
    return objectness, deltas, labels, regression_targets, pos_mask, neg_mask


def check_rpn_losses(answer) -> bool:
    """answer(objectness (A,), deltas (A, 4), labels (A,), regression_targets (A, 4), pos_mask, neg_mask)
    -> (loss_objectness, loss_box), normalised as RegionProposalNetwork.loss does."""

    def compare():
        need_function(answer)
        for seed in range(3):
            objectness, deltas, labels, targets, pos_mask, neg_mask = _loss_inputs(seed)
            # The library's own loss, with its sampler replaced by the masks we chose.
            fixed = SimpleNamespace(sampler=lambda _labels, p=pos_mask, n=neg_mask: ([p], [n]))
            exp_obj, exp_box = RegionProposalNetwork.loss(fixed, objectness[None], deltas[None], [labels], targets)
            got = answer(objectness.clone(), deltas.clone(), labels.clone(), targets.clone(),
                         pos_mask.clone(), neg_mask.clone())
            assert isinstance(got, (tuple, list)) and len(got) == 2, "return a pair (loss_objectness, loss_box)"
            got_obj, got_box = (torch.as_tensor(v, dtype=torch.float32) for v in got)
            assert got_obj.numel() == 1 and got_box.numel() == 1, "each loss must be a scalar"
            assert close(got_obj.reshape(()), exp_obj, atol=1e-5), (
                f"loss_objectness: expected {exp_obj:.4f}, got {float(got_obj):.4f} "
                f"(which anchors enter the BCE, and what is it averaged over?)")
            if not close(got_box.reshape(()), exp_box, atol=1e-5):
                ratio = float(got_box) / float(exp_box)
                raise AssertionError(f"loss_box: expected {exp_box:.4f}, got {float(got_box):.4f} ({ratio:.2f} x); "
                                     "check beta, which anchors are summed, and what you divide by")

    return run_check("RPN losses and their normalisation", compare)
