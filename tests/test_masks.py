"""masks.py against torchvision: mask targets (project_masks_on_boxes) and mask pasting."""

import pytest
import torch
from torch.nn import functional as F
from torchvision.models.detection import roi_heads as tv_roi_heads

from mrcnn_teach.kernels import TEACHING, TORCHVISION
from mrcnn_teach.masks import bilinear_weights, paste_masks_in_image, project_masks_on_boxes


def boxes_for_pasting(generator, im_h, im_w):
    """Boxes inside, partly outside (all four sides), tiny (< 1 px), degenerate and huge (> image)."""
    n = 12
    xy = torch.rand(n, 2, generator=generator) * torch.tensor([im_w, im_h])  # (n, 2)
    wh = torch.rand(n, 2, generator=generator) * 30 + 1  # (n, 2)
    regular = torch.cat([xy, xy + wh], dim=1)  # (n, 4)
    special = torch.tensor([
        [-12.3, -7.9, 20.2, 15.5],  # over the top-left corner
        [im_w - 10.5, im_h - 6.2, im_w + 25.7, im_h + 18.1],  # over the bottom-right corner
        [-4.0, 10.0, 8.0, im_h + 3.0],  # over the left, top to bottom
        [3.2, 4.7, 3.5, 4.9],  # tiny: 0.3 x 0.2 px
        [10.0, 10.0, 10.0, 10.0],  # degenerate: zero size
        [-100.0, -80.0, im_w + 120.0, im_h + 90.0],  # huge: covers the image and more
        [0.0, 0.0, im_w, im_h],  # the whole image
    ])  # (7, 4)
    return torch.cat([regular, special])  # (19, 4)


@pytest.mark.parametrize("M,padding", [(28, 1), (14, 2)])
def test_paste_masks_matches_torchvision(M, padding):
    g = torch.Generator().manual_seed(0)
    im_h, im_w = 37, 53
    boxes = boxes_for_pasting(g, im_h, im_w)
    masks = torch.rand(len(boxes), 1, M, M, generator=g)  # (N, 1, M, M) probabilities
    ours = paste_masks_in_image(masks, boxes, (im_h, im_w), padding=padding)
    theirs = tv_roi_heads.paste_masks_in_image(masks, boxes, (im_h, im_w), padding=padding)
    assert ours.shape == (len(boxes), 1, im_h, im_w)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert (ours[:-7] > 0).any(dim=(1, 2, 3)).all()  # every regular box pasted something


def test_paste_a_constant_mask_fills_its_box():
    # A mask of ones, padded with a 0 border and resized: 1 well inside the box, fading to 0 outside.
    masks = torch.ones(1, 1, 28, 28)
    pasted = paste_masks_in_image(masks, torch.tensor([[10.0, 5.0, 40.0, 25.0]]), (32, 48))[0, 0]
    assert torch.all(pasted[8:22, 13:37] == 1)
    assert torch.all(pasted[:3] == 0) and torch.all(pasted[:, :8] == 0) and torch.all(pasted[:, 43:] == 0)


def test_paste_masks_edge_cases():
    empty = paste_masks_in_image(torch.zeros(0, 1, 28, 28), torch.zeros(0, 4), (20, 30))
    assert empty.shape == (0, 1, 20, 30)
    assert torch.equal(empty, tv_roi_heads.paste_masks_in_image(torch.zeros(0, 1, 28, 28), torch.zeros(0, 4), (20, 30)))
    # Boxes entirely outside the image paste nothing (torchvision's slicing fails on these).
    outside = torch.tensor([[-50.0, -40.0, -20.0, -10.0], [40.0, 2.0, 60.0, 9.0], [3.0, 25.0, 9.0, 39.0]])
    assert torch.all(paste_masks_in_image(torch.rand(3, 1, 28, 28), outside, (20, 30)) == 0)
    with pytest.raises(ValueError, match=r"\(N, 1, M, M\)"):
        paste_masks_in_image(torch.rand(2, 28, 28), torch.zeros(2, 4), (20, 30))
    with pytest.raises(ValueError, match="boxes"):
        paste_masks_in_image(torch.rand(2, 1, 28, 28), torch.zeros(3, 4), (20, 30))


def test_bilinear_weights_equal_interpolate():
    # Row n of the weights applied to a 1-D signal = F.interpolate of it to the box's length, placed at the box.
    g = torch.Generator().manual_seed(1)
    signal = torch.rand(9, generator=g)  # (M,)
    start, end = torch.tensor([2, 0, 5, -3]), torch.tensor([4, 11, 30, 6])  # shrink, grow, past the end, before 0
    weights = bilinear_weights(start, end, 20, 9)  # (4, 20, 9)
    inside = (torch.arange(20) >= start[:, None]) & (torch.arange(20) <= end[:, None])  # (4, 20)
    assert torch.allclose(weights.sum(-1), inside.float())  # rows sum to 1 inside the box, 0 outside
    for n in range(4):
        size = int(end[n] - start[n] + 1)
        resized = F.interpolate(signal[None, None, None], size=(1, size), mode="bilinear", align_corners=False)[0, 0, 0]
        line = torch.zeros(size + 40)
        line[20 + int(start[n]): 20 + int(end[n]) + 1] = resized  # placed, with 20 px of margin each side
        torch.testing.assert_close(weights[n] @ signal, line[20:40])


@pytest.mark.parametrize("kernels", [TEACHING, TORCHVISION], ids=lambda k: k.name)
def test_project_masks_on_boxes_matches_torchvision(kernels):
    g = torch.Generator().manual_seed(2)
    gt_masks = (torch.rand(3, 40, 50, generator=g) > 0.5).to(torch.uint8)  # (G, H, W) binary
    xy = torch.rand(10, 2, generator=g) * 40  # (N, 2)
    boxes = torch.cat([xy, xy + torch.rand(10, 2, generator=g) * 30 + 0.5], dim=1)  # (N, 4), some past the mask
    matched_idxs = torch.randint(0, 3, (10,), generator=g)  # (N,)
    ours = project_masks_on_boxes(gt_masks, boxes, matched_idxs, 28, roi_align=kernels.roi_align)
    theirs = tv_roi_heads.project_masks_on_boxes(gt_masks, boxes, matched_idxs, 28)
    assert ours.shape == (10, 28, 28)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    assert 0 < ours.mean() < 1
    # The crop reads the *matched* mask: a different match changes the target.
    other = project_masks_on_boxes(gt_masks, boxes, (matched_idxs + 1) % 3, 28, roi_align=kernels.roi_align)
    assert not torch.allclose(ours, other)
    no_rois = project_masks_on_boxes(gt_masks, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), 28)
    assert no_rois.shape == (0, 28, 28)
