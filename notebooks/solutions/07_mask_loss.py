"""Worked solutions to the exercises of 07_mask_loss.ipynb (for teachers; tests/test_exercises.py runs them).

CHECKS pairs every check the notebook calls with its solution; WRONG pairs each check with a
plausible mistake that the check must reject.
"""

import torch
from torch.nn import functional as F

from mrcnn_teach import roi_heads
from mrcnn_teach.exercises.nb07 import check_bce_floor, check_gathered_mask_loss, check_softmax_push


# Exercise 1 -------------------------------------------------------------------------------------
def softmax_push(p_target):
    """From section 3's gradient: (softmax_c - [c = t]) / (P m^2) for every channel c of a pixel.

    On the target channel that is (p_t - 1) / (P m^2), so up = (1 - p_t) / (P m^2) >= 0. On each other
    channel it is softmax_c / (P m^2); summed over the K of them, sum_{c != t} softmax_c = 1 - p_t, because
    the K+1 probabilities sum to 1: down = (1 - p_t) / (P m^2) too, whatever K is. So up = down: the K+1
    gradients of a pixel sum to 0, and every unit by which descent raises the target class's logit is
    taken from the other classes, each in proportion to its probability. That is the competition. (Under
    the sigmoid loss the channel sum is (sigmoid(x^k) - y) / (P m^2), on channel k alone: nothing is taken
    from any other class.)
    """
    num_terms = p_target.numel()  # P m^2: the loss is a mean over them
    up = (1 - p_target) / num_terms  # (P, m, m) minus the target channel's gradient
    down = (1 - p_target) / num_terms  # (P, m, m) sum over c != t of softmax_c / (P m^2), since sum_c softmax_c = 1
    return up, down


def softmax_push_summed(p_target):
    """Wrong: the gradient of a summed loss, without the mean's 1 / (P m^2)."""
    return 1 - p_target, 1 - p_target


def softmax_push_per_roi(p_target):
    """Wrong: divides by m^2 only, as if the loss were averaged per RoI and the RoIs summed."""
    m2 = p_target[0].numel()
    return (1 - p_target) / m2, (1 - p_target) / m2


def softmax_push_gradient(p_target):
    """Wrong: returns the gradients themselves, not what descent adds and takes: the sign is flipped on up."""
    n = p_target.numel()
    return (p_target - 1) / n, (1 - p_target) / n


def softmax_push_others_untouched(p_target):
    """Wrong: the sigmoid loss's picture, in which the other channels get no gradient."""
    return (1 - p_target) / p_target.numel(), torch.zeros_like(p_target)


def softmax_push_target_prob(p_target):
    """Wrong: takes the others' gradient sum to be the target's probability, p_t / (P m^2)."""
    n = p_target.numel()
    return (1 - p_target) / n, p_target / n


# Exercise 2 -------------------------------------------------------------------------------------
def bce_floor(targets):
    """The mean binary entropy H(y) of the targets.

    Per pixel, BCE(p, y) = -y log p - (1 - y) log(1 - p) is convex in p with its minimum at p = y (the
    derivative -y/p + (1 - y)/(1 - p) vanishes there), where it equals H(y) = -y log y - (1 - y) log(1 - y).
    Logits x = log(y / (1 - y)) reach it where 0 < y < 1; where y is 0 or 1 (H = 0) no finite logit does,
    and x -> -inf / +inf approaches it, so the floor is an infimum. H(y) > 0 for every soft
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
    Measured (N = 100, K = 1000, C = C' = 32): the naive head's largest tensor is its (100, 1001, 28, 28)
    logits, 313,913,600 bytes (299 MiB); the gathered head's is the deconvolution's (100, 32, 28, 28),
    10,035,200 bytes (9.6 MiB), which a class-agnostic head builds as well. So, with gathering, memory is
    no argument for class-agnostic masks; the argument left is statistical (one mask trained by every RoI).
    At inference the labels are the predicted classes, one per detection, and the cost is the same: one
    gathered row and one 28x28 map per detection, whatever K is.
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
    (check_softmax_push, softmax_push_summed),
    (check_softmax_push, softmax_push_per_roi),
    (check_softmax_push, softmax_push_gradient),
    (check_softmax_push, softmax_push_others_untouched),
    (check_softmax_push, softmax_push_target_prob),
    (check_bce_floor, bce_floor_zero),
    (check_bce_floor, bce_floor_naive_log),
    (check_bce_floor, bce_floor_of_the_mean),
    (check_bce_floor, bce_floor_bits),
    (check_gathered_mask_loss, gathered_mask_loss_naive),
    (check_gathered_mask_loss, gathered_mask_loss_per_roi),
    (check_gathered_mask_loss, gathered_mask_loss_no_bias),
    (check_gathered_mask_loss, gathered_mask_loss_no_relu),
]
