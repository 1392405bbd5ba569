"""A trained model without downloads: `trained_shapes_model()` for the notebooks.

Notebooks from 04 on need a model that has learned something -- proposals that hug objects, RoI
features worth looking at, masks. Nothing may be downloaded, so the first call trains the
`shapes_tiny` model on the built-in shapes data for a fixed number of steps (deterministic: same
seed, same data, same schedule; 6-13 minutes on a 2-core CPU, with the machine's speed) and caches
the checkpoint; every later call loads it in about a second. Each notebook calls this function, so
each still runs alone, in any order, on a fresh clone.

Where the cache lives: ``$MRCNN_TEACH_CACHE`` if set, else ``$XDG_CACHE_HOME/mrcnn_teach``, else
``~/.cache/mrcnn_teach``. The file name carries a fingerprint of everything that decides the
weights (training recipe, model config, library version), so a change retrains instead of
loading a stale model. Two processes that ask at once do not both train: a lock file serialises
them, and the checkpoint is written atomically (write to a temporary file, then rename).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from torch import nn

from . import __version__

# 700 steps of 8 images (2.8 epochs of the 2000 training images; the schedule spans 3 epochs, so the lr
# decays at steps 562 and 675). With the anchors fitted to the data (configs.py) that is a model whose
# pictures are right: box / mask AP50 0.92 / 0.92 and mask AP 0.68 on the held-out images, where 500
# steps with the old anchors gave 0.63 / 0.62 / 0.42 (benchmarks/cached_model.py, benchmarks/README.md).
DEFAULT_STEPS = 700
BATCH_SIZE = 8
TRAIN_IMAGES = 2000


def cache_dir() -> Path:
    """The folder that holds cached models (see the module docstring for how it is chosen)."""
    if os.environ.get("MRCNN_TEACH_CACHE"):
        return Path(os.environ["MRCNN_TEACH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "mrcnn_teach"


def train_config(steps: int = DEFAULT_STEPS):
    """The recipe of the cached model: the `shapes_tiny` preset with a step count instead of a time budget,
    and a horizontal flip (Fast R-CNN's and torchvision's default) as its only augmentation.

    No scale jitter: it trades in-distribution AP for robustness to other object sizes
    (benchmarks/README.md), the notebooks look at in-distribution images, and the ablations
    (benchmarks/ablations.py) were measured with this recipe.
    """
    from .train import get_train_config

    steps_per_epoch = TRAIN_IMAGES // BATCH_SIZE
    epochs = max(1, -(-steps // steps_per_epoch))  # ceil: the schedule spans whole epochs ...
    return get_train_config(
        "shapes_tiny", train_images=TRAIN_IMAGES, batch_size=BATCH_SIZE, epochs=epochs,
        max_minutes=None, max_steps=steps,  # ... and training stops at exactly `steps`
        warmup_steps=min(100, max(1, steps // 5)), device="cpu", seed=0, scale_jitter=None,
    )


def _digest(recipe: dict) -> str:
    """12 hex digits of the SHA-256 of `recipe` as sorted JSON: the name a cached file carries."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _fingerprint(cfg) -> str:
    from .configs import get_config

    recipe = {"train": dataclasses.asdict(cfg), "model": get_config(cfg.model, **cfg.model_overrides),
              "version": __version__}
    return _digest(recipe)


