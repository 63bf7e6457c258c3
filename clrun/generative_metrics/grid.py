"""Sample grids: one row per natural class seen so far, each image captioned with the natural
class a `Labeller` gives it (the classifier's, or the feature net's when the generator is the
learner).
A conditional generator draws each row's class; an unconditional one fills the rows by the
feature net's reading of a pool of samples (empty places: none came)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from clrun.generative_metrics.feature_net import TrainedFeatureNet
from clrun.generative_metrics.scores import Sampler, predicted_classes
from clrun.plots import new_figure, save_figure
from clrun.scenarios.base import Scenario

#: natural classes of unit-space images, given the task each row's class belongs to
Labeller = Callable[[Tensor, Tensor], Tensor]

MAX_ROWS = 20


def grid_samples(sampler: Sampler, classes: Tensor, columns: int, net: TrainedFeatureNet
                 ) -> list[Tensor]:
    """Up to `columns` unit-space samples of each class."""
    if sampler.conditional:
        return [sampler.sample(columns, torch.full((columns,), int(c), device=classes.device))
                for c in classes]
    pool = sampler.sample(4 * columns * len(classes))
    labels = predicted_classes(net, pool)
    return [pool[labels == c][:columns] for c in classes]


def save_sample_grid(sampler: Sampler, scenario: Scenario, n_seen: int, labeller: Labeller,
                     net: TrainedFeatureNet, path: Path, title: str, device: torch.device,
                     columns: int = 8) -> Path:
    tasks = scenario.tasks[:n_seen]
    classes = scenario.natural_classes(tasks)[:MAX_ROWS].to(device)
    owner = {int(c): t for t in reversed(tasks) for c in scenario.natural_of(t, t.train.y).unique()}
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(0)
        rows = grid_samples(sampler, classes, columns, net)
    channels, height, width = scenario.input_shape
    canvas = torch.ones(len(classes) * height, columns * width, channels)
    fig, (ax,) = new_figure(0.9 * columns + 1, 0.9 * len(classes) + 0.6)
    for r, (cls, images) in enumerate(zip(classes.tolist(), rows, strict=True)):
        if not len(images):
            continue
        task = torch.full((len(images),), owner[cls].index, device=images.device)
        labels = labeller(images, task)
        for c, (image, label) in enumerate(zip(images.cpu(), labels.tolist(), strict=True)):
            canvas[r * height:(r + 1) * height, c * width:(c + 1) * width] = \
                image.permute(1, 2, 0).clamp(0, 1)
            ax.text((c + 0.05) * width, (r + 0.25) * height, str(label), color="red",
                    fontsize=6)
    ax.imshow(canvas.squeeze(-1).numpy() if channels == 1 else canvas.numpy(),
              cmap="gray" if channels == 1 else None, vmin=0, vmax=1)
    ax.set_yticks([(r + 0.5) * height for r in range(len(classes))],
                  [f"class {c}" for c in classes.tolist()], fontsize=7)
    ax.set_xticks([])
    ax.set_title(title, fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path)
