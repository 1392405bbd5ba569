"""Data-parallel training with PyTorch's own engine (torch.distributed + DistributedDataParallel).

Mask R-CNN was trained on 8 GPUs with 2 images each (Sec. 3.1, "Training": a minibatch of 16
images). Data parallelism is how: every process ("rank") holds a full copy of the model, reads a
different slice of the data (DistributedSampler), and after each backward pass the gradients are
averaged across ranks (DistributedDataParallel does this inside `loss.backward()`), so every copy
takes the same SGD step.

Launch N processes with torchrun, which sets RANK / WORLD_SIZE / LOCAL_RANK for each:

    torchrun --nproc_per_node=2 -m mrcnn_teach train --config shapes_tiny --out runs/ddp

Only rank 0 writes logs and checkpoints and evaluates; the others just train. Without torchrun
these helpers report a world of one process and do nothing, so the same training loop runs alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int  # this process's number, 0..world_size-1
    world_size: int  # how many processes train together
    local_rank: int  # number on this machine: picks the GPU
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 is the one that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(device: str | None = "auto", local_rank: int = 0) -> torch.device:
    """"auto" -> the GPU if there is one, else the CPU; under torchrun each rank takes GPU `local_rank`."""
    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"--device {device!r} is not a device: use auto, cpu, cuda, cuda:1, mps ...") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device: str | None = "auto") -> DistInfo:
    """Join the process group when started by torchrun; otherwise a single-process DistInfo.

    Backend: NCCL talks GPU to GPU; Gloo works on CPUs (used by the tests and CPU-only machines).
    """
    if not launched_by_torchrun():
        return DistInfo(0, 1, 0, pick_device(device))
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    dev = pick_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)  # NCCL needs each rank bound to its own GPU before init
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world_size, local_rank, dev)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, info: DistInfo) -> nn.Module:
    """DistributedDataParallel when there is more than one rank; the model itself otherwise."""
    if not info.distributed:
        return model
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DDP wrapper (what we save, evaluate and predict with)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a small (N,) tensor over all ranks (identity with one process).

    The training loop packs every loss term and its stop flags into one tensor, so each step pays
    for a single collective, and every rank reaches the same decision (stop, or NaN) at the same step.
    """
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        values = values.clone()  # (N,)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def broadcast_int(value: int, info: DistInfo) -> int:
    """Rank 0's value of an integer, on every rank."""
    if not info.distributed:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=info.device)  # (1,)
    dist.broadcast(t, src=0)
    return int(t.item())
