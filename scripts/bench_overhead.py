"""Wall time of one protocol through clrun and through a bare PyTorch loop, and their ratio.

Each run is its own process, the two sides alternate, and the median of the repeats is
reported twice: whole-process wall time (imports counted) and the train+eval time each side
measures around its task loop (clrun's `timing.json`). Split Fashion-MNIST (MLP 784-400-400,
batch 128, SGD, class-IL) when Debian's data set is installed, else split_digits. With
--strategies, clrun's regularizers and ER are timed against clrun's naive run on the same
protocol (their per-step cost plus importances). `--strategies dgr` times clrun's DGR
(generator=vae, van de Ven's protocol: Adam kept across tasks, batch 128, `--dgr-steps` steps
per task for the classifier and for the generator, class-IL over the classes seen) against
scripts/bare_dgr.py, the same work in plain PyTorch, which also prints how the time splits
between classifier, generator and sampling, task by task.

    python scripts/bench_overhead.py --epochs 2 10 --repeats 3
    python scripts/bench_overhead.py --epochs 5 --strategies ewc si mas
    python scripts/bench_overhead.py --strategies dgr --dgr-steps 300
"""

from __future__ import annotations

import argparse
import json
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


def dgr_commands(scenario: str, steps: int, out: Path) -> list[tuple[str, list[str]]]:
    clrun = [sys.executable, "-m", "clrun.cli", f"scenario={scenario}", "scenario.setting=class",
             "strategy=dgr", "generator=vae", "model=mlp", "optimizer=adam",
             "optimizer.lr=0.001", "train.batch_size=128", "train.active_units=seen",
             "train.reset_optimizer=false", "trainer.max_epochs=-1",
             f"trainer.max_steps={steps}", "metrics.generative=false", "checkpoint=false",
             "logger=none", "trainer.enable_progress_bar=false", f"hydra.run.dir={out}"]
    bare = [sys.executable, str(REPO / "scripts" / "bare_dgr.py"), "--scenario", scenario,
            "--steps", str(steps)]
    return [("bare dgr", bare), ("clrun dgr", clrun)]


def bare_command(scenario: str, epochs: int) -> list[str]:
    return [sys.executable, str(REPO / "scripts" / "bare_loop.py"), "--scenario", scenario,
            "--epochs", str(epochs), "--batch-size", "128"]


def timed(command: list[str], out: Path) -> tuple[float, float]:
    """(whole process wall time, train+eval time the program reports)."""
    start = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - start
    marker = "train+eval seconds: "
    if marker in done.stdout:
        return wall, float(done.stdout.split(marker)[1].split()[0])
    return wall, json.loads((out / "timing.json").read_text())["train_eval_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, nargs="+", default=[2, 10])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--strategies", nargs="*", default=[])
    parser.add_argument("--dgr-steps", type=int, default=300)
    args = parser.parse_args()
    scenario = "split_fmnist" if FMNIST.is_file() else "split_digits"
    out = Path("/tmp/clrun-bench")
    print(f"scenario={scenario}, repeats={args.repeats} (median), each run a fresh process")
    if "dgr" in args.strategies:
        compare(dgr_commands(scenario, args.dgr_steps, out), args.repeats, out,
                f"steps/task={args.dgr_steps}", "bare dgr")
    others = [s for s in args.strategies if s != "dgr"]
    if args.strategies and not others:
        return
    for epochs in args.epochs:
        baseline = ("bare", bare_command(scenario, epochs))
        sides = [baseline] if not others else []
        sides.append(("clrun naive", clrun_command(scenario, epochs, "naive", out)))
        sides += [(f"clrun {s}", clrun_command(scenario, epochs, s, out)) for s in others]
        compare(sides, args.repeats, out, f"epochs/task={epochs:3d}",
                "bare" if not others else "clrun naive")


def compare(sides: list[tuple[str, list[str]]], repeats: int, out: Path, label: str,
            reference: str) -> None:
    """Run the sides alternately `repeats` times; print medians and ratios to `reference`."""
    walls: dict[str, list[float]] = {name: [] for name, _ in sides}
    loops: dict[str, list[float]] = {name: [] for name, _ in sides}
    for repeat in range(repeats):
        order = sides if repeat % 2 == 0 else list(reversed(sides))
        for name, command in order:
            wall, loop = timed(command, out)
            walls[name].append(wall)
            loops[name].append(loop)
    wall_ref = statistics.median(walls[reference])
    loop_ref = statistics.median(loops[reference])
    for name in walls:
        wall, loop = statistics.median(walls[name]), statistics.median(loops[name])
        print(f"{label}  {name:14s} wall {wall:6.2f} s (ratio "
              f"{wall / wall_ref:.3f})  train+eval {loop:6.2f} s (ratio "
              f"{loop / loop_ref:.3f})  [walls: "
              + ", ".join(f"{t:.1f}" for t in walls[name]) + "]")


if __name__ == "__main__":
    main()
