"""Every bad input a user can give gets a clear answer: one table, one row per mistake.

Each row is the input (as the code a new user would write) and the words its error must contain:
which image, box, file or annotation, and what is wrong. A second table lists the inputs the
library repairs (it says so, once), a third the near-misses it must accept without a word.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json
import warnings
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import pytest
import torch
from PIL import Image

from mrcnn_teach import build_maskrcnn, cli, get_config, load_torchvision_weights, transform
from mrcnn_teach.checkpoint import FORMAT, load_checkpoint, model_from_checkpoint
from mrcnn_teach.datasets import CocoDetection, ShapesDataset, scale_jitter
from mrcnn_teach.evaluate import evaluate
from mrcnn_teach.train import TrainConfig, get_train_config, train

# ----------------------------------------------------------------------------- inputs

H, W = 48, 64  # a small image, wider than high (so (y, x) boxes stand out)
TINY_MODEL = dict(  # shapes_tiny shrunk: checks run before any real work, so the size hardly matters
    min_size=64, max_size=64, fpn_channels=32,
    rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50, rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20,
    rpn_batch_size_per_image=32, box_batch_size_per_image=32, representation_size=64,
    mask_head_channels=(32, 32), mask_dim_reduced=32, box_detections_per_img=10,
)


def image() -> torch.Tensor:
    return torch.rand(3, H, W, generator=torch.Generator().manual_seed(0))  # (3, H, W) in [0, 1)


def target(**changes) -> dict:
    """Two objects: a square-ish box and a wide box, with masks that fill them."""
    masks = torch.zeros(2, H, W, dtype=torch.uint8)  # (2, H, W)
    masks[0, 10:30, 12:40] = 1
    masks[1, 5:20, 40:60] = 1
    t = dict(boxes=torch.tensor([[12.0, 10.0, 40.0, 30.0], [40.0, 5.0, 60.0, 20.0]]),
             labels=torch.tensor([1, 2]), masks=masks)
    return {**t, **changes}


def boxes(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)  # (N, 4)


class Thing:  # a Python object: a safe (weights_only) torch.load refuses files holding one
    pass


class CliError(Exception):
    """`python -m mrcnn_teach ...` exited with an error; the message is what it printed on stderr."""


class Ctx:
    """What the rows need: a tiny model, a scratch directory, and (built on first use) a checkpoint."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.count = 0

    @cached_property
    def model(self):
        torch.manual_seed(0)
        return build_maskrcnn("shapes_tiny", **TINY_MODEL)

    def fresh(self, name: str) -> Path:
        self.count += 1
        path = self.tmp / f"{self.count}_{name}"
        path.mkdir()
        return path

    def train_on(self, images, targets):
        return self.model.train()(images, targets)

    def infer(self, images):
        with torch.no_grad():
            return self.model.eval()(images)

    def tiny_config(self, **changes) -> TrainConfig:
        values = dict(model="shapes_tiny", model_overrides=TINY_MODEL, train_images=4, val_images=2, image_size=64,
                      batch_size=2, epochs=1, warmup_steps=1, workers=0, device="cpu")
        return TrainConfig(**{**values, **changes})

    @cached_property
    def checkpoint(self) -> Path:
        """A real checkpoint: one training step of the tiny model on 64-px shapes."""
        out = self.tmp / "run"
        train(self.tiny_config(max_steps=1), out, evaluate=False, quiet=True)
        return out / "checkpoint.pt"

    def edited_checkpoint(self, name: str, edit: Callable[[dict], Any]) -> Path:
        ckpt = load_checkpoint(self.checkpoint)
        edit(ckpt)
        path = self.tmp / name
        torch.save(ckpt, path)
        return path

    def file(self, name: str, data: bytes | str | None = None, save: Any = None) -> Path:
        path = self.tmp / name
        if save is not None:
            torch.save(save, path)
        elif isinstance(data, str):
            path.write_text(data)
        else:
            path.write_bytes(data)
        return path

    def png(self, folder: Path, name: str, h: int = H, w: int = W) -> Path:
        pixels = np.random.default_rng(0).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name)
        return folder / name

    def truncated(self, path: Path) -> Path:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return path

    # -- COCO: a directory with images/a.png (id 1) and images/b.png (id 2), 5 annotations
    def coco(self, edit: Callable[[dict], Any] | None = None, text: str | None = None,
             files: Callable[[Path], Any] | None = None, load: int | None = None, **kwargs):
        root = self.fresh("coco")
        (root / "images").mkdir()
        self.png(root / "images", "a.png", 32, 40)
        self.png(root / "images", "b.png", 20, 30)
        anns = copy.deepcopy(COCO)
        if edit is not None:
            edit(anns)
        (root / "annotations.json").write_text(text if text is not None else json.dumps(anns))
        if files is not None:
            files(root / "images")
        dataset = CocoDetection(root / "images", root / "annotations.json", **kwargs)
        return dataset if load is None else dataset[load]

    def cli(self, *argv) -> int:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = cli.main([str(a) for a in argv])
            except SystemExit as exit:  # argparse's own errors
                code = exit.code
        if code != 0:
            raise CliError(err.getvalue())
        return code


COCO = {
    "images": [{"id": 1, "file_name": "a.png", "height": 32, "width": 40},
               {"id": 2, "file_name": "b.png", "height": 20, "width": 30}],
    "categories": [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}],
    "annotations": [
        {"id": 5, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 8], "iscrowd": 0, "area": 80.0,
         "segmentation": [[2, 2, 12, 2, 12, 10, 2, 10]]},
        {"id": 6, "image_id": 1, "category_id": 3, "bbox": [20, 10, 10, 10], "iscrowd": 0,
         "segmentation": {"size": [32, 40], "counts": [20 * 32 + 10] + [10, 22] * 9 + [10, 1280 - 650 - 100 - 198]}},
        {"id": 7, "image_id": 2, "category_id": 3, "bbox": [1, 1, 5, 5], "iscrowd": 0,
         "segmentation": [[1, 1, 6, 1, 6, 6, 1, 6]]},
    ],
}


