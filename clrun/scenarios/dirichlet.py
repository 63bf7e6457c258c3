"""Dirichlet class-to-task splits (as in the Multiband VAE paper): tasks share classes unevenly.

For T tasks and C classes with concentration alpha: per class draw p ~ Dirichlet(alpha/T * 1_T),
rescale each task's column so it sums to C/(T+2), and give each task that share of the class's
shuffled samples. A class whose rescaled shares exceed 1 in total is scaled back to 1 (a sample
cannot be given twice), so each sample lands in at most one task. Small alpha: nearly disjoint
tasks; large alpha: every task holds every class.
"""

from __future__ import annotations

import torch
from torch import Tensor

from clrun.errors import ConfigError
from clrun.scenarios.base import SETTINGS, InputPipeline, Scenario, Split, Task


def dirichlet_shares(n_classes: int, n_tasks: int, alpha: float, seed: int) -> Tensor:
    """[C, T] fraction of each class's samples given to each task."""
    if alpha <= 0:
        raise ConfigError("scenario.alpha", alpha, "must be > 0")
    generator = torch.Generator().manual_seed(seed)
    concentration = torch.full((n_tasks,), alpha / n_tasks, dtype=torch.float64)
    gamma = torch._standard_gamma(concentration.expand(n_classes, n_tasks).contiguous(),
                                  generator=generator)
    shares = gamma / gamma.sum(dim=1, keepdim=True).clamp_min(1e-300)
    shares = shares * (n_classes / (n_tasks + 2)) / shares.sum(dim=0, keepdim=True)
    over = shares.sum(dim=1, keepdim=True).clamp_min(1.0)
    return shares / over


def _deal(x: Tensor, y: Tensor, shares: Tensor, seed: int) -> list[tuple[Tensor, Tensor]]:
    """Cut each class's shuffled samples by cumulative shares; returns per-task (x, y)."""
    generator = torch.Generator().manual_seed(seed)
    n_classes, n_tasks = shares.shape
    per_task: list[list[Tensor]] = [[] for _ in range(n_tasks)]
    for c in range(n_classes):
        index = (y == c).nonzero().flatten()
        index = index[torch.randperm(len(index), generator=generator)]
        bounds = (torch.cat([torch.zeros(1, dtype=shares.dtype), shares[c].cumsum(0)])
                  * len(index)).floor().long()
        for t in range(n_tasks):
            per_task[t].append(index[bounds[t]:bounds[t + 1]])
    return [(x[torch.cat(parts)], y[torch.cat(parts)]) for parts in per_task]


def dirichlet_scenario(name: str, train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor],
                       setting: str, n_tasks: int, alpha: float, seed: int,
                       pipeline: InputPipeline, data_key: str = "") -> Scenario:
    """Tasks with overlapping classes; labels are the original classes in every setting."""
    if setting not in SETTINGS:
        raise ConfigError("scenario.setting", setting, "use one of: " + ", ".join(SETTINGS))
    n_classes = int(train[1].max()) + 1
    shares = dirichlet_shares(n_classes, n_tasks, alpha, seed)
    train_parts = _deal(*train, shares, seed + 1)
    test_parts = _deal(*test, shares, seed + 2)
    tasks = []
    for t, ((xt, yt), (xs, ys)) in enumerate(zip(train_parts, test_parts, strict=True)):
        classes = tuple(int(c) for c in yt.unique())
        tasks.append(Task(t, classes,
                          Split(xt, yt, torch.full((len(yt),), t, dtype=torch.long)),
                          Split(xs, ys, torch.full((len(ys),), t, dtype=torch.long))))
    heads = [n_classes] * n_tasks if setting == "task" else [n_classes]
    return Scenario(name, setting, tasks, tuple(train[0].shape[1:]), heads, pipeline, data_key)
