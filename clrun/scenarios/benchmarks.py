"""Scenario factories named in `conf/scenario/`: real benchmarks on top of `split_scenario`."""

from __future__ import annotations

from pathlib import Path

from clrun.scenarios.base import InputPipeline, Scenario
from clrun.scenarios.idx import FASHION_MNIST, MNIST, IdxDataset, load_idx_dataset
from clrun.scenarios.split import split_scenario


def _split_idx(name: str, dataset: IdxDataset, data_dir: str, download: bool, setting: str,
               n_tasks: int, class_order: str, seed: int, first_task_classes: int | None,
               val_fraction: float) -> Scenario:
    data = load_idx_dataset(dataset, Path(data_dir), download)
    return split_scenario(name, data["train"], data["test"], setting, n_tasks, class_order, seed,
                          InputPipeline(scale=1 / 255), first_task_classes, val_fraction)


def split_mnist(data_dir: str, seed: int, setting: str = "class", n_tasks: int = 5,
                class_order: str = "fixed", first_task_classes: int | None = None,
                val_fraction: float = 0.0, download: bool = False, **_: object) -> Scenario:
    """MNIST, 5 tasks of 2 digits; pixels in [0, 1] (`ToTensor()` only, as the papers)."""
    return _split_idx("split_mnist", MNIST, data_dir, download, setting, n_tasks, class_order,
                      seed, first_task_classes, val_fraction)


def split_fmnist(data_dir: str, seed: int, setting: str = "class", n_tasks: int = 5,
                 class_order: str = "fixed", first_task_classes: int | None = None,
                 val_fraction: float = 0.0, download: bool = False, **_: object) -> Scenario:
    """Fashion-MNIST, 5 tasks of 2 classes; pixels in [0, 1]."""
    return _split_idx("split_fmnist", FASHION_MNIST, data_dir, download, setting, n_tasks,
                      class_order, seed, first_task_classes, val_fraction)