def _edit(section: str, entry_id: int, changes: dict) -> Callable[[dict], None]:
    """An edit of annotations.json: entry `entry_id` of `section` gets `changes` (DROP removes a key)."""
    def apply(anns):
        entry = next(e for e in anns[section] if e["id"] == entry_id)
        entry.update(changes)
        for key in [k for k, v in changes.items() if v is DROP]:
            del entry[key]
    return apply


def ann(ann_id: int, **changes) -> Callable[[dict], None]:
    return _edit("annotations", ann_id, changes)


def img(image_id: int, **changes) -> Callable[[dict], None]:
    return _edit("images", image_id, changes)


DROP = object()  # ann(5, segmentation=DROP): the key is removed
A5 = "image id 1 (file 'a.png'), annotation id 5"  # how COCO errors name their culprit


def fasterrcnn_state() -> dict:
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    return fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3).state_dict()


def torchvision_state(num_classes: int = 3) -> dict:
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    return maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=num_classes).state_dict()


# ----------------------------------------------------------------------------- the table

class Row(NamedTuple):
    input: str  # the mistake, as a new user would make it
    run: Callable[[Ctx], Any]
    error: type[BaseException] | tuple[type[BaseException], ...]
    words: tuple[str, ...]  # each must appear in the message


BAD_INPUTS = [
    # --- images
    Row("an empty image list", lambda c: c.infer([]), ValueError, ("empty list of images",)),
    Row("one (3, H, W) tensor instead of a list", lambda c: c.infer(image()), TypeError, ("list of (3, H, W)", "[image]")),
    Row("one (B, 3, H, W) batch", lambda c: c.infer(image()[None]), TypeError, ("list(batch)",)),
    Row("a generator of images", lambda c: c.infer(x for x in [image()]), TypeError, ("generator",)),
    Row("a numpy image", lambda c: c.infer([image(), image().numpy()]), TypeError, ("image 1", "torch.Tensor", "ndarray")),
    Row("an (H, W, 3) image", lambda c: c.infer([image(), image().permute(1, 2, 0)]), ValueError,
        ("image 1", "(3, H, W)", "(48, 64, 3)")),
    Row("a grey (1, H, W) image", lambda c: c.infer([image(), image()[:1]]), ValueError, ("image 1", "(1, 48, 64)")),
    Row("a uint8 image", lambda c: c.infer([image(), (image() * 255).byte()]), TypeError,
        ("image 1", "torch.uint8", "/ 255")),
    Row("a 0x0 image", lambda c: c.infer([image(), torch.rand(3, 0, 0)]), ValueError, ("image 1", "no pixels")),
    Row("a 0-pixel-high image", lambda c: c.infer([torch.rand(3, 0, 7)]), ValueError, ("image 0", "no pixels")),
    Row("a 1x300 sliver (max_size=64)", lambda c: c.infer([image(), torch.rand(3, 1, 300)]), ValueError,
        ("image 1", "300x1", "max_size=64", "under 1 pixel")),
    Row("NaN pixels", lambda c: c.infer([image(), image().index_fill(1, torch.tensor([5]), float("nan"))]),
        ValueError, ("image 1", "192 pixel value(s) are NaN or infinite", "channel 0, y=5, x=0")),
    Row("an infinite pixel", lambda c: c.infer([image().index_put((torch.tensor([2]), torch.tensor([3]),
                                                                    torch.tensor([4])), torch.tensor(float("inf"))),
                                                image()]),
        ValueError, ("image 0", "1 pixel value(s)", "channel 2, y=3, x=4")),
    Row("a float image in 0..255", lambda c: c.infer([image(), image() * 255]), ValueError,
        ("image 1", "pixel values reach", "divide it by 255")),
    Row("an image normalised by the user", lambda c: c.infer([image(), (image() - 0.45) / 0.225]), ValueError,
        ("image 1", "do not normalise", "image_mean")),
    Row("an image on another device", lambda c: c.infer([image(), image().to("meta")]), ValueError,
        ("image 1", "on meta", "model is on cpu")),
    # --- targets
    Row("train mode without targets", lambda c: c.train_on([image()], None), ValueError, ("needs targets",)),
    Row("one target dict instead of a list", lambda c: c.train_on([image()], target()), TypeError, ("[target]",)),
    Row("fewer targets than images", lambda c: c.train_on([image(), image()], [target()]), ValueError,
        ("2 images but 1 targets",)),
    Row("a target that is a list", lambda c: c.train_on([image(), image()], [target(), [target()["boxes"]]]),
        TypeError, ("image 1", "must be a dict", "list")),
    Row("a target without masks", lambda c: c.train_on([image()], [{"boxes": target()["boxes"],
                                                                    "labels": target()["labels"]}]),
        ValueError, ("image 0", "no 'masks'")),
    Row("boxes as a Python list", lambda c: c.train_on([image()], [target(boxes=[[12.0, 10.0, 40.0, 30.0]])]),
        TypeError, ("image 0", "target['boxes']", "torch.Tensor", "list")),
    Row("one box as a (4,) tensor", lambda c: c.train_on([image()], [target(boxes=torch.tensor([12.0, 10, 40, 30]))]),
        ValueError, ("image 0", "(N, 4)", "(4,)")),
    Row("integer boxes", lambda c: c.train_on([image()], [target(boxes=target()["boxes"].long())]), ValueError,
        ("image 0", "float tensor", "torch.int64")),
    Row("a NaN box", lambda c: c.train_on([image()], [target(boxes=boxes([12, 10, 40, 30], [40, 5, float("nan"), 20]))]),
        ValueError, ("image 0, box 1", "non-finite")),
    Row("(x, y, w, h) boxes", lambda c: c.train_on([image()], [target(boxes=boxes([12, 10, 28, 20], [40, 5, 20, 15]))]),
        ValueError, ("image 0, box 1", "x2 <= x1", "(x, y, w, h)")),
    Row("boxes for the image at twice the size", lambda c: c.train_on(
        [image()], [target(boxes=target()["boxes"] * 2)]), ValueError,
        ("image 0, box 0", "[24.0, 20.0, 80.0, 60.0]", "64x48 image", "1.88x the image size", "resized")),
    Row("(y1, x1, y2, x2) boxes", lambda c: c.train_on([image()], [target(boxes=target()["boxes"][:, [1, 0, 3, 2]])]),
        ValueError, ("image 0, box 1", "64x48", "(y1, x1, y2, x2)")),
    Row("a box right of the image", lambda c: c.train_on([image()], [target(boxes=boxes([12, 10, 40, 30], [70, 5, 90, 20]))]),
        ValueError, ("image 0, box 1", "[70.0, 5.0, 90.0, 20.0]", "outside the 64x48 image")),
    Row("a box with negative x", lambda c: c.train_on([image()], [target(boxes=boxes([-20, 10, 40, 30], [40, 5, 60, 20]))]),
        ValueError, ("image 0, box 0", "by more than 1 px", "clip")),
    Row("a thin box just past the right edge", lambda c: c.train_on(
        [image()], [target(boxes=boxes([12, 10, 40, 30], [64.2, 5, 64.8, 20]))]), ValueError,
        ("image 0, box 1", "no part of it is inside")),
    Row("normalised boxes", lambda c: c.train_on([image()], [target(boxes=target()["boxes"] / torch.tensor([W, H, W, H]))]),
        ValueError, ("image 0", "within [0, 1]", "not normalised", "(64, 48, 64, 48)")),
    Row("labels as float", lambda c: c.train_on([image()], [target(labels=torch.tensor([1.0, 2.0]))]), ValueError,
        ("image 0", "labels must be int64", "torch.float32")),
    Row("label 0 (background) for an object", lambda c: c.train_on([image()], [target(labels=torch.tensor([0, 2]))]),
        ValueError, ("image 0, object 0", "label 0", "0 is background")),
    Row("label >= num_classes", lambda c: c.train_on([image()], [target(labels=torch.tensor([1, 4]))]), ValueError,
        ("image 0, object 1", "label 4", "num_classes=4")),
    Row("one mask fewer than boxes", lambda c: c.train_on([image()], [target(masks=target()["masks"][:1])]), ValueError,
        ("image 0", "masks must have shape (2, 48, 64)", "(1, 48, 64)")),
    Row("masks of the resized image", lambda c: c.train_on([image()], [target(masks=target()["masks"][:, ::2, ::2])]),
        ValueError, ("image 0", "(2, 24, 32)")),
    Row("0/255 masks read from a PNG", lambda c: c.train_on([image()], [target(masks=target()["masks"] * 255)]),
        ValueError, ("image 0", "0 and 1", "255", "mask > 0")),
    Row("a crowd region in training", lambda c: c.train_on([image()], [target(iscrowd=torch.tensor([0, 1]))]),
        ValueError, ("image 0, object 1", "iscrowd=1", "does not train on crowds")),
    Row("targets on another device", lambda c: c.train_on([image()], [target(masks=target()["masks"].to("meta"))]),
        ValueError, ("image 0", "target['masks'] is on meta")),
    # --- model configs
    Row("num_classes=0", lambda c: build_maskrcnn("shapes_tiny", num_classes=0), ValueError,
        ("num_classes=0", "int >= 2", "background")),
    Row("num_classes=1 (forgot the background)", lambda c: build_maskrcnn("shapes_tiny", num_classes=1), ValueError,
        ("num_classes=1", "num_classes=2")),
    Row("num_classes=2.5", lambda c: build_maskrcnn("shapes_tiny", num_classes=2.5), ValueError, ("num_classes=2.5",)),
    Row("min_size=0", lambda c: build_maskrcnn("shapes_tiny", min_size=0), ValueError, ("min_size=0", "positive int")),
    Row("min_size=() (no scale to draw)", lambda c: build_maskrcnn("shapes_tiny", min_size=()), ValueError, ("min_size=()",)),
    Row("max_size='big'", lambda c: build_maskrcnn("shapes_tiny", max_size="big"), ValueError, ("max_size='big'",)),
    Row("image_std with a zero", lambda c: build_maskrcnn("shapes_tiny", image_std=(0.2, 0.0, 0.2)), ValueError,
        ("image_std", "3 positive numbers")),
    Row("4 anchor levels for 5 pyramid levels", lambda c: build_maskrcnn(
        "shapes_tiny", anchor_sizes=((8,), (16,), (32,), (64,))), ValueError, ("anchor_sizes", "P2..P6")),
    Row("an anchor size per level not in a tuple", lambda c: build_maskrcnn(
        "shapes_tiny", anchor_sizes=(8, 16, 32, 64, 128)), ValueError, ("anchor_sizes", "non-empty tuples")),
    Row("box_nms_thresh=50 (a percentage)", lambda c: build_maskrcnn("shapes_tiny", box_nms_thresh=50), ValueError,
        ("box_nms_thresh=50", "[0, 1]")),
    Row("box_positive_fraction=0", lambda c: build_maskrcnn("shapes_tiny", box_positive_fraction=0), ValueError,
        ("box_positive_fraction", "(0, 1]")),
    Row("mask_head_channels=()", lambda c: build_maskrcnn("shapes_tiny", mask_head_channels=()), ValueError,
        ("mask_head_channels",)),
    Row("a misspelt config key", lambda c: build_maskrcnn("shapes_tiny", num_class=3), ValueError,
        ("unknown override(s) ['num_class']", "num_classes")),
    Row("an unknown config name", lambda c: get_config("resnet18_fpn"), ValueError, ("unknown config 'resnet18_fpn'",)),
    Row("depth=42", lambda c: build_maskrcnn("shapes_tiny", depth=42), ValueError, ("depth", "42")),
    # --- training configs
    Row("epochs='abc'", lambda c: get_train_config("shapes_tiny", epochs="abc"), ValueError, ("epochs must be an int", "'abc'")),
    Row("epochs=0", lambda c: get_train_config("shapes_tiny", epochs=0), ValueError, ("epochs must be >= 1",)),
    Row("lr=None", lambda c: get_train_config("shapes_tiny", lr=None), ValueError, ("lr must be a number",)),
    Row("amp='yes'", lambda c: get_train_config("shapes_tiny", amp="yes"), ValueError, ("amp must be True or False",)),
    Row("model_overrides=3", lambda c: get_train_config("shapes_tiny", model_overrides=3), ValueError,
        ("model_overrides must be a dict",)),
    Row("milestones=0.5", lambda c: get_train_config("shapes_tiny", milestones=0.5), ValueError,
        ("milestones must be a tuple",)),
    Row("train_images=0", lambda c: get_train_config("shapes_tiny", train_images=0), ValueError, ("train_images must be >= 1",)),
    Row("gamma=0", lambda c: get_train_config("shapes_tiny", gamma=0.0), ValueError, ("gamma must be in (0, 1]",)),
    Row("scale_jitter=(2, 0.5) (reversed)", lambda c: get_train_config("shapes_tiny", scale_jitter=(2.0, 0.5)), ValueError,
        ("scale_jitter must be (min, max) with 0 < min <= max", "(2.0, 0.5)")),
    Row("scale_jitter=0.5 (one number)", lambda c: get_train_config("shapes_tiny", scale_jitter=0.5), ValueError,
        ("scale_jitter must be None or two numbers (min, max)", "0.5")),
    Row("scale_jitter=(0, 2)", lambda c: get_train_config("shapes_tiny", scale_jitter=(0, 2)), ValueError,
        ("scale_jitter must be (min, max) with 0 < min <= max",)),
    Row("an unknown TrainConfig field", lambda c: get_train_config("shapes_tiny", learning_rate=0.1), ValueError,
        ("unknown TrainConfig field(s) ['learning_rate']",)),
    Row("num_classes in model_overrides that the data contradicts", lambda c: train(
        c.tiny_config(model_overrides={**TINY_MODEL, "num_classes": 3}), c.tmp / "nc", evaluate=False, quiet=True),
        ValueError, ("num_classes=3", "4 classes", "leave num_classes out")),
    Row("evaluating an empty dataset", lambda c: evaluate(c.model, []), ValueError, ("no images",)),
    # --- datasets and augmentation
    Row("shapes size_range=(48, 12) (reversed)", lambda c: ShapesDataset(2, size_range=(48, 12)), ValueError,
        ("size_range must be two numbers (min, max) with 1 <= min <= max", "(48, 12)")),
    Row("shapes size_range=24 (one number)", lambda c: ShapesDataset(2, size_range=24), ValueError,
        ("size_range must be", "got 24")),
    Row("scale jitter of a target with keypoints", lambda c: scale_jitter(
        image(), {**target(), "keypoints": torch.zeros(1, 17, 3)}, 1.5), ValueError,
        ("does not know how to resize target entries ['keypoints']",)),
    Row("scale jitter by 0", lambda c: scale_jitter(image(), target(), 0.0), ValueError,
        ("scale must be a positive number", "0.0")),
    Row("scale jitter of an (H, W) image", lambda c: scale_jitter(image()[0], None, 1.5), ValueError,
        ("image must be (C, H, W)", "(48, 64)")),
    # --- weight files (torchvision's Mask R-CNN weights)
    Row("a weights file that does not exist", lambda c: load_torchvision_weights(c.model, c.tmp / "nope.pth"),
        FileNotFoundError, ("nope.pth",)),
    Row("a truncated weights file", lambda c: load_torchvision_weights(
        c.model, c.truncated(c.file("half.pth", save=c.model.state_dict()))), ValueError,
        ("half.pth", "truncated or corrupt")),
    Row("an image given as weights", lambda c: load_torchvision_weights(c.model, c.png(c.tmp, "w.png")), ValueError,
        ("w.png", "not a file written by torch.save")),
    Row("a pickled Python object as weights", lambda c: load_torchvision_weights(
        c.model, c.file("obj.pth", save={"x": Thing()})), ValueError, ("obj.pth", "Python objects")),
    Row("a file holding a list", lambda c: load_torchvision_weights(c.model, c.file("list.pth", save=[1, 2])),
        ValueError, ("list.pth", "holds a list, not a state dict")),
    Row("a state dict with non-tensor values", lambda c: load_torchvision_weights(c.model, {"epoch": 3}), ValueError,
        ("the given state dict is not a state dict", "['epoch']", "not tensors")),
    Row("another network's weights", lambda c: load_torchvision_weights(
        c.model, c.file("resnet.pth", save={"conv1.weight": torch.zeros(1), "fc.bias": torch.zeros(1)})), KeyError,
        ("2 key(s) of", "resnet.pth", "no counterpart", "conv1.weight")),
    Row("Faster R-CNN weights (no mask head)", lambda c: load_torchvision_weights(
        build_maskrcnn("resnet50_fpn", num_classes=3), fasterrcnn_state()), KeyError,
        ("no mask head", "missing", "roi_heads.mask_head")),
    Row("weights for 5 classes into a 3-class model", lambda c: load_torchvision_weights(
        build_maskrcnn("resnet50_fpn", num_classes=3), torchvision_state(num_classes=5)), ValueError,
        ("shape mismatch", "cls_score.weight", "(5, 1024)", "(3, 1024)")),
    Row("an mrcnn_teach checkpoint given as torchvision weights", lambda c: load_torchvision_weights(
        c.model, c.checkpoint), ValueError, ("checkpoint.pt", "is an mrcnn_teach checkpoint", "model_from_checkpoint")),
    # --- checkpoints
    Row("a checkpoint that does not exist", lambda c: load_checkpoint(c.tmp / "nope.pt"), FileNotFoundError,
        ("checkpoint not found", "nope.pt")),
    Row("a run directory without checkpoint.pt", lambda c: load_checkpoint(c.fresh("empty_run")), FileNotFoundError,
        ("empty_run/checkpoint.pt",)),
    Row("a truncated checkpoint", lambda c: load_checkpoint(c.truncated(c.file("t.pt", c.checkpoint.read_bytes()))),
        ValueError, ("t.pt", "not a readable mrcnn_teach checkpoint", "truncated or corrupt")),
    Row("an empty checkpoint file", lambda c: load_checkpoint(c.file("zero.pt", b"")), ValueError,
        ("zero.pt", "not a file written by torch.save")),
    Row("a text file as checkpoint", lambda c: load_checkpoint(c.file("notes.pt", "hello")), ValueError,
        ("notes.pt", "not a file written by torch.save")),
    Row("a checkpoint holding Python objects", lambda c: load_checkpoint(c.file("obj.pt", save={"x": Thing()})),
        ValueError, ("obj.pt", "Python objects", "weights_only=True")),
    Row("torchvision weights as a checkpoint", lambda c: load_checkpoint(
        c.file("tv.pt", save={"backbone.body.conv1.weight": torch.zeros(1)})), ValueError,
        ("tv.pt", "not an mrcnn_teach checkpoint", "load_torchvision_weights")),
    Row("a checkpoint of another format", lambda c: load_checkpoint(c.file("other.pt", save={"epoch": 3})), ValueError,
        ("other.pt", "not an mrcnn_teach checkpoint")),
    Row("a checkpoint missing entries", lambda c: load_checkpoint(c.file("part.pt", save={"format": FORMAT})),
        ValueError, ("part.pt", "lacks", "'model'")),
    Row("a checkpoint whose weights are of another model", lambda c: model_from_checkpoint(c.edited_checkpoint(
        "other_model.pt", lambda ck: ck["model_config"].update(num_classes=6))), ValueError,
        ("other_model.pt", "do not fit this model", "cls_score")),
    Row("resuming a run of another model", lambda c: train(c.tiny_config(), c.tmp / "r1", resume=c.edited_checkpoint(
        "resnet.pt", lambda ck: ck.update(model_name="resnet50_fpn")), evaluate=False, quiet=True), ValueError,
        ("resnet.pt", "of model 'resnet50_fpn'", "'shapes_tiny'")),
    Row("resuming a run trained on other classes", lambda c: train(c.tiny_config(), c.tmp / "r2", resume=c.edited_checkpoint(
        "cats.pt", lambda ck: ck.update(class_names=["background", "cat", "dog", "cow"])), evaluate=False, quiet=True),
        ValueError, ("cats.pt", "trained on classes", "'cat'", "'square'")),
    # --- COCO annotation files: structure
    Row("annotations.json that is not JSON", lambda c: c.coco(text='{"images": [}'), ValueError,
        ("annotations.json", "not valid JSON", "line 1, column 13")),
    Row("annotations.json in Latin-1", lambda c: c.coco(files=lambda d: (d.parent / "annotations.json").write_bytes(
        b'{"images": "caf\xe9"}')), ValueError, ("annotations.json", "not a UTF-8 text file")),
    Row("annotations.json holding a list", lambda c: c.coco(text="[]"), ValueError, ("annotations.json", "JSON list")),
    Row("no 'images' list", lambda c: c.coco(lambda a: a.pop("images")), ValueError, ("annotations.json", "no 'images'")),
    Row("'annotations' not a list", lambda c: c.coco(lambda a: a.update(annotations={})), ValueError,
        ("annotations.json", "'annotations' must be a list")),
    Row("no images listed", lambda c: c.coco(lambda a: a.update(images=[], annotations=[])), ValueError,
        ("annotations.json", "lists no images")),
    Row("no categories listed", lambda c: c.coco(lambda a: a.update(categories=[])), ValueError,
        ("annotations.json", "lists no categories")),
    Row("an image without a height", lambda c: c.coco(img(2, height=DROP)), ValueError,
        ("annotations.json", "images[1] (id 2)", "no 'height'")),
    Row("an image id given as a string", lambda c: c.coco(img(2, id="2")), ValueError,
        ("images[1] (id '2')", "'id' must be an int")),
    Row("an image of width 0", lambda c: c.coco(img(1, width=0)), ValueError, ("images[0] (id 1)", "'width'", "positive")),
    Row("two images with one id", lambda c: c.coco(img(2, id=1)), ValueError,
        ("annotations.json", "images[1]", "id 1 is used twice", "images[0]")),
    Row("two annotations with one id", lambda c: c.coco(ann(7, id=5)), ValueError,
        ("annotations[2]", "id 5 is used twice")),
    Row("a category without a name", lambda c: c.coco(lambda a: a["categories"][1].pop("name")), ValueError,
        ("categories[1] (id 3)", "no 'name'")),
    Row("an annotation without an id", lambda c: c.coco(ann(7, id=DROP)), ValueError, ("annotations[2]", "no 'id'")),
    Row("an annotation without image_id", lambda c: c.coco(ann(6, image_id=DROP)), ValueError,
        ("annotations[1] (id 6)", "no 'image_id'")),
    Row("an annotation of an unknown image", lambda c: c.coco(ann(6, image_id=9)), ValueError,
        ("annotation id 6", "image_id 9", "not in the file's images")),
    Row("an unknown category", lambda c: c.coco(ann(5, category_id=2)), ValueError, (A5, "unknown category_id 2")),
    # --- COCO annotations: boxes, flags, segmentations
    Row("a bbox of strings", lambda c: c.coco(ann(5, bbox=["2", "2", "10", "8"])), ValueError,
        (A5, "bbox must be [x, y, w, h]")),
    Row("a NaN bbox", lambda c: c.coco(ann(5, bbox=[2, 2, float("nan"), 8])), ValueError, (A5, "non-finite")),
    Row("a bbox of height 0", lambda c: c.coco(ann(5, bbox=[2, 2, 10, 0])), ValueError, (A5, "non-positive")),
    Row("a bbox in x1y1x2y2 past the image", lambda c: c.coco(ann(5, bbox=[30, 2, 38, 8])), ValueError,
        (A5, "outside the 40x32 image")),
    Row("a bbox entirely right of the image", lambda c: c.coco(ann(5, bbox=[45, 2, 5, 8])), ValueError,
        (A5, "outside the 40x32 image")),
    Row("iscrowd=2", lambda c: c.coco(ann(5, iscrowd=2)), ValueError, (A5, "iscrowd must be 0 or 1")),
    Row("a negative area", lambda c: c.coco(ann(5, area=-1)), ValueError, (A5, "area must be a number >= 0")),
    Row("no segmentation (a detection-only file)", lambda c: c.coco(ann(5, segmentation=DROP)), ValueError,
        (A5, "has no segmentation")),
    Row("a segmentation that is a string", lambda c: c.coco(ann(5, segmentation="mask.png")), ValueError,
        (A5, "polygon list or an RLE dict")),
    Row("a polygon of 2 points", lambda c: c.coco(ann(5, segmentation=[[2, 2, 12, 2]])), ValueError,
        (A5, "polygon 0", "got 4")),
    Row("a polygon with a string coordinate", lambda c: c.coco(ann(5, segmentation=[[2, 2, 12, "2", 12, 10]]), load=0),
        ValueError, (A5, "polygon 0", "not finite numbers", "'2'")),
    Row("a polygon with a null coordinate", lambda c: c.coco(ann(5, segmentation=[[2, 2, 12, None, 12, 10]]), load=0),
        ValueError, (A5, "polygon 0", "None")),
    Row("an RLE without counts", lambda c: c.coco(ann(6, segmentation={"size": [32, 40]})), ValueError,
        ("annotation id 6", "'size' and 'counts'")),
    Row("an RLE whose size is a number", lambda c: c.coco(ann(6, segmentation={"size": 32, "counts": [1280]})),
        ValueError, ("annotation id 6", "RLE size 32", "[32, 40]")),
    Row("an RLE of the image transposed", lambda c: c.coco(ann(6, segmentation={"size": [40, 32], "counts": [1280]})),
        ValueError, ("annotation id 6", "RLE size [40, 32]")),
    Row("uncompressed RLE counts that do not add up", lambda c: c.coco(ann(6, segmentation={"size": [32, 40],
                                                                                           "counts": [100, 20]})),
        ValueError, ("annotation id 6", "sum to height*width = 1280", "got sum 120")),
    Row("uncompressed RLE counts of strings", lambda c: c.coco(ann(6, segmentation={"size": [32, 40],
                                                                                   "counts": ["1280"]})),
        ValueError, ("annotation id 6", "must be integers")),
    Row("a compressed RLE string cut short", lambda c: c.coco(ann(6, segmentation={"size": [32, 40], "counts": "P"}),
                                                              load=0),
        ValueError, ("image id 1 (file 'a.png'), annotation id 6", "cannot be decoded", "middle of a count")),
    Row("a compressed RLE string with non-ASCII", lambda c: c.coco(ann(6, segmentation={"size": [32, 40],
                                                                                       "counts": "\u00e9"}), load=0),
        ValueError, ("annotation id 6", "cannot be decoded", "ascii")),
    Row("a compressed RLE of the wrong total", lambda c: c.coco(ann(6, segmentation={"size": [32, 40], "counts": "1"}),
                                                                load=0),
        ValueError, ("annotation id 6", "sum to height*width = 1280")),
    # --- COCO images
    Row("an annotation file that does not exist", lambda c: CocoDetection(c.tmp, c.tmp / "nope.json"),
        FileNotFoundError, ("nope.json",)),
    Row("an image directory that does not exist", lambda c: CocoDetection(c.tmp / "no_dir", c.tmp / "x.json"),
        FileNotFoundError, ("no_dir",)),
    Row("an image file that is missing", lambda c: c.coco(files=lambda d: (d / "a.png").unlink(), load=0),
        FileNotFoundError, ("image id 1 (file 'a.png')", "does not exist")),
    Row("a truncated image file", lambda c: c.coco(files=lambda d: c.truncated(d / "a.png"), load=0), ValueError,
        ("image id 1 (file 'a.png')", "cannot read image file", "a.png")),
    Row("a truncated JPEG", lambda c: c.coco(img(1, file_name="a.jpg"), files=lambda d: c.truncated(
        (Image.open(d / "a.png").save(d / "a.jpg", quality=95), d / "a.jpg")[1]), load=0), ValueError,
        ("image id 1 (file 'a.jpg')", "cannot read image file", "truncated")),
    Row("a text file named .png", lambda c: c.coco(files=lambda d: (d / "b.png").write_text("pixels"), load=1),
        ValueError, ("image id 2 (file 'b.png')", "cannot read image file")),
    Row("an image of another size than the file says", lambda c: c.coco(img(2, height=21), load=1), ValueError,
        ("image id 2 (file 'b.png')", "30x20", "30x21")),
    Row("an invalid= mode", lambda c: c.coco(invalid="ignore"), ValueError, ("invalid must be 'raise' or 'skip'",)),
    # --- the command line
    Row("train without --out", lambda c: c.cli("train"), CliError, ("--out",)),
    Row("--config of a typo", lambda c: c.cli("train", "--config", "shapes", "--out", c.tmp / "x"), CliError,
        ("unknown training config 'shapes'",)),
    Row("--epochs abc", lambda c: c.cli("train", "--out", c.tmp / "x", "--epochs", "abc"), CliError,
        ("--epochs", "invalid int value: 'abc'")),
    Row("--set without =", lambda c: c.cli("train", "--out", c.tmp / "x", "--set", "epochs"), CliError,
        ("KEY=VALUE", "'epochs'")),
    Row("--set of an unknown field", lambda c: c.cli("train", "--out", c.tmp / "x", "--set", "learning_rate=1"), CliError,
        ("--set learning_rate", "not a TrainConfig field")),
    Row("--set epochs=ten", lambda c: c.cli("train", "--out", c.tmp / "x", "--set", "epochs=ten"), CliError,
        ("epochs must be an int", "'ten'")),
    Row("--set model_overrides with a bad value", lambda c: c.cli(
        "train", "--out", c.tmp / "x", "--device", "cpu", "--workers", "0", "--set", "model_overrides={'min_size': 0}"),
        CliError, ("min_size=0",)),
    Row("--device gpu", lambda c: c.cli("train", "--out", c.tmp / "x", "--device", "gpu"), CliError,
        ("--device 'gpu'", "cpu, cuda")),
    Row("--batch-size 0", lambda c: c.cli("train", "--out", c.tmp / "x", "--batch-size", "0"), CliError,
        ("batch_size must be >= 1",)),
    Row("--data of a folder of images", lambda c: c.cli("train", "--out", c.tmp / "x", "--data", c.tmp), CliError,
        ("images/ and annotations.json",)),
    Row("train into a run that exists", lambda c: c.cli("train", "--out", c.checkpoint.parent), CliError,
        ("checkpoint.pt exists", "--resume", "--overwrite")),
    Row("--resume of an image", lambda c: c.cli("train", "--resume", c.png(c.tmp, "r.png"), "--out", c.tmp / "y"),
        CliError, ("r.png", "not a file written by torch.save")),
    Row("--resume changing the learning rate", lambda c: c.cli("train", "--resume", c.checkpoint, "--lr", "0.5"),
        CliError, ("cannot change ['lr']",)),
    Row("--out inside a file", lambda c: c.cli("train", "--out", c.png(c.tmp, "f.png") / "run", "--device", "cpu",
                                               "--workers", "0", "--set", "train_images=2", "--set", "val_images=1",
                                               "--set", "image_size=64", "--set", f"model_overrides={TINY_MODEL!r}",
                                               "--max-steps", "1", "--no-eval"),
        CliError, ("f.png/run", "Not a directory")),
    Row("evaluate a checkpoint that does not exist", lambda c: c.cli("evaluate", "--checkpoint", c.tmp / "no.pt"),
        CliError, ("checkpoint not found", "no.pt")),
    Row("evaluate --batch-size 0", lambda c: c.cli("evaluate", "--checkpoint", "x.pt", "--batch-size", "0"), CliError,
        ("--batch-size must be >= 1",)),
    Row("evaluate on data with other classes", lambda c: c.cli(
        "evaluate", "--checkpoint", c.checkpoint, "--data", c.coco().image_dir.parent), CliError,
        ("--data has 2 classes", "['cat', 'dog']", "trained on 3")),
    Row("predict an image that does not exist", lambda c: c.cli("predict", "--checkpoint", "x.pt", c.tmp / "no.png",
                                                                "--out", c.tmp / "p"), CliError,
        ("image not found", "no.png")),
    Row("predict a folder", lambda c: c.cli("predict", "--checkpoint", "x.pt", c.fresh("pics"), "--out", c.tmp / "p"),
        CliError, ("pics is a directory",)),
    Row("predict a text file", lambda c: c.cli("predict", "--checkpoint", "x.pt", c.file("t.png", "text"),
                                               "--out", c.tmp / "p"), CliError, ("t.png", "not an image file")),
    Row("predict a truncated image", lambda c: c.cli("predict", "--checkpoint", "x.pt", c.truncated(c.png(c.tmp, "h.png")),
                                                     "--out", c.tmp / "p"), CliError, ("h.png",)),
    Row("predict two images of one name", lambda c: c.cli(
        "predict", "--checkpoint", "x.pt", c.png(c.tmp, "s.png"), c.png(c.fresh("other"), "s.png"), "--out", c.tmp / "p"),
        CliError, ("s.png", "would both be drawn to", "s.png")),
    Row("predict into the folder of its input", lambda c: c.cli("predict", "--checkpoint", "x.pt", c.png(c.tmp, "z.png"),
                                                                "--out", c.tmp), CliError,
        ("holds the input", "z.png", "overwrite the image")),
    Row("predict --score-thresh 50", lambda c: c.cli("predict", "--checkpoint", "x.pt", c.png(c.tmp, "q.png"),
                                                     "--out", c.tmp / "p", "--score-thresh", "50"),
        CliError, ("--score-thresh", "[0, 1]", "50")),
    Row("predict --out a file", lambda c: c.cli("predict", "--checkpoint", "x.pt", c.png(c.tmp, "k.png"),
                                                "--out", c.png(c.tmp, "o.png")), CliError, ("o.png is a file",)),
    Row("predict with a checkpoint that is not one", lambda c: c.cli(
        "predict", "--checkpoint", c.file("j.pt", b"junk"), c.png(c.tmp, "m.png"), "--out", c.tmp / "p"), CliError,
        ("j.pt", "not a readable mrcnn_teach checkpoint")),
    Row("an unknown command", lambda c: c.cli("fly"), CliError, ("invalid choice: 'fly'",)),
]


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return Ctx(tmp_path_factory.mktemp("bad_inputs"))


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(transform, "_WARNED", set())  # every test sees the once-per-process warnings


