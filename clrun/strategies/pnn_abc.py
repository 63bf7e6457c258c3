"""Progressive generators with autonomous branch construction (`strategy=pnn_abc`, with
`generator=progressive_vae` under `objective=generative`).

At the start of every task each trained column reconstructs the task's training images (mean
per-pixel binary cross-entropy, decoding z = μ; with `score=elbo` plus the posterior's KL to
the prior, the negative ELBO). The task goes to the column with the lowest
error if that error is at most (1 + `fit_tolerance`) × the error the column had on its own data
when it was trained; such a task trains nothing (its data already fits a frozen column, and a
trained column never changes). Otherwise a new column opens, with laterals from all earlier
ones, and learns the task. The rule is clrun's: the method's description (route to the column
with the lowest reconstruction loss, grow one when none fits under a threshold) gives no
threshold, and a threshold relative to a column's own error needs no tuning per data set.
`metrics.json` gets `pnn_abc_columns` (the column of every task) and `pnn_abc_opened` (whether
the task opened its column).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clrun.errors import ConfigError
from clrun.generators.base import Generator
from clrun.generators.progressive import ProgressiveVAE
from clrun.plugin import StrategyPlugin
from clrun.strategies.importance import check_choice

SCORES = ("reconstruction", "elbo")

if TYPE_CHECKING:
    from torch import Tensor

    from clrun.loop import TaskLoop
    from clrun.scenarios.base import Task


class AutonomousBranches(StrategyPlugin):
    """Routes every task to a trained column, or opens a column for it."""

    objectives = ("generative",)
    uses_generator = True

    def __init__(self, fit_tolerance: float = 0.1, score: str = "reconstruction") -> None:
        super().__init__()
        if fit_tolerance < 0:
            raise ConfigError("strategy.plugins.pnn_abc.fit_tolerance", fit_tolerance,
                              "must be >= 0 (0: only data the column fits as well as its own)")
        check_choice("strategy.plugins.pnn_abc.score", score, SCORES)
        self.fit_tolerance = fit_tolerance
        self.with_kl = score == "elbo"
        self.generator: ProgressiveVAE | None = None
        self.opened: list[bool] = []
        self.images: Tensor | None = None

    def attach_generator(self, generator: Generator) -> None:
        if not isinstance(generator, ProgressiveVAE):
            raise ConfigError("generator", type(generator).__name__,
                              "strategy=pnn_abc grows generator=progressive_vae")
        self.generator = generator

    def fitting_column(self, images: Tensor) -> int | None:
        """The trained column with the lowest error on `images`, if within tolerance."""
        errors = [self.generator.column_error(images, k, self.with_kl)
                  for k in range(len(self.generator.own_errors))]
        if not errors:
            return None
        best = min(range(len(errors)), key=errors.__getitem__)
        own = self.generator.own_errors[best]
        return best if errors[best] <= (1 + self.fit_tolerance) * own else None

    def on_task_start(self, loop: TaskLoop, task: Task) -> None:
        data, pipeline = loop.generator_data(task)
        self.images = pipeline(data.x, train=False)
        column = self.fitting_column(self.images)
        opens = column is None
        if opens:
            column = self.generator.open_column()
        self.generator.route(task.index, column, trains=opens)
        self.opened = [*self.opened[: task.index], opens]

    def on_task_end(self, loop: TaskLoop, task: Task) -> None:
        self.generator.end_task(self.images, self.with_kl)

    def results(self) -> dict[str, Any]:
        return {"pnn_abc_columns": list(self.generator.task_columns),
                "pnn_abc_opened": list(self.opened)}

    def state_dict(self) -> dict[str, Any]:
        return {"opened": list(self.opened)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.opened = list(state_dict["opened"])
