"""Learning without Forgetting (Li & Hoiem 2017): distil the previous model's outputs.

The teacher is the network as it was when the last task ended, frozen. On each current batch
the KL divergence between the teacher's and the student's tempered softmax is added, over the
output units of classes seen before:
- task-IL: each previous task's head, softmax within that head;
- domain-IL: the shared head;
- class-IL: the units of previously seen classes. `softmax_over="all"` (InterContiNet, via
  Avalanche) takes the softmax over every output unit and then keeps the old-class entries
  (no renormalisation); `softmax_over="old"` renormalises over the old classes only.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from clrun.plugin import StrategyPlugin
from clrun.strategies.importance import check_choice

if TYPE_CHECKING:
    from clrun.loop import TaskLoop
    from clrun.models.net import ContinualNet
    from clrun.module import ContinualModule
    from clrun.scenarios.base import Task
    from clrun.scenarios.batches import Batch


class LwF(StrategyPlugin):
    def __init__(self, alpha: float = 1.0, temperature: float = 2.0,
                 softmax_over: str = "all", t_squared: bool = False) -> None:
        super().__init__()
        check_choice("strategy.plugins.lwf.softmax_over", softmax_over, ("all", "old"))
        self.alpha = alpha
        self.temperature = temperature
        self.softmax_over = softmax_over
        self.t_squared = t_squared
        self.teacher: ContinualNet | None = None
        # groups of (softmax units, distilled units) in the network's concatenated output
        self.groups: list[tuple[Tensor, Tensor]] = []
        self._seen: set[int] = set()  # heads (task-IL) or units (else) seen so far

    def on_task_start(self, loop: TaskLoop, task: Task) -> None:
        """The teacher is the network as the previous task left it, frozen."""
        if self.groups:
            self.teacher = copy.deepcopy(loop.module.net).eval().requires_grad_(False)

    def on_task_end(self, loop: TaskLoop, task: Task) -> None:
        """Note which output units now hold old knowledge."""
        module = loop.module
        offsets = [0]
        for size in module.net.head_sizes:
            offsets.append(offsets[-1] + size)
        device = module.device
        if module.setting == "task":
            self._seen.update(int(t) for t in task.train.task.unique())
            heads = [torch.arange(offsets[h], offsets[h + 1], device=device)
                     for h in sorted(self._seen)]
            self.groups = [(units, units) for units in heads]
        else:
            self._seen.update(int(u) for u in task.train.y.unique())
            seen = torch.tensor(sorted(self._seen), device=device)
            everything = torch.arange(offsets[-1], device=device)
            self.groups = [(everything if self.softmax_over == "all" else seen, seen)]

    def distillation(self, student: Tensor, teacher: Tensor) -> Tensor:
        total = student.new_zeros(())
        for softmax_units, kept in self.groups:
            log_p = F.log_softmax(student[:, softmax_units] / self.temperature, dim=1)
            q = F.softmax(teacher[:, softmax_units] / self.temperature, dim=1)
            keep = torch.searchsorted(softmax_units, kept)
            total = total + F.kl_div(log_p[:, keep], q[:, keep], reduction="batchmean")
        return total * (self.temperature**2 if self.t_squared else 1.0)

    def penalty(self, module: ContinualModule, batch: Batch, logits: Tensor) -> Tensor | None:
        if self.teacher is None:
            return None
        with torch.no_grad():
            teacher_logits = self.teacher(batch.x)
        return self.alpha * self.distillation(logits, teacher_logits)

    def state_dict(self) -> dict[str, Any]:
        return {"seen": sorted(self._seen), "groups": [list(pair) for pair in self.groups]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._seen = set(state_dict["seen"])
        self.groups = [(a, b) for a, b in state_dict["groups"]]
