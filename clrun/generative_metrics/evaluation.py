"""After every task: the generator's FID/precision/recall on every seen task, and its sample
grid (`samples/task_<t>.png`, also logged as an image). Run by the task loop when a strategy
has a generator (`metrics.generative`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clrun.errors import ConfigError
from clrun.generative_metrics.feature_net import FeatureNetSettings, TrainedFeatureNet, feature_net
from clrun.generative_metrics.grid import save_sample_grid
from clrun.generative_metrics.precision_recall import PRDSettings
from clrun.generative_metrics.scores import GenerativeScores, Sampler, score_row
from clrun.plugin import StrategyPlugin
from clrun.scenarios.base import Scenario

if TYPE_CHECKING:
    from clrun.loop import TaskLoop


@dataclass
class GenerativeEvaluation:
    source: StrategyPlugin  # the plugin whose `sampler()` is scored
    feature_net: TrainedFeatureNet
    prd: PRDSettings
    samples_dir: Path | None  # None: no sample grids
    seed: int

    def __post_init__(self) -> None:
        self.scores = GenerativeScores()

    def after_stage(self, loop: TaskLoop, write_files: bool) -> dict[str, list[float | None]]:
        """Score the generator on the tasks seen so far; draw its grid. Returns the row."""
        sampler: Sampler = self.source.sampler()
        stage = len(self.scores.fid)
        n_seen = loop.task.index + 1
        row = score_row(sampler, loop.scenario, n_seen, self.feature_net, self.prd, loop.device,
                        self.seed * 1000 + stage)
        self.scores.append(row)
        if write_files and self.samples_dir is not None:
            path = save_sample_grid(sampler, loop.scenario, n_seen, loop.module,
                                    self.feature_net, self.samples_dir / f"task_{stage}.png",
                                    f"samples after task {stage} (label: the classifier's)")
            loop.log_image(f"samples/task_{stage}", path, stage)
        return row

    def to_dict(self) -> dict[str, Any]:
        return {**self.scores.to_dict(), "feature_net": self.feature_net.describe()}

    def state_dict(self) -> dict[str, Any]:
        return self.scores.to_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scores = GenerativeScores(**{k: [list(r) for r in v] for k, v in state.items()})


def generative_evaluation(mode: Any, metrics_cfg: Any, plugins: list[StrategyPlugin],
                          scenario: Scenario, data_dir: Path, run_dir: Path, seed: int
                          ) -> GenerativeEvaluation | None:
    """The evaluation `metrics.generative` asks for: `auto` (on when a strategy has a
    generator), true (it must have one) or false."""
    if mode not in ("auto", True, False):
        raise ConfigError("metrics.generative", mode, "use one of: auto, true, false")
    sources = [p for p in plugins if p.sampler() is not None]
    if mode is False or (mode == "auto" and not sources):
        return None
    if not sources:
        raise ConfigError("metrics.generative", mode, "the strategy has no generator to score; "
                          "use a generator strategy (dgr, dgr_distill, rtf) or "
                          "metrics.generative=false")
    net = feature_net(scenario, FeatureNetSettings(**metrics_cfg.feature_net), data_dir)
    return GenerativeEvaluation(sources[0], net, PRDSettings(**metrics_cfg.prd),
                                run_dir / "samples" if metrics_cfg.sample_grids else None, seed)
