"""A rich progress bar that says which task is training and how the seen tasks are doing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pytorch_lightning.callbacks import RichProgressBar

if TYPE_CHECKING:
    from clrun.loop import TaskLoop


class TaskProgressBar(RichProgressBar):
    """Lightning's rich bar (epoch, step, loss) plus `task i/T` and the last seen-task accuracy."""

    def __init__(self, loop: TaskLoop) -> None:
        super().__init__(leave=False)
        self.loop = loop

    def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        metrics["task"] = f"{self.loop.stages_done + 1}/{self.loop.n_stages}"
        if self.loop.matrix:
            seen = len(self.loop.matrix)
            metrics["acc_seen"] = f"{sum(self.loop.matrix[-1][:seen]) / seen:.1f}"
        return metrics
