"""The notebooks' cached trained model: trained once, then loaded; keyed by its recipe; safe to share."""

import pytest
import torch

from mrcnn_teach import pretrained


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MRCNN_TEACH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cache_dir_follows_the_environment(cache, monkeypatch):
    assert pretrained.cache_dir() == cache
    monkeypatch.delenv("MRCNN_TEACH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere")
    assert str(pretrained.cache_dir()) == "/somewhere/mrcnn_teach"


def test_recipe_is_a_fixed_number_of_steps():
    cfg = pretrained.train_config(500)
    assert cfg.max_steps == 500 and cfg.max_minutes is None  # no wall-clock budget: deterministic
    assert cfg.epochs * (cfg.train_images // cfg.batch_size) >= 500  # the lr schedule spans the run
    assert pretrained.checkpoint_path(500) != pretrained.checkpoint_path(501)
    assert cfg.scale_jitter is None and cfg.hflip == 0.5  # the flip only (Fast R-CNN's and torchvision's default), whatever the preset says


@pytest.mark.slow
def test_trains_once_then_loads(cache, monkeypatch, capsys):
    model = pretrained.trained_shapes_model(steps=2)
    assert "training the shapes_tiny model for 2 steps" in capsys.readouterr().err
    assert not model.training and model.class_names == ("background", "square", "circle", "triangle")
    path = pretrained.checkpoint_path(2)
    assert path.exists() and [p.name for p in cache.iterdir() if p.name.startswith(".train-")] == []
    log = pretrained.training_log(steps=2)
    assert [r["step"] for r in log] == [1, 2] and all("loss_mask" in r for r in log)

    def must_not_train(*args):
        raise AssertionError("a cached model was trained again")

    monkeypatch.setattr(pretrained, "_train_into", must_not_train)
    again = pretrained.trained_shapes_model(steps=2)
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    (image,) = [torch.rand(3, 128, 128)]
    (out,) = again([image])
    assert set(out) == {"boxes", "labels", "scores", "masks"}


@pytest.mark.slow
def test_same_recipe_same_weights_and_damaged_file_retrains(cache):
    # The first caller may be a notebook that turned gradients off: training must not care.
    with torch.no_grad():
        first = pretrained.trained_shapes_model(steps=1).state_dict()
    assert torch.is_grad_enabled()
    path = pretrained.checkpoint_path(1)
    path.write_bytes(path.read_bytes()[:1000])  # truncated, as by a full disk
    second = pretrained.trained_shapes_model(steps=1).state_dict()
    for key in first:
        assert torch.equal(first[key], second[key]), f"{key} differs between two trainings of one recipe"


def test_bad_steps(cache):
    with pytest.raises(ValueError, match="steps must be >= 1"):
        pretrained.trained_shapes_model(steps=0)


def test_cached_run_runs_once_per_source_and_arguments(cache):
    calls = []

    def train(steps, seed=0):
        calls.append((steps, seed))
        torch.manual_seed(seed)
        return {"weights": torch.randn(steps), "steps": steps}

    first, seconds = pretrained.cached_run(train, steps=3)
    again, seconds_again = pretrained.cached_run(train, steps=3)
    assert calls == [(3, 0)]  # the second call loaded the file
    assert torch.equal(first["weights"], again["weights"]) and seconds_again == seconds >= 0
    pretrained.cached_run(train, steps=3, seed=1)
    pretrained.cached_run(train, steps=4)
    assert calls == [(3, 0), (3, 1), (4, 0)]  # other arguments: other runs
    assert len(list(cache.glob("run-train-*.pt"))) == 3 and not list(cache.glob(".run-*"))

    def train(steps, seed=0):  # noqa: F811 (same name, other source: another run)
        calls.append("changed")
        return steps

    assert pretrained.cached_run(train, steps=3) == (3, pretrained.cached_run(train, steps=3)[1])
    assert calls[-1] == "changed" and calls.count("changed") == 1


def test_cached_run_replaces_a_damaged_file(cache):
    calls = []

    def train(n):
        calls.append(n)
        return n * 2

    assert pretrained.cached_run(train, n=5)[0] == 10
    (path,) = cache.glob("run-train-*.pt")
    path.write_bytes(b"not a torch file")
    assert pretrained.cached_run(train, n=5)[0] == 10 and calls == [5, 5]
    assert pretrained.cached_run(train, n=5)[0] == 10 and calls == [5, 5]


def test_cached_run_keys_a_function_without_source_by_its_code(cache):
    """Defined by exec (no source file): the same code is the same run, a different called name another."""
    calls = []

    def define(body_call):
        namespace = {"calls": calls, "double": lambda n: 2 * n, "triple": lambda n: 3 * n}
        exec(f"def train(n):\n    calls.append(n)\n    return [{body_call}(k) for k in range(n)]\n", namespace)
        return namespace["train"]

    assert pretrained.cached_run(define("double"), n=3)[0] == [0, 2, 4]
    assert pretrained.cached_run(define("double"), n=3)[0] == [0, 2, 4] and calls == [3]  # defined again: loaded
    assert pretrained.cached_run(define("triple"), n=3)[0] == [0, 3, 6] and calls == [3, 3]  # other name: trained
