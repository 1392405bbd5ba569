"""The second stage of Mask R-CNN: classify, refine and segment each RoI (He et al. 2017, Sec. 3).

Given the RPN's proposals, `RoIHeads` runs the two parallel branches of Fig. 4 (right) on RoIAlign
features (`poolers.MultiLevelRoIAlign`) and either returns the multi-task loss of Sec. 3,

    L = L_cls + L_box + L_mask,

or, at inference, the final detections with one soft 28x28 mask each.

Training (Sec. 3.1, "Training"), per image:
1. add the GT boxes to the proposals (so every object has at least one perfect positive RoI);
2. match RoIs to GT boxes: IoU >= 0.5 -> positive (label = the GT's class), else background (label 0);
3. sample 512 RoIs, at most 1/4 positive (ratio 1:3), uniformly at random;
4. L_cls: cross-entropy over K+1 classes; L_box: smooth-L1 on the GT class's deltas of the positives
   (Fast R-CNN Sec. 2.3); L_mask: per-pixel sigmoid BCE on the GT class's mask of the positives.

Inference (Sec. 3.1, "Inference"): score and decode every class for every proposal, drop low scores
and empty boxes, per-class NMS, keep the top 100, then run the mask branch on those boxes only
("this speeds up inference and improves accuracy (due to the use of fewer, more accurate RoIs)").

Same algorithm and numbers as torchvision.models.detection.roi_heads.RoIHeads with masks.
"""

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from . import roi_ops
from .boxes import BoxCoder, box_iou, clip_boxes_to_image, remove_small_boxes
from .kernels import TEACHING, Kernels, get_kernels
from .masks import project_masks_on_boxes
from .matcher import BalancedSampler, Matcher


