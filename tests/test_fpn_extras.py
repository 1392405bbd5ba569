"""fpn.merged_maps (what FPN.forward hands its 3x3 convs) and visualize.draw_fpn_diagram (notebook 02)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from mrcnn_teach.fpn import FPN, merged_maps  # noqa: E402
from mrcnn_teach.visualize import draw_fpn_diagram  # noqa: E402


def test_merged_maps_are_the_inputs_of_the_output_convs_and_leave_no_hooks():
    torch.manual_seed(0)
    fpn = FPN([4, 6, 8, 10], 5).eval()
    C = [torch.randn(2, c, h, w) for c, (h, w) in zip([4, 6, 8, 10], [(25, 33), (13, 17), (7, 9), (4, 5)])]
    M = merged_maps(fpn, C)
    expected = fpn.lateral[3](C[3])  # M5
    by_hand = [expected]
    for level in (2, 1, 0):
        lateral = fpn.lateral[level](C[level])
        expected = lateral + F.interpolate(expected, size=lateral.shape[-2:], mode="nearest")
        by_hand.insert(0, expected)
    assert [tuple(m.shape) for m in M] == [(2, 5, 25, 33), (2, 5, 13, 17), (2, 5, 7, 9), (2, 5, 4, 5)]
    with torch.no_grad():
        P = fpn(C)
        for m, e, conv, p in zip(M, by_hand, fpn.output, P):
            torch.testing.assert_close(m, e)
            torch.testing.assert_close(conv(m), p)
    assert all(len(conv._forward_pre_hooks) == 0 for conv in fpn.output)


def test_fpn_diagram_names_every_map_and_no_labels_overlap():
    fig = draw_fpn_diagram((64, 128, 256, 512), 64)
    fig.canvas.draw()
    texts = [t for t in fig.axes[0].texts if t.get_text().strip()]
    words = " ".join(t.get_text() for t in texts)
    for name in ["C2: 64 ch.", "C5: 512 ch.", "M2", "M5", "P2: 64 ch.", "P6: 64 ch.", "1×1 conv", "3×3 conv",
                 "×2 up (nearest)"]:
        assert name in words, name
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in texts if t.get_text() != "+"]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), (a, b)
    plt.close(fig)
    with pytest.raises(ValueError, match="C2..C5"):
        draw_fpn_diagram((64, 128, 256), 64)
