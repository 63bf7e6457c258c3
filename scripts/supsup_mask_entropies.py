"""Why entropy-based task inference picks the mask it picks: for a finished SupSup run
(domain- or class-IL), each learned mask's mean output entropy on every task's test images, and
for what share of single images each mask has the lowest entropy (what `inference=every_mask`
with one image chooses; the one-shot gradient approximates it).

    python scripts/supsup_mask_entropies.py RUN_DIR

RUN_DIR is a clrun run directory (its `.hydra/config.yaml` and last checkpoint are read).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from clrun.run import finished_classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    scenario, module, state, _ = finished_classifier(parser.parse_args().run_dir)
    n_masks = int(state["stages_done"])
    with torch.no_grad():
        for task in scenario.tasks:
            x = scenario.pipeline(task.test.x, train=False)
            entropies = module.net.mask_entropies(x, n_masks)
            lowest = torch.bincount(entropies.argmin(0), minlength=n_masks) / len(x) * 100
            print(f"task {task.index}: mean entropy per mask "
                  f"{[round(float(e), 3) for e in entropies.mean(1)]}; lowest for "
                  f"{[round(float(s), 1) for s in lowest]} % of its images")


if __name__ == "__main__":
    main()
