"""The LightningModule: one network trained across tasks, with the plugins' hooks wired in."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.core.optimizer import LightningOptimizer
from pytorch_lightning.plugins.precision import MixedPrecision, Precision
from pytorch_lightning.strategies import SingleDeviceStrategy
from torch import Tensor

from clrun.errors import ConfigError
from clrun.models.net import ContinualNet
from clrun.optim import KeptOptimizer, OptimizerFactory
from clrun.plugin import StrategyPlugin, overrides
from clrun.scenarios.base import InputPipeline, Split
from clrun.scenarios.batches import Batch, StepChunk

BACKWARD_HOOKS = ("on_before_zero_grad", "on_before_backward", "on_after_backward")
PER_STEP_HOOKS = (*BACKWARD_HOOKS, "on_before_optimizer_step")


def direct_steps_possible(trainer: pl.Trainer, module: pl.LightningModule) -> bool:
    """Whether Lightning's manual backward and optimizer step would only call hooks: full or
    bf16 precision (no gradient scaler), one device, and no per-step hook overridden by the
    module, a callback, or a plugin (whose `on_before_optimizer_step` the module calls itself).
    """
    precision = trainer.precision_plugin
    plain = type(precision) is Precision or (
        type(precision) is MixedPrecision and precision.scaler is None)
    owners = [(module, pl.LightningModule, PER_STEP_HOOKS)]
    for callback in trainer.callbacks:
        plugin = isinstance(callback, StrategyPlugin)
        owners.append((callback, pl.Callback, BACKWARD_HOOKS if plugin else PER_STEP_HOOKS))
    hooked = any(getattr(type(owner), hook) is not getattr(base, hook)
                 for owner, base, hooks in owners for hook in hooks)
    return plain and isinstance(trainer.strategy, SingleDeviceStrategy) and not hooked


class ContinualModule(pl.LightningModule):
    """Sums the classification loss and the plugins' penalties (`step_loss`) and takes one
    optimizer step per minibatch of each chunk Lightning hands `training_step`.

    Optimization is manual so that one Lightning batch can carry several optimizer steps
    (`clrun.scenarios.batches.StepChunks`): Lightning's per-batch machinery is paid once per
    chunk, while every step still goes through Lightning's backward and optimizer step
    (precision, gradient scaling, `on_before_optimizer_step` for GEM's and EWC's gradients).

    In the `task` setting the network's output holds every head's units; `task_logits` picks the
    units of each sample's task, so targets are always in the setting's label space.
    """

    #: plugins' `after_step` is called here after each step, not from Lightning's batch hook
    dispatches_steps = True

    def __init__(self, net: ContinualNet, optimizer_factory: OptimizerFactory,
                 plugins: list[StrategyPlugin], setting: str, reset_optimizer: bool = True,
                 active_units: str = "all", lr_milestones: list[int] | None = None,
                 lr_gamma: float = 0.1) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.net = net
        self.kept_optimizer = KeptOptimizer(optimizer_factory, reset_optimizer)
        # a step schedule within each task (InterContiNet's CIFAR protocol: ×0.1 at 50 and 90)
        self.lr_milestones = list(lr_milestones or [])
        self.lr_gamma = lr_gamma
        self.setting = setting
        self.current_task = 0
        # "seen": in training, output units of classes not seen yet are masked out (van de Ven's
        # class-IL); "all": every unit takes part (InterContiNet).
        self.active_units = active_units
        self.train_unit_mask: Tensor | None = None
        self._extenders = [p for p in plugins if overrides(p, "extend_batch")]
        self._penalizers = [p for p in plugins if overrides(p, "penalty")]
        self._predictors = [p for p in plugins if overrides(p, "predict")]
        self._after_steppers = [p for p in plugins if overrides(p, "after_step")]
        self._gradient_editors = [p for p in plugins if overrides(p, "on_before_optimizer_step")]
        batchwise = [type(p).__name__ for p in plugins
                     if overrides(p, "on_train_batch_end") or overrides(p, "on_train_batch_start")]
        if batchwise:
            raise ConfigError("strategy.plugins", ", ".join(batchwise),
                              "overrides Lightning's on_train_batch_start/end, which see chunks "
                              "of train.steps_per_batch steps: move per-step work to "
                              "after_step(module, batch)")
        self._direct_steps = False
        losses = [p for p in plugins if overrides(p, "loss")]
        if len(losses) > 1:
            names = ", ".join(type(p).__name__ for p in losses)
            raise ConfigError("strategy.plugins", names,
                              "at most one plugin may replace the classification loss")
        self._loss_plugin = losses[0] if losses else None
        self.refresh_heads()

    def optimizer_state(self) -> dict:
        """What a checkpoint keeps of the optimizer across tasks."""
        return self.kept_optimizer.state_dict()

    def load_optimizer_state(self, state: dict) -> None:
        self.kept_optimizer.load_state_dict(state)

    def refresh_heads(self) -> None:
        """Recompute which output units belong to which task (after a plugin grew a head).

        A last, all-invalid row stands for tasks that have no head yet: their samples get no
        valid unit and count as errors in evaluation.
        """
        sizes = self.net.head_sizes
        width = max(sizes)
        offsets = torch.tensor([0] + sizes[:-1]).cumsum(0)
        index = offsets.view(-1, 1) + torch.arange(width).view(1, -1)
        valid = torch.arange(width).view(1, -1) < torch.tensor(sizes).view(-1, 1)
        index = torch.cat([index, torch.zeros(1, width, dtype=index.dtype)])
        valid = torch.cat([valid, torch.zeros(1, width, dtype=torch.bool)])
        device = next(self.net.parameters()).device
        self.unit_index = index.clamp(max=sum(sizes) - 1).to(device)
        self.unit_valid = valid.to(device)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def call_net(self, x: Tensor, task: Tensor) -> Tensor:
        """The network's logits; architectural networks also take each sample's task."""
        if getattr(self.net, "task_conditioned", False):
            return self.net(x, task)
        return self.net(x)

    def _head_rows(self, task: Tensor) -> Tensor:
        """Each sample's row of the unit tables (the tables follow the data's device)."""
        if self.unit_index.device != task.device:
            self.unit_index = self.unit_index.to(task.device)
            self.unit_valid = self.unit_valid.to(task.device)
        return task.clamp(max=len(self.unit_index) - 1)

    def task_logits(self, logits: Tensor, task: Tensor) -> Tensor:
        """The logits a sample is classified with: its task's head in task-IL, all units else."""
        if self.setting != "task":
            return logits
        row = self._head_rows(task)
        selected = logits.gather(1, self.unit_index[row])
        return selected.masked_fill(~self.unit_valid[row], float("-inf"))

    def target_units(self, batch: Batch) -> Tensor:
        """Where each sample's target sits in the network's output (in its task's head)."""
        if self.setting != "task":
            return batch.y
        return self.unit_index[self._head_rows(batch.task), batch.y]

    def activate_units(self, seen_labels: Tensor) -> None:
        """Called by the loop at each task start with every label seen so far."""
        if self.active_units == "seen" and self.setting != "task":
            mask = torch.zeros(sum(self.net.head_sizes), dtype=torch.bool, device=self.device)
            mask[seen_labels.to(self.device)] = True
            self.train_unit_mask = mask

    def training_logits(self, logits: Tensor, task: Tensor) -> Tensor:
        """The logits training sees: `task_logits`, with the units of classes not seen yet at
        -inf under `active_units=seen`. Importances (EWC's Fisher) use them too, as van de
        Ven's code does with its active classes."""
        logits = self.task_logits(logits, task)
        if self.train_unit_mask is not None:
            logits = logits.masked_fill(~self.train_unit_mask, float("-inf"))
        return logits

    def classification_loss(self, batch: Batch, logits: Tensor) -> Tensor:
        return F.cross_entropy(self.training_logits(logits, batch.task), batch.y)

    def transfer_batch_to_device(self, batch: Any, device: torch.device,
                                 dataloader_idx: int) -> Any:
        """A chunk's tensors already live on the training device (the loop put the data there);
        anything else goes Lightning's way."""
        if isinstance(batch, StepChunk):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_train_start(self) -> None:
        self._direct_steps = direct_steps_possible(self.trainer, self)

    def training_step(self, chunk: StepChunk, chunk_index: int) -> None:
        """One optimizer step per minibatch of `chunk`, each followed by the plugins'
        `after_step`; the step losses are summed on the device and logged per epoch."""
        optimizer = self.optimizers()
        for batch in chunk:
            loss = self.direct_step(optimizer, batch) if self._direct_steps else \
                self.lightning_step(optimizer, batch)
            for plugin in self._after_steppers:
                plugin.after_step(self, batch)
            self._loss_sum += loss.detach()
            self._loss_count += 1

    def lightning_step(self, optimizer: LightningOptimizer, batch: Batch) -> Tensor:
        """A step through Lightning's backward and optimizer step: gradient scaling, DDP, and
        every callback's `on_before_backward` .. `on_before_optimizer_step` hooks."""
        optimizer.zero_grad()
        loss = self.step_loss(batch)
        self.manual_backward(loss)
        with self.outside_autocast():
            optimizer.step()
        return loss

    def direct_step(self, optimizer: LightningOptimizer, batch: Batch) -> Tensor:
        """The same step without Lightning's wrappers, where they would do nothing but call
        hooks nobody overrides (`direct_steps_possible`): only the plugins that edit gradients
        (EWC's pull, GEM's projection) are called before the optimizer steps. Lightning's step
        count (`global_step`, `max_steps`) advances as through `optimizer.step()`."""
        torch_optimizer = optimizer.optimizer
        torch_optimizer.zero_grad()
        loss = self.step_loss(batch)
        loss.backward()
        with self.outside_autocast():
            for plugin in self._gradient_editors:
                plugin.on_before_optimizer_step(self.trainer, self, torch_optimizer)
            optimizer._on_before_step()
            torch_optimizer.step()
            optimizer._on_after_step()
        return loss

    def outside_autocast(self) -> torch.autocast:
        """The optimizer step and the gradient edits before it (GEM's and A-GEM's memory
        gradients) in full precision, as Lightning runs them after its closure in automatic
        optimization; `training_step` itself runs under the precision's autocast."""
        return torch.autocast(self.device.type, enabled=False)

    def step_loss(self, batch: Batch) -> Tensor:
        """The loss of one step: the (plugin-replaced) data loss plus every penalty, on the
        batch the plugins extended."""
        for plugin in self._extenders:
            batch = plugin.extend_batch(self, batch)
        logits = self.call_net(batch.x, batch.task)
        loss = None
        if self._loss_plugin is not None:
            loss = self._loss_plugin.loss(self, batch, logits)
        if loss is None:
            loss = self.classification_loss(batch, logits)
        for plugin in self._penalizers:
            term = plugin.penalty(self, batch, logits)
            if term is not None:
                loss = loss + term
        return loss

    def on_train_epoch_start(self) -> None:
        self._loss_sum = torch.zeros((), device=self.device)
        self._loss_count = 0

    def on_train_epoch_end(self) -> None:
        schedule = self.lr_schedulers()
        if schedule is not None:  # manual optimization: the epoch's step of the schedule
            schedule.step()
        if self._loss_count:
            self.log("train_loss", self._loss_sum / self._loss_count, prog_bar=True)
            self.log("task", float(self.current_task))

    def configure_optimizers(self) -> torch.optim.Optimizer | dict:
        optimizer = self.kept_optimizer.get(self)
        if not self.lr_milestones:
            return optimizer
        for group in optimizer.param_groups:  # every task starts from the configured rate
            group["lr"] = group.setdefault("initial_lr", group["lr"])
        schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, self.lr_milestones,
                                                        self.lr_gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule,
                                                         "interval": "epoch"}}

    @torch.no_grad()
    def scores(self, x: Tensor, task: Tensor) -> Tensor:
        """Class scores in the setting's label space; a plugin's `predict` takes precedence."""
        for plugin in self._predictors:
            out = plugin.predict(self, x, task)
            if out is not None:
                return out
        return self.task_logits(self.call_net(x, task), task)

    @torch.no_grad()
    def accuracy(self, split: Split, pipeline: InputPipeline, batch_size: int) -> float:
        """Percentage of `split` classified correctly, evaluated in eval mode."""
        was_training = self.training
        self.eval()
        correct = torch.zeros((), dtype=torch.long, device=split.y.device)
        for start in range(0, len(split), batch_size):
            end = start + batch_size
            x = pipeline(split.x[start:end], train=False).to(self.device)
            scores = self.scores(x, split.task[start:end].to(self.device))
            hit = (scores.argmax(dim=1) == split.y[start:end].to(self.device))
            hit &= scores.isfinite().any(dim=1)  # no head for this task yet: an error
            correct += hit.sum().to(correct.device)
        self.train(was_training)
        return 100.0 * correct.item() / max(len(split), 1)