def box_loss(class_logits: Tensor, box_deltas: Tensor, labels: list[Tensor],
             regression_targets: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Fast R-CNN's two losses (Fast R-CNN Sec. 2.3, used unchanged by Mask R-CNN Sec. 3).

    class_logits (N, K+1), box_deltas (N, (K+1)*4) over all sampled RoIs of the batch;
    labels / regression_targets per image, (N_i,) and (N_i, 4).

    * L_cls = cross-entropy over the K+1 classes, averaged over the N sampled RoIs.
    * L_box = smooth-L1 (beta = 1/9) between the deltas predicted *for the GT class* and the target
      deltas, for positive RoIs only (background has no box to regress), summed and divided by N —
      all sampled RoIs, not only the positives, as in Detectron and torchvision.
    """
    labels = torch.cat(labels)  # (N,)
    regression_targets = torch.cat(regression_targets)  # (N, 4)
    loss_classifier = F.cross_entropy(class_logits, labels)  # ()

    positive = torch.nonzero(labels > 0).squeeze(1)  # (P,)
    deltas = box_deltas.reshape(box_deltas.shape[0], -1, 4)  # (N, K+1, 4)
    deltas_of_gt_class = deltas[positive, labels[positive]]  # (P, 4)
    loss_box_reg = F.smooth_l1_loss(deltas_of_gt_class, regression_targets[positive],
                                    beta=1 / 9, reduction="sum") / labels.numel()  # ()
    return loss_classifier, loss_box_reg


def mask_loss(mask_logits: Tensor, positive_rois: list[Tensor], gt_masks: list[Tensor], gt_labels: list[Tensor],
              matched_idxs: list[Tensor], roi_align=roi_ops.roi_align, kind: str = "sigmoid") -> Tensor:
    """L_mask (Sec. 3): mean per-pixel binary cross-entropy, on the GT class's mask only.

    mask_logits (P, K+1, 28, 28) (or (P, 1, 28, 28) class agnostic) for the positive RoIs of the batch;
    per image: positive_rois (P_i, 4), gt_masks (G_i, H, W), gt_labels (G_i,), matched_idxs (P_i,).
    Makes the (P, 28, 28) targets from the RoIs, then returns `sigmoid_mask_loss` (kind="softmax":
    `softmax_mask_loss`), both called as (mask_logits, targets, labels).

    Why a sigmoid per class and not a softmax over classes? The mask branch predicts K independent
    binary masks, and only the one of the RoI's GT class is trained (the others get no gradient from
    this RoI). Which class an RoI *is* is decided by the box branch's classifier; the mask branch only
    answers "which pixels belong to the object, if it is of class k?". This decouples mask and class
    prediction: masks of different classes never compete for a pixel. A per-pixel softmax over the
    classes (as in FCN semantic segmentation) would couple them — raising one class's mask lowers the
    others' — and do the classifier's job a second time, per pixel. The paper's ablation (Table 2b)
    shows the decoupled sigmoid masks at 30.3 mask AP against 24.8 for the softmax: +5.5 AP.
    The argument sometimes given instead — that a softmax cannot work because only one channel has a
    target — misses the point: a per-pixel softmax needs one class per pixel (the RoI's class inside
    the object, background outside; `softmax_mask_loss`), is well-defined and trains; it is worse
    because the classes compete.
    """
    M = mask_logits.shape[-1]
    targets = torch.cat([project_masks_on_boxes(m, r, i, M, roi_align=roi_align)
                         for m, r, i in zip(gt_masks, positive_rois, matched_idxs)])  # (P, M, M)
    if targets.numel() == 0:  # no positive RoI in the batch: a zero that keeps the graph connected
        return mask_logits.sum() * 0
    labels = torch.cat([lab[i] for lab, i in zip(gt_labels, matched_idxs)])  # (P,)
    if kind == "softmax":
        return softmax_mask_loss(mask_logits, targets, labels)
    return sigmoid_mask_loss(mask_logits, targets, labels)  # ()


def sigmoid_mask_loss(mask_logits: Tensor, targets: Tensor, labels: Tensor) -> Tensor:
    """L_mask with the targets given: binary cross-entropy on the GT class's channel only (Sec. 3).

    mask_logits (P, K+1, M, M) (or (P, 1, M, M) class agnostic), targets (P, M, M) in [0, 1], labels (P,)
    in 1..K -> () the mean over the P*M*M pixels. Same argument order as `softmax_mask_loss`; `mask_loss`
    makes the targets from the RoIs and calls one of the two.
    """
    channel = torch.zeros_like(labels) if mask_logits.shape[1] == 1 else labels  # (P,) class agnostic -> 0
    logits_of_gt_class = mask_logits[torch.arange(labels.shape[0], device=labels.device), channel]  # (P, M, M)
    return F.binary_cross_entropy_with_logits(logits_of_gt_class, targets)  # ()


def softmax_mask_loss(mask_logits: Tensor, targets: Tensor, labels: Tensor) -> Tensor:
    """The coupled alternative of the paper's ablation (Table 2b, "softmax"): FCN's per-pixel multinomial loss.

    mask_logits (P, K+1, M, M), targets (P, M, M) in [0, 1] (the GT mask cropped to the RoI), labels (P,)
    in 1..K. Every pixel is classified among the K+1 channels: its target class is the RoI's class where
    the object is (target >= 0.5) and background (channel 0) elsewhere -- our reading of the paper, which
    does not spell out its pixel labels. The loss is the cross-entropy of the softmax over channels,
    averaged over pixels. All K+1 channels get a gradient at every pixel: the classes compete, which is
    what the paper's 24.8 vs 30.3 mask AP measures. Notebook 07 works through it.
    """
    if mask_logits.shape[1] == 1:
        raise ValueError("softmax mask loss: a softmax over classes needs one mask per class; "
                         "it cannot be combined with class_agnostic_masks=True")
    pixel_class = torch.where(targets >= 0.5, labels[:, None, None], 0)  # (P, M, M) int64 class map
    return F.cross_entropy(mask_logits, pixel_class)  # () mean over the P*M*M pixels


class RoIHeads(nn.Module):
    """Box and mask branches on the RPN's proposals; losses in training, detections in eval.

    forward(features [P2..P6] each (B, C, H_l, W_l), proposals list of (N_i, 4), image_sizes list of (h, w),
    targets list of dict(boxes (G_i, 4) float, labels (G_i,) int64 in 1..K, masks (G_i, H_i, W_i)) or None)
    -> (detections, losses):
      training: ([], {"loss_classifier", "loss_box_reg", "loss_mask"});
      eval: ([dict(boxes (D, 4), labels (D,), scores (D,), masks (D, 1, 28, 28) probabilities)], {}).
    """

    def __init__(self, box_roi_align, box_head, box_predictor, mask_roi_align, mask_head, mask_predictor,
                 fg_iou_thresh=0.5, bg_iou_thresh=0.5, batch_size_per_image=512, positive_fraction=0.25,
                 bbox_reg_weights=(10.0, 10.0, 5.0, 5.0), score_thresh=0.05, nms_thresh=0.5,
                 detections_per_img=100, kernels: Kernels = TEACHING, mask_loss: str = "sigmoid"):
        super().__init__()
        if mask_loss not in ("sigmoid", "softmax"):
            raise ValueError(f"RoIHeads: mask_loss must be 'sigmoid' (the paper's) or 'softmax' (Table 2b's "
                             f"alternative), got {mask_loss!r}")
        # "sigmoid": K independent binary masks, the GT class's trained (Sec. 3); "softmax": the classes compete
        self.mask_loss = mask_loss
        self.box_roi_align = box_roi_align
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.mask_roi_align = mask_roi_align
        self.mask_head = mask_head
        self.mask_predictor = mask_predictor
        # Sec. 3.1: "An RoI is considered positive if it has IoU with a ground-truth box of at least 0.5
        # and negative otherwise" — no ignored band, no low-quality rule (that is the RPN's).
        self.matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=False)
        self.sampler = BalancedSampler(batch_size_per_image, positive_fraction)
        # Weights (10, 10, 5, 5) scale the deltas to roughly unit variance (Fast R-CNN / Detectron).
        self.box_coder = BoxCoder(bbox_reg_weights)
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.kernels = get_kernels(kernels)

    # ----------------------------------------------------------------------------------- training
    def label_proposals(self, proposals: Tensor, gt_boxes: Tensor, gt_labels: Tensor) -> tuple[Tensor, Tensor]:
        """One image: (N, 4) RoIs, (G, 4), (G,) -> matched GT index (N,) (0 for background) and label (N,)."""
        if gt_boxes.shape[0] == 0:  # an image without objects: every RoI is background
            zeros = torch.zeros(proposals.shape[0], dtype=torch.int64, device=proposals.device)  # (N,)
            return zeros, zeros.clone()
        matched = self.matcher(box_iou(gt_boxes, proposals))  # (N,) GT index, -1 or -2
        matched_idxs = matched.clamp(min=0)  # (N,) background/ignored point at GT 0; their label says so
        labels = gt_labels[matched_idxs].to(torch.int64)  # (N,)
        labels[matched == Matcher.BELOW_LOW_THRESHOLD] = 0  # background
        labels[matched == Matcher.BETWEEN_THRESHOLDS] = -1  # ignored by the sampler
        return matched_idxs, labels

    def select_training_samples(self, proposals: list[Tensor], targets: list[dict]):
        """Add GT boxes, match, sample (Sec. 3.1). Returns per image: the sampled RoIs (S_i, 4), their matched
        GT index (S_i,), label (S_i,) and regression target deltas (S_i, 4)."""
        sampled_rois, sampled_idxs, sampled_labels, matched_gt_boxes = [], [], [], []
        all_labels, all_matched = [], []
        for rois, t in zip(proposals, targets):
            gt_boxes = t["boxes"].to(rois.dtype)  # (G, 4)
            # Adding the GT boxes gives each object at least one RoI with IoU 1 from the very first
            # iteration, when the RPN's proposals are still random.
            rois = torch.cat([rois, gt_boxes])  # (N + G, 4)
            matched_idxs, labels = self.label_proposals(rois, gt_boxes, t["labels"])  # (N+G,), (N+G,)
            sampled_rois.append(rois)
            all_matched.append(matched_idxs)
            all_labels.append(labels)

        pos_masks, neg_masks = self.sampler(all_labels)  # lists of (N_i + G_i,) bool
        for i, (pos, neg) in enumerate(zip(pos_masks, neg_masks)):
            keep = torch.nonzero(pos | neg).squeeze(1)  # (S_i,)
            sampled_rois[i] = sampled_rois[i][keep]  # (S_i, 4)
            sampled_idxs.append(all_matched[i][keep])  # (S_i,)
            sampled_labels.append(all_labels[i][keep])  # (S_i,)
            gt_boxes = targets[i]["boxes"].to(sampled_rois[i].dtype)  # (G, 4)
            if gt_boxes.shape[0] == 0:  # background RoIs need some box; their deltas are never used
                gt_boxes = sampled_rois[i].new_zeros((1, 4))  # (1, 4)
            matched_gt_boxes.append(gt_boxes[sampled_idxs[i]])  # (S_i, 4)

        sizes = [len(r) for r in sampled_rois]
        regression_targets = self.box_coder.encode(torch.cat(matched_gt_boxes),
                                                   torch.cat(sampled_rois)).split(sizes)  # per image (S_i, 4)
        return sampled_rois, sampled_idxs, sampled_labels, list(regression_targets)

    # ---------------------------------------------------------------------------------- inference
    def postprocess_detections(self, class_logits: Tensor, box_deltas: Tensor, proposals: list[Tensor],
                               image_sizes: list[tuple[int, int]]):
        """Scores and boxes for every (proposal, class) pair -> per image boxes (D, 4), scores (D,), labels (D,).

        Each proposal yields K candidates, one per foreground class, with that class's softmax score and
        its own refined box (class-specific regression, Fast R-CNN Sec. 2.3). NMS runs per class, so a
        person box cannot suppress the horse it rides on.
        """
        num_classes = class_logits.shape[1]
        sizes = [len(p) for p in proposals]
        deltas = box_deltas.reshape(box_deltas.shape[0], num_classes, 4)  # (N, K+1, 4)
        boxes = self.box_coder.decode(deltas, torch.cat(proposals))  # (N, K+1, 4)
        scores = F.softmax(class_logits, dim=-1)  # (N, K+1)

        all_boxes, all_scores, all_labels = [], [], []
        for boxes_i, scores_i, size in zip(boxes.split(sizes), scores.split(sizes), image_sizes):
            boxes_i = clip_boxes_to_image(boxes_i, size)  # (N_i, K+1, 4)
            labels_i = torch.arange(num_classes, device=scores_i.device).expand_as(scores_i)  # (N_i, K+1)
            # Drop the background column and treat each (RoI, class) pair as one candidate detection.
            boxes_i = boxes_i[:, 1:].reshape(-1, 4)  # (N_i*K, 4)
            scores_i = scores_i[:, 1:].reshape(-1)  # (N_i*K,)
            labels_i = labels_i[:, 1:].reshape(-1)  # (N_i*K,)

            keep = torch.nonzero(scores_i > self.score_thresh).squeeze(1)  # (n1,)
            boxes_i, scores_i, labels_i = boxes_i[keep], scores_i[keep], labels_i[keep]  # (n1, 4), (n1,), (n1,)
            keep = remove_small_boxes(boxes_i, min_size=1e-2)  # (n2,) boxes clipped to nothing
            boxes_i, scores_i, labels_i = boxes_i[keep], scores_i[keep], labels_i[keep]  # (n2, 4), (n2,), (n2,)
            keep = self.kernels.batched_nms(boxes_i, scores_i, labels_i, self.nms_thresh)  # (n3,) by score
            keep = keep[: self.detections_per_img]  # (D,)
            all_boxes.append(boxes_i[keep])  # (D, 4)
            all_scores.append(scores_i[keep])  # (D,)
            all_labels.append(labels_i[keep])  # (D,)
        return all_boxes, all_scores, all_labels

    def predict_masks(self, features: list[Tensor], boxes: list[Tensor], labels: list[Tensor],
                      image_sizes: list[tuple[int, int]]) -> list[Tensor]:
        """Mask probabilities of the detected class for each detection: per image (D_i, 1, 28, 28).

        Sec. 3.1, Inference: the mask branch runs on the final boxes, and of its K masks only the one of the
        class the box branch predicted is kept (the decoupling of Sec. 3: the classifier picks the class).
        """
        mask_logits = self.mask_logits(features, boxes, image_sizes)  # (D, K+1, 28, 28)
        labels = torch.cat(labels)  # (D,)
        channel = torch.zeros_like(labels) if mask_logits.shape[1] == 1 else labels  # (D,) class agnostic -> 0
        rows = torch.arange(labels.shape[0], device=labels.device)  # (D,)
        if self.mask_loss == "softmax":  # trained as a softmax over channels: read it the same way
            probs = mask_logits.softmax(dim=1)[rows, channel]  # (D, 28, 28)
        else:
            probs = mask_logits[rows, channel].sigmoid()  # (D, 28, 28)
        return list(probs[:, None].split([len(b) for b in boxes]))  # per image (D_i, 1, 28, 28)

    # ------------------------------------------------------------------------------------ shared
    def box_logits(self, features, rois, image_sizes) -> tuple[Tensor, Tensor]:
        """Box branch: RoIAlign 7x7 -> box head (2fc or 4conv1fc) -> (N, K+1) class logits, (N, (K+1)*4) deltas."""
        x = self.box_roi_align(features, rois, image_sizes)  # (N, C, 7, 7)
        x = self.box_head(x)  # (N, 1024)
        return self.box_predictor(x)

    def mask_logits(self, features, rois, image_sizes) -> Tensor:
        """Mask branch: RoIAlign 14x14 -> 4 convs -> deconv -> (N, K+1, 28, 28) logits."""
        x = self.mask_roi_align(features, rois, image_sizes)  # (N, C, 14, 14)
        x = self.mask_head(x)  # (N, C_mask, 14, 14): 256 in resnet50_fpn, 32 in shapes_tiny
        return self.mask_predictor(x)  # (N, K+1, 28, 28)

    def forward(self, features: list[Tensor], proposals: list[Tensor], image_sizes: list[tuple[int, int]],
                targets: list[dict] | None = None):
        if len(proposals) != len(image_sizes):
            raise ValueError(f"RoIHeads: got {len(proposals)} proposal lists for {len(image_sizes)} images")
        if not self.training:
            class_logits, box_deltas = self.box_logits(features, proposals, image_sizes)  # (N, K+1), (N, (K+1)*4)
            boxes, scores, labels = self.postprocess_detections(class_logits, box_deltas, proposals,
                                                                image_sizes)  # per image (D_i, 4), (D_i,), (D_i,)
            masks = self.predict_masks(features, boxes, labels, image_sizes)  # per image (D_i, 1, 28, 28)
            detections = [dict(boxes=b, labels=lab, scores=s, masks=m)
                          for b, lab, s, m in zip(boxes, labels, scores, masks)]
            return detections, {}

        self._check_targets(targets, len(proposals))
        # per image: (S_i, 4) sampled RoIs, (S_i,) matched GT, (S_i,) labels, (S_i, 4) target deltas
        rois, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        class_logits, box_deltas = self.box_logits(features, rois, image_sizes)  # (S, K+1), (S, (K+1)*4)
        loss_classifier, loss_box_reg = box_loss(class_logits, box_deltas, labels, regression_targets)  # (), ()

        # The mask branch trains on the positive RoIs only (Sec. 3.1: "L_mask is defined only on positive RoIs").
        positive = [torch.nonzero(lab > 0).squeeze(1) for lab in labels]  # per image (P_i,)
        positive_rois = [r[p] for r, p in zip(rois, positive)]  # per image (P_i, 4)
        positive_idxs = [m[p] for m, p in zip(matched_idxs, positive)]  # per image (P_i,)
        mask_logits = self.mask_logits(features, positive_rois, image_sizes)  # (P, K+1, 28, 28)
        loss_mask = mask_loss(mask_logits, positive_rois, [t["masks"] for t in targets],
                              [t["labels"] for t in targets], positive_idxs, roi_align=self.kernels.roi_align,
                              kind=self.mask_loss)  # ()
        return [], {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg, "loss_mask": loss_mask}

    @staticmethod
    def _check_targets(targets, num_images):
        if targets is None:
            raise ValueError("RoIHeads: targets are required in training mode (call .eval() for inference)")
        if len(targets) != num_images:
            raise ValueError(f"RoIHeads: got {len(targets)} targets for {num_images} images")
        for i, t in enumerate(targets):
            for key in ("boxes", "labels", "masks"):
                if key not in t:
                    raise ValueError(f"RoIHeads: target of image {i} has no '{key}'")
            boxes, labels, masks = t["boxes"], t["labels"], t["masks"]
            if not boxes.is_floating_point() or boxes.dim() != 2 or boxes.shape[-1] != 4:
                raise ValueError(f"RoIHeads: target boxes of image {i} must be a float (G, 4) tensor, "
                                 f"got {boxes.dtype} {tuple(boxes.shape)}")
            if labels.dtype != torch.int64 or labels.shape != boxes.shape[:1]:
                raise ValueError(f"RoIHeads: target labels of image {i} must be int64 of shape ({len(boxes)},), "
                                 f"got {labels.dtype} {tuple(labels.shape)}")
            if masks.dim() != 3 or masks.shape[0] != boxes.shape[0]:
                raise ValueError(f"RoIHeads: target masks of image {i} must be ({len(boxes)}, H, W), "
                                 f"got {tuple(masks.shape)}")
