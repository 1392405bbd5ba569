"""Speed of our Mask R-CNN against torchvision's, with the same weights, in the same process.

    python benchmarks/bench_vs_torchvision.py                 # CPU, 800-px images
    python benchmarks/bench_vs_torchvision.py --device cuda   # where a GPU is present

Four models share one set of weights: torchvision's `maskrcnn_resnet50_fpn`; ours as
`build_maskrcnn("resnet50_fpn")` builds it (the default kernel set, "mixed": torchvision's compiled
NMS and the fast RoIAlign of `roi_align_fast.py`); ours with torchvision's compiled NMS/RoIAlign;
and ours with the teaching kernels written in `mrcnn_teach/nms.py` and `roi_ops.py` (the ones the
notebooks explain). Each timed round runs all four one after the other
(inference on one image, then a training step on two), so drift in the machine's speed hits them
alike. It prints the median time of each and the ratio ours / torchvision (below 1.0: we are faster).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torchvision.models.detection import maskrcnn_resnet50_fpn

from mrcnn_teach import build_maskrcnn, load_torchvision_weights


def make_models(device):
    torch.manual_seed(0)
    tv = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    with torch.no_grad():  # spread the random scores so inference yields ~100 detections with masks
        tv.rpn.head.cls_logits.weight.normal_(0, 0.3)
        tv.roi_heads.box_predictor.cls_score.weight.normal_(0, 0.2)
    # BN and every stage trainable: what torchvision builds when it is given no weights
    default = build_maskrcnn("resnet50_fpn", norm="bn", trainable_layers=5)
    compiled = build_maskrcnn("resnet50_fpn", norm="bn", trainable_layers=5, kernels="torchvision")
    teaching = build_maskrcnn("resnet50_fpn", norm="bn", trainable_layers=5, kernels="teaching")
    for model in (default, compiled, teaching):
        load_torchvision_weights(model, tv.state_dict())
    return {"torchvision": tv.to(device), f"ours (default: {default.config['kernels']})": default.to(device),
            "ours (compiled kernels)": compiled.to(device), "ours (teaching kernels)": teaching.to(device)}


def make_inputs(size, device):
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, size, int(size * 4 / 3), generator=g).to(device) for _ in range(2)]
    targets = []
    for image in images:
        h, w = image.shape[-2:]
        boxes = torch.tensor([[0.1 * w, 0.1 * h, 0.45 * w, 0.6 * h], [0.5 * w, 0.3 * h, 0.9 * w, 0.8 * h]])
        masks = torch.zeros(2, h, w, dtype=torch.uint8)
        for m, (x1, y1, x2, y2) in zip(masks, boxes.int().tolist()):
            m[y1:y2, x1:x2] = 1
        targets.append(dict(boxes=boxes.to(device), labels=torch.tensor([1, 2], device=device),
                            masks=masks.to(device)))
    return images, targets


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_inference(model, images, device):
    model.eval()
    with torch.no_grad():
        sync(device)
        start = time.perf_counter()
        out = model(images[:1])
        sync(device)
    return time.perf_counter() - start, len(out[0]["boxes"])


def time_train_step(model, images, targets, device):
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: time the step, keep weights equal
    sync(device)
    start = time.perf_counter()
    losses = model(images, [dict(t) for t in targets])
    sum(losses.values()).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    sync(device)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=800, help="image height (width is 4/3 of it)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    models = make_models(device)
    images, targets = make_inputs(args.size, device)
    times = {name: {"inference": [], "train_step": []} for name in models}
    detections = {}
    for round_ in range(args.warmup + args.repeats):
        for name, model in models.items():
            t, detections[name] = time_inference(model, images, device)
            if round_ >= args.warmup:
                times[name]["inference"].append(t)
            if not args.skip_train:
                t = time_train_step(model, images, targets, device)
                if round_ >= args.warmup:
                    times[name]["train_step"].append(t)

    machine = (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
               if device.type == "cpu" else torch.cuda.get_device_name(device))
    print(f"device: {device} ({machine}); torch {torch.__version__}; image {args.size}x{int(args.size * 4 / 3)}; "
          f"median of {args.repeats} rounds after {args.warmup} warm-up")
    print(f"detections per image: {detections}")
    reference = times["torchvision"]
    results = {}
    header = f"{'model':<28}{'inference s':>13}{'ratio':>8}{'train step s':>15}{'ratio':>8}"
    print(header)
    print("-" * len(header))
    for name, t in times.items():
        row = {}
        line = f"{name:<28}"
        for kind in ("inference", "train_step"):
            if not t[kind]:
                line += f"{'-':>13}{'-':>8}" if kind == "inference" else f"{'-':>15}{'-':>8}"
                continue
            median = statistics.median(t[kind])
            ratio = median / statistics.median(reference[kind])
            row[kind] = {"median_s": median, "ratio_vs_torchvision": ratio, "all_s": t[kind]}
            line += f"{median:>13.3f}{ratio:>8.2f}" if kind == "inference" else f"{median:>15.3f}{ratio:>8.2f}"
        results[name] = row
        print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": "python benchmarks/bench_vs_torchvision.py "
                                         + " ".join(argv if argv is not None else sys.argv[1:]),
                                         "date": time.strftime("%Y-%m-%d"),
                                         "device": str(device), "machine": machine, "size": args.size,
                                         "torch": torch.__version__, "results": results}, indent=2))


if __name__ == "__main__":
    main()
