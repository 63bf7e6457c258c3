"""How far GUIDE's guidance moves replay at several scales, on a finished `strategy=guide` run.

The run's last diffusion model draws the earlier tasks' classes (the same noise and classes at
every scale) and the trained classifier guides them toward the last task, as at the last task's
start but with the final networks; printed per scale: the mean probability the classifier gives
the last task's classes (softmax over every class seen), and how far the samples moved from the
unguided ones (mean absolute pixel change). At this probe's s the training run's
`guide_new_class_probability_*` were measured; a scale that does not raise the probability does
not steer replay toward the classes being learned.

    python scripts/guide_scale_probe.py RUN_DIR --scales 0.5 2 8 32 --samples 256
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from clrun.run import finished_classifier
from clrun.strategies.guide import GuidedReplay


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.5, 2.0, 8.0, 32.0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    scenario, module, state, plugins = finished_classifier(args.run_dir)
    index, guide = next((i, p) for i, p in enumerate(plugins) if isinstance(p, GuidedReplay))
    guide.load_state_dict(state["plugins"][index])
    last = scenario.tasks[-1]
    guide.pipeline = scenario.pipeline
    guide.seen_classes = scenario.natural_classes(scenario.tasks[:-1])
    guide.locate_units(scenario, last, torch.device("cpu"))
    guide.previous = guide.generator.eval()
    print(f"earlier classes {guide.seen_classes.tolist()}, guided toward "
          f"{scenario.natural_classes([last]).tolist()}; {args.samples} samples, DDIM-"
          f"{guide.previous.sample_steps}")
    unguided = guide.probe(module, args.samples, args.seed, guided=False)
    print(f"unguided      new-class probability {guide.new_class_mass(module, unguided):.4f}")
    for scale in args.scales:
        guided = guide.probe(module, args.samples, args.seed, scale=scale)
        change = float((guided - unguided).abs().mean())
        print(f"s = {scale:<8g}  new-class probability {guide.new_class_mass(module, guided):.4f}"
              f"  mean |pixel change| {change:.4f}", flush=True)


if __name__ == "__main__":
    main()
