"""What InterContiNet's tasks leave behind: interval widths and certified test samples.

Runs the protocol of `row=intercontinet_interval` (Hydra overrides after the options) and at the
end of every task prints, per interval layer, the mean half-width of the weight intervals, and
for every task seen so far the test accuracy and the share of test samples whose worst case
inside the intervals is still classified right (certified). Nested intervals mean a sample once
certified stays certified and correct, so each task's certified share can only grow.

    python scripts/interval_diagnostics.py --tasks 1 scenario.setting=task seed=2001
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir

import clrun.run as run_module
from clrun.paths import config_dir
from clrun.plugin import StrategyPlugin
from clrun.scenarios.batches import Batch
from clrun.strategies.interval import certified


class IntervalReport(StrategyPlugin):
    """Prints the diagnostics at each task end; ends the run after `stop_after` tasks."""

    def __init__(self, stop_after: int | None) -> None:
        super().__init__()
        self.stop_after = stop_after

    def on_task_end(self, loop, task) -> None:
        net, module = loop.module.net, loop.module
        widths = ", ".join(f"{layer.weight_interval()[1].mean().item():.4g}"
                           for layer in net.interval_layers())
        print(f"after task {task.index}: mean weight half-width per layer [{widths}]")
        for seen in loop.scenario.tasks[: task.index + 1]:
            test = seen.test
            x = loop.scenario.pipeline(test.x, train=False)
            safe = certified(module, Batch(x, test.y, test.task)).float().mean()
            accuracy = module.accuracy(test, loop.scenario.pipeline, loop.settings.eval_batch_size)
            print(f"  task {seen.index}: accuracy {accuracy:6.2f} %, "
                  f"certified {100 * safe:6.2f} %", flush=True)
        if self.stop_after is not None and task.index + 1 >= self.stop_after:
            raise SystemExit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=None, help="stop after this many tasks")
    args, overrides = parser.parse_known_args()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=intercontinet_fmnist",
                                           "row=intercontinet_interval", "logger=none",
                                           "checkpoint=false", *overrides])
    build_plugins = run_module.build_plugins  # the report rides along as one more plugin
    run_module.build_plugins = lambda strategy: [*build_plugins(strategy),
                                                 IntervalReport(args.tasks)]
    with tempfile.TemporaryDirectory() as tmp:
        run_module.run(cfg, Path(tmp))


if __name__ == "__main__":
    main()
