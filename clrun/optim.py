"""An optimizer that outlives the per-task Trainers when the protocol keeps it across tasks.

Lightning rebuilds optimizers at every `fit`; with `reset=False` the first one is handed back
instead (new parameters join it as a new group), so Adam's moments carry over from task to task
as in van de Ven's protocol. Parameters frozen later stay in it (without gradients the
optimizer skips them). Its state travels in the checkpoint with the names of each group's
parameters, so a resumed run rebuilds the same groups before loading the state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from clrun.errors import ClrunError

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


class KeptOptimizer:
    def __init__(self, factory: OptimizerFactory, reset: bool = True) -> None:
        self.factory = factory
        self.reset = reset
        self.optimizer: torch.optim.Optimizer | None = None
        self.group_names: list[list[str]] = []
        self.pending_state: dict[str, Any] | None = None  # from a checkpoint, loaded on first use

    def get(self, module: nn.Module) -> torch.optim.Optimizer:
        """The optimizer for this task's `fit` over `module`'s trainable parameters."""
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if self.reset or (self.optimizer is None and self.pending_state is None):
            self.optimizer = self.factory([p for _, p in named])
            self.group_names = [[n for n, _ in named]]
            return self.optimizer
        if self.optimizer is None:
            self._restore(module)
        known = {id(p) for group in self.optimizer.param_groups for p in group["params"]}
        new = [(n, p) for n, p in named if id(p) not in known]
        if new:
            self.optimizer.add_param_group({"params": [p for _, p in new]})
            self.group_names.append([n for n, _ in new])
        return self.optimizer

    def _restore(self, module: nn.Module) -> None:
        """The checkpoint's optimizer: its groups rebuilt by name (frozen members included)."""
        by_name = dict(module.named_parameters())
        state, self.pending_state = self.pending_state, None
        if "groups" not in state:
            raise ClrunError("the checkpoint's optimizer state was written by an older clrun "
                             "(no parameter names): rerun without resume=true")
        self.group_names = state["groups"]
        groups = [[by_name[n] for n in names] for names in self.group_names]
        self.optimizer = self.factory(groups[0])
        for params in groups[1:]:
            self.optimizer.add_param_group({"params": params})
        self.optimizer.load_state_dict(state["optimizer"])

    def state_dict(self) -> dict[str, Any] | None:
        """What a checkpoint keeps: the state only when it is kept across tasks."""
        if self.optimizer is None or self.reset:
            return None
        return {"optimizer": self.optimizer.state_dict(), "groups": self.group_names}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        self.pending_state = state
