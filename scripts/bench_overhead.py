"""Wall time of one protocol through clrun and through a bare PyTorch loop, and their ratio.

Each run is its own process (imports counted), the two sides alternate, and the median of the
repeats is reported. Split Fashion-MNIST (MLP 784-400-400, batch 128, SGD, class-IL) when
Debian's data set is installed, else split_digits. With --strategies, clrun's regularizers are
timed against clrun's naive run on the same protocol (their per-step cost plus importances).

    python scripts/bench_overhead.py --epochs 2 10 --repeats 3
    python scripts/bench_overhead.py --epochs 5 --strategies ewc si mas
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def clrun_command(scenario: str, epochs: int, strategy: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "clrun.cli", f"scenario={scenario}", "scenario.setting=class",
            f"strategy={strategy}", "optimizer=sgd", "optimizer.lr=0.001", "model=mlp",
            "train.batch_size=128", "train.drop_last=true", f"trainer.max_epochs={epochs}",
            "logger=none", "trainer.enable_progress_bar=false", f"hydra.run.dir={out}"]


def bare_command(scenario: str, epochs: int) -> list[str]:
    return [sys.executable, str(REPO / "scripts" / "bare_loop.py"), "--scenario", scenario,
            "--epochs", str(epochs), "--batch-size", "128"]


def wall_time(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=REPO)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, nargs="+", default=[2, 10])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--strategies", nargs="*", default=[])
    args = parser.parse_args()
    scenario = "split_fmnist" if FMNIST.is_file() else "split_digits"
    out = Path("/tmp/clrun-bench")
    print(f"scenario={scenario}, repeats={args.repeats} (median), each run a fresh process")
    for epochs in args.epochs:
        baseline = ("bare", bare_command(scenario, epochs))
        sides = [baseline] if not args.strategies else []
        sides.append(("clrun naive", clrun_command(scenario, epochs, "naive", out)))
        sides += [(f"clrun {s}", clrun_command(scenario, epochs, s, out))
                  for s in args.strategies]
        times: dict[str, list[float]] = {name: [] for name, _ in sides}
        for repeat in range(args.repeats):
            order = sides if repeat % 2 == 0 else list(reversed(sides))
            for name, command in order:
                times[name].append(wall_time(command))
        medians = {name: statistics.median(values) for name, values in times.items()}
        reference = "bare" if "bare" in medians else "clrun naive"
        for name, median in medians.items():
            spread = ", ".join(f"{t:.1f}" for t in times[name])
            print(f"epochs/task={epochs:3d}  {name:14s} {median:7.2f} s  [{spread}]  "
                  f"ratio vs {reference}: {median / medians[reference]:.3f}")


if __name__ == "__main__":
    main()