@pytest.mark.parametrize("row", BAD_INPUTS, ids=[row.input for row in BAD_INPUTS])
def test_bad_input_gets_a_clear_error(row, ctx):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an error must come alone, not after a warning
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        with pytest.raises(row.error) as info:
            row.run(ctx)
    message = str(info.value.args[0]) if isinstance(info.value, KeyError) else str(info.value)
    missing = [w for w in row.words if w not in message]
    assert not missing, f"{row.input}: the error lacks {missing}:\n{message}"


def test_table_has_no_duplicate_rows():
    names = [row.input for row in BAD_INPUTS]
    assert len(names) == len(set(names))


# ----------------------------------------------------------------------------- repaired, with a word

class Repair(NamedTuple):
    input: str
    run: Callable[[Ctx], Any]
    words: tuple[str, ...]  # each must appear in the one warning


REPAIRED = [
    Repair("a float64 image (numpy's default) for a float32 model",
           lambda c: c.infer([image(), image().double()]), ("image 1", "torch.float64", "torch.float32", "converted")),
    Repair("a float16 image for a float32 model", lambda c: c.infer([image().half()]), ("image 0", "torch.float16")),
    Repair("targets passed to a model in eval mode", lambda c: c.model.eval()([image()], [target()]),
           ("eval mode", "ignores the targets", "model.train()")),
    Repair("target keys the model does not read", lambda c: c.train_on([image()], [target(keypoints=torch.zeros(2, 17, 3))]),
           ("image 0", "['keypoints']", "not used")),
    Repair("invalid annotations with invalid='skip'", lambda c: c.coco(ann(5, bbox=[2, 2, 10, 0]), invalid="skip"),
           ("skipped 1 invalid annotation", A5, "non-positive")),
]


