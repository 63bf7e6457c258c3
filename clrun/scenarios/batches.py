"""Minibatches made by index slices of in-memory tensors (no DataLoader, no workers)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import Tensor

from clrun.scenarios.base import InputPipeline, Split


class Batch(NamedTuple):
    """What `training_step` receives; replay plugins return a longer one from `extend_batch`.

    `raw` holds the samples in stored form (un-augmented, e.g. uint8) so a replay buffer can
    keep them compactly and augment them afresh when they are replayed; `index` their positions
    in the split they came from (BinPlay derives each sample's latent code from it).
    """

    x: Tensor
    y: Tensor
    task: Tensor
    raw: Tensor | None = None
    index: Tensor | None = None


class TensorBatches:
    """Iterates a `Split` in shuffled minibatches; one random permutation per epoch.

    Under DDP each rank takes every `world_size`-th batch of the same permutation, so ranks
    see disjoint data without a sampler; every rank gets the same number of full batches (the
    remainder is dropped), as collective operations need.
    """

    def __init__(
        self,
        split: Split,
        pipeline: InputPipeline,
        batch_size: int,
        shuffle: bool,
        drop_last: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.split = split
        self.pipeline = pipeline
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = torch.Generator().manual_seed(seed)
        self.rank = rank
        self.world_size = world_size

    def _n_batches_total(self) -> int:
        n = len(self.split)
        if self.world_size > 1:
            return n // self.batch_size // self.world_size * self.world_size
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __len__(self) -> int:
        return len(range(self.rank, self._n_batches_total(), self.world_size))

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.split)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.split.y.device)
        for i in range(self.rank, self._n_batches_total(), self.world_size):
            index = order[i * self.batch_size : (i + 1) * self.batch_size]
            raw = self.split.x[index]
            yield Batch(self.pipeline(raw, train=True), self.split.y[index],
                        self.split.task[index], raw, index)
