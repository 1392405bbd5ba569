"""Training data: datasets from a TrainConfig, per-sample seeded augmentation, resumable epoch loaders.

Exact resumption rests on two choices made here:
1. the data order of epoch e is a permutation drawn from a generator seeded with (seed, e)
   (DistributedSampler), and a resumed epoch skips the batches it already trained on (`SkipFirst`);
2. each sample's random flip and scale jitter are drawn from a generator seeded with (seed, epoch, index)
   (`SeededTransforms`), so it does not depend on which DataLoader worker loads it.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from . import distributed as dist_utils
from .train_config import TrainConfig

def sample_seed(*parts: int) -> int:
    """A 64-bit seed mixed from integers (numpy's SeedSequence hashes them well)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0])


class SeededTransforms(Dataset):
    """Apply random transforms with a generator seeded by (seed, epoch, index).

    A DataLoader worker's RNG depends on how many samples that worker has loaded before, so with
    plain `torch.rand` a resumed run (or one with a different number of workers) would flip
    different images. Here every sample draws from a fresh seed, and `fork_rng` puts the global
    generator back afterwards, so data loading never moves the RNG the model samples RoIs with.
    """

    def __init__(self, dataset: Dataset, transforms, seed: int = 0):
        self.dataset = dataset
        self.transforms = transforms
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch  # set before the DataLoader iterator (and its workers) is created

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):  # class_names, label_to_category_id, ... of the dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int):
        image, target = self.dataset[index]
        if self.transforms is None:
            return image, target
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, self.epoch, index))
            return self.transforms(image, target)


class SkipFirst(Sampler):
    """The indices of `sampler` without the first `n`: how a resumed epoch skips its done batches."""

    def __init__(self, sampler: Sampler, n: int):
        self.sampler, self.n = sampler, n

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.n, None)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.n)


def _attr(dataset, name: str, default=None):
    while dataset is not None:
        if name in getattr(dataset, "__dict__", {}) or hasattr(type(dataset), name):
            return getattr(dataset, name)
        dataset = getattr(dataset, "dataset", None)
    return default


def class_names_of(dataset) -> tuple[str, ...]:
    names = _attr(dataset, "class_names")
    if names is None:
        raise ValueError(f"{type(dataset).__name__} has no class_names (background first)")
    return tuple(names)


def _coco_dir(path: str) -> tuple[Path, Path]:
    root = Path(path)
    images, ann = root / "images", root / "annotations.json"
    if not images.is_dir() or not ann.is_file():
        raise ValueError(f"--data {path}: expected a COCO directory with images/ and annotations.json")
    return images, ann


def build_datasets(cfg: TrainConfig) -> tuple[Dataset, Dataset]:
    """(train, held-out val) datasets, without augmentation."""
    from .datasets import CocoDetection, ShapesDataset

    if cfg.data is None:
        train = ShapesDataset(cfg.train_images, cfg.image_size, seed=cfg.train_data_seed)
        val = ShapesDataset(cfg.val_images, cfg.image_size, seed=cfg.val_data_seed)
        return train, val
    train = CocoDetection(*_coco_dir(cfg.data), train=True)
    if cfg.val_data is not None:
        return train, CocoDetection(*_coco_dir(cfg.val_data), train=False)
    # No separate val dir: a seeded random split, the last val_images for evaluation.
    if not 0 < cfg.val_images < len(train):
        raise ValueError(f"--data {cfg.data} has {len(train)} images; cannot hold out val_images={cfg.val_images}")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    n_train = len(train) - cfg.val_images
    val = CocoDetection(*_coco_dir(cfg.data), train=False)
    return Subset(train, order[:n_train]), Subset(val, order[n_train:])


def make_loader(dataset: SeededTransforms, cfg: TrainConfig, info: dist_utils.DistInfo,
                epoch: int, skip_batches: int = 0) -> DataLoader:
    """The loader for one epoch: order from (seed, epoch), this rank's shard, done batches skipped."""
    from .datasets import collate_fn

    sampler = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank,
                                 shuffle=True, seed=cfg.seed, drop_last=False)
    sampler.set_epoch(epoch)  # permutation from a generator seeded with seed + epoch
    dataset.set_epoch(epoch)
    return DataLoader(
        dataset, batch_size=cfg.batch_size, sampler=SkipFirst(sampler, skip_batches * cfg.batch_size),
        num_workers=cfg.workers, collate_fn=collate_fn, pin_memory=info.device.type == "cuda",
        # The loader draws its workers' base seed from this generator, not from the global RNG.
        generator=torch.Generator().manual_seed(sample_seed(cfg.seed, epoch, 1)),
    )


def steps_per_epoch(num_images: int, cfg: TrainConfig, world_size: int) -> int:
    per_rank = math.ceil(num_images / world_size)  # DistributedSampler pads to equal shards
    return math.ceil(per_rank / cfg.batch_size)
