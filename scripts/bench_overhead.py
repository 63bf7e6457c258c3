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

`--tiny` measures what clrun adds to each training step where compute cannot hide it: MLP
784-32-10, batch 32, Adam, class-IL split Fashion-MNIST, 1 and 4 epochs per task, so that the
fixed costs (imports, data, evaluation, importances) cancel: per step = (time at 4 epochs −
time at 1 epoch) / the extra steps. naive, EWC, ER and LwF each against a bare loop doing the
same per-step work (scripts/bare_strategies.py), DGR against scripts/bare_dgr.py (VAE 784-32,
z 8, 375 and 1500 steps per task for classifier and generator each):

    python scripts/bench_overhead.py --tiny --repeats 3
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


TINY = ("model.hidden_sizes=[32]", "optimizer=adam", "optimizer.lr=0.001", "train.batch_size=32",
        "train.drop_last=true", "checkpoint=false", "torch_threads=1", "logger=none",
        "trainer.enable_progress_bar=false", "scenario.setting=class")
TINY_BARE = ("--hidden", "32", "--optimizer", "adam", "--batch-size", "32")
TINY_DGR = ("generator=vae", "generator.hidden_sizes=[32]", "generator.z_dim=8",
            "train.active_units=seen", "train.reset_optimizer=false", "metrics.generative=false")


def tiny_sides(scenario: str, strategy: str, budget: int, out: Path
               ) -> list[tuple[str, list[str]]]:
    """The bare loop and clrun on `--tiny`'s protocol; `budget`: epochs (steps for DGR)."""
    clrun = [sys.executable, "-m", "clrun.cli", f"scenario={scenario}", f"strategy={strategy}",
             *TINY, f"hydra.run.dir={out}"]
    if strategy == "dgr":
        clrun += [*TINY_DGR, "trainer.max_epochs=-1", f"trainer.max_steps={budget}"]
        bare = [sys.executable, str(REPO / "scripts" / "bare_dgr.py"), "--scenario", scenario,
                "--steps", str(budget), *TINY_BARE, "--vae-hidden", "32", "--z-dim", "8"]
    else:
        clrun.append(f"trainer.max_epochs={budget}")
        bare = [*bare_command(scenario, budget), *TINY_BARE, "--strategy", strategy]
    return [(f"bare {strategy}", bare), (f"clrun {strategy}", clrun)]


def tiny(scenario: str, strategies: list[str], repeats: int, out: Path) -> None:
    """Microseconds per step (budget 4 − budget 1, over the extra steps) of each strategy in
    clrun and in its bare loop, and their ratio; also against the bare naive loop."""
    steps_per_epoch = 5 * (12000 // 32) if scenario == "split_fmnist" else None
    print(f"{'strategy':9s} {'bare µs/step':>12s} {'clrun µs/step':>13s} {'ratio':>6s} "
          f"{'× bare naive':>12s}")
    bare_naive = None
    for strategy in strategies:
        low, high = (375, 1500) if strategy == "dgr" else (1, 4)
        extra = 5 * (high - low) if strategy == "dgr" else (high - low) * steps_per_epoch
        loops: dict[str, list[float]] = {}
        for repeat in range(repeats):
            for budget in (low, high) if repeat % 2 == 0 else (high, low):
                sides = tiny_sides(scenario, strategy, budget, out)
                for name, command in sides if repeat % 2 == 0 else reversed(sides):
                    loops.setdefault(f"{name}@{budget}", []).append(timed(command, out)[1])
        per_step = {side: 1e6 * (statistics.median(loops[f"{side}@{high}"])
                                 - statistics.median(loops[f"{side}@{low}"])) / extra
                    for side in (f"bare {strategy}", f"clrun {strategy}")}
        bare, ours = per_step[f"bare {strategy}"], per_step[f"clrun {strategy}"]
        bare_naive = bare if strategy == "naive" else bare_naive
        versus = f"{ours / bare_naive:12.2f}" if bare_naive else f"{'':12s}"
        print(f"{strategy:9s} {bare:12.0f} {ours:13.0f} {ours / bare:6.2f} {versus}", flush=True)


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
    parser.add_argument("--tiny", action="store_true",
                        help="per-step cost of naive, ewc, er, lwf, dgr at MLP 784-32-10")
    args = parser.parse_args()
    scenario = "split_fmnist" if FMNIST.is_file() else "split_digits"
    out = Path("/tmp/clrun-bench")
    if args.tiny:
        if scenario != "split_fmnist":
            sys.exit("--tiny needs Fashion-MNIST (Debian's dataset-fashion-mnist)")
        tiny(scenario, args.strategies or ["naive", "ewc", "er", "lwf", "dgr"], args.repeats,
             out)
        return
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
