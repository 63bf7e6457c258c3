"""The plugin contract every continual-learning strategy implements.

A plugin is a Lightning `Callback` (so it receives Lightning's hooks, e.g.
`on_before_optimizer_step` for gradient surgery) that persists across tasks, plus the
task-level events Lightning does not have. Override only what the method needs; the module
calls a per-step hook only for plugins that override it, so unused hooks cost nothing per step.
The classifier takes `train.steps_per_batch` optimizer steps per Lightning batch, so Lightning's
batch hooks (`on_train_batch_start`/`_end`) would see chunks of steps: per-step work goes in
`after_step`, and a plugin overriding those batch hooks is refused.

| need                         | hook                                                   |
|------------------------------|--------------------------------------------------------|
| refuse a setting up front    | `check(scenario)` raising `ClrunError`                 |
| grow/snapshot at a boundary  | `on_task_start(loop, task)`                            |
| change a task's training set | `train_data(loop, task, split) -> split`               |
| mix in replayed samples      | `extend_batch(module, batch) -> batch`                 |
| replace the data loss        | `loss(module, batch, logits) -> Tensor | None`         |
| add a loss term              | `penalty(module, batch, logits) -> Tensor | None`      |
| edit gradients               | Lightning's `on_before_optimizer_step`                 |
| after every step             | `after_step(module, batch)` (gradients still there)    |
| end of task (model on device)| `on_task_end(loop, task)`: importances, buffers, generators |
| replace prediction           | `predict(module, x, task) -> scores | None`            |
| add modules to the network   | `extend_model(module, scenario)` (once, before resume) |
| receive `generator=...`      | `uses_generator = True`, `attach_generator(generator)` |
| model something not inputs   | `generator_input_shape(net, scenario) -> shape`        |
| be scored as a generator     | `sampler() -> Sampler | None` (after every task)       |
| pictures of its own          | `save_figures(run_dir) -> [paths]` (when the run ends) |
| time its phases              | `timings() -> dict` (into timing.json)                 |
| train generators too         | `objectives = ("classification", "generative")`        |
| build the generative learner | `wrap_learner(generator, make) -> Generator`           |
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
from torch import Tensor

from clrun.scenarios.base import SETTINGS

if TYPE_CHECKING:
    from pathlib import Path

    from torch import nn

    from clrun.generative_metrics.scores import Sampler
    from clrun.generators.base import Generator
    from clrun.loop import TaskLoop
    from clrun.module import ContinualModule
    from clrun.scenarios.base import Scenario, Split, Task
    from clrun.scenarios.batches import Batch


class StrategyPlugin(pl.Callback):
    """Base class for strategies; every hook defaults to doing nothing."""

    #: settings the method is defined for; others are refused before training.
    supported_settings: tuple[str, ...] = SETTINGS
    #: whether the method needs the config's `generator` (given to `attach_generator`)
    uses_generator: bool = False
    #: what the method can train (`objective=`): a classifier, and/or a generator that is
    #: itself the learner (then `loop.module` is the generator and `loop.classifies` is False)
    objectives: tuple[str, ...] = ("classification",)
    #: the plugin's key under `strategy.plugins` (`ewc`), set when built from the config, so
    #: that messages name the option a user typed rather than the class
    config_key: str | None = None

    def check(self, scenario: Scenario) -> None:
        """Raise a `ClrunError` if the method cannot run on this scenario."""
        from clrun.errors import ConfigError

        if scenario.setting not in self.supported_settings:
            raise ConfigError("scenario.setting", scenario.setting,
                              f"strategy={self.config_key or type(self).__name__} supports only "
                              + ", ".join(self.supported_settings)
                              + f" (scenario.setting={self.supported_settings[0]})")

    def attach_generator(self, generator: Generator) -> None:
        """Receive the generator built from `generator=...` (when `uses_generator`)."""

    def generator_input_shape(self, net: nn.Module, scenario: Scenario) -> tuple[int, ...]:
        """What the attached generator models: the scenario's inputs, unless the method
        replays something else (feature replay: a hidden layer's activations)."""
        return scenario.input_shape

    def wrap_learner(self, generator: Generator, make: Callable[..., Generator]) -> Generator:
        """Under `objective=generative`: the learner built around `generator=...` (LogCL's
        population); `make(**overrides)` builds more of that generator."""
        return generator

    def extend_model(self, module: ContinualModule, scenario: Scenario) -> None:
        """Once, after the network is built and before a checkpoint is restored into it: add
        the modules the method needs (a decoder, columns), so a resumed run finds them."""

    def results(self) -> dict[str, Any]:
        """Extra entries for metrics.json (e.g. SupSup's task-inference accuracy)."""
        return {}

    def save_figures(self, run_dir: Path) -> list[Path]:
        """Pictures of the method's own, written when the run ends (GUIDE's guided samples)."""
        return []

    def timings(self) -> dict[str, Any]:
        """Seconds the method spent per phase (timing.json, beside the run's total): wall
        clock, never in metrics.json, so that a resumed run's metrics stay identical."""
        return {}

    def sampler(self) -> Sampler | None:
        """The generator whose samples are drawn and scored after every task, if any."""
        return None

    def on_task_start(self, loop: TaskLoop, task: Task) -> None:
        """Before `fit` on `task`: snapshot a teacher, grow the model, prepare a buffer."""

    def train_data(self, loop: TaskLoop, task: Task, split: Split) -> Split:
        """The data `task` trains on; replay-by-concatenation returns a larger split."""
        return split

    def extend_batch(self, module: ContinualModule, batch: Batch) -> Batch:
        """Return the batch to train on this step (e.g. current samples plus replayed ones)."""
        return batch

    def loss(self, module: ContinualModule, batch: Batch, logits: Tensor) -> Tensor | None:
        """Replace the classification loss (at most one plugin may); None keeps the default."""
        return None

    def penalty(self, module: ContinualModule, batch: Batch, logits: Tensor) -> Tensor | None:
        """An extra loss term added to the classification loss."""
        return None

    def after_step(self, module: pl.LightningModule, batch: Batch) -> None:
        """After each optimizer step, gradients still in place, with the batch as the data gave
        it (before `extend_batch`): per-step bookkeeping such as SI's path integral or a
        reservoir's insertion. Called only for plugins that override it."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        """Lightning's per-batch hook: `after_step`, for a learner that takes one step per
        Lightning batch (a generator under `objective=generative`); the classifier's module
        takes several steps per batch and calls `after_step` after each itself."""
        if not getattr(pl_module, "dispatches_steps", False) and overrides(self, "after_step"):
            self.after_step(pl_module, batch)

    def on_task_end(self, loop: TaskLoop, task: Task) -> None:
        """After training on `task`, model still on the training device, before evaluation."""

    def predict(self, module: ContinualModule, x: Tensor, task: Tensor) -> Tensor | None:
        """Class scores in the setting's label space, or None to use the network's output."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """Plugin state for checkpoints: tensors and plain containers only."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""


def overrides(plugin: StrategyPlugin, hook: str) -> bool:
    """Whether `plugin` implements `hook` itself, so callers skip the no-op default."""
    return getattr(type(plugin), hook) is not getattr(StrategyPlugin, hook)
