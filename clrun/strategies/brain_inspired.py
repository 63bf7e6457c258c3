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
Internal replay (replaying the features of convolutional layers frozen after pre-training) is
not built: on a network with convolutions the decoder reconstructs the input, as in RtF.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from clrun.errors import ConfigError
from clrun.generators.feedback import GatedFeedbackVAE
from clrun.scenarios.batches import Batch
from clrun.strategies.generative import ReplayThroughFeedback

if TYPE_CHECKING:
    from clrun.loop import TaskLoop
    from clrun.scenarios.base import Scenario, Task


class BrainInspiredReplay(ReplayThroughFeedback):
    """`strategy=bir` (with `generator=vae` for the latent size and the decoder's widths)."""

    method = "brain-inspired replay"

    def __init__(self, weighting: str = "task_ratio", targets: str = "soft",
                 temperature: float = 2.0, replay_batch_size: int | None = None,
                 gate_proportion: float = 0.8) -> None:
        super().__init__(weighting, targets, temperature, replay_batch_size)
        if not 0 <= gate_proportion < 1:
            raise ConfigError("strategy.plugins.bir.gate_proportion", gate_proportion,
                              "is the fraction of decoder units gated off per class: "
                              "give a value in [0, 1)")
        self.gate_proportion = gate_proportion
        self.scenario: Scenario | None = None
        self.task: Task | None = None

    def make_feedback(self, feature_size: int, scenario: Scenario) -> GatedFeedbackVAE:
        return GatedFeedbackVAE(feature_size, scenario.input_shape, self.template.hidden_sizes,
                                self.template.z_dim, scenario.n_natural, self.gate_proportion)

    def on_task_start(self, loop: TaskLoop, task: Task) -> None:
        super().on_task_start(loop, task)
        self.scenario, self.task = loop.scenario, task

    def current_contexts(self, batch: Batch) -> Tensor:
        return self.net.feedback.one_hot(self.scenario.natural_of(self.task, batch.y))

    def draw_replay(self, n: int) -> tuple[Tensor, Tensor]:
        pick = torch.randint(len(self.seen_classes), (n,), device=self.seen_classes.device)
        classes = self.seen_classes[pick]
        return self.teacher.feedback.sample(n, classes), self.net.feedback.one_hot(classes)
