"""A replay memory of tensors: stored-form inputs, labels, task ids and optional logits.

The budget is hard (`capacity` samples). Selection is pluggable: reservoir sampling per batch
(O(batch) per insertion), the random-memory rule of Pellegrini et al. 2019 per task, GDumb's
greedy class balance, and iCaRL's herding (see `herding_order`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from clrun.errors import ConfigError
from clrun.scenarios.base import Split

FIELDS = ("x", "y", "task", "logits")


class Buffer:
    """Fixed-capacity tensor store; storage is allocated on the first insertion."""

    def __init__(self, capacity: int, seed: int = 0) -> None:
        if not isinstance(capacity, int) or capacity < 1:
            raise ConfigError("strategy.plugins.*.memory_size", capacity,
                              "must be a positive integer")
        self.capacity = capacity
        self.size = 0
        self.seen = 0  # samples offered so far (reservoir sampling)
        self.data: dict[str, Tensor] = {}
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.size

    def _allocate(self, samples: dict[str, Tensor]) -> None:
        for name, value in samples.items():
            self.data[name] = value.new_zeros((self.capacity, *value.shape[1:]))

    def _write(self, slots: Tensor, samples: dict[str, Tensor]) -> None:
        if not self.data:
            self._allocate(samples)
        for name, value in samples.items():
            self.data[name][slots.to(value.device)] = value

    def _rand(self, high: int | Tensor, n: int) -> Tensor:
        return (torch.rand(n, generator=self.generator) * high).long()

    def add_reservoir(self, **samples: Tensor) -> None:
        """Reservoir sampling: every sample offered so far is kept with equal probability."""
        n = len(next(iter(samples.values())))
        free = min(self.capacity - self.size, n)
        if free:
            self._write(torch.arange(self.size, self.size + free),
                        {k: v[:free] for k, v in samples.items()})
            self.size += free
        rest = n - free
        if rest > 0:
            positions = self.seen + free + torch.arange(rest) + 1  # 1-based stream positions
            slots = (torch.rand(rest, generator=self.generator) * positions).long()
            keep = slots < self.capacity
            index = keep.nonzero().flatten()
            slots = slots[keep]
            if len(slots):
                # within one batch a later sample overwrites an earlier one in the same slot
                order = torch.sort(slots, stable=True).indices
                last = torch.ones(len(slots), dtype=torch.bool)
                last[:-1] = slots[order][1:] != slots[order][:-1]
                chosen = order[last]
                self._write(slots[chosen], {k: v[free + index[chosen]] for k, v in
                                            samples.items()})
        self.seen += n

    def add_random_memory(self, split: Split, task_number: int, **extra: Tensor) -> None:
        """Pellegrini et al. 2019: after the i-th task insert h = M/i of its samples at random,
        replacing h random ones (filling the memory after the first)."""
        h = min(self.capacity // task_number, len(split))
        chosen = torch.randperm(len(split), generator=self.generator)[:h]
        samples = {"x": split.x[chosen], "y": split.y[chosen], "task": split.task[chosen],
                   **{k: v[chosen] for k, v in extra.items()}}
        if self.size < self.capacity:
            free = min(self.capacity - self.size, h)
            self._write(torch.arange(self.size, self.size + free),
                        {k: v[:free] for k, v in samples.items()})
            self.size += free
            samples = {k: v[free:] for k, v in samples.items()}
        if len(samples["y"]):
            slots = torch.randperm(self.size, generator=self.generator)[:len(samples["y"])]
            self._write(slots, samples)

    def add_per_class(self, split: Split, per_class: int) -> None:
        """Append `per_class` random samples of each class (label) of one task's split."""
        for label in split.y.unique().tolist():
            index = (split.y == label).nonzero().flatten()
            chosen = index[torch.randperm(len(index), generator=self.generator)[:per_class]
                           .to(index.device)]
            n = min(len(chosen), self.capacity - self.size)
            self._write(torch.arange(self.size, self.size + n),
                        {"x": split.x[chosen[:n]], "y": split.y[chosen[:n]],
                         "task": split.task[chosen[:n]]})
            self.size += n

    def add_class_balanced(self, **samples: Tensor) -> None:
        """GDumb's greedy sampler: keep a sample if memory is free or its class holds fewer
        than the largest class, evicting a random sample of the largest class."""
        y = samples["y"]
        for i in range(len(y)):
            label = int(y[i])
            one = {k: v[i:i + 1] for k, v in samples.items()}
            if self.size < self.capacity:
                self._write(torch.tensor([self.size]), one)
                self.size += 1
                continue
            labels = self.data["y"][: self.size]
            counts = torch.bincount(labels.cpu(), minlength=label + 1)
            if counts[label] >= counts.max():
                continue
            largest = (labels.cpu() == counts.argmax()).nonzero().flatten()
            self._write(largest[self._rand(len(largest), 1)], one)
        self.seen += len(y)

    def replace_all(self, **samples: Tensor) -> None:
        n = len(next(iter(samples.values())))
        if n > self.capacity:
            raise ValueError(f"{n} samples exceed the memory budget of {self.capacity}")
        self.data = {}
        self._allocate({k: v[:1] for k, v in samples.items()})
        self._write(torch.arange(n), samples)
        self.size = n

    def get(self, name: str) -> Tensor:
        return self.data[name][: self.size]

    def sample(self, n: int) -> dict[str, Tensor]:
        """n samples drawn uniformly with replacement (without, when n >= size: all of them)."""
        if n >= self.size:
            index = torch.randperm(self.size, generator=self.generator)
        else:
            index = self._rand(self.size, n)
        return {k: v[index.to(v.device)] for k, v in self.data.items()}

    def as_split(self) -> Split:
        return Split(self.get("x"), self.get("y"), self.get("task"))

    def state_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "size": self.size, "seen": self.seen,
                "data": self.data, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.capacity, self.size, self.seen = state["capacity"], state["size"], state["seen"]
        self.data = dict(state["data"])
        self.generator.set_state(state["generator"])


def herding_order(features: Tensor, m: int) -> Tensor:
    """iCaRL's herding: greedily pick samples whose running mean best approximates the class
    mean of L2-normalised features; returns the indices of the first m picks in order."""
    features = torch.nn.functional.normalize(features, dim=1)
    mean = features.mean(dim=0)
    chosen: list[int] = []
    running = torch.zeros_like(mean)
    available = torch.ones(len(features), dtype=torch.bool, device=features.device)
    for k in range(1, min(m, len(features)) + 1):
        candidates = (running.unsqueeze(0) + features) / k
        distance = (mean.unsqueeze(0) - candidates).norm(dim=1)
        distance[~available] = float("inf")
        pick = int(distance.argmin())
        chosen.append(pick)
        available[pick] = False
        running += features[pick]
    return torch.tensor(chosen, dtype=torch.long)
