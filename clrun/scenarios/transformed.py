"""Input-transformed task streams: permuted and rotated MNIST (all classes in every task)."""

from __future__ import annotations

import torch
import torchvision.transforms.functional as TF
from torch import Tensor

from clrun.errors import ConfigError
from clrun.scenarios.base import SETTINGS, InputPipeline, Scenario, Split, Task


def _labels(y: Tensor, task: int, n_classes: int, setting: str) -> Tensor:
    """Class-IL gives every task its own classes (task * C + y); else the digit itself."""
    return y + task * n_classes if setting == "class" else y


def transformed_scenario(name: str, train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor],
                         setting: str, transforms: list, pipeline: InputPipeline,
                         data_key: str = "") -> Scenario:
    """One task per transform, applied once to the stored (uint8) images."""
    if setting not in SETTINGS:
        raise ConfigError("scenario.setting", setting, "use one of: " + ", ".join(SETTINGS))
    n_classes = int(train[1].max()) + 1
    tasks = []
    for t, transform in enumerate(transforms):
        def split(x: Tensor, y: Tensor, t: int = t, transform=transform) -> Split:
            return Split(transform(x), _labels(y, t, n_classes, setting),
                         torch.full((len(y),), t, dtype=torch.long))
        natural = torch.arange(n_classes) + t * n_classes  # one class per (task, digit)
        if setting == "class":
            natural = torch.arange(n_classes * len(transforms))  # labels are t * C + digit
        tasks.append(Task(t, tuple(range(n_classes)), split(*train), split(*test), None, natural))
    n_tasks = len(transforms)
    heads = {"task": [n_classes] * n_tasks, "domain": [n_classes],
             "class": [n_classes * n_tasks]}[setting]
    return Scenario(name, setting, tasks, tuple(train[0].shape[1:]), heads, pipeline, data_key)


def pixel_permutations(n_tasks: int, n_pixels: int, seed: int, first_identity: bool
                       ) -> list[Tensor]:
    """One fixed permutation per task, drawn from the seed; task 0 may keep the pixel order."""
    if n_tasks < 1:
        raise ConfigError("scenario.n_tasks", n_tasks, "needs at least 1 task")
    generator = torch.Generator().manual_seed(seed)
    perms = [torch.randperm(n_pixels, generator=generator) for _ in range(n_tasks)]
    if first_identity:
        perms[0] = torch.arange(n_pixels)
    return perms


def permute(perm: Tensor):
    def apply(x: Tensor) -> Tensor:
        return x.flatten(1)[:, perm].view_as(x)
    return apply


def rotate(angle: float):
    def apply(x: Tensor) -> Tensor:
        return TF.rotate(x, float(angle))
    return apply
