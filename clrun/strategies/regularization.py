"""Quadratic-penalty regularizers: L2, EWC, online EWC, MAS and SI.

All share one penalty, lambda * sum_k sum_i F_k,i (theta_i - theta*_k,i)^2, over the anchors
theta*_k and importances F_k of finished tasks. `mode="separate"` keeps one term per task,
`mode="online"` one running term F = decay * F_prev + F_new anchored at the last task.

The separate terms are folded into one quadratic with the same gradient:
sum_k F_k (theta - theta*_k)^2 = W (theta - c)^2 + const, with W = sum_k F_k and
c = sum_k F_k theta_k / W, so a step costs the same after 2 tasks or 20. `penalty_value` omits
that constant; the gradients are exact.

The penalty's gradient, 2 lambda W (theta - c), is added to the parameters' gradients in
`on_before_optimizer_step` (where they are unscaled and, under DDP, already averaged) rather
than through autograd: a few fused elementwise passes instead of a graph over every parameter,
which made a regularized step cost ~1.5x a plain one. Plugins that read gradients after the
step (SI) or edit them (GEM) see the penalty's part, as they would with a loss term.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from clrun.errors import ConfigError
from clrun.plugin import StrategyPlugin
from clrun.strategies.importance import (
    FISHER_LABELS,
    REDUCTIONS,
    Importances,
    check_choice,
    fisher,
    loss_fisher,
    output_sensitivity,
    tracked_parameters,
)

if TYPE_CHECKING:
    import pytorch_lightning as pl

    from clrun.generators.base import Generator
    from clrun.loop import TaskLoop
    from clrun.module import ContinualModule
    from clrun.scenarios.base import Task
    from clrun.scenarios.batches import Batch

MODES = ("separate", "online")


class QuadraticPenalty(StrategyPlugin):
    """Base: subclasses say how importances are measured at a task's end (`importances`).

    The penalty acts on whatever network the loop trains, so it also regularizes a generator
    under `objective=generative` (MAS, which needs class outputs, excepted)."""

    objectives = ("classification", "generative")

    def __init__(self, lambda_: float, mode: str = "separate", decay: float = 1.0) -> None:
        super().__init__()
        if lambda_ < 0:
            raise ConfigError("strategy.plugins.*.lambda_", lambda_, "must be >= 0")
        check_choice("strategy.plugins.*.mode", mode, MODES)
        self.lambda_ = lambda_
        self.mode = mode
        self.decay = decay
        self.weight: Importances = {}
        self.center: Importances = {}

    @property
    def coefficient(self) -> float:
        return self.lambda_

    def importances(self, loop: TaskLoop, task: Task) -> Importances:
        raise NotImplementedError

    def on_task_end(self, loop: TaskLoop, task: Task) -> None:
        self.consolidate(loop.module, self.importances(loop, task))

    @torch.no_grad()
    def consolidate(self, module: ContinualModule, new: Importances) -> None:
        """Fold the finished task's importances and parameters into the running quadratic."""
        for name, p in tracked_parameters(module).items():
            if name not in new:
                continue
            anchor = p.detach().clone()
            if name not in self.weight or self.mode == "online":
                previous = self.weight.get(name)
                decayed = 0 if previous is None else self.decay * previous
                self.weight[name] = decayed + new[name]
                self.center[name] = anchor
                continue
            total = self.weight[name] + new[name]
            mixed = (self.weight[name] * self.center[name] + new[name] * anchor) / total
            self.center[name] = torch.where(total > 0, mixed, anchor)
            self.weight[name] = total

    def _anchored(self, module: ContinualModule
                  ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        params = [(n, p) for n, p in module.net.named_parameters() if n in self.weight]
        return ([p for _, p in params], [self.weight[n] for n, _ in params],
                [self.center[n] for n, _ in params])

    def penalty_value(self, module: ContinualModule) -> Tensor:
        """lambda * sum W (theta - c)^2, differentiable (for inspection and tests)."""
        params, weights, centers = self._anchored(module)
        if not params:
            return torch.zeros(())
        terms = [(w * (p - c).pow(2)).sum()
                 for p, w, c in zip(params, weights, centers, strict=True)]
        return self.coefficient * torch.stack(terms).sum()

    @torch.no_grad()
    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:  # noqa: ANN001
        """Add the penalty's gradient 2 lambda W (theta - c) to each parameter's gradient."""
        params, weights, centers = self._anchored(pl_module)
        kept = [i for i, p in enumerate(params) if p.grad is not None]
        if not kept:
            return
        params = [params[i] for i in kept]
        pulls = torch._foreach_sub(params, [centers[i] for i in kept])
        torch._foreach_mul_(pulls, [weights[i] for i in kept])
        torch._foreach_add_([p.grad for p in params], pulls, alpha=2 * self.coefficient)

    def state_dict(self) -> dict[str, Any]:
        return {"weight": self.weight, "center": self.center}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.weight, self.center = dict(state_dict["weight"]), dict(state_dict["center"])


def task_parameters(module: ContinualModule | Generator, task_index: int) -> set[str]:
    """Parameters a task trains: all, except other tasks' heads in the task-IL setting (a
    generator that is the learner has no heads)."""
    names = set(tracked_parameters(module))
    if getattr(module, "setting", None) != "task":
        return names
    return {n for n in names if not n.startswith("heads.") or n.split(".")[1] == str(task_index)}


class L2(QuadraticPenalty):
    """Unit importance: pull every parameter the task trained back to its value after the task."""

    def importances(self, loop: TaskLoop, task: Task) -> Importances:
        used = task_parameters(loop.module, task.index)
        return {n: torch.ones_like(p) for n, p in tracked_parameters(loop.module).items()
                if n in used}


class _MeasuredPenalty(QuadraticPenalty):
    """A penalty whose importances are computed from the task's training data in minibatches."""

    def __init__(self, lambda_: float, mode: str = "separate", decay: float = 1.0,
                 reduction: str = "sum", batch_size: int = 128) -> None:
        super().__init__(lambda_, mode, decay)
        check_choice("strategy.plugins.*.reduction", reduction, REDUCTIONS)
        self.reduction = reduction
        self.batch_size = batch_size


class EWC(_MeasuredPenalty):
    """Elastic weight consolidation (Kirkpatrick et al. 2017); `mode=online` is online EWC
    (Schwarz et al. 2018). `fisher_labels`: predicted | true | expected."""

    def __init__(self, lambda_: float, mode: str = "separate", decay: float = 1.0,
                 reduction: str = "sum", batch_size: int = 128,
                 fisher_labels: str = "predicted") -> None:
        super().__init__(lambda_, mode, decay, reduction, batch_size)
        check_choice("strategy.plugins.ewc.fisher_labels", fisher_labels, FISHER_LABELS)
        self.fisher_labels = fisher_labels

    def importances(self, loop: TaskLoop, task: Task) -> Importances:
        if not loop.classifies:  # the generator's own loss (a VAE's negative ELBO)
            data, pipeline = loop.generator_data(task)
            return loss_fisher(loop.module, data, pipeline, self.batch_size, self.reduction)
        return fisher(loop.module, task.train, loop.scenario.pipeline, self.batch_size,
                      self.fisher_labels, self.reduction)


class MAS(_MeasuredPenalty):
    """Memory aware synapses (Aljundi et al. 2018): sensitivity of the squared output."""

    objectives = ("classification",)

    def importances(self, loop: TaskLoop, task: Task) -> Importances:
        return output_sensitivity(loop.module, task.train, loop.scenario.pipeline,
                                  self.batch_size, self.reduction)


class SI(QuadraticPenalty):
    """Synaptic intelligence (Zenke et al. 2017), penalty (lambda/2) * sum omega (theta - theta*)^2.

    The path integral sum_steps g * delta_theta uses the gradient the optimizer applied (loss and
    penalties). Per task, omega += c * (-path) / (delta^2 + epsilon), accumulated over tasks;
    `clamp_max`/`clamp_min` bound it (InterContiNet clamps at 0.001 from above only).
    """

    def __init__(self, lambda_: float, epsilon: float = 1e-7, c: float = 1.0,
                 clamp_max: float | None = 0.001, clamp_min: float | None = None) -> None:
        super().__init__(lambda_, mode="online", decay=1.0)
        self.epsilon = epsilon
        self.c = c
        self.clamp_max = clamp_max
        self.clamp_min = clamp_min
        self.omega: Importances = {}
        self._path: list[Tensor] = []
        self._start: list[Tensor] = []
        self._before_step: list[Tensor] = []
        self._names: list[str] = []

    @property
    def coefficient(self) -> float:
        return self.lambda_ / 2

    def on_task_start(self, loop: TaskLoop, task: Task) -> None:
        params = tracked_parameters(loop.module)
        self._names = list(params)
        self._start = [p.detach().clone() for p in params.values()]
        self._path = [torch.zeros_like(p) for p in params.values()]

    def _params(self, pl_module: ContinualModule) -> list[Tensor]:
        params = dict(pl_module.net.named_parameters())
        return [params[n] for n in self._names]

    @torch.no_grad()
    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:  # noqa: ANN001
        super().on_before_optimizer_step(trainer, pl_module, optimizer)
        self._before_step = [p.detach().clone() for p in self._params(pl_module)]

    @torch.no_grad()
    def after_step(self, module: pl.LightningModule, batch: Batch) -> None:
        """path += g * delta, with g the gradient the optimizer applied: gradients are zeroed
        only before the next step's backward, so after the step they are still there, with
        every plugin's additions and projections."""
        if not self._before_step:
            return
        params = self._params(module)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        delta = torch._foreach_sub(params, self._before_step)
        torch._foreach_addcmul_(self._path, grads, delta)
        self._before_step = []

    def importances(self, loop: TaskLoop, task: Task) -> Importances:
        params = tracked_parameters(loop.module)
        for name, start, path in zip(self._names, self._start, self._path, strict=True):
            delta = params[name].detach() - start
            contribution = self.c * path / (delta.pow(2) + self.epsilon)
            self.omega[name] = self.omega.get(name, 0) - contribution
        if self.clamp_min is None and self.clamp_max is None:
            return dict(self.omega)
        return {n: o.clamp(min=self.clamp_min, max=self.clamp_max) for n, o in self.omega.items()}

    def consolidate(self, module: ContinualModule, new: Importances) -> None:
        """omega already accumulates across tasks: replace (not add to) the running weight."""
        self.weight = {}
        super().consolidate(module, new)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "omega": self.omega}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.omega = dict(state_dict["omega"])
