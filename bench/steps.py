"""Where a training step's time goes: augmentation, forward, backward, optimizer step — per batch.

    python bench/steps.py                          # the default recipe (batch 128), 2 threads
    python bench/steps.py --batch-size 256 --threads 1
    python bench/steps.py --no-augment

Times the pieces `mnistctl train` runs (its batches, model, optimizer and schedule) on random 28×28 images, in
fp32 and without the moving average of the weights (bf16, where it is the default, and the EMA are measured by
bench/train.py as a whole), synchronously and one after another, for --steps steps after a warm-up, and prints
the median milliseconds of each phase and the images/s they add up to; then the evaluation of 10,000 images
as training does it after every epoch. No MNIST needed. Run it alone: the machine's noise
is the size of the smaller phases.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="compact")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the architecture's recipe")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None)
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    from mnistctl.batches import EpochBatches
    from mnistctl.config import TrainConfig
    from mnistctl.engine import evaluate
    from mnistctl.models import get_architecture
    from mnistctl.train import make_optimizer, schedule_factor

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig(arch=args.arch, batch_size=args.batch_size, augment=args.augment).resolved()
    arch = get_architecture(cfg.arch)
    torch.manual_seed(0)
    model = arch.build()
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = make_optimizer(cfg, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_factor(cfg.schedule, 10_000))
    bs = cfg.batch_size
    images = torch.randint(0, 256, (bs * 8, 28, 28), dtype=torch.uint8)
    batches = EpochBatches(images, torch.randint(0, 10, (bs * 8,)), cfg, arch.normalization, torch.device("cpu"))
    phases: dict[str, list[float]] = {"batch (augment, normalise, layout)": [], "forward + loss": [], "backward": []}
    phases["optimizer step"] = []

    def epoch(k: int, record: bool) -> None:
        t0 = time.perf_counter()
        for x, y, _ in batches.epoch(k):  # 8 batches
            t1 = time.perf_counter()
            loss = F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing)
            t2 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            t3 = time.perf_counter()
            optimizer.step()
            scheduler.step()
            t4 = time.perf_counter()
            if record:
                for name, seconds in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                    phases[name].append(seconds)
            t0 = time.perf_counter()

    for k in range(3):
        epoch(k, False)
    for k in range(max(1, args.steps // 8)):
        epoch(k, True)
    medians = {name: statistics.median(v) * 1e3 for name, v in phases.items()}
    total = sum(medians.values())
    print(
        f"{cfg.arch}, batch {bs}, {torch.get_num_threads()} threads, augment "
        f"{'rotate/scale/shift' if cfg.augment and (cfg.rotate or cfg.scale) else 'shift' if cfg.augment else 'off'}; "
        f"median of {args.steps} steps\n"
    )
    print("| phase | ms per batch | share |\n|---|---|---|")
    for name, ms in medians.items():
        print(f"| {name} | {ms:.2f} | {ms / total:.0%} |")
    print(f"| **step** | **{total:.2f}** | {bs / total * 1e3:,.0f} images/s |")
    mean, std = arch.normalization
    test = (torch.rand(10_000, 1, 28, 28) - mean) / std
    test_labels = torch.randint(0, 10, (10_000,))
    evaluate(model, test[:2000], test_labels[:2000], torch.device("cpu"))  # warm-up
    start = time.perf_counter()
    evaluate(model, test, test_labels, torch.device("cpu"))
    print(f"| evaluation of 10,000 images (after every epoch) | {(time.perf_counter() - start) * 1e3:.0f} | |")


if __name__ == "__main__":
    main()
