"""Pictures: each helper draws on small inputs, and draws what it claims (checked on the rendered pixels)."""

import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

from mrcnn_teach.visualize import (  # noqa: E402
    MASK_ALPHA,
    class_color,
    draw_boxes,
    draw_instances,
    plot_losses,
    read_log,
    show_mask_grid,
    show_predictions,
    to_numpy_image,
)

H, W = 40, 60
NAMES = ("background", "square", "circle", "triangle")


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def instances():
    masks = torch.zeros(2, H, W, dtype=torch.uint8)  # (2, H, W)
    masks[0, 5:20, 5:25] = 1
    masks[1, 22:38, 30:55] = 1
    return dict(boxes=torch.tensor([[5.0, 5, 25, 20], [30, 22, 55, 38]]), labels=torch.tensor([1, 2]),
                scores=torch.tensor([0.9, 0.3]), masks=masks)


def render(fig):
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(np.float64) / 255.0  # (h, w, 3)


def pixel_at(fig, ax, x, y, rgb):
    """Colour of the rendered figure at data point (x, y)."""
    col, row = ax.transData.transform((x, y))
    return rgb[int(fig.bbox.height - row), int(col)]


def bare_axes():
    fig = plt.figure(figsize=(3, 2), dpi=100)
    return fig, fig.add_axes([0, 0, 1, 1])


def test_class_colours_are_deterministic_and_distinct():
    assert class_color(1) == class_color(1) == class_color(11)
    assert len({class_color(k) for k in range(10)}) == 10


def test_to_numpy_image_formats():
    chw = torch.rand(3, H, W)  # (3, H, W)
    np.testing.assert_allclose(to_numpy_image(chw), chw.permute(1, 2, 0).numpy())
    assert to_numpy_image(torch.zeros(H, W)).shape == (H, W, 3)
    np.testing.assert_allclose(to_numpy_image(np.full((H, W, 3), 255, np.uint8)), 1.0)
    assert to_numpy_image(torch.full((3, H, W), -2.0)).min() == 0.0  # normalised input is clipped
    with pytest.raises(ValueError, match="image"):
        to_numpy_image(torch.zeros(2, 3, H, W))


def test_draw_instances_colours_mask_pixels_only():
    fig, ax = bare_axes()
    inst = instances()
    draw_instances(ax, torch.zeros(3, H, W), **inst, class_names=NAMES, score_thresh=0.5)
    rgb = render(fig)
    inside, outside = pixel_at(fig, ax, 12, 15, rgb), pixel_at(fig, ax, 45, 8, rgb)
    # Inside instance 0 (a square, class 1): black blended with its class colour at MASK_ALPHA.
    np.testing.assert_allclose(inside, MASK_ALPHA * np.array(class_color(1)), atol=0.02)
    np.testing.assert_allclose(outside, 0.0, atol=0.02)
    # Instance 1 scores 0.3 < score_thresh: its mask is not drawn.
    np.testing.assert_allclose(pixel_at(fig, ax, 42, 30, rgb), 0.0, atol=0.02)
    # One box outline per kept instance, and its caption.
    (boxes,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(boxes.get_segments()) == 1
    assert [t.get_text() for t in ax.texts] == ["square 0.90"]


def test_draw_instances_ground_truth_and_probability_masks():
    fig, ax = bare_axes()
    inst = instances()
    probs = inst["masks"][:, None].float() * 0.6  # (2, 1, H, W), above mask_thresh=0.5
    draw_instances(ax, torch.zeros(3, H, W), inst["boxes"], inst["labels"], masks=probs, class_names=NAMES)
    rgb = render(fig)
    np.testing.assert_allclose(pixel_at(fig, ax, 42, 30, rgb), MASK_ALPHA * np.array(class_color(2)), atol=0.02)
    assert sorted(t.get_text() for t in ax.texts) == ["circle", "square"]  # no scores for ground truth
    with pytest.raises(ValueError, match="number of instances"):
        draw_instances(ax, torch.zeros(3, H, W), inst["boxes"], inst["labels"][:1])


def test_show_predictions_layout():
    inst = instances()
    empty = dict(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.int64), scores=torch.zeros(0),
                 masks=torch.zeros(0, 1, H, W))
    target = {k: v for k, v in inst.items() if k != "scores"}
    fig = show_predictions([torch.rand(3, H, W)] * 2, [target, target], [inst, empty], NAMES, score_thresh=0.5)
    axes = fig.axes
    assert len(axes) == 4
    assert axes[0].get_title() == "ground truth" and axes[1].get_title().startswith("prediction")
    assert len(axes[0].texts) == 2 and len(axes[1].texts) == 1 and len(axes[3].texts) == 0
    render(fig)


