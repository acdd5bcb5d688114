"""Training throughput (images/s, forward + loss + backward + SGD step), batch 32, in one run.

Compares our SSD-MobileNetV1 in fp32, bf16 autocast, and bf16 autocast + channels_last with
torchvision's ``ssdlite320_mobilenet_v3_large`` (its own loss, fp32) as the reference. Variants are
measured in interleaved rounds so drift hits all of them alike; the table gives the median of the
rounds and the ratio to the reference.

    python bench/train.py [--alpha 0.5] [--size 256] [--batch 32] [--rounds 3] [--steps 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def synthetic_targets(batch: int, size: int, normalised: bool, num_classes: int):
    g = torch.Generator().manual_seed(0)
    targets = []
    for _ in range(batch):
        n = int(torch.randint(1, 6, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * 0.7
        wh = torch.rand(n, 2, generator=g) * 0.25 + 0.05
        boxes = torch.cat([xy, xy + wh], dim=1)
        if not normalised:
            boxes = boxes * size
        labels = torch.randint(1, num_classes + 1, (n,), generator=g)
        targets.append({"boxes": boxes, "labels": labels})
    return targets


def ours(alpha: float, size: int, batch: int, amp: bool, channels_last: bool):
    from detector.loss import MultiBoxLoss
    from detector.models import ssd_mobilenet_v1

    model = ssd_mobilenet_v1(20, alpha=alpha, image_size=(size, size)).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    criterion = MultiBoxLoss()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    images = torch.rand(batch, 3, size, size).contiguous(memory_format=fmt)
    targets = synthetic_targets(batch, size, True, 20)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            deltas, logits = model(images)
        loss = criterion(deltas.float(), logits.float(), model.anchors, targets)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def torchvision_ssdlite(batch: int):
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    model = ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=21
    ).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    images = list(torch.rand(batch, 3, 320, 320))
    targets = synthetic_targets(batch, 320, False, 20)

    def step() -> None:
        losses = model(images, targets)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    variants = {
        "torchvision ssdlite320_mobilenet_v3_large, fp32 (reference)": torchvision_ssdlite(
            args.batch
        ),
        f"ours alpha {args.alpha:g} {args.size}px, fp32": ours(
            args.alpha, args.size, args.batch, False, False
        ),
        f"ours alpha {args.alpha:g} {args.size}px, bf16 autocast": ours(
            args.alpha, args.size, args.batch, True, False
        ),
        f"ours alpha {args.alpha:g} {args.size}px, fp32 + channels_last": ours(
            args.alpha, args.size, args.batch, False, True
        ),
        f"ours alpha {args.alpha:g} {args.size}px, bf16 + channels_last": ours(
            args.alpha, args.size, args.batch, True, True
        ),
    }
    for step in variants.values():  # warm-up (allocator, oneDNN primitive caches)
        step()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, step in variants.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - t0) / args.steps)
    ref_name = next(iter(variants))
    ref = args.batch / statistics.median(times[ref_name])
    print(
        f"\ntraining throughput, batch {args.batch}, {args.threads} threads, median of {args.rounds} rounds\n"
    )
    print(f"| {'variant':<62} | {'images/s':>8} | {'vs reference':>12} |")
    print(f"| {'-' * 62} | {'-' * 8}:| {'-' * 12}:|")
    for name, ts in times.items():
        ips = args.batch / statistics.median(ts)
        print(f"| {name:<62} | {ips:8.1f} | {ips / ref:11.2f}x |")


if __name__ == "__main__":
    main()
