"""RoIAlign alone, forward + backward: ours, plain (roi_ops.py) and fast (roi_align_fast.py), against torchvision's kernel.

    python benchmarks/roi_align_time.py [--repeats 5]

Two workloads: the shapes_tiny box head's (8 images x 64 channels x 32 x 32 on P2, 1024 RoIs of
4-60 cells, 7x7, sampling ratio 2) and a large map (1 x 256 x 200 x 200, 1000 RoIs). Prints the
median time of each, in one process, and the ratios to torchvision.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torchvision

from mrcnn_teach import roi_align_fast, roi_ops


def random_rois(num: int, batch: int, size: int, smallest: float, largest: float, generator) -> torch.Tensor:
    """(num, 5) rows (image index, x1, y1, x2, y2) inside a size x size map."""
    wh = smallest + (largest - smallest) * torch.rand(num, 2, generator=generator)  # (num, 2)
    xy = (size - wh) * torch.rand(num, 2, generator=generator)  # (num, 2)
    index = torch.randint(batch, (num, 1), generator=generator).float()  # (num, 1)
    return torch.cat([index, xy, xy + wh], dim=1)  # (num, 5)


def time_fwd_bwd(op, features, rois, repeats: int) -> float:
    seconds = []
    for _ in range(repeats + 1):
        x = features.detach().requires_grad_()
        start = time.perf_counter()
        op(x, rois, 7, 1.0, 2, True).sum().backward()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds[1:])  # the first is warm-up


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    workloads = {
        "shapes_tiny box head (8x64x32x32, 1024 RoIs)": (torch.randn(8, 64, 32, 32, generator=g),
                                                        random_rois(1024, 8, 32, 2.0, 15.0, g)),
        "large map (1x256x200x200, 1000 RoIs)": (torch.randn(1, 256, 200, 200, generator=g),
                                                 random_rois(1000, 1, 200, 4.0, 100.0, g)),
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; forward + backward, median of {args.repeats}")
    for name, (features, rois) in workloads.items():
        plain = time_fwd_bwd(roi_ops.roi_align, features, rois, args.repeats)
        fast = time_fwd_bwd(roi_align_fast.roi_align, features, rois, args.repeats)
        theirs = time_fwd_bwd(torchvision.ops.roi_align, features, rois, args.repeats)
        print(f"  {name:<46} plain {plain * 1e3:7.1f} ms ({plain / theirs:.2f})   fast {fast * 1e3:7.1f} ms "
              f"({fast / theirs:.2f})   torchvision {theirs * 1e3:7.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
