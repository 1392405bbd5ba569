"""Matcher and BalancedSampler against torchvision's twins (torchvision.models.detection._utils)."""

import pytest
import torch
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler as TVSampler
from torchvision.models.detection._utils import Matcher as TVMatcher

from mrcnn_teach.matcher import BalancedSampler, Matcher


def random_iou(G, N, seed, levels=10, scale=1.0):
    """A (G, N) IoU-like matrix quantised to `levels` values, so that ties (per row and per column) are common."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, levels + 1, (G, N), generator=g).float() / levels * scale  # (G, N)


# ---------------------------------------------------------------------------------------------- Matcher
@pytest.mark.parametrize("allow_low_quality", [False, True])
@pytest.mark.parametrize("G,N,scale", [(1, 7, 1.0), (3, 50, 1.0), (6, 200, 0.6), (5, 40, 0.3), (4, 300, 0.8)])
@pytest.mark.parametrize("high,low", [(0.7, 0.3), (0.5, 0.5), (0.6, 0.4)])
def test_matcher_equals_torchvision(G, N, scale, high, low, allow_low_quality):
    iou = random_iou(G, N, seed=G * 1000 + N, scale=scale)  # (G, N), many ties; scale < 0.7 -> low quality only
    ours = Matcher(high, low, allow_low_quality)(iou)  # (N,)
    theirs = TVMatcher(high, low, allow_low_quality)(iou.clone())  # (N,)
    assert ours.dtype == torch.int64
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_matcher_low_quality_rule_by_hand():
    # 2 GT x 5 anchors. GT 1's best IoU is 0.4 (< 0.7), reached by anchors 1 and 3 (a tie).
    iou = torch.tensor([[0.10, 0.20, 0.80, 0.50, 0.00],
                        [0.05, 0.40, 0.10, 0.40, 0.35]])  # (2, 5)
    # Plain thresholds: anchor 2 is foreground (GT 0), 3 and 4 are ignored, 1 is ignored, 0 is background.
    plain = Matcher(0.7, 0.3)(iou)  # (5,)
    assert plain.tolist() == [-1, -2, 0, -2, -2]
    # Low-quality rule: GT 1's tied best anchors 1 and 3 become positive, each keeping its OWN argmax:
    # anchor 1 -> GT 1, but anchor 3 -> GT 0 (0.5 > 0.4), exactly as torchvision does.
    lq = Matcher(0.7, 0.3, allow_low_quality_matches=True)(iou)  # (5,)
    assert lq.tolist() == [-1, 1, 0, 0, -2]
    assert lq.tolist() == TVMatcher(0.7, 0.3, True)(iou.clone()).tolist()


def test_matcher_background_is_strictly_below_low_threshold():
    # IoU exactly 0.3 is "between thresholds" (ignored), not background: negatives need IoU < 0.3.
    iou = torch.tensor([[0.29, 0.30, 0.69, 0.70]])  # (1, 4)
    assert Matcher(0.7, 0.3)(iou).tolist() == [-1, -2, -2, 0]


def test_matcher_rejects_bad_input():
    with pytest.raises(ValueError, match="no ground-truth"):
        Matcher(0.7, 0.3)(torch.zeros(0, 5))
    with pytest.raises(ValueError, match="no columns"):
        Matcher(0.7, 0.3)(torch.zeros(2, 0))
    with pytest.raises(ValueError, match="low_threshold"):
        Matcher(0.3, 0.7)


# ---------------------------------------------------------------------------------------------- BalancedSampler
def random_labels(seed):
    """Labels for 4 images with different mixes of positives (1, 2, 3 ...), negatives (0) and ignored (-1)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n, p_pos, p_neg in [(500, 0.02, 0.8), (300, 0.5, 0.3), (40, 0.1, 0.3), (1000, 0.0, 0.9)]:
        u = torch.rand(n, generator=g)  # (n,)
        lab = torch.full((n,), -1.0)  # (n,)
        lab[u < p_pos + p_neg] = 0.0
        lab[u < p_pos] = torch.randint(1, 4, (int((u < p_pos).sum()),), generator=g).float()
        out.append(lab)
    return out


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("batch,frac", [(256, 0.5), (64, 0.25), (16, 1.0)])
def test_sampler_same_draws_as_torchvision(seed, batch, frac):
    labels = random_labels(seed)
    # Image 0 has ~10 positives, fewer than the quota; image 1 has more than the quota; image 3 has none.
    assert int((labels[0] >= 1).sum()) < int(batch * frac) or batch == 16
    torch.manual_seed(seed)
    pos, neg = BalancedSampler(batch, frac)(labels)
    torch.manual_seed(seed)
    tv_pos, tv_neg = TVSampler(batch, frac)(labels)
    for i in range(len(labels)):
        assert pos[i].dtype == torch.bool
        assert torch.equal(pos[i], tv_pos[i].bool()), f"image {i}: positive masks differ"
        assert torch.equal(neg[i], tv_neg[i].bool()), f"image {i}: negative masks differ"
    # The seed matters: the draw is random, not a deterministic "hardest first" choice.
    torch.manual_seed(seed + 100)
    pos2, neg2 = BalancedSampler(batch, frac)(labels)
    assert not all(torch.equal(a, b) for a, b in zip(neg, neg2))


def test_sampler_quota_with_many_negatives():
    # Seed's claim checked: 256 per image, at most half positive (128), negatives fill the rest.
    labels = torch.zeros(20000)  # (20000,) mostly negatives
    labels[:500] = 1.0  # 500 positive candidates > 128
    labels[500:1000] = -1.0  # ignored anchors are never sampled
    torch.manual_seed(0)
    pos, neg = BalancedSampler(256, 0.5)([labels])
    assert int(pos[0].sum()) == 128 and int(neg[0].sum()) == 128
    assert int((pos[0] | neg[0]).sum()) == 256
    assert not (pos[0] & neg[0]).any()
    assert bool((labels[pos[0]] == 1).all()) and bool((labels[neg[0]] == 0).all())

    few = torch.zeros(20000)  # (20000,)
    few[:10] = 1.0  # only 10 positives: all taken, 246 negatives pad the batch
    pos, neg = BalancedSampler(256, 0.5)([few])
    assert int(pos[0].sum()) == 10 and int(neg[0].sum()) == 246

    tiny = torch.tensor([1.0, 0.0, 0.0, -1.0])  # (4,) fewer candidates than the batch: take them all
    pos, neg = BalancedSampler(256, 0.5)([tiny])
    assert pos[0].tolist() == [True, False, False, False]
    assert neg[0].tolist() == [False, True, True, False]


def test_sampler_rejects_bad_input():
    with pytest.raises(ValueError, match="positive_fraction"):
        BalancedSampler(256, 1.5)
    with pytest.raises(ValueError, match="batch_size_per_image"):
        BalancedSampler(0, 0.5)
    with pytest.raises(ValueError, match="image 1"):
        BalancedSampler(256, 0.5)([torch.zeros(3), torch.zeros(2, 3)])
