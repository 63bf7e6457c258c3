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
    """One step of the stream: the original classes it holds and its train/test(/val) data.

    `natural` maps the setting's labels of this task to *natural classes*: the data set's own
    classes (split, Dirichlet) or, for transformed streams, one class per (task, digit).
    Generators are conditioned on them and feature nets trained on them, so they mean the same
    in every setting and class order. None: the labels are the natural classes.
    """

    index: int
    classes: tuple[int, ...]
    train: Split
    test: Split
    val: Split | None = None
    natural: Tensor | None = None


@dataclass
class InputPipeline:
    """Turns a batch of stored samples into float model inputs; augments whole batches."""

    scale: float = 1.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    crop_padding: int = 0
    horizontal_flip: bool = False

    def __call__(self, x: Tensor, train: bool) -> Tensor:
        return self.from_unit(self.to_unit(x), train)

    def to_unit(self, x: Tensor) -> Tensor:
        """Stored samples as floats in [0, 1]: the space generators model."""
        return x.float() * self.scale

    def to_stored(self, x: Tensor, dtype: torch.dtype) -> Tensor:
        """Unit-space images in stored form (rounded for integer storage), so generated
        images can make a training split."""
        x = x.float() / self.scale
        if not dtype.is_floating_point:
            info = torch.iinfo(dtype)
            x = x.round().clamp(info.min, info.max)
        return x.to(dtype)

    def from_unit(self, x: Tensor, train: bool) -> Tensor:
        """Unit-space images (real or generated) as model inputs: normalised, and augmented in
        training."""
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
    #: what the union of the tasks' images is (e.g. "Fashion-MNIST"); keys cached feature nets
    data_key: str = ""

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    def natural_of(self, task: Task, y: Tensor) -> Tensor:
        """The natural classes of labels `y` of `task` (see `Task`)."""
        return y if task.natural is None else task.natural.to(y.device)[y]

    def natural_classes(self, tasks: list[Task]) -> Tensor:
        """The sorted natural classes present in these tasks' training data."""
        return torch.cat([self.natural_of(t, t.train.y).unique() for t in tasks]).unique()

    @property
    def n_natural(self) -> int:
        return int(self.natural_classes(self.tasks).max()) + 1

    def to(self, device: torch.device | str) -> Scenario:
        tasks = [
            Task(t.index, t.classes, t.train.to(device), t.test.to(device),
                 t.val.to(device) if t.val is not None else None, t.natural)
            for t in self.tasks
        ]
        return Scenario(self.name, self.setting, tasks, self.input_shape, self.head_sizes,
                        self.pipeline, self.data_key)
