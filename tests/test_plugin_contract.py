"""Each extension point of the plugin contract, exercised by a small plugin written for it."""

from __future__ import annotations

from functools import partial

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from clrun.loop import LoopSettings, TaskLoop
from clrun.models.net import mlp
from clrun.module import ContinualModule
from clrun.plugin import StrategyPlugin
from clrun.scenarios.base import Split
from clrun.scenarios.batches import Batch
from clrun.scenarios.digits import split_digits

ADAM = partial(torch.optim.Adam, lr=1e-2)


def make_loop(plugins, setting="class", epochs=2, stream="sequential", n_tasks=5, heads=None,
              model=mlp, optimizer=ADAM):
    pl.seed_everything(0, verbose=False)
    scenario = split_digits(setting=setting, n_tasks=n_tasks)
    net = model(scenario.input_shape, heads or scenario.head_sizes, hidden_sizes=(32,))
    module = ContinualModule(net, optimizer, plugins, setting)
    settings = LoopSettings(stream=stream, batch_size=32, seed=0, trainer_kwargs=dict(
        accelerator="cpu", devices=1, max_epochs=epochs, enable_progress_bar=False))
    return TaskLoop(scenario, module, plugins, settings)


class EventRecorder(StrategyPlugin):
    def __init__(self):
        super().__init__()
        self.events = []

    def on_task_start(self, loop, task):
        self.events.append(("start", task.index, len(loop.matrix)))

    def on_train_start(self, trainer, pl_module):
        self.events.append(("fit", pl_module.current_task, len(self.loop_matrix(trainer))))

    def loop_matrix(self, trainer):
        boundary = [cb for cb in trainer.callbacks if type(cb).__name__ == "_TaskBoundary"]
        return boundary[0].loop.matrix

    def on_task_end(self, loop, task):
        self.events.append(("end", task.index, len(loop.matrix)))


def test_task_events_order_and_one_trainer_per_task():
    recorder = EventRecorder()
    loop = make_loop([recorder], n_tasks=2, epochs=1)
    trainers = []
    original = loop.make_trainer
    loop.make_trainer = lambda: trainers.append(original()) or trainers[-1]
    matrix = loop.run()
    assert recorder.events == [("start", 0, 0), ("fit", 0, 0), ("end", 0, 0),
                               ("start", 1, 1), ("fit", 1, 1), ("end", 1, 1)]
    assert len(matrix) == 2 and len(matrix[0]) == 2
    assert len({id(t) for t in trainers}) == 2  # a fresh Trainer per task


class PullBias(StrategyPlugin):
    """Adds a loss term pulling the output bias to 5; records the tasks of its batches."""

    def __init__(self):
        super().__init__()
        self.batch_tasks = set()

    def penalty(self, module, batch, logits):
        self.batch_tasks.update((module.current_task, int(t)) for t in batch.task.unique())
        return 10.0 * (module.net.heads[0].bias - 5.0).pow(2).sum()


def test_penalty_is_added_to_the_loss_and_sees_the_current_task():
    plugin = PullBias()
    loop = make_loop([plugin], n_tasks=2, epochs=3)
    loop.module.kept_optimizer.factory = partial(torch.optim.SGD, lr=0.01)
    loop.run()
    assert torch.allclose(loop.module.net.heads[0].bias, torch.full((10,), 5.0), atol=0.1)
    assert plugin.batch_tasks == {(0, 0), (1, 1)}


class ReplayTaskZero(StrategyPlugin):
    """Extends every batch with task-0 samples kept at the end of task 0."""

    def __init__(self):
        super().__init__()
        self.memory = None
        self.sizes = []

    def on_task_end(self, loop, task):
        if task.index == 0:
            self.memory = task.train

    def extend_batch(self, module, batch):
        if self.memory is None:
            return batch
        index = torch.randint(0, len(self.memory), (16,))
        replay = Batch(self.memory.x[index].float() / 16, self.memory.y[index],
                       self.memory.task[index])
        self.sizes.append(batch.x.shape[0])
        return Batch(*(torch.cat(pair) for pair in zip(batch[:3], replay[:3], strict=True)))


def test_extend_batch_reaches_the_model():
    naive = make_loop([], n_tasks=5, epochs=4).run()
    plugin = ReplayTaskZero()
    replayed = make_loop([plugin], n_tasks=5, epochs=4).run()
    assert naive[-1][0] < 10.0  # class-IL fine-tuning forgets task 0 entirely
    assert replayed[-1][0] > 80.0  # replaying task 0 keeps it
    assert plugin.sizes and max(plugin.sizes) <= 32


class FreezeBackbone(StrategyPlugin):
    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        for p in pl_module.net.backbone.parameters():
            p.grad = torch.zeros_like(p)


