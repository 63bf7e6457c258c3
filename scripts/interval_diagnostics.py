"""What InterContiNet's first task leaves behind: interval widths and certified test samples.

Runs the protocol of `row=intercontinet_interval` (any overrides after the script name) for the
first task only and prints, per interval layer, the mean half-width of the weight intervals as a
fraction of the initial radius, and the share of task 0's test samples whose worst case inside
the intervals is still classified right (certified: these can never be forgotten).

    python scripts/interval_diagnostics.py scenario.setting=task seed=2001
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from clrun.paths import config_dir
from clrun.plugin import StrategyPlugin
from clrun.run import run
from clrun.scenarios.batches import Batch
from clrun.strategies.interval import robust_logits


class StopAfterFirstTask(StrategyPlugin):
    """Prints the diagnostics at the end of task 0 and ends the run there."""

    def on_task_end(self, loop, task) -> None:
        net, module = loop.module.net, loop.module
        for index, layer in enumerate(net.interval_layers()):
            half = layer.weight_interval()[1]
            print(f"layer {index}: mean half-width {half.mean().item():.4f} "
                  f"(initial radius {layer.weight_radius.mean().item():.4f})")
        test = loop.scenario.tasks[0].test
        x = loop.scenario.pipeline(test.x, train=False)
        with torch.no_grad():
            lower, middle, upper = net.bounds(x)
            batch = Batch(x, test.y, test.task)
            robust = robust_logits(lower, upper, module.target_units(batch))
            certified = module.task_logits(robust, test.task).argmax(dim=1) == test.y
            correct = module.task_logits(middle, test.task).argmax(dim=1) == test.y
        print(f"task 0 test: accuracy {100 * correct.float().mean():.2f} %, "
              f"certified {100 * certified.float().mean():.2f} %")
        raise SystemExit(0)


def main() -> None:
    overrides = ["experiment=intercontinet_fmnist", "row=intercontinet_interval", "logger=none",
                 "checkpoint=false", *sys.argv[1:]]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    import clrun.run as run_module

    build_plugins = run_module.build_plugins
    run_module.build_plugins = lambda strategy: [*build_plugins(strategy), StopAfterFirstTask()]
    with tempfile.TemporaryDirectory() as tmp:
        run(cfg, Path(tmp))


if __name__ == "__main__":
    main()
