"""Scenario factories named in `conf/scenario/`: real benchmarks on the shared builders.

Every factory takes the scenario node's keys plus `seed` and `data_dir` from the run. Pixels
are scaled to [0, 1] (`ToTensor()`, as the papers); `normalize` subtracts the data set's mean
and divides by its std; `crop_padding` and `horizontal_flip` augment training batches.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from clrun.errors import ConfigError
from clrun.instantiate import config_target
from clrun.scenarios.base import InputPipeline, Scenario
from clrun.scenarios.cifar import MEAN_STD, load_cifar
from clrun.scenarios.dirichlet import dirichlet_scenario
from clrun.scenarios.idx import FASHION_MNIST, MNIST, load_idx_dataset
from clrun.scenarios.split import split_scenario
from clrun.scenarios.transformed import (
    permute,
    pixel_permutations,
    rotate,
    transformed_scenario,
)

MNIST_MEAN_STD = {"MNIST": ((0.1307,), (0.3081,)), "Fashion-MNIST": ((0.2860,), (0.3530,))}
IDX = {"MNIST": MNIST, "Fashion-MNIST": FASHION_MNIST}


def _pipeline(dataset: str, normalize: bool, crop_padding: int, horizontal_flip: bool
              ) -> InputPipeline:
    mean, std = {**MNIST_MEAN_STD, **MEAN_STD}[dataset] if normalize else (None, None)
    return InputPipeline(1 / 255, mean, std, crop_padding, horizontal_flip)


def _load(dataset: str, data_dir: str, download: bool) -> dict[str, tuple[Tensor, Tensor]]:
    if dataset in IDX:
        return load_idx_dataset(IDX[dataset], Path(data_dir), download)
    return load_cifar(dataset, Path(data_dir), download)


@config_target
def split(dataset: str, name: str, data_dir: str, seed: int, setting: str = "class",
          n_tasks: int = 5, class_order: str = "fixed", first_task_classes: int | None = None,
          val_fraction: float = 0.0, download: bool = False, normalize: bool = False,
          crop_padding: int = 0, horizontal_flip: bool = False, **_: object) -> Scenario:
    """Class-split benchmark: split_mnist, split_fmnist, split_cifar10, split_cifar100."""
    data = _load(dataset, data_dir, download)
    return split_scenario(name, data["train"], data["test"], setting, n_tasks, class_order,
                          seed, _pipeline(dataset, normalize, crop_padding, horizontal_flip),
                          first_task_classes, val_fraction, data_key=dataset)


@config_target
def permuted(dataset: str, name: str, data_dir: str, seed: int, setting: str = "domain",
             n_tasks: int = 10, first_identity: bool = True, download: bool = False,
             normalize: bool = False, **_: object) -> Scenario:
    """Permuted MNIST: a fixed pixel permutation per task (drawn from the seed)."""
    data = _load(dataset, data_dir, download)
    n_pixels = data["train"][0][0].numel()
    perms = pixel_permutations(n_tasks, n_pixels, seed, first_identity)
    return transformed_scenario(name, data["train"], data["test"], setting,
                                [permute(p) for p in perms],
                                _pipeline(dataset, normalize, 0, False),
                                f"{dataset}-permuted-{n_tasks}-seed{seed}"
                                + ("-identity" if first_identity else ""))


@config_target
def rotated(dataset: str, name: str, data_dir: str, seed: int, angles: list[float],
            n_tasks: int, setting: str = "domain", download: bool = False,
            normalize: bool = False, **_: object) -> Scenario:
    """Rotated MNIST: one task per angle (degrees)."""
    if n_tasks != len(angles):
        raise ConfigError("scenario.n_tasks", n_tasks,
                          f"must equal the number of scenario.angles ({len(angles)})")
    data = _load(dataset, data_dir, download)
    return transformed_scenario(name, data["train"], data["test"], setting,
                                [rotate(a) for a in angles],
                                _pipeline(dataset, normalize, 0, False),
                                f"{dataset}-rotated-" + "_".join(f"{a:g}" for a in angles))


@config_target
def dirichlet(dataset: str, name: str, data_dir: str, seed: int, setting: str = "class",
              n_tasks: int = 5, alpha: float = 1.0, download: bool = False,
              normalize: bool = False, crop_padding: int = 0, horizontal_flip: bool = False,
              **_: object) -> Scenario:
    """Dirichlet class-to-task split with concentration `alpha`."""
    data = _load(dataset, data_dir, download)
    return dirichlet_scenario(name, data["train"], data["test"], setting, n_tasks, alpha, seed,
                              _pipeline(dataset, normalize, crop_padding, horizontal_flip),
                              data_key=dataset)
