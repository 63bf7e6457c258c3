"""scikit-learn's bundled 8x8 digits: the default scenario, runnable anywhere with no download."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from clrun.instantiate import config_target
from clrun.scenarios.base import InputPipeline, Scenario
from clrun.scenarios.split import split_scenario

TEST_FRACTION = 0.3
SPLIT_SEED = 0  # the held-out test set is the same for every run seed


@config_target
def split_digits(setting: str = "class", n_tasks: int = 5, class_order: str = "fixed",
                 first_task_classes: int | None = None, val_fraction: float = 0.0,
                 seed: int = 0, crop_padding: int = 0, horizontal_flip: bool = False,
                 **_: object) -> Scenario:
    """8x8 digits (pixel values 0..16), stratified fixed 70/30 train/test split."""
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.uint8).unsqueeze(1)
    y = torch.tensor(data.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(
        torch.arange(len(y)).numpy(), test_size=TEST_FRACTION, random_state=SPLIT_SEED,
        stratify=y.numpy())
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    pipeline = InputPipeline(scale=1 / 16, crop_padding=crop_padding,
                             horizontal_flip=horizontal_flip)
    return split_scenario(
        "split_digits", (x[train_idx], y[train_idx]), (x[test_idx], y[test_idx]),
        setting, n_tasks, class_order, seed, pipeline, first_task_classes, val_fraction,
        data_key="digits")
