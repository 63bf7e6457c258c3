"""FID, precision and recall of a generator's samples against every seen task's test images.

For task j the generator draws as many samples as task j has test images: a task-conditioned
generator (`sample_task`) for task j; a conditional one for exactly the natural classes of those
images; an unconditional one from a shared
pool, from which task j takes, for every class c, as many samples the feature net reads as c
as task j has test images of c (a sample can serve several tasks, so Dirichlet splits get their
class mix). When the generator makes too few of a class even after `max_pools` pools
(`metrics.max_pools`), the shortfall is made up with its other samples: a generator that forgot
a task is scored on what it makes instead, and its FID shows the forgetting instead of the task
dropping out of the mean.
FID comes from torchmetrics' `FrechetInceptionDistance` with the feature net as its `feature`
module; precision and recall from PRD on the same features.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor
from torchmetrics.image.fid import FrechetInceptionDistance

from clrun.generative_metrics.feature_net import FeatureExtractor, TrainedFeatureNet
from clrun.generative_metrics.precision_recall import PRDSettings, precision_recall
from clrun.scenarios.base import Scenario, Task

MAX_POOLS = 20  # pools an unconditional generator gets to cover a task's classes, by default


class Sampler(Protocol):
    """What generative metrics need of a generator (see `StrategyPlugin.sampler`): a module
    (sampled in eval mode) with `sample`."""

    conditional: bool
    training: bool

    def sample(self, n: int, conditions: Tensor | None = None) -> Tensor: ...

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...


@dataclass
class GenerativeScores:
    """Task matrices (rows: after each stage; entries of unseen tasks are None)."""

    fid: list[list[float | None]] = field(default_factory=list)
    precision: list[list[float | None]] = field(default_factory=list)
    recall: list[list[float | None]] = field(default_factory=list)

    def append(self, row: dict[str, list[float | None]]) -> None:
        for name in ("fid", "precision", "recall"):
            getattr(self, name).append(row[name])

    def to_dict(self) -> dict:
        return {"fid": self.fid, "precision": self.precision, "recall": self.recall}


def _batched_features(extractor: FeatureExtractor, x: Tensor) -> Tensor:
    return torch.cat([extractor(x[i:i + 1024]) for i in range(0, len(x), 1024)])


def predicted_classes(net: TrainedFeatureNet, x: Tensor) -> Tensor:
    return torch.cat([net.net(x[i:i + 1024]).argmax(1) for i in range(0, len(x), 1024)])


def scored_subsets(tasks: list[Task], per_task: int | None, seed: int) -> list[Tensor | None]:
    """Which test images of each task are scored: all (None), or `per_task` drawn at random
    (the same for every stage of a run: the seed is the run's)."""
    if per_task is None:
        return [None] * len(tasks)
    rng = torch.Generator().manual_seed(seed)
    return [torch.randperm(len(t.test), generator=rng)[:per_task] for t in tasks]


def samples_for_tasks(sampler: Sampler, scenario: Scenario, tasks: list[Task],
                      net: TrainedFeatureNet, device: torch.device,
                      max_pools: int = MAX_POOLS,
                      subsets: list[Tensor | None] | None = None) -> list[Tensor]:
    """Generated unit-space images for each task, as many as its scored test images, in
    their class mix (see the module's docstring)."""
    subsets = subsets or [None] * len(tasks)
    wanted = [scenario.natural_of(t, t.test.y if keep is None else t.test.y[keep]).to(device)
              for t, keep in zip(tasks, subsets, strict=True)]
    if hasattr(sampler, "sample_task"):  # conditioned on the task (Multiband VAE)
        return [sampler.sample_task(len(c), t.index) for t, c in zip(tasks, wanted, strict=True)]
    if sampler.conditional:
        return [torch.cat([sampler.sample(len(c[i:i + 1024]), c[i:i + 1024])
                           for i in range(0, len(c), 1024)]) for c in wanted]
    counts = [c.unique(return_counts=True) for c in wanted]
    needed: dict[int, int] = {}  # per class, the most any task asks for
    for classes, n in counts:
        for c, k in zip(classes.tolist(), n.tolist(), strict=True):
            needed[c] = max(needed.get(c, 0), k)
    pools: list[Tensor] = []
    labels: list[Tensor] = []
    for _ in range(max_pools):
        pool = sampler.sample(sum(len(c) for c in wanted))
        pools.append(pool)
        labels.append(predicted_classes(net, pool))
        found = torch.bincount(torch.cat(labels), minlength=max(needed) + 1)
        if all(int(found[c]) >= k for c, k in needed.items()):
            break
    images, read_as = torch.cat(pools), torch.cat(labels)
    chosen = []
    for (classes, n), c_task in zip(counts, wanted, strict=True):
        picked = torch.zeros(len(images), dtype=torch.bool, device=images.device)
        for c, k in zip(classes.tolist(), n.tolist(), strict=True):
            picked[(read_as == c).nonzero().flatten()[:k]] = True
        short = len(c_task) - int(picked.sum())
        picked[(~picked).nonzero().flatten()[:short]] = True  # what it makes instead
        chosen.append(images[picked])
    return chosen


def score_row(sampler: Sampler, scenario: Scenario, n_seen: int, net: TrainedFeatureNet,
              prd: PRDSettings, device: torch.device, seed: int, max_pools: int = MAX_POOLS,
              subsets: list[Tensor | None] | None = None) -> dict[str, list[float | None]]:
    """FID, precision and recall for tasks 0..n_seen-1 (None for later tasks), on each task's
    test images (`subsets[j]`: those of task j only). A task with fewer test images than PRD has
    clusters gets FID only: with about one image per cluster its precision and recall would
    measure nothing (and k-means fails below half of one)."""
    net.net.to(device)
    extractor = FeatureExtractor(net.net).to(device)
    tasks = scenario.tasks[:n_seen]
    row: dict[str, list[float | None]] = {k: [None] * scenario.n_tasks
                                          for k in ("fid", "precision", "recall")}
    with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda"
                                                else []):
        torch.manual_seed(seed)
        subsets = (subsets or [None] * scenario.n_tasks)[:n_seen]
        generated = samples_for_tasks(sampler, scenario, tasks, net, device, max_pools, subsets)
        too_small: list[int] = []  # tasks whose test set cannot fill the PRD clusters
        for j, (task, fake, keep) in enumerate(zip(tasks, generated, subsets, strict=True)):
            real = scenario.pipeline.to_unit(task.test.x if keep is None else task.test.x[keep])
            real = real.to(device)
            fid = FrechetInceptionDistance(feature=extractor, input_img_size=scenario.input_shape,
                                           reset_real_features=True).to(device)
            fid.update(real, real=True)
            fid.update(fake.to(device), real=False)
            row["fid"][j] = max(float(fid.compute()), 0.0)
            if len(real) < prd.clusters:
                too_small.append(j)
                continue
            precision, recall = precision_recall(_batched_features(extractor, real),
                                                 _batched_features(extractor, fake), prd,
                                                 seed)
            row["precision"][j], row["recall"][j] = precision, recall
    if too_small:
        print(f"clrun: no precision/recall for task(s) {', '.join(map(str, too_small))}: fewer "
              f"test images than metrics.prd.clusters={prd.clusters} (lower it to score them)",
              file=sys.stderr, flush=True)
    return row
