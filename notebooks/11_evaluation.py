# %% [markdown]
# # 11 — Evaluation: IoU, COCO AP, and what the numbers say
#
# Every number in the Mask R-CNN paper's tables is a COCO **average precision** (AP). This notebook
# opens that number up. We start from the one-pair question, "how much do a prediction and an object
# overlap?", asked once with boxes and once with masks. Then we compute AP by hand on a made-up example
# of nine detections, and check that pycocotools' `COCOeval` gets exactly the same numbers. Last, we
# score the trained shapes model on its held-out images and look at what the numbers hide:
# precision/recall curves, what a score threshold does to AP, AP at each IoU threshold, object sizes,
# which classes get confused, what kind of error each false positive is and what it costs, and how
# well the masks are placed.
#
# **You will learn**
# - box IoU and mask IoU, and why a prediction can get a perfect box and still a poor mask;
# - COCO AP step by step: sort by score, match greedily at an IoU threshold, cumulative TP/FP,
#   precision and recall, the precision envelope, 101 recall points, the mean over classes and over
#   IoU 0.50:0.95. We then check our AP against `COCOeval` to 1e-6;
# - what COCOeval's `eval["precision"]` array holds (dimensions `[T, R, K, A, M]`) and how to draw
#   per-class precision/recall curves from it;
# - why AP_S, AP_M and AP_L depend on object area (32², 96²), and why AP_L is -1 on 128-px shapes;
# - average recall (AR), and why low-scored detections can never lower AP (the envelope), which is
#   why inference keeps scores down to 0.05;
# - reading the trained model's errors: a confusion table of the best detection per object, the kind
#   of every false positive (localisation, class confusion, background) and what each kind costs in
#   AP (COCO's error analysis), and the gap between AP50 and AP75 as a measure of localisation.
#
# **Builds on:** [08 — The full model](08_full_model.ipynb) (the detections the model returns),
# [09 — Training](09_training.ipynb) (the trained shapes model),
# [10 — Inference](10_inference.ipynb) (scores, score threshold, pasted masks).
#
# **Run time:** about 1 minute on a 2-core CPU (38 s measured on an idle machine, 114 s on a busy one;
# most of it running the model over 100 images and scoring ten score thresholds); the first notebook
# you run also trains the shared shapes model once, 6 to 13 minutes on a 2-core CPU (700 steps;
# `make model` trains it ahead); later notebooks load it in a second.

# %%
# On Google Colab, install mrcnn_teach from its repository, keeping Colab's own torch and torchvision.
# Anywhere else (a clone after `make install`, Binder) this cell does nothing.
import importlib.util
import sys

if "google.colab" in sys.modules and importlib.util.find_spec("mrcnn_teach") is None:
    import subprocess
    from importlib.metadata import version

    keep = [f"{name}=={version(name)}" for name in ("torch", "torchvision")]  # e.g. torch==2.8.0+cu126
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "mrcnn_teach @ git+https://github.com/mrcnn-teach/mrcnn_teach", *keep], check=True)
    importlib.invalidate_caches()

# %%
from mrcnn_teach.notebook import setup, show_source, print_shapes

setup()


import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Patch
from pycocotools import mask as mask_utils

from mrcnn_teach import evaluate
from mrcnn_teach.boxes import box_iou
from mrcnn_teach.datasets import ShapesDataset
from mrcnn_teach.datasets.shapes import CIRCLE, SQUARE, TRIANGLE, Shape, masks_to_boxes, shape_mask
from mrcnn_teach.pretrained import trained_shapes_model
from mrcnn_teach.visualize import class_color

# %% [markdown]
# ## 1. Box IoU and mask IoU
#
# Whether a detection "found" an object is decided by one number, the intersection over union of the
# predicted region $P$ and the ground-truth region $G$:
#
# $$\mathrm{IoU}(P, G) = \frac{|P \cap G|}{|P \cup G|} = \frac{|P \cap G|}{|P| + |G| - |P \cap G|}.$$
#
# For **box AP** the regions are the boxes and $|\cdot|$ is a box area. For **mask AP** they are the
# binary masks and $|\cdot|$ counts pixels. Everything else in the COCO protocol is the same for the
# two. Mask R-CNN's headline numbers are mask AP: "unless noted, AP is evaluating using mask IoU" (Sec. 4).
# The box IoU every stage of the model uses (anchor matching, NMS, RoI sampling) lives in `boxes.py`:

# %%
show_source(box_iou)

# %% [markdown]
# A box says little about the shape inside it. We make three predictions for two objects on a 64×64
# canvas, drawing them with the shapes dataset's own rasteriser. In **A** the prediction is the right
# triangle, moved 5 px right and 4 px down. In **B** it is a triangle of the same size pointing *down*,
# placed in the same box. In **C** the object is a circle and the prediction is the square that fills
# its box. We expect both IoUs of A to drop together. B and C should get box IoUs
# near 1 with much lower mask IoUs: two opposite triangles in one box share a quarter of the box, so
# their mask IoU is $\tfrac{1/4}{3/4} = \tfrac13$, and a circle fills $\pi/4 \approx 0.785$ of its
# square. The mask IoU is also computed by pycocotools, on COCO's run-length encoding (RLE), as a check.

# %%
# NBVAL_CHECK_OUTPUT
H = W = 64
up = Shape(TRIANGLE, cx=32.0, cy=36.0, size=40.0)  # pointing up; (cx, cy) is the centre of its circumcircle
R = up.radius  # circumradius: the triangle's box spans cy - R .. cy + R/2 vertically
cases = {  # name: (ground truth, prediction)
    "A: shifted 5 px right, 4 px down": (up, Shape(TRIANGLE, 37.0, 40.0, 40.0)),
    "B: same box, pointing down": (up, Shape(TRIANGLE, 32.0, 36.0 - R / 2, 40.0, angle=np.pi)),
    "C: circle vs the square of its box": (Shape(CIRCLE, 32.0, 32.0, 40.0), Shape(SQUARE, 32.0, 32.0, 40.0)),
}
pairs = {}
for name, (gt_shape, pred_shape) in cases.items():
    masks_np = np.stack([shape_mask(gt_shape, H, W), shape_mask(pred_shape, H, W)])  # (2, H, W) bool
    masks = torch.from_numpy(masks_np)  # (2, H, W)  [ground truth, prediction]
    boxes = torch.from_numpy(masks_to_boxes(masks_np)).double()  # (2, 4)  tight boxes, x1 y1 x2 y2
    inter = (masks[0] & masks[1]).sum().item()  # pixels in both
    union = (masks[0] | masks[1]).sum().item()  # pixels in either
    iou_box = box_iou(boxes[1:], boxes[:1]).item()
    iou_mask = inter / union
    rles = evaluate.masks_to_rle(masks)  # COCO's encoding of each mask
    iou_coco = mask_utils.iou(rles[1:], rles[:1], [0])[0, 0]  # (1, 1) -> pycocotools' mask IoU
    pairs[name] = (masks, boxes, iou_box, iou_mask)
    print(f"{name:<36} box IoU {iou_box:.4f}   mask IoU {inter:4d} / {union:4d} = {iou_mask:.4f}"
          f"   (pycocotools {iou_coco:.4f})")
    assert masks.shape == (2, H, W) and boxes.shape == (2, 4)
    assert abs(iou_coco - iou_mask) < 1e-12

# %% [markdown]
# The pixel counts come close to the ideal ratios (0.333 and 0.785). B's box IoU is 0.94 rather than 1
# because the two rasterised triangles' boxes differ by a pixel row or two: small shapes drawn on a pixel
# grid are never exact. In A the mask IoU falls further than the box IoU (0.51 vs 0.63): a box forgives
# the empty corners beside a triangle, a mask does not. The pictures show where the two IoUs part
# ways. The blue pixels are object only, the orange ones prediction only, and the purple ones are in
# both. Dashed is the ground-truth box, solid the predicted box.

# %%
PALETTE = {"object only": (0.55, 0.75, 1.0), "prediction only": (1.0, 0.72, 0.35), "both": (0.5, 0.3, 0.65)}


def overlap_image(gt_mask, pred_mask):
    """(H, W) bool x2 -> (H, W, 3) RGB: white background, one colour per overlap case (PALETTE)."""
    gt_mask, pred_mask = np.asarray(gt_mask, bool), np.asarray(pred_mask, bool)
    rgb = np.ones(gt_mask.shape + (3,))  # (H, W, 3) white
    rgb[gt_mask & ~pred_mask] = PALETTE["object only"]
    rgb[pred_mask & ~gt_mask] = PALETTE["prediction only"]
    rgb[gt_mask & pred_mask] = PALETTE["both"]
    return rgb


def draw_box(ax, box, **style):
    x1, y1, x2, y2 = [float(v) for v in box]
    ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, **style))


legend = [Patch(color=c, label=k) for k, c in PALETTE.items()] + [
    plt.Line2D([], [], color="tab:blue", linestyle="--", linewidth=2, label="ground-truth box"),
    plt.Line2D([], [], color="tab:orange", linewidth=1.5, label="predicted box")]