@pytest.mark.parametrize("row", REPAIRED, ids=[row.input for row in REPAIRED])
def test_repaired_input_is_announced_once(row, ctx):
    for attempt in range(2):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            row.run(ctx)
        ours = [w for w in caught if issubclass(w.category, UserWarning)]
        if attempt == 0 or "invalid=" in row.input:  # a dataset warns per dataset, the model once per process
            assert len(ours) == 1, [str(w.message) for w in ours]
            missing = [word for word in row.words if word not in str(ours[0].message)]
            assert not missing, f"{row.input}: the warning lacks {missing}: {ours[0].message}"
            assert ours[0].filename == __file__, "the warning should point at the caller's line"
        else:
            assert not ours, f"warned twice: {[str(w.message) for w in ours]}"


def test_a_float64_model_takes_float64_images_without_a_word():
    """tests/test_model_equivalence.py runs the model in float64 on purpose: nothing to repair there."""
    torch.manual_seed(0)
    model = build_maskrcnn("shapes_tiny", **TINY_MODEL).double().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            (out,) = model([image().double()])
    assert out["boxes"].dtype == torch.float64


def test_converted_image_gives_the_same_detections_as_a_float32_one(ctx):
    picture = image()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = ctx.infer([picture]), ctx.infer([picture.double()])
    assert torch.equal(a[0]["boxes"], b[0]["boxes"]) and torch.equal(a[0]["scores"], b[0]["scores"])


