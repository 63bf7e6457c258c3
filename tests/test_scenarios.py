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
from clrun.scenarios.benchmarks import split
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
    s = split("MNIST", "split_mnist", data_dir=str(tmp_path), seed=0, setting="task")
    assert s.input_shape == (1, 28, 28)
    assert sum(len(t.train) for t in s.tasks) == 40
    assert s.tasks[0].train.x.dtype == torch.uint8  # stored compact, converted per batch


def test_fmnist_loads_from_a_flat_folder(tmp_path):
    write_mnist_like(tmp_path, gz=True)
    assert split("Fashion-MNIST", "split_fmnist", data_dir=str(tmp_path), seed=0).n_tasks == 5


def test_truncated_idx_file_names_the_file(tmp_path):
    write_mnist_like(tmp_path / "MNIST" / "raw", gz=False)
    images = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1000])
    with pytest.raises(DataError, match="train-images-idx3-ubyte is truncated"):
        split("MNIST", "split_mnist", data_dir=str(tmp_path), seed=0)
    images.write_bytes(b"garbage!")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(images)


def test_missing_data_says_where_it_looked_and_what_to_do(tmp_path):
    with pytest.raises(DataError) as info:
        split("MNIST", "split_mnist", data_dir=str(tmp_path), seed=0)
    message = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in message and "scenario.download=true" in message


def write_cifar(root: Path, n_classes: int, n_train=50, n_test=20) -> None:
    import pickle

    rng = np.random.default_rng(0)
    if n_classes == 10:
        folder, train_names, key = root / "cifar-10-batches-py", [
            f"data_batch_{i}" for i in range(1, 6)], b"labels"
        test_names = ["test_batch"]
    else:
        folder, train_names, key, test_names = root / "cifar-100-python", ["train"], \
            b"fine_labels", ["test"]
    folder.mkdir(parents=True)
    for names, n in ((train_names, n_train), (test_names, n_test)):
        for name in names:
            batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                     key: [i % n_classes for i in range(n)]}
            (folder / name).write_bytes(pickle.dumps(batch))


def test_cifar10_and_100_load_from_pickle_batches(tmp_path):
    write_cifar(tmp_path, 10)
    s = split("CIFAR-10", "split_cifar10", data_dir=str(tmp_path), seed=0, setting="task",
              normalize=True, crop_padding=4, horizontal_flip=True)
    assert s.input_shape == (3, 32, 32) and sum(len(t.train) for t in s.tasks) == 250
    batch = s.pipeline(s.tasks[0].train.x[:4], train=True)
    assert batch.dtype == torch.float32 and batch.shape == (4, 3, 32, 32)
    write_cifar(tmp_path, 100, n_train=200)
    s = split("CIFAR-100", "split_cifar100", data_dir=str(tmp_path), seed=0, n_tasks=20)
    assert s.n_tasks == 20 and [len(t.classes) for t in s.tasks] == [5] * 20


def test_corrupt_and_missing_cifar(tmp_path):
    with pytest.raises(DataError, match="CIFAR-10 not found in"):
        split("CIFAR-10", "split_cifar10", data_dir=str(tmp_path), seed=0)
    write_cifar(tmp_path, 10)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:500])
    with pytest.raises(DataError, match="data_batch_3 is truncated or corrupt"):
        split("CIFAR-10", "split_cifar10", data_dir=str(tmp_path), seed=0)


def test_permuted_mnist_permutations_fixed_per_seed(tmp_path):
    from clrun.scenarios.benchmarks import permuted
    from clrun.scenarios.transformed import pixel_permutations

    write_mnist_like(tmp_path / "MNIST" / "raw", gz=True)
    a = pixel_permutations(3, 784, seed=1, first_identity=True)
    b = pixel_permutations(3, 784, seed=1, first_identity=True)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert torch.equal(a[0], torch.arange(784)) and not torch.equal(a[1], torch.arange(784))
    s = permuted("MNIST", "permuted_mnist", data_dir=str(tmp_path), seed=1, n_tasks=3,
                 setting="class")
    assert s.head_sizes == [30] and set(s.tasks[2].train.y.tolist()) == set(range(20, 30))
    x0, x1 = s.tasks[0].train.x, s.tasks[1].train.x
    assert torch.equal(x0.flatten(1)[:, a[1]].view_as(x0), x1)


