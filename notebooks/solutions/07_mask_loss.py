"""Worked solutions to the exercises of 07_mask_loss.ipynb (for teachers; tests/test_exercises.py runs them).

CHECKS pairs every check the notebook calls with its solution; WRONG pairs each check with a
plausible mistake that the check must reject.
"""

import torch
from torch.nn import functional as F

from mrcnn_teach import roi_heads
from mrcnn_teach.exercises.nb07 import check_bce_floor, check_gathered_mask_loss, check_softmax_push


# Exercise 1 -------------------------------------------------------------------------------------
def softmax_push(mask_logits, targets, labels):
    """Autograd of the library's softmax loss, read per pixel at its target channel t and summed over the rest.

    The derivation: at pixel (i, j) the gradient is (softmax_c - [c = t]) / (P m^2) for every c, and
    sum_c softmax_c = 1, so the K+1 gradients sum to (1 - 1) / (P m^2) = 0. Minus the gradient of the target
    channel, (1 - softmax_t) / (P m^2) >= 0, is exactly the sum of the others', sum_{c != t} softmax_c / (P m^2):
    every unit by which descent raises the target class's logit is taken from the other classes, each in
    proportion to its probability. That is the competition. (Under the sigmoid loss the channel sum is
    (sigmoid(x^k) - y) / (P m^2), on channel k alone: nothing is taken from any other class.)
    """
    x = mask_logits.clone().requires_grad_(True)  # (P, K+1, m, m)
    roi_heads.softmax_mask_loss(x, targets, labels).backward()
    t = torch.where(targets >= 0.5, labels[:, None, None], 0)  # (P, m, m) each pixel's target class
    on_target = x.grad.gather(1, t[:, None])[:, 0]  # (P, m, m)
    up = -on_target  # (P, m, m) what descent adds to the target channel (over the learning rate)
    down = x.grad.sum(dim=1) - on_target  # (P, m, m) what it takes from the others together
    assert torch.allclose(up, down, atol=1e-9)  # the sum over channels is 0 at every pixel
    return up, down


def softmax_push_rois_class(mask_logits, targets, labels):
    """Wrong: takes the RoI's class as every pixel's target, also where the pixel is background."""
    x = mask_logits.clone().requires_grad_(True)
    roi_heads.softmax_mask_loss(x, targets, labels).backward()
    on_label = x.grad[torch.arange(len(labels)), labels]  # (P, m, m)
    return -on_label, x.grad.sum(dim=1) - on_label


def softmax_push_of_the_sigmoid(mask_logits, targets, labels):
    """Wrong: differentiates the sigmoid loss (mask_loss's) instead of the softmax one: nothing is pushed down."""
    x = mask_logits.clone().requires_grad_(True)
    roi_heads.sigmoid_mask_loss(x, targets, labels).backward()
    on_label = x.grad[torch.arange(len(labels)), labels]
    return -on_label, x.grad.sum(dim=1) - on_label


def softmax_push_summed(mask_logits, targets, labels):
    """Wrong: the closed form of a summed loss, softmax - one_hot, without the mean's 1 / (P m^2)."""
    t = torch.where(targets >= 0.5, labels[:, None, None], 0)  # (P, m, m)
    grad = mask_logits.softmax(dim=1) - F.one_hot(t, mask_logits.shape[1]).permute(0, 3, 1, 2)  # (P, K+1, m, m)
    on_target = grad.gather(1, t[:, None])[:, 0]
    return -on_target, grad.sum(dim=1) - on_target


# Exercise 2 -------------------------------------------------------------------------------------
def bce_floor(targets):
    """The mean binary entropy H(y) of the targets.

    Per pixel, BCE(p, y) = -y log p - (1 - y) log(1 - p) is convex in p with its minimum at p = y (the
    derivative -y/p + (1 - y)/(1 - p) vanishes there), where it equals H(y) = -y log y - (1 - y) log(1 - y).
    Logits x = log(y / (1 - y)) reach it (-inf / +inf at y = 0 / 1, where H = 0). H(y) > 0 for every soft
    pixel, so a model that predicts the target perfectly still has a loss: the soft border of a 28x28 target
    sets a floor under L_mask, and the loss that training can remove is L_mask - H(y), not L_mask.
    """
    y = targets.double()
    return (-torch.xlogy(y, y) - torch.xlogy(1 - y, 1 - y)).mean()  # () 0 log 0 = 0


def bce_floor_zero(targets):
    """Wrong: "a perfect model reaches 0" (true only of hard 0/1 targets)."""
    return torch.tensor(0.0)