def test_draw_boxes_many_boxes_in_one_collection():
    boxes = torch.rand(1000, 2) * 50  # (1000, 2)
    boxes = torch.cat([boxes, boxes + 8], dim=1)  # (1000, 4)
    fig, ax = bare_axes()
    draw_boxes(ax, torch.rand(3, H, W), boxes, color="red")
    (lines,) = ax.collections
    segments = lines.get_segments()
    assert len(segments) == 1000
    np.testing.assert_allclose(segments[3][[0, 2]], [boxes[3, :2].numpy(), boxes[3, 2:].numpy()], rtol=1e-6)
    # Without an image the axes frame the boxes, y pointing down like an image.
    fig, ax = bare_axes()
    draw_boxes(ax, None, torch.tensor([[10.0, 20, 30, 60]]))
    assert ax.get_xlim() == (10.0, 30.0) and ax.get_ylim() == (60.0, 20.0)
    with pytest.raises(ValueError, match="boxes"):
        draw_boxes(ax, None, torch.zeros(4))


def test_show_mask_grid_logits_and_probs():
    logits = torch.randn(10, 28, 28) * 4  # (10, 28, 28)
    fig = show_mask_grid(logits, titles=[f"roi {i}" for i in range(10)], ncols=4)
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 10  # 3 x 4 grid, 2 cells empty
    assert len(fig.axes) == 12 + 1  # + the colorbar
    vmin, vmax = images[0].get_clim()
    assert vmin == -vmax == pytest.approx(-float(logits.abs().max()))  # 0 logit = prob 0.5 in the middle
    fig = show_mask_grid(torch.sigmoid(logits)[:, None])  # (10, 1, 28, 28) probabilities
    assert [ax.images[0] for ax in fig.axes if ax.images][0].get_clim() == (0.0, 1.0)
    with pytest.raises(ValueError, match="titles"):
        show_mask_grid(logits, titles=["a"])


def test_plot_losses_one_line_per_loss_key(tmp_path):
    records = [{"step": s, "epoch": s // 4, "loss": 2.0 / (s + 1), "loss_classifier": 1.0 / (s + 1),
                "loss_mask": 0.5, "lr": 0.01} for s in range(8)]
    records.append({"step": 8, "epoch": 2, "segm_AP": 0.3})  # an eval record: no loss keys
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    assert read_log(log) == records
    fig = plot_losses(log, log_scale=True)
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.lines] == ["loss", "loss_classifier", "loss_mask"]
    np.testing.assert_allclose(ax.lines[1].get_xdata(), range(8))
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [1.0 / (s + 1) for s in range(8)])
    assert ax.get_yscale() == "log"
    assert plot_losses(records).axes[0].get_yscale() == "linear"
    log.write_text('{"step": 0, "loss": 1.0}\nnot json\n')
    with pytest.raises(ValueError, match="line 2"):
        read_log(log)


def test_example_picture_is_written(tmp_path):
    inst = instances()
    target = {k: v for k, v in inst.items() if k != "scores"}
    fig = show_predictions([torch.rand(3, H, W)], [target], [inst], NAMES, score_thresh=0.0)
    path = tmp_path / "example.png"
    fig.savefig(path)
    assert path.stat().st_size > 1000
