"""The assembled model: it trains, it overfits, it refuses bad input with a useful message."""

import pytest
import torch

from mrcnn_teach import build_maskrcnn
from mrcnn_teach.boxes import box_iou


def synthetic_image(h=96, w=112):
    """A gradient background with a red square and a blue disc: two objects, two classes."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")  # (h, w)
    image = torch.stack([xs / w * 0.3, ys / h * 0.3, torch.full((h, w), 0.2)])  # (3, h, w)
    square = (xs >= 14) & (xs < 50) & (ys >= 20) & (ys < 56)  # (h, w)
    disc = (xs - 78.5) ** 2 + (ys - 60.5) ** 2 <= 20**2  # (h, w)
    image[:, square] = torch.tensor([0.9, 0.1, 0.1])[:, None]
    image[:, disc] = torch.tensor([0.1, 0.2, 0.9])[:, None]
    masks = torch.stack([square, disc]).to(torch.uint8)  # (2, h, w)
    boxes = torch.tensor([[14.0, 20.0, 50.0, 56.0], [58.0, 40.0, 99.0, 81.0]])  # (2, 4)
    return image, dict(boxes=boxes, labels=torch.tensor([1, 2]), masks=masks)


def tiny_model(**overrides):
    torch.manual_seed(0)
    return build_maskrcnn("shapes_tiny", **overrides)


def test_one_gradient_step_is_finite_everywhere():
    model = tiny_model().train()
    image, target = synthetic_image()
    losses = model([image], [target])
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in trainable if p.grad is None]
    assert not missing, f"parameters that got no gradient: {missing[:5]}"
    bad = [n for n, p in trainable if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients in {bad[:5]}"
    assert sum(p.grad.abs().sum() for _, p in trainable) > 0


def test_image_without_objects_trains():
    model = tiny_model().train()
    image, _ = synthetic_image()
    empty = dict(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.int64),
                 masks=torch.zeros(0, *image.shape[-2:], dtype=torch.uint8))
    losses = model([image], [empty])
    assert torch.isfinite(sum(losses.values()))
    # Background only: nothing to regress, no mask to learn, but objectness still learns "no".
    assert losses["loss_rpn_box_reg"].item() == 0 and losses["loss_box_reg"].item() == 0
    assert losses["loss_mask"].item() == 0 and losses["loss_objectness"].item() > 0
    sum(losses.values()).backward()


@pytest.mark.slow
def test_small_config_overfits_two_images():
    """Loss falls by > 90% and masks reach IoU > 0.8 with the ground truth, on CPU."""
    model = tiny_model().train()
    image, target = synthetic_image()
    images = [image, image.flip(-1)]
    flipped = dict(target, masks=target["masks"].flip(-1),
                   boxes=torch.stack([image.shape[-1] - target["boxes"][:, 2], target["boxes"][:, 1],
                                      image.shape[-1] - target["boxes"][:, 0], target["boxes"][:, 3]], 1))
    targets = [target, flipped]
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    history = []
    for step in range(160):
        losses = model(images, targets)
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    first, last = history[0], sum(history[-10:]) / 10
    assert last < 0.1 * first, f"loss only fell from {first:.3f} to {last:.3f}"

    model.eval()
    with torch.no_grad():
        predictions = model(images)
    for pred, tgt in zip(predictions, targets):
        assert len(pred["boxes"]) > 0
        for gt_box, gt_mask, gt_label in zip(tgt["boxes"], tgt["masks"], tgt["labels"]):
            best = int(box_iou(gt_box[None], pred["boxes"]).argmax())
            assert pred["labels"][best] == gt_label
            mask = pred["masks"][best, 0] > 0.5  # (H, W)
            iou = (mask & gt_mask.bool()).sum() / (mask | gt_mask.bool()).sum()
            assert iou > 0.8, f"mask IoU {iou:.2f} for class {int(gt_label)}"


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda img, t: (img[:1], t), r"image 1: expected shape \(3, H, W\)"),
        (lambda img, t: ((img * 255).to(torch.uint8), t), "image 1: expected a float tensor"),
        (lambda img, t: (img, dict(t, boxes=t["boxes"][:, [2, 1, 0, 3]])), r"image 1, box 0: .* x2 <= x1"),
        (lambda img, t: (img, dict(t, masks=t["masks"][:, :-1])), "image 1: masks must have shape"),
        (lambda img, t: (img, dict(t, labels=torch.tensor([1, 4]))), "image 1, object 1: label 4 is out of range"),
        (lambda img, t: (img, dict(t, labels=torch.tensor([0, 1]))), "image 1, object 0: label 0 is out of range"),
        (lambda img, t: (img, dict(t, boxes=t["boxes"].long())), "image 1: boxes must be a float tensor"),
        (lambda img, t: (img, {k: v for k, v in t.items() if k != "masks"}), "image 1: target has no 'masks'"),
    ],
)
def test_bad_input_names_the_problem_and_the_image(corrupt, message):
    model = tiny_model().train()
    image, target = synthetic_image()
    bad_image, bad_target = corrupt(image, target)
    with pytest.raises((ValueError, TypeError), match=message):
        model([image, bad_image], [target, bad_target])


def test_eval_output_contract():
    model = tiny_model(box_score_thresh=0.0).eval()
    image, _ = synthetic_image(h=77, w=131)
    with torch.no_grad():
        (pred,) = model([image])
    d = pred["boxes"].shape[0]
    assert d > 0
    assert pred["boxes"].shape == (d, 4) and pred["scores"].shape == (d,) and pred["labels"].shape == (d,)
    assert pred["masks"].shape == (d, 1, 77, 131) and pred["masks"].dtype == torch.float32
    assert 0 <= pred["masks"].min() and pred["masks"].max() <= 1
    assert (pred["boxes"][:, 2] <= 131).all() and (pred["boxes"][:, 3] <= 77).all()
    # batched NMS keeps detections sorted by decreasing score
    assert torch.all(pred["scores"][:-1] >= pred["scores"][1:])
    assert torch.isfinite(pred["scores"]).all() and (pred["labels"] >= 1).all() and (pred["labels"] <= 3).all()
