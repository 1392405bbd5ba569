"""Region Proposal Network — Faster R-CNN (Ren et al. 2015) Sec. 3.1, on an FPN (Lin et al. 2017) Sec. 4.1.

The RPN is the first stage of Mask R-CNN (He et al. 2017, Sec. 3): a small convolutional head slides
over every pyramid level P2..P6 and, for each of the k anchors at each position, predicts
  * an objectness logit (object vs. background — one logit, trained with a sigmoid BCE), and
  * four deltas (tx, ty, tw, th) that move the anchor onto the object (Faster R-CNN Sec. 3.1.2).
FPN Sec. 4.1: one head is shared by all levels (same weights), each level has anchors of one size
(32..512 px on P2..P6) and 3 aspect ratios, and labels are assigned exactly as in Faster R-CNN.

Inference (`propose`): decode deltas into boxes, keep the `pre_nms_top_n` best per level per image,
clip, drop tiny boxes, NMS per level, keep the `post_nms_top_n` best per image.
Training (`loss`): label anchors with the Matcher (0.7 / 0.3, plus each GT's best anchors), sample 256 per
image at random with up to half positives (Sec. 3.1.3), BCE on the sampled anchors and smooth-L1 on the
sampled positives. The numbers and the order of operations are torchvision's, so the two agree exactly.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .boxes import BoxCoder, box_iou, clip_boxes_to_image, remove_small_boxes
from .kernels import TEACHING, Kernels, get_kernels
from .matcher import BalancedSampler, Matcher


class RPNHead(nn.Module):
    """The "mini-network" of Faster R-CNN Sec. 3.1 (Fig. 3): 3x3 conv + ReLU, then two sibling 1x1 convs.

    `objectness` has k output channels (one logit per anchor; torchvision's `cls_logits`) and `deltas`
    4k channels, anchor-major (channel 4a+j is coordinate j of anchor a; torchvision's `bbox_pred`).
    Weights are drawn from N(0, 0.01^2) with zero bias (Faster R-CNN Sec. 3.1.3).
    """

    def __init__(self, in_channels: int, num_anchors: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1), nn.ReLU())
        self.objectness = nn.Conv2d(in_channels, num_anchors, kernel_size=1)
        self.deltas = nn.Conv2d(in_channels, 4 * num_anchors, kernel_size=1)
        for layer in (self.conv[0], self.objectness, self.deltas):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """features [P2..P6] each (B, C, h, w) -> objectness [(B, k, h, w)], deltas [(B, 4k, h, w)]."""
        objectness, deltas = [], []
        for P in features:  # FPN Sec. 4.1: the same head (same weights) on every level
            t = self.conv(P)  # (B, C, h, w)
            objectness.append(self.objectness(t))  # (B, k, h, w)
            deltas.append(self.deltas(t))  # (B, 4k, h, w)
        return objectness, deltas


def flatten_head_outputs(objectness: list[Tensor], deltas: list[Tensor]) -> tuple[Tensor, Tensor, list[int]]:
    """Lay the head's maps out in the anchors' order: level, then row y, then column x, then anchor a.

    [(B, k, h, w)], [(B, 4k, h, w)] -> objectness (B, A), deltas (B, A, 4), anchors per level [h*w*k].
    Row i of the result then pairs with row i of AnchorGenerator's (A, 4) anchors.
    """
    flat_objectness, flat_deltas, num_per_level = [], [], []
    for obj, dlt in zip(objectness, deltas):
        B, k, h, w = obj.shape
        obj = obj.permute(0, 2, 3, 1).reshape(B, h * w * k)  # (B, h*w*k), index (y*w + x)*k + a
        dlt = dlt.view(B, k, 4, h, w).permute(0, 3, 4, 1, 2).reshape(B, h * w * k, 4)  # (B, h*w*k, 4)
        flat_objectness.append(obj)
        flat_deltas.append(dlt)
        num_per_level.append(h * w * k)
    return torch.cat(flat_objectness, dim=1), torch.cat(flat_deltas, dim=1), num_per_level  # (B, A), (B, A, 4)


class RegionProposalNetwork(nn.Module):
    """Anchors + RPNHead -> proposals (and, in training, the two RPN losses). Faster R-CNN Sec. 3.1.

    forward(images (B, 3, H, W) padded batch, image_sizes [(h, w)] before padding, features [P2..P6],
            targets [dict(boxes=(G_i, 4))] in training)
      -> proposals [(N_i, 4)] per image, losses {"loss_objectness", "loss_rpn_box_reg"} ({} in eval).

    `self.training` switches the top-n numbers: 2000/2000 in training, 1000/1000 in eval (torchvision's
    FPN defaults; the per-level pre-NMS cut follows FPN Sec. 4.1 / Detectron).
    """

    def __init__(self, anchor_generator: nn.Module, head: nn.Module,
                 fg_iou_thresh: float = 0.7, bg_iou_thresh: float = 0.3,
                 batch_size_per_image: int = 256, positive_fraction: float = 0.5,
                 pre_nms_top_n_train: int = 2000, pre_nms_top_n_test: int = 1000,
                 post_nms_top_n_train: int = 2000, post_nms_top_n_test: int = 1000,
                 nms_thresh: float = 0.7, score_thresh: float = 0.0, min_size: float = 1e-3,
                 kernels: Kernels = TEACHING):
        super().__init__()
        self.anchor_generator = anchor_generator
        self.head = head
        self.box_coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))  # Sec. 3.1.2: plain (tx, ty, tw, th)
        # Sec. 3.1.2: positive if IoU >= 0.7 or best anchor of a GT; negative if IoU < 0.3 with every GT.
        self.matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)
        self.sampler = BalancedSampler(batch_size_per_image, positive_fraction)  # Sec. 3.1.3
        self.pre_nms_top_n_train, self.pre_nms_top_n_test = pre_nms_top_n_train, pre_nms_top_n_test
        self.post_nms_top_n_train, self.post_nms_top_n_test = post_nms_top_n_train, post_nms_top_n_test
        self.nms_thresh = nms_thresh
        self.score_thresh = score_thresh
        self.min_size = min_size
        self.kernels = get_kernels(kernels)

    @property
    def pre_nms_top_n(self) -> int:
        """How many anchors per level per image survive to NMS (depends on train/eval mode)."""
        return self.pre_nms_top_n_train if self.training else self.pre_nms_top_n_test

    @property
    def post_nms_top_n(self) -> int:
        """How many proposals per image are returned (depends on train/eval mode)."""
        return self.post_nms_top_n_train if self.training else self.post_nms_top_n_test

    # ------------------------------------------------------------------ inference: anchors -> proposals
    def propose(self, proposals: Tensor, objectness: Tensor, image_sizes: list[tuple[int, int]],
                num_per_level: list[int]) -> tuple[list[Tensor], list[Tensor]]:
        """Pick the proposals passed to the second stage. proposals (B, A, 4), objectness (B, A) logits.

        Returns boxes [(N_i, 4)] and their objectness probabilities [(N_i,)].
        No gradient flows through this choice (Faster R-CNN trains the two stages' losses jointly but
        treats proposals as constants — the "approximate joint training" of Sec. 3.2).
        """
        B, A = objectness.shape
        device = objectness.device
        objectness = objectness.detach()  # (B, A)
        proposals = proposals.detach()  # (B, A, 4)
        levels = torch.cat([torch.full((n,), lvl, dtype=torch.int64, device=device)
                            for lvl, n in enumerate(num_per_level)])  # (A,) level of each anchor

        # Top-k per level (not over all levels at once) so that the many small-anchor P2 positions
        # cannot crowd out the few large-anchor P5/P6 ones.
        top_idx, offset = [], 0
        for obj_level in objectness.split(num_per_level, dim=1):  # (B, A_l)
            k = min(self.pre_nms_top_n, obj_level.shape[1])
            top_idx.append(obj_level.topk(k, dim=1).indices + offset)  # (B, k)
            offset += obj_level.shape[1]
        top_idx = torch.cat(top_idx, dim=1)  # (B, K)

        image_idx = torch.arange(B, device=device)[:, None]  # (B, 1)
        scores = objectness[image_idx, top_idx].sigmoid()  # (B, K) probabilities
        boxes = proposals[image_idx, top_idx]  # (B, K, 4)
        box_levels = levels[top_idx]  # (B, K)

        final_boxes, final_scores = [], []
        for i in range(B):  # per image: each has its own size, and NMS is per image
            boxes_i = clip_boxes_to_image(boxes[i], image_sizes[i])  # (K, 4), inside the unpadded image
            keep = remove_small_boxes(boxes_i, self.min_size)  # (K1,)
            boxes_i, scores_i, levels_i = boxes_i[keep], scores[i][keep], box_levels[i][keep]  # (K1, 4), (K1,), (K1,)
            keep = torch.nonzero(scores_i >= self.score_thresh).squeeze(1)  # (K2,)
            boxes_i, scores_i, levels_i = boxes_i[keep], scores_i[keep], levels_i[keep]  # (K2, 4), (K2,), (K2,)
            # NMS independently per level (idxs = level), then the best post_nms_top_n over all levels.
            keep = self.kernels.batched_nms(boxes_i, scores_i, levels_i, self.nms_thresh)  # (K3,) by score
            keep = keep[: self.post_nms_top_n]  # (N_i,)
            final_boxes.append(boxes_i[keep])  # (N_i, 4)
            final_scores.append(scores_i[keep])  # (N_i,)
        return final_boxes, final_scores

    # ------------------------------------------------------------------ training: labels and loss
    def assign_targets(self, anchors: Tensor, gt_boxes: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """anchors (A, 4), gt_boxes [(G_i, 4)] -> labels [(A,)] in {1, 0, -1}, matched GT boxes [(A, 4)].

        1 = object, 0 = background, -1 = ignored (IoU between the thresholds). An image with no GT box
        is all background; its "matched box" is the anchor itself (a zero target that is never used).
        """
        labels, matched_gt_boxes = [], []
        for gt in gt_boxes:
            if gt.shape[0] == 0:
                labels.append(torch.zeros(anchors.shape[0], dtype=anchors.dtype, device=anchors.device))  # (A,)
                matched_gt_boxes.append(anchors)  # (A, 4)
                continue
            matched_idxs = self.matcher(box_iou(gt, anchors))  # (A,) in {0..G-1, -1, -2}
            labels_i = (matched_idxs >= 0).to(anchors.dtype)  # (A,) 1 = object, 0 otherwise
            labels_i[matched_idxs == Matcher.BETWEEN_THRESHOLDS] = -1.0  # ignored by the sampler
            labels.append(labels_i)
            matched_gt_boxes.append(gt[matched_idxs.clamp(min=0)])  # (A, 4); -1/-2 point at GT 0, unused
        return labels, matched_gt_boxes

    def loss(self, objectness: Tensor, deltas: Tensor, labels: list[Tensor],
             regression_targets: Tensor) -> tuple[Tensor, Tensor]:
        """objectness (B, A), deltas (B, A, 4), labels [(A,)], regression_targets (B*A, 4) -> two scalars.

        Faster R-CNN Eq. 1, as torchvision/Detectron normalise it: BCE averaged over the sampled anchors,
        smooth-L1 (beta = 1/9) summed over sampled positives and divided by the number sampled (the paper
        divides by ~2400 locations and multiplies by lambda = 10; this choice gives a similar balance).
        """
        pos_masks, neg_masks = self.sampler(labels)  # B x (A,) bool
        pos = torch.nonzero(torch.cat(pos_masks)).squeeze(1)  # (P,) indices into B*A
        neg = torch.nonzero(torch.cat(neg_masks)).squeeze(1)  # (Q,)
        sampled = torch.cat([pos, neg])  # (P+Q,)

        labels = torch.cat(labels)  # (B*A,)
        objectness = objectness.reshape(-1)  # (B*A,)
        deltas = deltas.reshape(-1, 4)  # (B*A, 4)

        loss_objectness = F.binary_cross_entropy_with_logits(objectness[sampled], labels[sampled])  # ()
        loss_box = F.smooth_l1_loss(deltas[pos], regression_targets[pos], beta=1 / 9,
                                    reduction="sum") / sampled.numel()  # ()
        return loss_objectness, loss_box

    # ------------------------------------------------------------------ the whole stage
    def forward(self, images: Tensor, image_sizes: list[tuple[int, int]], features: list[Tensor],
                targets: list[dict] | None = None) -> tuple[list[Tensor], dict[str, Tensor]]:
        B = images.shape[0]
        if len(image_sizes) != B:
            raise ValueError(f"RPN: got {len(image_sizes)} image_sizes for a batch of {B} images")
        for lvl, P in enumerate(features):
            if P.dim() != 4 or P.shape[0] != B:
                raise ValueError(f"RPN: feature level {lvl} must be (B={B}, C, h, w), got {tuple(P.shape)}")
        if self.training:
            self._check_targets(targets, B)

        objectness_maps, delta_maps = self.head(features)  # [(B, k, h, w)], [(B, 4k, h, w)]
        anchors = self.anchor_generator(tuple(images.shape[-2:]), [tuple(P.shape[-2:]) for P in features],
                                        dtype=features[0].dtype, device=features[0].device)  # (A, 4)
        objectness, deltas, num_per_level = flatten_head_outputs(objectness_maps, delta_maps)  # (B, A), (B, A, 4)
        A = anchors.shape[0]
        if objectness.shape[1] != A:
            raise ValueError(f"RPN: the head predicts {objectness.shape[1]} anchors but the anchor generator "
                             f"made {A} — do head.num_anchors and the anchor generator's k per level agree?")

        # Sec. 3.1.2 inverted: deltas -> boxes. Detached: the proposals are not differentiated through.
        proposals = self.box_coder.decode(deltas.detach().reshape(B * A, 4),
                                          anchors.repeat(B, 1)).view(B, A, 4)  # (B, A, 4)
        boxes, _scores = self.propose(proposals, objectness, image_sizes, num_per_level)  # B x (N_i, 4)

        losses = {}
        if self.training:
            labels, matched_gt_boxes = self.assign_targets(anchors, [t["boxes"] for t in targets])  # B x (A,), (A, 4)
            regression_targets = self.box_coder.encode(torch.cat(matched_gt_boxes),
                                                       anchors.repeat(B, 1))  # (B*A, 4)
            loss_objectness, loss_box = self.loss(objectness, deltas, labels, regression_targets)
            losses = {"loss_objectness": loss_objectness, "loss_rpn_box_reg": loss_box}
        return boxes, losses

    @staticmethod
    def _check_targets(targets, num_images: int) -> None:
        if targets is None:
            raise ValueError("RPN: targets are required in training mode (call .eval() for inference)")
        if len(targets) != num_images:
            raise ValueError(f"RPN: got {len(targets)} targets for a batch of {num_images} images")
        for i, t in enumerate(targets):
            boxes = t.get("boxes") if isinstance(t, dict) else None
            if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
                shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
                raise ValueError(f"RPN: targets[{i}]['boxes'] must be a (G, 4) tensor, got {shape}")
            bad = torch.nonzero((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).squeeze(1)  # (nbad,)
            if bad.numel() > 0:
                j = int(bad[0])
                raise ValueError(f"RPN: image {i}, box {j} has zero or negative width/height: "
                                 f"{boxes[j].tolist()} (expected x1 < x2 and y1 < y2)")
