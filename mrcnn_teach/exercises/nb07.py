"""Checks for the exercises of notebooks/07_mask_loss.ipynb (the mask loss: per-class sigmoid vs softmax).

Each check builds its own examples (random logits, GT masks cropped by the library into soft targets),
compares the answer with the library's losses and autograd, and keeps cases the notebook does not show
for the classroom edition's hidden tests.
"""

from __future__ import annotations

import math

import torch

from . import need_function, run_check


def _example(seed: int, num_rois: int = 5, num_classes: int = 4, m: int = 8, scale: float = 2.0):
    """Logits (P, K+1, m, m), soft targets (P, m, m) cropped by the library from random GT masks, labels (P,)."""
    from ..masks import project_masks_on_boxes

    g = torch.Generator().manual_seed(seed)
    num_gt, size = 3, 32
    r, c = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")  # (32, 32)
    centre = 8 + torch.rand(num_gt, 2, generator=g) * 16  # (G, 2) discs of radius 4..10
    radius = 4 + torch.rand(num_gt, generator=g) * 6  # (G,)
    gt_masks = ((r - centre[:, :1, None]) ** 2 + (c - centre[:, 1:, None]) ** 2
                <= radius[:, None, None] ** 2).to(torch.uint8)  # (G, 32, 32)
    gt_labels = torch.randint(1, num_classes, (num_gt,), generator=g)  # (G,) in 1..K
    xy = torch.rand(num_rois, 2, generator=g) * 12  # (P, 2)
    rois = torch.cat([xy, xy + 8 + torch.rand(num_rois, 2, generator=g) * 12], dim=1)  # (P, 4)
    matched = torch.randint(0, num_gt, (num_rois,), generator=g)  # (P,)
    logits = torch.randn(num_rois, num_classes, m, m, generator=g) * scale  # (P, K+1, m, m)
    targets = project_masks_on_boxes(gt_masks, rois, matched, m)  # (P, m, m) soft, with exact 0s and 1s
    return logits, targets, gt_labels[matched]


def _as_tensor(value, what: str) -> torch.Tensor:
    assert value is not None, f"{what}: your function returned None"
    return torch.as_tensor(value).detach().double()


# Exercise 1 -------------------------------------------------------------------------------------
PUSH_CASES = [dict(seed=711), dict(seed=712, num_rois=3, num_classes=6, m=6)]
PUSH_HIDDEN = [dict(seed=713, num_rois=7, num_classes=3, m=5, scale=6.0), dict(seed=714, num_rois=2, num_classes=11)]


def _push(mask_logits, targets, labels):
    """-> p_target, and (up, down) of the softmax loss by autograd: -grad on each pixel's target channel, and
    the sum of the others'; each (P, m, m)."""
    from ..roi_heads import softmax_mask_loss

    x = mask_logits.clone().requires_grad_(True)  # (P, K+1, m, m)
    softmax_mask_loss(x, targets, labels).backward()
    t = torch.where(targets >= 0.5, labels[:, None, None], 0)  # (P, m, m) each pixel's target class
    on_target = x.grad.gather(1, t[:, None])[:, 0]  # (P, m, m)
    p_target = mask_logits.softmax(dim=1).gather(1, t[:, None])[:, 0]  # (P, m, m)
    return p_target, -on_target, x.grad.sum(dim=1) - on_target  # (P, m, m) x3


def check_softmax_push(answer, hidden: bool = False) -> bool:
    """answer(p_target (P, m, m), each pixel's target-class probability) -> (up, down), each (P, m, m):
    minus the softmax loss's gradient on the target channel, and the sum of the other channels' gradient.
    Given only p_target, `down` needs the derivation: the K+1 probabilities at a pixel sum to 1."""

    def compare():
        need_function(answer)
        for case in PUSH_HIDDEN if hidden else PUSH_CASES:
            logits, targets, labels = _example(**case)
            p_target, up, down = _push(logits, targets, labels)
            got = answer(p_target.clone())
            assert isinstance(got, (tuple, list)) and len(got) == 2, "return two tensors: (up, down)"
            where = f"P = {len(labels)}, K+1 = {logits.shape[1]}, m = {logits.shape[-1]}"
            for name, mine, right, why in (("up", got[0], up, "the loss is a mean over P m^2 terms"),
                                           ("down", got[1], down, "it sums K channels' softmax_c / (P m^2): "
                                            "what do their probabilities add up to?")):
                mine = _as_tensor(mine, name)
                assert mine.shape == right.shape, f"{where}: {name} has shape {tuple(mine.shape)}, expected (P, m, m)"
                right = right.double()
                assert float(mine.abs().max()) > 0, (f"{where}: {name} is 0 everywhere, but under the softmax "
                                                     "every channel is in the loss")
                assert float((mine * right).sum()) > 0, (f"{where}: {name} has the wrong sign (descent moves a "
                                                         "logit by minus its gradient)")
                error = float((mine - right).abs().max()) / float(right.abs().max())
                assert error < 1e-4, f"{where}: {name} is off by up to {100 * error:.1f}% of its largest value ({why})"

    return run_check("what the target channel gains, the others lose", compare, hidden=hidden)


