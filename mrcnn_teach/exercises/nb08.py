"""Checks for the exercises of notebooks/08_full_model.ipynb (the whole model: parts, contract, configs).

Each check compares the student's answer with the library itself: a freshly built `FPN` for the
parameter count, a real forward pass of a small `shapes_tiny` model for the loss names and the output
keys, and models built by `build_maskrcnn` for the predictor shapes.
"""

from __future__ import annotations

import functools

import torch

from . import need_function, run_check


def _need_names(answer) -> set[str]:
    """A set/list/tuple of strings -> a set; None (unanswered) counts as not attempted."""
    if answer is None:
        raise NotImplementedError
    assert isinstance(answer, (set, frozenset, list, tuple)), \
        f"expected a set of strings like {{'a', 'b'}}, got {type(answer).__name__}"
    assert all(isinstance(name, str) for name in answer), "every name must be a string"
    names = set(answer)
    assert len(names) == len(answer), "a name appears twice"
    return names


# ------------------------------------------------------------------------------- exercise 1

def check_fpn_params(my_fpn_params) -> bool:
    """my_fpn_params(in_channels list[int], out_channels int) -> int, the number of parameters of
    FPN(in_channels, out_channels), for channel lists the student has not seen."""
    from ..fpn import FPN

    def compare():
        need_function(my_fpn_params)
        cases = [([64, 128, 256, 512], 64), ([256, 512, 1024, 2048], 256), ([48, 96, 192, 384], 128),
                 ([16, 32, 64], 8)]
        for in_channels, out_channels in cases:
            expected = sum(p.numel() for p in FPN(in_channels, out_channels).parameters())
            got = my_fpn_params(list(in_channels), out_channels)
            assert got is not None, "your function returned None"
            assert int(got) == expected, (f"FPN({in_channels}, {out_channels}): expected {expected:,} parameters, "
                                          f"got {int(got):,}")

    return run_check("FPN parameter count", compare)


# ------------------------------------------------------------------------------- exercise 2

@functools.lru_cache(maxsize=1)
def _contract() -> tuple[frozenset, frozenset]:
    """The loss names (train mode) and output keys (eval mode) of a real forward pass, computed once."""
    from ..configs import build_maskrcnn

    state = torch.random.get_rng_state()  # the check must not move the notebook's generator
    try:
        torch.manual_seed(808)
        model = build_maskrcnn("shapes_tiny", min_size=64, max_size=64)  # (4 classes, small images)
        image = torch.rand(3, 64, 64)  # (3, H, W)
        mask = torch.zeros(1, 64, 64, dtype=torch.uint8)  # (1, H, W)
        mask[0, 10:40, 12:50] = 1
        target = dict(boxes=torch.tensor([[12.0, 10.0, 50.0, 40.0]]), labels=torch.tensor([2]), masks=mask)
        model.train()
        losses = model([image], [target])
        model.eval()
        with torch.no_grad():
            detections = model([image])
    finally:
        torch.random.set_rng_state(state)
    return frozenset(losses), frozenset(detections[0])


def _assert_same_keys(names: set, expected: set, noun: str, where: str) -> None:
    """The student's set of keys is the expected one; say how many are missing (not which) and which are extra."""
    missing, extra = sorted(expected - names), sorted(names - expected)
    assert not missing and not extra, (f"{len(names)} {noun}s given, {len(expected)} expected"
                                       + (f"; {len(missing)} {noun}(s) missing" if missing else "")
                                       + (f"; not a key of {where}: {extra}" if extra else ""))


def check_contract(my_contract) -> bool:
    """my_contract() -> (loss names, output keys): the keys of the train-mode loss dict and of each
    eval-mode detection dict, as two sets (exercise 2: one stub, one check)."""

    def compare():
        need_function(my_contract)
        got = my_contract()
        assert isinstance(got, (tuple, list)) and len(got) == 2, "return two sets: (loss names, output keys)"
        loss_names, output_keys = got
        expected_losses, expected_keys = _contract()
        _assert_same_keys(_need_names(loss_names), expected_losses, "name", "the loss dict")
        _assert_same_keys(_need_names(output_keys), expected_keys, "key", "a detection dict")

    return run_check("the contract", compare)


# ------------------------------------------------------------------------------- exercise 3

def _predictor_shapes(num_classes: int, class_agnostic: bool) -> dict[str, tuple[int, ...]]:
    from ..configs import build_maskrcnn

    model = build_maskrcnn("shapes_tiny", num_classes=num_classes, class_agnostic_masks=class_agnostic)
    heads = model.roi_heads
    return {"cls_score": tuple(heads.box_predictor.cls_score.weight.shape),
            "bbox_deltas": tuple(heads.box_predictor.bbox_deltas.weight.shape),
            "mask_logits": tuple(heads.mask_predictor.mask_logits.weight.shape)}


def check_predictor_shapes(my_predictor_shapes) -> bool:
    """my_predictor_shapes(num_classes, class_agnostic) -> dict of the weight shapes of cls_score,
    bbox_deltas and mask_logits in build_maskrcnn("shapes_tiny", num_classes=..., class_agnostic_masks=...)."""

    def compare():
        need_function(my_predictor_shapes)
        for num_classes, agnostic in ((7, False), (2, False), (12, True)):
            expected = _predictor_shapes(num_classes, agnostic)
            got = my_predictor_shapes(num_classes, agnostic)
            assert got is not None, "your function returned None"
            assert isinstance(got, dict), f"return a dict, got {type(got).__name__}"
            assert set(got) == set(expected), f"return the keys {sorted(expected)}, got {sorted(got)}"
            for key, shape in expected.items():
                mine = tuple(int(n) for n in got[key])
                assert mine == shape, (f"num_classes={num_classes}, class_agnostic={agnostic}: {key} weight is "
                                       f"{shape}, you said {mine}")

    return run_check("predictor shapes", compare)
