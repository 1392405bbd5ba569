"""Checkpoints: everything needed to continue a run exactly, or to rebuild the model alone.

A training run is more than its weights. To continue as if it had never stopped we also need the
SGD momentum buffers (optimizer), where the learning-rate schedule stands (scheduler), the AMP
loss scale (scaler), how far through which epoch we got, and the state of every random number
generator (torch, CUDA, numpy, python) so the next RPN/RoI sampling draws are the ones the
uninterrupted run would have made. `evaluate` and `predict` need only the model's configuration
and the class names, which are stored too.

Two safety rules:
- Writes are atomic: `torch.save` goes to a temporary file in the same directory, which then
  replaces the old checkpoint with `os.replace` (one rename, atomic on POSIX and Windows). A crash
  or a full disk mid-write leaves the previous checkpoint intact.
- Reads use `torch.load(weights_only=True)`: a checkpoint holds only tensors and plain Python
  data, so loading one cannot run code hidden in a pickle. (That is why the numpy RNG state is
  stored as a tensor below.)
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

FORMAT = "mrcnn_teach.checkpoint/1"
CHECKPOINT_NAME = "checkpoint.pt"


# ----------------------------------------------------------------------------- random states

def capture_rng_state() -> dict[str, Any]:
    """Every generator this process draws from, as tensors and plain data."""
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state = {
        "torch": torch.get_rng_state(),  # (5056,) uint8
        "numpy": {
            "name": name, "keys": torch.from_numpy(keys.astype(np.int64)),  # (624,) int64
            "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian),
        },
        "python": random.getstate(),  # (version, tuple of 625 ints, gauss_next)
        "cuda": None,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()  # one (16,) uint8 per GPU
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    npy = state["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)  # (624,)
    np.random.set_state((npy["name"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- save / load

def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write `state` to `path` atomically (temp file in the same directory, then os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same directory as the target: os.replace is only atomic within one filesystem.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them visible
        os.replace(tmp, path)
    except BaseException:  # also Ctrl-C mid-write: never leave a half file behind
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def why_unreadable(path: str | os.PathLike, err: Exception) -> str:
    """One line on why torch.load failed on `path` (torch's own messages run to a page)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # torch.save's zip archive, or a bare pickle
        return f"it is not a file written by torch.save (it starts with {head!r})"
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if "weights only load failed" in first.lower():
        return ("it holds Python objects (not only tensors and plain data) that a safe load "
                "(torch.load(weights_only=True)) refuses to run")
    return f"the file is truncated or corrupt ({first.split('. ')[0][:150]})"


REQUIRED_KEYS = ("format", "model", "model_name", "model_overrides", "train_config", "class_names",
                 "optimizer", "scheduler", "scaler", "epoch", "step", "step_in_epoch", "rng")


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`; a clear error when it is missing or foreign."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated file, not a torch file, or a pickle with code in it
        raise ValueError(f"{path} is not a readable mrcnn_teach checkpoint: {why_unreadable(path, err)}") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        hint = ""
        if isinstance(ckpt, dict) and ckpt and all(torch.is_tensor(v) for v in ckpt.values()):
            hint = (": it holds weights alone (a state dict, e.g. torchvision's); load those into a model with "
                    "mrcnn_teach.load_torchvision_weights(model, path)")
        raise ValueError(f"{path} is not an mrcnn_teach checkpoint (expected format {FORMAT!r}){hint}")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise ValueError(f"checkpoint {path} lacks {missing}")
    return ckpt


# ----------------------------------------------------------------------------- the model alone

def load_model_state(model: nn.Module, state: dict[str, Any], source: str) -> None:
    """`model.load_state_dict(state)`, with an error that names the source and the first mismatches."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines()[1:] if line.strip()]
        shown = "; ".join(lines[:3]) + (f"; ... ({len(lines) - 3} more)" if len(lines) > 3 else "")
        raise ValueError(f"the weights in {source} do not fit this model (was it saved from another model, "
                         f"configuration or number of classes?): {shown}") from err


ModelFactory = Callable[..., nn.Module]  # build_maskrcnn's signature: (name, **overrides) -> model


def build_model(name: str, **overrides: Any) -> nn.Module:
    """The default factory: `mrcnn_teach.build_maskrcnn` (imported here, not at module load)."""
    from .configs import build_maskrcnn

    return build_maskrcnn(name, **overrides)


def model_from_checkpoint(
    ckpt: dict[str, Any] | str | os.PathLike,
    device: str | torch.device = "cpu",
    build: ModelFactory | None = None,
    kernels: str | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the trained model from a checkpoint alone, in eval mode on `device`.

    With our own model the full configuration dict saved in the checkpoint is used, so a preset
    edited since training does not change what gets rebuilt. `build` replaces the factory (tests
    use it to train torchvision's MaskRCNN with this same trainer).
    """
    source = "the checkpoint"
    if not isinstance(ckpt, dict):
        source = f"checkpoint {ckpt}"
        ckpt = load_checkpoint(ckpt)
    if build is None and ckpt.get("model_config") is not None:
        from .configs import build_from_config

        model = build_from_config(dict(ckpt["model_config"]))
    else:
        model = (build or build_model)(ckpt["model_name"], **ckpt["model_overrides"])
    load_model_state(model, ckpt["model"], source)
    kernels = kernels or ckpt["train_config"].get("kernels")
    if kernels and hasattr(model, "set_kernels"):
        model.set_kernels(kernels)
    return model.to(device).eval(), ckpt
