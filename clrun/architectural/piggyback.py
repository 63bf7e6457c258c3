"""Piggyback (Mallya et al. 2018): a binary mask per task over a frozen backbone, plus a head
per task.

Every linear and convolution layer of the backbone keeps its weights and biases frozen and
gets, per task, real-valued mask scores initialised to 1e-2 and binarised by score > 5e-3
(strict) in the forward pass with a straight-through gradient, so at initialisation the masked
network is the backbone itself. Batch norm stays frozen in eval mode. The backbone must have
been trained on something: `backbone=first_task` trains it normally on task 1 (its head too),
then freezes it — task 1 keeps the plain backbone, later tasks learn masks; or
`backbone=checkpoint:PATH` loads a clrun checkpoint's network (its backbone part) or a state
dict of the backbone, and every task learns a mask. A random backbone is SupSup's setting
(strategy=supsup), not Piggyback's. Task-IL only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from clrun.architectural.conditioned import TaskConditionedNet
from clrun.architectural.masks import MaskedLayer, replace_layers, straight_through, use_task
from clrun.errors import ConfigError
from clrun.models.net import ContinualNet
from clrun.plugin import StrategyPlugin

if TYPE_CHECKING:
    from clrun.loop import TaskLoop
    from clrun.module import ContinualModule
    from clrun.scenarios.base import Scenario, Task

SCORE_INIT = 1e-2
THRESHOLD = 5e-3


class PiggybackLayer(MaskedLayer):
    def init_scores(self) -> Tensor:
        return torch.full_like(self.weight, SCORE_INIT)

    def mask(self, t: int) -> Tensor:
        scores = self.scores[t]
        return straight_through((scores > THRESHOLD).to(scores.dtype), scores)


class PiggybackNet(TaskConditionedNet):
    """The template's backbone with Piggyback layers; its heads, one per task."""

    def __init__(self, template: ContinualNet, n_tasks: int, plain_tasks: int) -> None:
        super().__init__(template.head_sizes)
        self.backbone = replace_layers(template.backbone,
                                       lambda layer: PiggybackLayer(layer, n_tasks))
        self.heads = template.heads
        self.plain_tasks = plain_tasks  # tasks that use the backbone without a mask

    def forward_task(self, x: Tensor, t: int) -> Tensor:
        use_task(self.backbone, None if t < self.plain_tasks else t)
        return self.heads[t](self.backbone(x))


def load_backbone(template: ContinualNet, path: str) -> None:
    """A clrun checkpoint's network, or a state dict of the backbone (keys with or without
    the `backbone.` prefix), into the template's backbone."""
    try:
        state = torch.load(Path(path).expanduser(), weights_only=True, map_location="cpu")
    except Exception as error:  # noqa: BLE001 - unreadable or not a torch file: one line
        raise ConfigError("strategy.plugins.piggyback.backbone", f"checkpoint:{path}",
                          f"cannot be read ({type(error).__name__}: {error})") from None
    state = state.get("model", state) if isinstance(state, dict) else state
    state = {k: v for k, v in state.items() if ".scores." not in k}  # a Piggyback run's masks
    prefixed = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    try:
        template.backbone.load_state_dict(prefixed or state)
    except RuntimeError as error:
        raise ConfigError("strategy.plugins.piggyback.backbone", f"checkpoint:{path}",
                          "does not fit this model's backbone ("
                          f"{str(error).splitlines()[1].strip()[:150]}); use the model it was "
                          "trained with") from None


class Piggyback(StrategyPlugin):
    supported_settings = ("task",)

    def __init__(self, backbone: str = "first_task") -> None:
        super().__init__()
        if backbone != "first_task" and not backbone.startswith("checkpoint:"):
            raise ConfigError("strategy.plugins.piggyback.backbone", backbone,
                              "Piggyback masks a trained backbone: use first_task (train it "
                              "on task 1, then freeze it) or checkpoint:PATH; masks over a "
                              "random backbone are strategy=supsup")
        self.backbone = backbone

    def extend_model(self, module: ContinualModule, scenario: Scenario) -> None:
        plain = 1 if self.backbone == "first_task" else 0
        if not plain:
            load_backbone(module.net, self.backbone.split(":", 1)[1])
        module.net = PiggybackNet(module.net, scenario.n_tasks, plain).to(module.device)
        module.refresh_heads()

    def on_task_start(self, loop: TaskLoop, task: Task) -> None:
        net: PiggybackNet = loop.module.net
        plain = task.index < net.plain_tasks
        for layer in net.backbone.modules():
            if isinstance(layer, MaskedLayer):
                layer.weight.requires_grad_(plain)
                if layer.bias is not None:
                    layer.bias.requires_grad_(plain)
                for t, scores in enumerate(layer.scores):
                    scores.requires_grad_(not plain and t == task.index)
            elif not any(True for _ in layer.children()):
                layer.requires_grad_(plain)  # batch norm's affine parameters
        for t, head in enumerate(net.heads):
            head.requires_grad_(t == task.index)

    def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        if pl_module.current_task >= pl_module.net.plain_tasks:
            for layer in pl_module.net.backbone.modules():
                if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                    layer.eval()  # frozen statistics, as the paper's default
