"""Class-split task streams: the classes of a data set dealt out to tasks.

The same code serves every data set (digits, MNIST, Fashion-MNIST, CIFAR) and all three
settings, so "split" means one thing everywhere.
"""

from __future__ import annotations

import torch
from torch import Tensor

from clrun.errors import ConfigError
from clrun.scenarios.base import SETTINGS, InputPipeline, Scenario, Split, Task


def class_order(n_classes: int, order: str, seed: int) -> list[int]:
    """`fixed`: 0..C-1 (as InterContiNet); `permuted`: a permutation drawn from the run seed."""
    if order == "fixed":
        return list(range(n_classes))
    if order == "permuted":
        generator = torch.Generator().manual_seed(seed)
        return torch.randperm(n_classes, generator=generator).tolist()
    raise ConfigError("scenario.class_order", order, "use one of: fixed, permuted")


def deal_classes(order: list[int], n_tasks: int, first_task_classes: int | None) -> list[list[int]]:
    """Cut the class order into tasks; an optional larger first task takes its share first."""
    n_classes = len(order)
    if n_tasks < 1:
        raise ConfigError("scenario.n_tasks", n_tasks, "needs at least 1 task")
    if first_task_classes:
        if not 0 < first_task_classes < n_classes:
            raise ConfigError("scenario.first_task_classes", first_task_classes,
                              f"must be between 1 and {n_classes - 1}")
        rest = n_classes - first_task_classes
        if n_tasks < 2 or rest % (n_tasks - 1):
            raise ConfigError("scenario.n_tasks", n_tasks,
                              f"the {rest} classes after the first task must divide evenly "
                              "into the remaining tasks")
        per_task = rest // (n_tasks - 1)
        bounds = [0, first_task_classes] + [
            first_task_classes + per_task * i for i in range(1, n_tasks)
        ]
    else:
        if n_classes % n_tasks:
            raise ConfigError("scenario.n_tasks", n_tasks,
                              f"{n_classes} classes do not divide evenly into {n_tasks} tasks; "
                              "choose a divisor or set scenario.first_task_classes")
        per_task = n_classes // n_tasks
        bounds = [per_task * i for i in range(n_tasks + 1)]
    return [order[bounds[i] : bounds[i + 1]] for i in range(n_tasks)]


def head_sizes(setting: str, task_classes: list[list[int]]) -> list[int]:
    """Output heads per setting: one per task (`task`), one shared (`domain`, `class`)."""
    if setting == "task":
        return [len(c) for c in task_classes]
    if setting == "domain":
        sizes = {len(c) for c in task_classes}
        if len(sizes) != 1:
            raise ConfigError("scenario.setting", setting,
                              "domain-IL needs tasks of equal size; unset "
                              "scenario.first_task_classes")
        return [sizes.pop()]
    return [sum(len(c) for c in task_classes)]


def _targets(y: Tensor, classes: list[int], order: list[int], setting: str) -> Tensor:
    """Label in the setting's space: index within the task, or position in the class order."""
    size = max([*classes, int(y.max()) if y.numel() else 0]) + 1
    table = torch.full((size,), -1, dtype=torch.long)
    for local, c in enumerate(classes):
        table[c] = local if setting in ("task", "domain") else order.index(c)
    return table[y]


def _task_split(x: Tensor, y: Tensor, classes: list[int], order: list[int], setting: str,
                index: int) -> Split:
    mask = torch.isin(y, torch.tensor(classes))
    xs, ys = x[mask], y[mask]
    return Split(xs, _targets(ys, classes, order, setting),
                 torch.full((len(ys),), index, dtype=torch.long))


def hold_out(split: Split, fraction: float, seed: int) -> tuple[Split, Split | None]:
    """Move a random `fraction` of a task's training data into a validation split."""
    if not fraction:
        return split, None
    if not 0 < fraction < 1:
        raise ConfigError("scenario.val_fraction", fraction, "must be in [0, 1)")
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(split), generator=generator)
    n_val = int(round(fraction * len(split)))
    return split.subset(perm[n_val:]), split.subset(perm[:n_val])


def split_scenario(
    name: str,
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    setting: str,
    n_tasks: int,
    order: str,
    seed: int,
    pipeline: InputPipeline,
    first_task_classes: int | None = None,
    val_fraction: float = 0.0,
    data_key: str = "",
) -> Scenario:
    """Build a class-split scenario from full train/test tensors (x in stored form, y in 0..C-1)."""
    if setting not in SETTINGS:
        raise ConfigError("scenario.setting", setting, "use one of: " + ", ".join(SETTINGS))
    n_classes = int(train[1].max()) + 1
    classes_order = class_order(n_classes, order, seed)
    task_classes = deal_classes(classes_order, n_tasks, first_task_classes)
    tasks = []
    for i, classes in enumerate(task_classes):
        full_train = _task_split(*train, classes, classes_order, setting, i)
        task_train, task_val = hold_out(full_train, val_fraction, seed + 7919 * (i + 1))
        natural = torch.tensor(classes if setting in ("task", "domain") else classes_order)
        tasks.append(Task(i, tuple(classes), task_train,
                          _task_split(*test, classes, classes_order, setting, i), task_val,
                          natural))
    return Scenario(name, setting, tasks, tuple(train[0].shape[1:]),
                    head_sizes(setting, task_classes), pipeline, data_key)
