"""The contract every generator fulfils, and its training with replay of its predecessor.

A generator works in *unit space*: images as floats in [0, 1] (the stored uint8 images times the
scenario's scale), whatever normalisation the classifier's pipeline applies. It may be
conditional on a *natural class* (the data set's class, `Scenario.natural_class`), so replay
and sample grids can be asked for by class.

While task t trains, a frozen copy of the previous task's generator can be replayed
(`replay_from`): each step adds as many of its samples as the current batch holds, and the
loss is w·L(current) + (1 − w)·L(replayed), w = 1/t by default (van de Ven's weighting).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from clrun.errors import ConfigError
from clrun.optim import KeptOptimizer, OptimizerFactory
from clrun.scenarios.batches import Batch


def draw_uniformly(values: Tensor, n: int) -> Tensor:
    """n of `values`, drawn uniformly with replacement on their device (replay's classes)."""
    return values[torch.randint(len(values), (n,), device=values.device)]


@dataclass
class GeneratedSamples:
    """Samples of a frozen generator made once (a task's replay buffer) and drawn from at
    random: `per_class` per earlier class (conditional generators), or that many times the
    number of earlier classes (unconditional: `classes` is None)."""

    x: Tensor
    classes: Tensor | None

    @classmethod
    def make(cls, generator: Generator, seen_classes: Tensor, per_class: int) -> GeneratedSamples:
        if generator.conditional:
            classes = seen_classes.repeat_interleave(per_class)
            return cls(generator.sample(len(classes), classes), classes)
        return cls(generator.sample(per_class * len(seen_classes)), None)

    def draw(self, n: int) -> tuple[Tensor, Tensor | None]:
        pick = torch.randint(len(self.x), (n,), device=self.x.device)
        return self.x[pick], None if self.classes is None else self.classes[pick]


@dataclass
class GeneratorReplay:
    """Samples of a frozen previous generator mixed into every training step: drawn fresh, or
    from `buffer`; learned as data (`distill=False`) or by matching the previous generator's
    own predictions on them (`distill=True`, generators with a `distillation_loss`)."""

    previous: Generator
    weight_current: float
    conditions: Tensor | None  # natural classes seen before (conditional generators)
    buffer: GeneratedSamples | None = None
    distill: bool = False

    def draw(self, n: int) -> tuple[Tensor, Tensor | None]:
        if self.buffer is not None:
            return self.buffer.draw(n)
        conditions = None
        if self.previous.conditional and self.conditions is not None:
            conditions = draw_uniformly(self.conditions, n)
        return self.previous.sample(n, conditions), conditions

    def loss(self, generator: Generator, n: int) -> Tensor:
        """The replay term of `generator`'s loss on n replayed samples."""
        x, conditions = self.draw(n)
        if self.distill:
            return generator.distillation_loss(self.previous, x, conditions)
        return generator.loss(x, conditions)


class Generator(pl.LightningModule):
    """Base class: subclasses define `loss` (per-batch mean) and `sample` in unit space.

    `max_epochs`/`max_steps`/`batch_size` are the generator's own training budget per task
    (the config's defaults are the classifier's).
    """

    #: accepted input shapes, as a sentence for the one-line error (None: any shape)
    fits: str | None = None
    #: the strategy that must train this generator (its phases), if any (Multiband VAE)
    trained_by_strategy: str | None = None

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, conditional: bool = False,
                 optimizer: OptimizerFactory | None = None, reset_optimizer: bool = True,
                 max_epochs: int = 1, max_steps: int = -1, batch_size: int = 128) -> None:
        super().__init__()
        if optimizer is None:
            raise ConfigError("generator.optimizer", None, "a generator needs an optimizer")
        self.input_shape = tuple(input_shape)
        self.n_classes = n_classes
        self.conditional = conditional
        self.kept_optimizer = KeptOptimizer(optimizer, reset_optimizer)
        self.max_epochs = max_epochs
        self.max_steps = max_steps
        self.batch_size = batch_size
        self.replay: GeneratorReplay | None = None
        self._epoch_losses: dict[str, tuple[Tensor, int]] = {}

    # -- what subclasses provide -------------------------------------------------------------
    def loss(self, x: Tensor, conditions: Tensor | None) -> Tensor:
        """The generative loss of a batch of unit-space images (mean over the batch)."""
        raise NotImplementedError

    def sample(self, n: int, conditions: Tensor | None = None) -> Tensor:
        """n samples in unit space, shape (n, *input_shape); conditional generators take one
        natural class per sample (None: classes drawn uniformly)."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------
    def one_hot(self, conditions: Tensor | None, n: int) -> Tensor | None:
        """One-hot natural classes for a conditional generator (None when unconditional)."""
        if not self.conditional:
            return None
        if conditions is None:
            conditions = torch.randint(self.n_classes, (n,), device=self.device)
        return torch.nn.functional.one_hot(conditions, self.n_classes).to(self.dtype_for_input)

    @property
    def dtype_for_input(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def left_behind(self) -> list[Any]:
        """What a frozen copy does without: its replay, the Trainer that last fitted it
        (deep-copying that would copy its data and loggers) and the optimizers it holds as
        attributes, whose state (Adam's: twice the weights) a generator keeps between tasks."""
        optimizers = [v for v in vars(self).values()
                      if isinstance(v, (KeptOptimizer, torch.optim.Optimizer))]
        return [self.replay, self._trainer, *optimizers]

    def frozen_copy(self) -> Generator:
        """A copy for replay that never trains; what `left_behind` names is None in it."""
        memo: dict[int, Any] = {id(kept): None for kept in self.left_behind() if kept is not None}
        return copy.deepcopy(self, memo).eval().requires_grad_(False)

    def replay_from(self, previous: Generator | None, weight_current: float,
                    conditions: Tensor | None, buffer: GeneratedSamples | None = None,
                    distill: bool = False) -> None:
        self.replay = (GeneratorReplay(previous, weight_current, conditions, buffer, distill)
                       if previous is not None else None)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss = self.loss(batch.x, batch.y if self.conditional else None)
        if self.replay is not None:
            w = self.replay.weight_current
            loss = w * loss + (1 - w) * self.replay.loss(self, len(batch.y))
        self.log_loss("generator_loss", loss)
        return loss

    def log_loss(self, name: str, loss: Tensor) -> None:
        """Add a step's loss to its epoch mean, logged when the epoch ends: Lightning's
        per-step `self.log` bookkeeping costs as much as a fifth of a small VAE's step."""
        total, count = self._epoch_losses.get(name, (0.0, 0))
        self._epoch_losses[name] = (total + loss.detach(), count + 1)

    def on_train_epoch_start(self) -> None:
        self._epoch_losses = {}

    def on_train_epoch_end(self) -> None:
        for name, (total, count) in self._epoch_losses.items():
            self.log(name, total / count, prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.kept_optimizer.get(self)

    def training_budget(self, batches_per_epoch: int) -> dict[str, int]:
        """Trainer arguments for one task's training (GANs count their own steps)."""
        return {"max_epochs": self.max_epochs, "max_steps": self.max_steps}

    def trainer_overrides(self, world_size: int) -> dict[str, Any]:
        """Trainer arguments this generator needs beyond the classifier's: DDP must be told
        when a step leaves some parameters without gradients (a GAN's critic and generator
        steps, the Multiband VAE's phases)."""
        if world_size > 1 and not self.automatic_optimization:
            return {"strategy": "ddp_find_unused_parameters_true"}
        return {}

    # -- as the learner of `objective=generative` (the loop's module) -------------------------
    @property
    def net(self) -> Generator:
        """The trained network, as plugins read it from the loop's module."""
        return self

    def optimizer_state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the optimizer(s) across tasks."""
        return self.kept_optimizer.state_dict()

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        self.kept_optimizer.load_state_dict(state)

    def checkpoint_state(self) -> dict[str, Any]:
        return {"weights": self.state_dict(), "optimizer": self.optimizer_state()}

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        self.load_state_dict(state["weights"])
        self.load_optimizer_state(state["optimizer"])
