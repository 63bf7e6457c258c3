"""Split scenarios: disjoint classes, one task per sample, labels and heads by setting, IDX."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from clrun.errors import ConfigError, DataError
from clrun.scenarios.base import InputPipeline, random_crop
from clrun.scenarios.benchmarks import split_fmnist, split_mnist
from clrun.scenarios.digits import split_digits
from clrun.scenarios.idx import read_idx
from clrun.scenarios.split import split_scenario


def fake_data(n_per_class=6, n_classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n_classes).repeat_interleave(n_per_class)
    x = torch.randint(0, 256, (len(y), 1, 4, 4), generator=g, dtype=torch.uint8)
    return x, y


def build(setting="class", n_tasks=5, order="fixed", seed=0, first=None, val=0.0):
    return split_scenario("fake", fake_data(), fake_data(2, seed=1), setting, n_tasks, order,
                          seed, InputPipeline(scale=1 / 255), first, val)


def test_split_tasks_have_disjoint_classes_and_cover_every_sample():
    s = build()
    assert [t.classes for t in s.tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    assert sum(len(t.train) for t in s.tasks) == 60
    seen = [set(t.classes) for t in s.tasks]
    assert all(a.isdisjoint(b) for i, a in enumerate(seen) for b in seen[i + 1:])
    for t in s.tasks:
        assert (t.train.task == t.index).all()


@pytest.mark.parametrize("setting,heads,labels", [
    ("task", [2, 2, 2, 2, 2], {0, 1}),
    ("domain", [2], {0, 1}),
    ("class", [10], None),
])
def test_labels_and_heads_follow_the_setting(setting, heads, labels):
    s = build(setting)
    assert s.head_sizes == heads
    for t in s.tasks:
        got = set(t.train.y.tolist())
        assert got == (labels if labels is not None else set(t.classes))


def test_permuted_class_order_is_fixed_per_seed_and_labels_follow_the_order():
    a, b, c = build(order="permuted", seed=3), build(order="permuted", seed=3), build(
        order="permuted", seed=4)
    assert [t.classes for t in a.tasks] == [t.classes for t in b.tasks]
    assert [t.classes for t in a.tasks] != [t.classes for t in c.tasks]
    # class-IL targets are positions in the class order: task 0 holds labels 0 and 1
    assert set(a.tasks[0].train.y.tolist()) == {0, 1}


def test_larger_first_task_and_validation_split():
    s = build(n_tasks=3, first=6, val=0.5)
    assert [len(t.classes) for t in s.tasks] == [6, 2, 2]
    assert s.tasks[0].val is not None and len(s.tasks[0].val) == len(s.tasks[0].train) == 18
    with pytest.raises(ConfigError, match="scenario.n_tasks"):
        build(n_tasks=3)
    with pytest.raises(ConfigError, match="domain-IL needs tasks of equal size"):
        build("domain", n_tasks=3, first=6)


def test_random_crop_keeps_shape_and_content_shifts():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float).view(2, 3, 8, 8)
    out = random_crop(x, 2)
    assert out.shape == x.shape
    torch.manual_seed(0)
    assert not torch.equal(random_crop(x, 2), x) or not torch.equal(random_crop(x, 2), x)


def test_digits_has_a_fixed_test_split():
    a, b = split_digits(seed=0), split_digits(seed=5)
    assert torch.equal(a.tasks[0].test.x, b.tasks[0].test.x)
    assert sum(len(t.test) for t in a.tasks) == 540


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    codes = {np.uint8: 0x08}
    header = bytes([0, 0, codes[array.dtype.type], array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape)
    payload = header + array.tobytes()
    (gzip.open if gz else open)(path, "wb").write(payload)


def write_mnist_like(root: Path, gz: bool, n_train=40, n_test=20) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}",
                  rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}",
                  (np.arange(n) % 10).astype(np.uint8), gz)


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_loads_from_torchvision_layout(tmp_path, gz):
    write_mnist_like(tmp_path / "MNIST" / "raw", gz)
    s = split_mnist(data_dir=str(tmp_path), seed=0, setting="task")
    assert s.input_shape == (1, 28, 28)
    assert sum(len(t.train) for t in s.tasks) == 40
    assert s.tasks[0].train.x.dtype == torch.uint8  # stored compact, converted per batch


def test_fmnist_loads_from_a_flat_folder(tmp_path):
    write_mnist_like(tmp_path, gz=True)
    assert split_fmnist(data_dir=str(tmp_path), seed=0).n_tasks == 5


def test_truncated_idx_file_names_the_file(tmp_path):
    write_mnist_like(tmp_path / "MNIST" / "raw", gz=False)
    images = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1000])
    with pytest.raises(DataError, match="train-images-idx3-ubyte is truncated"):
        split_mnist(data_dir=str(tmp_path), seed=0)
    images.write_bytes(b"garbage!")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(images)


def test_missing_data_says_where_it_looked_and_what_to_do(tmp_path):
    with pytest.raises(DataError) as info:
        split_mnist(data_dir=str(tmp_path), seed=0)
    message = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in message and "scenario.download=true" in message
