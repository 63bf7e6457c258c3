"""Minibatches made by index slices of in-memory tensors (no DataLoader, no workers)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
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


class StepChunk:
    """The minibatches of several optimizer steps, handed to Lightning as one batch (a plain
    object, so Lightning does not walk it as a collection). It holds their positions and makes
    (and augments) each minibatch only when its step comes, so the global random stream is drawn
    in the same order whatever the chunk size."""

    __slots__ = ("indices", "make")

    def __init__(self, indices: list[Tensor], make: Callable[[Tensor], Batch]) -> None:
        self.indices = indices
        self.make = make

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[Batch]:
        for index in self.indices:
            yield self.make(index)


class StepChunks:
    """A rank's minibatches grouped `steps` at a time: Lightning's per-batch machinery
    (closure, a dozen hooks, fetcher, progress: about half a millisecond) is then paid once per
    chunk instead of once per optimizer step. `max_steps` (> 0) ends the stream after that many
    minibatches over all epochs, since Lightning checks its step budget only between batches.
    """

    def __init__(self, batches: TensorBatches, steps: int, max_steps: int = -1) -> None:
        self.batches = batches
        self.steps = steps
        self.max_steps = max_steps
        self.emitted = 0

    def __len__(self) -> int:
        return -(-len(self.batches) // self.steps)

    def __iter__(self) -> Iterator[StepChunk]:
        chunk: list[Tensor] = []
        for index in self.batches.indices():
            if 0 < self.max_steps <= self.emitted:
                break
            chunk.append(index)
            self.emitted += 1
            if len(chunk) == self.steps:
                yield StepChunk(chunk, self.batches.batch)
                chunk = []
        if chunk:
            yield StepChunk(chunk, self.batches.batch)


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

    def indices(self) -> Iterator[Tensor]:
        """This epoch's minibatches as positions in the split (the permutation draws from
        the batches' own generator, not the global one)."""
        n = len(self.split)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.split.y.device)
        for i in range(self.rank, self._n_batches_total(), self.world_size):
            yield order[i * self.batch_size : (i + 1) * self.batch_size]

    def batch(self, index: Tensor) -> Batch:
        """The minibatch at `index`, made and augmented now."""
        raw = self.split.x[index]
        return Batch(self.pipeline(raw, train=True), self.split.y[index], self.split.task[index],
                     raw, index)

    def __iter__(self) -> Iterator[Batch]:
        for index in self.indices():
            yield self.batch(index)
