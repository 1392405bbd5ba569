"""Fine-tuning from torchvision's COCO weights on another number of classes (notebook 13, section 5).

The file is torchvision's own layout (here from a randomly initialised maskrcnn_resnet50_fpn: nothing is
downloaded); the model has our class count. Every tensor that does not depend on the classes must come
from the file unchanged, and exactly the three predictor layers must keep the model's fresh weights.
"""

import pytest
import torch
from torchvision.models.detection import maskrcnn_resnet50_fpn

from mrcnn_teach import build_maskrcnn, load_torchvision_weights
from mrcnn_teach.datasets import example
from mrcnn_teach.train import get_train_config, train
from mrcnn_teach.weights import PREDICTOR_LAYERS, fine_tuning_builder, torchvision_key_to_ours

NUM_CLASSES = 4  # three object classes and background


@pytest.fixture(scope="module")
def coco_file(tmp_path_factory):
    """A COCO-layout weights file (91 classes) from a random torchvision model, and its state dict."""
    torch.manual_seed(0)
    state = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    path = tmp_path_factory.mktemp("weights") / "maskrcnn_resnet50_fpn_random.pth"
    torch.save(state, path)
    return path, state


def test_kept_layers_equal_the_file_and_predictors_are_fresh(coco_file):
    path, tv_state = coco_file
    torch.manual_seed(1)
    model = build_maskrcnn("resnet50_fpn", num_classes=NUM_CLASSES)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    load_torchvision_weights(model, path, new_predictors=True)
    ours = model.state_dict()
    fresh, kept = [], 0
    for tv_key, tv_value in tv_state.items():
        key = torchvision_key_to_ours(tv_key)
        if key.endswith("num_batches_tracked"):  # BatchNorm's step counter: frozen BN has none
            continue
        if key.rsplit(".", 1)[0] in PREDICTOR_LAYERS:
            fresh.append(key)
            assert torch.equal(ours[key], before[key]), f"{key} was overwritten"
        else:
            kept += 1
            assert torch.equal(ours[key], tv_value), f"{key} differs from the file's {tv_key}"
    shapes = {k: tuple(ours[k].shape) for k in fresh}
    assert shapes == {
        "roi_heads.box_predictor.cls_score.weight": (NUM_CLASSES, 1024),
        "roi_heads.box_predictor.cls_score.bias": (NUM_CLASSES,),
        "roi_heads.box_predictor.bbox_deltas.weight": (4 * NUM_CLASSES, 1024),
        "roi_heads.box_predictor.bbox_deltas.bias": (4 * NUM_CLASSES,),
        "roi_heads.mask_predictor.mask_logits.weight": (NUM_CLASSES, 256, 1, 1),
        "roi_heads.mask_predictor.mask_logits.bias": (NUM_CLASSES,),
    }
    assert kept == sum(not k.endswith("num_batches_tracked") for k in tv_state) - 6
    assert tuple(tv_state["roi_heads.box_predictor.cls_score.weight"].shape) == (91, 1024)  # COCO's 91


def test_other_class_count_is_refused_without_the_switch(coco_file):
    path, _ = coco_file
    with pytest.raises(ValueError) as err:
        load_torchvision_weights(build_maskrcnn("resnet50_fpn", num_classes=NUM_CLASSES), path)
    message = str(err.value)
    for words in ("cls_score.weight: file (91, 1024) vs model (4, 1024)", "mask_logits", "new_predictors=True"):
        assert words in message, message


def test_same_class_count_loads_everything(coco_file):
    path, tv_state = coco_file
    model = load_torchvision_weights(build_maskrcnn("resnet50_fpn"), path, new_predictors=True)
    ours = model.state_dict()
    assert all(torch.equal(ours[torchvision_key_to_ours(k)], v) for k, v in tv_state.items()
               if not k.endswith("num_batches_tracked"))


def test_a_mismatch_outside_the_predictors_is_still_refused(coco_file):
    path, tv_state = coco_file
    model = build_maskrcnn("resnet50_fpn", num_classes=NUM_CLASSES, representation_size=512)
    with pytest.raises(ValueError, match="box_head.fc1.weight"):
        load_torchvision_weights(model, tv_state, new_predictors=True)


@pytest.mark.slow
def test_fine_tuning_trains_and_resumes_from_the_file(coco_file, tmp_path):
    path, tv_state = coco_file
    data = example.write_coco_export(tmp_path / "data", num_images=6, seed=0)
    cfg = get_train_config("resnet50_fpn", data=str(data), val_images=2, batch_size=2, epochs=2, workers=0,
                           device="cpu", amp=False, warmup_steps=1, lr=0.005, max_steps=2,
                           model_overrides={"min_size": 96, "max_size": 128})
    build = fine_tuning_builder(path)
    result = train(cfg, tmp_path / "run", build=build, evaluate=False, quiet=True)
    assert result["step"] == 2
    ckpt = torch.load(result["checkpoint"], weights_only=True)
    weights = ckpt["model"]
    assert tuple(weights["roi_heads.box_predictor.cls_score.weight"].shape) == (NUM_CLASSES, 1024)
    # trainable_layers=3: the stem and res2 are frozen, so after training they still equal the file
    assert torch.equal(weights["backbone.body.stem.conv1.weight"], tv_state["backbone.body.conv1.weight"])
    assert torch.equal(weights["backbone.body.res2.0.conv1.weight"], tv_state["backbone.body.layer1.0.conv1.weight"])
    assert not torch.equal(weights["backbone.fpn.output.0.weight"], tv_state["backbone.fpn.layer_blocks.0.0.weight"])
    from mrcnn_teach.train import resume_config

    again = train(resume_config(ckpt, max_steps=3), tmp_path / "run", resume=result["checkpoint"], build=build,
                  evaluate=False, quiet=True)
    assert again["step"] == 3