def bce_floor_naive_log(targets):
    """Wrong: the formula with plain logs: 0 * log 0 is nan at every pixel with y = 0 or 1."""
    return (-(targets * targets.log()) - (1 - targets) * (1 - targets).log()).mean()


def bce_floor_of_the_mean(targets):
    """Wrong: the entropy of the mean target, H(mean y), instead of the mean of the pixels' H(y)."""
    y = targets.double().mean()
    return -torch.xlogy(y, y) - torch.xlogy(1 - y, 1 - y)


def bce_floor_bits(targets):
    """Wrong: the entropy in bits (log base 2); PyTorch's losses use the natural log."""
    y = targets.double()
    return (-torch.xlogy(y, y) - torch.xlogy(1 - y, 1 - y)).mean() / torch.log(torch.tensor(2.0, dtype=torch.float64))


# Exercise 3 -------------------------------------------------------------------------------------
def gathered_mask_loss(mask_features, predictor, targets, labels):
    """Compute only channel labels[n] of RoI n: gather the GT class's row of the 1x1 conv, not its output.

    The 1x1 conv maps each pixel's C features to K+1 logits, x^c = w_c . f + b_c. Only c = labels[n] enters
    the loss, so gather those rows first: (P, C) weights and (P,) biases, then one dot product per pixel.
    Memory: the deconvolution's (P, C, 28, 28), which every head needs, plus P*C weights and (P, 28, 28)
    logits, whatever K is; the naive head's (P, K+1, 28, 28) logits grow with K. The gradients are the same:
    the naive head's non-GT channels get zero gradient anyway, and the gathered rows get the GT channel's.
    """
    x = F.relu(predictor.deconv(mask_features))  # (P, C, 28, 28)
    w = predictor.mask_logits.weight[labels, :, 0, 0]  # (P, C) the GT class's 1x1 weights
    b = predictor.mask_logits.bias[labels]  # (P,)
    logits = torch.einsum("pc,pchw->phw", w, x) + b[:, None, None]  # (P, 28, 28)
    return F.binary_cross_entropy_with_logits(logits, targets)  # ()


def gathered_mask_loss_naive(mask_features, predictor, targets, labels):
    """Wrong: right loss, but it runs the whole predictor: (P, K+1, 28, 28) logits, then picks a channel."""
    return roi_heads.sigmoid_mask_loss(predictor(mask_features), targets, labels)


def gathered_mask_loss_per_roi(mask_features, predictor, targets, labels):
    """Wrong: the whole 1x1 conv one RoI at a time, (K+1, 28, 28) each: less at once, still every channel."""
    picked = [predictor(mask_features[n:n + 1])[0, labels[n]] for n in range(len(labels))]  # P x (28, 28)
    return F.binary_cross_entropy_with_logits(torch.stack(picked), targets)


def gathered_mask_loss_no_bias(mask_features, predictor, targets, labels):
    """Wrong: gathers the weights and forgets the 1x1 conv's bias."""
    x = F.relu(predictor.deconv(mask_features))  # (P, C, 28, 28)
    w = predictor.mask_logits.weight[labels, :, 0, 0]  # (P, C)
    return F.binary_cross_entropy_with_logits(torch.einsum("pc,pchw->phw", w, x), targets)


def gathered_mask_loss_no_relu(mask_features, predictor, targets, labels):
    """Wrong: forgets the ReLU between the deconvolution and the 1x1 conv."""
    x = predictor.deconv(mask_features)  # (P, C, 28, 28)
    w = predictor.mask_logits.weight[labels, :, 0, 0]  # (P, C)
    b = predictor.mask_logits.bias[labels]  # (P,)
    return F.binary_cross_entropy_with_logits(torch.einsum("pc,pchw->phw", w, x) + b[:, None, None], targets)


CHECKS = [
    (check_softmax_push, softmax_push),
    (check_bce_floor, bce_floor),
    (check_gathered_mask_loss, gathered_mask_loss),
]

WRONG = [
    (check_softmax_push, softmax_push_rois_class),
    (check_softmax_push, softmax_push_of_the_sigmoid),
    (check_softmax_push, softmax_push_summed),
    (check_bce_floor, bce_floor_zero),
    (check_bce_floor, bce_floor_naive_log),
    (check_bce_floor, bce_floor_of_the_mean),
    (check_bce_floor, bce_floor_bits),
    (check_gathered_mask_loss, gathered_mask_loss_naive),
    (check_gathered_mask_loss, gathered_mask_loss_per_roi),
    (check_gathered_mask_loss, gathered_mask_loss_no_bias),
    (check_gathered_mask_loss, gathered_mask_loss_no_relu),
]
