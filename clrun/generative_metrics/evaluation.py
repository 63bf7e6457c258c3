"""After every task: the generator's FID/precision/recall on every seen task, and its sample
grid (`samples/task_<t>.png`, also logged as an image). Run by the task loop when a strategy
has a generator (`metrics.generative`), and as the whole evaluation of `objective=generative`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from clrun.errors import ConfigError
from clrun.generative_metrics.feature_net import FeatureNetSettings, TrainedFeatureNet, feature_net
from clrun.generative_metrics.grid import Labeller, save_sample_grid
from clrun.generative_metrics.precision_recall import PRDSettings
from clrun.generative_metrics.scores import (
    MAX_POOLS,
    GenerativeScores,
    Sampler,
    predicted_classes,
    score_row,
    scored_subsets,
)
from clrun.plugin import StrategyPlugin
from clrun.scenarios.base import Scenario

if TYPE_CHECKING:
    from clrun.loop import TaskLoop


@dataclass
class GenerativeEvaluation:
    sampler: Callable[[], Sampler]  # the generator to score, asked for after every stage
    feature_net: TrainedFeatureNet
    prd: PRDSettings
    samples_dir: Path | None  # None: no sample grids
    seed: int
    max_pools: int = MAX_POOLS  # an unconditional generator's pools per stage (scores.py)
    samples_per_task: int | None = None  # test images scored per task (None: all)

    def __post_init__(self) -> None:
        self.scores = GenerativeScores()

    def after_stage(self, loop: TaskLoop, write_files: bool) -> dict[str, list[float | None]]:
        """Score the generator on the tasks seen so far; draw its grid. Returns the row.
        Samples are drawn in eval mode (batch norm's running statistics), as replay draws
        them from frozen copies, on the training device: a generator trained by its own fit
        before the classifier's was moved to the CPU when that fit ended (Lightning's teardown),
        and a GPU run would otherwise draw thousands of samples on the CPU."""
        sampler = self.sampler().to(loop.device)
        was_training = sampler.training
        sampler.eval()
        try:
            return self._score_and_draw(loop, sampler, write_files)
        finally:
            sampler.train(was_training)

    def _score_and_draw(self, loop: TaskLoop, sampler: Sampler, write_files: bool
                        ) -> dict[str, list[float | None]]:
        stage = len(self.scores.fid)
        n_seen = loop.task.index + 1
        subsets = scored_subsets(loop.scenario.tasks, self.samples_per_task, self.seed)
        row = score_row(sampler, loop.scenario, n_seen, self.feature_net, self.prd, loop.device,
                        self.seed * 1000 + stage, self.max_pools, subsets)
        self.scores.append(row)
        if write_files and self.samples_dir is not None:
            labeller, whose = self.labeller(loop)
            path = save_sample_grid(sampler, loop.scenario, n_seen, labeller, self.feature_net,
                                    self.samples_dir / f"task_{stage}.png",
                                    f"samples after task {stage} (label: {whose})", loop.device)
            loop.log_image(f"samples/task_{stage}", path, stage)
        return row

    def labeller(self, loop: TaskLoop) -> tuple[Labeller, str]:
        """Who captions the grid: the classifier being trained, or (when the generator is the
        learner) the feature net. Both in natural classes, as the grid's rows are: a class-IL
        classifier's own labels follow the permuted class order, a task-IL one's the task."""
        if not loop.classifies:
            return (lambda images, task: predicted_classes(self.feature_net, images),
                    "the feature net's")

        def classify(images: Tensor, task: Tensor) -> Tensor:
            x = loop.scenario.pipeline.from_unit(images, train=False)
            predicted = loop.module.scores(x, task).argmax(1)
            owner = loop.scenario.tasks[int(task[0])]  # a grid row is one class, of one task
            return loop.scenario.natural_of(owner, predicted)

        return classify, "the classifier's"

    def to_dict(self) -> dict[str, Any]:
        return {**self.scores.to_dict(), "feature_net": self.feature_net.describe()}

    def state_dict(self) -> dict[str, Any]:
        return self.scores.to_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scores = GenerativeScores(**{k: [list(r) for r in v] for k, v in state.items()})


def generative_evaluation(mode: Any, metrics_cfg: Any, plugins: list[StrategyPlugin],
                          scenario: Scenario, data_dir: Path, run_dir: Path, seed: int,
                          learner: Sampler | None = None) -> GenerativeEvaluation | None:
    """The evaluation `metrics.generative` asks for: `auto` (on when a strategy has a
    generator), true (it must have one) or false. `learner`: the generator that
    `objective=generative` trains, which is always scored. The settings' values were
    checked by `clrun.validate.check_metrics`."""
    if learner is not None:
        if mode is False:
            raise ConfigError("metrics.generative", mode, "objective=generative is measured by "
                              "the generative metrics alone; drop metrics.generative=false")
        sampler: Callable[[], Sampler] | None = lambda: learner  # noqa: E731
    else:
        sources = [p for p in plugins if p.sampler() is not None]
        sampler = sources[0].sampler if sources else None
    if mode is False or (mode == "auto" and sampler is None):
        return None
    if sampler is None:
        raise ConfigError("metrics.generative", mode, "the strategy has no generator to score; "
                          "use a generator strategy (dgr, dgr_distill, rtf, bir) or "
                          "metrics.generative=false")
    net = feature_net(scenario, FeatureNetSettings(**metrics_cfg.feature_net), data_dir)
    return GenerativeEvaluation(sampler, net, PRDSettings(**metrics_cfg.prd),
                                run_dir / "samples" if metrics_cfg.sample_grids else None, seed,
                                metrics_cfg.max_pools, metrics_cfg.get("samples_per_task"))
