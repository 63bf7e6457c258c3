"""An optimizer that outlives the per-task Trainers when the protocol keeps it across tasks.

Lightning rebuilds optimizers at every `fit`; with `reset=False` the first one is handed back
instead (new parameters join it as a new group), so Adam's moments carry over from task to task
as in van de Ven's protocol. Its state travels in the checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


class KeptOptimizer:
    def __init__(self, factory: OptimizerFactory, reset: bool = True) -> None:
        self.factory = factory
        self.reset = reset
        self.optimizer: torch.optim.Optimizer | None = None
        self.pending_state: dict[str, Any] | None = None  # from a checkpoint, loaded on first use

    def get(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        """The optimizer for this task's `fit` over `params` (the trainable parameters)."""
        if self.optimizer is None or self.reset:
            self.optimizer = self.factory(params)
            if self.pending_state is not None:
                self.optimizer.load_state_dict(self.pending_state)
                self.pending_state = None
            return self.optimizer
        known = {id(p) for group in self.optimizer.param_groups for p in group["params"]}
        new = [p for p in params if id(p) not in known]
        if new:
            self.optimizer.add_param_group({"params": new})
        return self.optimizer

    def state_dict(self) -> dict[str, Any] | None:
        """What a checkpoint keeps: the state only when it is kept across tasks."""
        if self.optimizer is None or self.reset:
            return None
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        self.pending_state = state
