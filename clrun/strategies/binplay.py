"""BinPlay (Deja et al. 2021): the classifier learns only from decoded codes of a binary-latent
autoencoder (`generator=binary_ae`, clrun/generators/binplay.py), as in the authors' code.

At the start of task t the autoencoder learns the task (its phases and budget are the
generator's settings). The classifier's training set for the task is then made of decoded
codes only: every code of the task (reconstructions of its images, labelled with the label of
the image each code was given), and as many codes of every earlier task (each task's codes in a
random order, repeated if the task is smaller), labelled by the frozen previous classifier's
prediction among the earlier tasks' labels (its own head in task-IL). Every task is equally
represented, as in the authors' code, and the classifier trains on the set with the run's batch
size and budget. The autoencoder is scored by FID/precision/recall after every task like every
generator.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from clrun.errors import ConfigError
from clrun.generators.base import Generator
from clrun.generators.binplay import DECODE_BATCH, BinaryAutoencoder
from clrun.plugin import StrategyPlugin
from clrun.scenarios.base import Split
from clrun.strategies.generative import frozen

if TYPE_CHECKING:
    from torch import nn

    from clrun.loop import TaskLoop
    from clrun.module import ContinualModule
    from clrun.scenarios.base import Scenario, Task


class BinPlay(StrategyPlugin):
    """`strategy=binplay` with `generator=binary_ae`; under `objective=generative` the
    autoencoder alone is the learner (no classifier, no decoded training set)."""

    uses_generator = True
    objectives = ("classification", "generative")

    def __init__(self) -> None:
        super().__init__()
        self.generator: BinaryAutoencoder | None = None
        self.teacher: nn.Module | None = None

    def attach_generator(self, generator: Generator) -> None:
        if not isinstance(generator, BinaryAutoencoder):
            raise ConfigError("generator", type(generator).__name__,
                              "strategy=binplay decodes the codes of generator=binary_ae; use it")
        self.generator = generator

    def check(self, scenario: Scenario) -> None:
        super().check(scenario)
        if self.generator is None:
            raise ConfigError("generator", None, "strategy=binplay needs its autoencoder: add "
                              "generator=binary_ae")

    def on_task_start(self, loop: TaskLoop, task: Task) -> None:
        data, pipeline = loop.generator_data(task)
        self.generator.begin_task(task.index, pipeline(data.x, train=False), data.y)
        if loop.classifies:  # else the loop trains the autoencoder as its learner
            self.teacher = frozen(loop.module.net) if task.index else None
            loop.fit_generator(self.generator, task)

    def train_data(self, loop: TaskLoop, task: Task, split: Split) -> Split:
        """The task's decoded codes and as many of every earlier task's (module docstring)."""
        if not loop.classifies:
            return split
        generator = self.generator.to(loop.device).eval()
        n = len(task.train)
        images = [generator.decode(generator.task_indices(task.index, torch.arange(n)))]
        labels = [generator.labels_by_code(task.train.y)]
        earlier_labels = torch.cat([t.train.y.unique() for t in loop.scenario.tasks[:task.index]]
                                   ) if task.index else None
        for earlier in range(task.index):
            size = generator.task_sizes[earlier]
            offsets = torch.randperm(size).repeat(math.ceil(n / size))[:n]
            decoded = generator.decode(generator.task_indices(earlier, offsets))
            images.append(decoded)
            labels.append(self.teacher_labels(loop, decoded, earlier, earlier_labels))
        generator.train()
        x = loop.scenario.pipeline.to_stored(torch.cat(images), split.x.dtype)
        order = torch.tensor([task.index, *range(task.index)], device=x.device)
        tasks = order.repeat_interleave(n)
        return Split(x, torch.cat(labels).to(x.device), tasks)

    @torch.no_grad()
    def teacher_labels(self, loop: TaskLoop, images: Tensor, task_index: int,
                       earlier_labels: Tensor) -> Tensor:
        """The previous classifier's prediction for decoded images of an earlier task: its
        task's head in task-IL, else the best of the earlier tasks' labels."""
        module: ContinualModule = loop.module
        predicted = []
        for part in images.split(DECODE_BATCH):
            task = torch.full((len(part),), task_index, device=part.device)
            x = loop.scenario.pipeline.from_unit(part, train=False)
            scores = module.task_logits(self.teacher(x).float(), task)
            if module.setting != "task":
                allowed = torch.zeros(scores.shape[1], dtype=torch.bool, device=scores.device)
                allowed[earlier_labels.to(scores.device)] = True
                scores = scores.masked_fill(~allowed, -math.inf)
            predicted.append(scores.argmax(1))
        return torch.cat(predicted)

    def sampler(self) -> BinaryAutoencoder | None:
        return self.generator

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.checkpoint_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.generator.load_checkpoint_state(state_dict["generator"])