def checkpoint_path(steps: int = DEFAULT_STEPS) -> Path:
    """Where the model trained for `steps` steps is (or will be) cached."""
    cfg = train_config(steps)
    return cache_dir() / f"shapes_tiny-{steps}steps-{_fingerprint(cfg)}.pt"


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits here until the first has trained
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _train_into(path: Path, steps: int) -> None:
    from .train import train

    cfg = train_config(steps)
    print(f"training the shapes_tiny model for {steps} steps, once; later calls load it from the "
          f"cache (MRCNN_TEACH_CACHE) ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    run_dir = Path(tempfile.mkdtemp(prefix=".train-", dir=path.parent))
    try:
        result = train(cfg, run_dir, evaluate=False, quiet=True)
        if result["step"] != steps:
            raise RuntimeError(f"training the cached model stopped at step {result['step']} of {steps} "
                               f"({result['stopped']})")
        os.replace(result["checkpoint"], path)  # atomic: readers see the old state or the whole file
        shutil.copy(run_dir / "log.jsonl", path.with_suffix(".log.jsonl"))
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    print(f"trained in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)


def trained_shapes_model(steps: int = DEFAULT_STEPS, kernels: str | None = None) -> nn.Module:
    """The `shapes_tiny` Mask R-CNN trained for `steps` steps on the shapes data, in eval mode on the CPU.

    Trains on the first call (6-13 minutes on a 2-core CPU for the default) and caches the checkpoint;
    later calls load it. `kernels` overrides the NMS/RoIAlign set ("teaching", "torchvision", "mixed").
    The class names are on `model.class_names`.
    """
    from .checkpoint import load_checkpoint, model_from_checkpoint

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    path = checkpoint_path(steps)
    with _locked(path):
        if not path.exists():
            _train_into(path, steps)
        try:
            ckpt = load_checkpoint(path)
        except ValueError:  # a file damaged after it was written: train it again
            path.unlink()
            _train_into(path, steps)
            ckpt = load_checkpoint(path)
    model, ckpt = model_from_checkpoint(ckpt, kernels=kernels)
    model.class_names = tuple(ckpt["class_names"])  # ("background", "square", "circle", "triangle")
    return model


def training_log(steps: int = DEFAULT_STEPS) -> list[dict]:
    """The per-step log (losses, lr) of the cached model's training run; trains it first if needed."""
    trained_shapes_model(steps)
    with open(checkpoint_path(steps).with_suffix(".log.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def _code_key(code) -> str:
    """A code object's bytecode, the names it reads and its constants, nested code objects included (no
    memory addresses: the same function defined twice gives the same key)."""
    consts = [_code_key(c) if hasattr(c, "co_code") else repr(c) for c in code.co_consts]
    return repr((code.co_code.hex(), code.co_names, consts))


def cached_run(train, **kwargs):
    """`train(**kwargs)` run once and its result cached beside the trained model; later calls load it.

    For a notebook's own short training runs (notebook 12 trains three models from scratch, minutes
    each): the first run of the notebook trains, a second one (or a grader's) takes seconds. The key is
    the function's source, the arguments, and the library's and torch's versions, so everything that
    decides the result must be in the function or its arguments: change either and it trains again. An
    edit to the library's files does not change the key: delete the run-*.pt files of `cache_dir()` then.
    Returns (train's result, the CPU seconds that the run which made it took). The result is stored with
    torch.save (pickle): it may be anything torch.save takes, a model included. Same lock and atomic write
    as `trained_shapes_model`.
    """
    import inspect

    import torch

    try:
        source = inspect.getsource(train)
    except (OSError, TypeError):  # no source to read (defined by exec): what its code does and names instead
        source = _code_key(train.__code__)
    recipe = {"name": train.__qualname__, "source": source, "kwargs": {k: repr(v) for k, v in sorted(kwargs.items())},
              "version": __version__, "torch": torch.__version__}
    path = cache_dir() / f"run-{train.__name__}-{_digest(recipe)}.pt"
    with _locked(path):
        if path.exists():
            try:
                saved = torch.load(path, weights_only=False)  # our own cache, written below
                return saved["result"], saved["cpu_seconds"]
            except Exception:  # a file damaged after it was written: run again
                path.unlink()
        start = time.process_time()
        result = train(**kwargs)
        cpu_seconds = time.process_time() - start
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".run-", suffix=".pt", delete=False) as f:
            torch.save({"result": result, "cpu_seconds": cpu_seconds, "recipe": recipe}, f)
        os.replace(f.name, path)  # atomic: readers see no file or the whole file
    return result, cpu_seconds


def main(argv=None) -> int:
    """`python -m mrcnn_teach.pretrained`: train the cached model now if it is missing (make model)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mrcnn_teach.pretrained", description=main.__doc__)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    args = parser.parse_args(argv)
    trained_shapes_model(args.steps)
    print(checkpoint_path(args.steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