def test_gradient_surgery_before_the_optimizer_step():
    plugin = FreezeBackbone()
    loop = make_loop([plugin], n_tasks=2, epochs=1)
    loop.module.kept_optimizer.factory = partial(torch.optim.SGD, lr=0.1)
    before = [p.detach().clone() for p in loop.module.net.backbone.parameters()]
    head_before = loop.module.net.heads[0].weight.detach().clone()
    loop.run()
    for old, new in zip(before, loop.module.net.backbone.parameters(), strict=True):
        assert torch.equal(old, new)
    assert not torch.equal(head_before, loop.module.net.heads[0].weight)


class GrowHead(StrategyPlugin):
    """Task-IL with one head at the start: adds a head for each new task."""

    def on_task_start(self, loop, task):
        if task.index >= len(loop.module.net.heads):
            loop.module.net.add_head(len(task.classes))


def test_growing_the_model_at_a_task_boundary():
    loop = make_loop([GrowHead()], setting="task", n_tasks=5, epochs=2, heads=[2])
    loop.run()
    assert len(loop.module.net.heads) == 5
    assert min(loop.matrix[-1]) > 80.0  # each grown head was trained and is used for its task


class AlwaysClassZero(StrategyPlugin):
    def predict(self, module, x, task):
        scores = torch.zeros(x.shape[0], 10, device=x.device)
        scores[:, 0] = 1.0
        return scores


def test_predict_override_is_used_for_evaluation():
    loop = make_loop([AlwaysClassZero()], n_tasks=5, epochs=1)
    loop.run()
    task0 = loop.scenario.tasks[0].test
    share_of_class0 = 100.0 * (task0.y == 0).float().mean().item()
    assert loop.matrix[-1][0] == pytest.approx(share_of_class0)
    assert loop.matrix[-1][1:] == [0.0, 0.0, 0.0, 0.0]


class TrainAutoencoder(StrategyPlugin):
    """Trains an auxiliary network on the finished task, between tasks (generative rehearsal)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 64))
        self.losses = {}

    def on_task_end(self, loop, task):
        assert loop.module.net.heads[0].weight.device == loop.device
        x = loop.scenario.pipeline(task.train.x, train=False).flatten(1)
        optimizer = torch.optim.Adam(self.net.parameters(), lr=1e-2)
        losses = []
        with torch.enable_grad():
            for _ in range(100):
                loss = (self.net(x) - x).pow(2).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
        self.losses[task.index] = (losses[0], losses[-1], len(loop.matrix))


def test_auxiliary_network_trained_between_tasks():
    plugin = TrainAutoencoder()
    loop = make_loop([plugin], n_tasks=2, epochs=1)
    loop.run()
    assert set(plugin.losses) == {0, 1}
    for first, last, _ in plugin.losses.values():
        assert last < 0.8 * first
    assert plugin.losses[0][2] == 0 and plugin.losses[1][2] == 1  # before that task's evaluation


class HalfTheData(StrategyPlugin):
    def __init__(self):
        super().__init__()
        self.batches = 0

    def train_data(self, loop, task, split):
        return split.subset(torch.arange(len(split) // 2))

    def after_step(self, module, batch):
        self.batches += 1


def test_train_data_hook_changes_what_a_task_trains_on():
    plugin = HalfTheData()
    loop = make_loop([plugin], n_tasks=5, epochs=1)
    loop.run()
    expected = sum(-(-(len(t.train) // 2) // 32) for t in loop.scenario.tasks)
    assert plugin.batches == expected


class ZeroLoss(StrategyPlugin):
    def loss(self, module, batch, logits):
        return 0.0 * logits.sum()


def test_loss_override_replaces_the_classification_loss():
    loop = make_loop([ZeroLoss()], n_tasks=2, epochs=1)
    before = [p.detach().clone() for p in loop.module.net.parameters()]
    loop.run()
    for old, new in zip(before, loop.module.net.parameters(), strict=True):
        assert torch.equal(old, new)


def test_cumulative_and_joint_streams():
    joint = make_loop([], stream="joint", epochs=3)
    joint.run()
    assert len(joint.matrix) == 1 and min(joint.matrix[0]) > 80
    cumulative = make_loop([], stream="cumulative", n_tasks=5, epochs=3)
    cumulative.run()
    assert len(cumulative.matrix) == 5 and sum(cumulative.matrix[-1]) / 5 > 75


def test_split_cat_keeps_task_ids():
    a = Split(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    b = Split(torch.ones(3, 1), torch.ones(3, dtype=torch.long), torch.ones(3, dtype=torch.long))
    assert Split.cat([a, b]).task.tolist() == [0, 0, 1, 1, 1]
