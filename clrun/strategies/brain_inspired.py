"""Brain-inspired replay (BI-R; van de Ven, Siegelmann & Tolias 2020, Nature Communications) on
networks without convolutional layers, as the authors run it on split MNIST: replay-through-
feedback plus

- conditional replay: a Gaussian-mixture prior with one learned mode per class; replay draws
  the classes seen before uniformly and samples each from its class's mode;
- gating based on internal context: every hidden layer of the decoder has a fixed random mask
  per class (`gate_proportion` of its units off; the authors' split-MNIST value 0.8);
- distillation: the replayed samples' targets are the frozen previous network's softmax at T = 2.

Classes are the data set's own (natural) classes in every setting, known for the current batch
from its task and label; a replayed sample is decoded and trained with the class it was drawn
from (the authors' code gates it with the previous network's predicted class probabilities).

Internal replay (`internal_replay=true`), the fourth component: the backbone is cut after its
convolutional part (its last Flatten, or `frozen_layers`); the layers below are frozen after the
first task, or loaded from another run with `lower_from` and frozen from the start (the
authors pre-train them on CIFAR-10 for CIFAR-100). The decoder then reconstructs the cut's
activations a instead of the input — its logits are a, trained by cross-entropy against
sigmoid(a), so the image VAE's loss serves unchanged — and replayed activations pass through
the layers above the cut only. Without it, on a network with convolutions the decoder
reconstructs the input, as in RtF.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from clrun.errors import ConfigError
from clrun.generators.base import draw_uniformly
from clrun.generators.feedback import GatedFeedbackVAE
from clrun.scenarios.batches import Batch
from clrun.strategies.feature_replay import (
    checkpointed_lower,
    freeze,
    heads_output,
    is_frozen,
    keep_frozen_in_eval,
    split_backbone,
    vector_shape,
)
from clrun.strategies.generative import ReplayThroughFeedback

if TYPE_CHECKING:
    from clrun.loop import TaskLoop
    from clrun.module import ContinualModule
    from clrun.scenarios.base import Scenario, Task

KEY = "strategy.plugins.bir"


def convolutional_part(net: nn.Module) -> int:
    """Where internal replay cuts by default: after the backbone's last Flatten (its
    convolutional layers and their pooling), refused on a network without convolutions."""
    backbone = getattr(net, "backbone", None)
    layers = list(backbone) if isinstance(backbone, nn.Sequential) else []
    if not any(isinstance(layer, nn.Conv2d) for layer in layers) or \
            not any(isinstance(layer, nn.Flatten) for layer in layers):
        raise ConfigError(f"{KEY}.internal_replay", True,
                          "replays the output of convolutional layers: use a convolutional "
                          "model (model=convnet, lenet_g) or give "
                          f"{KEY}.frozen_layers=<where to cut the backbone>")
    return max(i for i, layer in enumerate(layers) if isinstance(layer, nn.Flatten)) + 1


class BrainInspiredReplay(ReplayThroughFeedback):
    """`strategy=bir` (with `generator=vae` for the latent size and the decoder's widths)."""

    method = "brain-inspired replay"

    def __init__(self, weighting: str = "task_ratio", targets: str = "soft",
                 temperature: float = 2.0, replay_batch_size: int | None = None,
                 gate_proportion: float = 0.8, internal_replay: bool = False,
                 frozen_layers: int | None = None, lower_from: str | None = None) -> None:
        super().__init__(weighting, targets, temperature, replay_batch_size)
        if not 0 <= gate_proportion < 1:
            raise ConfigError("strategy.plugins.bir.gate_proportion", gate_proportion,
                              "is the fraction of decoder units gated off per class: "
                              "give a value in [0, 1)")
        if not internal_replay and (frozen_layers is not None or lower_from is not None):
            raise ConfigError("strategy.plugins.bir.internal_replay", internal_replay,
                              "frozen_layers and lower_from cut the network for internal "
                              "replay: set strategy.plugins.bir.internal_replay=true")
        self.gate_proportion = gate_proportion
        self.internal_replay, self.frozen_layers = internal_replay, frozen_layers
        self.lower_from = lower_from
        self.cut: int | None = None  # where the backbone is cut (internal replay)
        self.lower: nn.Sequential | None = None
        self._activations: Tensor | None = None  # the current batch's, at the cut
        self.scenario: Scenario | None = None
        self.task: Task | None = None

    # -- internal replay ----------------------------------------------------------------------
    def extend_model(self, module: ContinualModule, scenario: Scenario) -> None:
        if self.internal_replay:
            self.cut = self.frozen_layers or convolutional_part(module.net)
            self.lower, _ = split_backbone(module.net, self.cut, f"{KEY}.frozen_layers")
            if self.lower_from is not None:
                self.lower.load_state_dict(checkpointed_lower(
                    self.lower, self.lower_from, f"{KEY}.lower_from", self.cut))
                freeze(self.lower)
            last = self.lower[-1]

            def keep_activations(layer: nn.Module, inputs: Any, output: Tensor) -> None:
                if layer is self.lower[-1]:  # not a frozen copy's
                    self._activations = output

            last.register_forward_hook(keep_activations)
        super().extend_model(module, scenario)

    def make_feedback(self, feature_size: int, scenario: Scenario) -> GatedFeedbackVAE:
        shape = scenario.input_shape
        if self.internal_replay:
            shape = vector_shape(self.lower, shape, f"{KEY}.frozen_layers", self.cut)
        return GatedFeedbackVAE(feature_size, shape, self.template.hidden_sizes,
                                self.template.z_dim, scenario.n_natural, self.gate_proportion)

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        keep_frozen_in_eval(self.lower)

    def on_task_end(self, loop: TaskLoop, task: Task) -> None:
        if self.lower is not None:
            freeze(self.lower)

    def sampler(self) -> GatedFeedbackVAE | None:
        return None if self.internal_replay else super().sampler()  # activations: no FID

    def reconstruction_target(self, batch: Batch) -> Tensor:
        if not self.internal_replay:
            return super().reconstruction_target(batch)
        # detached: the lower layers learn the task, not to match the decoder
        return torch.sigmoid(self._activations.detach().float())

    def replayed_logits(self, net: nn.Module, x_unit: Tensor) -> Tensor:
        """Internal replay: decoded activations through the layers above the cut only."""
        if not self.internal_replay:
            return super().replayed_logits(net, x_unit)
        activations = torch.logit(x_unit.float(), eps=1e-6)
        features = net.backbone[self.cut:](activations)
        if net is self.net:
            self._features = features
        return heads_output(net, features)

    def state_dict(self) -> dict[str, Any]:
        return {"lower_frozen": is_frozen(self.lower)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("lower_frozen"):
            freeze(self.lower)

    def on_task_start(self, loop: TaskLoop, task: Task) -> None:
        super().on_task_start(loop, task)
        self.scenario, self.task = loop.scenario, task

    def current_contexts(self, batch: Batch) -> Tensor:
        return self.net.feedback.one_hot(self.scenario.natural_of(self.task, batch.y))

    def draw_replay(self, n: int) -> tuple[Tensor, Tensor]:
        classes = draw_uniformly(self.seen_classes, n)
        return self.teacher.feedback.sample(n, classes), self.net.feedback.one_hot(classes)
