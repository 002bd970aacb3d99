"""How many torch CPU threads to train with: each task at a small fixed size, timed with
each ``trainer.threads`` value side by side in one process (repeats interleaved), and the
machine's load average, which decides the answer on a shared machine.

    python scripts/bench_threads.py                  # threads 1 and every core count
    python scripts/bench_threads.py --threads 1 2 4 --repeats 3

Prints a Markdown table: the best and the worst seconds per run for each workload and
thread count (the worst shows what a busy machine does), and the best relative to one
thread (below 1: faster).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from aca.train import run

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
QUIET = ("trainer.device=cpu", "trainer.progress=false", "trainer.checkpoint=false",
         "trainer.resume=false")
# name -> overrides: a few batches of each kind of model the tasks train.
WORKLOADS = {
    "digits NODE-18": ("task=digits", "task.epochs=1", "trainer.max_batches_per_epoch=4"),
    "digits ResNet-18": ("task=digits", "task.model=resnet18", "task.epochs=1",
                         "trainer.max_batches_per_epoch=4"),
    "sines latent ODE": ("task=sines", "task.epochs=1", "trainer.max_batches_per_epoch=4"),
    "vdp (mu)": ("task=vdp", "task.epochs=3"),
    "three_body (masses)": ("task=three_body", "task.epochs=2"),
    "toy analysis": ("task=toy", "task.T_num=3", "task.solvers=[dopri5]",
                     "task.tolerances=[1e-3,1e-6]"),
}


def measure(overrides: tuple[str, ...], threads: int) -> float:
    """Seconds of one whole run (data, training, evaluation, report), as a user waits."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*QUIET, *overrides, f"trainer.threads={threads}"])
    with tempfile.TemporaryDirectory() as out_dir:
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the run's own result table
            run(cfg, out_dir)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cores = len(os.sched_getaffinity(0))
    parser.add_argument("--threads", type=int, nargs="+",
                        default=sorted({1, 2, cores} - {0}) if cores > 1 else [1])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    load_before = os.getloadavg()
    times: dict[tuple[str, int], list[float]] = {}
    for repeat in range(args.repeats):
        order = args.threads if repeat % 2 == 0 else list(reversed(args.threads))
        for name, overrides in WORKLOADS.items():
            for threads in order:
                times.setdefault((name, threads), []).append(measure(overrides, threads))
    load_after = os.getloadavg()

    print(f"{cores} CPUs available; load average (1, 5, 15 min) before "
          f"{', '.join(f'{x:.2f}' for x in load_before)}, after "
          f"{', '.join(f'{x:.2f}' for x in load_after)}; {args.repeats} repeats\n")
    headers = ["workload", *(f"{n} thread(s): best / worst (s)" for n in args.threads),
               *(f"best {n} / best 1" for n in args.threads if n != 1)]
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for name in WORKLOADS:
        cells = [f"{min(times[name, n]):.2f} / {max(times[name, n]):.2f}" for n in args.threads]
        ratios = [f"{min(times[name, n]) / min(times[name, 1]):.2f}"
                  for n in args.threads if n != 1]
        print("| " + " | ".join([name, *cells, *ratios]) + " |")


if __name__ == "__main__":
    main()
