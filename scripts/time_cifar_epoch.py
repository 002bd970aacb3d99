"""Time one CIFAR training epoch of NODE-18 (ACA, adjoint, naive) and ResNet-18 on
random tensors of CIFAR shape (no dataset needed; meant for a GPU machine).

    python scripts/time_cifar_epoch.py --out results/cifar10 [--batches 20] [--width 64]

Each model trains ``--batches`` SGD steps (after ``--warmup`` untimed ones) on
normally distributed 3x32x32 images with random labels, under the paper's solver
setting (heun_euler, rtol = atol = 1e-2); the mean step time is scaled to one
epoch of 50,000 images. Random inputs change how many steps the adaptive solver
takes, so the ratios between rows matter more than the absolute times. Writes
``epoch_timing.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import aca
from aca.models.resnet import build_model, parameter_count
from aca.report.format import markdown_table

CIFAR_TRAIN_SIZE = 50_000
RUNS = (("node18", "aca"), ("node18", "adjoint"), ("node18", "naive"), ("resnet18", None))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training(model_name: str, method: str | None, args: argparse.Namespace,
                  device: torch.device, amp: bool = False,
                  compile_backend: str | None = None) -> list:
    """One row: mean step time, epoch estimate, NFE per step, peak GPU memory. ``amp``:
    the loss under bfloat16 autocast (backward after it, as the trainer's ``amp``);
    ``compile_backend``: the model through ``torch.compile`` with that backend."""
    torch.manual_seed(0)
    ode = {"solver": "heun_euler", "gradient": method or "aca", "rtol": 1e-2, "atol": 1e-2}
    model = build_model(model_name, num_classes=10, width=args.width, num_stages=args.stages,
                        ode_options=ode).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    images = torch.randn(args.batch_size, 3, 32, 32, device=device)
    labels = torch.randint(0, 10, (args.batch_size,), device=device)
    trained = torch.compile(model, backend=compile_backend) if compile_backend else model

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(trained(images), labels)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    started = time.perf_counter()
    with aca.track_stats() as stats:
        for _ in range(args.batches):
            step()
        synchronize(device)
    seconds = (time.perf_counter() - started) / args.batches
    epoch_steps = math.ceil(CIFAR_TRAIN_SIZE / args.batch_size)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    label = f"NODE-18 ({method})" if model_name == "node18" else "ResNet-18"
    return [label, parameter_count(model), 1000 * seconds, seconds * epoch_steps,
            stats.nfe_forward / args.batches, stats.nfe_backward / args.batches, peak]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--width", type=int, default=64, help="64: the paper's networks")
    parser.add_argument("--stages", type=int, default=4, help="4: the paper's networks")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=20, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    rows = []
    for model_name, method in RUNS:
        rows.append(time_training(model_name, method, args, device))
        print(rows[-1])
    baseline = rows[0][3]
    rows = [row + [row[3] / baseline] for row in rows]
    headers = ["model", "parameters", "ms / step", "s / epoch (est.)", "NFE fwd / step",
               "NFE bwd / step", "peak GPU memory (GiB)", "time vs NODE-18 (aca)"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    title = (f"One CIFAR epoch ({CIFAR_TRAIN_SIZE} images, batch {args.batch_size}) estimated "
             f"from {args.batches} steps on random inputs, width {args.width}, {name}, "
             f"torch {torch.__version__}\n\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "epoch_timing.md").write_text(title + markdown_table(headers, rows))
    print(args.out / "epoch_timing.md")


if __name__ == "__main__":
    main()