fig, axes = plt.subplots(1, 3, figsize=(12, 4.6))
for ax, (name, (masks, boxes, iou_box, iou_mask)) in zip(axes, pairs.items()):
    ax.imshow(overlap_image(masks[0], masks[1]))
    draw_box(ax, boxes[0], color="tab:blue", linestyle="--", linewidth=2)
    draw_box(ax, boxes[1], color="tab:orange", linewidth=1.5)
    ax.set_title(f"{name}\nbox IoU {iou_box:.2f}, mask IoU {iou_mask:.2f}", fontsize=10)
    ax.set_xlabel("x (pixels)")
    ax.set_ylabel("y (pixels)")
fig.suptitle("The same detection scored by box IoU and by mask IoU")
fig.tight_layout()
fig.legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=5, fontsize=9)
plt.show()

# %% [markdown]
# Box AP would count C as a hit even at the strictest threshold, IoU 0.95, and B up to 0.90. Mask AP
# would miss B already at 0.5, and C from 0.80 on. The mask branch is what separates the two. A model whose
# boxes are right but whose masks are blobs gets a high box AP and a low mask AP.
#
# ## 2. AP by hand, on nine detections
#
# COCO AP scores a ranked list of detections against the objects, **one class at a time**, and then
# averages. For one class and one IoU threshold $t$:
#
# 1. **Sort** all detections of the class, from every image, by score, highest first.
# 2. **Match** greedily, image by image. Each detection, in score order, claims the *unclaimed* object
#    of its class with the highest IoU, if that IoU is $\ge t$. Then it is a true positive (TP).
#    Otherwise it is a false positive (FP). A second detection of an object that was already claimed
#    is an FP, so duplicates are punished.
# 3. **Count**: after the $n$ best detections, $\mathrm{TP}_n$ and $\mathrm{FP}_n$ give
#    $\text{precision}_n = \mathrm{TP}_n / n$ and $\text{recall}_n = \mathrm{TP}_n / N_{GT}$.
# 4. **Envelope**: replace each precision by the best precision at that recall or higher,
#    $\hat p_n = \max_{m \ge n} p_m$ (a running maximum from the right). Now the curve only goes down.
# 5. **101 points**: read the envelope at recall $r = 0, 0.01, \dots, 1$, at the first detection whose
#    recall reaches $r$ (0 where the recall never gets there). AP is the mean of these 101 values.
#
# Finally, COCO's AP is the mean over classes and over the ten thresholds $t = 0.50, 0.55, \dots, 0.95$;
# AP50 and AP75 are the means over classes at a single threshold. COCO also has *crowd* regions and
# can *ignore* objects outside an area range. Our data has no crowds and we score all areas, so both
# are left out here. Section 8 comes back to areas.
#
# The example has 3 images of 100×100 pixels, two classes (square and circle, 3 objects each) and nine
# detections d1..d9, named in score order. It is built to contain each case: good hits, a duplicate (d4
# sits on the same square as d1), a wrong class (d6 calls the circle of image 2 a square), a detection
# of nothing (d7), and two loose boxes that pass at IoU 0.5 but not at 0.75 (d3 and d8).

# %%
# NBVAL_CHECK_OUTPUT
CLASS_NAMES = ("background", "square", "circle")
f64 = dict(dtype=torch.float64)
tiny_gts = [  # per image: boxes (G, 4) x1 y1 x2 y2, labels (G,)
    dict(boxes=torch.tensor([[10, 10, 50, 50], [55, 10, 95, 50], [20, 60, 60, 95]], **f64), labels=torch.tensor([1, 1, 2])),
    dict(boxes=torch.tensor([[30, 30, 70, 70], [5, 5, 35, 35]], **f64), labels=torch.tensor([1, 2])),
    dict(boxes=torch.tensor([[40, 40, 90, 90]], **f64), labels=torch.tensor([2])),
]
tiny_dets = [  # per image: boxes (D, 4), labels (D,), scores (D,); best score first within each image, as the model returns them
    dict(boxes=torch.tensor([[12, 10, 50, 52], [11, 12, 49, 50], [20, 58, 60, 90], [55, 15, 95, 55]], **f64),
         labels=torch.tensor([1, 1, 2, 1]), scores=torch.tensor([0.95, 0.80, 0.70, 0.40], **f64)),
    dict(boxes=torch.tensor([[34, 34, 74, 74], [60, 60, 95, 95], [10, 10, 40, 40]], **f64),
         labels=torch.tensor([1, 2, 2]), scores=torch.tensor([0.85, 0.55, 0.45], **f64)),
    dict(boxes=torch.tensor([[42, 40, 90, 88], [40, 40, 90, 90]], **f64),
         labels=torch.tensor([2, 1]), scores=torch.tensor([0.90, 0.60], **f64)),
]
for i, (gt, det) in enumerate(zip(tiny_gts, tiny_dets)):
    G, D = len(gt["labels"]), len(det["labels"])
    assert gt["boxes"].shape == (G, 4) and gt["labels"].shape == (G,)
    assert det["boxes"].shape == (D, 4) and det["labels"].shape == det["scores"].shape == (D,)
    print(f"image {i}: objects {[CLASS_NAMES[c] for c in gt['labels'].tolist()]}, {D} detections")

# %% [markdown]
# In the picture, dashed boxes are the objects and solid ones the detections, coloured by class
# (square orange, circle green, the colours every notebook uses). Each detection is tagged with its name
# and score. The objects are drawn on top, so that a detection with exactly an object's box (d6 in
# image 2) does not hide the object's dashed outline.

# %%
all_scores = torch.cat([d["scores"] for d in tiny_dets])  # (9,)
rank_of = {s: n + 1 for n, s in enumerate(sorted(all_scores.tolist(), reverse=True))}  # score -> d1..d9
fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
for i, (ax, gt, det) in enumerate(zip(axes, tiny_gts, tiny_dets)):
    for box, label in zip(gt["boxes"], gt["labels"].tolist()):
        draw_box(ax, box, color=class_color(label), linestyle="--", linewidth=2.5, zorder=3)  # on top of the detections
    tagged = []  # bottom-left corners already tagged in this image
    for box, label, score in zip(det["boxes"], det["labels"].tolist(), det["scores"].tolist()):
        draw_box(ax, box, color=class_color(label), linewidth=1.2)
        x1, y1, x2, y2 = box.tolist()
        crowded = any(abs(x1 - x) < 15 and abs(y2 - y) < 10 for x, y in tagged)  # then tag the top-right corner
        ax.text(x2 - 1 if crowded else x1 + 1, y1 + 1 if crowded else y2 - 1, f"d{rank_of[score]} {score:.2f}",
                fontsize=8, color="white", va="top" if crowded else "bottom", ha="right" if crowded else "left",
                bbox=dict(facecolor=class_color(label), pad=1, edgecolor="none"))
        tagged.append((x1, y2))
    ax.set(xlim=(0, 100), ylim=(100, 0), aspect="equal", xlabel="x (pixels)", ylabel="y (pixels)",
           title=f"image {i}")
fig.suptitle("The tiny example: objects (dashed) and detections (solid, with their scores)")
fig.tight_layout()
fig.legend(handles=[Patch(color=class_color(c), label=CLASS_NAMES[c]) for c in (1, 2)],
           loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2)
plt.show()

# %% [markdown]
# ### 2a. Greedy matching
#
# Step 2 for one image and one class. The function receives the IoU matrix of the detections, already
# in score order, against the objects. It walks down the detections, and each one claims the best
# object still free. This is COCOeval's `evaluateImg` loop. Its small detail: of two objects with equal
# IoU it keeps the later one, and we do the same.

# %%
def match_detections(ious, t):
    """Greedy matching at IoU threshold t. ious (D, G): detections sorted by score (best first) against the
    objects of one image and one class. -> (D,) bool, True = the detection claimed an object (a TP)."""
    D, G = ious.shape
    claimed = np.zeros(G, dtype=bool)  # (G,)
    is_tp = np.zeros(D, dtype=bool)  # (D,)
    for d in range(D):  # in score order: a higher score gets the first pick
        free = np.where(claimed, -1.0, ious[d])  # (G,) an object already claimed is out of reach
        if G and free.max() >= t:
            g = G - 1 - int(free[::-1].argmax())  # the best free object (the last one on a tie)
            claimed[g] = is_tp[d] = True
    return is_tp


# %% [markdown]
# Image 0 has two squares, A on the left and B on the right, and three square detections: d1 (0.95),
# d4 (0.80) and d9 (0.40). d4 overlaps A with IoU 0.90, but d1 came first and took A, so we expect d4
# to be an FP at every threshold. d9 covers B with IoU 0.78: a TP at 0.5 and at 0.75, and an FP at 0.8.

# %%
# NBVAL_CHECK_OUTPUT
gt, det = tiny_gts[0], tiny_dets[0]
g = (gt["labels"] == 1).nonzero().flatten()  # (2,) the squares of image 0
d = (det["labels"] == 1).nonzero().flatten()  # (3,) the square detections of image 0
d = d[torch.argsort(-det["scores"][d], stable=True)]  # (3,) best first
ious = box_iou(det["boxes"][d], gt["boxes"][g]).numpy()  # (3, 2)
assert ious.shape == (3, 2)
print("IoU, rows d1 d4 d9, columns objects A B:\n", ious.round(4))
for t in (0.5, 0.75, 0.8):
    print(f"t = {t:.2f}: TP per detection {match_detections(ious, t).tolist()}")

