"""Where the time of an 800-px inference and training step goes, for torchvision's model and ours.

    python benchmarks/step_breakdown.py [--size 800] [--json benchmarks/results/step_breakdown.json]

Same four-model setup as `bench_vs_torchvision.py` (same weights, same images), two of the models:
torchvision's `maskrcnn_resnet50_fpn` and ours as `build_maskrcnn("resnet50_fpn")` builds it. After
one warm-up round, `--rounds` inferences and training steps of each run under `torch.profiler`,
alternating between the models, and each op's own CPU time (children excluded) goes into one of two
groups; the call with the median total is reported:

- **network**: convolutions, linear layers, batch norm, ReLU, max-pool and nearest upsampling,
  forward and backward. Both models call the same ATen kernels with tensors of the same shapes
  for these (the weights are equal, tests/test_model_equivalence.py), so no implementation
  of Mask R-CNN's own parts can make them cheaper.
- **the rest**: everything Mask R-CNN adds around the network -- anchors, box coding, NMS,
  matching and sampling, RoIAlign, the losses, pasting masks -- plus the small tensor ops in between.

The network's share of torchvision's time bounds the ratio any re-implementation can reach with
the same network: even a rest that cost nothing would leave ours / torchvision >= that share.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vs_torchvision import make_inputs, make_models, time_inference, time_train_step  # noqa: E402

NETWORK = {  # part of the network -> the ATen ops that do its work (own time; wrappers such as
    # aten::conv2d or aten::linear have children only, and their own time is dispatch overhead)
    "conv forward": {"aten::mkldnn_convolution", "aten::thnn_conv2d", "aten::_slow_conv2d_forward",
                     "aten::_convolution"},
    "conv backward": {"aten::convolution_backward", "aten::_slow_conv2d_backward"},
    "linear": {"aten::addmm", "aten::mm"},
    "batch norm": {"aten::native_batch_norm", "aten::native_batch_norm_backward", "aten::_native_batch_norm_legit",
                   "aten::_native_batch_norm_legit_no_training", "aten::_batch_norm_with_update",
                   "aten::batch_norm_backward"},
    "relu, pool, upsample": {"aten::relu", "aten::relu_", "aten::clamp_min", "aten::clamp_min_",
                             "aten::threshold_backward", "aten::max_pool2d_with_indices",
                             "aten::max_pool2d_with_indices_backward", "aten::upsample_nearest2d",
                             "aten::upsample_nearest2d_backward", "aten::_upsample_nearest_exact2d",
                             "aten::_upsample_nearest_exact2d_backward"},
}
NETWORK_OPS = set().union(*NETWORK.values())


def profiled(fn) -> dict[str, float]:
    """Own CPU seconds per op name for one call of fn()."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key: e.self_cpu_time_total / 1e6 for e in prof.key_averages()}


def split(ops: dict[str, float]) -> dict[str, float]:
    parts = {part: sum(ops.get(name, 0.0) for name in names) for part, names in NETWORK.items()}
    network, total = sum(parts.values()), sum(ops.values())
    return {"total_s": total, "network_s": network, "rest_s": total - network, "network_parts_s": parts}


def median_split(calls: list[dict[str, float]]) -> dict:
    """The split of the call whose total is the median (one real call, not a mix of several)."""
    return sorted(calls, key=lambda c: c["total_s"])[len(calls) // 2]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=800, help="image height (width is 4/3 of it)")
    parser.add_argument("--rounds", type=int, default=3, help="profiled calls of each model, alternating; "
                        "the call with the median total is reported")
    parser.add_argument("--top", type=int, default=8, help="list the rest's largest ops")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    device = torch.device("cpu")
    all_models = make_models(device)
    models = {name: m for name, m in all_models.items() if name == "torchvision" or name.startswith("ours (default")}
    images, targets = make_inputs(args.size, device)
    for model in models.values():  # warm-up: allocator, mkldnn primitives
        time_inference(model, images, device)
        time_train_step(model, images, targets, device)

    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    print(f"{machine}; image {args.size}x{int(args.size * 4 / 3)}; {args.rounds} profiled calls of each after a "
          f"warm-up, the median one shown; own CPU time per op, in seconds", flush=True)
    results = {}
    for kind in ("inference", "train_step"):
        calls = {name: [] for name in models}
        for _ in range(args.rounds):
            for name, model in models.items():
                if kind == "inference":
                    ops = profiled(lambda: time_inference(model, images, device))
                else:
                    ops = profiled(lambda: time_train_step(model, images, targets, device))
                rest = sorted(((t, n) for n, t in ops.items() if n not in NETWORK_OPS), reverse=True)[:args.top]
                calls[name].append({**split(ops), "rest_top": {n: t for t, n in rest}})
        for name in models:
            r = results.setdefault(kind, {})[name] = median_split(calls[name])
            r["totals_s"] = [c["total_s"] for c in calls[name]]
            print(f"\n{kind}, {name}: total {r['total_s']:.3f}  network {r['network_s']:.3f} "
                  f"({r['network_s'] / r['total_s']:.0%})  rest {r['rest_s']:.3f}   (totals: "
                  + ", ".join(f"{t:.2f}" for t in r["totals_s"]) + ")")
            print("  network: " + ", ".join(f"{p} {t:.3f}" for p, t in r["network_parts_s"].items()))
            print("  the rest's largest: " + ", ".join(f"{n.removeprefix('aten::')} {t:.3f}" for n, t in r["rest_top"].items()))
        tv = results[kind]["torchvision"]
        print(f"=> {kind}: with torchvision's network, ours / torchvision >= {tv['network_s'] / tv['total_s']:.2f} "
              f"(the network's share of torchvision's time)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": "python benchmarks/step_breakdown.py "
                                         + " ".join(argv if argv is not None else sys.argv[1:]),
                                         "date": time.strftime("%Y-%m-%d"), "machine": machine,
                                         "size": args.size, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
