"""Progressive neural networks (Rusu et al. 2016): a column per task, earlier columns frozen.

Each column copies the configured model's layers (mlp or convnet, freshly initialised). Layer
i of column k also receives, from every earlier column's layer i−1, the adapter
U·σ(V·α·[h⁽⁰⁾; …; h⁽ᵏ⁻¹⁾]) of the paper: α a learned scalar initialised small, V a projection of
the concatenated earlier activations back to one layer's width (a 1×1 convolution for
convolutional layers), σ a ReLU and U shaped like the layer's own weights; the head of column k
gets the same adapter from the earlier columns' last layers. All columns are built up front (so
a checkpoint always fits) and column k trains only in task k; the earlier ones run in eval mode
without gradients. Task-IL only: the task id picks the column.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from clrun.architectural.conditioned import TaskConditionedNet
from clrun.errors import ConfigError
from clrun.models.net import ContinualNet
from clrun.plugin import StrategyPlugin

if TYPE_CHECKING:
    from clrun.loop import TaskLoop
    from clrun.module import ContinualModule
    from clrun.scenarios.base import Scenario, Task

ALPHA_INIT = 0.01
MAIN = (nn.Linear, nn.Conv2d)
POST = (nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Dropout)


def stages(backbone: nn.Module) -> tuple[nn.Sequential, list[tuple[nn.Module, nn.Sequential]]]:
    """Split a sequential backbone into leading shape ops and (layer, ops after it) stages."""
    if not isinstance(backbone, nn.Sequential):
        raise ConfigError("model", type(backbone).__name__, "pnn builds its columns from "
                          "model=mlp or model=convnet")
    pre: list[nn.Module] = []
    result: list[tuple[nn.Module, list[nn.Module]]] = []
    for layer in backbone:
        if isinstance(layer, MAIN):
            result.append((layer, []))
        elif isinstance(layer, POST):
            (result[-1][1] if result else pre).append(layer)
        else:
            raise ConfigError("model", type(layer).__name__, "pnn builds its columns from "
                              "model=mlp or model=convnet (linear, convolution, ReLU, pooling)")
    return nn.Sequential(*pre), [(main, nn.Sequential(*post)) for main, post in result]


def fresh(layer: nn.Module) -> nn.Module:
    copied = copy.deepcopy(layer)
    copied.reset_parameters()
    return copied


class Lateral(nn.Module):
    """U·σ(V·α·concat(earlier activations)) into a layer shaped like `target`."""

    def __init__(self, target: nn.Module, n_earlier: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(ALPHA_INIT))
        if isinstance(target, nn.Linear):
            width = target.in_features
            self.reduce = nn.Linear(n_earlier * width, width)
            self.adapt = nn.Linear(width, target.out_features, bias=False)
        else:
            width = target.in_channels
            self.reduce = nn.Conv2d(n_earlier * width, width, 1)
            self.adapt = nn.Conv2d(width, target.out_channels, target.kernel_size,
                                   target.stride, target.padding, bias=False)

    def forward(self, earlier: list[Tensor]) -> Tensor:
        return self.adapt(torch.relu(self.reduce(self.alpha * torch.cat(earlier, dim=1))))


class Column(nn.Module):
    def __init__(self, pre: nn.Sequential, layers: list[tuple[nn.Module, nn.Sequential]],
                 feature_size: int, head_size: int, index: int) -> None:
        super().__init__()
        self.pre = copy.deepcopy(pre)
        self.mains = nn.ModuleList(fresh(main) for main, _ in layers)
        self.posts = nn.ModuleList(copy.deepcopy(post) for _, post in layers)
        self.head = nn.Linear(feature_size, head_size)
        # into layers 1.. and the head, from `index` earlier columns (none for the first)
        targets = [*self.mains[1:], self.head]
        self.laterals = nn.ModuleList(Lateral(t, index) for t in targets) if index else None

    def forward(self, x: Tensor, earlier: list[list[Tensor]], use_laterals: bool = True
                ) -> tuple[list[Tensor], Tensor]:
        """Every layer's output and the head's logits; `earlier[j][i]` is column j's layer i."""
        h, outputs = self.pre(x), []
        for i, (main, post) in enumerate(zip(self.mains, self.posts, strict=True)):
            z = main(h)
            if i > 0 and self.laterals is not None and use_laterals:
                z = z + self.laterals[i - 1]([column[i - 1] for column in earlier])
            h = post(z)
            outputs.append(h)
        logits = self.head(h)
        if self.laterals is not None and use_laterals:
            logits = logits + self.laterals[-1]([column[-1] for column in earlier])
        return outputs, logits


class ProgressiveNet(TaskConditionedNet):
    def __init__(self, template: ContinualNet, head_sizes: list[int]) -> None:
        super().__init__(head_sizes)
        pre, layers = stages(template.backbone)
        self.columns = nn.ModuleList(
            Column(pre, layers, template.feature_size, size, k)
            for k, size in enumerate(head_sizes))
        self.use_laterals = True  # off only to show in tests that the laterals matter

    def forward_task(self, x: Tensor, t: int) -> Tensor | None:
        if t >= len(self.columns):
            return None
        earlier: list[list[Tensor]] = []
        with torch.no_grad():
            for column in self.columns[:t]:
                earlier.append(column(x, earlier, self.use_laterals)[0])
        return self.columns[t](x, earlier, self.use_laterals)[1]

    def train_only(self, t: int) -> None:
        """Column t trains; the others are frozen and in eval mode."""
        for k, column in enumerate(self.columns):
            column.requires_grad_(k == t)
            if k != t:
                column.eval()


class ProgressiveNetworks(StrategyPlugin):
    """`strategy=pnn`: replaces the configured network by a progressive network."""

    supported_settings = ("task",)

    def extend_model(self, module: ContinualModule, scenario: Scenario) -> None:
        module.net = ProgressiveNet(module.net, scenario.head_sizes).to(module.device)
        module.refresh_heads()

    def on_task_start(self, loop: TaskLoop, task: Task) -> None:
        loop.module.net.train_only(task.index)

    def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        pl_module.net.train_only(pl_module.current_task)  # after Lightning's train()
