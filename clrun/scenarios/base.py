"""The data model every scenario produces: in-memory tensor splits grouped into tasks.

Samples stay in their compact stored form (uint8 images) and are converted to model inputs one
batch at a time by the scenario's `InputPipeline`, so memory stays small and no per-sample
Python runs in the training loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

SETTINGS = ("task", "domain", "class")


@dataclass
class Split:
    """Samples in stored form, their target label in the setting's label space, and task ids."""

    x: Tensor
    y: Tensor
    task: Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device), self.task.to(device))

    def subset(self, index: Tensor) -> Split:
        return Split(self.x[index], self.y[index], self.task[index])

    @staticmethod
    def cat(splits: list[Split]) -> Split:
        return Split(
            torch.cat([s.x for s in splits]),
            torch.cat([s.y for s in splits]),
            torch.cat([s.task for s in splits]),
        )


@dataclass
class Task:
    """One step of the stream: the original classes it holds and its train/test(/val) data."""

    index: int
    classes: tuple[int, ...]
    train: Split
    test: Split
    val: Split | None = None


@dataclass
class InputPipeline:
    """Turns a batch of stored samples into float model inputs; augments whole batches."""

    scale: float = 1.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    crop_padding: int = 0
    horizontal_flip: bool = False

    def __call__(self, x: Tensor, train: bool) -> Tensor:
        x = x.float() * self.scale
        if self.mean is not None and self.std is not None:
            shape = (1, -1) + (1,) * (x.dim() - 2)
            mean = torch.tensor(self.mean, device=x.device).view(shape)
            std = torch.tensor(self.std, device=x.device).view(shape)
            x = (x - mean) / std
        if train and self.crop_padding > 0:
            x = random_crop(x, self.crop_padding)
        if train and self.horizontal_flip:
            flip = torch.rand(x.shape[0], device=x.device) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        return x


def random_crop(x: Tensor, padding: int) -> Tensor:
    """Pad-and-crop every image of a [B, C, H, W] batch at its own random offset, in one gather."""
    b, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (b,), device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (b,), device=x.device)
    rows = (dy.view(b, 1) + torch.arange(h, device=x.device)).view(b, 1, h, 1)
    cols = (dx.view(b, 1) + torch.arange(w, device=x.device)).view(b, 1, 1, w)
    batch = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    channel = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
    return padded[batch, channel, rows, cols]


@dataclass
class Scenario:
    """A task stream plus what the model needs to know: input shape and output heads."""

    name: str
    setting: str
    tasks: list[Task]
    input_shape: tuple[int, ...]
    head_sizes: list[int]
    pipeline: InputPipeline = field(default_factory=InputPipeline)

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    def to(self, device: torch.device | str) -> Scenario:
        tasks = [
            Task(t.index, t.classes, t.train.to(device), t.test.to(device),
                 t.val.to(device) if t.val is not None else None)
            for t in self.tasks
        ]
        return Scenario(self.name, self.setting, tasks, self.input_shape, self.head_sizes,
                        self.pipeline)