# %% [markdown]
# Now every image and both classes, at $t = 0.5$ and $t = 0.75$. The table lists, for each detection,
# its best IoU with an object of its own class in its image, and whether it is a TP. Reading down the
# columns already hints at the AP: squares have more FPs than circles, and 0.75 turns d3 and d8 into FPs.

# %%
# NBVAL_CHECK_OUTPUT
def sorted_class_detections(det, c, max_dets=100):
    """Indices of an image's detections of class c, best score first, at most max_dets (COCOeval's cap)."""
    d = (det["labels"] == c).nonzero().flatten()  # (D_c,)
    return d[torch.argsort(-det["scores"][d], stable=True)][:max_dets]  # (<= max_dets,)


rows = []
for i, (gt, det) in enumerate(zip(tiny_gts, tiny_dets)):
    for c in (1, 2):
        g = (gt["labels"] == c).nonzero().flatten()  # (G_c,)
        d = sorted_class_detections(det, c)  # (D_c,)
        ious = box_iou(det["boxes"][d], gt["boxes"][g]).numpy()  # (D_c, G_c)
        assert ious.shape == (len(d), len(g))
        best = ious.max(axis=1) if len(g) else np.zeros(len(d))  # (D_c,)
        tp50, tp75 = match_detections(ious, 0.5), match_detections(ious, 0.75)  # (D_c,) x2
        for j, k in enumerate(d.tolist()):
            score = det["scores"][k].item()
            rows.append((rank_of[score], i, CLASS_NAMES[c], score, best[j], tp50[j], tp75[j]))
print("det  image  class   score  best IoU  TP@0.50  TP@0.75")
for name, i, cls, score, best, tp50, tp75 in sorted(rows):
    print(f"d{name}   {i:>5}  {cls:<6}  {score:.2f}    {best:.4f}  {'TP' if tp50 else 'FP':>7}  {'TP' if tp75 else 'FP':>7}")

# %% [markdown]
# ### 2b. Precision, recall and the envelope
#
# Steps 1, 3 and 4 for one class: pool its detections from all images, sort them by score (a *stable*
# sort, as COCOeval does, so ties keep image order) and take cumulative sums.

# %%
def precision_recall(scores, is_tp, num_gt):
    """Detections of one class from all images: scores (D,), is_tp (D,) bool, num_gt objects of the class.
    -> recall (D,), precision (D,) after the 1, 2, ..., D best detections."""
    order = np.argsort(-scores, kind="mergesort")  # (D,) best first; stable, like COCOeval
    tp = np.cumsum(is_tp[order])  # (D,) TP_n
    fp = np.cumsum(~is_tp[order])  # (D,) FP_n
    return tp / num_gt, tp / np.maximum(tp + fp, 1)  # (D,), (D,)


def envelope(precision):
    """Best precision at this recall or beyond: a running maximum from the right. (D,) -> (D,)"""
    return np.maximum.accumulate(precision[::-1])[::-1]


# %% [markdown]
# For the squares at IoU 0.5 the ranked list is d1 TP, d3 TP, d4 FP (the duplicate), d6 FP (the
# circle called a square) and d9 TP. The next cell prints every row. Note that the precision goes back
# *up* at the last detection (0.50 → 0.60). The envelope removes that wiggle: a detector that could
# reach precision 0.6 at a higher recall is credited with at least 0.6 at the lower recall too.

# %%
# NBVAL_CHECK_OUTPUT
def class_detections(gts, dets, c, t):
    """All detections of class c over the images: scores (D,), is_tp (D,) at threshold t, and the object count."""
    scores, is_tp, num_gt = [], [], 0
    for gt, det in zip(gts, dets):
        g = (gt["labels"] == c).nonzero().flatten()  # (G_c,)
        d = sorted_class_detections(det, c)  # (D_c,)
        ious = box_iou(det["boxes"][d].double(), gt["boxes"][g].double()).numpy()  # (D_c, G_c)
        scores.append(det["scores"][d].double().numpy())
        is_tp.append(match_detections(ious, t))
        num_gt += len(g)
    return np.concatenate(scores), np.concatenate(is_tp), num_gt


scores, is_tp, num_gt = class_detections(tiny_gts, tiny_dets, c=1, t=0.5)
recall, precision = precision_recall(scores, is_tp, num_gt)  # (5,), (5,)
env = envelope(precision)  # (5,)
assert scores.shape == is_tp.shape == recall.shape == precision.shape == env.shape == (5,)
order = np.argsort(-scores, kind="mergesort")
print(f"squares, IoU 0.50, {num_gt} objects")
print(" n  det  score  TP  cum TP  cum FP  precision  recall  envelope")
for n, k in enumerate(order):
    tp_n = int(is_tp[order][: n + 1].sum())
    print(f"{n + 1:>2}  d{rank_of[scores[k]]}   {scores[k]:.2f}  {int(is_tp[k]):>2}  {tp_n:>6}  {n + 1 - tp_n:>6}"
          f"  {precision[n]:>9.4f}  {recall[n]:>6.4f}  {env[n]:>8.4f}")

# %% [markdown]
# ### 2c. The 101-point interpolation
#
# Step 5. `np.searchsorted(recall, r, side="left")` finds the first detection whose recall is at least
# $r$, for all 101 recall points at once. A recall point beyond the last recall reached reads 0. The
# mean of the 101 values is the AP.
#
# $$\mathrm{AP} = \frac{1}{101} \sum_{r \in \{0, 0.01, \dots, 1\}} \hat p\big(\text{first } n \text{ with recall}_n \ge r\big).$$
#
# For the squares at 0.5 the recall goes 1/3, 2/3, 2/3, 2/3, 1. The recall points 0..0.33 (34 of them)
# read the envelope at n = 1, which is 1.0. The points 0.34..0.66 (33) read n = 2, also 1.0. The points
# 0.67..1.00 (34) read n = 5, which is 0.6. So we expect AP = (67 · 1 + 34 · 0.6) / 101 = 0.8653.

# %%
RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # COCOeval's params.recThrs
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # COCOeval's params.iouThrs


def interpolated_precision(recall, precision):
    """(D,) recall and precision in rank order -> (101,) the envelope read at recall 0, 0.01, ..., 1."""
    env = envelope(precision)  # (D,)
    first = np.searchsorted(recall, RECALL_POINTS, side="left")  # (101,) first n with recall_n >= r
    reached = first < len(recall)  # (101,) False where the recall never gets that high
    q = np.zeros(len(RECALL_POINTS))  # (101,)
    q[reached] = env[first[reached]]
    return q


# %%
# NBVAL_CHECK_OUTPUT
for c in (1, 2):
    for t in (0.5, 0.75):
        scores, is_tp, num_gt = class_detections(tiny_gts, tiny_dets, c, t)
        q = interpolated_precision(*precision_recall(scores, is_tp, num_gt))  # (101,)
        assert q.shape == (101,)
        print(f"{CLASS_NAMES[c]:<6} IoU {t:.2f}: AP = {q.mean():.4f}")

# %% [markdown]
# The picture draws the squares' curves. The raw precision after each detection is shown as dots, the
# envelope as a step line, and the 101 interpolated values as small ticks. The ticks fill a flat
# stretch between two detections with the envelope's next value. Where the recall is never reached
# (right panel, beyond 2/3), they drop to 0. AP is the area under the ticks.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained", sharey=True)
for ax, t in zip(axes, (0.5, 0.75)):
    scores, is_tp, num_gt = class_detections(tiny_gts, tiny_dets, 1, t)
    recall, precision = precision_recall(scores, is_tp, num_gt)
    q = interpolated_precision(recall, precision)
    ax.plot(recall, precision, "o", color="black", label="precision after each detection")
    ax.step(recall, envelope(precision), where="post", color="tab:blue", label="envelope")
    ax.plot(RECALL_POINTS, q, "|", color="tab:red", markersize=6, label="101 interpolated points")
    ax.fill_between(RECALL_POINTS, q, step=None, color="tab:red", alpha=0.1)
    ax.set(xlabel="recall", title=f"squares, IoU {t:.2f}: AP = {q.mean():.4f}", xlim=(-0.02, 1.02), ylim=(0, 1.05))
    ax.grid(alpha=0.3)
axes[0].set_ylabel("precision")
axes[0].legend(loc="lower left", fontsize=8)
fig.suptitle("From a ranked list to AP: precision, its envelope, and the 101 recall points")
plt.show()

# %% [markdown]
# ### 2d. All thresholds, all classes
#
# `coco_precision` repeats this for every class and every IoU threshold. It returns a `(T, R, K)` array
# of interpolated precisions: 10 thresholds, 101 recall points and K classes, with -1 for a class
# without objects, just as COCOeval stores it. Two details copy COCOeval: IoUs are computed once per
# image and class, and at most `max_dets = 100` detections per image *and class* are kept. `iou_type`
# says whether boxes or masks are compared. Masks go through pycocotools' RLE IoU, exactly what
# COCOeval uses.

# %%
def pairwise_iou(det, gt, iou_type):
    """(D, G) IoU of some detections with some objects of one image, "bbox" or "segm", in float64."""
    if iou_type == "bbox":
        return box_iou(det["boxes"].double(), gt["boxes"].double()).numpy()  # (D, G)
    if len(det["masks"]) == 0 or len(gt["masks"]) == 0:
        return np.zeros((len(det["masks"]), len(gt["masks"])))  # (D, G)
    rle_det, rle_gt = evaluate.masks_to_rle(det["masks"] > 0), evaluate.masks_to_rle(gt["masks"] > 0)
    return np.asarray(mask_utils.iou(rle_det, rle_gt, [0] * len(rle_gt))).reshape(len(rle_det), len(rle_gt))