def test_rotated_mnist_angles(tmp_path):
    from clrun.scenarios.benchmarks import rotated

    write_mnist_like(tmp_path / "MNIST" / "raw", gz=True)
    s = rotated("MNIST", "rotated_mnist", data_dir=str(tmp_path), seed=0, angles=[0, 90],
                n_tasks=2, setting="task")
    assert s.head_sizes == [10, 10]
    assert torch.equal(s.tasks[1].train.x, s.tasks[0].train.x.rot90(1, dims=(2, 3)))
    with pytest.raises(ConfigError, match="number of scenario.angles"):
        rotated("MNIST", "rotated_mnist", data_dir=str(tmp_path), seed=0, angles=[0], n_tasks=2)


def test_dirichlet_columns_and_disjoint_samples():
    from clrun.scenarios.dirichlet import dirichlet_scenario, dirichlet_shares

    shares = dirichlet_shares(10, 5, alpha=100.0, seed=0)  # large alpha: no class over 100%
    assert torch.allclose(shares.sum(0), torch.full((5,), 10 / 7, dtype=shares.dtype))
    skewed = dirichlet_shares(10, 5, alpha=0.1, seed=0)
    assert (skewed.sum(1) <= 1 + 1e-9).all()
    x = torch.arange(1000).view(1000, 1)
    y = torch.arange(1000) % 10
    s = dirichlet_scenario("d", (x, y), (x[:200], y[:200]), "class", 5, 1.0, 0, InputPipeline())
    used = torch.cat([t.train.x.flatten() for t in s.tasks])
    assert len(used) == len(used.unique())  # no sample is given to two tasks
    assert s.head_sizes == [10]


def test_online_mode_single_pass_small_batches(tmp_path):
    from clrun.run import run
    from tests.conftest import compose_cfg

    cfg = compose_cfg("scenario.online=true", "scenario.online_batch_size=10", "logger=none",
                      "trainer.max_epochs=7")
    result = run(cfg, tmp_path)
    assert result.config["online"] and result.config["batch_size"] == 10
    assert len(result.matrix) == 5


@pytest.mark.parametrize("scenario,extra", [
    ("split_mnist", []),
    ("split_fmnist", []),
    ("split_cifar10", ["model=convnet"]),
    ("split_cifar100", ["model=convnet", "scenario.n_tasks=20"]),
    ("permuted_mnist", ["scenario.n_tasks=2"]),
    ("rotated_mnist", ["scenario.n_tasks=2", "scenario.angles=[0,90]"]),
    ("dirichlet_mnist", ["scenario.alpha=0.5"]),
    ("dirichlet_fmnist", []),
])
def test_every_scenario_config_runs_on_files_in_the_real_format(tmp_path, scenario, extra):
    from clrun.run import run
    from tests.conftest import compose_cfg

    write_mnist_like(tmp_path / "MNIST" / "raw", gz=True, n_train=200, n_test=100)
    write_mnist_like(tmp_path / "FashionMNIST" / "raw", gz=False, n_train=200, n_test=100)
    write_cifar(tmp_path, 10)
    write_cifar(tmp_path, 100, n_train=400, n_test=200)
    cfg = compose_cfg(f"scenario={scenario}", f"data_dir={tmp_path}", "trainer.max_epochs=1",
                      "logger=none", "model.hidden_sizes=[16]" if not extra[:1] == [
                          "model=convnet"] else "model.channels=[4]", *extra)
    result = run(cfg, tmp_path / "run")
    assert result.config["scenario"] == scenario
    assert len(result.matrix) == cfg.scenario.n_tasks


@pytest.mark.parametrize("row", ["none", "joint", "ewc", "si", "lwf", "er", "agem", "icarl",
                                 "dgr", "dgr_distill"])
