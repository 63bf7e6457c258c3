"""The task loop: one fresh Lightning Trainer per training stage, plugins persisting across.

Lightning knows nothing of tasks. The loop adds them: it calls `on_task_start` before `fit`,
`on_task_end` from the Trainer's `on_train_end` (while the model is still on the training
device) and then evaluates every task's test set, filling one row of the accuracy matrix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.accelerators import CPUAccelerator

from clrun.checkpoint import restore, save_checkpoint
from clrun.errors import ClrunError, Interrupted
from clrun.loggers import log_image, log_task_row, log_task_scores
from clrun.module import ContinualModule
from clrun.plugin import StrategyPlugin
from clrun.progress import TaskProgressBar

if TYPE_CHECKING:
    from clrun.generative_metrics.evaluation import GenerativeEvaluation
    from clrun.generators.base import Generator
from clrun.scenarios.base import InputPipeline, Scenario, Split, Task
from clrun.scenarios.batches import StepChunks, TensorBatches

STREAMS = ("sequential", "cumulative", "joint")


def stage_count(scenario: Scenario, stream: str) -> int:
    return 1 if stream == "joint" else scenario.n_tasks


def training_stage(scenario: Scenario, stream: str, number: int) -> Task:
    """Stage `number` of a stream. `sequential`: task by task; `cumulative`: stage t trains on
    tasks 1..t; `joint`: one stage on the union of all tasks (the offline upper bound)."""
    tasks = scenario.tasks
    if stream == "sequential":
        return tasks[number]
    seen = tasks if stream == "joint" else tasks[: number + 1]
    last = seen[-1]
    return Task(last.index, tuple(c for t in seen for c in t.classes),
                Split.cat([t.train for t in seen]), last.test, last.val)


@dataclass
class LoopSettings:
    """Everything the loop needs from the config, already validated."""

    stream: str = "sequential"
    batch_size: int = 128
    eval_batch_size: int = 1024
    drop_last: bool = False
    seed: int = 0
    trainer_kwargs: dict[str, Any] = field(default_factory=dict)
    # what the run is (strategy, generator, scenario, model), kept in every checkpoint so that a
    # resume with another is refused (clrun.run.check_same_run)
    identity: dict[str, str | None] = field(default_factory=dict)
    # optimizer steps per Lightning batch (clrun.scenarios.batches.StepChunks); 1 under DDP
    steps_per_batch: int = 32


def check_ranks_agree(trainer: pl.Trainer, row: list[float], what: str = "accuracy row"
                      ) -> None:
    """Under DDP every rank evaluates (and holds its own generator); their accuracies (and
    weights) must match, or plugin state diverged."""
    rows = trainer.strategy.all_gather(torch.tensor(row, device=trainer.strategy.root_device))
    if not torch.equal(rows.min(dim=0).values, rows.max(dim=0).values):
        raise RuntimeError(f"DDP ranks disagree on the {what}: {rows.tolist()}; a plugin "
                           "keeps rank-dependent state")


class _TaskBoundary(pl.Callback):
    """Runs the plugins' `on_task_end` and the evaluation at `on_train_end`, on the device."""

    def __init__(self, loop: TaskLoop) -> None:
        self.loop = loop

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.loop.end_stage(trainer)


