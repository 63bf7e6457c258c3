"""Networks whose forward takes each sample's task: the contract of the architectural family.

A `TaskConditionedNet` returns logits in the usual concatenated-heads layout, so the module's
task-IL head selection, the accuracy matrix and the plugins see what they see for any network;
internally it runs each task's group of samples through that task's column, mask or generated
weights. Samples of a task the network has nothing for yet get -inf (counted as errors).
The existing strategies never meet one: the module calls `forward(x, task)` only on these.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from clrun.device_check import host_read_allowed


class TaskConditionedNet(nn.Module):
    """Subclasses implement `forward_task(x, t)`: the logits of task t's head for a batch of
    task t's samples, or None when task t has no network yet."""

    task_conditioned = True

    def __init__(self, head_sizes: list[int]) -> None:
        super().__init__()
        self._head_sizes = list(head_sizes)

    @property
    def head_sizes(self) -> list[int]:
        return list(self._head_sizes)

    def head_slice(self, t: int) -> slice:
        """Where head t's units sit in the concatenated output (one shared head: all)."""
        if len(self._head_sizes) == 1:
            return slice(0, self._head_sizes[0])
        start = sum(self._head_sizes[:t])
        return slice(start, start + self._head_sizes[t])

    def task_columns(self, t: int) -> Tensor:
        """The output units `forward_task(x, t)`'s logits fill, in order (its head's)."""
        units = self.head_slice(t)
        return torch.arange(units.start, units.stop)

    def forward_task(self, x: Tensor, t: int) -> Tensor | None:
        raise NotImplementedError

    def forward(self, x: Tensor, task: Tensor) -> Tensor:
        """Group the batch by task and run each group through its task's network."""
        out = torch.full((len(x), sum(self._head_sizes)), float("-inf"), device=x.device)
        with host_read_allowed("a column, mask or generated weights per task in the batch"):
            tasks = task.unique().tolist()
        for t in tasks:
            index = (task == t).nonzero().flatten()
            logits = self.forward_task(x[index], int(t))
            if logits is not None:
                columns = self.task_columns(int(t)).to(x.device)
                out[index[:, None], columns[None, :]] = logits.to(out.dtype)
        return out