def test_vandeven_experiment_wiring_on_fake_mnist(tmp_path, row):
    from clrun.run import run
    from tests.conftest import compose_cfg

    write_mnist_like(tmp_path / "MNIST" / "raw", gz=True, n_train=200, n_test=100)
    cfg = compose_cfg("experiment=vandeven_splitmnist", f"row=vandeven_{row}",
                      f"data_dir={tmp_path}", "trainer.max_steps=3", "logger=none",
                      "model.hidden_sizes=[16]", "metrics.generative=false")
    assert cfg.trainer.max_epochs == -1 and cfg.scenario.class_order == "permuted"
    if row == "ewc":
        assert cfg.strategy.plugins.ewc.lambda_ == 1e9  # class-IL value
    result = run(cfg, tmp_path / "run")
    assert len(result.matrix) == (1 if row == "joint" else 5)


def test_active_units_seen_masks_future_classes_in_training():
    from functools import partial

    from clrun.models.net import mlp
    from clrun.module import ContinualModule

    s = split_digits(setting="class")
    module = ContinualModule(mlp(s.input_shape, s.head_sizes, (8,)),
                             partial(torch.optim.SGD, lr=0.1), [], "class", active_units="seen")
    module.activate_units(s.tasks[0].train.y.unique())
    assert module.train_unit_mask.nonzero().flatten().tolist() == [0, 1]


@pytest.mark.slow
@pytest.mark.parametrize("row", ["sgd", "ewc", "lwf", "interval"])
def test_intercontinet_cifar10_wiring_on_fake_cifar(tmp_path, row):
    """Slow (~21 s): trains networks end to end in-process."""
    from clrun.run import run
    from tests.conftest import compose_cfg

    write_cifar(tmp_path, 10, n_train=20, n_test=10)
    cfg = compose_cfg("experiment=intercontinet_cifar10", f"row=icncifar_{row}",
                      f"data_dir={tmp_path}", "trainer.max_epochs=2", "scenario.n_tasks=2",
                      "train.lr_milestones=[1]", "logger=none", "train.drop_last=false",
                      *(["strategy.plugins.interval.contraction_epochs=1"]
                        if row == "interval" else []))
    assert cfg.optimizer.lr == 0.1 and cfg.scenario.crop_padding == 4
    assert cfg.model._target_.endswith("interval_alexnet" if row == "interval" else "alexnet")
    if row == "ewc":
        assert cfg.strategy.plugins.ewc.lambda_ == 0.05
    result = run(cfg, tmp_path / "run")
    assert len(result.matrix) == 2 and result.config["paper"] == "intercontinet_table3"


def test_learning_rate_steps_at_the_milestones_of_every_task():
    from functools import partial

    import torch

    from clrun.models.net import mlp
    from clrun.module import ContinualModule

    module = ContinualModule(mlp((1, 8, 8), [10], hidden_sizes=(4,)),
                             partial(torch.optim.SGD, lr=0.1), [], "class",
                             lr_milestones=[2, 3], lr_gamma=0.1)
    for _ in range(2):  # a fresh schedule (from the configured rate) at every task
        config = module.configure_optimizers()
        optimizer, schedule = config["optimizer"], config["lr_scheduler"]["scheduler"]
        rates = []
        for _ in range(4):
            rates.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step()
        assert rates == pytest.approx([0.1, 0.1, 0.01, 0.001])


def test_step_chunks_group_steps_and_stop_at_the_step_budget():
    from clrun.scenarios.base import InputPipeline, Split
    from clrun.scenarios.batches import StepChunks, TensorBatches

    split = Split(torch.zeros(10, 2), torch.zeros(10, dtype=torch.long),
                  torch.zeros(10, dtype=torch.long))
    batches = TensorBatches(split, InputPipeline(), batch_size=2, shuffle=True, drop_last=False,
                            seed=0)
    chunks = StepChunks(batches, steps=3, max_steps=7)
    assert len(chunks) == 2
    first = list(chunks)
    assert [len(c) for c in first] == [3, 2]  # first epoch: the task's 5 minibatches
    assert [len(c) for c in chunks] == [2]  # second epoch: the budget of 7 ends mid-chunk
    assert list(chunks) == []
    assert sorted(torch.cat([b.index for c in first for b in c]).tolist()) == list(range(10))
