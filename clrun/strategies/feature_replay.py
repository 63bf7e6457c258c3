"""Generative replay in feature space: BI-R's "internal replay" (van de Ven, Siegelmann &
Tolias 2020) on its own.

The model's sequential backbone is cut at `layer`: the layers below it are frozen after the
first task (or, with `lower_from`, loaded from another run's checkpoint and frozen from the
start), so their activations mean the same thing for the rest of the run. After each task the
generator (`generator=vae|diffusion|gan`, built for vectors of the cut's width) learns the
task's activations, plus (from task 2 on) its own previous copy's samples as in DGR. While a
later task trains, every step adds a batch of generated activations, labelled by the frozen
previous classifier, that pass through the layers above the cut only: replay costs one small
generator call and no pass through the lower layers.

The generator works in [0, 1] per feature: activations are scaled by the smallest and largest
value of each feature on the first task's data (kept in the checkpoint) and clipped there.
Scores of the generator's samples (FID in an image feature net's space) do not apply to
activations and are not computed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from clrun.checkpoint import FILENAME, load_checkpoint
from clrun.errors import ConfigError
from clrun.scenarios.base import Split
from clrun.strategies.generative import GenerativeReplay, replay_loss

if TYPE_CHECKING:
    from clrun.generators.base import Generator
    from clrun.loop import TaskLoop
    from clrun.module import ContinualModule
    from clrun.scenarios.base import Scenario, Task
    from clrun.scenarios.batches import Batch

KEY = "strategy.plugins.feature_replay"


def split_backbone(net: nn.Module, layer: int, key: str = f"{KEY}.layer"
                   ) -> tuple[nn.Sequential, nn.Sequential]:
    """The backbone's layers below `layer` and from `layer` on (refused if it is no cut)."""
    backbone = getattr(net, "backbone", None)
    if not isinstance(backbone, nn.Sequential) or not 0 < layer <= len(backbone):
        size = len(backbone) if isinstance(backbone, nn.Sequential) else 0
        raise ConfigError(key, layer,
                          "must cut the model's sequential backbone inside it: 1.."
                          f"{size} ({size} being the features the heads read)" if size else
                          "needs a model whose backbone is an nn.Sequential (mlp, convnet, "
                          "lenet_g)")
    return backbone[:layer], backbone[layer:]


def vector_shape(lower: nn.Module, input_shape: tuple[int, ...], key: str, layer: int
                 ) -> tuple[int, ...]:
    """The shape of `lower`'s activations for one input; refused unless it is a vector. Run in
    eval mode (restored after), so batch norm statistics and dropout's draws stay untouched."""
    training = lower.training
    with torch.no_grad():
        shape = tuple(lower.eval()(torch.zeros(1, *input_shape)).shape[1:])
    lower.train(training)
    if len(shape) != 1:
        raise ConfigError(key, layer, f"gives activations of shape {shape}; replay of "
                          "features models vectors: cut after the Flatten of the backbone")
    return shape


def checkpointed_lower(lower: nn.Module, source: str, key: str, layer: int
                       ) -> dict[str, Tensor]:
    """`lower`'s weights as another run (its directory or checkpoint file) left them."""
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / FILENAME
    if not path.is_file():
        raise ConfigError(key, source, "is no clrun checkpoint or run directory holding one "
                          f"(looked for {path})")
    model = load_checkpoint(path)["model"]
    own = lower.state_dict()
    state = {name: model.get(f"backbone.{name}") for name in own}
    wrong = [n for n in own if state[n] is None or state[n].shape != own[n].shape]
    if wrong:
        raise ConfigError(key, source, f"holds no backbone.{wrong[0]} of this model's shape: "
                          f"it must come from a run of the same model up to layer {layer}")
    return state


def freeze(lower: nn.Module) -> None:
    lower.requires_grad_(False).eval()


