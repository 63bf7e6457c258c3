"""Bookkeeping of task inference (SupSup's one-shot gradient, HNET's lowest entropy): how often
the inferred task was the true one, per task, after every training stage."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from clrun.plugin import StrategyPlugin

if TYPE_CHECKING:
    from clrun.loop import TaskLoop
    from clrun.scenarios.base import Task


def entropy(logits: Tensor) -> Tensor:
    """Each sample's softmax entropy (in float32): the uncertainty task inference compares."""
    logits = logits.float()
    return -(F.softmax(logits, 1) * F.log_softmax(logits, 1)).sum(1)


def task_units(scenario: Any) -> list[Tensor]:
    """The output units each task's classes use (its head's in task-IL, else its labels)."""
    if scenario.setting == "task":
        return [torch.arange(size) for size in scenario.head_sizes]
    return [task.train.y.unique().cpu() for task in scenario.tasks]


class TaskInferenceRecord:
    def __init__(self) -> None:
        self.stage = 0
        self.counts: dict[int, dict[int, list[int]]] = {}  # stage -> task -> [correct, total]

    def count(self, truth: Tensor, guess: Tensor) -> None:
        """One evaluation batch: true tasks and inferred tasks, sample by sample."""
        row = self.counts.setdefault(self.stage, {})
        for t in truth.unique().tolist():
            mine = truth == t
            cell = row.setdefault(int(t), [0, 0])
            cell[0] += int((guess[mine] == t).sum())
            cell[1] += int(mine.sum())

    def results(self, n_tasks: int) -> dict[str, Any]:
        """`task_inference_acc` (mean over the tasks after the last stage, %) and the
        stage × task matrix, for metrics.json."""
        if not self.counts:
            return {}
        matrix = [[100.0 * row[t][0] / row[t][1] if t in row else None for t in range(n_tasks)]
                  for _, row in sorted(self.counts.items())]
        last = [v for v in matrix[-1] if v is not None]
        return {"task_inference_acc": sum(last) / len(last), "task_inference_matrix": matrix}

    def state_dict(self) -> dict[str, Any]:
        return {str(s): {str(t): c for t, c in row.items()} for s, row in self.counts.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.counts = {int(s): {int(t): list(c) for t, c in row.items()}
                       for s, row in state.items()}


class TaskInferring(StrategyPlugin):
    """Base of the plugins that infer the task outside task-IL (SupSup, HNET): the tasks
    learned so far, each task's output units, and the inference record in metrics.json."""

    def __init__(self) -> None:
        super().__init__()
        self.units: list[Tensor] = []
        self.n_learned = 0
        self.record = TaskInferenceRecord()

    def on_task_end(self, loop: TaskLoop, task: Task) -> None:
        self.n_learned = task.index + 1
        self.record.stage = loop.stages_done  # the evaluation that follows is this stage's

    def results(self) -> dict[str, Any]:
        return self.record.results(len(self.units))

    def state_dict(self) -> dict[str, Any]:
        return {"n_learned": self.n_learned, "inference": self.record.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.n_learned = int(state_dict["n_learned"])
        self.record.load_state_dict(state_dict["inference"])
