"""InterContiNet's training schedule (Wołczyk et al., ICML 2022) for interval networks.

Every task ends with `contraction_epochs` of the *scale* phase: only the intervals' widths
train, on the robust loss (cross-entropy of the worst case inside the intervals: the lower bound
of the target's logit, the upper bound of every other logit), and only while the robust
accuracy lags `robust_threshold` x the accuracy (moving averages over `lookback` batches).
Before that, the first task trains the weights (*vanilla*) and every later task moves the
weights' middles inside the last task's intervals (*shift*), so the new solution stays in the
region certified for the old tasks. At each later task start the trained intervals become the
new outer intervals (`IntervalNet.freeze_task`).

Each phase sets the learning rate of every parameter group: the optimizer's own in the vanilla
phase, `shift_lr` and `scale_lr` in the others (the authors' code does the same).

`robust_lambda` (off by default) multiplies the scale phase's robust loss: the weight the
authors' scripts pass (100 / 1 / 100 in task-/domain-/class-IL) but their released code never
reads. With plain SGD it is the same as multiplying `scale_lr` by it.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import pytorch_lightning as pl
import torch
from torch import Tensor

from clrun.errors import ConfigError
from clrun.models.interval import IntervalNet
from clrun.plugin import StrategyPlugin

if TYPE_CHECKING:
    from clrun.loop import TaskLoop
    from clrun.module import ContinualModule
    from clrun.scenarios.base import Task
    from clrun.scenarios.batches import Batch

KEY = "strategy.plugins.interval"


def robust_logits(lower: Tensor, upper: Tensor, target_units: Tensor) -> Tensor:
    """The worst case inside the intervals: upper bounds, except the target's lower bound."""
    index = target_units.unsqueeze(1)
    return upper.scatter(1, index, lower.gather(1, index))


@torch.no_grad()
def certified(module: ContinualModule, batch: Batch) -> Tensor:
    """Which samples every network inside the intervals classifies right (never forgotten)."""
    lower, _, upper = module.net.bounds(batch.x)
    robust = robust_logits(lower, upper, module.target_units(batch))
    return module.task_logits(robust, batch.task).argmax(dim=1) == batch.y


class IntervalTraining(StrategyPlugin):
    """Phases vanilla/shift then scale in every task; needs `model=interval_mlp`."""

    def __init__(self, contraction_epochs: int = 10, shift_lr: float = 1.0,
                 scale_lr: float = 0.01, robust_threshold: float = 0.9,
                 lookback: int = 10, robust_lambda: float | None = None) -> None:
        super().__init__()
        if contraction_epochs < 1:
            raise ConfigError(f"{KEY}.contraction_epochs", contraction_epochs, "must be >= 1")
        for name, value in (("shift_lr", shift_lr), ("scale_lr", scale_lr)):
            if value <= 0:
                raise ConfigError(f"{KEY}.{name}", value, "must be > 0")
        if not 0 <= robust_threshold <= 1:
            raise ConfigError(f"{KEY}.robust_threshold", robust_threshold, "must be in [0, 1]")
        if lookback < 1:
            raise ConfigError(f"{KEY}.lookback", lookback, "must be >= 1")
        if robust_lambda is not None and robust_lambda <= 0:
            raise ConfigError(f"{KEY}.robust_lambda", robust_lambda, "must be > 0, or null")
        self.robust_lambda = robust_lambda
        self.contraction_epochs = contraction_epochs
        self.shift_lr = shift_lr
        self.scale_lr = scale_lr
        self.robust_threshold = robust_threshold
        self.accuracy: deque[Tensor] = deque(maxlen=lookback)
        self.robust_accuracy: deque[Tensor] = deque(maxlen=lookback)
        self.phase = "vanilla"
        self.first_task = True

    def on_task_start(self, loop: TaskLoop, task: Task) -> None:
        net = loop.module.net
        if not isinstance(net, IntervalNet):
            raise ConfigError("model", type(net).__name__,
                              "strategy=interval needs an interval network: add model=interval_mlp")
        trainer = loop.trainer
        if trainer.world_size > 1:
            raise ConfigError("trainer", f"{trainer.world_size} processes",
                              "the interval strategy changes which parameters train between "
                              "epochs, which DDP cannot follow; use trainer=cpu or trainer=gpu")
        epochs = trainer.max_epochs
        if epochs is None or epochs <= self.contraction_epochs:
            raise ConfigError("trainer.max_epochs", epochs,
                              f"the interval strategy needs more epochs per task than "
                              f"{KEY}.contraction_epochs ({self.contraction_epochs})")
        self.first_task = loop.stages_done == 0
        if not self.first_task:
            net.freeze_task()
        net.requires_grad_(True)  # the task's optimizer holds every phase's parameters

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: ContinualModule) -> None:
        if trainer.current_epoch >= trainer.max_epochs - self.contraction_epochs:
            phase = "scale"
        else:
            phase = "vanilla" if self.first_task else "shift"
        if phase != self.phase or trainer.current_epoch == 0:
            self._enter(phase, trainer, pl_module.net)

    def _enter(self, phase: str, trainer: pl.Trainer, net: IntervalNet) -> None:
        self.phase = phase
        net.set_phase(phase)
        net.track_bounds = phase == "scale"
        self.accuracy.clear()
        self.robust_accuracy.clear()
        for optimizer in trainer.optimizers:
            lr = {"vanilla": optimizer.defaults["lr"], "shift": self.shift_lr,
                  "scale": self.scale_lr}[phase]
            for group in optimizer.param_groups:
                group["lr"] = lr

    def loss(self, module: ContinualModule, batch: Batch, logits: Tensor) -> Tensor | None:
        """In the scale phase: the robust loss while robust accuracy lags, else zero."""
        if self.phase != "scale":
            return None
        lower, upper = module.net.logit_bounds
        robust = robust_logits(lower, upper, module.target_units(batch))
        robust_loss = module.classification_loss(batch, robust)
        with torch.no_grad():
            self.accuracy.append(self._batch_accuracy(module, batch, logits))
            self.robust_accuracy.append(self._batch_accuracy(module, batch, robust))
            lagging = (torch.stack(tuple(self.robust_accuracy)).mean()
                       < self.robust_threshold * torch.stack(tuple(self.accuracy)).mean())
        weight = 1.0 if self.robust_lambda is None else self.robust_lambda
        return weight * robust_loss * lagging  # a zero loss leaves the scales where they are

    @staticmethod
    def _batch_accuracy(module: ContinualModule, batch: Batch, logits: Tensor) -> Tensor:
        predicted = module.task_logits(logits, batch.task).argmax(dim=1)
        return (predicted == batch.y).float().mean()

    def on_task_end(self, loop: TaskLoop, task: Task) -> None:
        """Evaluation and later plugins see the middle network only."""
        loop.module.net.track_bounds = False
        loop.module.net.logit_bounds = None
