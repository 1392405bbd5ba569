"""The trainer: schedule values, exact resumption, atomic checkpoints, NaN stops, budgets, Ctrl-C.

Models are tiny (64-px images, a few channels) so every run is a handful of CPU-seconds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal

import numpy as np
import pytest
import torch
from torch import nn

from mrcnn_teach.checkpoint import (FORMAT, capture_rng_state, load_checkpoint, model_from_checkpoint,
                                    restore_rng_state, save_checkpoint)
from mrcnn_teach.datasets import RandomHorizontalFlip, ShapesDataset
from mrcnn_teach.train import (TrainConfig, Trainer, SeededTransforms, WarmupStepDecay, build_scheduler,
                               get_train_config, resume_config, train)

# shapes_tiny shrunk to 64-px images and a few channels.
TINY_MODEL = dict(
    min_size=64, max_size=64, fpn_channels=32,
    rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50, rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20,
    rpn_batch_size_per_image=32, box_batch_size_per_image=32, representation_size=64,
    mask_head_channels=(32, 32), mask_dim_reduced=32, box_detections_per_img=10,
)


def tiny_config(**changes) -> TrainConfig:
    """4 images, batch 2 -> 2 steps per epoch; 3 epochs -> 6 steps."""
    values = dict(model="shapes_tiny", model_overrides=TINY_MODEL, train_images=4, val_images=2, image_size=64,
                  batch_size=2, epochs=3, warmup_steps=2, milestones=(0.5, 0.8), workers=0, device="cpu")
    return TrainConfig(**{**values, **changes})


def read_log(path) -> list[dict]:
    return [json.loads(line) for line in open(path)]


class ToyModel(nn.Module):
    """Stand-in with the detection training contract: model(images, targets) -> dict of losses.

    On call `nan_at` (1-based) two of its terms turn non-finite; on call `sigint_at` it sends
    itself Ctrl-C in the middle of the forward pass; `sleep` slows each step down.
    """

    def __init__(self, nan_at=None, sigint_at=None, sleep=0.0):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, -0.5]))  # (2,)
        self.calls, self.nan_at, self.sigint_at, self.sleep = 0, nan_at, sigint_at, sleep

    def forward(self, images, targets):
        self.calls += 1
        if self.sigint_at == self.calls:
            os.kill(os.getpid(), signal.SIGINT)
        if self.sleep:
            import time

            time.sleep(self.sleep)
        x = torch.stack([img.mean() for img in images]).mean()  # ()
        losses = {"loss_classifier": (self.w[0] * x - 1) ** 2, "loss_box_reg": (self.w[1] * x) ** 2,
                  "loss_mask": (self.w.sum() * x) ** 2}
        if self.nan_at is not None and self.calls >= self.nan_at:
            losses["loss_box_reg"] = losses["loss_box_reg"] + float("inf")
            losses["loss_mask"] = losses["loss_mask"] * float("nan")
        return losses


def toy_factory(**kwargs):
    return lambda name, num_classes, **_: ToyModel(**kwargs)


# ----------------------------------------------------------------------------- learning rate


def test_linear_scaling_rule_scales_the_lr_with_the_total_batch(tmp_path, capsys, monkeypatch):
    from mrcnn_teach import train as train_module
    from mrcnn_teach.distributed import DistInfo
    from mrcnn_teach.train import scaled_lr

    # Goyal et al. 2017: lr 0.02 for 16 images; the resnet50_fpn preset takes 2 images per process.
    r50 = get_train_config("resnet50_fpn")
    assert (r50.lr, r50.lr_batch, r50.batch_size) == (0.02, 16, 2)
    assert [scaled_lr(r50, w) for w in (1, 2, 4, 8, 16)] == pytest.approx([0.0025, 0.005, 0.01, 0.02, 0.04])
    assert scaled_lr(dataclasses.replace(r50, batch_size=4), 4) == pytest.approx(0.02)  # 16 images again
    shapes = get_train_config("shapes_tiny")  # lr 0.02 for its own batch of 8: one process runs it as given
    assert scaled_lr(shapes, 1) == pytest.approx(0.02) and scaled_lr(shapes, 2) == pytest.approx(0.04)
    assert scaled_lr(dataclasses.replace(shapes, lr_batch=None), 8) == 0.02  # None: as given
    with pytest.raises(ValueError, match="lr_batch must be >= 1"):
        get_train_config("shapes_tiny", lr_batch=0)

    # The trainer's optimizer runs the scaled lr (before warm-up), for the world size it runs in, and says so.
    monkeypatch.setattr(train_module.dist_utils, "wrap_model", lambda model, info: model)  # no process group here
    for world_size in (1, 4):
        info = DistInfo(rank=0, world_size=world_size, local_rank=0, device=torch.device("cpu"))
        cfg = tiny_config(lr=0.02, lr_batch=16, warmup_steps=0)  # batch_size 2
        trainer = Trainer(cfg, tmp_path / f"w{world_size}", build=toy_factory(), info=info)
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.02 * world_size * 2 / 16)
        said = capsys.readouterr().out
        assert f"lr {0.02 * world_size * 2 / 16:g} = 0.02 x {world_size * 2} / 16 (linear scaling rule" in said




def test_lr_schedule_warmup_then_step_decay():
    schedule = WarmupStepDecay(total_steps=20, warmup_steps=4, warmup_factor=0.1, milestones=(0.5, 0.75), gamma=0.1)
    assert schedule.milestone_steps == [10, 15]
    expected = [0.1, 0.325, 0.55, 0.775] + [1.0] * 6 + [0.1] * 5 + [0.01] * 5
    assert [schedule(s) for s in range(20)] == pytest.approx(expected)

    # Same lrs, step by step, as torch's own warm-up and step decay chained together.
    cfg = TrainConfig(lr=0.5, warmup_steps=4, warmup_factor=0.1, milestones=(0.5, 0.75), gamma=0.1)
    ours_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    ours = build_scheduler(ours_opt, cfg, total_steps=20)
    ref_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    ref = torch.optim.lr_scheduler.ChainedScheduler([
        torch.optim.lr_scheduler.LinearLR(ref_opt, start_factor=0.1, total_iters=4),
        torch.optim.lr_scheduler.MultiStepLR(ref_opt, milestones=[10, 15], gamma=0.1)])
    for _ in range(20):
        assert ours_opt.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-6)
        ours_opt.step(), ours.step(), ref_opt.step(), ref.step()


def test_schedule_fits_a_time_budget():
    schedule = WarmupStepDecay(total_steps=1000, warmup_steps=100, warmup_factor=0.001, milestones=(0.75, 0.9), gamma=0.1)
    schedule.fit_to_budget(200)
    assert (schedule.total_steps, schedule.milestone_steps, schedule.warmup_steps) == (200, [150, 180], 20)
    assert schedule(199) == pytest.approx(0.01) and schedule(20) == 1.0


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"format": FORMAT, "value": torch.arange(3)}, path)

    def crash(obj, f, *args, **kwargs):  # a crash (disk full, kill) halfway through torch.save
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"format": FORMAT, "value": torch.arange(5)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["value"].tolist() == [0, 1, 2]  # the old one, intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no temp file left


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an mrcnn_teach checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_rng_state_round_trip_through_a_file(tmp_path):
    torch.manual_seed(3), np.random.seed(4), random.seed(5)
    torch.randn(7), np.random.randn(3), random.random()
    save_checkpoint({"rng": capture_rng_state()}, tmp_path / "rng.pt")
    first = (torch.randn(4), np.random.randn(4), [random.random() for _ in range(4)])
    torch.randn(100), np.random.randn(100), random.random()  # move every generator on
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    second = (torch.randn(4), np.random.randn(4), [random.random() for _ in range(4)])
    assert torch.equal(first[0], second[0])
    assert np.array_equal(first[1], second[1]) and first[2] == second[2]


# ----------------------------------------------------------------------------- data randomness


def test_seeded_flips_depend_on_seed_epoch_index_only():
    base = ShapesDataset(8, image_size=32, seed=0)
    data = SeededTransforms(base, RandomHorizontalFlip(0.5), seed=7)

    def flipped(i):
        return not torch.equal(data[i][0], base[i][0])

    torch.manual_seed(0)
    global_state = torch.get_rng_state()
    forward = [flipped(i) for i in range(8)]
    assert torch.equal(torch.get_rng_state(), global_state)  # the model's RNG is untouched
    backward = [flipped(i) for i in reversed(range(8))][::-1]
    assert forward == backward and 0 < sum(forward) < 8  # order-free, and really random
    data.set_epoch(1)
    assert [flipped(i) for i in range(8)] != forward  # a new epoch, new flips


# ----------------------------------------------------------------------------- resumption


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path, monkeypatch):
    """6 steps in one go == 3 steps, a stop mid-epoch, and 3 more in fresh objects."""
    full = train(tiny_config(), tmp_path / "full", evaluate=False, quiet=True)
    part = train(tiny_config(max_steps=3), tmp_path / "part", evaluate=False, quiet=True)
    assert (full["stopped"], full["step"], part["stopped"], part["step"]) == ("done", 6, "max_steps", 3)
    stopped = load_checkpoint(tmp_path / "part" / "checkpoint.pt")
    assert (stopped["epoch"], stopped["step"], stopped["step_in_epoch"]) == (1, 3, 1)  # mid-epoch

    # Resumed with a max_steps it has already reached, a run trains no further step.
    again = train(tiny_config(max_steps=3), tmp_path / "part", resume=tmp_path / "part" / "checkpoint.pt",
                  evaluate=False, quiet=True)
    assert (again["stopped"], again["step"]) == ("max_steps", 3)
    assert load_checkpoint(tmp_path / "part" / "checkpoint.pt")["step"] == 3

    torch.manual_seed(999), np.random.seed(999), random.seed(999)  # the checkpoint must undo this
    rest = train(tiny_config(), tmp_path / "part", resume=tmp_path / "part" / "checkpoint.pt",
                 evaluate=False, quiet=True)
    assert rest["step"] == 6
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "part" / "checkpoint.pt")
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        torch.testing.assert_close(b["model"][key], a["model"][key], rtol=1e-5, atol=1e-6, msg=key)
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        torch.testing.assert_close(sb["momentum_buffer"], sa["momentum_buffer"], rtol=1e-5, atol=1e-6)
    log_a, log_b = read_log(tmp_path / "full" / "log.jsonl"), read_log(tmp_path / "part" / "log.jsonl")
    assert [r["step"] for r in log_b] == [1, 2, 3, 4, 5, 6]
    for ra, rb in zip(log_a, log_b):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5) and rb["lr"] == pytest.approx(ra["lr"])
    assert {"step", "epoch", "lr", "loss", "loss_mask", "loss_objectness", "images_per_s", "time"} <= set(log_a[0])

    # The checkpoint alone rebuilds the model (evaluate / predict need nothing else).
    model, ckpt = model_from_checkpoint(tmp_path / "full" / "checkpoint.pt")
    assert not model.training and ckpt["class_names"] == ["background", "square", "circle", "triangle"]
    assert ckpt["train_config"]["model_overrides"] == TINY_MODEL and ckpt["scaler"] == {}
    with torch.no_grad():
        out = model([torch.rand(3, 64, 64)])[0]
    assert set(out) == {"boxes", "labels", "scores", "masks"}

    # Control: without restoring the RNG states the resumed run samples other RoIs and drifts.
    monkeypatch.setattr("mrcnn_teach.train.restore_rng_state", lambda state: None)
    torch.manual_seed(999)
    save_checkpoint(stopped, tmp_path / "stopped.pt")
    train(tiny_config(), tmp_path / "control", resume=tmp_path / "stopped.pt", evaluate=False, quiet=True)
    c = load_checkpoint(tmp_path / "control" / "checkpoint.pt")
    assert any(not torch.allclose(c["model"][k], a["model"][k], rtol=1e-5, atol=1e-6) for k in a["model"])


@pytest.mark.parametrize("scale_jitter", [None, (0.5, 2.0)])
def test_worker_processes_do_not_change_the_run(tmp_path, scale_jitter):
    """Flips and scale jitter are seeded per sample, so 2 DataLoader workers train exactly like the main process."""
    cfg = tiny_config(epochs=1, hflip=0.5, scale_jitter=scale_jitter)
    train(cfg, tmp_path / "w0", evaluate=False, quiet=True)
    train(tiny_config(epochs=1, hflip=0.5, scale_jitter=scale_jitter, workers=2), tmp_path / "w2",
          evaluate=False, quiet=True)
    a = load_checkpoint(tmp_path / "w0" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "w2" / "checkpoint.pt")["model"]
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)


def test_scale_jitter_is_applied_and_resumes_exactly(tmp_path):
    jitter = dict(scale_jitter=(0.5, 2.0))
    full = train(tiny_config(**jitter), tmp_path / "full", evaluate=False, quiet=True)
    train(tiny_config(max_steps=3, **jitter), tmp_path / "part", evaluate=False, quiet=True)
    rest = train(tiny_config(**jitter), tmp_path / "part", resume=tmp_path / "part" / "checkpoint.pt",
                 evaluate=False, quiet=True)
    assert full["step"] == rest["step"] == 6
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "part" / "checkpoint.pt")
    for key in a["model"]:
        torch.testing.assert_close(b["model"][key], a["model"][key], rtol=1e-5, atol=1e-6, msg=key)
    assert tuple(a["train_config"]["scale_jitter"]) == (0.5, 2.0)
    # the jitter really reaches the training images: without it the same run ends elsewhere
    train(tiny_config(), tmp_path / "plain", evaluate=False, quiet=True)
    plain = load_checkpoint(tmp_path / "plain" / "checkpoint.pt")["model"]
    assert any(not torch.allclose(plain[k], a["model"][k], rtol=1e-4, atol=1e-5) for k in plain)


def test_trainer_composes_jitter_before_the_flip(tmp_path):
    from mrcnn_teach.datasets import Compose, RandomHorizontalFlip, RandomScaleJitter
    from mrcnn_teach.train import Trainer

    trainer = Trainer(tiny_config(scale_jitter=(0.7, 1.5), hflip=0.25), tmp_path / "t", quiet=True)
    augment = trainer.train_set.transforms
    assert isinstance(augment, Compose) and [type(t) for t in augment.transforms] == [RandomScaleJitter,
                                                                                     RandomHorizontalFlip]
    assert augment.transforms[0].scale_range == (0.7, 1.5) and augment.transforms[1].p == 0.25
    assert Trainer(tiny_config(hflip=0.0), tmp_path / "u", quiet=True).train_set.transforms is None


# ----------------------------------------------------------------------------- stopping


def test_non_finite_loss_names_step_and_terms(tmp_path):
    trainer = Trainer(tiny_config(), tmp_path, build=toy_factory(nan_at=2), quiet=True)
    with pytest.raises(FloatingPointError) as err:
        trainer.run(evaluate=False)
    message = str(err.value)
    assert "step 2" in message and "loss_box_reg=inf" in message and "loss_mask=nan" in message
    assert "loss_classifier" not in message
    assert trainer.step == 1 and torch.isfinite(trainer.model.w).all()  # no update from the bad step


def test_time_budget_stops_cleanly_and_saves(tmp_path):
    out = train(tiny_config(max_minutes=1e-5), tmp_path, build=toy_factory(), evaluate=False, quiet=True)
    assert out["stopped"] == "time budget" and out["step"] == 1
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 1
    assert len(read_log(tmp_path / "log.jsonl")) == 1


def test_time_budget_fits_the_schedule(tmp_path):
    # 64 steps by epochs, but at >= 0.04 s a step only ~30 fit into 1.2 s.
    cfg = tiny_config(train_images=64, batch_size=1, epochs=1, max_minutes=0.02, warmup_steps=50, hflip=0.0)
    out = train(cfg, tmp_path, build=toy_factory(sleep=0.04), evaluate=False, quiet=True)
    schedule = load_checkpoint(tmp_path / "checkpoint.pt")["scheduler"]["lr_lambdas"][0]
    assert schedule["total_steps"] < 64
    assert schedule["warmup_steps"] <= max(1, schedule["total_steps"] // 10)
    assert out["step"] <= schedule["total_steps"]


def test_ctrl_c_saves_then_raises(tmp_path):
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a job started with `&`
    with pytest.raises(KeyboardInterrupt, match="--resume"):
        train(tiny_config(), tmp_path, build=toy_factory(sigint_at=2), evaluate=False, quiet=True)
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["step"] == 2  # the step in flight finished, then the run stopped
    assert signal.getsignal(signal.SIGINT) is before  # handler restored


def test_existing_run_needs_resume_or_overwrite(tmp_path):
    train(tiny_config(max_steps=1), tmp_path, build=toy_factory(), evaluate=False, quiet=True)
    with pytest.raises(ValueError, match="--resume"):
        train(tiny_config(max_steps=1), tmp_path, build=toy_factory(), evaluate=False, quiet=True)


# ----------------------------------------------------------------------------- configuration


def test_presets_and_config_errors():
    cfg = get_train_config("shapes_tiny", epochs=2)
    assert (cfg.model, cfg.epochs, cfg.momentum, cfg.weight_decay) == ("shapes_tiny", 2, 0.9, 1e-4)
    assert cfg.train_data_seed != cfg.val_data_seed
    assert get_train_config("resnet50_fpn").model == "resnet50_fpn"
    with pytest.raises(ValueError, match="unknown training config 'nope'"):
        get_train_config("nope")
    with pytest.raises(ValueError, match="milestones"):
        get_train_config("shapes_tiny", milestones=(0.9, 0.5))
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        TrainConfig.from_dict({"learning_rate": 0.1})
    ckpt = {"train_config": {**tiny_config(max_steps=3).__dict__}}
    resumed = resume_config(ckpt, max_minutes=5.0, workers=1)
    assert (resumed.max_minutes, resumed.workers, resumed.max_steps) == (5.0, 1, None)  # the old stop point is gone
    assert resume_config(ckpt, max_steps=5).max_steps == 5
    with pytest.raises(ValueError, match=r"cannot change \['lr'\]"):
        resume_config(ckpt, lr=1.0)


def test_mixed_precision_step_on_cpu(tmp_path):
    """The AMP code path (autocast, GradScaler: scale, unscale before clipping, step, update,
    scaler state in the checkpoint), run on the CPU with bfloat16 since CI has no GPU."""
    train(tiny_config(max_steps=1, epochs=1), tmp_path / "fp32", evaluate=False, quiet=True)
    trainer = Trainer(tiny_config(max_steps=2, epochs=1), tmp_path / "amp", quiet=True)
    trainer.use_amp, trainer.amp_dtype = True, torch.bfloat16
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    assert trainer.run(evaluate=False)["step"] == 2
    ckpt = load_checkpoint(tmp_path / "amp" / "checkpoint.pt")
    assert ckpt["scaler"]["scale"] == 2.0**10 and ckpt["scaler"]["_growth_tracker"] == 2  # 2 finite steps
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    # Gradients were unscaled before clipping: the norm is the float32 one (not 1024 times it),
    # up to bfloat16 rounding.
    fp32 = read_log(tmp_path / "fp32" / "log.jsonl")[0]["grad_norm"]
    amp = read_log(tmp_path / "amp" / "log.jsonl")[0]["grad_norm"]
    assert 0.5 < amp / fp32 < 2.0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_amp_on_cuda_trains_and_resumes(tmp_path):
    cfg = tiny_config(device="cuda", amp=True, epochs=2)
    train(cfg, tmp_path / "full", evaluate=False, quiet=True)
    train(dataclasses.replace(cfg, max_steps=2), tmp_path / "part", evaluate=False, quiet=True)
    ckpt = load_checkpoint(tmp_path / "part" / "checkpoint.pt")
    assert ckpt["scaler"]["scale"] > 0 and ckpt["step"] == 2
    out = train(cfg, tmp_path / "part", resume=tmp_path / "part" / "checkpoint.pt", evaluate=False, quiet=True)
    assert out["step"] == 4
    assert all(torch.isfinite(v).all() for v in load_checkpoint(tmp_path / "part" / "checkpoint.pt")["model"].values()
               if v.is_floating_point())