# Exercise 2 -------------------------------------------------------------------------------------
FLOOR_CASES = [dict(seed=721), dict(seed=722, num_rois=4, m=28)]
FLOOR_HIDDEN = [dict(seed=723, num_rois=9, m=14), dict(seed=724, num_rois=1, m=28)]


def _floor(targets: torch.Tensor) -> float:
    y = targets.double()
    return float((-torch.xlogy(y, y) - torch.xlogy(1 - y, 1 - y)).mean())  # mean binary entropy, 0 log 0 = 0


def check_bce_floor(answer, hidden: bool = False) -> bool:
    """answer(targets (P, m, m) in [0, 1]) -> () the lowest value L_mask can take or approach on these targets
    (its infimum: where y is 0 or 1 no finite logit reaches it, logits going to -inf or +inf approach it)."""

    def compare():
        need_function(answer)
        for case in FLOOR_HIDDEN if hidden else FLOOR_CASES:
            _, targets, _ = _example(**case)
            got = _as_tensor(answer(targets.clone()), "bce_floor")
            assert got.numel() == 1, f"return one number (the mean over P*m*m pixels), got shape {tuple(got.shape)}"
            got, right = float(got.reshape(())), _floor(targets)
            assert not math.isnan(got), ("got nan: a pixel with y = 0 or y = 1 gives 0 * log 0, whose limit is 0 "
                                         "(torch.xlogy computes it)")
            assert abs(got - right) < 1e-4, (f"{tuple(targets.shape)} targets: got {got:.4f}, not the floor "
                                             "(no logits may give a lower loss, and some must reach it, or approach it where y is 0 or 1)")

    return run_check("the lowest mask loss on soft targets", compare, hidden=hidden)


# Exercise 3 -------------------------------------------------------------------------------------
GATHER_CASES = [dict(seed=731, num_rois=6, num_classes=301, in_channels=8, dim_reduced=8)]
GATHER_HIDDEN = [dict(seed=732, num_rois=3, num_classes=81, in_channels=4, dim_reduced=6),
                 dict(seed=733, num_rois=9, num_classes=41, in_channels=5, dim_reduced=3)]


def _gather_case(seed, num_rois, num_classes, in_channels, dim_reduced):
    from ..heads import MaskPredictor
    from ..masks import project_masks_on_boxes

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        predictor = MaskPredictor(in_channels, num_classes, dim_reduced)
        with torch.no_grad():
            predictor.mask_logits.bias.normal_()  # biases that differ per class, so that a missing one shows
        features = torch.randn(num_rois, in_channels, 14, 14)  # (P, C, 14, 14) the mask head's output
    _, _, labels = _example(seed, num_rois=num_rois, num_classes=num_classes)
    _, targets, _ = _example(seed, num_rois=num_rois, m=28)  # (P, 28, 28)
    return features, predictor, targets, labels


def check_gathered_mask_loss(answer, hidden: bool = False) -> bool:
    """answer(mask_features (P, C, 14, 14), predictor, targets (P, 28, 28), labels (P,)) -> () L_mask,
    equal to sigmoid_mask_loss(predictor(mask_features), targets, labels), gradients included, without
    building the (P, K+1, 28, 28) logits (nor one RoI's (K+1, 28, 28) at a time)."""
    from ..notebook import largest_tensor
    from ..roi_heads import sigmoid_mask_loss

    def compare():
        need_function(answer)
        for case in GATHER_HIDDEN if hidden else GATHER_CASES:
            features, predictor, targets, labels = _gather_case(**case)
            P, K1 = len(labels), case["num_classes"]
            leaf = features.clone().requires_grad_(True)
            right = sigmoid_mask_loss(predictor(leaf), targets, labels)  # () the naive head
            right.backward()
            right_grads = [leaf.grad.clone()] + [p.grad.clone() for p in predictor.parameters()]
            predictor.zero_grad()
            leaf.grad = None
            got, shape, nbytes = largest_tensor(answer, leaf, predictor, targets.clone(), labels.clone())
            allowed = P * case["dim_reduced"] * 28 * 28 * 4  # the deconvolution's output, which every head needs
            assert nbytes <= allowed, (f"K+1 = {K1}: your head built a tensor of shape {shape} ({nbytes:,} bytes); "
                                       f"the deconvolution's output, {allowed:,} bytes, is the most it needs")
            assert isinstance(got, torch.Tensor) and got.numel() == 1, "return the loss, a tensor with one number"
            mine, expected = float(got.detach()), float(right.detach())
            assert abs(mine - expected) < 1e-5, f"K+1 = {K1}: loss {mine:.5f}, expected {expected:.5f}"
            assert got.requires_grad, "the loss must be differentiable (return a tensor built from the inputs)"
            got.reshape(()).backward()
            names = ["mask_features"] + [name for name, _ in predictor.named_parameters()]
            mine = [leaf.grad] + [p.grad for p in predictor.parameters()]
            for name, g, r in zip(names, mine, right_grads):
                g = torch.zeros_like(r) if g is None else g
                assert torch.allclose(g, r, atol=1e-6), f"K+1 = {K1}: the gradient of {name} differs from the naive head's"

    return run_check("a mask head that builds one channel per RoI", compare, hidden=hidden)
