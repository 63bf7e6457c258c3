"""Where BI-R's encoder puts each class against the class modes of its mixture prior: for a
finished `strategy=bir` run, the mean over a class's test images and latent dimensions of
(posterior mean − mode k)² / prior variance of mode k, for every mode k. A class whose images
sit nearer other modes than its own is sampled (from its own mode) where the decoder never saw
it.

    python scripts/bir_prior_modes.py RUN_DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from clrun.run import finished_classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    scenario, module, _, _ = finished_classifier(parser.parse_args().run_dir)
    net = module.net
    means, variances = net.feedback.prior_means, net.feedback.prior_logvars.exp()
    print("classes per task:", [scenario.natural_classes([t]).tolist() for t in scenario.tasks])
    with torch.no_grad():
        for task in scenario.tasks:
            posterior = net.feedback.mu(net.backbone(scenario.pipeline(task.test.x, train=False)))
            classes = scenario.natural_of(task, task.test.y)
            for c in classes.unique().tolist():
                z = posterior[classes == c].unsqueeze(1)  # (images, 1, z)
                distance = ((z - means) ** 2 / variances).mean(dim=(0, 2))
                print(f"class {c}: to its own mode {float(distance[c]):.2f}; to each mode "
                      f"{[round(float(d), 2) for d in distance]}")


if __name__ == "__main__":
    main()