class TaskLoop:
    """Drives the stages; `matrix` and `initial` hold the accuracies as they are measured.

    Plugins read the loop's state: `scenario`, `module`, `task` (the stage being trained),
    `trainer` (this stage's Trainer), `device` and `matrix`, and train generators with
    `fit_generator`. `generative` scores a generator after every stage.

    The learner is the classifier (`ContinualModule`) or, under `objective=generative`, a
    generator: then there is no accuracy matrix, every stage trains the generator with its own
    batch size and budget, and `generative` is the whole evaluation.
    """

    def __init__(self, scenario: Scenario, module: ContinualModule | Generator,
                 plugins: list[StrategyPlugin], settings: LoopSettings,
                 loggers: list[Any] | None = None, checkpoint_path: Path | None = None,
                 generative: GenerativeEvaluation | None = None,
                 watchers: list[pl.Callback] | None = None) -> None:
        self.generative = generative
        # callbacks every Trainer of the run gets, the generators' too (the device check's)
        self.watchers = watchers or []
        self.scenario = scenario
        self.module = module
        self.plugins = plugins
        self.settings = settings
        self.loggers = loggers or []
        self.classifies = isinstance(module, ContinualModule)
        self.stages_done = 0
        self.matrix: list[list[float]] = []
        self.initial: list[float] = []
        self.trainer: pl.Trainer | None = None
        self.task: Task | None = None
        self.device = torch.device("cpu")
        self.checkpoint_path = checkpoint_path

    @property
    def n_stages(self) -> int:
        return stage_count(self.scenario, self.settings.stream)

    def make_trainer(self, callbacks: list[pl.Callback] | None = None,
                     **overrides: Any) -> pl.Trainer:
        """A fresh Trainer: a finished one would train nothing on a second `fit`; ordinary
        callbacks (the progress bar) are fresh too, while plugins persist. By default the
        classifier's (plugins and the task boundary as callbacks)."""
        if callbacks is None:
            callbacks = [*self.plugins, _TaskBoundary(self)]
        callbacks = [*callbacks, *self.watchers]
        if self.settings.trainer_kwargs.get("enable_progress_bar"):
            callbacks.append(TaskProgressBar(self))
        try:
            trainer = pl.Trainer(callbacks=callbacks, logger=self.loggers or False,
                                 enable_checkpointing=False, enable_model_summary=False,
                                 num_sanity_val_steps=0,
                                 **{**self.settings.trainer_kwargs, **overrides})
        except MisconfigurationException as error:
            raise ClrunError(f"Lightning refuses the trainer settings: "
                             f"{str(error).splitlines()[0]}") from None
        if isinstance(trainer.accelerator, CPUAccelerator):
            # lightning_fabric sets it at import so that asking for CUDA never initialises it
            # before a fork; a CPU run has no CUDA to protect, and with it every Adam step
            # dlopens NVML (about 0.15 ms, more than a small network's whole step)
            os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
        return trainer

    def generator_data(self, task: Task, split: Split | None = None
                       ) -> tuple[Split, InputPipeline]:
        """`task`'s training data as generators see it: natural classes as labels, read in
        unit space by the returned pipeline."""
        split = task.train if split is None else split
        data = Split(split.x, self.scenario.natural_of(task, split.y), split.task)
        return data, InputPipeline(scale=self.scenario.pipeline.scale)

    def unit_batches(self, generator: Generator, task: Task, data: Split) -> TensorBatches:
        """Minibatches of `data` that already is what the generator models (unit space,
        natural classes): features of a frozen network, for instance."""
        return self._batches(generator, task, data, InputPipeline())

    def generator_batches(self, generator: Generator, task: Task, split: Split | None = None,
                          seed_offset: int = 500) -> TensorBatches:
        """Minibatches of `generator_data` in the generator's batch size (a rank's share)."""
        return self._batches(generator, task, *self.generator_data(task, split), seed_offset)

    def _batches(self, generator: Generator, task: Task, data: Split, pipeline: InputPipeline,
                 seed_offset: int = 500) -> TensorBatches:
        strategy = self.trainer.strategy  # the stage's: rank and world size of this run
        return TensorBatches(data, pipeline, generator.batch_size, shuffle=True,
                             drop_last=self.settings.drop_last,
                             seed=self.settings.seed * 1000 + seed_offset + task.index,
                             rank=strategy.global_rank, world_size=strategy.world_size)

    def fit_generator(self, generator: Generator, task: Task, data: Split | None = None) -> None:
        """Train `generator` on `task`'s training data (unit-space images, natural classes),
        or on `data` given in the generator's own space (`unit_batches`), with its own budget
        and batch size, by its own Trainer on the classifier's accelerator, precision and
        DDP strategy."""
        batches = (self.generator_batches(generator, task) if data is None
                   else self.unit_batches(generator, task, data))
        trainer = self.make_trainer(callbacks=[], **self.generator_trainer_kwargs(generator,
                                                                                 batches))
        self._interruptible(trainer, generator, batches, task.index)
        self.check_generator_ranks(trainer, generator)

    def generator_trainer_kwargs(self, generator: Generator, batches: TensorBatches
                                 ) -> dict[str, Any]:
        return {**generator.training_budget(len(batches)),
                **generator.trainer_overrides(self.trainer.strategy.world_size)}

    @staticmethod
    def check_generator_ranks(trainer: pl.Trainer, generator: Generator) -> None:
        if trainer.world_size > 1:
            check_ranks_agree(trainer, [float(p.double().sum()) for p in generator.parameters()],
                              "generator's weights")

    def log_image(self, key: str, path: Path, step: int) -> None:
        log_image(self.loggers, key, path, step)

    def evaluate(self) -> list[float]:
        """Test accuracy (%) on every task of the scenario, seen and unseen."""
        return [
            self.module.accuracy(t.test, self.scenario.pipeline, self.settings.eval_batch_size)
            for t in self.scenario.tasks
        ]

    def batches(self, split: Split) -> StepChunks:
        """This stage's minibatches, `steps_per_batch` to a Lightning batch; under DDP each
        rank takes its share of every permutation, one step at a time (DDP synchronises
        gradients once per forward of its wrapped module)."""
        strategy = self.trainer.strategy
        batches = TensorBatches(split, self.scenario.pipeline, self.settings.batch_size,
                                shuffle=True, drop_last=self.settings.drop_last,
                                seed=self.settings.seed * 1000 + self.task.index,
                                rank=strategy.global_rank, world_size=strategy.world_size)
        steps = 1 if strategy.world_size > 1 else self.settings.steps_per_batch
        return StepChunks(batches, steps, self.settings.trainer_kwargs.get("max_steps", -1))

    def _move_to(self, device: torch.device) -> None:
        """Put the data and the model on the training device once, then measure the baseline
        (unless a resumed checkpoint brought it)."""
        self.device = device
        self.scenario = self.scenario.to(device)
        self.module.to(device)
        if not self.initial and self.classifies:
            self.initial = self.evaluate()

    def run(self, resume_state: dict[str, Any] | None = None) -> list[list[float]]:
        """Train every stage (after those a resumed checkpoint finished) and return the
        accuracy matrix, one row per stage."""
        start = restore(self, resume_state) if resume_state is not None else 0
        for number in range(start, self.n_stages):
            self.trainer = self.make_trainer()
            if number == start:
                self._move_to(self.trainer.strategy.root_device)
            # Lightning's teardown moved the learner to the CPU when the last fit ended; the
            # plugins' task start (teachers, anchors, new columns) must see it on the device
            self.module.to(self.device)
            self.task = training_stage(self.scenario, self.settings.stream, number)
            self.module.current_task = self.task.index
            if self.classifies:
                self.module.activate_units(torch.cat(
                    [t.train.y.unique() for t in self.scenario.tasks[: self.task.index + 1]]))
            for plugin in self.plugins:
                plugin.on_task_start(self, self.task)
            if self.classifies:
                self.module.refresh_heads()
            split = self.task.train
            for plugin in self.plugins:
                split = plugin.train_data(self, self.task, split)
            self.fit(split, number)
        return self.matrix

    def end_stage(self, trainer: pl.Trainer) -> None:
        """What ends every stage: the plugins' `on_task_end`, evaluation and generative scores
        (compared across DDP ranks), the checkpoint."""
        for plugin in self.plugins:
            plugin.on_task_end(self, self.task)
        stage = self.stages_done
        if self.classifies:
            row = self.evaluate()
            if trainer.world_size > 1:
                check_ranks_agree(trainer, row)
            self.matrix.append(row)
            log_task_row(self.loggers, stage, row)
        if self.generative is not None:
            scores = self.generative.after_stage(self, trainer.is_global_zero)
            log_task_scores(self.loggers, stage, scores)
        self.stages_done += 1
        if self.checkpoint_path is not None and trainer.is_global_zero:
            save_checkpoint(self, self.checkpoint_path)

    def fit(self, split: Split, number: int) -> None:
        if self.classifies:
            self._interruptible(self.trainer, self.module, self.batches(split), number)
            return
        # objective=generative: the generator's batches, budget and trainer settings
        if not any(p.requires_grad for p in self.module.parameters()):
            self.end_stage(self.trainer)  # nothing learns this stage (PNN+ABC's routed task)
            return
        batches = self.generator_batches(self.module, self.task, split, seed_offset=0)
        self.trainer = self.make_trainer(**self.generator_trainer_kwargs(self.module, batches))
        self._interruptible(self.trainer, self.module, batches, number)
        self.check_generator_ranks(self.trainer, self.module)

    def _interruptible(self, trainer: pl.Trainer, module: pl.LightningModule,
                       batches: TensorBatches | StepChunks, number: int) -> None:
        """`trainer.fit` during stage `number`; Ctrl-C (Lightning ends it with exit code 1)
        becomes `Interrupted`, so the CLI can say what is saved."""
        try:
            trainer.fit(module, train_dataloaders=batches)
        except (KeyboardInterrupt, SystemExit) as stop:
            if isinstance(stop, KeyboardInterrupt) or trainer.interrupted:
                raise Interrupted(number, self.checkpoint_path) from None
            raise
