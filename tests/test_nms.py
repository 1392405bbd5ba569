"""nms.py against torchvision.ops.nms / batched_nms, including long suppression chains."""

import pytest
import torch
import torchvision

from mrcnn_teach.nms import batched_nms, greedy_keep, nms


def random_boxes(n, seed, scale=200.0, max_size=80.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * scale  # (n, 2)
    wh = torch.rand(n, 2, generator=g) * max_size + 1  # (n, 2)
    scores = torch.rand(n, generator=g)  # (n,)
    return torch.cat([xy, xy + wh], dim=1), scores


@pytest.mark.parametrize("n", [1, 2, 50, 400])
@pytest.mark.parametrize("iou_threshold", [0.3, 0.5, 0.7])
def test_nms_matches_torchvision(n, iou_threshold):
    boxes, scores = random_boxes(n, seed=n)
    keep = nms(boxes, scores, iou_threshold)
    assert keep.dtype == torch.int64
    assert torch.equal(keep, torchvision.ops.nms(boxes, scores, iou_threshold))


def test_nms_empty():
    keep = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert keep.dtype == torch.int64 and keep.shape == (0,)
    keep = batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert keep.dtype == torch.int64 and keep.shape == (0,)


def test_nms_long_chain():
    # Box i is box 0 shifted right by 2*i: neighbours overlap with IoU 8/12 = 0.67 > 0.5, boxes two
    # apart with IoU 6/14 = 0.43 < 0.5. Greedy keeps 0, suppresses 1, so 2 survives, suppresses 3, ...
    # Every decision depends on the previous one: a chain as long as the input.
    n = 300
    x = torch.arange(n, dtype=torch.float32) * 2  # (n,)
    boxes = torch.stack([x, torch.zeros(n), x + 10, torch.full((n,), 10.0)], dim=1)  # (n, 4)
    scores = torch.linspace(1.0, 0.1, n)  # (n,)  left to right
    keep = nms(boxes, scores, 0.5)
    assert torch.equal(keep, torch.arange(0, n, 2))
    assert torch.equal(keep, torchvision.ops.nms(boxes, scores, 0.5))
    # Shuffled input order: same boxes kept, returned by decreasing score.
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    assert torch.equal(perm[nms(boxes[perm], scores[perm], 0.5)], torch.arange(0, n, 2))


def test_nms_3000_heavily_overlapping_boxes():
    # 30 clusters of 100 jittered copies: dense overlaps, many chains.
    g = torch.Generator().manual_seed(1)
    centres = torch.rand(30, 2, generator=g) * 300  # (30, 2)
    sizes = torch.rand(30, 2, generator=g) * 60 + 20  # (30, 2)
    jitter = torch.randn(30, 100, 4, generator=g) * 6  # (30, 100, 4)
    boxes = torch.cat([centres - sizes / 2, centres + sizes / 2], dim=1)[:, None, :] + jitter  # (30, 100, 4)
    boxes = boxes.reshape(-1, 4)  # (3000, 4)
    boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    scores = torch.rand(3000, generator=g)  # (3000,)
    for thr in [0.3, 0.7]:
        keep = nms(boxes, scores, thr)
        assert torch.equal(keep, torchvision.ops.nms(boxes, scores, thr))
    assert 30 < len(nms(boxes, scores, 0.7)) < 3000


def test_nms_ties_keep_input_order():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [100, 100, 110, 110]])
    scores = torch.tensor([0.5, 0.5, 0.5, 0.9])
    keep = nms(boxes, scores, 0.5)
    # 3 is best; 0 and 1 tie and overlap (IoU 0.68): the earlier one, 0, wins and suppresses 1.
    assert keep.tolist() == [3, 0, 2]
    assert torch.equal(keep, torchvision.ops.nms(boxes, scores, 0.5))


def test_greedy_keep_equals_sequential_greedy():
    # The fixed point of keep[j] = not any_i (S[i, j] and keep[i]) is the sequential greedy answer.
    g = torch.Generator().manual_seed(2)
    for _ in range(20):
        n = 40
        suppresses = torch.triu(torch.rand(n, n, generator=g) < 0.15, diagonal=1)  # (n, n)
        expected = []
        for j in range(n):  # reference: the sequential definition, loop allowed in a test
            expected.append(not any(suppresses[i, j] and expected[i] for i in range(j)))
        assert greedy_keep(suppresses).tolist() == expected


@pytest.mark.parametrize("n", [30, 600, 1500])
def test_batched_nms_matches_torchvision(n):
    # 1500 boxes take torchvision's own coordinate-trick path, 30 and 600 its per-class loop.
    boxes, scores = random_boxes(n, seed=10 + n)
    idxs = torch.randint(0, 5, (n,), generator=torch.Generator().manual_seed(n))
    keep = batched_nms(boxes, scores, idxs, 0.5)
    assert keep.dtype == torch.int64
    assert torch.equal(keep, torchvision.ops.batched_nms(boxes, scores, idxs, 0.5))
    assert torch.all(scores[keep][:-1] >= scores[keep][1:])


def test_batched_nms_separates_categories():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 0]), 0.5).tolist() == [0, 1]
    assert nms(boxes, scores, 0.5).tolist() == [0]


def test_nms_bad_input():
    with pytest.raises(ValueError, match="scores"):
        nms(torch.zeros(3, 4), torch.zeros(2), 0.5)
    with pytest.raises(ValueError, match="boxes"):
        nms(torch.zeros(3, 5), torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match="idxs"):
        batched_nms(torch.zeros(3, 4), torch.zeros(3), torch.zeros(2, dtype=torch.int64), 0.5)