def coco_precision(gts, dets, classes, iou_type="bbox", max_dets=100):
    """COCO AP by hand. gts / dets: one dict per image (labels, boxes or masks; dets also scores).
    -> (T, R, K) interpolated precision, -1 where a class has no objects (COCOeval's precision[..., 0, -1])."""
    precision = -np.ones((len(IOU_THRESHOLDS), len(RECALL_POINTS), len(classes)))  # (T, R, K)
    for k, c in enumerate(classes):
        per_image, num_gt = [], 0  # (scores (D_c,), ious (D_c, G_c)) per image
        for gt, det in zip(gts, dets):
            g = (gt["labels"] == c).nonzero().flatten()  # (G_c,)
            d = sorted_class_detections(det, c, max_dets)  # (D_c,) best first, capped
            key = "boxes" if iou_type == "bbox" else "masks"
            ious = pairwise_iou({key: det[key][d]}, {key: gt[key][g]}, iou_type)  # (D_c, G_c)
            per_image.append((det["scores"][d].double().numpy(), ious))
            num_gt += len(g)
        if num_gt == 0:
            continue  # no objects: the class has no AP (COCOeval leaves -1)
        scores = np.concatenate([s for s, _ in per_image])  # (D,) in image order
        for ti, t in enumerate(IOU_THRESHOLDS):
            is_tp = np.concatenate([match_detections(ious, t) for _, ious in per_image])  # (D,)
            precision[ti, :, k] = interpolated_precision(*precision_recall(scores, is_tp, num_gt))
    return precision


def summary(precision):
    """(T, R, K) -> AP (all thresholds), AP50, AP75: means over the entries that exist (> -1)."""
    def mean(p):
        return float(p[p > -1].mean()) if (p > -1).any() else float("nan")
    return {"AP": mean(precision), "AP50": mean(precision[0]), "AP75": mean(precision[5])}


# %% [markdown]
# From the four class APs printed above we expect AP50 = (0.8653 + 0.9158) / 2 = 0.8906 and
# AP75 = (0.4673 + 0.6634) / 2 = 0.5653. AP itself also averages in the eight stricter thresholds.

# %%
# NBVAL_CHECK_OUTPUT
tiny_precision = coco_precision(tiny_gts, tiny_dets, classes=[1, 2])  # (T, R, K)
assert tiny_precision.shape == (10, 101, 2)
by_hand = summary(tiny_precision)
print("by hand:   " + "   ".join(f"{k} {v:.4f}" for k, v in by_hand.items()))
print("AP per IoU threshold:", " ".join(f"{tiny_precision[i].mean():.3f}" for i in range(10)))

# %% [markdown]
# ## 3. The same example through pycocotools' COCOeval
#
# `evaluate.py` does not compute AP itself. It converts our formats to COCO's and calls `COCOeval`,
# the reference every paper is scored with. Ground truth becomes a COCO object (`dataset_to_coco`),
# detections become COCO result dicts with `[x, y, w, h]` boxes (`predictions_to_coco`), and
# `run_cocoeval` runs COCOeval's three steps: `evaluate` (the matching), `accumulate` (the precision
# array), and `summarize` (the 12 headline numbers, `stats`). It returns the COCOeval object, so that we
# can read its arrays, not only the numbers the `evaluate` function reports.

# %%
show_source(evaluate.run_cocoeval)

# %% [markdown]
# `dataset_to_coco` accepts any sequence of `(image, target)` pairs, and only the image's size is read,
# so blank images do. We expect the three numbers of section 2d, and the whole precision array to agree,
# not only its means.

# %%
# NBVAL_CHECK_OUTPUT
tiny_coco_gt = evaluate.dataset_to_coco([(torch.zeros(3, 100, 100), dict(gt, image_id=i)) for i, gt in enumerate(tiny_gts)])
tiny_bbox_results, _ = evaluate.predictions_to_coco(dict(enumerate(tiny_dets)))  # boxes only: no segm results
tiny_eval = evaluate.run_cocoeval(tiny_coco_gt, tiny_bbox_results, "bbox")
print("first result:", {k: (round(v, 2) if isinstance(v, float) else v) for k, v in tiny_bbox_results[0].items()})
print("COCOeval:  " + "   ".join(f"{k} {v:.4f}" for k, v in zip(("AP", "AP50", "AP75"), tiny_eval.stats[:3])))
for name, i in (("AP", 0), ("AP50", 1), ("AP75", 2)):
    assert abs(by_hand[name] - tiny_eval.stats[i]) < 1e-6, name
gap = np.abs(tiny_eval.eval["precision"][:, :, :, 0, 2] - tiny_precision).max()
print(f"whole (T, R, K) precision array equal within 1e-12: {gap < 1e-12}")
assert gap < 1e-6

# %% [markdown]
# ### COCOeval's `eval["precision"]`
#
# `accumulate` leaves a five-dimensional array, `precision[t, r, k, a, m]`:
#
# | dim | size | what | values |
# |---|---|---|---|
# | T | 10 | IoU threshold | 0.50, 0.55, ..., 0.95 (`params.iouThrs`) |
# | R | 101 | recall point | 0, 0.01, ..., 1 (`params.recThrs`) |
# | K | classes | category | `params.catIds` order |
# | A | 4 | object area range | all, small, medium, large (`params.areaRng`) |
# | M | 3 | detections kept per image *and class* | 1, 10, 100 (`params.maxDets`) |
#
# Entry `[t, r, k, a, m]` is the interpolated precision of class k at recall point r, at IoU threshold
# t, counting only objects of area range a and, in each image, the m best detections of class k (COCOeval's
# `evaluateImg` runs once per image and class and keeps `dtind[0:maxDet]`). It is -1 where class k
# has no object in that range. Every headline number is a mean over a slice, with -1 left out:
# AP = `precision[:, :, :, 0, 2]`, AP50 = `precision[0, :, :, 0, 2]`, AP_S = `precision[:, :, :, 1, 2]`.
# The AP of one class (the library's `per_class`, in `evaluate._per_class_ap`) is the mean of
# `precision[:, :, k, 0, 2]`.

# %%
# NBVAL_CHECK_OUTPUT
p = tiny_eval.eval["precision"]  # (T, R, K, A, M)
print("precision:", p.shape, "  recall:", tiny_eval.eval["recall"].shape)
assert p.shape == (10, 101, 2, 4, 3)
assert tiny_eval.eval["recall"].shape == (10, 2, 4, 3)
print(f"AP50 = precision[0, :, :, 0, 2].mean() = {p[0, :, :, 0, 2].mean():.4f}")
print(f"AP with only each image's best detection of each class (M = 1): {p[:, :, :, 0, 0][p[:, :, :, 0, 0] > -1].mean():.4f}")

# %% [markdown]
# ### Average recall: the other six numbers
#
# `summarize` prints twelve numbers. The first six are AP; `stats[6:12]` are **AR**, average recall:
# AR@1, AR@10, AR@100 (all areas, at most 1, 10 or 100 detections per image and class), then AR_S,
# AR_M, AR_L (100 detections). `eval["recall"][t, k, a, m]` is the recall class k reaches at the end
# of its ranked list, $\mathrm{TP}/N_{GT}$ after all its kept detections: the right end of the
# precision/recall curve, whatever the precision was on the way. AR is its mean over the ten
# thresholds and the classes. So AR asks "how many objects are found at all, and how tightly",
# with no penalty for false positives; it is how proposals (the RPN of notebook 04) are usually
# judged, with the detection budget m as the knob. By hand, from the TP flags of section 2b, we expect
# COCOeval's AR@100.

# %%
# NBVAL_CHECK_OUTPUT
def final_recall(c, t):
    """Recall of class c at IoU t after all its detections: TP / N_GT."""
    _, is_tp, num_gt = class_detections(tiny_gts, tiny_dets, c, t)
    return is_tp.sum() / num_gt


recall_by_hand = np.array([[final_recall(c, t) for c in (1, 2)] for t in IOU_THRESHOLDS])  # (T, K)
coco_recall = tiny_eval.eval["recall"][:, :, 0, 2]  # (T, K, A, M) -> (T, K): all areas, 100 detections
assert recall_by_hand.shape == coco_recall.shape == (10, 2)
assert np.abs(recall_by_hand - coco_recall).max() < 1e-12
print(f"AR@100 by hand {recall_by_hand.mean():.4f}   COCOeval stats[8] {tiny_eval.stats[8]:.4f}")
print("AR@1, AR@10, AR@100:", " ".join(f"{v:.4f}" for v in tiny_eval.stats[6:9]))
assert abs(recall_by_hand.mean() - tiny_eval.stats[8]) < 1e-12