# ----------------------------------------------------------------------------- accepted without a word

ACCEPTED = [
    ("a box sticking out of the image by 1 px (rounding)",
     lambda c: c.train_on([image()], [target(boxes=boxes([-1, 10, 40, 30], [40, 5, 65, 20]))])),
    ("a box touching all four borders", lambda c: c.train_on([image()], [target(boxes=boxes([0, 0, 64, 48], [40, 5, 60, 20]))])),
    ("an image with no objects", lambda c: c.train_on([image()], [target(boxes=torch.zeros(0, 4),
                                                                         labels=torch.zeros(0, dtype=torch.int64),
                                                                         masks=torch.zeros(0, H, W, dtype=torch.uint8))])),
    ("bool masks", lambda c: c.train_on([image()], [target(masks=target()["masks"].bool())])),
    ("float masks in [0, 1]", lambda c: c.train_on([image()], [target(masks=target()["masks"].float() * 0.9)])),
    ("pixels ringing slightly past [0, 1] (bicubic resizing)",
     lambda c: c.infer([image() * 1.1 - 0.05])),
    ("a 1x1 image", lambda c: c.infer([torch.rand(3, 1, 1)])),
    ("a tuple of images", lambda c: c.infer((image(), image()))),
    ("the datasets' own extra target keys", lambda c: c.train_on(
        [image()], [target(image_id=torch.tensor(3), area=torch.tensor([560.0, 300.0]), iscrowd=torch.tensor([0, 0]))])),
    ("a ShapesDataset batch", lambda c: c.train_on(*map(list, zip(*[ShapesDataset(2, 64)[i] for i in range(2)])))),
    ("a COCO directory", lambda c: c.coco(load=0)),
    ("a bbox sticking out by 0.5 px in COCO", lambda c: c.coco(ann(5, bbox=[-0.5, 2, 10.5, 8]), load=0)),
]


@pytest.mark.parametrize("name, run", ACCEPTED, ids=[name for name, _ in ACCEPTED])
def test_near_miss_is_accepted_silently(name, run, ctx):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # pycocotools' own, on numpy 2
        run(ctx)


def test_path_objects_in_a_train_config_make_a_loadable_checkpoint(tmp_path):
    """A pathlib.Path would be pickled into the checkpoint and refused by the safe load."""
    cfg = TrainConfig(data=Path("/some/coco"), val_data=Path("/some/val"))
    assert cfg.data == "/some/coco" and cfg.val_data == "/some/val"
    torch.save({"train_config": dataclasses.asdict(cfg)}, tmp_path / "c.pt")
    torch.load(tmp_path / "c.pt", weights_only=True)
