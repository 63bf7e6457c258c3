"""A backbone plus output heads; the heads' outputs are concatenated into one logit vector.

Keeping every head's units in one vector lets distillation and replay see all outputs, while the
module picks a task's units when the task id is known (task-IL). Architectural plugins grow the
model with `add_head`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from clrun.errors import ConfigError
from clrun.instantiate import config_target

HeadFactory = Callable[[int, int], nn.Module]


class ContinualNet(nn.Module):
    """`backbone` maps inputs to features of size `feature_size`; `heads` map features to logits.

    `head_factory(in_features, out_features)` makes each head (a module with `out_features`);
    interval networks pass their own.
    """

    def __init__(self, backbone: nn.Module, feature_size: int, head_sizes: list[int],
                 head_factory: HeadFactory = nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_size = feature_size
        self.head_factory = head_factory
        self.heads = nn.ModuleList(head_factory(feature_size, size) for size in head_sizes)

    def add_head(self, size: int) -> nn.Module:
        head = self.head_factory(self.feature_size, size).to(next(self.parameters()).device)
        self.heads.append(head)
        return head

    @property
    def head_sizes(self) -> list[int]:
        return [head.out_features for head in self.heads]

    def features(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def forward(self, x: Tensor) -> Tensor:
        features = self.backbone(x)
        if len(self.heads) == 1:
            return self.heads[0](features)
        return torch.cat([head(features) for head in self.heads], dim=1)


def check_widths(key: str, widths: tuple[int, ...] | list[int]) -> None:
    """Layer widths from the config must be positive integers (torch's own error is a trace)."""
    for width in widths:
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ConfigError(key, list(widths), "every width must be a positive integer")


@config_target
def mlp(input_shape: tuple[int, ...], head_sizes: list[int],
        hidden_sizes: tuple[int, ...] = (400, 400)) -> ContinualNet:
    """Flatten, then Linear+ReLU per hidden size (van de Ven's and InterContiNet's MLP)."""
    check_widths("model.hidden_sizes", hidden_sizes)
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for hidden in hidden_sizes:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return ContinualNet(nn.Sequential(*layers), width, list(head_sizes))


@config_target
def convnet(input_shape: tuple[int, ...], head_sizes: list[int],
            channels: tuple[int, ...] = (32, 64), hidden_size: int = 256) -> ContinualNet:
    """Conv(3x3)+ReLU+MaxPool(2) per channel count, then one hidden linear layer."""
    check_widths("model.channels", channels)
    check_widths("model.hidden_size", [hidden_size])
    layers: list[nn.Module] = []
    in_channels, height, width = input_shape
    for out_channels in channels:
        layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(),
                   nn.MaxPool2d(2, ceil_mode=True)]
        in_channels = out_channels
        height, width = math.ceil(height / 2), math.ceil(width / 2)
    layers += [nn.Flatten(), nn.Linear(in_channels * height * width, hidden_size), nn.ReLU()]
    return ContinualNet(nn.Sequential(*layers), hidden_size, list(head_sizes))


@config_target
def lenet_g(input_shape: tuple[int, ...], head_sizes: list[int], width: int = 64,
            hidden_size: int = 84, dropout: float = 0.6) -> ContinualNet:
    """BinPlay's classifier ("LeNetG" in the authors' code): three 4×4 stride-2 convolutions
    (width, 2·width, 4·width channels; batch norm, leaky ReLU, dropout), then a hidden layer of
    84 with leaky ReLU and dropout."""
    check_widths("model.width", [width])
    check_widths("model.hidden_size", [hidden_size])
    if not 0 <= dropout < 1:
        raise ConfigError("model.dropout", dropout, "must be in [0, 1)")
    in_channels, height, side = input_shape
    layers: list[nn.Module] = []
    for out_channels in (width, 2 * width, 4 * width):
        layers += [nn.Conv2d(in_channels, out_channels, 4, 2, 1, bias=False),
                   nn.BatchNorm2d(out_channels), nn.LeakyReLU(), nn.Dropout(dropout)]
        in_channels, height, side = out_channels, height // 2, side // 2
    layers += [nn.Flatten(), nn.Linear(in_channels * height * side, hidden_size),
               nn.LeakyReLU(), nn.Dropout(dropout)]
    return ContinualNet(nn.Sequential(*layers), hidden_size, list(head_sizes))