# %% [markdown]
# ## 4. The trained model on the held-out set
#
# Now real detections. `evaluate(model, dataset)` runs the model over the dataset in batches. It
# collects the ground truth in the same pass, encodes each batch's masks as RLE right away (a hundred
# full-size float masks per image would not fit in memory on COCO), and scores box and mask with
# COCOeval (its source: `show_source(evaluate.evaluate)`).
#
# `evaluate` keeps nothing but the metrics, yet the rest of this notebook needs the detections
# themselves. Running the model a second time would double the cost. Instead we pass a thin wrapper
# that hands every call on to the model and keeps a copy of what it returns. To save memory it stores
# the masks already binarised at 0.5, as COCO scores them.
#
# The held-out set is `ShapesDataset(100, seed=1)`, 100 images the model never saw. The numbers depend
# on the trained weights, so this cell's output is not checked in CI.

# %%
class KeepDetections(torch.nn.Module):
    """Calls `model` and keeps its detections (masks binarised at 0.5) in self.detections, one dict per image."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.detections = []

    def forward(self, images):
        outputs = self.model(images)
        for out in outputs:
            self.detections.append(dict(boxes=out["boxes"], labels=out["labels"], scores=out["scores"],
                                        masks=out["masks"][:, 0] > 0.5))  # (D, H, W) bool
        return outputs


model = trained_shapes_model()
held_out = ShapesDataset(100, seed=1)
keeper = KeepDetections(model)
metrics = evaluate.evaluate(keeper, held_out, per_class=True)
print(evaluate.format_metrics(metrics))
for iou_type in ("bbox", "segm"):
    print(f"{iou_type} AP per class: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics[iou_type]["per_class"].items()))

# %% [markdown]
# The detections we kept: one dict per image, each with at most `box_detections_per_img` = 20 entries
# (the shapes configuration). COCOeval's cap of 100 per image and class therefore never bites here.
# `coco_precision` applies it anyway.

# %%
detections = keeper.detections
targets = [held_out[i][1] for i in range(len(held_out))]
print_shapes(boxes_0=detections[0]["boxes"], labels_0=detections[0]["labels"], scores_0=detections[0]["scores"],
             masks_0=detections[0]["masks"], gt_masks_0=targets[0]["masks"])
counts = [len(d["scores"]) for d in detections]
print(f"{len(detections)} images, {sum(counts)} detections, at most {max(counts)} in one image, "
      f"{sum(len(t['labels']) for t in targets)} objects")
assert len(detections) == len(targets) == 100 and max(counts) <= model.config["box_detections_per_img"]
for det, tgt in zip(detections, targets):
    D, G = len(det["scores"]), len(tgt["labels"])
    assert det["boxes"].shape == (D, 4) and det["labels"].shape == (D,) and det["masks"].shape == (D, 128, 128)
    assert tgt["boxes"].shape == (G, 4) and tgt["masks"].shape == (G, 128, 128)

# %% [markdown]
# ## 5. Our by-hand AP on the same detections
#
# The function from section 2 should give COCOeval's numbers on the model's detections too (760 in our
# run, the count printed above), for boxes and for masks. We run COCOeval ourselves as well, through the library's
# `dataset_to_coco` and `predictions_to_coco`, so that we can compare the whole precision arrays. We
# expect the AP, AP50 and AP75 of the table above and a largest difference near machine precision.

# %%
classes = [1, 2, 3]  # square, circle, triangle
coco_gt = evaluate.dataset_to_coco(held_out)
bbox_results, segm_results = evaluate.predictions_to_coco({i: dict(d, masks=d["masks"][:, None])  # (D, 1, H, W)
                                                           for i, d in enumerate(detections)})
coco_evals, ours = {}, {}
for iou_type, results in (("bbox", bbox_results), ("segm", segm_results)):
    coco_evals[iou_type] = evaluate.run_cocoeval(coco_gt, results, iou_type)
    ours[iou_type] = coco_precision(targets, detections, classes, iou_type)  # (T, R, K)
    assert ours[iou_type].shape == (10, 101, 3)
    assert coco_evals[iou_type].eval["precision"].shape == (10, 101, 3, 4, 3)
    mine = summary(ours[iou_type])
    gap = np.abs(coco_evals[iou_type].eval["precision"][:, :, :, 0, 2] - ours[iou_type]).max()
    print(f"{iou_type}: by hand " + "  ".join(f"{k} {v:.4f}" for k, v in mine.items())
          + f"   largest difference to COCOeval {gap:.1e}")
    for name in ("AP", "AP50", "AP75"):
        assert abs(mine[name] - metrics[iou_type][name]) < 1e-6, (iou_type, name)
    assert gap < 1e-6

# %% [markdown]
# They agree. So everything COCO AP does on this data is in the few short functions of section 2:
# per-class greedy matching, a cumulative count, an envelope, and 101 samples.
#
# ## 6. Precision/recall curves per class
#
# The slice `precision[t, :, k, 0, 2]` is class k's interpolated precision/recall curve at threshold t,
# with all areas and 100 detections. We draw each class at IoU 0.5 (solid) and 0.75 (dashed), for
# boxes and masks. Read a curve from left to right. It starts high, where the few most confident
# detections are nearly all right, and it ends where the recall runs out: objects that no detection
# covers well enough. Each curve's mean is the class's AP at that threshold, printed in the legend.

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4.3), layout="constrained", sharey=True)
for ax, iou_type in zip(axes, ("bbox", "segm")):
    precision = coco_evals[iou_type].eval["precision"]  # (T, R, K, A, M)
    for k, c in enumerate(classes):
        for ti, style in ((0, "-"), (5, "--")):
            ap = precision[ti, :, k, 0, 2].mean()
            ax.plot(RECALL_POINTS, precision[ti, :, k, 0, 2], style, color=class_color(c),
                    label=f"{model.class_names[c]}, IoU {IOU_THRESHOLDS[ti]:.2f} (AP {ap:.2f})")
    ax.set(xlabel="recall", title=f"{'box' if iou_type == 'bbox' else 'mask'}: interpolated precision/recall",
           xlim=(0, 1), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="lower left")
axes[0].set_ylabel("precision")
fig.suptitle("precision[t, :, k, 0, 2] of COCOeval on the 100 held-out images")
plt.show()

# %% [markdown]
# In our run the square's box curve at IoU 0.5 is the first to leave precision 1, and it falls in
# steps while its recall still rises. Each step down is a false positive
# labelled *square* that outscores the next square found. Which false positives those are, the
# curves cannot say; section 10 sorts them by kind.

# %% [markdown]
# ### AP against the score threshold: why inference keeps the low scores
#
# Notebook [10 — Inference](10_inference.ipynb) returns every detection scoring above 0.05 (the
# configuration's `box_score_thresh`), up to `box_detections_per_img` per image, while the pictures and
# `python -m mrcnn_teach predict` draw only those scoring at least 0.5. The envelope says why the two
# differ. Appending detections at the *bottom* of a class's ranked list cannot lower its AP:
#
# - the detections above them keep their TP/FP flags (a lower score never takes an object from a
#   higher one in the greedy matching), so their precision and recall are unchanged;
# - the envelope at rank n is the best precision at rank n *or later*: more later ranks can only raise it;
# - recall points the shorter list never reached read 0 before, and now read something $\ge 0$.
#
# So for AP, a low score threshold is free, and every object found late still adds recall. A user
# looking at one picture wants the opposite, a short list that is nearly all right. We expect AP to
# fall, never rise, as the threshold rises:

# %%
score_thresholds = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
ap_by_threshold = []
for s_min in score_thresholds:
    kept = [{k: v[d["scores"] >= s_min] for k, v in d.items()} for d in detections]  # per image, same keys
    ap_by_threshold.append(summary(coco_precision(targets, kept, classes, "bbox")))
    print(f"score >= {s_min:.2f}: {sum(len(d['scores']) for d in kept):>4} detections, box AP "
          f"{ap_by_threshold[-1]['AP']:.3f}, AP50 {ap_by_threshold[-1]['AP50']:.3f}")
for name in ("AP", "AP50"):
    series = np.array([a[name] for a in ap_by_threshold])  # (10,)
    assert (np.diff(series) <= 1e-12).all(), f"{name} rose with the threshold"
fig, ax = plt.subplots(figsize=(7.5, 3.8), layout="constrained")
for name, colour in (("AP50", "tab:blue"), ("AP", "tab:green")):
    ax.plot(score_thresholds, [a[name] for a in ap_by_threshold], "o-", color=colour, label=f"box {name}")
for x, text in ((model.config["box_score_thresh"], "inference keeps"), (0.5, "pictures draw")):
    ax.axvline(x, color="gray", linestyle="--", linewidth=1)
    ax.text(x + 0.01, 0.05, f"{text}\nscore >= {x:g}", color="gray", fontsize=9)
ax.set(xlabel="score threshold: detections below it are dropped", ylabel="AP", ylim=(0, 1),
       title="Dropping low-scored detections can only lower AP")
ax.grid(alpha=0.3)
ax.legend(loc="center right")
plt.show()

# %% [markdown]
# > **Common mistake:** "score AP on the detections the demo draws, score ≥ 0.5, since those are the
# > model's answers." That drops detections from the bottom of every ranked list, which can only
# > lower AP (the row at 0.50 above). COCO results are scored the way torchvision's and Detectron's
# > defaults run inference, every detection above 0.05, up to 100 per image (the paper's mask
# > branch, too, runs on the 100 highest-scoring boxes, Sec. 3.1). A model scored at 0.5 cannot be
# > compared with them.
#
# ## 7. AP at each IoU threshold
#
# Averaging `precision[t, :, :, 0, 2]` over recall points and classes gives the AP at threshold t
# alone. AP50 and AP75 are two points of this curve, and COCO's AP is its mean over the ten points.
# The curve falls as t rises, since a stricter threshold makes every match harder. How fast it falls
# says how tight the boxes and masks sit. A detector with perfect localisation would have a flat curve.

# %%
ap_at = {iou_type: np.array([p_t[p_t > -1].mean() for p_t in ours[iou_type]])  # (T,) one AP per threshold
         for iou_type in ("bbox", "segm")}
fig, ax = plt.subplots(figsize=(7.5, 4), layout="constrained")
for iou_type, colour in (("bbox", "tab:blue"), ("segm", "tab:green")):
    name = "box" if iou_type == "bbox" else "mask"
    ax.plot(IOU_THRESHOLDS, ap_at[iou_type], "o-", color=colour, label=f"{name} AP at threshold t")
    ax.axhline(ap_at[iou_type].mean(), color=colour, linestyle=":", label=f"{name} AP (mean) = {ap_at[iou_type].mean():.3f}")
for t in (0.5, 0.75):
    ax.axvline(t, color="gray", linewidth=0.8)
    ax.text(t + 0.005, 0.02, f"AP{int(t * 100)}", color="gray")
ax.set(xlabel="IoU threshold t", ylabel="AP", ylim=(0, 1), title="AP at IoU 0.50 ... 0.95, trained shapes model")
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## 8. Small, medium, large
#
# COCO splits objects by **area**. For ground truth this is the annotation's `area` field, which is
# the mask's pixel count, also when boxes are scored. The ranges are small < 32² = 1024 px²,
# medium 32²..96², and large > 96² = 9216 px². AP_S scores only the small objects: other objects are
# *ignored*, and so are unmatched detections outside the range (a detection that matches an ignored
# object counts neither way). A range with no objects at all gives -1, "no data".
#
# Our shapes are at most 48 px across on a 128-px image. Even a full 48×48 square is 2304 px², a
# quarter of the 9216 px² a "large" object needs. So the held-out set has no large object, and COCOeval
# reports AP_L = -1. The library turns that into `nan`, and `format_metrics` prints "-". We expect
# the counts to show that, and the largest object far below 96². The dataset is deterministic, so they
# are checked in CI.

# %%
# NBVAL_CHECK_OUTPUT
areas = torch.cat([t["area"] for t in targets])  # (N_objects,) mask pixel counts
assert areas.shape == (sum(len(t["labels"]) for t in targets),)
small, large = int((areas < 32 ** 2).sum()), int((areas > 96 ** 2).sum())
print(f"{len(areas)} objects: {small} small, {len(areas) - small - large} medium, {large} large;"
      f" area from {areas.min():.0f} to {areas.max():.0f} px^2, the largest {96 ** 2 / areas.max():.1f}x"
      f" short of 96^2 = {96 ** 2}")
print("COCOeval's -1 for APl:", [float(e.stats[5]) for e in coco_evals.values()])

# %% [markdown]
# ## 9. Which classes get confused: the best detection of each object
#
# AP folds every error into one number. A confusion table splits them apart. For each object we take
# the **highest-scoring detection of any class** whose box IoU with the object is at least 0.5, and
# record its class, or "missed" if there is none. All detections down to the model's score threshold
# of 0.05 take part. The diagonal counts objects whose best detection has the right class. Off the
# diagonal are class mix-ups, and the last column holds objects that no detection covers with box IoU >= 0.5.

# %%
names = [model.class_names[c] for c in classes]
confusion = np.zeros((len(classes), len(classes) + 1), dtype=int)  # (K, K + 1) rows: GT class; last column: missed
for det, tgt in zip(detections, targets):
    ious = box_iou(tgt["boxes"], det["boxes"])  # (G, D)
    assert ious.shape == (len(tgt["labels"]), len(det["scores"]))
    covering = torch.where(ious >= 0.5, det["scores"], -1.0)  # (G, D) score of each detection that covers the object
    for gi, gt_label in enumerate(tgt["labels"].tolist()):
        if len(det["scores"]) == 0 or covering[gi].max() < 0:
            confusion[gt_label - 1, -1] += 1  # no detection covers it: missed
        else:
            confusion[gt_label - 1, int(det["labels"][covering[gi].argmax()]) - 1] += 1
assert confusion.sum() == len(areas)
fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
fraction = confusion / confusion.sum(axis=1, keepdims=True)  # (K, K + 1) each row sums to 1
im = ax.imshow(fraction, cmap="Blues", vmin=0, vmax=1)
for (i, j), v in np.ndenumerate(confusion):
    ax.text(j, i, f"{v}\n{fraction[i, j]:.0%}", ha="center", va="center", fontsize=9,
            color="white" if fraction[i, j] > 0.6 else "black")
ax.set_xticks(range(len(names) + 1), names + ["missed"])
ax.set_yticks(range(len(names)), names)
ax.set(xlabel="class of the best detection with box IoU >= 0.5", ylabel="object class",
       title="Best detection per held-out object")
fig.colorbar(im, ax=ax, label="fraction of the row's objects")
plt.show()

# %% [markdown]
# Hardly any object is missed outright; the off-diagonal cells are class mix-ups. Mind what a mix-up
# does to AP, because per-class AP ranks a class's detections **only against the other detections of
# that class**. A circle detection on a square never enters the square ranking, so it cannot push a
# square detection down. It is a false positive in the *circle* ranking, and costs circle AP wherever it
# outscores a true circle detection. So a class's AP is lowered by the wrong guesses made *under its
# name* on other classes' objects, by its own detections that place their object loosely, and by its
# objects found late or never; not by the other classes' detections on its objects. The picture above
# counts only each object's best detection, so it cannot tell these apart: to see which one hurts a
# class, list its false positives by cause (a mix-up on another class's object, a loose box on its own,
# a duplicate, or background), which is what COCO's error analysis does, in the next section.

# %% [markdown]
# ## 10. Where the false positives come from
#
# Hoiem et al. (*Diagnosing error in object detectors*, ECCV 2012) sort every detection of a class
# into one kind, and COCO's `analyze()` turns the kinds into curves. `evaluate.detection_errors` gives
# each detection, per image, the first kind that fits:
#
# | code | kind | the detection |
# |---|---|---|
# | 0 | TP | claims an object of its class at IoU $\ge t$ (the greedy matching of section 2a) |
# | 1 | Loc | has IoU $\ge 0.1$ with an object of its class: a loose box ($0.1 \le$ IoU $< t$), or a duplicate of an object a higher score already claimed |
# | 2 | Cls | has IoU $\ge 0.1$ with an object of another class: a confusion |
# | 3 | BG | has IoU $< 0.1$ with every object: background |
#
# A missed object (FN) is the fourth kind of error; it has no detection, so it shows as recall that
# never comes. We count the kinds for each class at $t$ = 0.5 and 0.75, once over all detections and
# once over those scoring at least 0.5, the ones a picture would draw. We expect few BG (nearly every
# detection lands on some shape), and the TP count divided by the objects of the class to be the recall
# COCOeval reaches at that threshold.

# %%
kinds = {t: evaluate.detection_errors(detections, targets, t) for t in (0.5, 0.75)}  # {t: per image (D,) codes}
print(f"{'':<9} IoU " + "".join(f"{k:>5}" for k in evaluate.ERROR_TYPES) + "    the same, score >= 0.5")
for k, c in enumerate(classes):
    scores_c = torch.cat([d["scores"][d["labels"] == c] for d in detections])  # (D_c,)
    for t in (0.5, 0.75):
        kind_c = torch.cat([kk[d["labels"] == c] for kk, d in zip(kinds[t], detections)])  # (D_c,)
        assert kind_c.shape == scores_c.shape
        every, high = torch.bincount(kind_c, minlength=4), torch.bincount(kind_c[scores_c >= 0.5], minlength=4)
        print(f"{model.class_names[c]:<9}{t:.2f} " + "".join(f"{v:>5}" for v in every.tolist())
              + "    " + "".join(f"{v:>5}" for v in high.tolist()))
        num_gt = sum(int((tg["labels"] == c).sum()) for tg in targets)
        ti = int(np.argmin(np.abs(IOU_THRESHOLDS - t)))
        assert abs(every[0] / num_gt - coco_evals["bbox"].eval["recall"][ti, k, 0, 2]) < 1e-9

# %% [markdown]
# Compare the two halves of the table: most Cls detections score below 0.5. On many objects the model
# also returns a weak guess of another class; it ranks below most true detections of that class, so
# it costs little. The confusions that do cost are the high-scored ones. Which way do they go? The next
# table counts the Cls detections scoring at least 0.5 by the class the detection says (rows) and the
# class of the object it overlaps most (columns).

# %%
confused = np.zeros((len(classes), len(classes)), dtype=int)  # (K, K) rows: detection's class, columns: object's
for kk, det, tgt in zip(kinds[0.5], detections, targets):
    cls_fp = ((kk == 2) & (det["scores"] >= 0.5)).nonzero().flatten()  # (F,) confusions worth drawing
    if len(cls_fp):
        nearest = box_iou(det["boxes"][cls_fp], tgt["boxes"]).argmax(dim=1)  # (F,) the object each one covers most
        for label, gt_label in zip(det["labels"][cls_fp].tolist(), tgt["labels"][nearest].tolist()):
            confused[label - 1, gt_label - 1] += 1
assert np.trace(confused) == 0  # a Cls detection never sits mostly on its own class's object
print("rows: the detection says; columns: the object is")
print(f"{'':<9}" + "".join(f"{n:>9}" for n in names))
for name, row in zip(names, confused):
    print(f"{name:<9}" + "".join(f"{v:>9d}" for v in row))
print(f"squares called circles: {confused[1, 0]}, circles called squares: {confused[0, 1]}")

# %% [markdown]
# Counts do not say what each kind *costs*, since a false positive ranked below every true positive
# costs nothing (the envelope argument of section 6). COCO's `analyze()` measures the cost: it redraws the class's PR curve with
# one kind of error removed after another. C75 and C50 are the ordinary curves. **Loc** rescores at
# IoU 0.1, so loose boxes count as found (duplicates are still false). **Cls** also drops the
# confusions (COCO splits them into Sim, a class of the same supercategory, and Oth; our shapes have no
# supercategories). **BG** drops every remaining false positive, and **FN** pretends every missed
# object was found, so its AP is 1. The area between two curves is the AP that kind costs.
# `evaluate.error_curves` computes them, from `detection_errors` at IoU 0.75, 0.5 and 0.1.

# %%
# colours of the error kinds, not of the classes (the class colours of visualize.py are orange, green, red)
STEPS = {"C75": "tab:gray", "C50": "tab:blue", "Loc": "tab:cyan", "Cls": "tab:olive", "BG": "tab:purple", "FN": "gold"}
fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), layout="constrained", sharey=True)
error_aps = {}
for ax, c in zip(axes, classes):
    curves = evaluate.error_curves(detections, targets, c)  # {step: (101,)}
    error_aps[c] = {step: float(q.mean()) for step, q in curves.items()}
    assert list(curves) == list(STEPS) and all(q.shape == (101,) for q in curves.values())
    below = np.zeros(101)
    for step, q in curves.items():  # each step's curve lies on or above the one before
        assert (q >= below - 1e-12).all(), step
        ax.fill_between(RECALL_POINTS, below, q, color=STEPS[step], alpha=0.8,
                        label=f"[{error_aps[c][step]:.3f}] {step}")
        below = q
    ax.set(xlabel="recall", xlim=(0, 1), ylim=(0, 1.01), title=f"{model.class_names[c]} (box)")
    ax.legend(loc="lower left", fontsize=9)
axes[0].set_ylabel("precision")
fig.suptitle("What each kind of error costs: PR curves with Loc, Cls, BG and FN errors removed in turn (AP in brackets)")
plt.show()
worst_c = min(classes, key=lambda c: error_aps[c]["C50"])
a = error_aps[worst_c]
print(f"{model.class_names[worst_c]}s, the lowest box AP50 ({a['C50']:.3f}): loose boxes cost {a['Loc'] - a['C50']:.3f}, "
      f"confusions {a['Cls'] - a['Loc']:.3f}, background and duplicates {a['BG'] - a['Cls']:.3f}, "
      f"missed objects {a['FN'] - a['BG']:.3f}")

# %% [markdown]
# Read the square panel with the sentence printed under it. In our run loose boxes (cyan) and
# confusions (olive) cost the squares about the same and make up nearly all of the gap to 1;
# background detections and duplicates (purple) cost little, and no object is missed outright at IoU
# 0.1 (the FN band is empty). The olive band comes from the 166 Cls detections labelled square (the
# table at the start of this section): detections labelled square on circles and triangles, ranked
# among the true squares. The 39 of them scoring $\ge 0.5$ are the row "square" of the confusion counts
# above. Compare those counts with the picture of section 9: at score $\ge 0.5$ more circles are called squares than squares
# circles, yet an object's *best* detection is rarely such a mix-up. A square label on a circle
# usually scores below the circle detection on the same object, so it never shows as that object's
# best, and it still costs square AP, because square AP ranks it against the true squares only.

# %% [markdown]
# ## 11. AP50 vs AP75: how well are the objects placed?
#
# A detection that counts at IoU 0.5 but not at 0.75 found the object and then placed it loosely. So
# the gap between AP50 and AP75 measures **localisation**, and for mask AP that means the quality of
# the mask's outline. This is where the paper's RoIAlign pays off. In Table 2c (ResNet-50-C4, COCO
# mask AP), replacing RoIPool by RoIAlign raises AP50 from 48.8 to 51.2 (+2.4), and AP75 from 26.4 to
# 31.5 (+5.1), twice as much. On the coarser stride-32 C5 features (Table 2d) the paper reports +7.3 AP
# and +10.5 AP75. RoIPool rounds twice (notebook 05): snapping the box to the feature grid moves each
# edge by up to half a cell, and cutting the snapped box into whole-cell bins (floor and ceil) can
# widen a bin by up to one cell more. That hardly changes *whether* an object is found, but it does
# change how well the mask fits the object.
#
# For our model we take, for each object, the best IoU any detection *of its class* reaches, once by
# box and once by mask. Objects between 0.5 and 0.75 are the ones that AP50 counts and AP75 does not.

# %%
def best_per_object(ious):
    """(G, D) -> (G,) the best IoU of each object over the detections (0 when there are none)."""
    return ious.max(dim=1).values if ious.shape[1] else torch.zeros(ious.shape[0])


best_box, best_mask = [], []
for det, tgt in zip(detections, targets):
    same_class = tgt["labels"][:, None] == det["labels"][None, :]  # (G, D)
    box_ious = box_iou(tgt["boxes"], det["boxes"]) * same_class  # (G, D)
    mask_ious = torch.from_numpy(pairwise_iou(tgt, det, "segm")).float() * same_class  # (G, D)
    assert box_ious.shape == mask_ious.shape == same_class.shape
    best_box.append(best_per_object(box_ious))
    best_mask.append(best_per_object(mask_ious))
best_box, best_mask = torch.cat(best_box), torch.cat(best_mask)  # (N_objects,) x2
assert best_box.shape == best_mask.shape == areas.shape
for name, best in (("box", best_box), ("mask", best_mask)):
    print(f"{name:<4}: best IoU >= 0.50 for {(best >= 0.5).float().mean():.0%} of the objects, "
          f">= 0.75 for {(best >= 0.75).float().mean():.0%}, median {best.median():.3f}")
print(f"AP50 - AP75: box {metrics['bbox']['AP50'] - metrics['bbox']['AP75']:.3f}, "
      f"mask {metrics['segm']['AP50'] - metrics['segm']['AP75']:.3f}")

# %%
fig, ax = plt.subplots(figsize=(8, 3.8), layout="constrained")
bins = np.linspace(0, 1, 41)
ax.hist(best_box.numpy(), bins=bins, histtype="step", linewidth=2, color="tab:blue", label="box IoU")
ax.hist(best_mask.numpy(), bins=bins, histtype="step", linewidth=2, color="tab:green", label="mask IoU")
ax.axvspan(0.5, 0.75, color="gold", alpha=0.2, label="counts for AP50, not for AP75")
for t in (0.5, 0.75):
    ax.axvline(t, color="gray", linestyle="--", linewidth=1)
ax.set(xlabel="best IoU of a same-class detection with the object", ylabel="objects",
       title="How tightly each held-out object is covered, by box and by mask")
ax.legend(fontsize=8, loc="upper left")
plt.show()

# %% [markdown]
# The mask histogram sits to the left of the box histogram, and mask AP75 falls further below mask AP50
# than box AP75 below box AP50. That alone does not show that the masks are placed worse than the boxes,
# because box IoU and mask IoU are on different scales: the shift of case A in section 1 (5 px right,
# 4 px down) gave box IoU 0.63 and mask IoU 0.51 (printed there). A mask IoU sits below the box IoU of the same
# placement and drops under 0.75 sooner, so part of the gap, maybe all of it, is the scale.
#
# The worst mask among well-placed boxes makes section 1's point on real data. Among the objects whose
# best same-class box has IoU ≥ 0.75, we take the one where that detection's mask IoU is lowest, and
# draw it in the colours of section 1. In our run it is a circle partly hidden behind another shape:
# the ground-truth mask is the visible crescent only, while the predicted mask paints much more than
# that. A box barely notices such a mistake, a mask IoU does.

# %%
worst = None
for i, (det, tgt) in enumerate(zip(detections, targets)):
    if not det["scores"].numel():
        continue
    same_class = tgt["labels"][:, None] == det["labels"][None, :]  # (G, D)
    box_ious = box_iou(tgt["boxes"], det["boxes"]) * same_class  # (G, D)
    mask_ious = torch.from_numpy(pairwise_iou(tgt, det, "segm")).float()  # (G, D)
    for g, d in enumerate(box_ious.argmax(dim=1).tolist()):  # the best-box detection of each object
        if box_ious[g, d] >= 0.75 and (worst is None or mask_ious[g, d] < worst[0]):
            worst = (float(mask_ious[g, d]), float(box_ious[g, d]), i, g, d)
mask_iou_w, box_iou_w, i, g, d = worst
det, tgt = detections[i], targets[i]
x1, y1, x2, y2 = (tgt["boxes"][g] + torch.tensor([-8.0, -8.0, 8.0, 8.0])).clamp(0, 128).int().tolist()
fig, axes = plt.subplots(1, 2, figsize=(8, 4))
axes[0].imshow(held_out[i][0].permute(1, 2, 0)[y1:y2, x1:x2].numpy(), extent=(x1, x2, y2, y1))
axes[0].set_title(f"held-out image {i} (crop)")
axes[1].imshow(overlap_image(tgt["masks"][g], det["masks"][d])[y1:y2, x1:x2], extent=(x1, x2, y2, y1))
draw_box(axes[1], tgt["boxes"][g], color="tab:blue", linestyle="--", linewidth=2)
draw_box(axes[1], det["boxes"][d], color="tab:orange", linewidth=1.5)
axes[1].set_title(f"{model.class_names[int(tgt['labels'][g])]}: box IoU {box_iou_w:.2f}, mask IoU {mask_iou_w:.2f}")
for ax in axes:
    ax.set(xlabel="x (pixels)", ylabel="y (pixels)")
fig.tight_layout()
fig.legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=9)
plt.show()

# %% [markdown]
# ## Summary
#
# - IoU is intersection over union, of boxes for box AP and of pixel masks for mask AP, the paper's
#   headline metric. A perfect box can hold a poor mask: two opposite triangles in one box have box IoU
#   1 and mask IoU 1/3 (ideally; on the pixel grid section 1 measured 0.94 and 0.33).
# - COCO AP for one class and one IoU threshold: sort by score, match greedily (each detection claims
#   the best free object with IoU ≥ t, and a duplicate is an FP), cumulative TP/FP, precision and recall,
#   the envelope (running maximum from the right), and the mean of the envelope at the 101 recall
#   points 0, 0.01, ..., 1. Then average over classes (AP50, AP75) and over the ten thresholds 0.50:0.95 (AP).
# - Our few short functions agree with pycocotools' `COCOeval` to 1e-6 on the nine-detection example
#   (AP50 0.8906, AP75 0.5653, AP 0.5488) and on the trained model's detections, boxes and masks.
#   COCOeval adds crowd regions and area-range ignores; the cap of 100 detections per image and class
#   is in ours too.
# - `eval["precision"]` is `[T, R, K, A, M]` = thresholds × recall points × classes × area ranges ×
#   detection caps. Every headline number is a mean over a slice of it, and -1 means "no objects here".
# - AP_S/AP_M/AP_L split by object area at 32² and 96² px². Our shapes are at most 48 px across, so
#   there are no large objects and AP_L is -1 (the library shows `nan`, printed "-").
# - AR (`stats[6:12]`) is the recall reached at the end of each ranked list, averaged over thresholds
#   and classes, at 1, 10 or 100 detections per image and class: no penalty for false positives.
# - Detections appended below a ranked list can never lower AP (the envelope), so inference keeps every
#   detection above 0.05, and AP falls as the score threshold rises; a picture draws only scores >= 0.5.
# - Per-class AP ranks a class's detections only against each other. The error kinds (Loc, Cls, BG, and
#   the missed objects) and COCO's curves with each kind removed in turn show what lowers one class's AP.
# - The AP50-AP75 gap is localisation. RoIAlign's gain in the paper is twice as large at AP75 as at
#   AP50. Box IoU and mask IoU are on different scales, so box and mask AP75 are not comparable as such.
#
# ## Exercises
#
# Worked solutions are in `solutions/11_evaluation.py` (for teachers). Each check cell says whether your
# answer is right.
#
# ### Exercise 1 — Predict · about 10 min: the kind of every detection of the tiny example
#
# Go back to the nine detections of section 2 (the picture and the table of 2a). At IoU threshold
# $t = 0.75$, give each of d1..d9 its kind of section 10: "TP", "Loc", "Cls" or "BG", and return them as
# a dict `{"d1": kind, ..., "d9": kind}` (each kind one of those four strings). Work it out by
# hand: the table gives each detection's best IoU with its own class; for the others, read the boxes
# off the listing of section 2 and work out the IoU you need. Don't call the library's
# `detection_errors` (or `box_iou`, `match_detections`): the check refuses them. Then say which of the
# false positives would stop being false at $t = 0.5$.
#
# *Hint:* take the kinds in order: a TP first (is its object still free?), then Loc (any object of its
# own class at IoU $\ge 0.1$?), then Cls, else BG. Only one detection needs an IoU by hand.

# %%
def my_tiny_kinds():
    """-> {"d1": kind, ..., "d9": kind} at IoU 0.75, each kind "TP", "Loc", "Cls" or "BG"."""
    raise NotImplementedError  # your code here


# %%
from mrcnn_teach.exercises.nb11 import check_ap, check_envelope_ap, check_error_kinds, check_tiny_kinds

check_tiny_kinds(my_tiny_kinds);

# %% [markdown]
# ### Exercise 2 — Predict · about 10 min: AP after appending low-scored detections
#
# A class has 3 objects, and its ranked detections are TP, FP, FP, TP (best score first). Work out on
# paper COCO's 101-point AP of this list (section 2c), then the AP after appending, below them, (a) two
# false positives, and (b) FP, FP, TP. Return the three numbers (before, after (a), after (b)). Use the
# three bullet points of section 6 ("AP against the score threshold") to explain why (a) leaves the AP
# unchanged and (b) raises it. Could any list of appended detections make the AP smaller?
#
# *Hint:* write down recall and precision after each rank, then the envelope, and count how many of the
# 101 recall points (0, 0.01, ..., 1) fall on each envelope value; points never reached read 0.

# %%
def my_envelope_ap():
    raise NotImplementedError  # your code here


# %%
check_envelope_ap(my_envelope_ap);

# %% [markdown]
# ### Exercise 3 — Derive · about 15 min: three ways to interpolate AP
#
# Write `my_ap(recall, precision, num_points)` for one class's `recall` and `precision` after each ranked
# detection (1-D numpy arrays, possibly empty: a class with objects but no detections has AP 0). With
# `num_points = 101` it must give COCO's AP (section 2c). With `num_points = 11` it must give PASCAL VOC
# 2007's AP, the same idea at recall 0, 0.1, ..., 1. These two are section 2's `envelope` and
# `interpolated_precision` with the recall points made a parameter, so the check refuses those helpers
# (and `precision_recall`, `coco_precision`): write the envelope and its reading yourself. What is new
# is `num_points = None`, the VOC 2010+ "all points" AP, the exact area under the envelope: the sum over
# the recall steps of (recall gained) × (envelope there). Compare the three on the squares of section 2:
# which one is the largest, and why?
#
# *Hint:* the envelope is the same for all three; only where it is read differs. For "all points", a
# false positive gains no recall, so it adds nothing.

# %%
def my_ap(recall, precision, num_points=101):
    raise NotImplementedError  # your code here


# %%
check_ap(my_ap);

# %% [markdown]
# ### Exercise 4 — Debug · about 15 min: error kinds that depend on the order of the list
#
# `buggy_error_kinds` below gives the kind of each detection of one image (codes 0 TP, 1 Loc, 2 Cls,
# 3 BG, as in section 10) from the IoU matrix of the image's detections against its objects, their
# scores and labels, and the threshold `t`. It is right on the model's output and on the tiny example,
# and wrong on a list of detections that arrives in another order. Find the bug and write the fixed
# `my_error_kinds` with the same arguments. The check compares it with the library's `detection_errors`
# on images whose detections come shuffled (and refuses a call to it).
#
# *Hint:* reread step 2 of section 2. In what order does the model return an image's detections?

# %%
def buggy_error_kinds(ious, scores, det_labels, gt_labels, t, low=0.1):
    """Kind of each detection of one image: 0 TP, 1 Loc, 2 Cls, 3 BG (evaluate.ERROR_TYPES).
    ious (D, G) detections x objects, scores (D,), det_labels (D,), gt_labels (G,); t the IoU threshold."""
    num_det, num_gt = ious.shape
    same = det_labels[:, None] == gt_labels[None, :]  # (D, G)
    claimed = torch.zeros(num_gt, dtype=torch.bool)  # (G,)
    tp = torch.zeros(num_det, dtype=torch.bool)  # (D,)
    for d in range(num_det if num_gt else 0):  # greedy matching: each detection claims the best free object
        free = torch.where(same[d] & ~claimed, ious[d], torch.full_like(ious[d], -1.0))  # (G,)
        if free.max() >= t:
            g = num_gt - 1 - int(free.flip(0).argmax())  # the best free object, the last one on a tie
            claimed[g] = tp[d] = True
    zero = torch.zeros_like(ious)  # (D, G)
    best_same = torch.where(same, ious, zero).amax(dim=1) if num_gt else zero.sum(1)  # (D,)
    best_other = torch.where(same, zero, ious).amax(dim=1) if num_gt else zero.sum(1)  # (D,)
    kinds = torch.full((num_det,), 3, dtype=torch.int64)  # (D,) BG unless something below holds
    kinds[best_other >= low] = 2  # Cls
    kinds[best_same >= low] = 1  # Loc
    kinds[tp] = 0  # TP
    return kinds


# %%
def my_error_kinds(ious, scores, det_labels, gt_labels, t, low=0.1):
    raise NotImplementedError  # your code here


# %%
check_error_kinds(my_error_kinds);

# %% [markdown]
# Next: [12 — Ablations](12_ablations.ipynb)