def is_frozen(lower: nn.Module | None) -> bool:
    return lower is not None and not any(p.requires_grad for p in lower.parameters())


def keep_frozen_in_eval(lower: nn.Module | None) -> None:
    """At every epoch start (Lightning puts the whole network in train mode): frozen layers
    stay in eval mode, so batch norm statistics do not move and dropout draws nothing."""
    if is_frozen(lower):
        lower.eval()


def heads_output(net: nn.Module, features: Tensor) -> Tensor:
    return torch.cat([head(features) for head in net.heads], dim=1)


class FeatureReplay(GenerativeReplay):
    """`strategy=feature_replay`: DGR on the activations at backbone layer `layer`."""

    option = "feature_replay"

    def __init__(self, layer: int = 3, lower_from: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.layer = layer
        self.lower_from = lower_from
        self.low: Tensor | None = None   # per-feature range of the first task's activations
        self.high: Tensor | None = None
        self.lower: nn.Sequential | None = None

    def generator_input_shape(self, net: nn.Module, scenario: Scenario) -> tuple[int, ...]:
        lower, _ = split_backbone(net, self.layer)
        return vector_shape(lower, scenario.input_shape, f"{KEY}.layer", self.layer)

    def extend_model(self, module: ContinualModule, scenario: Scenario) -> None:
        self.lower, _ = split_backbone(module.net, self.layer)
        if self.lower_from is not None:
            self.lower.load_state_dict(checkpointed_lower(self.lower, self.lower_from,
                                                          f"{KEY}.lower_from", self.layer))
            freeze(self.lower)

    def sampler(self) -> Generator | None:
        return None  # activations, not images: no FID

    # -- task boundaries --------------------------------------------------------------------
    def on_task_start(self, loop: TaskLoop, task: Task) -> None:
        self.prepare_replay(loop, task)

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        keep_frozen_in_eval(self.lower)

    def on_task_end(self, loop: TaskLoop, task: Task) -> None:
        """Freeze the lower layers (after the first task), then train the generator on the
        task's activations."""
        freeze(self.lower)
        features = self.activations(loop, task.train)
        if self.low is None:
            self.low, self.high = features.amin(dim=0), features.amax(dim=0)
        activations = Split(self.to_unit(features), loop.scenario.natural_of(task, task.train.y),
                            task.train.task)
        self.train_generator(loop, task, activations.to(task.train.y.device))
        super().on_task_end(loop, task)

    @torch.no_grad()
    def activations(self, loop: TaskLoop, data: Split) -> Tensor:
        pipeline = loop.scenario.pipeline
        return torch.cat([self.lower(pipeline(data.x[i:i + 1024].to(loop.device), train=False))
                          for i in range(0, len(data), 1024)]).float()

    def to_unit(self, features: Tensor) -> Tensor:
        return ((features - self.low) / (self.high - self.low).clamp_min(1e-6)).clamp(0, 1)

    def from_unit(self, unit: Tensor) -> Tensor:
        return self.low + unit.clamp(0, 1) * (self.high - self.low)

    # -- replay -----------------------------------------------------------------------------
    def loss(self, module: ContinualModule, batch: Batch, logits: Tensor) -> Tensor | None:
        current = module.classification_loss(batch, logits)
        if self.previous is None:
            return current
        unit, _ = self.replayed_unit(module, self.replay_size(batch))
        features = self.from_unit(unit)
        _, upper = split_backbone(module.net, self.layer)
        _, teacher_upper = split_backbone(self.teacher, self.layer)
        with torch.no_grad():
            teacher = heads_output(self.teacher, teacher_upper(features))
        student = heads_output(module.net, upper(features))
        replayed = replay_loss(student, teacher, self.groups, self.soft, self.temperature)
        return self.weighted(current, replayed)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "low": self.low, "high": self.high}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.low, self.high = state_dict["low"], state_dict["high"]
        if self.low is not None:
            freeze(self.lower)
